"""Command line: run curation and the feedback loop on the project's Dagster instance, then print a report.

    python -m pipelines.cli demo --rounds 3     # what `make demo` runs
    python -m pipelines.cli report              # print the report of what the warehouse holds

Runs go through the same Definitions, instance (``DAGSTER_HOME``) and warehouse as the UI, so every
run, its metadata and its asset checks show up in ``dagster dev`` afterwards. The next round is
chosen by evaluating the real ``next_round_sensor`` against the instance, as the daemon would.
"""

import argparse
import logging
import os
import resource
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _ensure_dagster_home() -> None:
    if not os.environ.get("DAGSTER_HOME"):
        home = REPO_ROOT / ".dagster_home"
        home.mkdir(exist_ok=True)
        os.environ["DAGSTER_HOME"] = str(home)


def step_seconds(instance, run_id: str, prefix: str = "") -> dict[str, float]:
    """Wall time of every step of a run, from the instance's step statistics."""
    return {
        f"{prefix}{stats.step_key}": stats.end_time - stats.start_time
        for stats in instance.get_run_step_stats(run_id)
        if stats.start_time and stats.end_time
    }


def run_curation(defs, instance) -> dict[str, float]:
    result = defs.resolve_job_def("curation_job").execute_in_process(instance=instance, raise_on_error=False)
    if not result.success:
        raise SystemExit("curation_job failed; open the run in the Dagster UI (make ui) to see which step and why")
    return step_seconds(instance, result.run_id)


def run_round(defs, instance, round_key: str) -> dict[str, float]:
    result = defs.resolve_job_def("loop_job").execute_in_process(
        instance=instance, partition_key=round_key, raise_on_error=False
    )
    if not result.success:
        raise SystemExit(f"loop_job failed for round {round_key}; see the run in the Dagster UI (make ui)")
    return step_seconds(instance, result.run_id, prefix=f"round {round_key} ")


def rounds_from_sensor(defs, instance) -> list[str]:
    """Evaluate the round sensor once, as the daemon would, and return the rounds it requests."""
    from dagster import build_sensor_context, partition_loading_context

    sensor = defs.resolve_sensor_def("next_round_sensor")
    context = build_sensor_context(
        instance=instance, definitions=defs, resources={"round_policy": defs.resources["round_policy"]}
    )
    # Resolving the partitioned run request needs the instance that stores the dynamic partitions.
    with partition_loading_context(dynamic_partitions_store=instance):
        data = sensor.evaluate_tick(context)
    return [request.partition_key for request in data.run_requests or []]


def demo(rounds: int) -> None:
    _ensure_dagster_home()
    from dagster import DagsterInstance

    from pipelines.definitions import build_definitions

    defs = build_definitions(max_rounds=rounds)
    instance = DagsterInstance.get()
    started = time.perf_counter()
    timings = run_curation(defs, instance)

    instance.add_dynamic_partitions("round", ["0"])
    pending = ["0"]
    while pending:
        round_key = pending.pop(0)
        print(f"round {round_key}: mixing, training and evaluating", flush=True)
        timings |= run_round(defs, instance, round_key)
        pending.extend(rounds_from_sensor(defs, instance))
    timings["total"] = time.perf_counter() - started
    print_report(timings)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"Peak memory (max RSS of this process): {peak_mb:.0f} MB")


def print_report(timings: dict[str, float] | None = None, warehouse_path: str | None = None) -> None:
    from pipelines.report import render_report
    from pipelines.warehouse import Warehouse

    warehouse = Warehouse(path=warehouse_path) if warehouse_path else Warehouse()
    if not warehouse.file.exists():
        raise SystemExit(
            f"no warehouse at {warehouse.file}; run `make demo` or materialize the curation assets first, "
            "or pass --warehouse PATH"
        )
    print(render_report(warehouse, timings or {}))


def load_env_file(path: Path = REPO_ROOT / ".env") -> None:
    """Set the variables of the repository's .env file that the environment does not set yet.

    `dagster dev` and the Makefile read .env themselves; this makes `python -m pipelines.cli` agree.
    """
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            os.environ.setdefault(key.strip(), value.strip())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.cli", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="run curation, then rounds until the stop rule fires")
    demo_parser.add_argument("--rounds", type=int, default=3, help="maximum number of rounds (the stop rule)")
    report_parser = commands.add_parser("report", help="print the funnel, weights and per-task errors from the warehouse")
    report_parser.add_argument(
        "--warehouse", default=None, help="DuckDB file to report on (default: outputs/warehouse.duckdb)"
    )
    args = parser.parse_args(argv)
    load_env_file()
    if args.command == "demo":
        if args.rounds < 1:
            parser.error(f"--rounds must be at least 1, got {args.rounds}")
        demo(args.rounds)
    else:
        # Show lifecycle lines such as "waiting for the warehouse lock" while another run writes.
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        print_report(warehouse_path=args.warehouse)


if __name__ == "__main__":
    sys.exit(main())
