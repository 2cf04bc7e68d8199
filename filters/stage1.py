"""Stage 1: quality rules, exact dedup, MinHash near-dedup, optional semantic dedup and toxicity, in that order.

``run_stage1`` takes SAMPLE_SCHEMA rows and returns a ``StageResult``: each input row is kept or
has exactly one ledger row, from the first step that rejected it. The stored prompt and response
text is never rewritten; normalization only builds dedup keys.
"""

import logging
from collections.abc import MutableMapping
from dataclasses import dataclass

import polars as pl

from filters.dedup import CLUSTER_SCHEMA, DedupConfig, exact_dedup, near_dedup
from filters.quality import QualityConfig, apply_quality_rules
from filters.schema import SAMPLE_SCHEMA, StageResult, concat_ledgers
from filters.semantic_dedup import SemanticDedupConfig, semantic_dedup
from filters.toxicity import ToxicityConfig, ToxicityScorer, apply_toxicity

log = logging.getLogger(__name__)

STAGE = "stage1"


@dataclass(frozen=True)
class Stage1Config:
    """Every stage-1 threshold and setting. Lengths are in Python characters (code points).

    Quality:
        min_response_chars: shorter responses are rejected (``response_too_short``). Default 1,
            because one-character answers such as "7" or "是" are valid targets.
        max_response_chars: longer responses are rejected (``response_too_long``). 100,000
            characters is roughly 25,000 English tokens, longer than typical SFT responses, and far
            below the 20 MiB records that broken exports produce.
        max_prompt_chars: longer prompts are rejected (``prompt_too_long``). 200,000, so long
            context documents pass.
        max_duplicate_line_ratio: share of response characters in repeated lines. Default 0.5;
            HumanEval canonical solutions reach at most 0.17.
        max_duplicate_ngram_ratio: share of response tokens inside a repeated n-gram. Default
            0.8; HumanEval solutions reach 0.68 with word 8-grams, GSM-style answers 0.50 (Thai,
            character 15-grams), a looping response 1.0.
        repetition_ngram_words / repetition_ngram_chars: n-gram sizes of that rule, in words for
            spaced languages and in characters for Chinese, Japanese and Thai. 8 and 15, because
            word 5-grams count ordinary code idioms as repetition (HumanEval up to 0.70).
        max_symbol_ratio: share of non-space characters that are neither letters nor digits.
            Default 0.7; HumanEval solutions reach 0.42 and Chinese GSM-style answers 0.48.
    Dedup:
        near_duplicate_threshold: minimum estimated Jaccard of both the prompt and the response
            shingles. 0.5 catches texts with up to about 7% of their words edited (5% gives a
            word-5-gram Jaccard of about 0.63).
        num_perm, bands, rows: MinHash permutations and LSH banding. ``bands`` and ``rows`` left
            as ``None`` come from ``filters.minhash.lsh_parameters``: 42 x 3 at threshold 0.5.
        dedup_processes, dedup_batch_documents: worker processes that sign responses (1 signs in
            this process) and responses per batch sent to a worker. Results do not depend on them.
        word_shingle_size: words per shingle for spaced languages, 5.
        char_shingle_size: characters per shingle for Chinese, Japanese, Thai and similar, 3. On
            two Chinese answers that differ by one inserted character, character 3-gram Jaccard
            is 0.94 while unrelated Chinese answers share no 3-gram; larger n lowers the first
            (0.89 at n = 5) without a gain on the second.
        seed: seed of the MinHash permutations; outputs depend on nothing else random.
        survivor_rule: ``"quality_then_id"`` (highest quality_score, ties to the lowest
            sample_id) or ``"lowest_id"``.
        semantic_dedup: also remove samples whose prompt and response embeddings both reach
            ``min_semantic_cosine`` (reason ``semantic_duplicate``). Off by default because it
            runs the sentence embedder on every sample and compares all pairs.
    Toxicity:
        max_toxicity: rows whose response score is at or above this are rejected. 0.35: with
            alt-profanity-check 1.9.1 and 24-word windows, benign technical, medical and
            name-bearing answers score at most 0.14, a leetspeak insult 0.40 and a toxic
            sentence inside a long text at least 0.96.
        toxicity_chunk_tokens / toxicity_chunk_stride_tokens: window and stride in words
            (characters for spaceless languages), 24 and 12. alt-profanity-check dilutes one
            toxic sentence among benign words: in a 60-word window it scores 0.08.
    """

    min_response_chars: int = 1
    max_response_chars: int = 100_000
    max_prompt_chars: int = 200_000
    max_duplicate_line_ratio: float = 0.5
    max_duplicate_ngram_ratio: float = 0.8
    repetition_ngram_words: int = 8
    repetition_ngram_chars: int = 15
    max_symbol_ratio: float = 0.7
    near_duplicate_threshold: float = 0.5
    num_perm: int = 128
    bands: int | None = None
    rows: int | None = None
    word_shingle_size: int = 5
    char_shingle_size: int = 3
    seed: int = 1
    survivor_rule: str = "quality_then_id"
    dedup_processes: int = 1
    dedup_batch_documents: int = 20_000
    semantic_dedup: bool = False
    min_semantic_cosine: float = 0.95
    max_toxicity: float = 0.35
    toxicity_chunk_tokens: int = 24
    toxicity_chunk_stride_tokens: int = 12

    def __post_init__(self) -> None:
        # Building the step configs validates every field where its rule lives.
        self.quality_config()
        self.dedup_config()
        self.toxicity_config()
        self.semantic_dedup_config()

    def quality_config(self) -> QualityConfig:
        return QualityConfig(
            min_response_chars=self.min_response_chars,
            max_response_chars=self.max_response_chars,
            max_prompt_chars=self.max_prompt_chars,
            max_duplicate_line_ratio=self.max_duplicate_line_ratio,
            max_duplicate_ngram_ratio=self.max_duplicate_ngram_ratio,
            repetition_ngram_words=self.repetition_ngram_words,
            repetition_ngram_chars=self.repetition_ngram_chars,
            max_symbol_ratio=self.max_symbol_ratio,
        )

    def dedup_config(self) -> DedupConfig:
        return DedupConfig(
            near_duplicate_threshold=self.near_duplicate_threshold,
            num_perm=self.num_perm,
            bands=self.bands,
            rows=self.rows,
            word_shingle_size=self.word_shingle_size,
            char_shingle_size=self.char_shingle_size,
            seed=self.seed,
            survivor_rule=self.survivor_rule,
            processes=self.dedup_processes,
            batch_documents=self.dedup_batch_documents,
        )

    def semantic_dedup_config(self) -> SemanticDedupConfig:
        return SemanticDedupConfig(min_cosine=self.min_semantic_cosine, survivor_rule=self.survivor_rule)

    def toxicity_config(self) -> ToxicityConfig:
        return ToxicityConfig(
            max_toxicity=self.max_toxicity,
            chunk_tokens=self.toxicity_chunk_tokens,
            chunk_stride_tokens=self.toxicity_chunk_stride_tokens,
        )


def _check_input(samples: pl.DataFrame) -> None:
    missing = [name for name in SAMPLE_SCHEMA if name not in samples.columns]
    if missing:
        raise ValueError(f"stage 1 input is missing columns {missing}; it needs every SAMPLE_SCHEMA column.")
    duplicated = samples.filter(pl.col("sample_id").is_duplicated())["sample_id"].unique().sort().head(5).to_list()
    if duplicated:
        raise ValueError(f"sample_id must be unique in stage 1 input, but these repeat: {duplicated}")
    if samples["sample_id"].null_count():
        raise ValueError("sample_id must not be null in stage 1 input.")


def _point_to_final_survivor(earlier: pl.DataFrame, later: pl.DataFrame, reason: str) -> pl.DataFrame:
    """Point ledger rows of an earlier dedup step at the sample that was finally kept.

    A survivor of an earlier step can itself be removed by a later one (``reason``); the rows
    that named it then name the later survivor in ``duplicate_of`` and keep the direct match in
    ``detail``.
    """
    later_of = later.filter(pl.col("reason") == reason).select(
        pl.col("sample_id").alias("duplicate_of"), pl.col("duplicate_of").alias("_final")
    )
    if later_of.height == 0:
        return earlier
    return (
        earlier.join(later_of, on="duplicate_of", how="left", maintain_order="left")
        .with_columns(
            pl.when(pl.col("_final").is_not_null())
            .then(pl.format("{}, which is a {} of {}", pl.col("detail"), pl.lit(reason.replace("_", " ")), pl.col("_final")))
            .otherwise(pl.col("detail"))
            .alias("detail"),
            pl.coalesce("_final", "duplicate_of").alias("duplicate_of"),
        )
        .drop("_final")
    )


def run_stage1(
    samples: pl.DataFrame,
    config: Stage1Config,
    toxicity: ToxicityScorer,
    embedder=None,
    toxicity_cache: MutableMapping[str, float] | None = None,
) -> StageResult:
    """Run quality rules, exact dedup, near dedup, optional semantic dedup and toxicity on ``samples``.

    ``embedder`` (``filters.embed.Embedder``) is used only when ``config.semantic_dedup`` is set;
    when it is None the packaged default embedder is loaded. ``toxicity_cache`` keeps toxicity
    scores by content hash, so a rerun with another ``max_toxicity`` does not score again.

    Kept rows keep every input column, in input order, and gain ``quality_score``,
    ``shingle_kind``, ``toxicity_score``, ``toxicity_prompt_score``, ``toxicity_model``,
    ``toxicity_chunks`` and ``toxicity_applied``. ``tables["clusters"]`` lists every exact and
    near cluster of two or more samples. Raises ``ValueError`` for missing columns or repeated ids.
    """
    _check_input(samples)
    log.info("stage 1: %d samples in", samples.height)

    quality = apply_quality_rules(samples, config.quality_config(), stage=STAGE)
    exact = exact_dedup(quality.kept, config.survivor_rule, stage=STAGE)
    near = near_dedup(exact.kept, config.dedup_config(), stage=STAGE)
    semantic = near
    if config.semantic_dedup:
        if embedder is None:
            from filters.embed import load_embedder

            embedder = load_embedder()
        semantic = semantic_dedup(near.kept, embedder, config.semantic_dedup_config(), stage=STAGE)
    toxic = apply_toxicity(semantic.kept, toxicity, config.toxicity_config(), stage=STAGE, cache=toxicity_cache)

    exact_rejected = _point_to_final_survivor(exact.rejected, near.rejected, "near_duplicate")
    dedup_parts = [exact_rejected, near.rejected]
    clusters = [exact.tables["clusters"], near.tables["clusters"]]
    if semantic is not near:
        dedup_parts = [_point_to_final_survivor(part, semantic.rejected, "semantic_duplicate") for part in dedup_parts]
        dedup_parts.append(semantic.rejected)
        clusters.append(semantic.tables["clusters"])
    rejected = concat_ledgers([quality.rejected, *dedup_parts, toxic.rejected])
    clusters = pl.concat(clusters).cast(CLUSTER_SCHEMA)
    result = StageResult(kept=toxic.kept, rejected=rejected, tables={"clusters": clusters}, rows_in=samples.height)
    result.check_conservation(samples["sample_id"])
    log.info("stage 1: %d kept, rejected by reason %s", result.kept.height, result.reason_counts())
    return result
