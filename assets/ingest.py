"""Ingestion assets: raw samples from the configured sources, and the held-out evaluation sets."""

import time

import polars as pl
from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.common import markdown_table
from filters.ingest import read_source
from filters.packaged import build_evaluation_sets
from filters.sources import load_sources_config
from pipelines.warehouse import Warehouse, resolve_repo_path


class SourcesConfig(Config):
    sources_path: str = Field(
        default="config/sources.yaml",
        description="YAML file listing the sources; a relative path is resolved against the repository root.",
    )
    max_record_mb: float = Field(
        default=8.0, description="Records larger than this many MiB go to quarantine as too_large."
    )


@asset(group_name="ingest", kinds={"duckdb", "polars"})
def raw_samples(context: AssetExecutionContext, config: SourcesConfig, warehouse: Warehouse) -> MaterializeResult:
    """Every sample from every configured source in one schema, with a stable sample_id, source, task and lang."""
    started = time.perf_counter()
    sources = [s for s in load_sources_config(resolve_repo_path(config.sources_path)) if s.enabled]
    samples, quarantine, files, failures = [], [], [], []
    for source in sources:
        try:
            result = read_source(source, max_record_bytes=int(config.max_record_mb * 2**20))
        except Exception as error:  # one unreadable source must not stop the others
            context.log.error(f"source {source.name} failed: {error}")
            failures.append(f"{source.name}: {error}")
            continue
        context.log.info(
            f"source {source.name}: {result.samples.height} loaded, {result.quarantine.height} quarantined"
        )
        samples.append(result.samples)
        quarantine.append(result.quarantine)
        files.append(result.files)

    all_samples = pl.concat(samples, how="vertical") if samples else pl.DataFrame()
    all_quarantine = pl.concat(quarantine, how="vertical") if quarantine else pl.DataFrame()
    warehouse.replace_table("raw_samples", all_samples)
    if quarantine:
        warehouse.replace_table("quarantine", all_quarantine)
        warehouse.replace_table("ingest_files", pl.concat(files, how="vertical"))
    if failures:
        raise Failure(
            description="some sources could not be read; the others were loaded and written",
            metadata={"failed_sources": MetadataValue.json(failures)},
        )

    per_source = all_samples.group_by("source", "task").len().sort("source", "task").rename({"len": "rows"})
    per_lang = all_samples.group_by("lang").len().sort("len", descending=True).rename({"len": "rows"})
    return MaterializeResult(
        metadata={
            "rows": all_samples.height,
            "quarantined": all_quarantine.height,
            "sources": len(sources),
            "seconds": round(time.perf_counter() - started, 2),
            "rows_by_source": markdown_table(per_source),
            "rows_by_lang": markdown_table(per_lang),
        }
    )


@asset(group_name="ingest", kinds={"duckdb", "polars"})
def evaluation_sets(context: AssetExecutionContext, config: SourcesConfig, warehouse: Warehouse) -> MaterializeResult:
    """Held-out evaluation items per task, split by problem from the packaged sources and never trained on."""
    sources = [s for s in load_sources_config(resolve_repo_path(config.sources_path)) if s.enabled]
    frame = build_evaluation_sets(sources, max_per_task=None)
    warehouse.replace_table("evaluation_sets", frame)
    by_benchmark = frame.group_by("benchmark", "task").len().sort("benchmark").rename({"len": "items"})
    context.log.info(f"evaluation sets: {frame.height} items")
    return MaterializeResult(metadata={"items": frame.height, "items_by_benchmark": markdown_table(by_benchmark)})
