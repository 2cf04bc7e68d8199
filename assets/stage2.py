"""Stage 2: logical consistency with an NLI cross-encoder, an arithmetic check and answer consensus."""

import time

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.common import record_stage
from filters.stage2 import Stage2Config, run_stage2
from pipelines.resources import NliModel, SentenceEmbedder
from pipelines.score_cache import SCORE_CACHE_TABLE, WarehouseScoreCache
from pipelines.warehouse import Warehouse


class Stage2Settings(Config):
    max_contradiction_prob: float = Field(
        default=Stage2Config.max_contradiction_prob,
        description="Samples with any checked sentence pair at or above this contradiction probability are rejected.",
    )
    check_arithmetic: bool = Field(
        default=Stage2Config.check_arithmetic,
        description="Reject responses that state a false computation such as 17 + 25 = 43 (not read in code samples).",
    )
    check_peer_answers: bool = Field(
        default=Stage2Config.check_peer_answers,
        description="Reject a math answer when at least min_peer_majority of the other answered responses to the "
        "same problem agree on a different one.",
    )
    min_peer_answers: int = Field(
        default=Stage2Config.min_peer_answers,
        description="Other answered responses a problem needs before they can outvote a response.",
    )
    min_peer_majority: float = Field(
        default=Stage2Config.min_peer_majority,
        description="Share of those responses that must agree on a different answer, in (0, 1].",
    )
    use_score_cache: bool = Field(
        default=True,
        description=f"Reuse NLI scores stored in the warehouse table {SCORE_CACHE_TABLE} and store new ones, "
        "so a rerun scores only sentence pairs it has not seen.",
    )


@asset(group_name="curation", deps=["basic_filtered"], kinds={"duckdb", "pytorch"})
def consistent_samples(
    context: AssetExecutionContext,
    config: Stage2Settings,
    warehouse: Warehouse,
    nli_model: NliModel,
    sentence_embedder: SentenceEmbedder,
) -> MaterializeResult:
    """Samples from stage 1 whose reasoning does not contradict itself, its final answer, the prompt's
    premises, the arithmetic it states, or the answer most other responses to the same problem reach."""
    samples = warehouse.read_table("basic_filtered")
    started = time.perf_counter()
    context.log.info(f"stage 2 on {samples.height} samples with NLI model {nli_model.model}")
    cache = WarehouseScoreCache(warehouse) if config.use_score_cache else None
    result = run_stage2(
        samples,
        Stage2Config(
            max_contradiction_prob=config.max_contradiction_prob,
            check_arithmetic=config.check_arithmetic,
            check_peer_answers=config.check_peer_answers,
            min_peer_answers=config.min_peer_answers,
            min_peer_majority=config.min_peer_majority,
        ),
        nli_model.load(),
        sentence_embedder.load(),
        cache,
    )
    result.check_conservation(samples["sample_id"])
    metadata = record_stage(
        warehouse, result, stage="stage2", output_table="consistent_samples", run_id=context.run_id,
        seconds=time.perf_counter() - started,
    )
    if cache is not None:
        # Written after the stage's own tables, so a failed run stores no scores.
        metadata["directed_pairs_from_cache"] = cache.hits
        metadata["directed_pairs_scored_new"] = cache.flush()
    if result.kept.height:
        status = {k: int(v) for k, v in result.kept.group_by("nli_status").len().iter_rows()}
        metadata["nli_status"] = MetadataValue.json(status)
        metadata["pairs_scored"] = int(result.kept["nli_pairs_scored"].sum() or 0)
    metadata["nli_model"] = nli_model.model
    return MaterializeResult(metadata=metadata)
