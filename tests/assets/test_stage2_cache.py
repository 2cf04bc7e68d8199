"""Materialize consistent_samples twice on one warehouse: the second run scores no pair again."""

import polars as pl
import pytest
from dagster import materialize

from assets.stage2 import consistent_samples
from filters.schema import SAMPLE_SCHEMA, make_sample_id
from pipelines.resources import NliModel, SentenceEmbedder
from pipelines.score_cache import SCORE_CACHE_TABLE, WarehouseScoreCache
from pipelines.warehouse import Warehouse
from tests.conftest import project_instance

RESPONSES = [
    "The parcel weighs 3 kilograms. It was shipped on Monday. The parcel weighs 5 kilograms.",
    "A barometer measures air pressure. Falling pressure often means that bad weather is coming.",
    "The museum opens at 9 am on weekdays. The museum is closed on weekdays.",
]


def basic_filtered_frame(responses: list[str]) -> pl.DataFrame:
    rows = [
        {
            "sample_id": make_sample_id("fixture", "Tell me about it.", response),
            "source": "fixture", "task": "chat", "lang": "en",
            "prompt": "Tell me about it.", "response": response,
        }
        for response in responses
    ]
    return pl.DataFrame(rows).with_columns(
        [pl.lit(None, dtype=dtype).alias(name) for name, dtype in SAMPLE_SCHEMA.items() if name not in rows[0]]
    ).select(list(SAMPLE_SCHEMA))


def materialize_stage2(warehouse, nli_model_dir, home):
    with project_instance(home) as instance:
        result = materialize(
            [consistent_samples],
            instance=instance,
            resources={
                "warehouse": warehouse,
                "nli_model": NliModel(model=str(nli_model_dir)),
                "sentence_embedder": SentenceEmbedder(),
            },
        )
    assert result.success
    return result.get_asset_materialization_events()[0].step_materialization_data.materialization.metadata


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, nli_model_dir):
    tmp_path = tmp_path_factory.mktemp("stage2_cache")
    warehouse = Warehouse(path=str(tmp_path / "warehouse.duckdb"), lock_timeout_s=120)
    warehouse.replace_table("basic_filtered", basic_filtered_frame(RESPONSES[:2]))
    first = materialize_stage2(warehouse, nli_model_dir, tmp_path / "home")
    first_ledger = warehouse.read_table("rejection_ledger")
    first_cache_rows = warehouse.query(f"SELECT count(*) AS n FROM {SCORE_CACHE_TABLE}")["n"][0]
    second = materialize_stage2(warehouse, nli_model_dir, tmp_path / "home")
    second_ledger = warehouse.read_table("rejection_ledger")
    warehouse.replace_table("basic_filtered", basic_filtered_frame(RESPONSES))
    third = materialize_stage2(warehouse, nli_model_dir, tmp_path / "home")
    return {
        "warehouse": warehouse, "first": first, "second": second, "third": third,
        "first_ledger": first_ledger, "second_ledger": second_ledger, "first_cache_rows": first_cache_rows,
    }


def test_stage2_cache_first_run_stores_every_new_pair(two_runs):
    new = two_runs["first"]["directed_pairs_scored_new"].value
    assert new > 0
    assert two_runs["first_cache_rows"] == new


def test_stage2_cache_rerun_scores_nothing(two_runs):
    assert two_runs["second"]["directed_pairs_scored_new"].value == 0
    assert two_runs["second"]["directed_pairs_from_cache"].value >= two_runs["first"]["directed_pairs_scored_new"].value


def test_stage2_cache_rerun_gives_same_decisions(two_runs):
    columns = ["sample_id", "reason", "score"]
    first = two_runs["first_ledger"].select(columns).sort("sample_id")
    second = two_runs["second_ledger"].select(columns).sort("sample_id")
    assert first.height == 1
    assert first.equals(second)


def test_stage2_cache_new_sample_scores_only_its_pairs(two_runs):
    third = two_runs["third"]
    assert 0 < third["directed_pairs_scored_new"].value <= 2
    assert third["directed_pairs_from_cache"].value >= two_runs["first"]["directed_pairs_scored_new"].value
    assert third["rejected/contradiction"].value == 2


def test_score_cache_flush_writes_in_one_transaction(tmp_path):
    warehouse = Warehouse(path=str(tmp_path / "cache.duckdb"), lock_timeout_s=30)
    cache = WarehouseScoreCache(warehouse)
    cache["a"] = 0.25
    cache["b"] = 0.75
    assert not warehouse.table_exists(SCORE_CACHE_TABLE)
    assert cache.flush() == 2
    reopened = WarehouseScoreCache(warehouse)
    assert reopened.get("a") == 0.25
    assert reopened.get("missing") is None
    assert sorted(reopened) == ["a", "b"]


def test_score_cache_delete_and_overwrite(tmp_path):
    warehouse = Warehouse(path=str(tmp_path / "cache.duckdb"), lock_timeout_s=30)
    cache = WarehouseScoreCache(warehouse)
    cache.update({"a": 0.1, "b": 0.2})
    cache.flush()
    del cache["a"]
    cache["b"] = 0.9
    cache.flush()
    reopened = WarehouseScoreCache(warehouse)
    assert "a" not in reopened
    assert reopened["b"] == 0.9
    assert len(reopened) == 1
