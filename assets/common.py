"""Helpers shared by the asset modules: the round partitions and stage metadata."""

import polars as pl
from dagster import DynamicPartitionsDefinition, MetadataValue

from filters.schema import StageResult

# Rounds of the feedback loop: "0", "1", ... Round r's mixture reads round r-1's feedback rows.
rounds = DynamicPartitionsDefinition(name="round")

# Runs carrying this tag share one slot in the run queue (see dagster.yaml): one warehouse writer at a time.
WAREHOUSE_TAG = {"curation/warehouse": "default"}


def markdown_table(frame: pl.DataFrame, max_rows: int = 30) -> MetadataValue:
    """Render a small frame as a Markdown table for the Dagster UI."""
    frame = frame.head(max_rows)
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    lines = [header, rule]
    for row in frame.iter_rows():
        cells = [f"{value:.4f}" if isinstance(value, float) else str(value) for value in row]
        lines.append("| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in cells) + " |")
    return MetadataValue.md("\n".join(lines))


def stage_metadata(result: StageResult, seconds: float) -> dict[str, object]:
    """Rows in, kept, rejected per reason, kept per task, and the wall time of a stage."""
    by_reason = result.reason_counts()
    kept_by_task = (
        result.kept.group_by("task").len().sort("task").rename({"len": "kept"})
        if result.kept.height
        else pl.DataFrame({"task": [], "kept": []})
    )
    metadata: dict[str, object] = {
        "rows_in": result.rows_in,
        "kept": result.kept.height,
        "rejected": result.rejected.height,
        "seconds": round(seconds, 2),
        "rejected_by_reason": MetadataValue.json(by_reason),
        "kept_by_task": markdown_table(kept_by_task),
    }
    for reason, count in by_reason.items():
        metadata[f"rejected/{reason}"] = count
    return metadata


def record_stage(
    warehouse, result: StageResult, *, stage: str, output_table: str, run_id: str, seconds: float
) -> dict[str, object]:
    """Write a stage's kept rows, its ledger rows and side tables in one transaction; return its metadata."""
    warehouse.write_stage(
        stage=stage,
        output_table=output_table,
        kept=result.kept,
        rejected=result.rejected,
        side_tables={f"{stage}_{name}": table for name, table in result.tables.items()},
        run_id=run_id,
    )
    return stage_metadata(result, seconds)
