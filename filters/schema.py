"""The sample schema, the rejection-ledger schema and the result type every stage returns.

Every stage in ``filters`` takes a polars frame with ``SAMPLE_SCHEMA`` columns (plus any score
columns earlier stages added) and returns a ``StageResult``: the kept rows, one ledger row per
rejected row, and optional side tables. ``StageResult.check_conservation`` is the invariant that
the asset checks enforce: every row in is either kept or rejected, never both, never neither.
"""

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field

import polars as pl

SAMPLE_SCHEMA: dict[str, pl.DataType] = {
    "sample_id": pl.String,  # stable hash of source + normalized content, see make_sample_id
    "source": pl.String,  # name of the configured source the row came from
    "origin_id": pl.String,  # the row's own id inside its source file, if it had one
    "task": pl.String,  # math / code / chat / ... ; null when the source does not say
    "lang": pl.String,  # ISO 639-1 code, e.g. "en", "zh"
    "prompt": pl.String,
    "response": pl.String,
    "messages": pl.String,  # the original chat turns as JSON, null for single-turn shapes
    "reference": pl.String,  # gold final answer (math), null when unknown
    "tests": pl.String,  # Python test code for code samples, null when none
    "entry_point": pl.String,  # function under test for code samples, null when none
    "meta": pl.String,  # any other source fields, as JSON
}

LEDGER_SCHEMA: dict[str, pl.DataType] = {
    "sample_id": pl.String,
    "source": pl.String,
    "task": pl.String,
    "stage": pl.String,  # "stage1" / "stage2" / "stage3"
    "filter": pl.String,  # which filter inside the stage, e.g. "quality", "exact_dedup"
    "reason": pl.String,  # stable snake_case reason code, e.g. "empty_response"
    "score": pl.Float64,  # the value the threshold was applied to, null when not numeric
    "threshold": pl.Float64,  # the threshold it failed, null when not numeric
    "duplicate_of": pl.String,  # the kept sample, for dedup reasons only
    "detail": pl.String,  # human-readable evidence (error message, evidence pair, ...)
}


def make_sample_id(source: str, prompt: str, response: str) -> str:
    """Return a stable 16-hex-digit id for a sample.

    The id hashes the source name and the exact prompt and response text, so it does not depend
    on file order, partitioning or ``PYTHONHASHSEED``. Two identical rows of one source share an
    id, so the reader (``filters.ingest.assign_sample_ids``) appends ``#2``, ``#3`` to repeats.
    """
    digest = hashlib.blake2b(digest_size=8)
    for part in (source, prompt, response):
        digest.update(part.encode("utf-8"))
        digest.update(b"\x1f")
    return digest.hexdigest()


def empty_samples() -> pl.DataFrame:
    return pl.DataFrame(schema=SAMPLE_SCHEMA)


def empty_ledger() -> pl.DataFrame:
    return pl.DataFrame(schema=LEDGER_SCHEMA)


def ledger_rows(
    rejected: pl.DataFrame,
    *,
    stage: str,
    filter_name: str,
    reason: str | pl.Expr,
    score: float | pl.Expr | None = None,
    threshold: float | None = None,
    duplicate_of: str | pl.Expr | None = None,
    detail: str | pl.Expr | None = None,
) -> pl.DataFrame:
    """Build ledger rows for ``rejected`` samples; expressions are evaluated against ``rejected``."""

    def as_expr(value, dtype):
        if isinstance(value, pl.Expr):
            return value.cast(dtype)
        return pl.lit(value, dtype=dtype)

    return rejected.select(
        pl.col("sample_id"),
        pl.col("source"),
        pl.col("task"),
        pl.lit(stage, dtype=pl.String).alias("stage"),
        pl.lit(filter_name, dtype=pl.String).alias("filter"),
        as_expr(reason, pl.String).alias("reason"),
        as_expr(score, pl.Float64).alias("score"),
        as_expr(threshold, pl.Float64).alias("threshold"),
        as_expr(duplicate_of, pl.String).alias("duplicate_of"),
        as_expr(detail, pl.String).alias("detail"),
    )


class ConservationError(AssertionError):
    """A stage lost, duplicated or invented rows."""


@dataclass
class StageResult:
    """The output of a stage: kept rows, ledger rows for rejected ones, and side tables."""

    kept: pl.DataFrame
    rejected: pl.DataFrame
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    rows_in: int = 0

    def reason_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.rejected["reason"].to_list()).items()))

    def check_conservation(self, input_ids: pl.Series) -> None:
        """Raise ``ConservationError`` unless every input id is kept or rejected exactly once."""
        kept_ids = set(self.kept["sample_id"].to_list())
        rejected_ids = self.rejected["sample_id"].to_list()
        if len(rejected_ids) != len(set(rejected_ids)):
            raise ConservationError("a sample has more than one ledger row in this stage")
        if kept_ids & set(rejected_ids):
            raise ConservationError("a sample is both kept and rejected")
        expected = set(input_ids.to_list())
        seen = kept_ids | set(rejected_ids)
        if seen != expected or self.kept.height != len(kept_ids):
            missing = sorted(expected - seen)[:5]
            extra = sorted(seen - expected)[:5]
            raise ConservationError(f"rows lost {missing} or invented {extra}")

    def summary(self) -> dict[str, object]:
        return {
            "rows_in": self.rows_in,
            "kept": self.kept.height,
            "rejected": self.rejected.height,
            "rejected_by_reason": self.reason_counts(),
        }


def concat_ledgers(parts: list[pl.DataFrame]) -> pl.DataFrame:
    parts = [p.select(list(LEDGER_SCHEMA)) for p in parts if p.height]
    return pl.concat(parts, how="vertical") if parts else empty_ledger()


def to_json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
