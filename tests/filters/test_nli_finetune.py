"""Fine-tune command: a tiny BERT built in tmp_path trains on NLI pairs and loads as a CrossEncoder."""

import json
import re
from pathlib import Path

import pytest

from filters.consistency import CrossEncoderNli
from filters.nli_finetune import FinetuneConfig, main, read_pairs

NLI_TRAIN = Path(__file__).resolve().parents[3] / "shared" / "data" / "nli" / "train" / "snli_dev.jsonl"

# Toy pairs: the cue word in the hypothesis decides the label.
TOY_PAIRS = [
    {"premise": premise, "hypothesis": f"{cue} {premise.lower()}", "label": label}
    for premise in ("The box is red.", "A man sleeps.", "Rain falls today.", "The door is open.")
    for cue, label in (("not", "contradiction"), ("indeed", "entailment"), ("maybe", "neutral"))
]


def write_jsonl(path: Path, pairs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(pair) + "\n" for pair in pairs), encoding="utf-8")
    return path


def build_tiny_bert(directory: Path, texts: list[str], id2label: dict[int, str] | None = None) -> Path:
    """Save a 2-layer BERT with a word-level vocabulary built from ``texts``."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    words = sorted({w for text in texts for w in re.findall(r"\w+|[^\w\s]", text.lower())})
    directory.mkdir(parents=True, exist_ok=True)
    vocabulary = {token: index for index, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    tokenizer = BertTokenizerFast(vocab=vocabulary, do_lower_case=True)
    extra = {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}} if id2label else {}
    config = BertConfig(vocab_size=len(words) + 5, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=len(id2label or {0: 0, 1: 1}),
                        **extra)
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_finetune_tiny_bert_loads_as_cross_encoder(tmp_path):
    base = build_tiny_bert(tmp_path / "base", [p["premise"] + " " + p["hypothesis"] for p in TOY_PAIRS])
    train = write_jsonl(tmp_path / "train.jsonl", TOY_PAIRS * 2)
    output = tmp_path / "tuned"
    summary = main(["--base", str(base), "--train", str(train), "--eval", str(train), "--output", str(output),
                    "--max-steps", "3", "--batch-size", "6", "--max-length", "32"])
    assert summary["id2label"] == {"0": "contradiction", "1": "entailment", "2": "neutral"}
    assert summary["steps"] == 3
    assert 0.0 <= summary["eval_accuracy"] <= 1.0
    nli = CrossEncoderNli(str(output))
    assert nli.max_length == 32
    probs = nli.class_probs([("The box is red.", "not the box is red.")])
    assert probs.shape == (1, 3)
    assert abs(probs.sum() - 1.0) < 1e-6


def test_finetune_keeps_base_label_order(tmp_path):
    order = {0: "neutral", 1: "contradiction", 2: "entailment"}
    base = build_tiny_bert(tmp_path / "base", [p["premise"] + " " + p["hypothesis"] for p in TOY_PAIRS], order)
    train = write_jsonl(tmp_path / "train.jsonl", TOY_PAIRS)
    summary = main(["--base", str(base), "--train", str(train), "--output", str(tmp_path / "tuned"),
                    "--max-steps", "2", "--batch-size", "3"])
    assert summary["id2label"] == {"0": "neutral", "1": "contradiction", "2": "entailment"}
    assert CrossEncoderNli(str(tmp_path / "tuned")).contradiction_index == 1


def test_finetune_few_steps_on_shared_nli_slice(tmp_path):
    if not NLI_TRAIN.exists():
        pytest.skip(f"the NLI training data is missing at {NLI_TRAIN}")
    pairs = read_pairs(NLI_TRAIN, limit=64)
    base = build_tiny_bert(tmp_path / "base", [p["premise"] + " " + p["hypothesis"] for p in pairs])
    summary = main(["--base", str(base), "--train", str(NLI_TRAIN), "--limit", "64", "--output",
                    str(tmp_path / "tuned"), "--max-steps", "4", "--batch-size", "16"])
    assert summary["steps"] == 4
    assert summary["train_pairs"] == 64
    assert (tmp_path / "tuned" / "finetune_summary.json").exists()


def test_read_pairs_names_malformed_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"premise": "a", "hypothesis": "b", "label": "neutral"}\n{"premise": "a"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2 is missing string fields \['hypothesis', 'label'\]"):
        read_pairs(path)


def test_finetune_config_rejects_zero_batch_size():
    with pytest.raises(ValueError, match="batch_size must be an integer of at least 1"):
        FinetuneConfig(batch_size=0)
