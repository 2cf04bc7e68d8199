"""The DuckDB warehouse: atomic multi-table writes, idempotent stage writes, the file lock and crash safety."""

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap

import polars as pl
import pytest

from pipelines.warehouse import REPO_ROOT, Warehouse, WarehouseBusyError

LEDGER_COLUMNS = {
    "sample_id": pl.String, "source": pl.String, "task": pl.String, "stage": pl.String, "filter": pl.String,
    "reason": pl.String, "score": pl.Float64, "threshold": pl.Float64, "duplicate_of": pl.String, "detail": pl.String,
}


@pytest.fixture
def warehouse(tmp_path) -> Warehouse:
    return Warehouse(path=str(tmp_path / "warehouse.duckdb"), lock_timeout_s=30)


def ledger(*sample_ids: str) -> pl.DataFrame:
    rows = [
        {"sample_id": sample_id, "source": "s", "task": "chat", "stage": "stage1", "filter": "quality",
         "reason": "too_short", "score": 1.0, "threshold": 2.0, "duplicate_of": None, "detail": ""}
        for sample_id in sample_ids
    ]
    return pl.DataFrame(rows, schema=LEDGER_COLUMNS)


def test_replace_tables_all_or_nothing(warehouse):
    warehouse.replace_tables({"first": pl.DataFrame({"x": [1]}), "second": pl.DataFrame({"y": [1]})})
    with pytest.raises(Exception):
        warehouse.replace_tables({"first": pl.DataFrame({"x": [2, 3]}), "bad\"name": pl.DataFrame({"y": [2]})})
    assert warehouse.read_table("first")["x"].to_list() == [1]
    assert warehouse.read_table("second")["y"].to_list() == [1]


def test_write_stage_replaces_ledger_rows(warehouse):
    kept = pl.DataFrame({"sample_id": ["a"], "text": ["kept"]})
    for run_id in ("run-1", "run-2"):
        warehouse.write_stage(
            stage="stage1", output_table="basic_filtered", kept=kept, rejected=ledger("b", "c"),
            side_tables={"stage1_clusters": pl.DataFrame({"cluster_id": [1]})}, run_id=run_id,
        )
    rows = warehouse.read_table("rejection_ledger")
    assert sorted(rows["sample_id"].to_list()) == ["b", "c"]
    assert set(rows["run_id"].to_list()) == {"run-2"}
    assert warehouse.read_table("basic_filtered")["sample_id"].to_list() == ["a"]
    assert warehouse.read_table("stage1_clusters").height == 1


def test_write_stage_leaves_other_stages(warehouse):
    warehouse.write_ledger(ledger("x").with_columns(pl.lit("stage2").alias("stage")), stage="stage2", round_key=None, run_id="r")
    warehouse.write_ledger(ledger("y"), stage="stage1", round_key=0, run_id="r")
    warehouse.write_stage(
        stage="stage1", output_table="basic_filtered", kept=pl.DataFrame({"sample_id": ["a"]}),
        rejected=ledger("b"), side_tables={}, run_id="r",
    )
    rows = warehouse.query("SELECT sample_id, stage, round FROM rejection_ledger ORDER BY sample_id").rows()
    assert rows == [("b", "stage1", None), ("x", "stage2", None), ("y", "stage1", 0)]


def _hold_lock(path: str, ready, release) -> None:
    holder = Warehouse(path=path)
    with holder.connect():
        ready.set()
        release.wait(30)


def test_lock_timeout_raises_busy_error(tmp_path):
    path = str(tmp_path / "busy.duckdb")
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(path, ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(WarehouseBusyError, match="stayed locked"):
            Warehouse(path=path, lock_timeout_s=0.5).query("SELECT 1")
    finally:
        release.set()
        holder.join(30)
    assert holder.exitcode == 0
    assert Warehouse(path=path, lock_timeout_s=5).query("SELECT 1 AS one")["one"][0] == 1


def test_killed_writer_leaves_previous_table(warehouse):
    """A process SIGKILLed inside a write transaction leaves the table as it was before."""
    warehouse.replace_table("samples", pl.DataFrame({"sample_id": ["a", "b"]}))
    script = textwrap.dedent(
        f"""
        import os, signal
        import duckdb
        con = duckdb.connect({str(warehouse.file)!r})
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM samples")
        con.execute("INSERT INTO samples SELECT 'half-' || range::VARCHAR FROM range(100000)")
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    process = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, timeout=120)
    assert process.returncode == -signal.SIGKILL
    assert warehouse.read_table("samples")["sample_id"].to_list() == ["a", "b"]


def test_killed_writer_after_commit_keeps_new_table(warehouse):
    warehouse.replace_table("samples", pl.DataFrame({"sample_id": ["a"]}))
    script = textwrap.dedent(
        f"""
        import os, signal
        import duckdb
        con = duckdb.connect({str(warehouse.file)!r})
        con.execute("CREATE OR REPLACE TABLE samples AS SELECT 'new' AS sample_id")
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    process = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, timeout=120)
    assert process.returncode == -signal.SIGKILL
    assert warehouse.read_table("samples")["sample_id"].to_list() == ["new"]
    assert os.path.exists(warehouse.file)
