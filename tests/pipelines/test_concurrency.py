"""Two runs launched at once against one warehouse both end correctly.

Mechanism under test: every warehouse connection is taken under an exclusive ``flock`` on
``<warehouse>.lock`` (``pipelines.warehouse.Warehouse.connect``), so a second process waits for
the lock instead of failing on DuckDB's single-writer file lock, and every asset writes its
tables in one transaction. Runs launched through the Dagster queue are also serialized by the
``curation/warehouse`` tag limit of 1 in ``dagster.yaml``.
"""

import json
import multiprocessing
import subprocess
import sys
import textwrap

import polars as pl

from pipelines.warehouse import REPO_ROOT, Warehouse
from tests.assets.conftest import write_sources
from tests.conftest import project_instance

RUN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from dagster import AssetKey, DagsterInstance
    from pipelines.definitions import build_definitions
    from pipelines.warehouse import Warehouse

    warehouse_path, sources_path, dagster_home, label = sys.argv[1:5]
    defs = build_definitions(warehouse=Warehouse(path=warehouse_path, lock_timeout_s=300))
    job = defs.resolve_implicit_global_asset_job_def()
    with DagsterInstance.from_config(dagster_home) as instance:
        result = job.execute_in_process(
            instance=instance,
            asset_selection=[AssetKey("raw_samples"), AssetKey("basic_filtered")],
            run_config={"ops": {"raw_samples": {"config": {"sources_path": sources_path}}}},
            tags={"test/label": label},
            raise_on_error=False,
        )
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    print(json.dumps({"success": result.success, "checks": checks}))
    """
)


def launch(warehouse_path, sources_path, dagster_home, label) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", RUN_SCRIPT, str(warehouse_path), str(sources_path), str(dagster_home), label],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_runs_at_once_both_succeed(tmp_path):
    sources = write_sources(tmp_path, packaged=())
    warehouse_path = tmp_path / "warehouse.duckdb"
    dagster_home = tmp_path / "dagster_home"
    with project_instance(dagster_home):
        pass  # writes the project's dagster.yaml into dagster_home
    processes = [launch(warehouse_path, sources, dagster_home, label) for label in ("first", "second")]
    outputs = [process.communicate(timeout=600) for process in processes]
    reports = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]

    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
        assert "Could not set lock" not in stderr
    for report in reports:
        assert report["success"]
        assert report["checks"]["raw_samples_conservation"]
        assert report["checks"]["basic_filtered_conservation"]

    warehouse = Warehouse(path=str(warehouse_path))
    duplicates = warehouse.query(
        "SELECT count(*) AS n FROM (SELECT sample_id, stage FROM rejection_ledger GROUP BY ALL HAVING count(*) > 1)"
    )["n"][0]
    rows_in = warehouse.query("SELECT count(*) AS n FROM raw_samples")["n"][0]
    kept = warehouse.query("SELECT count(*) AS n FROM basic_filtered")["n"][0]
    rejected = warehouse.query("SELECT count(*) AS n FROM rejection_ledger WHERE stage = 'stage1'")["n"][0]
    assert duplicates == 0
    assert rows_in == 14
    assert kept + rejected == rows_in


def _write_partitions(path: str, worker: int, count: int) -> None:
    warehouse = Warehouse(path=path, lock_timeout_s=120)
    for index in range(count):
        frame = pl.DataFrame({"worker": [worker] * 50, "part": [index] * 50, "value": list(range(50))})
        warehouse.replace_rows("parts", frame, {"worker": worker, "part": index})


def test_parallel_writers_wait_for_lock(tmp_path):
    path = str(tmp_path / "parallel.duckdb")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_partitions, args=(path, worker, 10)) for worker in range(2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(300)
    counts = Warehouse(path=path).query("SELECT worker, count(*) AS n FROM parts GROUP BY worker ORDER BY worker")
    assert [process.exitcode for process in workers] == [0, 0]
    assert counts.rows() == [(0, 500), (1, 500)]


def test_project_queue_limits_warehouse_runs(tmp_path):
    with project_instance(tmp_path / "dagster_home") as instance:
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    assert {"key": "curation/warehouse", "limit": 1} in [dict(limit) for limit in limits]
