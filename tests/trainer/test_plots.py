import base64

import polars as pl
import pytest

from trainer.plots import plot_task_errors, plot_weights, png_data_uri, png_markdown

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_plot_weights_returns_png():
    weights = pl.DataFrame({"round": [0, 0, 1, 1], "task": ["math", "chat", "math", "chat"], "weight": [0.5, 0.5, 0.7, 0.3]})
    png = plot_weights(weights)
    assert png[:8] == PNG_SIGNATURE


def test_plot_task_errors_accepts_null_loss():
    feedback = pl.DataFrame(
        {"round": [0, 0, 1, 1], "task": ["math", "chat", "math", "chat"], "mean_loss": [2.0, None, 1.8, 2.5]}
    )
    png = plot_task_errors(feedback)
    assert png[:8] == PNG_SIGNATURE


def test_plot_rejects_missing_column():
    with pytest.raises(ValueError, match="missing columns"):
        plot_weights(pl.DataFrame({"round": [0], "task": ["math"]}))


def test_png_markdown_embeds_data_uri():
    png = plot_weights(pl.DataFrame({"round": [0], "task": ["math"], "weight": [1.0]}))
    text = png_markdown(png, "weights")
    assert text.startswith("![weights](data:image/png;base64,")
    encoded = png_data_uri(png).split(",", 1)[1]
    assert base64.b64decode(encoded) == png
