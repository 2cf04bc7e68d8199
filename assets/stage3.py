"""Stage 3: task labels, math answer checks, code compile-and-test in a sandbox, decontamination."""

import time

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)
from pydantic import Field

from assets.common import markdown_table, record_stage
from filters.code_check import CodeCheckConfig
from filters.decontam import find_contamination
from filters.stage3 import Stage3Config, run_stage3
from pipelines.resources import SentenceEmbedder
from pipelines.warehouse import Warehouse


class Stage3Settings(Config):
    code_timeout_s: float = Field(
        default=CodeCheckConfig.timeout_s, description="Wall-clock limit in seconds for one code sample's tests."
    )
    sandbox_workers: int = Field(
        default=CodeCheckConfig.workers, description="Code samples run in this many parallel sandbox processes."
    )


@asset(group_name="curation", deps=["consistent_samples", "evaluation_sets"], kinds={"duckdb", "python"})
def selected_samples(
    context: AssetExecutionContext, config: Stage3Settings, warehouse: Warehouse, sentence_embedder: SentenceEmbedder
) -> MaterializeResult:
    """The curated training pool: samples whose task-specific checks pass and that copy no evaluation item."""
    samples = warehouse.read_table("consistent_samples")
    eval_sets = warehouse.read_table("evaluation_sets")
    started = time.perf_counter()
    context.log.info(f"stage 3 on {samples.height} samples against {eval_sets.height} evaluation items")
    stage_config = Stage3Config(code=CodeCheckConfig(timeout_s=config.code_timeout_s, workers=config.sandbox_workers))
    result = run_stage3(samples, stage_config, eval_sets, sentence_embedder.load())
    result.check_conservation(samples["sample_id"])
    metadata = record_stage(
        warehouse, result, stage="stage3", output_table="selected_samples", run_id=context.run_id,
        seconds=time.perf_counter() - started,
    )
    ledger = result.rejected
    per_task = (
        pl.concat(
            [
                result.kept.select("task", pl.lit("kept").alias("reason")),
                ledger.select("task", "reason"),
            ]
        )
        .group_by("task", "reason")
        .len()
        .sort("task", "reason")
        .rename({"len": "rows"})
    )
    metadata["per_task_by_reason"] = markdown_table(per_task, max_rows=60)
    if "contamination" in result.tables:
        metadata["contamination"] = markdown_table(result.tables["contamination"])
    return MaterializeResult(metadata=metadata)


@asset_check(asset=selected_samples, blocking=True, description="No selected sample overlaps an evaluation item.")
def no_eval_contamination(warehouse: Warehouse) -> AssetCheckResult:
    selected = warehouse.read_table("selected_samples")
    eval_sets = warehouse.read_table("evaluation_sets")
    matches = find_contamination(selected, eval_sets, Stage3Config().decontam)
    per_benchmark = (
        matches.group_by("benchmark").agg(pl.col("sample_id").n_unique().alias("train_rows")).sort("benchmark")
        if matches.height
        else pl.DataFrame({"benchmark": [], "train_rows": []})
    )
    return AssetCheckResult(
        passed=matches.height == 0,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "matched_train_rows": int(matches["sample_id"].n_unique()) if matches.height else 0,
            "per_benchmark": markdown_table(per_benchmark),
            "examples": MetadataValue.json(matches.head(5).to_dicts() if matches.height else []),
        },
    )
