"""PNG plots of the loop's history: mixture weights per round and per-task error per round.

Matplotlib runs with the Agg backend, so the plots render without a display. Each function returns the
PNG bytes; ``png_data_uri`` and ``png_markdown`` turn them into text that Dagster's markdown metadata
shows as an image.
"""

import base64
import io
import logging

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

log = logging.getLogger(__name__)


def plot_by_round(frame: pl.DataFrame, value: str, title: str, y_label: str) -> bytes:
    """Draw one line per task of ``value`` against ``round`` and return the PNG bytes.

    frame needs the columns ``round``, ``task`` and ``value``. Null values leave a gap in the line.
    Raises ValueError when a column is missing.
    """
    missing = {"round", "task", value} - set(frame.columns)
    if missing:
        raise ValueError(f"frame is missing columns {sorted(missing)}; it needs round, task and {value}")

    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=100)
    try:
        for task in sorted(frame["task"].drop_nulls().unique().to_list()):
            rows = frame.filter(pl.col("task") == task).sort("round")
            values = [float("nan") if v is None else v for v in rows[value].to_list()]
            axes.plot(rows["round"].to_list(), values, marker="o", label=task)
        axes.set_xlabel("round")
        axes.set_ylabel(y_label)
        axes.set_title(title)
        rounds = sorted(frame["round"].unique().to_list())
        if rounds:
            axes.set_xticks(rounds)
        axes.grid(alpha=0.3)
        axes.legend(loc="best", fontsize="small")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
    finally:
        plt.close(figure)
    return buffer.getvalue()


def plot_weights(weights: pl.DataFrame) -> bytes:
    """Plot the mixture weight of every task per round (columns round, task, weight)."""
    return plot_by_round(weights, "weight", "Mixture weights per round", "weight")


def plot_task_errors(feedback: pl.DataFrame) -> bytes:
    """Plot every task's held-out loss per round (columns round, task, mean_loss)."""
    return plot_by_round(feedback, "mean_loss", "Held-out loss per task and round", "mean loss (nats)")


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def png_markdown(png: bytes, alt_text: str) -> str:
    """Return a markdown image whose source is the PNG as a base64 data URI."""
    return f"![{alt_text}]({png_data_uri(png)})"
