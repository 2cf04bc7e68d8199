import logging
from collections import Counter

import polars as pl
import pytest

from trainer.data import (
    IGNORE_INDEX,
    build_examples,
    fit_to_length,
    format_chat,
    plan_mixture,
    sample_mixture,
)
from trainer.models import build_tiny_model


def make_samples(counts: dict[str, int]) -> pl.DataFrame:
    rows = []
    for task, count in counts.items():
        for i in range(count):
            rows.append({"sample_id": f"{task}-{i:03d}", "task": task, "prompt": f"{task} q{i}", "response": f"a{i}"})
    return pl.DataFrame(rows)


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["Add 2 and 3.", "The answer is 5.", "你好，世界。今天天气很好。", "def add(a, b): return a + b"] * 5
    _, tokenizer = build_tiny_model(texts, seed=0)
    return tokenizer


def test_sample_mixture_counts_follow_weights():
    samples = make_samples({"math": 50, "code": 50, "chat": 50})
    mixture = sample_mixture(samples, {"math": 0.5, "code": 0.3, "chat": 0.2}, total=40, seed=0)
    counts = Counter(mixture["task"].to_list())
    assert mixture.height == 40
    assert counts["math"] == 20
    assert counts["code"] == 12
    assert counts["chat"] == 8


def test_sample_mixture_rounding_sums_to_total():
    samples = make_samples({"a": 10, "b": 10, "c": 10})
    mixture = sample_mixture(samples, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, total=10, seed=0)
    counts = Counter(mixture["task"].to_list())
    assert mixture.height == 10
    assert sorted(counts.values()) == [3, 3, 4]
    assert counts["a"] == 4  # ties go to the first task name


def test_sample_mixture_same_seed_same_rows():
    samples = make_samples({"math": 30, "code": 30})
    first = sample_mixture(samples, {"math": 0.6, "code": 0.4}, total=25, seed=7)
    second = sample_mixture(samples, {"math": 0.6, "code": 0.4}, total=25, seed=7)
    assert first.equals(second)


def test_sample_mixture_other_seed_other_rows():
    samples = make_samples({"math": 30, "code": 30})
    first = sample_mixture(samples, {"math": 0.6, "code": 0.4}, total=25, seed=7)
    second = sample_mixture(samples, {"math": 0.6, "code": 0.4}, total=25, seed=8)
    assert first["sample_id"].to_list() != second["sample_id"].to_list()


def test_sample_mixture_ignores_input_order():
    samples = make_samples({"math": 30, "code": 30})
    shuffled = samples.sample(fraction=1.0, shuffle=True, seed=3)
    first = sample_mixture(samples, {"math": 0.5, "code": 0.5}, total=20, seed=1)
    second = sample_mixture(shuffled, {"math": 0.5, "code": 0.5}, total=20, seed=1)
    assert first["sample_id"].to_list() == second["sample_id"].to_list()


def test_sample_mixture_adds_positions_and_keeps_columns():
    samples = make_samples({"math": 5})
    mixture = sample_mixture(samples, {"math": 1.0}, total=5, seed=0)
    assert mixture["mixture_position"].to_list() == [0, 1, 2, 3, 4]
    assert mixture["mixture_position"].dtype == pl.Int64
    assert set(samples.columns) < set(mixture.columns)


def test_sample_mixture_draws_without_replacement_first():
    samples = make_samples({"math": 20})
    mixture = sample_mixture(samples, {"math": 1.0}, total=20, seed=0)
    assert mixture["sample_id"].n_unique() == 20


def test_sample_mixture_repeats_evenly_up_to_cap():
    samples = make_samples({"math": 5})
    mixture = sample_mixture(samples, {"math": 1.0}, total=12, seed=0, max_repeats=3)
    repeats = Counter(mixture["sample_id"].to_list())
    assert mixture.height == 12
    assert max(repeats.values()) == 3
    assert min(repeats.values()) == 2


def test_sample_mixture_skips_zero_weight_and_empty_tasks():
    """The weights of the degenerate feedback round: safety has weight 0 and no rows."""
    samples = make_samples({"math": 40, "code": 40, "chat": 40})
    weights = {"math": 0.6, "code": 0.177, "chat": 0.223, "safety": 0.0}
    mixture = sample_mixture(samples, weights, total=50, seed=0)
    assert "safety" not in mixture["task"].to_list()
    assert mixture.height == 50


def test_sample_mixture_never_draws_unweighted_task():
    samples = make_samples({"math": 10, "code": 10})
    mixture = sample_mixture(samples, {"math": 1.0, "code": 0.0}, total=8, seed=0)
    assert set(mixture["task"].to_list()) == {"math"}


def test_sample_mixture_rejects_negative_seed():
    with pytest.raises(ValueError, match="seed"):
        sample_mixture(make_samples({"math": 3}), {"math": 1.0}, total=2, seed=-1)


def test_plan_mixture_moves_weight_off_task_without_rows(caplog):
    with caplog.at_level(logging.WARNING, logger="trainer.data"):
        plan = plan_mixture({"math": 100}, {"math": 0.5, "ghost": 0.5}, total=10)
    assert plan.drawn == {"math": 10}
    assert "ghost" in caplog.text


def test_plan_mixture_reports_capped_task(caplog):
    with caplog.at_level(logging.WARNING, logger="trainer.data"):
        plan = plan_mixture({"math": 2, "code": 100}, {"math": 0.5, "code": 0.5}, total=20, max_repeats=3)
    assert plan.requested["math"] == 10
    assert plan.drawn["math"] == 6
    assert plan.capped == ["math"]
    assert plan.total_drawn == 16
    assert "capped" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"total": -1}, "total"),
        ({"total": 5, "max_repeats": 0}, "max_repeats"),
        ({"total": 5, "weights": {"a": float("nan")}}, "weights"),
        ({"total": 5, "weights": {"b": 1.0}}, "no task has both"),
    ],
)
def test_plan_mixture_rejects_invalid_input(kwargs, message):
    arguments = {"available": {"a": 3}, "weights": {"a": 1.0}} | kwargs
    with pytest.raises(ValueError, match=message):
        plan_mixture(**arguments)


def test_format_chat_splits_at_generation_prompt(tokenizer):
    text = format_chat("你好", "世界", tokenizer)
    assert text.prompt.endswith("<|im_start|>assistant\n")
    assert text.response == "世界<|im_end|>\n"


def test_format_chat_plain_template_without_chat_template(tokenizer):
    plain = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, eos_token="<|im_end|>")
    text = format_chat("Add 2 and 3.", "5", plain)
    assert text.prompt == "### Instruction:\nAdd 2 and 3.\n\n### Response:\n"
    assert text.response == "5<|im_end|>"


def test_build_examples_masks_prompt_tokens(tokenizer):
    rows = pl.DataFrame({"prompt": ["Add 2 and 3."], "response": ["The answer is 5."], "task": ["math"]})
    example = build_examples(rows, tokenizer, max_len=128)[0]
    labeled = [token for token in example["labels"] if token != IGNORE_INDEX]
    prompt_length = example["labels"].count(IGNORE_INDEX)
    assert len(example["input_ids"]) == len(example["labels"])
    assert example["input_ids"][prompt_length:] == labeled
    assert tokenizer.decode(labeled) == "The answer is 5.<|im_end|>\n"
    assert example["task"] == "math"
    assert example["truncated"] is False


def test_build_examples_keeps_chinese_text(tokenizer):
    rows = pl.DataFrame({"prompt": ["今天天气怎么样？"], "response": ["今天天气很好。"]})
    example = build_examples(rows, tokenizer, max_len=128)[0]
    labeled = [token for token in example["labels"] if token != IGNORE_INDEX]
    assert tokenizer.decode(labeled).startswith("今天天气很好。")


def test_build_examples_counts_truncation(tokenizer, caplog):
    rows = pl.DataFrame({"prompt": ["short", "x " * 200], "response": ["ok", "y " * 200]})
    with caplog.at_level(logging.WARNING, logger="trainer.data"):
        examples = build_examples(rows, tokenizer, max_len=32)
    assert [example["truncated"] for example in examples] == [False, True]
    assert len(examples[1]["input_ids"]) == 32
    assert any(label != IGNORE_INDEX for label in examples[1]["labels"])
    assert "1 truncated" in caplog.text


def test_build_examples_rejects_missing_columns(tokenizer):
    with pytest.raises(ValueError, match="missing columns"):
        build_examples(pl.DataFrame({"prompt": ["a"]}), tokenizer, max_len=16)


def test_fit_to_length_cuts_both_ends():
    prompt, response, cut = fit_to_length(list(range(10)), list(range(100, 110)), max_len=8)
    assert cut is True
    assert prompt == [6, 7, 8, 9]
    assert response == [100, 101, 102, 103]


def test_fit_to_length_keeps_short_response_whole():
    prompt, response, cut = fit_to_length(list(range(20)), [100, 101], max_len=8)
    assert cut is True
    assert prompt == list(range(14, 20))
    assert response == [100, 101]


def test_sample_ids_sha256_ignores_order():
    from trainer.data import sample_ids_sha256

    assert sample_ids_sha256(["b", "a", "c"]) == sample_ids_sha256(["c", "b", "a"])


def test_sample_ids_sha256_counts_repeats():
    from trainer.data import sample_ids_sha256

    assert sample_ids_sha256(["a", "a", "b"]) != sample_ids_sha256(["a", "b"])
