"""Conservation checks: every row that enters a stage is kept or in the ledger, exactly once."""

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


conservation_checks = [_conservation_check(*stage) for stage in STAGES]

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
    description="Every raw sample is either selected or in the rejection ledger, exactly once, per source.",
)
def raw_samples_accounted_for(warehouse: Warehouse) -> AssetCheckResult:
    per_source = warehouse.query(ACCOUNTING_SQL)
    missing = int(per_source["missing"].sum() or 0)
    several = int(per_source["in_several_places"].sum() or 0)
    return AssetCheckResult(
        passed=missing == 0 and several == 0,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "raw_rows": int(per_source["raw_rows"].sum() or 0),
            "missing": missing,
            "in_several_places": several,
            "per_source": MetadataValue.json(per_source.to_dicts()),
        },
    )
