"""Ingestion assets: raw samples from the configured sources, and the held-out evaluation sets."""

import time

import polars as pl
from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.common import markdown_table
from filters.ingest import FILES_SCHEMA, QUARANTINE_SCHEMA, SourceReadError, read_source
from filters.packaged import build_evaluation_sets
from filters.schema import SAMPLE_SCHEMA
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


SOURCE_ERRORS_SCHEMA: dict[str, pl.DataType] = {
    "source": pl.String,
    "kind": pl.String,
    "path": pl.String,
    "error": pl.String,  # exception class name
    "message": pl.String,  # names the file and the fix
    "kept_previous_rows": pl.Int64,  # rows of this source kept from the last successful read
    "run_id": pl.String,
}


def _previous_rows(warehouse: Warehouse, table: str, source: str, schema: dict) -> pl.DataFrame:
    """Return ``table``'s rows of ``source`` from the last materialization, or an empty frame."""
    if not warehouse.table_exists(table):
        return pl.DataFrame(schema=schema)
    previous = warehouse.query(f'SELECT * FROM "{table}" WHERE source = ?', [source])
    return previous.select(list(schema)).cast(schema) if previous.height else pl.DataFrame(schema=schema)


def _error_message(source, error: Exception, sources_path: str) -> str:
    if isinstance(error, SourceReadError):
        return str(error)
    return (
        f"source {source.name!r} ({source.path or source.dataset}) failed with {type(error).__name__}: {error}. "
        f"Fix or replace the file, or set 'enabled: false' for this source in {sources_path}."
    )


@asset(group_name="ingest", kinds={"duckdb", "polars"})
def raw_samples(context: AssetExecutionContext, config: SourcesConfig, warehouse: Warehouse) -> MaterializeResult:
    """Every sample from every configured source in one schema, with a stable sample_id, source, task and lang.

    A source that cannot be read keeps the rows of its last successful read (none on a first
    run) and gets a row in ``source_errors``, so the other sources and the downstream stages go
    on. The ``raw_samples_sources_readable`` check fails while any source is in that table.
    """
    started = time.perf_counter()
    sources = [s for s in load_sources_config(resolve_repo_path(config.sources_path)) if s.enabled]
    samples, quarantine, files, errors = [], [], [], []
    for source in sources:
        try:
            result = read_source(source, max_record_bytes=int(config.max_record_mb * 2**20))
        except Exception as error:  # one unreadable source must not stop the others
            message = _error_message(source, error, config.sources_path)
            kept = _previous_rows(warehouse, "raw_samples", source.name, SAMPLE_SCHEMA)
            samples.append(kept)
            quarantine.append(_previous_rows(warehouse, "quarantine", source.name, QUARANTINE_SCHEMA))
            files.append(_previous_rows(warehouse, "ingest_files", source.name, FILES_SCHEMA))
            context.log.error(f"source {source.name} failed, keeping its {kept.height} previous rows: {message}")
            errors.append(
                {
                    "source": source.name,
                    "kind": source.kind,
                    "path": source.path or source.dataset,
                    "error": type(error).__name__,
                    "message": message,
                    "kept_previous_rows": kept.height,
                    "run_id": context.run_id,
                }
            )
            continue
        context.log.info(
            f"source {source.name}: {result.samples.height} loaded, {result.quarantine.height} quarantined"
        )
        samples.append(result.samples)
        quarantine.append(result.quarantine)
        files.append(result.files)

    all_samples = pl.concat(samples, how="vertical") if samples else pl.DataFrame(schema=SAMPLE_SCHEMA)
    all_quarantine = pl.concat(quarantine, how="vertical") if quarantine else pl.DataFrame(schema=QUARANTINE_SCHEMA)
    all_files = pl.concat(files, how="vertical") if files else pl.DataFrame(schema=FILES_SCHEMA)
    warehouse.replace_tables(
        {
            "raw_samples": all_samples,
            "quarantine": all_quarantine,
            "ingest_files": all_files,
            "source_errors": pl.DataFrame(errors, schema=SOURCE_ERRORS_SCHEMA),
        }
    )

    if errors and all_samples.height == 0:
        raise Failure(
            description="no source could be read, so there is nothing to curate; fix the files named in "
            "source_errors (or the paths in the sources config) and materialize again",
            metadata={"failed_sources": MetadataValue.json([error["message"] for error in errors])},
        )

    per_source = all_samples.group_by("source", "task").len().sort("source", "task").rename({"len": "rows"})
    per_lang = all_samples.group_by("lang").len().sort("len", descending=True).rename({"len": "rows"})
    return MaterializeResult(
        metadata={
            "rows": all_samples.height,
            "quarantined": all_quarantine.height,
            "sources": len(sources),
            "failed_sources": MetadataValue.json([error["message"] for error in errors]),
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
    if frame.height == 0:
        # Only packaged sources carry a held-out split today; without one the loop has no feedback signal.
        context.log.warning(
            "no evaluation items: only packaged sources provide held-out splits, so every task will be "
            "flagged no_signal and the mixture weights will not move"
        )
    return MaterializeResult(metadata={"items": frame.height, "items_by_benchmark": markdown_table(by_benchmark)})
