"""Loop assets that train a round's model and measure its per-task error."""

import importlib.metadata
import json
import subprocess
import time
from pathlib import Path

import polars as pl
from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.common import markdown_table, rounds
from filters.eval_scoring import build_task_scorers
from pipelines.resources import CausalLM
from pipelines.warehouse import REPO_ROOT, Warehouse, resolve_repo_path
from trainer.data import build_examples, sample_ids_sha256
from trainer.evaluate import EvalConfig, evaluate
from trainer.models import build_tiny_model, load_causal_lm
from trainer.plots import plot_task_errors, plot_weights, png_markdown
from trainer.train import TrainConfig, save_checkpoint, train


class TrainingSettings(Config):
    max_steps: int = Field(default=16, description="Optimizer steps per round.")
    batch_size: int = Field(default=8, description="Sequences per optimizer step.")
    learning_rate: float = Field(default=5e-5, description="Peak AdamW learning rate.")
    max_seq_len: int = Field(default=192, description="Tokens per training sequence; longer ones are truncated and counted.")
    seed: int = Field(default=0, description="Seed for shuffling and initialization; round r uses seed + r.")
    continue_from_previous_round: bool = Field(
        default=True, description="Start round r from round r-1's checkpoint instead of the base model."
    )
    checkpoint_dir: str = Field(default="outputs/checkpoints", description="Checkpoints go to <dir>/round-<r>.")


def _load_base_model(warehouse: Warehouse, causal_lm: CausalLM, seed: int):
    """Load the configured base model; "tiny" builds the test model from the selected samples' text."""
    if causal_lm.model == "tiny":
        texts = warehouse.query("SELECT prompt || ' ' || response AS text FROM selected_samples")["text"].to_list()
        return (*build_tiny_model(texts, seed=seed), "tiny")
    return (*load_causal_lm(causal_lm.model, causal_lm.cache_path), causal_lm.model)


def _load_start_model(warehouse: Warehouse, causal_lm: CausalLM, round_key: int, settings: TrainingSettings):
    """Load round r-1's checkpoint when continuing, else the configured base model."""
    if settings.continue_from_previous_round and round_key > 0 and warehouse.table_exists("checkpoints"):
        previous = warehouse.query("SELECT path FROM checkpoints WHERE round = ?", [round_key - 1])
        if previous.height and Path(previous["path"][0]).exists():
            path = previous["path"][0]
            return (*load_causal_lm(path, causal_lm.cache_path), path)
    return _load_base_model(warehouse, causal_lm, settings.seed)


@asset(group_name="loop", partitions_def=rounds, deps=["training_mixture"], kinds={"pytorch"})
def trained_model(
    context: AssetExecutionContext, config: TrainingSettings, warehouse: Warehouse, causal_lm: CausalLM
) -> MaterializeResult:
    """A causal LM fine-tuned on the round's training mixture; the checkpoint path is in the metadata."""
    round_key = int(context.partition_key)
    rows = warehouse.query(
        "SELECT s.prompt, s.response, s.task FROM training_mixture m JOIN selected_samples s USING (sample_id) "
        "WHERE m.round = ? ORDER BY m.mixture_position",
        [round_key],
    )
    if rows.height == 0:
        raise Failure(description=f"training_mixture for round {round_key} is empty; materialize it first")
    model, tokenizer, started_from = _load_start_model(warehouse, causal_lm, round_key, config)
    examples = build_examples(rows, tokenizer, config.max_seq_len)
    truncated = sum(bool(example.get("truncated")) for example in examples)
    train_config = TrainConfig(
        max_steps=config.max_steps,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        max_seq_len=config.max_seq_len,
        seed=config.seed + round_key,
    )
    # trainer.train logs one progress line per log_every steps; dagster.yaml routes it to this run's log.
    report = train(model, tokenizer, examples, train_config)
    path = resolve_repo_path(config.checkpoint_dir) / f"round-{round_key}"
    save_checkpoint(model, tokenizer, path)

    record = pl.DataFrame(
        {
            "round": [round_key],
            "path": [str(path)],
            "started_from": [started_from],
            "steps": [report.steps],
            "examples_seen": [report.examples_seen],
            "final_loss": [report.final_loss],
            "seconds": [report.seconds],
            "peak_rss_mb": [report.peak_rss_mb],
            "train_config": [json.dumps(train_config.__dict__, sort_keys=True)],
        }
    )
    warehouse.replace_rows("checkpoints", record, {"round": round_key})
    return MaterializeResult(
        metadata={
            "round": round_key,
            "checkpoint_path": MetadataValue.path(str(path)),
            "started_from": started_from,
            "steps": report.steps,
            "examples_seen": report.examples_seen,
            "truncated_examples": truncated,
            "final_loss": report.final_loss,
            "mean_loss": report.mean_loss,
            "seconds": round(report.seconds, 1),
            "peak_rss_mb": round(report.peak_rss_mb, 1),
            "train_config": MetadataValue.json(train_config.__dict__),
        }
    )


class EvaluationSettings(Config):
    max_eval_per_task: int = Field(default=48, description="Held-out items per task used for the loss.")
    max_generate_per_task: int = Field(
        default=4, description="Items per task answered by greedy generation for accuracy (math, code)."
    )
    max_new_tokens: int = Field(default=64, description="Generation budget per item, in tokens.")
    max_seq_len: int = Field(default=256, description="Tokens per evaluation sequence.")
    evaluate_reference: bool = Field(
        default=False,
        description="Also evaluate the base model once on the same items and store its losses in the "
        "reference_feedback table, for the excess_loss mixing signal.",
    )
    plot_dir: str = Field(
        default="outputs/plots", description="Where the PNG plots of weights and per-task loss per round go."
    )


def _evaluate_rows(model, tokenizer, eval_rows: pl.DataFrame, config: EvaluationSettings) -> pl.DataFrame:
    scorers = build_task_scorers()
    return evaluate(
        model,
        tokenizer,
        eval_rows,
        EvalConfig(
            max_seq_len=config.max_seq_len,
            max_generate_per_task=config.max_generate_per_task,
            max_new_tokens=config.max_new_tokens,
        ),
        scorers={task: scorer for task, (_, scorer) in scorers.items()},
        accuracy_kinds={task: kind for task, (kind, _) in scorers.items()},
    )


@asset(group_name="loop", partitions_def=rounds, deps=["trained_model", "evaluation_sets"], kinds={"pytorch", "duckdb"})
def task_error_stats(
    context: AssetExecutionContext, config: EvaluationSettings, warehouse: Warehouse, causal_lm: CausalLM
) -> MaterializeResult:
    """Per-task held-out loss and accuracy of the round's model, written to the feedback table for the next round."""
    round_key = int(context.partition_key)
    checkpoint = warehouse.query("SELECT path FROM checkpoints WHERE round = ?", [round_key])
    if checkpoint.height == 0:
        raise Failure(description=f"no checkpoint recorded for round {round_key}; materialize trained_model first")
    path = checkpoint["path"][0]
    model, tokenizer = load_causal_lm(path, Path(path).parent)
    eval_rows = warehouse.query(
        "SELECT * FROM evaluation_sets QUALIFY row_number() OVER (PARTITION BY task ORDER BY item_id) <= ?",
        [config.max_eval_per_task],
    )
    started = time.perf_counter()
    stats = _evaluate_rows(model, tokenizer, eval_rows, config)
    feedback = stats.with_columns(
        pl.lit(round_key, dtype=pl.Int64).alias("round"), pl.lit(path).alias("checkpoint_path")
    )
    warehouse.replace_rows("feedback", feedback, {"round": round_key})
    eval_seconds = time.perf_counter() - started
    context.log.info(f"round {round_key} evaluation took {eval_seconds:.1f} s")
    if config.evaluate_reference and not warehouse.table_exists("reference_feedback"):
        base_model, base_tokenizer, base_name = _load_base_model(warehouse, causal_lm, seed=0)
        reference = _evaluate_rows(base_model, base_tokenizer, eval_rows, config)
        warehouse.replace_table("reference_feedback", reference.with_columns(pl.lit(base_name).alias("model")))
        context.log.info(f"stored the reference losses of {base_name} for the excess_loss signal")

    record = build_round_record(warehouse, round_key, eval_seconds)
    warehouse.replace_rows(
        "round_records",
        pl.DataFrame([record], schema_overrides={"source_round": pl.Int64, "weight_change": pl.Float64}),
        {"round": round_key},
    )
    plots = write_round_plots(warehouse, round_key, resolve_repo_path(config.plot_dir))

    metadata = {
        "round": round_key,
        "per_task": markdown_table(feedback.drop("checkpoint_path")),
        "mean_loss": MetadataValue.json(dict(feedback.select("task", "mean_loss").iter_rows())),
        "worst_task": feedback.sort("mean_loss", descending=True, nulls_last=True)["task"][0],
        "train_steps_total": record["train_steps_total"],
        "train_seconds_total": round(record["train_seconds_total"], 1),
        "sample_ids_sha256": record["sample_ids_sha256"],
        "code_version": record["code_version"],
        "round_record": MetadataValue.json(record),
    }
    # The round sensor reads weight_change for the "weights stopped moving" rule. Round 0 has no
    # previous round, so the key is absent then.
    if record["weight_change"] is not None:
        metadata["weight_change"] = record["weight_change"]
    for name, (png, file) in plots.items():
        metadata[f"{name}_plot"] = MetadataValue.md(png_markdown(png, f"{name} per round"))
        metadata[f"{name}_plot_path"] = MetadataValue.path(str(file))
    return MaterializeResult(metadata=metadata)


def code_version() -> str:
    """Return ``git rev-parse HEAD`` of the repository, else the installed package version, else "unknown"."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        if head:
            return head
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return "sft-curation-loop " + importlib.metadata.version("sft-curation-loop")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_round_record(warehouse: Warehouse, round_key: int, eval_seconds: float) -> dict:
    """Collect what round ``round_key`` decided and used, so that the round can be reproduced."""
    weights = warehouse.query(
        "SELECT task, weight, signal, flag, rule, settings, source_round FROM mixture_weights WHERE round = ? "
        "ORDER BY task",
        [round_key],
    )
    before = dict(warehouse.query("SELECT task, weight FROM mixture_weights WHERE round = ?", [round_key - 1]).iter_rows())
    now = dict(weights.select("task", "weight").iter_rows())
    weight_change = (
        max(abs(now.get(task, 0.0) - before.get(task, 0.0)) for task in set(now) | set(before)) if before else None
    )
    sample_ids = warehouse.query("SELECT sample_id FROM training_mixture WHERE round = ?", [round_key])["sample_id"]
    checkpoint = warehouse.query(
        "SELECT path, started_from, train_config FROM checkpoints WHERE round = ?", [round_key]
    ).row(0, named=True)
    totals = warehouse.query(
        "SELECT sum(steps) AS steps, sum(seconds) AS seconds FROM checkpoints WHERE round <= ?", [round_key]
    ).row(0, named=True)
    return {
        "round": round_key,
        "source_round": weights["source_round"][0] if weights.height else None,
        "rule": weights["rule"][0] if weights.height else None,
        "settings": weights["settings"][0] if weights.height else None,
        "weights": json.dumps(now, sort_keys=True),
        "signal": json.dumps(dict(weights.select("task", "signal").iter_rows()), sort_keys=True),
        "flags": json.dumps(dict(weights.select("task", "flag").iter_rows()), sort_keys=True),
        "weight_change": weight_change,
        "sample_ids_sha256": sample_ids_sha256(sample_ids.to_list()),
        "mixture_rows": sample_ids.len(),
        "checkpoint_path": checkpoint["path"],
        "started_from": checkpoint["started_from"],
        "train_config": checkpoint["train_config"],
        "train_steps_total": int(totals["steps"] or 0),
        "train_seconds_total": float(totals["seconds"] or 0.0),
        "eval_seconds": eval_seconds,
        "code_version": code_version(),
    }


def write_round_plots(warehouse: Warehouse, round_key: int, plot_dir: Path) -> dict[str, tuple[bytes, Path]]:
    """Plot the weights and the per-task loss of rounds 0..``round_key`` and write them as PNG files."""
    weights = warehouse.query("SELECT round, task, weight FROM mixture_weights WHERE round <= ?", [round_key])
    losses = warehouse.query("SELECT round, task, mean_loss FROM feedback WHERE round <= ?", [round_key])
    plot_dir.mkdir(parents=True, exist_ok=True)
    plots = {}
    for name, png in (("weights", plot_weights(weights)), ("task_loss", plot_task_errors(losses))):
        file = plot_dir / f"round-{round_key}-{name}.png"
        file.write_bytes(png)
        plots[name] = (png, file)
    return plots
