"""Pair planning for stage 2: which sentence pairs of one sample are scored, and how a pair longer
than the model window is cut into windows so nothing is truncated."""

import difflib
import re
from dataclasses import dataclass, field

from filters.consistency import NliScorer
from filters.segment import (
    extract_premise,
    find_final_answer,
    has_formula,
    is_hypothetical,
    is_question,
    split_sentences,
)

KIND_WITHIN_RESPONSE = "within_response"
KIND_PROMPT_VS_RESPONSE = "prompt_vs_response"
KIND_ANSWER_VS_REASONING = "answer_vs_reasoning"

_CALCULATOR_ANNOTATION = re.compile(r"<<[^<>\n]{0,200}>>")
_GSM_ANSWER = re.compile(r"^\s*####\s*(.+?)\s*$")
_WORD = re.compile(r"[^\W\d_]{2,}")
# Tokens for comparing two statements: words, numbers, and single punctuation or math symbols.
_TOKEN = re.compile(r"\w+|[^\w\s]")
# A variable name as math prose writes it: one letter, optionally with a subscript or prime
# (``d``, ``x_1``, ``a_n``, ``b'``). "a" and "I" are also English words, so they only count when
# the other statement has a different variable in the same place.
_VARIABLE = re.compile(r"^[A-Za-z](?:_?\w{1,3})?$")
# An enumeration label at the start of a sentence: "Item 3:", "Step 2.", "Note 4 -", "Case 1)".
_ENUMERATION_LABEL = re.compile(r"^\s*([^\W\d_]+)\s+(\d+)\s*[:.)\-]")


def clean_for_nli(sentence: str) -> str:
    """Rewrite a sentence into the plain text passed to the NLI model.

    GSM8K calculator annotations are removed and a ``#### N`` line becomes "The answer is N.".
    """
    gsm = _GSM_ANSWER.match(sentence)
    if gsm:
        return f"The answer is {gsm.group(1)}."
    return re.sub(r"\s{2,}", " ", _CALCULATOR_ANNOTATION.sub("", sentence)).strip()


def are_enumerated_siblings(a: str, b: str) -> bool:
    """Return True when both sentences start with the same label word and different numbers.

    "Item 8: the entry was completed." and "Item 9: the entry was completed." describe two
    different entities, but the model scores such template pairs as contradictions (P(C) about
    0.85 on nli-minilm-l6), so they are never paired.
    """
    label_a = _ENUMERATION_LABEL.match(a)
    label_b = _ENUMERATION_LABEL.match(b)
    if not label_a or not label_b:
        return False
    return label_a.group(1).lower() == label_b.group(1).lower() and label_a.group(2) != label_b.group(2)


def _is_variable(token: str) -> bool:
    return bool(_VARIABLE.match(token)) and not token.isdigit() and (len(token) == 1 or "_" in token or token[1:].isdigit())


def are_parallel_statements(a: str, b: str) -> bool:
    """Return True when two statements make the same claim about different variables.

    "Therefore, d must be 0." and "Therefore, c must be 0." come from a case analysis, but the
    model scores such pairs as contradictions. Two statements are parallel when every difference
    between their token sequences replaces variable names (and possibly numbers next to them) and
    at least one variable name differs. A change of value alone ("weighs 3 kilograms" / "weighs 5
    kilograms") is not parallel, because that is the contradiction stage 2 looks for.
    """
    tokens_a = _TOKEN.findall(a)
    tokens_b = _TOKEN.findall(b)
    matcher = difflib.SequenceMatcher(a=tokens_a, b=tokens_b, autojunk=False)
    changed_variable = False
    for tag, a_start, a_end, b_start, b_end in matcher.get_opcodes():
        if tag == "equal":
            continue
        if tag != "replace":
            return False
        replaced = tokens_a[a_start:a_end] + tokens_b[b_start:b_end]
        if not all(_is_variable(token) or token.isdigit() for token in replaced):
            return False
        variables_a = [t for t in tokens_a[a_start:a_end] if _is_variable(t)]
        variables_b = [t for t in tokens_b[b_start:b_end] if _is_variable(t)]
        if variables_a and variables_b and variables_a != variables_b:
            changed_variable = True
    return changed_variable


def count_words(text: str) -> int:
    """Count words of two or more letters in any script; digits and formula symbols do not count."""
    return len(_WORD.findall(text))


@dataclass
class PairCandidate:
    """Two whole sentences that may be scored against each other."""

    kind: str
    premise_index: int  # index into the prompt's sentences for prompt_vs_response, else the response's
    hypothesis_index: int  # index into the response's sentences
    premise: str
    hypothesis: str


@dataclass
class PairUnit:
    """One premise/hypothesis pair that fits the model window, scored in both directions."""

    candidate: PairCandidate
    premise: str
    hypothesis: str
    windowed: bool  # True when a sentence was cut into windows to fit


@dataclass
class SamplePlan:
    """The pairs chosen for one sample, and why checking is incomplete or failed, if it is."""

    candidates: list[PairCandidate] = field(default_factory=list)
    units: list[PairUnit] = field(default_factory=list)
    unchecked_reason: str | None = None
    error: str | None = None
    lang: str | None = None
    pairs_over_cap: int = 0


class PairPlanner:
    """Build the candidate pairs of a sample and cut over-long pairs into model-sized windows."""

    def __init__(self, nli: NliScorer, *, min_sentence_words: int, window_overlap_ratio: float,
                 check_prompt_premises: bool, check_final_answer: bool, skip_formula_sentences: bool):
        self.nli = nli
        self.min_sentence_words = min_sentence_words
        self.window_overlap_ratio = window_overlap_ratio
        self.check_prompt_premises = check_prompt_premises
        self.check_final_answer = check_final_answer
        self.skip_formula_sentences = skip_formula_sentences
        self._side_token_cache: dict[str, int] = {}
        # A side's length is measured against a one-token partner so it works for any tokenizer.
        self._partner_only = nli.count_tokens("", "x")
        self._pair_overhead = nli.count_tokens("a", "b") - self._side_tokens("a") - self._side_tokens("b")

    def _side_tokens(self, text: str) -> int:
        tokens = self._side_token_cache.get(text)
        if tokens is None:
            tokens = self.nli.count_tokens(text, "x") - self._partner_only
            if len(self._side_token_cache) < 100_000:
                self._side_token_cache[text] = tokens
        return tokens

    def exceeds_window(self, candidate: PairCandidate) -> bool:
        """Return True when the pair is longer than the model window and must be cut into windows."""
        length = self._side_tokens(candidate.premise) + self._side_tokens(candidate.hypothesis) + self._pair_overhead
        return length > self.nli.max_length

    def _checkable(self, sentence: str, *, is_answer: bool = False) -> str | None:
        """Return the text to score for a sentence, or None when it is not paired at all."""
        if is_question(sentence) or is_hypothetical(sentence):
            return None
        text = clean_for_nli(sentence)
        if self.skip_formula_sentences and not is_answer and has_formula(text):
            return None
        return text if count_words(text) >= self.min_sentence_words else None

    def plan(self, prompt: str | None, response: str | None) -> SamplePlan:
        """List every candidate pair of one sample, before similarity pruning and the cap."""
        response_sentences = split_sentences(response)
        if not response_sentences:
            return SamplePlan(unchecked_reason="empty_response")
        answer_index = find_final_answer(response_sentences) if self.check_final_answer else None
        checkable = {
            i: text
            for i, sentence in enumerate(response_sentences)
            if (text := self._checkable(sentence, is_answer=i == answer_index))
        }
        candidates: list[PairCandidate] = []
        if answer_index is not None and answer_index in checkable:
            answer = checkable[answer_index]
            for i, text in checkable.items():
                if i != answer_index:
                    candidates.append(PairCandidate(KIND_ANSWER_VS_REASONING, i, answer_index, text, answer))
        if self.check_prompt_premises:
            for p, sentence in enumerate(split_sentences(prompt)):
                premise = extract_premise(sentence)
                if premise is None or (premise := self._checkable(premise)) is None:
                    continue
                for i, text in checkable.items():
                    if not (are_enumerated_siblings(premise, text) or are_parallel_statements(premise, text)):
                        candidates.append(PairCandidate(KIND_PROMPT_VS_RESPONSE, p, i, premise, text))
        reasoning = sorted(i for i in checkable if i != answer_index)
        for a, i in enumerate(reasoning):
            for j in reasoning[a + 1 :]:
                if are_enumerated_siblings(checkable[i], checkable[j]) or are_parallel_statements(
                    checkable[i], checkable[j]
                ):
                    continue
                candidates.append(PairCandidate(KIND_WITHIN_RESPONSE, i, j, checkable[i], checkable[j]))
        return SamplePlan(candidates=candidates)

    def windows(self, candidate: PairCandidate) -> list[PairUnit]:
        """Return the candidate as one unit, or as window pairs when it exceeds the model window."""
        limit = self.nli.max_length
        if self.nli.count_tokens(candidate.premise, candidate.hypothesis) <= limit:
            return [PairUnit(candidate, candidate.premise, candidate.hypothesis, windowed=False)]
        space = limit - self._pair_overhead
        premise_tokens = self._side_tokens(candidate.premise)
        hypothesis_tokens = self._side_tokens(candidate.hypothesis)
        if premise_tokens <= space // 2:
            premise_budget, hypothesis_budget = premise_tokens, space - premise_tokens
        elif hypothesis_tokens <= space // 2:
            premise_budget, hypothesis_budget = space - hypothesis_tokens, hypothesis_tokens
        else:
            premise_budget = hypothesis_budget = space // 2
        units = []
        for premise in self._cut(candidate.premise, premise_budget):
            for hypothesis in self._cut(candidate.hypothesis, hypothesis_budget):
                units.append(PairUnit(candidate, premise, hypothesis, windowed=True))
        return units

    def _cut(self, text: str, budget: int) -> list[str]:
        """Cut text into overlapping word windows of at most ``budget`` tokens each."""
        if self._side_tokens(text) <= budget:
            return [text]
        pieces: list[tuple[str, int]] = []
        for word in text.split():
            tokens = self._side_tokens(word)
            if tokens <= budget:
                pieces.append((word, tokens))
                continue
            # A single run without spaces longer than the budget: split it by characters.
            step = max(1, len(word) * budget // (tokens + 1))
            pieces.extend((word[k : k + step], self._side_tokens(word[k : k + step])) for k in range(0, len(word), step))
        windows: list[str] = []
        start = 0
        while start < len(pieces):
            end, used = start, 0
            while end < len(pieces) and used + pieces[end][1] <= budget:
                used += pieces[end][1]
                end += 1
            end = max(end, start + 1)
            window = " ".join(word for word, _ in pieces[start:end])
            while end - start > 1 and self._side_tokens(window) > budget:
                end -= 1
                window = " ".join(word for word, _ in pieces[start:end])
            windows.append(window)
            if end >= len(pieces):
                break
            next_start = max(start + 1, end - int((end - start) * self.window_overlap_ratio))
            if sum(tokens for _, tokens in pieces[next_start:]) <= budget:
                # Anchor the last window at the end so it is full-sized, not a short tail.
                while next_start > start + 1 and sum(t for _, t in pieces[next_start - 1 :]) <= budget:
                    next_start -= 1
            start = next_start
        return windows


def rank_candidates(candidates: list[PairCandidate], similarity: list[float]) -> list[int]:
    """Order candidate indices so every sentence's closest partners come first.

    A pair's priority is its best rank among the partners of either of its two sentences, then its
    similarity. A cap on the number of pairs therefore still gives each sentence its nearest
    partner, instead of spending the whole budget on one cluster of near-identical sentences.
    """
    def node_pairs(c: PairCandidate) -> tuple[tuple[str, int], tuple[str, int]]:
        premise_side = "prompt" if c.kind == KIND_PROMPT_VS_RESPONSE else "response"
        return (premise_side, c.premise_index), ("response", c.hypothesis_index)

    by_node: dict[tuple[str, int], list[int]] = {}
    for k, candidate in enumerate(candidates):
        for node in node_pairs(candidate):
            by_node.setdefault(node, []).append(k)
    best_rank = [len(candidates)] * len(candidates)
    for members in by_node.values():
        members.sort(key=lambda k: (-similarity[k], k))
        for rank, k in enumerate(members):
            best_rank[k] = min(best_rank[k], rank)
    return sorted(range(len(candidates)), key=lambda k: (best_rank[k], -similarity[k], k))


def word_overlap(a: str, b: str) -> float:
    """Jaccard similarity of the lowercased word sets; the ranking fallback without an embedder."""
    words_a = set(w.lower() for w in _WORD.findall(a))
    words_b = set(w.lower() for w in _WORD.findall(b))
    if not words_a or not words_b:
        return 0.0
    return len(words_a & words_b) / len(words_a | words_b)
