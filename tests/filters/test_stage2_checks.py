"""Stage 2's model-free checks: false arithmetic and answers outvoted by responses to the same problem."""

import json

import polars as pl
import pytest

from filters.schema import SAMPLE_SCHEMA, make_sample_id
from filters.stage2 import Stage2Config, decide_stage2, run_stage2, score_stage2
from tests.filters.test_consistency import WordScorer


def make_rows(rows: list[tuple[str, str, str | None, str]]) -> pl.DataFrame:
    """rows: (origin_id, response, group_id, task)."""
    records = []
    for origin_id, response, group_id, task in rows:
        record = dict.fromkeys(SAMPLE_SCHEMA)
        prompt = f"Problem {group_id}: compute the value."
        record.update(
            source="test", task=task, lang="en", prompt=prompt, response=response, origin_id=origin_id, group_id=group_id
        )
        record["sample_id"] = make_sample_id("test", prompt, response + origin_id)
        records.append(record)
    return pl.DataFrame(records, schema=SAMPLE_SCHEMA)


def reasons(result, samples) -> dict[str, str]:
    origin = dict(zip(samples["sample_id"], samples["origin_id"]))
    return {origin[row["sample_id"]]: (row["reason"], row["filter"]) for row in result.rejected.to_dicts()}


def test_false_arithmetic_rejected_with_claim():
    samples = make_rows([("bad", "We add them: 17 + 25 = 43.\n#### 43", "p", "math"), ("ok", "17 + 25 = 42.\n#### 42", "q", "math")])
    result = run_stage2(samples, Stage2Config(), WordScorer(default=0.0), None)
    assert reasons(result, samples) == {"bad": ("false_arithmetic", "arithmetic_claims")}
    assert "the left side is 42" in result.rejected["detail"][0]
    assert result.kept["origin_id"].to_list() == ["ok"]
    assert result.kept["arithmetic_error"].to_list() == [None]


def test_code_samples_are_not_read_as_arithmetic():
    samples = make_rows([("code", "assert 2 + 2 = 5 is a syntax error in Python", "p", "code")])
    result = run_stage2(samples, Stage2Config(), WordScorer(default=0.0), None)
    assert result.rejected.height == 0


def test_outvoted_answer_rejected():
    rows = [(f"m{i}", f"Adding gives 42.\n#### 42", "p", "math") for i in range(5)]
    rows.append(("odd", "Adding gives 41.\n#### 41", "p", "math"))
    samples = make_rows(rows)
    result = run_stage2(samples, Stage2Config(), WordScorer(default=0.0), None)
    assert reasons(result, samples) == {"odd": ("peer_disagreement", "peer_answers")}
    row = result.rejected.row(0, named=True)
    assert json.loads(row["detail"]) == {"answer": "41", "majority_answer": "42", "majority_share": 1.0, "peers": 5}
    assert row["score"] == pytest.approx(1.0)
    assert row["threshold"] == pytest.approx(0.5)


def test_extra_peers_vote_only():
    samples = make_rows([("odd", "#### 41", "p", "math")])
    peers = make_rows([(f"m{i}", "#### 42", "p", "math") for i in range(6)])
    result = run_stage2(samples, Stage2Config(), WordScorer(default=0.0), None, peers=peers)
    assert reasons(result, samples) == {"odd": ("peer_disagreement", "peer_answers")}
    assert result.rows_in == 1


def test_checks_switch_off_without_rescoring():
    rows = [(f"m{i}", "#### 42", "p", "math") for i in range(5)] + [("odd", "So 1 + 1 = 3.\n#### 3", "p", "math")]
    samples = make_rows(rows)
    scored = score_stage2(samples, Stage2Config(), WordScorer(default=0.0), None)
    assert reasons(decide_stage2(scored, Stage2Config()), samples) == {"odd": ("false_arithmetic", "arithmetic_claims")}
    no_arithmetic = decide_stage2(scored, Stage2Config(check_arithmetic=False))
    assert reasons(no_arithmetic, samples) == {"odd": ("peer_disagreement", "peer_answers")}
    neither = decide_stage2(scored, Stage2Config(check_arithmetic=False, check_peer_answers=False))
    assert (neither.rejected.height, neither.kept.height) == (0, 6)


def test_stage2_writes_one_reason_per_sample():
    pair = ("The parcel weighs 3 kilograms.", "The parcel weighs 5 kilograms.")
    response = "The parcel weighs 3 kilograms. The parcel weighs 5 kilograms. So 2 + 2 = 5.\n#### 5"
    rows = [(f"m{i}", "#### 4", "p", "math") for i in range(5)] + [("all", response, "p", "math")]
    samples = make_rows(rows)
    scorer = WordScorer(probs={pair: 0.95, pair[::-1]: 0.95}, default=0.0)
    result = run_stage2(samples, Stage2Config(), scorer, None)
    assert result.rejected["sample_id"].n_unique() == result.rejected.height == 1
    assert result.rejected["reason"].to_list() == ["false_arithmetic"]
    assert result.kept.height + result.rejected.height == samples.height


def test_invalid_peer_settings_name_the_fix():
    with pytest.raises(ValueError, match="min_peer_majority"):
        Stage2Config(min_peer_majority=1.5)
    with pytest.raises(ValueError, match="min_peer_answers"):
        Stage2Config(min_peer_answers=0)


def test_chat_replies_never_outvoted():
    rows = [(f"m{i}", "So I am 25 years old.", "p", "chat") for i in range(5)] + [("odd", "So I am 30 years old.", "p", "chat")]
    samples = make_rows(rows)
    result = run_stage2(samples, Stage2Config(), WordScorer(default=0.0), None)
    assert result.rejected.height == 0


def with_meta(samples: pl.DataFrame, meta: list[dict]) -> pl.DataFrame:
    return samples.with_columns(pl.Series("meta", [json.dumps(m) for m in meta], dtype=pl.String))


def test_shared_problem_id_not_grouped():
    """GSM-Symbolic variants of one template share a problem_id but not their numbers."""
    rows = [(f"v{i}", "#### 42", f"p{i}", "math") for i in range(5)] + [("odd", "#### 41", "p9", "math")]
    samples = with_meta(make_rows(rows), [{"problem_id": "template-7"}] * 6)
    result = run_stage2(samples, Stage2Config(), WordScorer(default=0.0), None)
    assert result.rejected.height == 0


def test_answer_group_joins_prompts():
    rows = [(f"v{i}", "#### 42", f"p{i}", "math") for i in range(5)] + [("odd", "#### 41", "p9", "math")]
    samples = with_meta(make_rows(rows), [{"answer_group": "P_1"}] * 6)
    result = run_stage2(samples, Stage2Config(), WordScorer(default=0.0), None)
    assert reasons(result, samples) == {"odd": ("peer_disagreement", "peer_answers")}
