"""Materialize the real curation assets on a small fixture, with real DuckDB, models and Dagster instance."""

import polars as pl
import pytest
from dagster import AssetKey

from tests.conftest import project_instance
from tests.assets.conftest import FIXTURE_ROWS, curation_run_config, write_sources

EXPECTED_REASONS = {
    "empty": ("stage1", "empty_response"),
    "toxic": ("stage1", "toxic"),
    "contradiction": ("stage2", "contradiction"),
    "bad-arithmetic": ("stage3", "arithmetic_error"),
    "syntax-error": ("stage3", "syntax_error"),
    "failing-code": ("stage3", "test_failed"),
}
# Each pair is one duplicate cluster: exactly one member survives (the lower sample_id, since both
# have the same quality score) and the other is rejected with a pointer to it.
DUPLICATE_PAIRS = {("keep-chat", "exact-copy"): "exact_duplicate", ("keep-zh", "near-zh"): "near_duplicate"}
EXPECTED_KEPT = {"keep-math", "keep-code", "keep-chat-2"}


@pytest.fixture(scope="module")
def curated(tmp_path_factory, nli_model_dir):
    """Run curation_job once for the module; later tests read its outputs."""
    from pipelines.definitions import build_definitions
    from pipelines.resources import NliModel
    from pipelines.warehouse import Warehouse

    tmp_path = tmp_path_factory.mktemp("curation")
    sources = write_sources(tmp_path)
    warehouse = Warehouse(path=str(tmp_path / "warehouse.duckdb"), lock_timeout_s=120)
    defs = build_definitions(warehouse=warehouse, nli_model=NliModel(model=str(nli_model_dir)))
    with project_instance(tmp_path / "dagster_home") as instance:
        result = defs.resolve_job_def("curation_job").execute_in_process(
            instance=instance, run_config=curation_run_config(sources), raise_on_error=False
        )
        materializations = {
            event.asset_key.path[-1]: event.step_materialization_data.materialization.metadata
            for event in result.get_asset_materialization_events()
        }
        checks = {
            evaluation.check_name: evaluation.passed for evaluation in result.get_asset_check_evaluations()
        }
        yield {"result": result, "warehouse": warehouse, "metadata": materializations, "checks": checks}


def outcome_by_origin(warehouse) -> dict[str, tuple[str, str]]:
    frame = warehouse.query(
        "SELECT r.origin_id, l.stage, l.reason FROM raw_samples r "
        "JOIN rejection_ledger l USING (sample_id) WHERE r.source = 'fixture'"
    )
    return {row[0]: (row[1], row[2]) for row in frame.iter_rows()}


def test_curation_job_succeeds(curated):
    assert curated["result"].success


def test_every_fixture_row_loaded(curated):
    raw = curated["warehouse"].query("SELECT origin_id FROM raw_samples WHERE source = 'fixture'")
    assert sorted(raw["origin_id"].to_list()) == sorted(row["id"] for row in FIXTURE_ROWS)


@pytest.mark.parametrize("origin_id", sorted(EXPECTED_REASONS))
def test_rejection_reason_per_row(curated, origin_id):
    outcomes = outcome_by_origin(curated["warehouse"])
    assert outcomes.get(origin_id) == EXPECTED_REASONS[origin_id]


def test_run_on_math_is_rejected(curated):
    """The run-on answer invents a second question; stage 2 or stage 3 may catch it first."""
    outcome = outcome_by_origin(curated["warehouse"]).get("run-on")
    assert outcome in {("stage2", "contradiction"), ("stage3", "multiple_final_answers")}


def selected_origins(warehouse) -> set[str]:
    frame = warehouse.query("SELECT origin_id FROM selected_samples WHERE source = 'fixture'")
    return set(frame["origin_id"].to_list())


def test_expected_rows_selected(curated):
    selected = selected_origins(curated["warehouse"])
    assert EXPECTED_KEPT <= selected
    for pair in DUPLICATE_PAIRS:
        assert len(selected & set(pair)) == 1, pair
    rejected = set(EXPECTED_REASONS) | {"run-on"}
    assert not selected & rejected


@pytest.mark.parametrize("pair", sorted(DUPLICATE_PAIRS))
def test_duplicate_names_the_kept_sample(curated, pair):
    frame = curated["warehouse"].query(
        "SELECT r.origin_id, l.reason, k.origin_id AS kept_origin FROM rejection_ledger l "
        "JOIN raw_samples r USING (sample_id) JOIN raw_samples k ON k.sample_id = l.duplicate_of "
        "WHERE r.source = 'fixture'"
    )
    rows = {origin: (reason, kept) for origin, reason, kept in frame.iter_rows() if origin in pair}
    assert len(rows) == 1
    (removed, (reason, kept)), = rows.items()
    assert reason == DUPLICATE_PAIRS[pair]
    assert {removed, kept} == set(pair)
    assert kept in selected_origins(curated["warehouse"])


def test_stage_metadata_counts_add_up(curated):
    for asset in ("basic_filtered", "consistent_samples", "selected_samples"):
        metadata = curated["metadata"][asset]
        rows_in = metadata["rows_in"].value
        kept = metadata["kept"].value
        rejected = metadata["rejected"].value
        assert rows_in == kept + rejected, asset
        by_reason = metadata["rejected_by_reason"].value
        assert sum(by_reason.values()) == rejected, asset


def test_stage1_metadata_reports_clusters(curated):
    metadata = curated["metadata"]["basic_filtered"]
    assert metadata["clusters"].value >= 2
    assert metadata["survivors"].value == metadata["clusters"].value


def test_all_asset_checks_pass(curated):
    checks = curated["checks"]
    expected = {
        "basic_filtered_conservation",
        "consistent_samples_conservation",
        "selected_samples_conservation",
        "raw_samples_accounted_for",
        "no_eval_contamination",
    }
    assert expected <= set(checks)
    assert all(checks[name] for name in expected), checks


def test_every_raw_sample_selected_or_in_ledger(curated):
    unaccounted = curated["warehouse"].query(
        "SELECT count(*) AS n FROM raw_samples r "
        "WHERE r.sample_id NOT IN (SELECT sample_id FROM selected_samples) "
        "AND r.sample_id NOT IN (SELECT sample_id FROM rejection_ledger WHERE round IS NULL)"
    )["n"][0]
    assert unaccounted == 0


def test_ledger_rows_carry_run_id_and_threshold(curated):
    ledger = curated["warehouse"].read_table("rejection_ledger")
    assert ledger["run_id"].null_count() == 0
    toxic = ledger.filter(pl.col("reason") == "toxic")
    assert toxic.height >= 1
    assert toxic["score"][0] >= toxic["threshold"][0]


def test_contamination_check_fails_on_planted_eval_copy(curated):
    """Copy one evaluation item into the selected set: the blocking check must fail."""
    from assets.stage3 import no_eval_contamination

    warehouse = curated["warehouse"]
    selected = warehouse.read_table("selected_samples")
    item = warehouse.query("SELECT prompt, response FROM evaluation_sets LIMIT 1").row(0, named=True)
    planted = selected.head(1).with_columns(
        pl.lit("planted-copy").alias("sample_id"), pl.lit(item["prompt"]).alias("prompt"),
        pl.lit(item["response"]).alias("response"),
    )
    warehouse.replace_table("selected_samples", pl.concat([selected, planted]))
    try:
        result = no_eval_contamination(warehouse=warehouse)
        assert not result.passed
        assert result.metadata["matched_train_rows"].value == 1
    finally:
        warehouse.replace_table("selected_samples", selected)


def test_asset_graph_has_every_stage():
    from pipelines.definitions import defs

    keys = {key.path[-1] for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {
        "raw_samples", "evaluation_sets", "basic_filtered", "consistent_samples", "selected_samples",
        "mixture_weights", "training_mixture", "trained_model", "task_error_stats",
    } <= keys
    assert AssetKey("selected_samples") in defs.resolve_asset_graph().get_all_asset_keys()
