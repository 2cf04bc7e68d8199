import numpy as np
import polars as pl
import pytest

from filters.schema import SAMPLE_SCHEMA
from filters.toxicity import (
    HFClassifierScorer,
    ProfanityCheckScorer,
    ToxicityConfig,
    ToxicityScorer,
    apply_toxicity,
    chunk_text,
)


class KeywordScorer:
    """Scores 1.0 for a chunk containing "BAD", 0.0 otherwise; raises on "CRASH"; English only."""

    name = "keyword-test"
    languages = frozenset({"en"})

    def __init__(self):
        self.calls: list[list[str]] = []

    def score(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        if any("CRASH" in text for text in texts):
            raise RuntimeError("model failed")
        return np.array([1.0 if "BAD" in text else 0.0 for text in texts])


def frame(rows: list[dict]) -> pl.DataFrame:
    records = []
    for row in rows:
        record = {name: None for name in SAMPLE_SCHEMA}
        record.update({"source": "unit", "task": "chat", "lang": "en", "prompt": "A question?", **row})
        records.append(record)
    return pl.DataFrame(records, schema=SAMPLE_SCHEMA)


def test_chunk_text_short_text_unchanged():
    assert chunk_text("a  short\ntext", 24, 12) == ["a  short\ntext"]


def test_chunk_text_windows_cover_every_word():
    words = [f"w{i}" for i in range(50)]
    chunks = chunk_text(" ".join(words), 20, 10)
    assert chunks[0].split() == words[:20]
    assert chunks[-1].split() == words[-20:]
    covered = {word for chunk in chunks for word in chunk.split()}
    assert covered == set(words)


def test_chunk_text_characters_for_chinese():
    chunks = chunk_text("一二三四五 六七八九十", 4, 2, char_tokens=True)
    assert chunks == ["一二三四", "三四五六", "五六七八", "七八九十"]


def test_profanity_scorer_reports_version_and_range():
    scorer = ProfanityCheckScorer()
    scores = scorer.score(["Have a nice day.", "You are a pathetic idiot."])
    assert isinstance(scorer, ToxicityScorer)
    assert scorer.name == "alt-profanity-check-1.9.1"
    assert scores.shape == (2,)
    assert 0.0 <= scores[0] < 0.35 <= scores[1] <= 1.0


def test_toxic_reason_uses_max_over_chunks():
    filler = " ".join(f"clean{i}" for i in range(100))
    result = apply_toxicity(frame([{"sample_id": "a", "response": filler + " BAD"}]), KeywordScorer(), ToxicityConfig())
    row = result.rejected.row(0, named=True)
    assert row["reason"] == "toxic"
    assert row["score"] == 1.0
    assert row["threshold"] == 0.35
    assert row["filter"] == "toxicity"


def test_kept_rows_get_score_columns():
    result = apply_toxicity(
        frame([{"sample_id": "a", "response": " ".join(["fine"] * 30)}]), KeywordScorer(), ToxicityConfig()
    )
    kept = result.kept
    assert kept["toxicity_score"].to_list() == [0.0]
    assert kept["toxicity_prompt_score"].to_list() == [0.0]
    assert kept["toxicity_model"].to_list() == ["keyword-test"]
    assert kept.schema["toxicity_chunks"] == pl.Int32
    assert kept["toxicity_chunks"].to_list() == [2]
    assert kept["toxicity_applied"].to_list() == [True]


def test_prompt_score_recorded_but_not_decisive():
    samples = frame([{"sample_id": "a", "response": "A calm answer."}]).with_columns(pl.lit("BAD prompt").alias("prompt"))
    result = apply_toxicity(samples, KeywordScorer(), ToxicityConfig())
    assert result.kept["toxicity_prompt_score"].to_list() == [1.0]
    assert result.rejected.height == 0


def test_unsupported_language_scored_not_rejected():
    samples = frame([{"sample_id": "a", "response": "BAD 但是中文", "lang": "zh"}])
    result = apply_toxicity(samples, KeywordScorer(), ToxicityConfig())
    assert result.kept["toxicity_score"].to_list() == [1.0]
    assert result.kept["toxicity_applied"].to_list() == [False]


def test_null_lang_falls_back_to_detection():
    samples = frame([{"sample_id": "a", "response": "BAD 这是中文的回答内容", "lang": None}])
    result = apply_toxicity(samples, KeywordScorer(), ToxicityConfig())
    assert result.kept["toxicity_applied"].to_list() == [False]


def test_scorer_exception_rejects_only_that_row():
    samples = frame([{"sample_id": "a", "response": "CRASH here"}, {"sample_id": "b", "response": "fine"}])
    result = apply_toxicity(samples, KeywordScorer(), ToxicityConfig())
    assert result.kept["sample_id"].to_list() == ["b"]
    assert result.rejected["reason"].to_list() == ["error_RuntimeError"]
    assert "model failed" in result.rejected["detail"].item()


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("max_toxicity", 0.0, "max_toxicity=0.0 is invalid"),
        ("chunk_tokens", 0, "chunk_tokens=0 is invalid"),
        ("chunk_stride_tokens", 30, "chunk_stride_tokens=30 is invalid"),
    ],
)
def test_config_rejects_invalid_values(field, value, fragment):
    with pytest.raises(ValueError, match=fragment):
        ToxicityConfig(**{field: value})


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    """A randomly initialised 3-class BERT whose toxic class is index 2, saved with its tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_toxicity_model")
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "you", "are", "nice", "bad", "a", "day"]
    (folder / "vocab.txt").write_text("\n".join(vocabulary) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocabulary), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, num_labels=3,
        id2label={0: "neutral", 1: "insult", 2: "Toxic"}, label2id={"neutral": 0, "insult": 1, "Toxic": 2},
    )
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(folder)
    return folder, model, tokenizer


def test_hf_scorer_reads_label_index_from_config(tiny_classifier):
    import torch

    folder, model, tokenizer = tiny_classifier
    scorer = HFClassifierScorer(str(folder))
    texts = ["you are nice", "you are a bad day"]
    with torch.inference_mode():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    expected = torch.softmax(logits, dim=-1)[:, 2].numpy()
    assert np.allclose(scorer.score(texts), expected, atol=1e-5)
    assert scorer.name == f"{folder}:toxic"


def test_hf_scorer_missing_label_lists_valid_labels(tiny_classifier):
    folder, _, _ = tiny_classifier
    with pytest.raises(ValueError, match=r"valid labels are \['insult', 'neutral', 'toxic'\]"):
        HFClassifierScorer(str(folder), toxic_label="hate")


def test_hf_scorer_runs_in_stage_step(tiny_classifier):
    folder, _, _ = tiny_classifier
    samples = frame([{"sample_id": "a", "response": "you are nice " * 40}])
    result = apply_toxicity(samples, HFClassifierScorer(str(folder)), ToxicityConfig(max_toxicity=1.0))
    assert result.kept["toxicity_chunks"].to_list() == [9]
    assert 0.0 <= result.kept["toxicity_score"].item() <= 1.0


class CountingScorer:
    """Scores a chunk by its length and counts how many chunks it was asked to score."""

    name = "counting-scorer"
    languages = None

    def __init__(self):
        self.chunks_scored = 0

    def score(self, texts):
        self.chunks_scored += len(texts)
        return np.array([min(len(text) / 100.0, 1.0) for text in texts])


def test_toxicity_cache_skips_rescoring():
    samples = pl.DataFrame(
        {
            "sample_id": ["a", "b"],
            "source": ["s", "s"],
            "task": ["chat", "chat"],
            "lang": ["en", "en"],
            "prompt": ["Hi there", "Tell me a story"],
            "response": ["Hello, how can I help?", "Once upon a time there was a small boat. " * 20],
        }
    )
    cache: dict[str, float] = {}
    scorer = CountingScorer()
    first = apply_toxicity(samples, scorer, ToxicityConfig(max_toxicity=0.9), cache=cache)
    scored_first = scorer.chunks_scored
    second = apply_toxicity(samples, scorer, ToxicityConfig(max_toxicity=0.2), cache=cache)
    assert scored_first > 0
    assert scorer.chunks_scored == scored_first
    assert len(cache) == 4
    assert first.kept["sample_id"].to_list() == ["a"]
    assert second.kept.height == 0
    assert sorted(second.rejected["sample_id"].to_list()) == ["a", "b"]
    score_a = second.rejected.filter(pl.col("sample_id") == "a")["score"][0]
    assert score_a == pytest.approx(first.kept["toxicity_score"][0])
