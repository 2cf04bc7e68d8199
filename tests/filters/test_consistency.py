"""NLI scorer backend, label lookup, score cache and pair planning."""

import json
from pathlib import Path

import numpy as np
import pytest

from filters.consistency import (
    CrossEncoderNli,
    NliScorer,
    find_label_index,
    pair_cache_key,
    score_with_cache,
)
from filters.nli_pairs import (
    KIND_ANSWER_VS_REASONING,
    KIND_PROMPT_VS_RESPONSE,
    KIND_WITHIN_RESPONSE,
    PairCandidate,
    PairPlanner,
    are_enumerated_siblings,
    are_parallel_statements,
    clean_for_nli,
    rank_candidates,
)

MODEL_PATH = Path(__file__).resolve().parents[2].parent / "shared" / "models" / "nli-minilm-l6"
needs_model = pytest.mark.skipif(not MODEL_PATH.is_dir(), reason=f"NLI checkpoint not found at {MODEL_PATH}")


class WordScorer:
    """Fake scorer: one token per whitespace word plus 3 special tokens; fixed probabilities."""

    def __init__(self, max_length: int = 128, probs: dict | None = None, default: float = 0.1):
        self.name = "fake-nli"
        self.max_length = max_length
        self.probs = probs or {}
        self.default = default
        self.calls: list[list[tuple[str, str]]] = []

    def count_tokens(self, premise: str, hypothesis: str) -> int:
        return len(premise.split()) + len(hypothesis.split()) + 3

    def contradiction_probs(self, pairs):
        self.calls.append(list(pairs))
        for premise, hypothesis in pairs:
            assert self.count_tokens(premise, hypothesis) <= self.max_length, "a pair exceeds the window"
        return np.array([self.probs.get(pair, self.default) for pair in pairs], dtype=np.float64)


def make_planner(nli, **overrides) -> PairPlanner:
    settings = dict(
        min_sentence_words=3,
        window_overlap_ratio=0.25,
        check_prompt_premises=True,
        check_final_answer=True,
        skip_formula_sentences=True,
    )
    settings.update(overrides)
    return PairPlanner(nli, **settings)


def test_find_label_index_case_insensitive():
    assert find_label_index({0: "ENTAILMENT", 1: "neutral", 2: "Contradiction"}, "contradiction") == 2


def test_find_label_index_missing_mapping_raises():
    with pytest.raises(ValueError, match="no config.id2label"):
        find_label_index(None, "contradiction")


def test_find_label_index_default_names_raise():
    with pytest.raises(ValueError, match="LABEL_0"):
        find_label_index({0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}, "contradiction")


def test_fake_scorer_satisfies_protocol():
    assert isinstance(WordScorer(), NliScorer)


def test_pair_cache_key_depends_on_direction_and_model():
    key = pair_cache_key("m", "a", "b")
    assert key != pair_cache_key("m", "b", "a")
    assert key != pair_cache_key("other", "a", "b")
    assert key == pair_cache_key("m", "a", "b")


def test_score_with_cache_scores_only_new_pairs():
    nli = WordScorer(probs={("a b", "c d"): 0.9})
    cache: dict[str, float] = {}
    first, scored_first = score_with_cache(nli, [("a b", "c d"), ("c d", "a b"), ("a b", "c d")], cache)
    second, scored_second = score_with_cache(nli, [("a b", "c d"), ("e f", "g h")], cache)
    assert first.tolist() == [0.9, 0.1, 0.9]
    assert scored_first == 2
    assert second.tolist() == [0.9, 0.1]
    assert scored_second == 1
    assert nli.calls[-1] == [("e f", "g h")]


def test_clean_for_nli_gsm_answer_and_annotations():
    assert clean_for_nli("#### 72") == "The answer is 72."
    assert clean_for_nli("She sold 48/2 = <<48/2=24>>24 clips.") == "She sold 48/2 = 24 clips."


def test_are_enumerated_siblings_labels():
    assert are_enumerated_siblings("Item 8: the entry was done.", "Item 9: the entry was done.")
    assert not are_enumerated_siblings("Item 8: the entry was done.", "Item 8: the entry was not done.")
    assert not are_enumerated_siblings("The parcel weighs 3 kilograms.", "The parcel weighs 5 kilograms.")


@pytest.mark.parametrize(
    "a, b",
    [
        ("Therefore, d must be 0.", "Therefore, c must be 0."),
        ("So x_1 = 3 is a root.", "So x_2 = 5 is a root."),
        ("Then a must be even.", "Then b must be even."),
    ],
)
def test_are_parallel_statements_different_variables(a, b):
    assert are_parallel_statements(a, b)


@pytest.mark.parametrize(
    "a, b",
    [
        ("The parcel weighs 3 kilograms.", "The parcel weighs 5 kilograms."),
        ("Then d must be 0.", "Then d must be odd."),
        ("Then d must be 0.", "Then d cannot be 0."),
        ("The museum opens at 9 am.", "The museum opens at 9 am."),
    ],
)
def test_are_parallel_statements_same_subject(a, b):
    assert not are_parallel_statements(a, b)


def test_plan_skips_parallel_case_statements():
    planner = make_planner(WordScorer())
    plan = planner.plan("Solve it.", "Therefore, d must be 0 here. Therefore, c must be 0 here.")
    assert [c for c in plan.candidates if c.kind == KIND_WITHIN_RESPONSE] == []


def test_plan_builds_all_three_kinds():
    planner = make_planner(WordScorer())
    plan = planner.plan(
        "Alice is older than Bob. Which of them is younger?",
        "Bob was born in May. Alice was born in June. The answer is Bob.",
    )
    kinds = {(c.kind, c.premise_index, c.hypothesis_index) for c in plan.candidates}
    assert (KIND_WITHIN_RESPONSE, 0, 1) in kinds
    assert (KIND_ANSWER_VS_REASONING, 0, 2) in kinds
    assert (KIND_ANSWER_VS_REASONING, 1, 2) in kinds
    assert (KIND_PROMPT_VS_RESPONSE, 0, 2) in kinds
    assert not any(c.kind == KIND_PROMPT_VS_RESPONSE and c.premise_index == 1 for c in plan.candidates)
    assert len(plan.candidates) == 6


def test_plan_skips_questions_short_and_formula_sentences():
    planner = make_planner(WordScorer())
    plan = planner.plan("", "Is it true? Yes. We have x = 3 here. The museum opens at 9 am. The museum is closed.")
    texts = {text for c in plan.candidates for text in (c.premise, c.hypothesis)}
    assert texts == {"The museum opens at 9 am.", "The museum is closed."}


def test_plan_empty_response_reason():
    plan = make_planner(WordScorer()).plan("When is it?", "   \n ")
    assert plan.unchecked_reason == "empty_response"
    assert plan.candidates == []


def test_windows_short_pair_is_one_unit():
    planner = make_planner(WordScorer(max_length=20))
    candidate = PairCandidate(KIND_WITHIN_RESPONSE, 0, 1, "one two three", "four five six")
    units = planner.windows(candidate)
    assert len(units) == 1
    assert not units[0].windowed


def test_windows_long_sentence_covers_every_word():
    nli = WordScorer(max_length=20)
    planner = make_planner(nli)
    long_sentence = " ".join(f"w{i}" for i in range(40))
    candidate = PairCandidate(KIND_WITHIN_RESPONSE, 0, 1, "short premise here", long_sentence)
    units = planner.windows(candidate)
    covered = {word for unit in units for word in unit.hypothesis.split()}
    assert len(units) > 1
    assert all(unit.windowed for unit in units)
    assert all(nli.count_tokens(u.premise, u.hypothesis) <= 20 for u in units)
    assert covered == set(long_sentence.split())
    assert all(unit.premise == "short premise here" for unit in units)


def test_windows_unspaced_run_is_split_by_characters():
    class CharScorer(WordScorer):
        def count_tokens(self, premise, hypothesis):
            return len(premise.replace(" ", "")) // 4 + len(hypothesis.replace(" ", "")) // 4 + 3

    nli = CharScorer(max_length=20)
    candidate = PairCandidate(KIND_WITHIN_RESPONSE, 0, 1, "abc", "x" * 200)
    units = make_planner(nli).windows(candidate)
    assert "".join(u.hypothesis for u in units).count("x") >= 200
    assert all(nli.count_tokens(u.premise, u.hypothesis) <= 20 for u in units)


def test_rank_candidates_gives_each_sentence_its_nearest_partner():
    candidates = [
        PairCandidate(KIND_WITHIN_RESPONSE, 1, 2, "b", "c"),
        PairCandidate(KIND_WITHIN_RESPONSE, 1, 3, "b", "d"),
        PairCandidate(KIND_WITHIN_RESPONSE, 2, 3, "c", "d"),
        PairCandidate(KIND_WITHIN_RESPONSE, 0, 4, "a", "e"),
    ]
    order = rank_candidates(candidates, [0.95, 0.94, 0.93, 0.6])
    # (a, e) is the only partner of a and e, so it outranks (c, d), the second choice of both c and d.
    assert order.index(3) < order.index(2)
    assert order[0] == 0


@pytest.fixture(scope="module")
def real_nli() -> CrossEncoderNli:
    return CrossEncoderNli(str(MODEL_PATH))


@needs_model
def test_cross_encoder_reads_label_order(real_nli):
    assert real_nli.contradiction_index == 0
    assert real_nli.entailment_index == 1
    assert real_nli.max_length == 128


@needs_model
def test_cross_encoder_restores_input_order(real_nli):
    pairs = [
        ("Paris is the capital of France.", "Paris is not the capital of France."),
        ("Water boils at 100 degrees Celsius at sea level.", "At sea level, water boils at 100 degrees Celsius."),
        ("The parcel weighs 3 kilograms.", "The parcel weighs 5 kilograms."),
    ]
    together = real_nli.contradiction_probs(pairs)
    alone = np.array([real_nli.contradiction_probs([pair])[0] for pair in pairs])
    assert together.shape == (3,)
    assert np.allclose(together, alone, atol=1e-5)
    assert together[0] > 0.9
    assert together[1] < 0.1


@needs_model
def test_cross_encoder_rejects_pair_over_window(real_nli):
    long_text = " ".join(["word"] * 200)
    assert real_nli.count_tokens(long_text, "short") > 128
    with pytest.raises(ValueError, match="exceed the model window"):
        real_nli.contradiction_probs([(long_text, "short")])


def _copy_checkpoint(target: Path, order: list[int] | None) -> Path:
    """Save the shared checkpoint to ``target``; ``order[k]`` is the old class that becomes class k.

    With ``order`` None the copy has no id2label/label2id in its config.json.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(MODEL_PATH))
    tokenizer = AutoTokenizer.from_pretrained(str(MODEL_PATH))
    if order is not None:
        old = {int(k): v for k, v in model.config.id2label.items()}
        with torch.no_grad():
            model.classifier.weight.copy_(model.classifier.weight[order].clone())
            model.classifier.bias.copy_(model.classifier.bias[order].clone())
        model.config.id2label = {k: old[order[k]] for k in range(len(order))}
        model.config.label2id = {name: k for k, name in model.config.id2label.items()}
    model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    if order is None:
        config_path = target / "config.json"
        config = json.loads(config_path.read_text())
        config.pop("id2label", None)
        config.pop("label2id", None)
        config["num_labels"] = 3  # keep the 3-row head loadable; transformers then names the classes LABEL_0..2
        config_path.write_text(json.dumps(config))
    return target


@needs_model
def test_cross_encoder_permuted_labels_same_probs(real_nli, tmp_path):
    # entailment, neutral, contradiction: contradiction moves from index 0 to index 2.
    permuted = CrossEncoderNli(str(_copy_checkpoint(tmp_path / "permuted", [1, 2, 0])))
    pairs = [("The parcel weighs 3 kilograms.", "The parcel weighs 5 kilograms."), ("A dog runs.", "An animal runs.")]
    assert permuted.contradiction_index == 2
    assert np.allclose(permuted.contradiction_probs(pairs), real_nli.contradiction_probs(pairs), atol=1e-5)


@needs_model
def test_cross_encoder_without_id2label_raises(tmp_path):
    target = _copy_checkpoint(tmp_path / "unlabeled", None)
    with pytest.raises(ValueError, match="contradiction"):
        CrossEncoderNli(str(target))
