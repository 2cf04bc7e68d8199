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
    """When the loop stops: the first of the three rules that fires ends it."""

    max_rounds: int = Field(default=3, description="Rounds 0 .. max_rounds-1 run; then the sensor stops.")
    max_train_steps: int = Field(
        default=0,
        description="Compute budget: stop once the optimizer steps of all rounds so far reach this. 0 means no budget.",
    )
    min_weight_change: float = Field(
        default=0.0,
        description="Stop when no task's mixture weight moved by more than this since the previous round "
        "(absolute change, 0-1). 0 disables the rule.",
    )


def stop_reason(
    finished_round: int, policy: RoundPolicy, weight_change: float | None = None, train_steps_total: int | None = None
) -> str | None:
    """Return why the loop stops after ``finished_round``, or None when the next round should run.

    weight_change: the largest absolute change of a task's weight between ``finished_round`` and the
        round before it, or None in round 0 (the rule then waits for a second round).
    train_steps_total: optimizer steps of rounds 0 .. ``finished_round``, or None when unknown.
    """
    if finished_round + 1 >= policy.max_rounds:
        return f"round {finished_round} was the last of max_rounds={policy.max_rounds}"
    if policy.max_train_steps > 0 and train_steps_total is not None and train_steps_total >= policy.max_train_steps:
        return f"the rounds used {train_steps_total} optimizer steps, the budget max_train_steps={policy.max_train_steps}"
    if policy.min_weight_change > 0 and weight_change is not None and weight_change <= policy.min_weight_change:
        return (
            f"the weights stopped moving: the largest change was {weight_change:.4g}, "
            f"at most min_weight_change={policy.min_weight_change}"
        )
    return None


def next_round(
    finished_round: int, policy: RoundPolicy, weight_change: float | None = None, train_steps_total: int | None = None
) -> int | None:
    """Return the round to start after ``finished_round``, or None when a stop rule fires."""
    if stop_reason(finished_round, policy, weight_change, train_steps_total) is not None:
        return None
    return finished_round + 1


def _metadata_number(asset_event: EventLogEntry, key: str) -> float | None:
    """Read a numeric metadata value of the materialization, or None when it is missing."""
    materialization = asset_event.asset_materialization
    entry = materialization.metadata.get(key) if materialization else None
    value = getattr(entry, "value", None)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


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
    # task_error_stats reports the stop rules' inputs as metadata, so the sensor needs no warehouse.
    weight_change = _metadata_number(asset_event, "weight_change")
    train_steps = _metadata_number(asset_event, "train_steps_total")
    reason = stop_reason(int(partition), round_policy, weight_change, None if train_steps is None else int(train_steps))
    if reason is not None:
        context.log.info(f"loop stops after round {partition}: {reason}")
        return SkipReason(reason)
    key = str(int(partition) + 1)
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
