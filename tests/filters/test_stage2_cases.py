"""Stage 2 end to end: long texts that a truncating check would miss, short contradictions with
label-order and decision-rule traps, plus status and error handling.

A sample with nothing scored gets status ``not_checked``; the field report this follows called
it "unchecked".
"""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from filters.consistency import CrossEncoderNli
from filters.schema import LEDGER_SCHEMA, SAMPLE_SCHEMA, make_sample_id
from filters.stage2 import Stage2Config, decide_stage2, run_stage2, score_stage2
from tests.filters.test_consistency import MODEL_PATH, WordScorer, _copy_checkpoint

needs_model = pytest.mark.skipif(not MODEL_PATH.is_dir(), reason=f"NLI checkpoint not found at {MODEL_PATH}")

FILL_Q = " ".join(f"Note {i}: the sensor in room {i} is calibrated every month." for i in range(1, 41))
FILL_A = " ".join(f"Item {i}: the checklist entry {i} was completed on schedule." for i in range(1, 61))

CASE_08 = {
    "n1": (
        "When is the maintenance window?",
        "The maintenance window is on Tuesday at 02:00. " + FILL_A + " The maintenance window is on Friday at 18:00, not Tuesday.",
    ),
    "n2": (
        FILL_Q + " Given that the server room is locked on weekends, can a technician enter it on Sunday?",
        FILL_A + " Yes, the server room is open on weekends, so the technician can walk in on Sunday.",
    ),
    "n3": (
        "When is the maintenance window?",
        "The maintenance window is on Tuesday at 02:00. " + FILL_A + " Again, the window is Tuesday at 02:00.",
    ),
    "n4": ("When is the maintenance window?", "   \n "),
}

CASE_09 = {
    "p1": (
        "Tell me about the city museum.",
        "The city museum opens at 9 am on weekdays. Adult tickets cost 12 euros. Children under six enter for free. "
        "The museum has a large modern art wing. The city museum is closed on weekdays.",
    ),
    "p2": (
        "What is the capital of France?",
        "Paris is the capital of France. It is also the largest city in the country. Paris is not the capital of France.",
    ),
    "p3": (
        "How heavy is the parcel?",
        "The parcel weighs 3 kilograms. It was shipped on Monday. The parcel weighs 5 kilograms.",
    ),
    "p4": (
        "Tell me about the city museum.",
        "The city museum opens at 9 am on weekdays. On Saturdays it opens at 10 am. Adult tickets cost 12 euros.",
    ),
    "p5": (
        "Tell me about the city museum.",
        "The city museum opens at 9 am on weekdays. In short, on weekdays you can visit from 9 am.",
    ),
    "p6": ("Alice is older than Bob. Which of them is younger?", "Alice is the younger one."),
}


def make_samples(rows: dict[str, tuple[str, str]], lang: str | None = "en") -> pl.DataFrame:
    records = []
    for origin_id, (prompt, response) in rows.items():
        record = dict.fromkeys(SAMPLE_SCHEMA)
        record.update(source="test", task="chat", lang=lang, prompt=prompt, response=response, origin_id=origin_id)
        record["sample_id"] = make_sample_id("test", prompt, response)
        records.append(record)
    return pl.DataFrame(records, schema=SAMPLE_SCHEMA)


def by_origin(result, samples: pl.DataFrame) -> tuple[dict, dict]:
    """Map origin ids to their kept row and to their ledger row."""
    origin_of = dict(zip(samples["sample_id"], samples["origin_id"]))
    kept = {row["origin_id"]: row for row in result.kept.to_dicts()}
    rejected = {origin_of[row["sample_id"]]: row for row in result.rejected.to_dicts()}
    return kept, rejected


@pytest.fixture(scope="module")
def nli():
    return CrossEncoderNli(str(MODEL_PATH))


@pytest.fixture(scope="module")
def embedder():
    from filters.embed import load_embedder

    return load_embedder()


@pytest.fixture(scope="module")
def long_text_results(nli, embedder):
    samples = make_samples(CASE_08)
    result = run_stage2(samples, Stage2Config(), nli, embedder)
    result.check_conservation(samples["sample_id"])
    return by_origin(result, samples)


@pytest.fixture(scope="module")
def short_text_results(nli, embedder):
    samples = make_samples(CASE_09)
    result = run_stage2(samples, Stage2Config(), nli, embedder)
    result.check_conservation(samples["sample_id"])
    return by_origin(result, samples)


# Long texts, truncation, nothing checked -----------------------------------------------------


@needs_model
def test_long_text_n1_flags_first_vs_last_sentence(long_text_results):
    _, rejected = long_text_results
    detail = json.loads(rejected["n1"]["detail"])
    assert rejected["n1"]["reason"] == "contradiction"
    assert detail["kind"] == "within_response"
    assert detail["premise_index"] == 0
    assert detail["hypothesis_index"] == 61
    assert detail["premise"] == "The maintenance window is on Tuesday at 02:00."


@needs_model
def test_long_text_n2_pairs_given_clause_with_last_sentence(long_text_results):
    kept, rejected = long_text_results
    row = kept.get("n2") or json.loads(rejected["n2"]["detail"])
    evidence = json.loads(row["nli_evidence"]) if "nli_evidence" in row else row
    assert evidence["kind"] == "prompt_vs_response"
    assert evidence["premise"] == "The server room is locked on weekends."
    assert evidence["hypothesis"].startswith("Yes, the server room is open on weekends")


@needs_model
def test_long_text_n2_flagged_by_real_model(long_text_results):
    _, rejected = long_text_results
    assert rejected["n2"]["reason"] == "contradiction"


@needs_model
def test_long_text_n3_control_is_consistent(long_text_results):
    kept, rejected = long_text_results
    assert "n3" not in rejected
    assert kept["n3"]["nli_status"] == "consistent"


@needs_model
def test_long_text_n4_whitespace_is_not_checked(long_text_results):
    kept, _ = long_text_results
    assert kept["n4"]["nli_status"] == "not_checked"
    assert kept["n4"]["nli_pairs_scored"] == 0
    assert kept["n4"]["max_contradiction_prob"] is None


@needs_model
def test_long_text_scores_more_than_one_pair_without_pruning(nli):
    """With cosine pruning n1 and n2 keep one related pair each. Without an embedder they are split
    into many sentence pairs, and no pair is the whole truncated text."""
    samples = make_samples({"n1": CASE_08["n1"], "n2": CASE_08["n2"]})
    scored = score_stage2(samples, Stage2Config(max_pairs_per_sample=8), nli, None)
    assert scored["nli_pairs_scored"].to_list() == [8, 8]
    assert all(len(text) < 200 for text in scored["evidence_hypothesis"].to_list())


@needs_model
def test_long_text_sentence_over_window_is_unchecked_truncated(nli, embedder):
    long_sentence = "The maintenance window is on Tuesday at 02:00 and " + " and ".join(
        f"the checklist entry {i} was reviewed by the night shift" for i in range(30)
    )
    samples = make_samples({"long": ("When is the maintenance window?", long_sentence + ". The window is on Tuesday.")})
    result = run_stage2(samples, Stage2Config(), nli, embedder)
    row = result.kept.row(0, named=True)
    assert nli.count_tokens(long_sentence, "x") > nli.max_length
    assert row["nli_status"] == "unchecked_truncated"
    assert row["nli_unchecked_reason"] == "sentence_over_window"
    assert row["nli_pairs_scored"] > 1


# Short contradictions: decision rule and label order -----------------------------------------


@needs_model
def test_short_text_flags_p1_p2_p3(short_text_results):
    _, rejected = short_text_results
    assert {"p1", "p2", "p3"} <= set(rejected)
    assert all(row["reason"] == "contradiction" for row in rejected.values())


@needs_model
def test_short_text_keeps_p4_p5(short_text_results):
    kept, _ = short_text_results
    assert kept["p4"]["nli_status"] == "consistent"
    assert kept["p5"]["nli_status"] == "consistent"


@needs_model
def test_short_text_p6_flagged_by_real_model(short_text_results):
    _, rejected = short_text_results
    assert "p6" in rejected


@needs_model
def test_short_text_p1_evidence_is_sentence_1_vs_5(short_text_results):
    _, rejected = short_text_results
    detail = json.loads(rejected["p1"]["detail"])
    assert (detail["premise_index"], detail["hypothesis_index"]) == (0, 4)
    assert rejected["p1"]["score"] >= rejected["p1"]["threshold"]
    assert rejected["p1"]["threshold"] == Stage2Config().max_contradiction_prob


@needs_model
def test_short_text_evidence_of_p2_p3(short_text_results):
    _, rejected = short_text_results
    for origin_id in ("p2", "p3"):
        detail = json.loads(rejected[origin_id]["detail"])
        assert (detail["premise_index"], detail["hypothesis_index"]) == (0, 2)


@needs_model
def test_short_text_permuted_checkpoint_flags_same_set(short_text_results, embedder, tmp_path):
    """A copy whose classifier rows and id2label are reordered (entailment, neutral, contradiction)
    must flag exactly the same samples as the original checkpoint."""
    permuted = CrossEncoderNli(str(_copy_checkpoint(tmp_path / "permuted", [1, 2, 0])))
    samples = make_samples(CASE_09)
    _, rejected = by_origin(run_stage2(samples, Stage2Config(), permuted, embedder), samples)
    assert permuted.contradiction_index == 2
    assert set(rejected) == set(short_text_results[1])


def test_short_text_entailment_does_not_cancel_contradiction():
    """Every pair of p1 but one is near-certain non-contradiction; the one strong pair decides."""
    sentences = [s.strip() for s in CASE_09["p1"][1].split(". ")]
    first, last = sentences[0] + ".", sentences[-1]
    scorer = WordScorer(probs={(first, last): 0.9, (last, first): 0.8}, default=0.0)
    samples = make_samples({"p1": CASE_09["p1"]})
    result = run_stage2(samples, Stage2Config(), scorer, None)
    detail = json.loads(result.rejected["detail"][0])
    assert result.rejected["reason"].to_list() == ["contradiction"]
    assert result.rejected["score"][0] == pytest.approx(0.8)
    assert (detail["premise_index"], detail["hypothesis_index"]) == (0, 4)


# Unit behaviour with a fake scorer ---------------------------------------------------------------

CONTRADICTING = ("How heavy is the parcel?", "The parcel weighs 3 kilograms. The parcel weighs 5 kilograms.")
PAIR = ("The parcel weighs 3 kilograms.", "The parcel weighs 5 kilograms.")


def test_stage2_contradiction_ledger_row():
    scorer = WordScorer(probs={PAIR: 0.95, PAIR[::-1]: 0.9})
    samples = make_samples({"bad": CONTRADICTING})
    result = run_stage2(samples, Stage2Config(), scorer, None)
    row = result.rejected.row(0, named=True)
    detail = json.loads(row["detail"])
    assert list(result.rejected.columns) == list(LEDGER_SCHEMA)
    assert row["reason"] == "contradiction"
    assert row["stage"] == "stage2"
    assert row["score"] == pytest.approx(0.9)
    assert row["threshold"] == pytest.approx(0.6)
    assert detail["kind"] == "within_response"
    assert detail["premise"] == PAIR[0]
    assert detail["hypothesis"] == PAIR[1]
    assert detail["p_contradiction_forward"] == pytest.approx(0.95)


def test_stage2_min_of_directions_keeps_one_sided_pair():
    scorer = WordScorer(probs={PAIR: 0.95, PAIR[::-1]: 0.2})
    result = run_stage2(make_samples({"one_sided": CONTRADICTING}), Stage2Config(), scorer, None)
    assert result.rejected.height == 0
    assert result.kept["max_contradiction_prob"][0] == pytest.approx(0.2)


def test_stage2_consistent_row_columns():
    samples = make_samples({"ok": CONTRADICTING})
    result = run_stage2(samples, Stage2Config(), WordScorer(default=0.05), None)
    row = result.kept.row(0, named=True)
    assert row["nli_status"] == "consistent"
    assert row["nli_pairs_scored"] == 1
    assert row["max_contradiction_prob"] == pytest.approx(0.05)
    assert row["evidence_premise"] == PAIR[0]
    assert row["evidence_hypothesis"] == PAIR[1]
    assert row["nli_model"] == "fake-nli"
    assert result.kept.schema["nli_pairs_scored"] == pl.Int32
    assert result.kept.schema["max_contradiction_prob"] == pl.Float64
    assert set(SAMPLE_SCHEMA) <= set(result.kept.columns)


def test_stage2_unsupported_language_not_checked():
    samples = make_samples({"zh": ("包裹有多重？", "包裹重三公斤。包裹重五公斤。")}, lang="zh")
    scorer = WordScorer(default=0.99)
    result = run_stage2(samples, Stage2Config(), scorer, None)
    row = result.kept.row(0, named=True)
    assert row["nli_status"] == "not_checked"
    assert row["nli_unchecked_reason"] == "unsupported_language"
    assert json.loads(row["nli_evidence"])["lang"] == "zh"
    assert row["nli_pairs_scored"] == 0
    assert scorer.calls == []


def test_stage2_detects_language_when_missing():
    samples = make_samples({"zh": ("包裹有多重？", "包裹重三公斤。包裹重五公斤。")}, lang=None)
    result = run_stage2(samples, Stage2Config(), WordScorer(), None)
    assert result.kept["nli_unchecked_reason"].to_list() == ["unsupported_language"]


def test_stage2_no_checkable_pairs_not_checked():
    samples = make_samples({"short": ("Hi?", "Yes. Sure thing.")})
    result = run_stage2(samples, Stage2Config(), WordScorer(), None)
    assert result.kept["nli_status"].to_list() == ["not_checked"]
    assert result.kept["nli_unchecked_reason"].to_list() == ["no_checkable_pairs"]


def test_stage2_pair_cap_is_unchecked_truncated():
    response = " ".join(f"The {color} box holds red apples." for color in ("blue", "green", "black", "white"))
    samples = make_samples({"many": ("What is in the boxes?", response)})
    result = run_stage2(samples, Stage2Config(max_pairs_per_sample=2), WordScorer(), None)
    row = result.kept.row(0, named=True)
    assert row["nli_status"] == "unchecked_truncated"
    assert row["nli_unchecked_reason"] == "pair_cap"
    assert row["nli_pairs_scored"] == 2


def test_stage2_pair_cap_still_flags_contradiction():
    response = "The parcel weighs 3 kilograms. " + " ".join(
        f"The {color} box holds red apples." for color in ("blue", "green", "black")
    ) + " The parcel weighs 5 kilograms."
    scorer = WordScorer(probs={PAIR: 0.9, PAIR[::-1]: 0.9})
    result = run_stage2(make_samples({"capped": ("How heavy?", response)}), Stage2Config(max_pairs_per_sample=3), scorer, None)
    assert result.rejected["reason"].to_list() == ["contradiction"]


def test_stage2_scorer_error_rejects_only_that_sample():
    class FailingScorer(WordScorer):
        def contradiction_probs(self, pairs):
            if any("explodes" in premise or "explodes" in hypothesis for premise, hypothesis in pairs):
                raise RuntimeError("scorer failed on this pair")
            return super().contradiction_probs(pairs)

    samples = make_samples(
        {"good": CONTRADICTING, "bad": ("What happens?", "The parcel explodes at noon. The parcel weighs 5 kilograms.")}
    )
    result = run_stage2(samples, Stage2Config(), FailingScorer(), None)
    result.check_conservation(samples["sample_id"])
    assert result.rejected["reason"].to_list() == ["error_RuntimeError"]
    assert "scorer failed" in result.rejected["detail"][0]
    assert result.kept["origin_id"].to_list() == ["good"]


def test_stage2_cache_skips_scored_pairs():
    scorer = WordScorer()
    cache: dict[str, float] = {}
    samples = make_samples({"a": CONTRADICTING})
    run_stage2(samples, Stage2Config(), scorer, None, cache=cache)
    calls_after_first = len(scorer.calls)
    second = run_stage2(samples, Stage2Config(), scorer, None, cache=cache)
    assert calls_after_first == 1
    assert len(scorer.calls) == 1
    assert len(cache) == 2
    assert second.kept["max_contradiction_prob"][0] == pytest.approx(0.1)


def test_decide_stage2_rethresholds_without_scoring():
    scorer = WordScorer(probs={PAIR: 0.65, PAIR[::-1]: 0.65})
    scored = score_stage2(make_samples({"a": CONTRADICTING}), Stage2Config(), scorer, None)
    calls = len(scorer.calls)
    strict = decide_stage2(scored, Stage2Config(max_contradiction_prob=0.6))
    lenient = decide_stage2(scored, Stage2Config(max_contradiction_prob=0.7))
    assert strict.rejected.height == 1
    assert lenient.rejected.height == 0
    assert len(scorer.calls) == calls


def test_stage2_empty_frame():
    result = run_stage2(make_samples({}), Stage2Config(), WordScorer(), None)
    assert result.kept.height == 0
    assert result.rejected.height == 0
    assert "nli_status" in result.kept.columns


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("max_contradiction_prob", 1.5, "max_contradiction_prob must be in \\[0, 1\\]"),
        ("min_pair_cosine", 2.0, "min_pair_cosine must be in \\[-1, 1\\]"),
        ("max_pairs_per_sample", 0, "max_pairs_per_sample must be an integer of at least 1"),
        ("batch_size", 0, "batch_size must be an integer of at least 1"),
        ("window_overlap_ratio", 0.95, "window_overlap_ratio must be in \\[0, 0.9\\]"),
        ("languages", "en", "languages must be a non-empty tuple"),
    ],
)
def test_stage2_config_rejects_invalid_value(field, value, message):
    with pytest.raises(ValueError, match=message):
        Stage2Config(**{field: value})


def test_stage2_real_rows_are_conserved():
    """Real-shaped rows with a fake scorer: every row ends kept or rejected exactly once."""
    samples = make_samples({**CASE_08, **CASE_09})
    result = run_stage2(samples, Stage2Config(), WordScorer(default=float(np.float64(0.3))), None)
    result.check_conservation(samples["sample_id"])
    assert result.kept.height + result.rejected.height == samples.height
