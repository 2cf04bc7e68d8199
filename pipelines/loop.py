"""Jobs, the round sensor and the curation schedule."""

import hashlib
import json

from dagster import (
    AssetKey,
    AssetSelection,
    ConfigurableResource,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    EventLogEntry,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SkipReason,
    asset_sensor,
    define_asset_job,
    in_process_executor,
    schedule,
)
from pydantic import Field

from assets.common import WAREHOUSE_TAG, rounds
from filters.sources import load_sources_config
from pipelines.warehouse import resolve_repo_path

CURATION_ASSETS = ["raw_samples", "evaluation_sets", "basic_filtered", "consistent_samples", "selected_samples"]
LOOP_ASSETS = ["mixture_weights", "training_mixture", "trained_model", "task_error_stats"]

# One process per run: models load once, and steps of a run never write the warehouse concurrently.
curation_job = define_asset_job(
    "curation_job",
    selection=AssetSelection.assets(*CURATION_ASSETS),
    executor_def=in_process_executor,
    tags=WAREHOUSE_TAG,
    description="Ingest the configured sources and run the three filter stages.",
)
loop_job = define_asset_job(
    "loop_job",
    selection=AssetSelection.assets(*LOOP_ASSETS),
    partitions_def=rounds,
    executor_def=in_process_executor,
    tags=WAREHOUSE_TAG,
    description="One round of the loop: mixture weights, sampling, training and per-task evaluation.",
)


class RoundPolicy(ConfigurableResource):
    """When the loop stops."""

    max_rounds: int = Field(default=3, description="Rounds 0 .. max_rounds-1 run; then the sensor stops.")


def next_round(finished_round: int, policy: RoundPolicy) -> int | None:
    """Return the round to start after ``finished_round``, or None when the stop rule fires."""
    candidate = finished_round + 1
    return candidate if candidate < policy.max_rounds else None


@asset_sensor(
    asset_key=AssetKey("task_error_stats"),
    job=loop_job,
    default_status=DefaultSensorStatus.RUNNING,
    description="When a round's per-task statistics land, add the next round and run it, until the stop rule.",
)
def next_round_sensor(context: SensorEvaluationContext, asset_event: EventLogEntry, round_policy: RoundPolicy):
    partition = asset_event.dagster_event.partition if asset_event.dagster_event else None
    if partition is None:
        return SkipReason("task_error_stats was materialized without a round partition")
    upcoming = next_round(int(partition), round_policy)
    if upcoming is None:
        return SkipReason(f"round {partition} was the last of max_rounds={round_policy.max_rounds}")
    key = str(upcoming)
    # Add the partition before requesting its run, so the request resolves against an existing key.
    if not context.instance.has_dynamic_partition(rounds.name, key):
        context.instance.add_dynamic_partitions(rounds.name, [key])
    return RunRequest(run_key=f"round-{key}", partition_key=key, tags={"curation/source_round": partition})


def sources_fingerprint(sources_path: str) -> str:
    """Hash the source config and the size and modification time of every local file it names."""
    config_file = resolve_repo_path(sources_path)
    digest = hashlib.sha256(config_file.read_bytes())
    for source in load_sources_config(config_file):
        for path in source.local_files():
            stat = path.stat()
            digest.update(json.dumps([str(path), stat.st_size, stat.st_mtime_ns]).encode())
    return digest.hexdigest()[:16]


@schedule(
    job=curation_job,
    cron_schedule="0 * * * *",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Hourly: re-run curation when the source config or a source file changed since the last run.",
)
def curation_on_source_change(context: ScheduleEvaluationContext):
    fingerprint = sources_fingerprint("config/sources.yaml")
    earlier = context.instance.get_run_records(
        filters=RunsFilter(job_name="curation_job", tags={"curation/sources_fingerprint": fingerprint}), limit=1
    )
    if earlier:
        return SkipReason(f"sources unchanged (fingerprint {fingerprint})")
    return RunRequest(run_key=fingerprint, tags={"curation/sources_fingerprint": fingerprint})
