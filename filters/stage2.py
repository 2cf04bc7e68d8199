"""Stage 2: reject samples whose reasoning contradicts itself, its arithmetic or its peers.

Three checks, each with its own reason in the ledger:

- ``contradiction``: an NLI cross-encoder finds two statements that contradict (below);
- ``false_arithmetic``: the response states a computation whose sides differ, such as
  ``17 + 25 = 43`` (``filters.arithmetic_claims``; code samples are not read). NLI cannot read
  arithmetic, and an exact evaluator can;
- ``peer_disagreement``: at least ``min_peer_majority`` of the other answered responses to the
  same math question agree on a different final answer, with more votes than the response's own
  (``filters.peer_answers``). Responses answer the same question when their prompts are equal
  after whitespace and case folding, or when ``meta`` gives them the same ``answer_group``. A
  shared ``problem_id`` is not enough: GSM-Symbolic variants of one template share it but have
  different numbers. So this check only fires in datasets with several responses per question.

The last two need no model and can be switched off (``check_arithmetic``, ``check_peer_answers``).

For the NLI check, three kinds of sentence pairs are scored:

- ``within_response``: two sentences of the response;
- ``answer_vs_reasoning``: the final-answer sentence (``#### N``, ``\\boxed{}``, "the answer is")
  against each other response sentence;
- ``prompt_vs_response``: a statement made in the prompt against each response sentence.

Questions, instructions, suppositions ("Assume ...", "If ...", "For n = 2, ..."), sentences with
equations or LaTeX (left to the stage 3 math checks) and sentences with fewer than
``min_sentence_words`` words are never paired. Neither are enumerated siblings such as "Item 3:
..." and "Item 4: ...", nor parallel statements about different variables such as "Therefore, d
must be 0." and "Therefore, c must be 0.", which describe different entities.

With an embedder, only pairs whose cosine similarity reaches ``min_pair_cosine`` are scored,
because the model calls many unrelated same-topic statements contradictions. Without one, every
pair is a candidate and word overlap only orders them for the cap. Each pair is scored in both
directions and its score is the smaller P(contradiction), which suppresses one-directional false
alarms. A sample is rejected with reason ``contradiction`` when any pair
scores at least ``max_contradiction_prob``. Entailment is never consulted, so it cannot cancel a
contradiction.

A pair of statements with the same subject that differ only by an everyday antonym ("locked" and
"open") scores 1.0 whatever the model says (``filters.antonyms``, ``check_antonyms``), because
small NLI models score such swaps as entailment; its evidence names the two words.

Nothing is truncated. A sentence too long for the model window is cut into overlapping windows
that are scored separately, and the sample is then reported ``unchecked_truncated`` unless a pair
already crossed the threshold. So is a sample that had more related pairs than
``max_pairs_per_sample``. A sample with no scorable pair, or outside ``languages``, is kept as
``not_checked`` (unless the arithmetic or peer check rejects it; those read every language) and
is never reported ``consistent``. The offline model is English only (38%
accuracy on Chinese XNLI), so ``languages`` defaults to ``("en",)``.

``score_stage2`` writes the score columns and ``decide_stage2`` applies the NLI threshold and the
two switches, so changing them never re-runs the model. ``min_peer_answers`` and
``min_peer_majority`` apply while scoring; changing them needs ``score_stage2`` again, which reads
NLI scores from the cache.
"""

import logging
import time
from collections.abc import MutableMapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from filters.consistency import NliScorer, pair_cache_key, score_with_cache
from filters.nli_pairs import (
    KIND_PROMPT_VS_RESPONSE,
    PairPlanner,
    SamplePlan,
    rank_candidates,
    word_overlap,
)
from filters.antonyms import antonym_contradiction
from filters.arithmetic_claims import find_false_arithmetic
from filters.embed import Embedder
from filters.lang import detect_lang
from filters.peer_answers import final_answer_key, group_key, peer_disagreements
from filters.schema import StageResult, concat_ledgers, ledger_rows, to_json

log = logging.getLogger(__name__)

STAGE = "stage2"
FILTER = "nli_consistency"

STATUS_CONSISTENT = "consistent"
STATUS_NOT_CHECKED = "not_checked"
STATUS_UNCHECKED_TRUNCATED = "unchecked_truncated"

SCORE_COLUMNS: dict[str, pl.DataType] = {
    "max_contradiction_prob": pl.Float64,  # max over scored pairs of min(P(C) forward, P(C) backward)
    "nli_pairs_scored": pl.Int32,  # premise/hypothesis pairs scored (each window pair counts), both directions
    "evidence_premise": pl.String,  # earlier text of the max pair
    "evidence_hypothesis": pl.String,  # later text of the max pair
    "nli_evidence": pl.String,  # JSON: kind, indices and both directions' P(C) of the max pair
    "nli_unchecked_reason": pl.String,  # why checking was skipped or incomplete; null when complete
    "nli_error": pl.String,  # "ExceptionName: message" when scoring this sample failed
    "nli_model": pl.String,
    "arithmetic_error": pl.String,  # the first false computation the response states, or null
    "peer_disagreement": pl.String,  # JSON: own answer, majority answer, its share and peer count, or null
}
SCORE_EXTRA = ("arithmetic_error", "peer_disagreement")


@dataclass(frozen=True)
class Stage2Config:
    """Settings of the consistency stage: the NLI check, the arithmetic check and the peer-answer check.

    ``max_contradiction_prob`` defaults to 0.6, measured with the offline nli-minilm-l6 checkpoint
    and the min-of-both-directions pair score. The weakest true contradiction among the project's
    test cases ("opens at 9 am on weekdays" / "is closed on weekdays") scores 0.67, and the
    non-contradicting controls score at most 0.14. On SNLI test, single-direction P(C) >= 0.5
    gives contradiction precision 0.85 and recall 0.82 (model card).

    ``min_pair_cosine`` (0.55) and the threshold were chosen on a dev split (90 of 270 problems) of
    champ-dataset's 540 solutions with a human-marked first wrong step: there, 94% of the flagged
    solutions had a wrong step, against a base rate of 79%. Recalibrate both for another
    checkpoint or domain.

    NOTE: on the held-out champ problems that gain does not hold for the NLI check alone. There,
    81% of its flagged solutions had a wrong step against a base rate of 84%, so on math
    solutions this model is no better than random flagging. Most wrong steps are arithmetic or
    logic the model cannot read; the arithmetic and peer-answer checks cover part of that, and
    ``bench/consistency.py`` prints each check alone and combined.

    ``min_peer_answers`` (5) and ``min_peer_majority`` (0.5) were set before measuring; on the
    champ dev split the peer check flagged 1.7% of solutions, all with a wrong step.
    """

    max_contradiction_prob: float = 0.6  # reject when a pair's P(contradiction) >= this, in [0, 1]
    min_pair_cosine: float = 0.55  # pair two sentences only when their embedding cosine >= this, in [-1, 1]
    max_pairs_per_sample: int = 64  # sentence pairs scored per sample; more makes it unchecked_truncated
    languages: tuple[str, ...] = ("en",)  # ISO 639-1 codes the NLI model supports
    check_prompt_premises: bool = True  # pair statements in the prompt with response sentences
    check_final_answer: bool = True  # pair the final-answer sentence with the reasoning sentences
    min_sentence_words: int = 3  # sentences with fewer words (2+ letters each) are not paired
    skip_formula_sentences: bool = True  # leave sentences with equations or LaTeX to the stage 3 math checks
    window_overlap_ratio: float = 0.25  # overlap of the windows a long sentence is cut into, in [0, 0.9]
    batch_size: int = 64  # directed pairs per model call
    samples_per_chunk: int = 256  # samples whose pairs are embedded and scored together
    check_antonyms: bool = True  # score a pair 1.0 when it differs only by an antonym (filters.antonyms)
    check_arithmetic: bool = True  # reject a response that states a false computation (2 + 3 = 6)
    check_peer_answers: bool = True  # reject a math answer that most other answers to the same problem contradict
    min_peer_answers: int = 5  # other answered responses a group needs before peers can outvote a response
    min_peer_majority: float = 0.5  # share of those peers that must agree on a different answer, in (0, 1]

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_contradiction_prob <= 1.0:
            raise ValueError(
                f"max_contradiction_prob must be in [0, 1], got {self.max_contradiction_prob}; "
                "0.6 is the tested default for nli-minilm-l6"
            )
        if not -1.0 <= self.min_pair_cosine <= 1.0:
            raise ValueError(
                f"min_pair_cosine must be in [-1, 1], got {self.min_pair_cosine}; use -1 to pair every sentence"
            )
        if not 0.0 < self.min_peer_majority <= 1.0:
            raise ValueError(
                f"min_peer_majority must be in (0, 1], got {self.min_peer_majority}; 0.5 means at least half agree"
            )
        for name in ("max_pairs_per_sample", "batch_size", "samples_per_chunk", "min_sentence_words", "min_peer_answers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer of at least 1, got {value!r}")
        if not 0.0 <= self.window_overlap_ratio <= 0.9:
            raise ValueError(f"window_overlap_ratio must be in [0, 0.9], got {self.window_overlap_ratio}")
        if isinstance(self.languages, str) or not self.languages:
            raise ValueError(
                f"languages must be a non-empty tuple of ISO 639-1 codes such as ('en',), got {self.languages!r}"
            )


def _sample_language(row: dict) -> str:
    lang = row.get("lang")
    if lang:
        return lang
    return detect_lang(row.get("response") or "")


def _make_planner(config: Stage2Config, nli: NliScorer) -> PairPlanner:
    return PairPlanner(
        nli,
        min_sentence_words=config.min_sentence_words,
        window_overlap_ratio=config.window_overlap_ratio,
        check_prompt_premises=config.check_prompt_premises,
        check_final_answer=config.check_final_answer,
        skip_formula_sentences=config.skip_formula_sentences,
    )


def _plan_chunk(
    rows: list[dict], config: Stage2Config, planner: PairPlanner, embedder: Embedder | None
) -> list[SamplePlan]:
    plans = []
    for row in rows:
        try:
            lang = _sample_language(row)
            if lang not in config.languages:
                plans.append(SamplePlan(unchecked_reason="unsupported_language", lang=lang))
                continue
            plan = planner.plan(row.get("prompt"), row.get("response"))
            plan.lang = lang
            plans.append(plan)
        except Exception as error:  # noqa: BLE001 - a per-sample failure becomes an error_* rejection
            plans.append(SamplePlan(error=f"{type(error).__name__}: {error}"))

    similarities = _similarities(plans, embedder)
    for plan, similarity in zip(plans, similarities):
        if plan.error or not plan.candidates:
            continue
        try:
            _select_pairs(plan, similarity, config, planner, pruned=embedder is not None)
        except Exception as error:  # noqa: BLE001 - a per-sample failure becomes an error_* rejection
            plan.units = []
            plan.error = f"{type(error).__name__}: {error}"
    return plans


def _similarities(plans: list[SamplePlan], embedder: Embedder | None) -> list[list[float]]:
    """Return per plan the similarity of each candidate pair.

    With an embedder this is the cosine of the two sentence embeddings; every distinct text of the
    chunk is embedded once. Without one it is the word overlap, used only to order pairs.
    """
    if embedder is None:
        return [[word_overlap(c.premise, c.hypothesis) for c in plan.candidates] for plan in plans]
    texts = sorted({text for plan in plans for c in plan.candidates for text in (c.premise, c.hypothesis)})
    if not texts:
        return [[] for _ in plans]
    vectors = embedder.encode(texts)
    row_of = {text: i for i, text in enumerate(texts)}
    return [
        [float(np.dot(vectors[row_of[c.premise]], vectors[row_of[c.hypothesis]])) for c in plan.candidates]
        for plan in plans
    ]


def _select_pairs(
    plan: SamplePlan, similarity: list[float], config: Stage2Config, planner: PairPlanner, *, pruned: bool
) -> None:
    """Keep related pairs (cosine >= min_pair_cosine), apply the per-sample cap, window long pairs."""
    candidates = plan.candidates
    if pruned:
        # The embedder truncates long sentences too, so an over-window pair is never pruned as unrelated.
        related = [
            k
            for k, value in enumerate(similarity)
            if value >= config.min_pair_cosine or planner.exceeds_window(candidates[k])
        ]
        candidates = [candidates[k] for k in related]
        similarity = [similarity[k] for k in related]
    order = rank_candidates(candidates, similarity)
    if len(order) > config.max_pairs_per_sample:
        plan.pairs_over_cap = len(order) - config.max_pairs_per_sample
        plan.unchecked_reason = "pair_cap"
        order = order[: config.max_pairs_per_sample]
    for k in order:
        plan.units.extend(planner.windows(candidates[k]))
    if plan.unchecked_reason is None and any(unit.windowed for unit in plan.units):
        plan.unchecked_reason = "sentence_over_window"
    if not plan.units and plan.unchecked_reason is None:
        plan.unchecked_reason = "no_related_pairs" if candidates != plan.candidates else "no_checkable_pairs"


def _summarize(
    plan: SamplePlan, probs: np.ndarray, error: str | None, model_name: str, check_antonyms: bool = True
) -> dict:
    """Reduce one sample's directed scores (shape (units, 2)) to its row of SCORE_COLUMNS."""
    row = dict.fromkeys(SCORE_COLUMNS)
    row["nli_model"] = model_name
    row["nli_pairs_scored"] = 0
    row["nli_error"] = plan.error or error
    reason = plan.unchecked_reason
    if reason is None and not plan.candidates and not plan.units:
        reason = "no_checkable_pairs"
    row["nli_unchecked_reason"] = reason
    if row["nli_error"] or not plan.units:
        if plan.lang is not None or reason is not None:
            row["nli_evidence"] = to_json({"reason": reason, "lang": plan.lang})
        return row

    pair_probs = probs.min(axis=1)
    antonym_of = [
        antonym_contradiction(unit.premise, unit.hypothesis) if check_antonyms else None for unit in plan.units
    ]
    # A pair that differs only by an antonym is a contradiction whatever the model scores (filters.antonyms).
    pair_probs = np.where([found is not None for found in antonym_of], 1.0, pair_probs)
    best = int(np.argmax(pair_probs))
    unit = plan.units[best]
    candidate = unit.candidate
    row["max_contradiction_prob"] = float(pair_probs[best])
    row["nli_pairs_scored"] = len(plan.units)
    row["evidence_premise"] = unit.premise
    row["evidence_hypothesis"] = unit.hypothesis
    row["nli_evidence"] = to_json(
        {
            "kind": candidate.kind,
            "premise": unit.premise,
            "hypothesis": unit.hypothesis,
            "premise_from": "prompt" if candidate.kind == KIND_PROMPT_VS_RESPONSE else "response",
            "premise_index": candidate.premise_index,
            "hypothesis_index": candidate.hypothesis_index,
            "p_contradiction_forward": round(float(probs[best, 0]), 4),
            "p_contradiction_backward": round(float(probs[best, 1]), 4),
            "windowed": unit.windowed,
            "pairs_scored": len(plan.units),
            "pairs_over_cap": plan.pairs_over_cap,
            "unchecked_reason": reason,
            "model": model_name,
            "antonyms": list(antonym_of[best]) if antonym_of[best] else None,
        }
    )
    return row


def _score_directed(
    pairs: list[tuple[str, str]], nli: NliScorer, config: Stage2Config, cache: MutableMapping[str, float] | None
) -> tuple[np.ndarray, list[str | None]]:
    """Score directed pairs in length-sorted batches; a failing batch is retried pair by pair.

    Returns P(contradiction) (NaN where scoring failed) and the error message per pair.
    """
    probs = np.full(len(pairs), np.nan)
    errors: list[str | None] = [None] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    for begin in range(0, len(order), config.batch_size):
        rows = order[begin : begin + config.batch_size]
        batch = [pairs[i] for i in rows]
        try:
            probs[rows] = score_with_cache(nli, batch, cache)[0]
            continue
        except Exception as error:  # noqa: BLE001 - isolate the failing pair below
            log.warning("NLI batch of %d pairs failed (%s: %s); retrying pair by pair", len(batch), type(error).__name__, error)
        for i in rows:
            try:
                probs[i] = score_with_cache(nli, [pairs[i]], cache)[0][0]
            except Exception as error:  # noqa: BLE001 - becomes the owning sample's error_* rejection
                errors[i] = f"{type(error).__name__}: {error}"
    return probs, errors


def _score_rows(plans: list[SamplePlan], nli: NliScorer, config: Stage2Config, cache) -> list[dict]:
    directed: list[tuple[str, str]] = []
    for plan in plans:
        for unit in plan.units:
            directed.append((unit.premise, unit.hypothesis))
            directed.append((unit.hypothesis, unit.premise))
    prefetch = getattr(cache, "prefetch", None)
    if prefetch is not None:
        # A store-backed cache loads the whole chunk with one query instead of one per pair.
        prefetch(pair_cache_key(nli.name, premise, hypothesis) for premise, hypothesis in directed)
    probs, errors = _score_directed(directed, nli, config, cache)

    rows = []
    cursor = 0
    for plan in plans:
        count = 2 * len(plan.units)
        plan_errors = [e for e in errors[cursor : cursor + count] if e]
        plan_probs = probs[cursor : cursor + count].reshape(-1, 2)
        cursor += count
        rows.append(
            _summarize(plan, plan_probs, plan_errors[0] if plan_errors else None, nli.name, config.check_antonyms)
        )
    return rows


def _arithmetic_errors(samples: pl.DataFrame, config: Stage2Config) -> list[str | None]:
    if not config.check_arithmetic or samples.height == 0:
        return [None] * samples.height
    tasks = samples["task"].to_list() if "task" in samples.columns else [None] * samples.height
    errors = []
    for task, response in zip(tasks, samples["response"].to_list()):
        claims = [] if task == "code" else find_false_arithmetic(response)
        errors.append(claims[0].describe() if claims else None)
    return errors


def _group_ids(frame: pl.DataFrame) -> list[str | None]:
    """Return the ``answer_group`` column, else ``answer_group`` from the ``meta`` JSON, else None."""
    if "answer_group" in frame.columns:
        return frame["answer_group"].cast(pl.String).to_list()
    if "meta" not in frame.columns or frame.schema["meta"] != pl.String:
        return [None] * frame.height
    meta = pl.col("meta").fill_null("{}")
    return frame.select(meta.str.json_path_match("$.answer_group")).to_series().to_list()


def _answers_and_groups(frame: pl.DataFrame) -> tuple[list[str | None], list[str]]:
    group_ids = _group_ids(frame)
    prompts = frame["prompt"].to_list() if "prompt" in frame.columns else [None] * frame.height
    tasks = frame["task"].to_list() if "task" in frame.columns else [None] * frame.height
    # Only math answers are compared: chat replies to one prompt may differ by design ("How old are you?").
    answers = [
        final_answer_key(response) if task == "math" else None for task, response in zip(tasks, frame["response"].to_list())
    ]
    return answers, [group_key(group, prompt) for group, prompt in zip(group_ids, prompts)]


def _peer_evidence(samples: pl.DataFrame, config: Stage2Config, peers: pl.DataFrame | None) -> list[str | None]:
    if not config.check_peer_answers or samples.height == 0:
        return [None] * samples.height
    answers, groups = _answers_and_groups(samples)
    extra_answers, extra_groups = _answers_and_groups(peers) if peers is not None else ([], [])
    found = peer_disagreements(
        answers, groups, extra_answers, extra_groups, config.min_peer_answers, config.min_peer_majority
    )
    return [None if evidence is None else to_json(evidence) for evidence in found]


def score_stage2(
    samples: pl.DataFrame,
    config: Stage2Config,
    nli: NliScorer,
    embedder: Embedder | None,
    cache: MutableMapping[str, float] | None = None,
    peers: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Add the ``SCORE_COLUMNS`` to ``samples``; no row is dropped and no threshold is applied.

    ``cache`` maps ``pair_cache_key`` values to P(contradiction), so a rerun scores only new pairs.
    A cache with a ``prefetch(keys)`` method gets each chunk's keys in one call before scoring.
    ``peers`` holds more responses (columns ``response``, ``task`` and ``answer_group`` or ``prompt``) that
    count as peers in the answer-consensus check but are not themselves checked or returned.
    """
    started = time.perf_counter()
    if embedder is None:
        log.warning("stage 2 runs without an embedder: every sentence pair is scored, expect more false contradictions")
    planner = _make_planner(config, nli)
    rows = samples.select("prompt", "response", *(["lang"] if "lang" in samples.columns else [])).to_dicts()
    scored: list[dict] = []
    pairs_total = 0
    for begin in range(0, len(rows), config.samples_per_chunk):
        plans = _plan_chunk(rows[begin : begin + config.samples_per_chunk], config, planner, embedder)
        chunk_rows = _score_rows(plans, nli, config, cache)
        scored.extend(chunk_rows)
        pairs_total += sum(row["nli_pairs_scored"] for row in chunk_rows)
        log.info("stage 2 scored %d / %d samples, %d sentence pairs so far", len(scored), len(rows), pairs_total)

    for row, arithmetic, peers in zip(scored, _arithmetic_errors(samples, config), _peer_evidence(samples, config, peers)):
        row["arithmetic_error"] = arithmetic
        row["peer_disagreement"] = peers

    elapsed = time.perf_counter() - started
    log.info(
        "stage 2 scoring done: %d samples, %d sentence pairs (%d directed) in %.1f s, %.1f directed pairs/s",
        len(rows),
        pairs_total,
        2 * pairs_total,
        elapsed,
        2 * pairs_total / elapsed if elapsed > 0 else 0.0,
    )
    columns = pl.DataFrame(scored, schema=SCORE_COLUMNS, orient="row") if scored else pl.DataFrame(schema=SCORE_COLUMNS)
    return pl.concat([samples.drop([c for c in SCORE_COLUMNS if c in samples.columns]), columns], how="horizontal")


def decide_stage2(scored: pl.DataFrame, config: Stage2Config) -> StageResult:
    """Apply the thresholds to scored samples: reject contradictions and errors, label the rest.

    Reads ``max_contradiction_prob``, ``check_arithmetic`` and ``check_peer_answers``; the model is
    not run. A sample gets one reason, the first that applies: ``error_<Name>``,
    ``false_arithmetic``, ``contradiction``, ``peer_disagreement``.
    """
    errored = pl.col("nli_error").is_not_null()
    arithmetic = ~errored & pl.col("arithmetic_error").is_not_null() & pl.lit(config.check_arithmetic)
    contradiction = ~errored & ~arithmetic & (pl.col("max_contradiction_prob") >= config.max_contradiction_prob).fill_null(False)
    peer = (
        ~errored & ~arithmetic & ~contradiction & pl.col("peer_disagreement").is_not_null() & pl.lit(config.check_peer_answers)
    )
    flagged = arithmetic | contradiction | peer

    error_ledger = ledger_rows(
        scored.filter(errored),
        stage=STAGE,
        filter_name=FILTER,
        reason=pl.lit("error_") + pl.col("nli_error").str.extract(r"^(\w+)", 1),
        detail=pl.col("nli_error"),
    )
    arithmetic_ledger = ledger_rows(
        scored.filter(arithmetic), stage=STAGE, filter_name="arithmetic_claims", reason="false_arithmetic", detail=pl.col("arithmetic_error")
    )
    contradiction_ledger = ledger_rows(
        scored.filter(contradiction),
        stage=STAGE,
        filter_name=FILTER,
        reason="contradiction",
        score=pl.col("max_contradiction_prob"),
        threshold=config.max_contradiction_prob,
        detail=pl.col("nli_evidence"),
    )
    peer_ledger = ledger_rows(
        scored.filter(peer),
        stage=STAGE,
        filter_name="peer_answers",
        reason="peer_disagreement",
        score=pl.col("peer_disagreement").str.json_path_match("$.majority_share").cast(pl.Float64),
        threshold=config.min_peer_majority,
        detail=pl.col("peer_disagreement"),
    )

    status = (
        pl.when(pl.col("nli_pairs_scored") == 0)
        .then(pl.lit(STATUS_NOT_CHECKED))
        .when(pl.col("nli_unchecked_reason").is_not_null())
        .then(pl.lit(STATUS_UNCHECKED_TRUNCATED))
        .otherwise(pl.lit(STATUS_CONSISTENT))
    )
    kept = scored.filter(~errored & ~flagged).with_columns(status.alias("nli_status")).drop("nli_error")
    result = StageResult(
        kept=kept,
        rejected=concat_ledgers([error_ledger, arithmetic_ledger, contradiction_ledger, peer_ledger]),
        rows_in=scored.height,
    )
    log.info("stage 2 decision at max_contradiction_prob=%.2f: %s", config.max_contradiction_prob, result.summary())
    return result


def run_stage2(
    samples: pl.DataFrame,
    config: Stage2Config,
    nli: NliScorer,
    embedder: Embedder | None,
    cache: MutableMapping[str, float] | None = None,
    peers: pl.DataFrame | None = None,
) -> StageResult:
    """Score every sample with ``nli`` and reject the ones that contradict themselves.

    Kept rows gain ``nli_status`` ("consistent", "not_checked" or "unchecked_truncated") and the
    score columns of ``score_stage2`` except ``nli_error``. Rejected rows get reason
    ``false_arithmetic`` (detail: the false claim), ``contradiction`` (score: max P(contradiction),
    threshold: ``max_contradiction_prob``, detail: JSON evidence pair), ``peer_disagreement``
    (score: the majority's share, threshold: ``min_peer_majority``, detail: JSON answers) or
    ``error_<ExceptionName>``. ``peers`` are more responses that only vote in the peer check.
    """
    scored = score_stage2(samples, config, nli, embedder, cache, peers)
    return decide_stage2(scored, config)
