"""Stage 3: task-specific selection.

Steps, in order, each rejecting into the ledger with stage "stage3":

1. ``task_label``: rows without a task get the nearest task prototype's label
   (``no_task_label`` when no embedder is given, ``low_task_similarity`` below the threshold).
2. ``math``: rows with task "math" (see ``filters.math_check``).
3. ``code``: rows with task "code" (see ``filters.code_check`` and ``filters.sandbox``).
4. ``decontam``: every remaining row against the eval sets' prompts (``contaminated``).

Kept rows keep every input column and gain ``task_source``, ``task_similarity``,
``math_answer``, ``math_check`` and ``code_status`` (null where a step does not apply).
Side tables: ``contamination`` (per benchmark), ``status_counts`` (per added status column)
and ``step_timings``.
"""

import logging
import time
from dataclasses import dataclass, field

import polars as pl

from filters.code_check import DETAIL, REASON, SCORE, THRESHOLD, CodeCheckConfig, check_code_rows
from filters.decontam import DecontamConfig, EvalIndex, contamination_table, match_rows
from filters.embed import Embedder
from filters.math_check import MathCheckConfig, check_math_rows
from filters.schema import StageResult, concat_ledgers, ledger_rows
from filters.task_label import TaskLabelConfig, build_prototypes, label_tasks

log = logging.getLogger(__name__)

STAGE = "stage3"
ADDED_COLUMNS: dict[str, pl.DataType] = {
    "task_source": pl.String,
    "task_similarity": pl.Float64,
    "math_answer": pl.String,
    "math_check": pl.String,
    "code_status": pl.String,
}
REQUIRED_COLUMNS = ("sample_id", "source", "task", "prompt", "response")
OPTIONAL_COLUMNS = ("lang", "reference", "tests", "entry_point")
_DECISION_COLUMNS = (REASON, SCORE, THRESHOLD, DETAIL)


@dataclass(frozen=True)
class Stage3Config:
    """Every threshold and limit of stage 3, grouped by step. Each part validates itself when built."""

    task_label: TaskLabelConfig = field(default_factory=TaskLabelConfig)
    math: MathCheckConfig = field(default_factory=MathCheckConfig)
    code: CodeCheckConfig = field(default_factory=CodeCheckConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)

    def __post_init__(self) -> None:
        expected = {
            "task_label": TaskLabelConfig,
            "math": MathCheckConfig,
            "code": CodeCheckConfig,
            "decontam": DecontamConfig,
        }
        for name, kind in expected.items():
            if not isinstance(getattr(self, name), kind):
                raise TypeError(f"Stage3Config.{name} is a {type(getattr(self, name)).__name__}: pass a {kind.__name__}")


def _split(frame: pl.DataFrame, filter_name: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split a frame with decision columns into kept rows and ledger rows."""
    rejected = frame.filter(pl.col(REASON).is_not_null())
    kept = frame.filter(pl.col(REASON).is_null()).drop(_DECISION_COLUMNS)
    ledger = ledger_rows(
        rejected,
        stage=STAGE,
        filter_name=filter_name,
        reason=pl.col(REASON),
        score=pl.col(SCORE),
        threshold=pl.col(THRESHOLD),
        detail=pl.col(DETAIL),
    )
    return kept, ledger


def _with_decision(frame: pl.DataFrame, reason: pl.Expr, score: pl.Expr, threshold: pl.Expr, detail: pl.Expr) -> pl.DataFrame:
    return frame.with_columns(
        reason.cast(pl.String).alias(REASON),
        score.cast(pl.Float64).alias(SCORE),
        threshold.cast(pl.Float64).alias(THRESHOLD),
        detail.cast(pl.String).alias(DETAIL),
    )


def _label_step(frame: pl.DataFrame, config: TaskLabelConfig, embedder: Embedder | None) -> pl.DataFrame:
    if embedder is None:
        # Without an embedder, unlabelled rows are rejected, never given a default task.
        frame = frame.with_columns(
            pl.when(pl.col("task").is_null()).then(pl.lit(None)).otherwise(pl.lit("source")).cast(pl.String).alias("task_source"),
            pl.lit(None, dtype=pl.Float64).alias("task_similarity"),
        )
        missing = pl.col("task").is_null()
        return _with_decision(
            frame,
            pl.when(missing).then(pl.lit("no_task_label")),
            pl.lit(None),
            pl.lit(None),
            pl.when(missing).then(pl.lit("task is null and no embedder was given to predict it")),
        )

    if frame["task"].is_null().any():
        frame = label_tasks(frame, embedder, build_prototypes(frame, embedder, config))
    else:
        frame = frame.with_columns(pl.lit("source").alias("task_source"), pl.lit(None, dtype=pl.Float64).alias("task_similarity"))
    low = (pl.col("task_source") == "prototype") & (pl.col("task_similarity") < config.min_task_similarity)
    return _with_decision(
        frame,
        pl.when(low).then(pl.lit("low_task_similarity")),
        pl.when(low).then(pl.col("task_similarity")),
        pl.when(low).then(pl.lit(config.min_task_similarity)),
        pl.when(low).then(pl.format("nearest task {}", pl.col("task"))),
    )


def _decontam_step(frame: pl.DataFrame, index: EvalIndex) -> tuple[pl.DataFrame, pl.DataFrame]:
    threshold = index.config.min_overlap_ratio
    matches = match_rows(frame, index).filter(pl.col("overlap_ratio") >= threshold)
    frame = frame.join(matches, on="sample_id", how="left")
    hit = pl.col("overlap_ratio").is_not_null()
    frame = _with_decision(
        frame,
        pl.when(hit).then(pl.lit("contaminated")),
        pl.col("overlap_ratio"),
        pl.when(hit).then(pl.lit(threshold)),
        pl.when(hit).then(pl.format("{}/{} (matched by {})", pl.col("benchmark"), pl.col("item_id"), pl.col("field"))),
    )
    return frame.drop("field", "benchmark", "item_id", "overlap_ratio"), matches


def _status_counts(kept: pl.DataFrame) -> pl.DataFrame:
    parts = []
    for column in ("task_source", "math_check", "code_status"):
        counts = kept.group_by(column).len().filter(pl.col(column).is_not_null())
        parts.append(counts.select(pl.lit(column).alias("column"), pl.col(column).alias("status"), pl.col("len").cast(pl.Int64).alias("n")))
    return pl.concat(parts).sort("column", "status")


def run_stage3(
    samples: pl.DataFrame,
    config: Stage3Config,
    eval_sets: pl.DataFrame,
    embedder: Embedder | None,
) -> StageResult:
    """Label tasks, check math answers, compile and test code, and decontaminate ``samples``.

    ``samples`` needs sample_id, source, task, prompt and response; lang, reference, tests and
    entry_point are used when present. ``eval_sets`` needs benchmark, item_id and prompt.
    Returns a ``StageResult`` whose ledger holds one row per rejected sample.
    """
    missing = [name for name in REQUIRED_COLUMNS if name not in samples.columns]
    if missing:
        raise ValueError(f"samples is missing columns {missing}: stage 3 needs {list(REQUIRED_COLUMNS)}")
    duplicated = samples["sample_id"].is_duplicated().sum()
    if duplicated:
        raise ValueError(f"samples has {duplicated} rows with a repeated sample_id: ids must be unique within a stage input")
    input_columns = samples.columns
    frame = samples.with_columns(
        [pl.lit(None, dtype=pl.String).alias(name) for name in OPTIONAL_COLUMNS if name not in samples.columns]
    )
    log.info("stage 3 started: %d rows, %d eval items", samples.height, eval_sets.height)
    ledgers = []
    timings = []

    def timed(step: str, rows_in: int, started: float) -> None:
        timings.append((step, rows_in, time.monotonic() - started))

    started = time.monotonic()
    frame, ledger = _split(_label_step(frame, config.task_label, embedder), "task_label")
    ledgers.append(ledger)
    timed("task_label", samples.height, started)

    started = time.monotonic()
    is_math = pl.col("task") == "math"
    math_rows = frame.filter(is_math)
    math_kept, ledger = _split(check_math_rows(math_rows, config.math), "math")
    ledgers.append(ledger)
    frame = pl.concat([frame.filter(~is_math), math_kept], how="diagonal_relaxed")
    timed("math", math_rows.height, started)

    started = time.monotonic()
    is_code = pl.col("task") == "code"
    code_rows = frame.filter(is_code)
    code_kept, ledger = _split(check_code_rows(code_rows, config.code), "code")
    ledgers.append(ledger)
    frame = pl.concat([frame.filter(~is_code), code_kept], how="diagonal_relaxed")
    timed("code", code_rows.height, started)

    started = time.monotonic()
    index = EvalIndex(eval_sets, config.decontam)
    rows_before = frame.height
    decided, matches = _decontam_step(frame, index)
    frame, ledger = _split(decided, "decontam")
    ledgers.append(ledger)
    timed("decontam", rows_before, started)

    # Restore input order and the exact column set: input columns, then the added ones.
    order = samples.select("sample_id").with_row_index("_order")
    frame = frame.with_columns([pl.lit(None, dtype=dtype).alias(name) for name, dtype in ADDED_COLUMNS.items() if name not in frame.columns])
    kept = frame.join(order, on="sample_id", how="left").sort("_order").drop("_order")
    kept = kept.select(input_columns + [name for name in ADDED_COLUMNS if name not in input_columns])
    kept = kept.with_columns([pl.col(name).cast(dtype) for name, dtype in ADDED_COLUMNS.items()])

    result = StageResult(
        kept=kept,
        rejected=concat_ledgers(ledgers),
        tables={
            "contamination": contamination_table(index, matches),
            "status_counts": _status_counts(kept),
            "step_timings": pl.DataFrame(timings, schema={"step": pl.String, "rows_in": pl.Int64, "seconds": pl.Float64}, orient="row"),
        },
        rows_in=samples.height,
    )
    no_block = kept.filter(pl.col("code_status") == "no_code_block").height
    log.info(
        "stage 3 finished: %d kept, %d rejected %s, %d code rows kept without a code block, timings %s",
        kept.height, result.rejected.height, result.reason_counts(), no_block,
        {step: round(seconds, 2) for step, _, seconds in timings},
    )
    return result
