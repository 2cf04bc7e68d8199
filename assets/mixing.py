"""Loop assets that decide what a round trains on: per-task weights and the sampled mixture."""

import json

import polars as pl
from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.common import markdown_table, rounds
from trainer.data import sample_ids_sha256, sample_mixture
from trainer.mixing import MixingConfig, TaskSignal, compute_weights
from pipelines.warehouse import Warehouse


class MixingSettings(Config):
    rule: str = Field(
        default=MixingConfig.rule,
        description="Mixing rule: multiplicative_weights or exp3 (feedback-driven), uniform or proportional (static).",
    )
    signal: str = Field(
        default=MixingConfig.signal,
        description="Error signal: loss, loss_change (since the round before), excess_loss (minus the base "
        "model's loss, needs task_error_stats' evaluate_reference) or accuracy.",
    )
    eta: float = Field(default=MixingConfig.eta, description="Step size of the update.")
    min_weight: float = Field(default=MixingConfig.min_weight, description="Floor for every task that has data.")
    max_weight: float = Field(default=MixingConfig.max_weight, description="Cap for every task.")
    max_step: float = Field(default=MixingConfig.max_step, description="Maximum |eta * gain| of one task in one round.")
    max_change: float = Field(
        default=MixingConfig.max_change, description="Maximum absolute change of one task's weight in one round."
    )
    smoothing: float = Field(default=MixingConfig.smoothing, description="Share of the previous weights kept, 0-1.")
    exploration: float = Field(default=MixingConfig.exploration, description="Uniform share mixed into exp3, 0-1.")


def _feedback_rows(warehouse: Warehouse, table: str, round_key: int | None) -> dict[str, dict]:
    if not warehouse.table_exists(table):
        return {}
    if round_key is None:
        frame = warehouse.query(f'SELECT * FROM "{table}"')
    else:
        frame = warehouse.query(f'SELECT * FROM "{table}" WHERE round = ?', [round_key])
    return {row["task"]: row for row in frame.iter_rows(named=True)}


def _previous_round(warehouse: Warehouse, round_key: int):
    """Return round r-1's weights and the per-task signals read from round r-1's feedback rows.

    The signals also carry round r-2's loss (for loss_change) and the reference model's loss (for
    excess_loss) when those rows exist.
    """
    if round_key == 0:
        return None, None
    source_round = round_key - 1
    feedback = _feedback_rows(warehouse, "feedback", source_round)
    if not feedback:
        raise Failure(
            description=f"round {source_round} has no rows in the feedback table; "
            f"materialize task_error_stats for round {source_round} before round {round_key}"
        )
    before = _feedback_rows(warehouse, "feedback", source_round - 1) if source_round > 0 else {}
    reference = _feedback_rows(warehouse, "reference_feedback", None)
    previous = warehouse.query("SELECT task, weight FROM mixture_weights WHERE round = ?", [source_round])
    signals = {
        task: TaskSignal(
            n_eval=row["n_eval"],
            mean_loss=row["mean_loss"],
            accuracy=row["accuracy"],
            previous_loss=before.get(task, {}).get("mean_loss"),
            reference_loss=reference.get(task, {}).get("mean_loss"),
        )
        for task, row in feedback.items()
    }
    return dict(previous.iter_rows()), signals


@asset(group_name="loop", partitions_def=rounds, deps=["selected_samples"], kinds={"duckdb"})
def mixture_weights(context: AssetExecutionContext, config: MixingSettings, warehouse: Warehouse) -> MaterializeResult:
    """Per-task sampling weights for a round, computed from the previous round's per-task errors."""
    round_key = int(context.partition_key)
    available = dict(warehouse.query("SELECT task, count(*) FROM selected_samples GROUP BY task").iter_rows())
    previous, signals = _previous_round(warehouse, round_key)
    try:
        mixing_config = MixingConfig(
            rule=config.rule,
            signal=config.signal,
            eta=config.eta,
            min_weight=config.min_weight,
            max_weight=config.max_weight,
            max_step=config.max_step,
            max_change=config.max_change,
            smoothing=config.smoothing,
            exploration=config.exploration,
        )
    except ValueError as error:
        raise Failure(description=f"invalid mixing settings: {error}") from error
    decision = compute_weights(previous, signals, available, mixing_config)

    tasks = sorted(set(decision.weights) | set(available))
    rows = pl.DataFrame(
        {
            "round": [round_key] * len(tasks),
            "task": tasks,
            "weight": [float(decision.weights.get(t, 0.0)) for t in tasks],
            "previous_weight": [None if previous is None else previous.get(t) for t in tasks],
            "signal": [decision.signal.get(t) for t in tasks],
            "flag": [decision.flags.get(t) for t in tasks],
            "available_rows": [int(available.get(t, 0)) for t in tasks],
            "rule": [decision.rule] * len(tasks),
            "settings": [json.dumps(decision.settings, sort_keys=True)] * len(tasks),
            "source_round": [round_key - 1 if round_key > 0 else None] * len(tasks),
        },
        schema_overrides={"previous_weight": pl.Float64, "signal": pl.Float64, "source_round": pl.Int64},
    )
    warehouse.replace_rows("mixture_weights", rows, {"round": round_key})
    context.log.info("round %s weights: %s" % (round_key, {t: round(w, 3) for t, w in decision.weights.items()}))
    return MaterializeResult(
        metadata={
            "round": round_key,
            "source_round": round_key - 1 if round_key > 0 else None,
            "rule": decision.rule,
            "weights": MetadataValue.json({t: round(float(w), 6) for t, w in decision.weights.items()}),
            "flags": MetadataValue.json(decision.flags),
            "table": markdown_table(rows.drop("settings")),
        }
    )


class MixtureSettings(Config):
    samples_per_round: int = Field(default=128, description="Training examples drawn for one round.")
    max_repeats: int = Field(default=3, description="Maximum times one sample may repeat inside a round.")
    seed: int = Field(default=0, description="Base seed; round r samples with seed + r.")


@asset(group_name="loop", partitions_def=rounds, deps=["mixture_weights", "selected_samples"], kinds={"duckdb"})
def training_mixture(
    context: AssetExecutionContext, config: MixtureSettings, warehouse: Warehouse
) -> MaterializeResult:
    """The sample ids a round trains on, drawn per task according to that round's mixture weights."""
    round_key = int(context.partition_key)
    weights = dict(warehouse.query("SELECT task, weight FROM mixture_weights WHERE round = ?", [round_key]).iter_rows())
    if not weights:
        raise Failure(description=f"no mixture weights for round {round_key}; materialize mixture_weights first")
    pool = warehouse.read_table("selected_samples")
    mixture = sample_mixture(pool, weights, config.samples_per_round, config.seed + round_key, config.max_repeats)
    rows = mixture.select("sample_id", "task", "mixture_position").with_columns(
        pl.lit(round_key, dtype=pl.Int64).alias("round")
    )
    warehouse.replace_rows("training_mixture", rows, {"round": round_key})
    ids_hash = sample_ids_sha256(rows["sample_id"].to_list())
    per_task = rows.group_by("task").len().sort("task").rename({"len": "rows"})
    return MaterializeResult(
        metadata={
            "round": round_key,
            "rows": rows.height,
            "unique_samples": rows["sample_id"].n_unique(),
            "sample_ids_sha256": ids_hash,
            "rows_by_task": markdown_table(per_task),
        }
    )
