"""Ingestion and stage 1 as real assets: an unreadable source, re-materialization and threshold changes."""

import polars as pl
import pytest
from dagster import AssetKey

from tests.assets.conftest import write_sources
from tests.conftest import project_instance

INGEST_AND_STAGE1 = [AssetKey("raw_samples"), AssetKey("basic_filtered")]
STABLE_LEDGER_COLUMNS = ["sample_id", "stage", "filter", "reason", "score", "threshold", "duplicate_of", "detail"]


def add_parquet_source(sources_path, parquet_path) -> None:
    sources_path.write_text(
        sources_path.read_text() + f"  - name: vendor\n    kind: parquet\n    path: {parquet_path}\n"
    )


def run_config(sources_path, max_toxicity: float | None = None) -> dict:
    ops = {"raw_samples": {"config": {"sources_path": str(sources_path)}}}
    if max_toxicity is not None:
        ops["basic_filtered"] = {"config": {"max_toxicity": max_toxicity}}
    return {"ops": ops}


@pytest.fixture
def materialize_ingest(definitions, tmp_path):
    """Return a function that materializes raw_samples and basic_filtered (with their checks)."""
    job = definitions.resolve_implicit_global_asset_job_def()
    with project_instance(tmp_path / "dagster_home") as instance:

        def run(sources_path, **kwargs):
            result = job.execute_in_process(
                instance=instance, asset_selection=INGEST_AND_STAGE1, run_config=run_config(sources_path, **kwargs),
                raise_on_error=False,
            )
            checks = {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}
            return result, checks

        yield run


def stable_ledger(warehouse) -> list[tuple]:
    columns = ", ".join(STABLE_LEDGER_COLUMNS)
    return warehouse.query(f"SELECT {columns} FROM rejection_ledger ORDER BY ALL").rows()


def test_unreadable_source_fails_only_itself(tmp_path, warehouse, materialize_ingest):
    sources = write_sources(tmp_path, packaged=())
    broken = tmp_path / "data" / "vendor.parquet"
    broken.write_bytes(b"PAR1 truncated upload PAR1")
    add_parquet_source(sources, broken)
    result, checks = materialize_ingest(sources)
    errors = warehouse.read_table("source_errors").to_dicts()
    assert result.success
    assert warehouse.query("SELECT count(*) AS n FROM raw_samples WHERE source = 'fixture'")["n"][0] == 14
    assert warehouse.table_exists("basic_filtered")
    assert [error["source"] for error in errors] == ["vendor"]
    assert str(broken) in errors[0]["message"]
    assert "Check the path" in errors[0]["message"]
    assert checks["raw_samples_sources_readable"].passed is False
    assert checks["raw_samples_conservation"].passed is True
    assert checks["basic_filtered_conservation"].passed is True


def test_failed_source_keeps_previous_rows(tmp_path, warehouse, materialize_ingest):
    sources = write_sources(tmp_path, packaged=())
    parquet = tmp_path / "data" / "vendor.parquet"
    pl.DataFrame({"prompt": ["What is 6 * 7?", "Name a prime."], "response": ["42.", "7 is prime."]}).write_parquet(parquet)
    add_parquet_source(sources, parquet)
    first, _ = materialize_ingest(sources)
    parquet.write_bytes(b"PAR1 overwritten by a failed copy PAR1")
    second, checks = materialize_ingest(sources)
    vendor_rows = warehouse.query("SELECT count(*) AS n FROM raw_samples WHERE source = 'vendor'")["n"][0]
    errors = warehouse.read_table("source_errors").to_dicts()
    assert first.success
    assert second.success
    assert vendor_rows == 2
    assert errors[0]["kept_previous_rows"] == 2
    assert checks["raw_samples_sources_readable"].passed is False
    assert checks["raw_samples_conservation"].passed is True


def test_recovered_source_clears_errors(tmp_path, warehouse, materialize_ingest):
    sources = write_sources(tmp_path, packaged=())
    parquet = tmp_path / "data" / "vendor.parquet"
    parquet.write_bytes(b"not parquet")
    add_parquet_source(sources, parquet)
    materialize_ingest(sources)
    pl.DataFrame({"prompt": ["What is 6 * 7?"], "response": ["42."]}).write_parquet(parquet)
    _, checks = materialize_ingest(sources)
    assert warehouse.read_table("source_errors").height == 0
    assert checks["raw_samples_sources_readable"].passed is True


def test_hostile_jsonl_lines_quarantined_with_positions(tmp_path, warehouse, materialize_ingest):
    sources = write_sources(tmp_path, packaged=())
    with open(tmp_path / "data" / "fixture.jsonl", "ab") as handle:
        handle.write(b'{"prompt": "bad \xff byte", "response": "x"}\r\n{broken\n{"prompt": "cut off')
    result, checks = materialize_ingest(sources)
    quarantine = warehouse.query("SELECT line, reason FROM quarantine ORDER BY line").rows()
    assert result.success
    assert quarantine == [(15, "invalid_utf8"), (16, "invalid_json"), (17, "invalid_json")]
    assert checks["raw_samples_conservation"].passed is True


def test_rematerialization_unchanged_inputs_same_content(tmp_path, warehouse, materialize_ingest):
    sources = write_sources(tmp_path, packaged=())
    materialize_ingest(sources)
    first_ids = warehouse.query("SELECT sample_id FROM basic_filtered ORDER BY ALL").rows()
    first_ledger = stable_ledger(warehouse)
    first_raw = warehouse.query("SELECT * FROM raw_samples ORDER BY sample_id").rows()
    materialize_ingest(sources)
    assert warehouse.query("SELECT sample_id FROM basic_filtered ORDER BY ALL").rows() == first_ids
    assert stable_ledger(warehouse) == first_ledger
    assert warehouse.query("SELECT * FROM raw_samples ORDER BY sample_id").rows() == first_raw


def test_threshold_change_alters_only_its_decisions(tmp_path, warehouse, materialize_ingest):
    """Raising max_toxicity above every score keeps the toxic row; nothing else changes or is re-scored."""
    sources = write_sources(tmp_path, packaged=())
    materialize_ingest(sources)
    before = stable_ledger(warehouse)
    kept_before = warehouse.query("SELECT sample_id, toxicity_score FROM basic_filtered ORDER BY ALL").rows()
    result, _ = materialize_ingest(sources, max_toxicity=1.0)
    metadata = {
        event.asset_key.path[-1]: event.step_materialization_data.materialization.metadata
        for event in result.get_asset_materialization_events()
    }["basic_filtered"]
    assert metadata["toxicity_texts_scored_new"].value == 0
    assert metadata["toxicity_texts_from_cache"].value > 0
    after = stable_ledger(warehouse)
    kept_after = dict(warehouse.query("SELECT sample_id, toxicity_score FROM basic_filtered").rows())
    toxic_before = [row for row in before if row[3] == "toxic"]
    assert toxic_before
    assert after == [row for row in before if row[3] != "toxic"]
    for sample_id, score in kept_before:
        assert kept_after[sample_id] == score
    for row in toxic_before:
        assert kept_after[row[0]] == row[4]


def write_accounting_tables(warehouse, *, ledger_ids, quarantine_lines, records=4) -> None:
    """Write a minimal raw/selected/ledger/quarantine state for source ``s``: samples a, b, c."""
    warehouse.replace_tables(
        {
            "raw_samples": pl.DataFrame({"sample_id": ["a", "b", "c"], "source": ["s"] * 3}),
            "selected_samples": pl.DataFrame({"sample_id": ["a"], "source": ["s"]}),
            "quarantine": pl.DataFrame(
                {"source": ["s"] * len(quarantine_lines), "file": ["f.jsonl"] * len(quarantine_lines),
                 "line": quarantine_lines, "reason": ["invalid_json"] * len(quarantine_lines)},
                schema={"source": pl.String, "file": pl.String, "line": pl.Int64, "reason": pl.String},
            ),
            "ingest_files": pl.DataFrame({"source": ["s"], "file": ["f.jsonl"], "records": [records]}),
        }
    )
    rows = [{"sample_id": sample_id, "stage": "stage1", "round": None} for sample_id in ledger_ids]
    warehouse.replace_table(
        "rejection_ledger", pl.DataFrame(rows, schema={"sample_id": pl.String, "stage": pl.String, "round": pl.Int64})
    )


@pytest.mark.parametrize(
    "case, ledger_ids, quarantine_lines, passed",
    [
        ("every_record_placed", ["b", "c"], [4], True),
        ("ledger_row_missing", ["b"], [4], False),
        ("sample_in_two_places", ["a", "b", "c"], [4], False),
        ("quarantine_row_missing", ["b", "c"], [], False),
        ("quarantine_line_twice", ["b", "c"], [4, 4], False),
    ],
)
def test_accounting_check_cases(warehouse, case, ledger_ids, quarantine_lines, passed):
    from assets.checks import raw_samples_accounted_for

    write_accounting_tables(warehouse, ledger_ids=ledger_ids, quarantine_lines=quarantine_lines)
    result = raw_samples_accounted_for(warehouse=warehouse)
    assert result.passed is passed, (case, result.metadata)
