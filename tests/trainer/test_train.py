import logging

import polars as pl
import pytest
import torch

from trainer.data import IGNORE_INDEX, build_examples
from trainer.models import build_tiny_model, load_causal_lm
from trainer.train import TrainConfig, _lr_factor, collate, save_checkpoint, train

ROWS = pl.DataFrame(
    {
        "task": ["math", "math", "chat", "chat", "code", "code"],
        "prompt": ["What is 2+3?", "What is 4+4?", "你好吗？", "Say hello.", "Write add.", "Write sub."],
        "response": ["5", "8", "我很好，谢谢。", "Hello there!", "def add(a, b): return a + b", "def sub(a, b): return a - b"],
    }
)
TEXTS = (ROWS["prompt"].to_list() + ROWS["response"].to_list()) * 5

# One thread keeps the tiny model fast on a busy two-core machine.
FAST = {"batch_size": 4, "learning_rate": 3e-3, "warmup_steps": 1, "max_seq_len": 64, "num_threads": 1}


def tiny_setup(seed: int = 0):
    model, tokenizer = build_tiny_model(TEXTS, seed=seed)
    return model, tokenizer, build_examples(ROWS, tokenizer, max_len=64)


def test_train_reduces_loss_on_repeated_data():
    model, tokenizer, examples = tiny_setup()
    report = train(model, tokenizer, examples, TrainConfig(max_steps=40, log_every=10, **FAST))
    assert report.steps == 40
    assert len(report.losses) == 40
    assert report.losses[0] > 4.0  # about ln(vocabulary size) for a random model
    assert report.final_loss < report.losses[0] - 2.0


def test_train_is_deterministic_for_seed():
    first_model, tokenizer, examples = tiny_setup()
    second_model, _, _ = tiny_setup()
    config = TrainConfig(max_steps=8, log_every=4, seed=5, **FAST)
    first = train(first_model, tokenizer, examples, config)
    second = train(second_model, tokenizer, examples, config)
    assert first.losses == second.losses
    assert torch.equal(first_model.lm_head.weight, second_model.lm_head.weight)


def test_train_counts_sequences_and_tokens():
    model, tokenizer, examples = tiny_setup()
    report = train(model, tokenizer, examples, TrainConfig(max_steps=3, log_every=1, **FAST))
    # Six examples in batches of 4: each pass over them is one batch of 4 and one of 2.
    assert report.examples_seen == 4 + 2 + 4
    assert report.tokens_seen > 12
    assert report.mean_loss == pytest.approx(sum(report.losses) / 3)
    assert report.peak_rss_mb > 0
    assert model.training is False


def test_train_reports_progress_every_interval(caplog):
    model, tokenizer, examples = tiny_setup()
    reports = []
    with caplog.at_level(logging.INFO, logger="trainer.train"):
        train(model, tokenizer, examples, TrainConfig(max_steps=7, log_every=3, **FAST), progress=reports.append)
    assert [report["step"] for report in reports] == [3, 6, 7]
    assert set(reports[0]) >= {"step", "max_steps", "loss", "lr", "tokens_per_second", "sequences_per_second"}
    assert "step 3/7 | loss" in caplog.text
    assert "tok/s" in caplog.text


def test_train_restores_thread_count():
    model, tokenizer, examples = tiny_setup()
    before = torch.get_num_threads()
    train(model, tokenizer, examples, TrainConfig(max_steps=1, log_every=1, **FAST))
    assert torch.get_num_threads() == before


def test_train_rejects_examples_without_response_tokens():
    model, tokenizer, _ = tiny_setup()
    prompt_only = [{"input_ids": [1, 2, 3], "labels": [IGNORE_INDEX] * 3}]
    with pytest.raises(ValueError, match="response token"):
        train(model, tokenizer, prompt_only, TrainConfig(max_steps=1, **FAST))


def test_train_rejects_empty_examples():
    model, tokenizer, _ = tiny_setup()
    with pytest.raises(ValueError, match="examples is empty"):
        train(model, tokenizer, [], TrainConfig(max_steps=1, **FAST))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_steps", 0, "max_steps"),
        ("batch_size", 0, "batch_size"),
        ("learning_rate", 0.0, "learning_rate"),
        ("learning_rate", 2.0, "learning_rate"),
        ("warmup_steps", -1, "warmup_steps"),
        ("warmup_steps", 100, "exceeds max_steps"),
        ("max_seq_len", 1, "max_seq_len"),
        ("grad_clip", -1.0, "grad_clip"),
        ("log_every", 0, "log_every"),
        ("num_threads", 0, "num_threads"),
    ],
)
def test_train_config_rejects_invalid_value(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


def test_lr_schedule_warms_up_then_decays():
    factors = [_lr_factor(step, warmup_steps=2, max_steps=6) for step in range(6)]
    assert factors[0] < factors[1] < factors[2]
    assert factors[2] == pytest.approx(1.0)
    assert factors[2] > factors[3] > factors[4] > factors[5] > 0.0


def test_collate_pads_right_and_masks_padding():
    examples = [
        {"input_ids": [5, 6, 7], "labels": [IGNORE_INDEX, 6, 7]},
        {"input_ids": [8], "labels": [8]},
    ]
    batch = collate(examples, pad_token_id=0, max_seq_len=16)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_save_checkpoint_round_trips(tmp_path):
    model, tokenizer, _ = tiny_setup()
    path = save_checkpoint(model, tokenizer, tmp_path / "round-1")
    loaded, _ = load_causal_lm(str(path))
    ids = torch.tensor([[2, 10, 11, 12]])
    assert (path / "model.safetensors").is_file()
    assert torch.allclose(loaded(ids).logits, model(ids).logits)


def test_save_checkpoint_replaces_existing_directory(tmp_path):
    first, tokenizer, _ = tiny_setup(seed=0)
    second, _, _ = tiny_setup(seed=1)
    path = tmp_path / "latest"
    save_checkpoint(first, tokenizer, path)
    save_checkpoint(second, tokenizer, path)
    loaded, _ = load_causal_lm(str(path))
    assert torch.equal(loaded.lm_head.weight, second.lm_head.weight)
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["latest"]
