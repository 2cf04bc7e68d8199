"""The plain-text report the demo prints: funnel per stage, weights per round, per-task error per round."""

import polars as pl

from pipelines.warehouse import Warehouse

STAGE_TABLES = [
    ("ingest", "raw_samples"),
    ("stage1", "basic_filtered"),
    ("stage2", "consistent_samples"),
    ("stage3", "selected_samples"),
]


def _format(frame: pl.DataFrame) -> str:
    with pl.Config(tbl_rows=200, tbl_cols=20, tbl_width_chars=140, fmt_str_lengths=40, tbl_hide_dataframe_shape=True):
        return str(frame)


def funnel(warehouse: Warehouse) -> pl.DataFrame:
    """Rows kept after each stage, and rows rejected by each stage and reason."""
    rows = []
    for stage, table in STAGE_TABLES:
        if warehouse.table_exists(table):
            count = warehouse.query(f'SELECT count(*) AS n FROM "{table}"')["n"][0]
            rows.append({"stage": stage, "table": table, "rows": int(count)})
    return pl.DataFrame(rows, schema={"stage": pl.String, "table": pl.String, "rows": pl.Int64})


def rejections(warehouse: Warehouse) -> pl.DataFrame:
    if not warehouse.table_exists("rejection_ledger"):
        return pl.DataFrame()
    return warehouse.query(
        "SELECT stage, filter, reason, count(*) AS rows FROM rejection_ledger WHERE round IS NULL "
        "GROUP BY ALL ORDER BY stage, rows DESC"
    )


def weights_by_round(warehouse: Warehouse) -> pl.DataFrame:
    if not warehouse.table_exists("mixture_weights"):
        return pl.DataFrame()
    weights = warehouse.query("SELECT round, task, weight FROM mixture_weights ORDER BY round, task")
    return weights.pivot(on="task", index="round", values="weight").sort("round")


def errors_by_round(warehouse: Warehouse) -> pl.DataFrame:
    if not warehouse.table_exists("feedback"):
        return pl.DataFrame()
    return warehouse.query(
        "SELECT round, task, n_eval, round(mean_loss, 4) AS mean_loss, round(accuracy, 3) AS accuracy, "
        "accuracy_kind FROM feedback ORDER BY round, task"
    )


def weight_moves(warehouse: Warehouse) -> list[str]:
    """Describe, for each round r >= 1, how the weight of round r-1's highest-loss task changed."""
    if not (warehouse.table_exists("feedback") and warehouse.table_exists("mixture_weights")):
        return []
    weights = {
        (r, t): w for r, t, w in warehouse.query("SELECT round, task, weight FROM mixture_weights").iter_rows()
    }
    feedback = warehouse.query("SELECT round, task, mean_loss FROM feedback WHERE mean_loss IS NOT NULL")
    lines = []
    for round_key in sorted({r for r, _ in weights if r >= 1}):
        losses = feedback.filter(pl.col("round") == round_key - 1).sort("mean_loss", descending=True)
        if losses.height == 0 or (round_key - 1, losses["task"][0]) not in weights:
            continue
        worst, loss = losses["task"][0], losses["mean_loss"][0]
        before, after = weights[(round_key - 1, worst)], weights.get((round_key, worst), 0.0)
        direction = "unchanged"
        if after > before:
            direction = "up"
        elif after < before:
            direction = "down"
        lines.append(
            f"round {round_key}: round {round_key - 1}'s highest-loss task was {worst} (loss {loss:.3f}); "
            f"its weight went {direction}, {before:.3f} -> {after:.3f}"
        )
    return lines


def render_report(warehouse: Warehouse, timings: dict[str, float]) -> str:
    parts = [f"Warehouse: {warehouse.file}", "", "Funnel (rows after each stage):", _format(funnel(warehouse))]
    parts += ["", "Rejected, by stage and reason:", _format(rejections(warehouse))]
    parts += ["", "Mixture weights per round:", _format(weights_by_round(warehouse))]
    parts += ["", "Per-task error per round (held-out):", _format(errors_by_round(warehouse))]
    parts += weight_moves(warehouse)
    if timings:
        parts += ["", "Wall time per step (seconds):"]
        parts += [f"  {name:<40} {seconds:8.1f}" for name, seconds in timings.items()]
    return "\n".join(parts)
