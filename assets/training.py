"""Loop assets that train a round's model and measure its per-task error."""

import json
import time
from pathlib import Path

import polars as pl
from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.common import markdown_table, rounds
from filters.eval_scoring import build_task_scorers
from pipelines.resources import CausalLM
from pipelines.warehouse import Warehouse, resolve_repo_path
from trainer.data import build_examples
from trainer.evaluate import EvalConfig, evaluate
from trainer.models import build_tiny_model, load_causal_lm
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


def _load_start_model(warehouse: Warehouse, causal_lm: CausalLM, round_key: int, settings: TrainingSettings):
    """Load round r-1's checkpoint when continuing, else the configured base model."""
    if settings.continue_from_previous_round and round_key > 0 and warehouse.table_exists("checkpoints"):
        previous = warehouse.query("SELECT path FROM checkpoints WHERE round = ?", [round_key - 1])
        if previous.height and Path(previous["path"][0]).exists():
            path = previous["path"][0]
            return (*load_causal_lm(path, causal_lm.cache_path), path)
    if causal_lm.model == "tiny":
        texts = warehouse.query("SELECT prompt || ' ' || response AS text FROM selected_samples")["text"].to_list()
        return (*build_tiny_model(texts, seed=settings.seed), "tiny")
    return (*load_causal_lm(causal_lm.model, causal_lm.cache_path), causal_lm.model)


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
    report = train(model, tokenizer, examples, train_config, progress=lambda line: context.log.info(str(line)))
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


@asset(group_name="loop", partitions_def=rounds, deps=["trained_model", "evaluation_sets"], kinds={"pytorch", "duckdb"})
def task_error_stats(
    context: AssetExecutionContext, config: EvaluationSettings, warehouse: Warehouse
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
    scorers = build_task_scorers()
    stats = evaluate(
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
    feedback = stats.with_columns(
        pl.lit(round_key, dtype=pl.Int64).alias("round"), pl.lit(path).alias("checkpoint_path")
    )
    warehouse.replace_rows("feedback", feedback, {"round": round_key})
    context.log.info(f"round {round_key} evaluation took {time.perf_counter() - started:.1f} s")
    return MaterializeResult(
        metadata={
            "round": round_key,
            "per_task": markdown_table(feedback.drop("checkpoint_path")),
            "mean_loss": MetadataValue.json(dict(feedback.select("task", "mean_loss").iter_rows())),
            "worst_task": feedback.sort("mean_loss", descending=True)["task"][0],
        }
    )
