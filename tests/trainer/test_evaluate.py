import math

import polars as pl
import pytest
import torch

from trainer.data import build_examples
from trainer.evaluate import EVAL_RESULT_SCHEMA, EvalConfig, evaluate, task_signals
from trainer.mixing import compute_weights
from trainer.models import build_tiny_model
from trainer.train import TrainConfig, train

EVAL_ROWS = pl.DataFrame(
    {
        "task": ["math", "math", "math", "chat", "chat"],
        "prompt": ["What is 2+3?", "What is 4+4?", "What is 1+1?", "你好吗？", "Say hello."],
        "response": ["5", "8", "2", "我很好。", "Hello there!"],
        "reference": ["5", "8", "2", None, None],
        "tests": [None] * 5,
        "entry_point": [None] * 5,
        "item_id": ["m2", "m1", "m3", "c1", "c2"],
    }
)
SMALL = EvalConfig(batch_size=2, max_seq_len=64, max_generate_per_task=2, max_new_tokens=6)


@pytest.fixture(scope="module")
def trained():
    """A tiny model trained until it reproduces the math responses."""
    texts = (EVAL_ROWS["prompt"].to_list() + EVAL_ROWS["response"].to_list()) * 5
    model, tokenizer = build_tiny_model(texts, seed=0)
    examples = build_examples(EVAL_ROWS, tokenizer, max_len=64)
    config = TrainConfig(max_steps=60, batch_size=5, learning_rate=3e-3, warmup_steps=3, max_seq_len=64, num_threads=1)
    train(model, tokenizer, examples, config)
    return model, tokenizer


def test_evaluate_returns_one_row_per_task(trained):
    model, tokenizer = trained
    result = evaluate(model, tokenizer, EVAL_ROWS, SMALL)
    assert result["task"].to_list() == ["chat", "math"]
    assert result["n_eval"].to_list() == [2, 3]
    assert dict(result.schema) == EVAL_RESULT_SCHEMA


def test_evaluate_without_scorer_leaves_accuracy_null(trained):
    model, tokenizer = trained
    result = evaluate(model, tokenizer, EVAL_ROWS, SMALL)
    assert result["accuracy"].null_count() == 2
    assert result["accuracy_kind"].null_count() == 2
    assert result["n_generated"].to_list() == [0, 0]
    assert result["generate_ms_per_sample"].null_count() == 2
    assert result["latency_ms_per_sample"].null_count() == 0


def test_evaluate_mean_loss_is_token_weighted(trained):
    """The task loss is total response-token loss over total response tokens, not a mean of row means."""
    model, tokenizer = trained
    math_rows = EVAL_ROWS.filter(pl.col("task") == "math")
    total_loss = 0.0
    total_tokens = 0
    for example in build_examples(math_rows, tokenizer, max_len=64):
        ids = torch.tensor([example["input_ids"]])
        labels = torch.tensor([example["labels"]])
        with torch.no_grad():
            logits = model(ids).logits[:, :-1]
        targets = labels[:, 1:]
        total_loss += float(torch.nn.functional.cross_entropy(logits[0], targets[0], ignore_index=-100, reduction="sum"))
        total_tokens += int((targets != -100).sum())
    result = evaluate(model, tokenizer, math_rows, SMALL)
    assert result["mean_loss"][0] == pytest.approx(total_loss / total_tokens, rel=1e-4)


def test_evaluate_scores_first_rows_by_item_id(trained):
    model, tokenizer = trained
    seen = []

    def exact_match(text: str, row: dict) -> bool:
        seen.append(row["item_id"])
        return text.strip() == row["reference"]

    result = evaluate(model, tokenizer, EVAL_ROWS, SMALL, scorers={"math": exact_match}, accuracy_kinds={"math": "exact_match"})
    math_row = result.filter(pl.col("task") == "math").row(0, named=True)
    assert seen == ["m1", "m2"]
    assert math_row["n_generated"] == 2
    assert math_row["accuracy"] == pytest.approx(1.0)
    assert math_row["accuracy_kind"] == "exact_match"
    assert math_row["generate_ms_per_sample"] > 0


def test_evaluate_counts_scorer_errors_as_rejections(trained):
    model, tokenizer = trained

    def broken(text: str, row: dict) -> bool:
        raise KeyError("reference")

    result = evaluate(model, tokenizer, EVAL_ROWS, SMALL, scorers={"chat": broken})
    chat_row = result.filter(pl.col("task") == "chat").row(0, named=True)
    assert chat_row["accuracy"] == 0.0
    assert chat_row["n_scorer_errors"] == 2
    assert chat_row["accuracy_kind"] == "custom"


def test_evaluate_batched_generation_matches_single(trained):
    """Left padding in a batch must not change greedy outputs."""
    model, tokenizer = trained
    outputs = {}

    def record(batch_size):
        def scorer(text: str, row: dict) -> bool:
            outputs.setdefault(batch_size, []).append(text)
            return True

        return scorer

    for batch_size in (1, 3):
        config = EvalConfig(batch_size=batch_size, max_seq_len=64, max_generate_per_task=3, max_new_tokens=6)
        evaluate(model, tokenizer, EVAL_ROWS, config, scorers={"math": record(batch_size)})
    assert outputs[1] == outputs[3]


def test_evaluate_zero_generations_leave_accuracy_null(trained):
    model, tokenizer = trained
    config = EvalConfig(batch_size=2, max_seq_len=64, max_generate_per_task=0, max_new_tokens=6)
    result = evaluate(model, tokenizer, EVAL_ROWS, config, scorers={"math": lambda text, row: True})
    math_row = result.filter(pl.col("task") == "math").row(0, named=True)
    assert math_row["accuracy"] is None
    assert math_row["accuracy_kind"] is None
    assert math_row["n_generated"] == 0


def test_evaluate_restores_training_mode(trained):
    model, tokenizer = trained
    model.train()
    evaluate(model, tokenizer, EVAL_ROWS.head(1), SMALL)
    assert model.training is True
    model.eval()


def test_evaluate_rejects_missing_columns(trained):
    model, tokenizer = trained
    with pytest.raises(ValueError, match="missing columns"):
        evaluate(model, tokenizer, EVAL_ROWS.drop("response"), SMALL)


def test_eval_config_rejects_generation_longer_than_sequence():
    with pytest.raises(ValueError, match="max_new_tokens"):
        EvalConfig(max_seq_len=64, max_new_tokens=64)


def test_task_signals_feed_mixing(trained):
    model, tokenizer = trained
    result = evaluate(model, tokenizer, EVAL_ROWS, SMALL)
    signals = task_signals(result)
    decision = compute_weights({"math": 0.5, "chat": 0.5}, signals, {"math": 10, "chat": 10})
    assert signals["math"].n_eval == 3
    assert math.isfinite(signals["chat"].mean_loss)
    assert sum(decision.weights.values()) == pytest.approx(1.0)
    assert decision.flags == {"chat": "ok", "math": "ok"}
