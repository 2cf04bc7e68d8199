"""Kill a run in the middle of each stage, re-execute it from failure, and compare with a clean run.

Run from the repository root, with the project's environment loaded::

    set -a && source .env && set +a && .venv/bin/python bench/crash_resume.py

Steps:

0. The committed tree of HEAD is copied into the work directory, and every run executes that
   copy, so changes made in the repository meanwhile do not leak into the comparison.
1. A clean curation run (``curation_job``) and a clean loop round 0 (``loop_job`` with the tiny
   model) in one warehouse and one Dagster instance, each in its own subprocess.
2. Each stage (ingest, stage1, stage2, stage3, loop) gets a fresh warehouse, and its job starts
   as a subprocess. The parent polls the instance's event log for the ``STEP_START`` of that
   stage's step, waits ``--kill-fraction`` of the step's clean duration and sends SIGKILL to the
   run process. The jobs use the in-process executor, so the run process is the step process.
   When the step finished before the kill, the attempt is repeated with half the delay. The
   killed run is then marked failed, because no run monitor is running to do it, and
   re-executed with ``ReexecutionOptions.from_failure`` in a new subprocess.
3. Every warehouse table of the clean run is compared with the resumed one, without run ids,
   timestamps and wall-clock measurements. The ledger is also checked for duplicate rows, and
   the loop's checkpoint files are compared by hash.

Prints one line per stage and writes ``bench/results/crash_resume.json`` with one key per stage,
``identical`` or ``differs``, plus the details under ``details``.
"""

import argparse
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

RESULTS_PATH = REPO_ROOT / "bench" / "results" / "crash_resume.json"
MAX_KILL_ATTEMPTS = 6

# Stage -> (job, the step killed in the middle).
STAGES = {
    "ingest": ("curation_job", "raw_samples"),
    "stage1": ("curation_job", "basic_filtered"),
    "stage2": ("curation_job", "consistent_samples"),
    "stage3": ("curation_job", "selected_samples"),
    "loop": ("loop_job", "trained_model"),
}

LOOP_OPS = {
    "training_mixture": {"config": {"samples_per_round": 48}},
    "trained_model": {"config": {"max_steps": 6, "batch_size": 4, "max_seq_len": 128}},
    "task_error_stats": {
        "config": {"max_eval_per_task": 8, "max_generate_per_task": 1, "max_new_tokens": 8, "max_seq_len": 128}
    },
}

# Columns that legitimately differ between two runs of the same inputs.
VOLATILE_COLUMNS = {"run_id", "recorded_at", "created_at", "seconds", "wall_s", "latency_ms", "latency_s"}
VOLATILE_MARKERS = ("latency", "seconds", "_ms", "_at", "peak_", "memory_mb", "tokens_per_s", "samples_per_s")

# A JSONL source with hostile lines, so the quarantine table is part of the comparison.
HOSTILE_JSONL = (
    b"\xef\xbb\xbf"
    b'{"prompt": "What is 2 + 2?", "response": "2 + 2 = 4.\\n#### 4", "task": "math", "reference": "4"}\r\n'
    b'{"prompt": "bad byte \xff here", "response": "x"}\r\n'
    b"{not json}\n"
    b'["a list"]\n'
    b'{"prompt": "no response"}\n'
    b'{"prompt": "Name a primary colour.", "response": "Red is a primary colour.", "extra": {"nested": [1, 2]}}\n'
    b'{"prompt": "truncated last line", "respo'
)


# ---------------------------------------------------------------------------------------------
# Child side: run or resume one job with the real definitions in this process.


def _experiment_job(job_name: str):
    from pipelines.definitions import build_definitions
    from pipelines.resources import CausalLM
    from pipelines.warehouse import Warehouse

    workdir = Path(os.environ["CRASH_RESUME_WORKDIR"])
    defs = build_definitions(
        max_rounds=1,
        warehouse=Warehouse(path=os.environ["CRASH_RESUME_WAREHOUSE"], lock_timeout_s=600),
        causal_lm=CausalLM(model="tiny", cache_dir=str(workdir / "models")),
    )
    return defs.resolve_job_def(job_name)


def curation_job():
    return _experiment_job("curation_job")


def loop_job():
    return _experiment_job("loop_job")


def run_config(job_name: str, sources_path: Path, checkpoint_dir: Path) -> dict:
    if job_name == "curation_job":
        source_config = {"config": {"sources_path": str(sources_path)}}
        return {"ops": {"raw_samples": source_config, "evaluation_sets": source_config}}
    ops = json.loads(json.dumps(LOOP_OPS))
    ops["trained_model"]["config"]["checkpoint_dir"] = str(checkpoint_dir)
    return {"ops": ops}


def child_main(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance, ReexecutionOptions, execute_job, reconstructable

    job_factory = {"curation_job": curation_job, "loop_job": loop_job}[args.job]
    instance = DagsterInstance.from_config(args.dagster_home)
    tags = {"crash_resume/label": args.label}
    if args.job == "loop_job":
        tags["dagster/partition"] = "0"
    options = ReexecutionOptions.from_failure(args.parent_run_id, instance) if args.parent_run_id else None
    result = execute_job(
        reconstructable(job_factory),
        instance=instance,
        run_config=run_config(args.job, Path(args.sources), Path(args.checkpoints)),
        tags=tags,
        reexecution_options=options,
    )
    return 0 if result.success else 1


# ---------------------------------------------------------------------------------------------
# Parent side


def write_sources(directory: Path) -> Path:
    """Write the asset-test fixture rows, a hostile JSONL file and a small packaged set as sources."""
    from tests.assets.conftest import SMALL_PACKAGED, write_sources as write_fixture_sources

    path = write_fixture_sources(directory, packaged=SMALL_PACKAGED)
    (directory / "data" / "hostile.jsonl").write_bytes(HOSTILE_JSONL)
    path.write_text(path.read_text() + "  - name: hostile\n    kind: jsonl\n    path: data/hostile.jsonl\n")
    return path


class Experiment:
    """One warehouse, its checkpoints and the shared Dagster instance of the benchmark."""

    def __init__(self, root: Path, name: str, sources: Path, dagster_home: Path):
        self.name = name
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.warehouse = self.dir / "warehouse.duckdb"
        self.checkpoints = self.dir / "checkpoints"
        self.sources = sources
        self.dagster_home = dagster_home
        self.root = root

    def start(self, job: str, label: str, parent_run_id: str | None = None) -> subprocess.Popen:
        code = self.root / "code"
        env = dict(os.environ)
        env.update(
            CRASH_RESUME_WORKDIR=str(self.root),
            CRASH_RESUME_WAREHOUSE=str(self.warehouse),
            DAGSTER_HOME=str(self.dagster_home),
            PYTHONPATH=str(code),
        )
        command = [
            sys.executable, str(code / "bench" / "crash_resume.py"), "--child", "--job", job, "--label", label,
            "--dagster-home", str(self.dagster_home), "--sources", str(self.sources),
            "--checkpoints", str(self.checkpoints),
        ]
        if parent_run_id:
            command += ["--parent-run-id", parent_run_id]
        log_file = open(self.dir / f"{label}.log", "ab")
        return subprocess.Popen(command, cwd=code, env=env, stdout=log_file, stderr=subprocess.STDOUT)

    def run(self, job: str, label: str, parent_run_id: str | None = None) -> None:
        code = self.start(job, label, parent_run_id).wait()
        if code != 0:
            raise RuntimeError(f"{label} failed with exit code {code}; see {self.dir / (label + '.log')}")


def find_run(instance, label: str, timeout_s: float = 300.0):
    from dagster import RunsFilter

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = instance.get_runs(filters=RunsFilter(tags={"crash_resume/label": label}), limit=1)
        if runs:
            return runs[0]
        time.sleep(0.05)
    raise TimeoutError(f"no run labelled {label} appeared within {timeout_s:.0f} s")


def step_times(instance, run_id: str, step_key: str) -> tuple[float | None, float | None]:
    """Return (start, success) timestamps of ``step_key`` in ``run_id``, None where not reached."""
    from dagster import DagsterEventType

    start = success = None
    for record in instance.all_logs(run_id, of_type={DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS}):
        if record.step_key != step_key:
            continue
        if record.dagster_event.event_type == DagsterEventType.STEP_START:
            start = record.timestamp
        else:
            success = record.timestamp
    return start, success


def kill_mid_step(experiment: Experiment, instance, job: str, step_key: str, delay_s: float, label: str) -> dict | None:
    """Start ``job``, SIGKILL it ``delay_s`` after ``step_key`` starts and mark the run failed.

    Returns None when the step finished (or the run ended) before the kill, so the caller can
    retry with a shorter delay.
    """
    process = experiment.start(job, label)
    run = find_run(instance, label)
    started = None
    while started is None:
        if process.poll() is not None:
            raise RuntimeError(f"{label} ended with code {process.returncode} before {step_key} started")
        started, _ = step_times(instance, run.run_id, step_key)
        time.sleep(0.05)
    deadline = time.monotonic() + delay_s
    finished = None
    while time.monotonic() < deadline and finished is None and process.poll() is None:
        time.sleep(0.05)
        _, finished = step_times(instance, run.run_id, step_key)
    process.send_signal(signal.SIGKILL)
    process.wait()
    instance.report_run_failed(instance.get_run_by_id(run.run_id), message="killed by bench/crash_resume.py")
    if finished is not None or step_times(instance, run.run_id, step_key)[1] is not None:
        return None
    return {"run_id": run.run_id, "killed_after_s": round(delay_s, 2), "step_finished_before_kill": False}


def volatile(column: str) -> bool:
    return column in VOLATILE_COLUMNS or any(marker in column for marker in VOLATILE_MARKERS)


def table_rows(warehouse: Path, tables: list[str], workdir: Path) -> dict[str, list[tuple]]:
    """Read each table as sorted tuples of its stable columns, with the experiment directory masked."""
    import duckdb

    rows = {}
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        present = {name for (name,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        for table in tables:
            if table not in present:
                rows[table] = None
                continue
            columns = [name for (name,) in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
                [table],
            ).fetchall() if not volatile(name)]
            selected = ", ".join(f'"{column}"' for column in columns)
            values = con.execute(f'SELECT {selected} FROM "{table}"').fetchall()
            masked = [tuple(str(v).replace(str(workdir), "<dir>") if isinstance(v, str) else v for v in row) for row in values]
            rows[table] = sorted(masked, key=repr)
    finally:
        con.close()
    return rows


def duplicate_ledger_rows(warehouse: Path) -> int:
    import duckdb

    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        (count,) = con.execute(
            "SELECT count(*) FROM (SELECT sample_id, stage, round FROM rejection_ledger "
            "GROUP BY ALL HAVING count(*) > 1)"
        ).fetchone()
    finally:
        con.close()
    return int(count)


def file_hashes(directory: Path) -> dict[str, str]:
    if not directory.exists():
        return {}
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*")) if path.is_file()
    }


def compare(clean: Experiment, resumed: Experiment, tables: list[str], compare_checkpoints: bool) -> dict:
    clean_rows = table_rows(clean.warehouse, tables, clean.dir)
    resumed_rows = table_rows(resumed.warehouse, tables, resumed.dir)
    differing = sorted(table for table in tables if clean_rows[table] != resumed_rows[table])
    examples = {}
    for table in differing:
        clean_set, resumed_set = set(clean_rows[table] or []), set(resumed_rows[table] or [])
        examples[table] = {
            "only_in_clean": len(clean_set - resumed_set),
            "only_in_resumed": len(resumed_set - clean_set),
            "example_clean": [repr(row)[:300] for row in sorted(clean_set - resumed_set, key=repr)[:2]],
            "example_resumed": [repr(row)[:300] for row in sorted(resumed_set - clean_set, key=repr)[:2]],
        }
    result = {
        "tables_compared": len(tables),
        "tables_differing": differing,
        "rows": {table: (len(resumed_rows[table]) if resumed_rows[table] is not None else None) for table in tables},
        "duplicate_ledger_rows": duplicate_ledger_rows(resumed.warehouse),
        "differences": examples,
    }
    if compare_checkpoints:
        result["checkpoint_files_identical"] = file_hashes(clean.checkpoints) == file_hashes(resumed.checkpoints)
    result["identical"] = not differing and result["duplicate_ledger_rows"] == 0 and result.get("checkpoint_files_identical", True)
    return result


def list_tables(warehouse: Path) -> list[str]:
    import duckdb

    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return sorted(name for (name,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall())
    finally:
        con.close()


def snapshot_code(target: Path) -> str:
    """Extract the committed tree of HEAD into ``target``; return the commit id.

    Every run of the benchmark executes this copy, so commits or edits made in the repository
    while the benchmark runs cannot make the clean and the resumed runs differ. A relative
    ``NLI_MODEL`` path is made absolute, because it is resolved against the repository root.
    """
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, check=True, capture_output=True, text=True)
    archive = subprocess.run(["git", "archive", "--format=tar", "HEAD"], cwd=REPO_ROOT, check=True, capture_output=True)
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    model = os.environ.get("NLI_MODEL")
    if model and not Path(model).is_absolute() and (REPO_ROOT / model).exists():
        os.environ["NLI_MODEL"] = str((REPO_ROOT / model).resolve())
    return commit.stdout.strip()


def parent_main(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    root = Path(args.workdir or tempfile.mkdtemp(prefix="crash-resume-"))
    root.mkdir(parents=True, exist_ok=True)
    dagster_home = root / "dagster_home"
    dagster_home.mkdir(exist_ok=True)
    shutil.copy(REPO_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    sources = write_sources(root)
    commit = snapshot_code(root / "code")
    instance = DagsterInstance.from_config(str(dagster_home))
    instance.add_dynamic_partitions("round", ["0"])
    print(f"work directory {root}", flush=True)

    started = time.monotonic()
    clean = Experiment(root, "clean", sources, dagster_home)
    clean.run("curation_job", "clean-curation")
    curated = root / "curated.duckdb"
    shutil.copy(clean.warehouse, curated)
    curation_tables = list_tables(curated)
    clean.run("loop_job", "clean-loop")
    all_tables = list_tables(clean.warehouse)
    durations = {}
    for label in ("clean-curation", "clean-loop"):
        run = find_run(instance, label)
        for _, (_, step_key) in STAGES.items():
            start, success = step_times(instance, run.run_id, step_key)
            if start is not None and success is not None:
                durations[step_key] = success - start
    print(f"clean run in {time.monotonic() - started:.0f} s; step seconds "
          + ", ".join(f"{key} {value:.1f}" for key, value in durations.items()), flush=True)

    verdicts, details = {}, {}
    for stage in args.stages:
        job, step_key = STAGES[stage]
        # A step can run faster than in the clean run (a warm cache, less load from other
        # processes), so a kill that comes too late is retried with half the delay.
        kill, attempts, delay_s = None, 0, args.kill_fraction * durations[step_key]
        while kill is None and attempts < MAX_KILL_ATTEMPTS:
            attempts += 1
            experiment = Experiment(root, f"{stage}-{attempts}", sources, dagster_home)
            if job == "loop_job":
                shutil.copy(curated, experiment.warehouse)
            kill = kill_mid_step(experiment, instance, job, step_key, delay_s, f"{stage}-{attempts}-killed")
            delay_s /= 2
        if kill is None:
            raise RuntimeError(f"{step_key} finished before every one of {attempts} kills; lower --kill-fraction")
        kill["attempts"] = attempts
        experiment.run(job, f"{stage}-resumed", parent_run_id=kill["run_id"])
        tables = all_tables if job == "loop_job" else curation_tables
        outcome = compare(clean, experiment, tables, compare_checkpoints=job == "loop_job")
        verdicts[stage] = "identical" if outcome["identical"] else "differs"
        details[stage] = {"killed_step": step_key, **kill, **outcome}
        print(f"{stage:7s} {verdicts[stage]:9s} killed {step_key} {kill['killed_after_s']} s after its start "
              f"(attempt {attempts}); differing tables: "
              f"{outcome['tables_differing'] or 'none'}; duplicate ledger rows: {outcome['duplicate_ledger_rows']}",
              flush=True)

    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    report = {
        **verdicts,
        "details": details,
        "clean_step_seconds": {key: round(value, 2) for key, value in durations.items()},
        "kill_fraction": args.kill_fraction,
        "commit": commit,
        "ignored_columns": sorted(VOLATILE_COLUMNS) + [f"*{marker}*" for marker in VOLATILE_MARKERS],
        "total_seconds": round(time.monotonic() - started, 1),
    }
    RESULTS_PATH.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS_PATH}", flush=True)
    all_identical = all(value == "identical" for value in verdicts.values())
    if all_identical and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    elif not all_identical:
        print(f"kept {root} for inspection", flush=True)
    return 0 if all_identical else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES), help="Stages to crash.")
    parser.add_argument(
        "--kill-fraction", type=float, default=0.5,
        help="SIGKILL after this fraction of the step's clean duration has passed since its start.",
    )
    parser.add_argument("--workdir", help="Directory for warehouses and the instance (default: a new temp dir).")
    parser.add_argument("--keep", action="store_true", help="Keep the work directory afterwards.")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--label", help=argparse.SUPPRESS)
    parser.add_argument("--dagster-home", help=argparse.SUPPRESS)
    parser.add_argument("--sources", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoints", help=argparse.SUPPRESS)
    parser.add_argument("--parent-run-id", help=argparse.SUPPRESS)
    args = parser.parse_args()
    return child_main(args) if args.child else parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
