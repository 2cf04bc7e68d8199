"""The DuckDB warehouse: one file holding every table the pipeline writes.

DuckDB lets one process open a database file for writing at a time, and a second writer fails with
"Could not set lock on file". Two guards keep concurrent runs from colliding:

1. The run queue in ``dagster.yaml`` runs at most one run tagged ``curation/warehouse`` at a time.
2. Every connection here is short-lived and taken under an exclusive ``flock`` on ``<file>.lock``,
   so runs that bypass the queue (``execute_in_process``, tests, the demo script) wait their turn
   instead of failing. A wait longer than ``lock_timeout_s`` raises ``WarehouseBusyError``.

Writes are atomic per table or per partition: each one runs in a single DuckDB transaction that
first deletes the rows it replaces. ``replace_tables`` and ``write_stage`` put all the tables of
one asset into one transaction, so a run killed in the middle of a write leaves either the old
or the new tables, never a mix. Because every write replaces what it writes, re-executing a
killed step gives the same tables as a run that was never killed (``bench/crash_resume.py``
measures this).

Two runs that bypass the queue and start at once interleave connection by connection: each
write stays whole, but a step of one run may read a table the other run just replaced. With the
same inputs and config both runs still end with the same tables; with different configs the last
writer wins per table. Launch ``curation_job`` or ``loop_job`` through the queue (the UI's job
pages, sensors, schedules or ``dagster job launch``) to run them one after another. An asset
selection materialized from the UI runs as the implicit asset job, which has no queue tag, so
only the file lock orders it.
"""

import fcntl
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl
from dagster import ConfigurableResource
from pydantic import Field

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS rejection_ledger (
    sample_id VARCHAR, source VARCHAR, task VARCHAR, stage VARCHAR, filter VARCHAR, reason VARCHAR,
    score DOUBLE, threshold DOUBLE, duplicate_of VARCHAR, detail VARCHAR,
    round BIGINT, run_id VARCHAR, recorded_at TIMESTAMP
)
"""


class WarehouseBusyError(RuntimeError):
    """Another process held the warehouse lock for longer than the configured timeout."""


def resolve_repo_path(path: str) -> Path:
    """Resolve a relative path against the repository root, so the working directory does not matter."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else REPO_ROOT / candidate


class Warehouse(ConfigurableResource):
    """The DuckDB file that holds samples, the rejection ledger, clusters, mixture weights and feedback."""

    path: str = Field(
        default="outputs/warehouse.duckdb",
        description="DuckDB file; a relative path is resolved against the repository root.",
    )
    lock_timeout_s: float = Field(
        default=1800.0, description="Seconds to wait for another process's write before failing."
    )

    @property
    def file(self) -> Path:
        return resolve_repo_path(self.path)

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open a connection under the exclusive file lock; close it and release the lock on exit."""
        self.file.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.file.with_name(self.file.name + ".lock")
        with open(lock_path, "a+") as lock_file:
            deadline = time.monotonic() + self.lock_timeout_s
            waited = False
            while True:
                try:
                    fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise WarehouseBusyError(
                            f"warehouse {self.file} stayed locked for {self.lock_timeout_s:.0f} s; "
                            "wait for the other run to finish or raise lock_timeout_s"
                        ) from None
                    if not waited:
                        log.info("warehouse %s is in use by another process; waiting", self.file)
                        waited = True
                    time.sleep(0.2)
            try:
                con = duckdb.connect(str(self.file))
                try:
                    yield con
                finally:
                    con.close()
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def query(self, sql: str, params: list | None = None) -> pl.DataFrame:
        with self.connect() as con:
            return con.sql(sql, params=params or None).pl()

    def table_exists(self, name: str) -> bool:
        with self.connect() as con:
            found = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
            ).fetchone()
        return bool(found and found[0])

    def read_table(self, name: str) -> pl.DataFrame:
        if not self.table_exists(name):
            raise LookupError(f"table {name!r} is missing from {self.file}; materialize the asset that writes it first")
        return self.query(f'SELECT * FROM "{name}"')

    def replace_table(self, name: str, frame: pl.DataFrame) -> None:
        """Replace a whole table atomically with ``frame``."""
        with self.connect() as con:
            con.register("incoming", frame.to_arrow())
            con.execute("BEGIN TRANSACTION")
            con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM incoming')
            con.execute("COMMIT")
            con.unregister("incoming")

    def replace_tables(self, frames: dict[str, pl.DataFrame]) -> None:
        """Replace several whole tables in one transaction: all of them change, or none."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            for position, (name, frame) in enumerate(frames.items()):
                view = f"incoming_{position}"
                con.register(view, frame.to_arrow())
                con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM {view}')
            con.execute("COMMIT")
            for position in range(len(frames)):
                con.unregister(f"incoming_{position}")

    def write_stage(
        self,
        *,
        stage: str,
        output_table: str,
        kept: pl.DataFrame,
        rejected: pl.DataFrame,
        side_tables: dict[str, pl.DataFrame],
        run_id: str,
    ) -> None:
        """Write a curation stage's kept rows, its ledger rows and side tables in one transaction.

        The ledger rows of ``stage`` (round null) are replaced, as in ``write_ledger``.
        """
        rows = _ledger_rows(rejected, round_key=None, run_id=run_id)
        tables = {output_table: kept, **side_tables}
        with self.connect() as con:
            con.execute(LEDGER_DDL)
            con.execute("BEGIN TRANSACTION")
            for position, (name, frame) in enumerate(tables.items()):
                con.register(f"incoming_{position}", frame.to_arrow())
                con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM incoming_{position}')
            con.register("incoming_ledger", rows.to_arrow())
            _replace_ledger_rows(con, "incoming_ledger", stage=stage, round_key=None)
            con.execute("COMMIT")
            for position in range(len(tables)):
                con.unregister(f"incoming_{position}")
            con.unregister("incoming_ledger")

    def replace_rows(self, name: str, frame: pl.DataFrame, where: dict[str, object]) -> None:
        """Delete the rows matching ``where`` and insert ``frame`` in one transaction.

        The table is created from ``frame``'s schema when missing. Columns are matched by name.
        """
        conditions = " AND ".join(f'"{column}" IS NOT DISTINCT FROM ?' for column in where)
        with self.connect() as con:
            con.register("incoming", frame.to_arrow())
            con.execute("BEGIN TRANSACTION")
            con.execute(f'CREATE TABLE IF NOT EXISTS "{name}" AS SELECT * FROM incoming LIMIT 0')
            con.execute(f'DELETE FROM "{name}" WHERE {conditions}', list(where.values()))
            con.execute(f'INSERT INTO "{name}" BY NAME SELECT * FROM incoming')
            con.execute("COMMIT")
            con.unregister("incoming")

    def write_ledger(self, rejected: pl.DataFrame, *, stage: str, round_key: int | None, run_id: str) -> None:
        """Replace this stage's (and round's) ledger rows with ``rejected``; rerunning a stage is idempotent."""
        rows = _ledger_rows(rejected, round_key=round_key, run_id=run_id)
        with self.connect() as con:
            con.execute(LEDGER_DDL)
            con.register("incoming", rows.to_arrow())
            con.execute("BEGIN TRANSACTION")
            _replace_ledger_rows(con, "incoming", stage=stage, round_key=round_key)
            con.execute("COMMIT")
            con.unregister("incoming")


def _replace_ledger_rows(con, view: str, *, stage: str, round_key: int | None) -> None:
    """Delete the ledger rows of ``stage`` and ``round_key`` and insert the rows of ``view``, inside the caller's transaction."""
    con.execute("DELETE FROM rejection_ledger WHERE stage = ? AND round IS NOT DISTINCT FROM ?", [stage, round_key])
    con.execute(
        f"INSERT INTO rejection_ledger BY NAME SELECT * REPLACE (now()::TIMESTAMP AS recorded_at) FROM {view}"
    )


def _ledger_rows(rejected: pl.DataFrame, *, round_key: int | None, run_id: str) -> pl.DataFrame:
    return rejected.with_columns(
        pl.lit(round_key, dtype=pl.Int64).alias("round"),
        pl.lit(run_id, dtype=pl.String).alias("run_id"),
        pl.lit(None, dtype=pl.Datetime("us")).alias("recorded_at"),
    )
