"""Conservation checks: every record read is loaded or quarantined, and every row that enters a
stage is kept or in the ledger, exactly once."""

import polars as pl
from dagster import AssetCheckResult, AssetCheckSeverity, AssetChecksDefinition, MetadataValue, asset_check

from pipelines.warehouse import Warehouse

# (stage, input table, output table = asset name)
STAGES = [
    ("stage1", "raw_samples", "basic_filtered"),
    ("stage2", "basic_filtered", "consistent_samples"),
    ("stage3", "consistent_samples", "selected_samples"),
]

CONSERVATION_SQL = """
WITH incoming AS (SELECT sample_id FROM "{input}"),
     kept AS (SELECT sample_id FROM "{output}"),
     rejected AS (SELECT sample_id FROM rejection_ledger WHERE stage = ? AND round IS NULL),
     outcomes AS (SELECT sample_id FROM kept UNION ALL SELECT sample_id FROM rejected)
SELECT
    (SELECT count(*) FROM incoming) AS rows_in,
    (SELECT count(*) FROM kept) AS kept,
    (SELECT count(*) FROM rejected) AS rejected,
    (SELECT count(*) FROM incoming WHERE sample_id NOT IN (SELECT sample_id FROM outcomes)) AS missing,
    (SELECT count(*) FROM (SELECT sample_id FROM outcomes GROUP BY sample_id HAVING count(*) > 1)) AS duplicated,
    (SELECT count(*) FROM outcomes WHERE sample_id NOT IN (SELECT sample_id FROM incoming)) AS unknown
"""


def conservation_result(warehouse: Warehouse, stage: str, input_table: str, output_table: str) -> AssetCheckResult:
    counts = warehouse.query(CONSERVATION_SQL.format(input=input_table, output=output_table), [stage]).row(0, named=True)
    passed = (
        counts["rows_in"] == counts["kept"] + counts["rejected"]
        and counts["missing"] == 0
        and counts["duplicated"] == 0
        and counts["unknown"] == 0
    )
    return AssetCheckResult(passed=passed, severity=AssetCheckSeverity.ERROR, metadata=dict(counts))


def _conservation_check(stage: str, input_table: str, output_table: str) -> AssetChecksDefinition:
    @asset_check(
        asset=output_table,
        name=f"{output_table}_conservation",
        blocking=True,
        description=f"Rows into {stage} == kept + rejected, with every sample id accounted for exactly once.",
    )
    def check(warehouse: Warehouse) -> AssetCheckResult:
        return conservation_result(warehouse, stage, input_table, output_table)

    return check


INGEST_SQL = """
WITH files AS (SELECT source, sum(records)::BIGINT AS records FROM ingest_files GROUP BY source),
     loaded AS (SELECT source, count(*) AS loaded FROM raw_samples GROUP BY source),
     quarantined AS (SELECT source, count(*) AS quarantined FROM quarantine GROUP BY source),
     repeated_lines AS (
        SELECT source, count(*) AS repeated_lines
        FROM (SELECT source, file, line FROM quarantine GROUP BY ALL HAVING count(*) > 1)
        GROUP BY source
     ),
     repeated_ids AS (
        SELECT source, count(*) AS repeated_ids
        FROM (SELECT source, sample_id FROM raw_samples GROUP BY ALL HAVING count(*) > 1)
        GROUP BY source
     ),
     sources AS (SELECT source FROM files UNION SELECT source FROM loaded UNION SELECT source FROM quarantined)
SELECT source,
       coalesce(records, 0) AS records,
       coalesce(loaded, 0) AS loaded,
       coalesce(quarantined, 0) AS quarantined,
       coalesce(repeated_lines, 0) AS repeated_quarantine_lines,
       coalesce(repeated_ids, 0) AS repeated_sample_ids
FROM sources
LEFT JOIN files USING (source) LEFT JOIN loaded USING (source) LEFT JOIN quarantined USING (source)
LEFT JOIN repeated_lines USING (source) LEFT JOIN repeated_ids USING (source)
ORDER BY source
"""


def ingest_counts(warehouse: Warehouse) -> pl.DataFrame:
    """Per source: records read, loaded, quarantined, and positions or ids that appear twice."""
    return warehouse.query(INGEST_SQL)


@asset_check(
    asset="raw_samples",
    name="raw_samples_conservation",
    blocking=True,
    description="Per source, records read == loaded + quarantined, with no sample id or quarantined line twice.",
)
def raw_samples_conservation(warehouse: Warehouse) -> AssetCheckResult:
    per_source = ingest_counts(warehouse)
    unbalanced = per_source.filter(pl.col("records") != pl.col("loaded") + pl.col("quarantined"))
    repeated = int(per_source["repeated_quarantine_lines"].sum() or 0) + int(per_source["repeated_sample_ids"].sum() or 0)
    return AssetCheckResult(
        passed=unbalanced.height == 0 and repeated == 0,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "records": int(per_source["records"].sum() or 0),
            "loaded": int(per_source["loaded"].sum() or 0),
            "quarantined": int(per_source["quarantined"].sum() or 0),
            "unbalanced_sources": MetadataValue.json(unbalanced["source"].to_list()),
            "repeated": repeated,
            "per_source": MetadataValue.json(per_source.to_dicts()),
        },
    )


@asset_check(
    asset="raw_samples",
    name="raw_samples_sources_readable",
    description="Every enabled source could be read; a failed source lists its file and the fix.",
)
def raw_samples_sources_readable(warehouse: Warehouse) -> AssetCheckResult:
    errors = warehouse.read_table("source_errors") if warehouse.table_exists("source_errors") else None
    failed = errors.to_dicts() if errors is not None else []
    return AssetCheckResult(
        passed=not failed,
        severity=AssetCheckSeverity.ERROR,
        description="; ".join(row["message"] for row in failed) or None,
        metadata={"failed_sources": MetadataValue.json(failed)},
    )


conservation_checks = [
    raw_samples_conservation,
    raw_samples_sources_readable,
    *(_conservation_check(*stage) for stage in STAGES),
]

ACCOUNTING_SQL = """
WITH raw AS (SELECT sample_id, source FROM raw_samples),
     outcome AS (
        SELECT sample_id, 'selected' AS outcome FROM selected_samples
        UNION ALL
        SELECT sample_id, 'rejected:' || stage AS outcome FROM rejection_ledger WHERE round IS NULL
     ),
     joined AS (
        SELECT raw.source, raw.sample_id, count(outcome.outcome) AS places
        FROM raw LEFT JOIN outcome USING (sample_id) GROUP BY raw.source, raw.sample_id
     )
SELECT source, count(*) AS raw_rows,
       count(*) FILTER (WHERE places = 1) AS accounted,
       count(*) FILTER (WHERE places = 0) AS missing,
       count(*) FILTER (WHERE places > 1) AS in_several_places
FROM joined GROUP BY source ORDER BY source
"""


@asset_check(
    asset="selected_samples",
    additional_deps=["raw_samples"],
    description=(
        "Every raw record is in exactly one place: the selected set, the rejection ledger or the quarantine. "
        "Loaded samples are matched by sample_id, quarantined records by source, file and line."
    ),
)
def raw_samples_accounted_for(warehouse: Warehouse) -> AssetCheckResult:
    per_source = warehouse.query(ACCOUNTING_SQL)
    missing = int(per_source["missing"].sum() or 0)
    several = int(per_source["in_several_places"].sum() or 0)
    ingest = ingest_counts(warehouse)
    records = dict(zip(ingest["source"].to_list(), ingest["records"].to_list()))
    quarantined = dict(zip(ingest["source"].to_list(), ingest["quarantined"].to_list()))
    placed = {row["source"]: row["accounted"] for row in per_source.iter_rows(named=True)}
    unbalanced = sorted(
        source for source in records if records[source] != placed.get(source, 0) + quarantined.get(source, 0)
    )
    repeated = int(ingest["repeated_quarantine_lines"].sum() or 0)
    return AssetCheckResult(
        passed=missing == 0 and several == 0 and not unbalanced and repeated == 0,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "records": int(sum(records.values())),
            "raw_rows": int(per_source["raw_rows"].sum() or 0),
            "quarantined": int(sum(quarantined.values())),
            "missing": missing,
            "in_several_places": several,
            "unbalanced_sources": MetadataValue.json(unbalanced),
            "per_source": MetadataValue.json(per_source.to_dicts()),
        },
    )
