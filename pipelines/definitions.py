"""The Dagster definitions: assets, checks, jobs, sensors, schedules and resources."""

from dagster import Definitions, EnvVar

from assets.checks import conservation_checks, raw_samples_accounted_for
from assets.ingest import evaluation_sets, raw_samples
from assets.mixing import mixture_weights, training_mixture
from assets.stage1 import basic_filtered
from assets.stage2 import consistent_samples
from assets.stage3 import no_eval_contamination, selected_samples
from assets.training import task_error_stats, trained_model
from pipelines.loop import RoundPolicy, curation_job, curation_on_source_change, loop_job, next_round_sensor
from pipelines.resources import CausalLM, NliModel, SentenceEmbedder, ToxicityModel
from pipelines.warehouse import Warehouse


def build_definitions(max_rounds: int = 3, **resource_overrides) -> Definitions:
    """Build the definitions; ``max_rounds`` is the loop's stop rule.

    ``resource_overrides`` replace resources by key, e.g. a warehouse under a test's tmp_path.
    """
    resources = {
        "warehouse": Warehouse(),
        "toxicity_model": ToxicityModel(),
        "nli_model": NliModel(model=EnvVar("NLI_MODEL")),
        "sentence_embedder": SentenceEmbedder(),
        "causal_lm": CausalLM(),
        "round_policy": RoundPolicy(max_rounds=max_rounds),
    }
    unknown = sorted(set(resource_overrides) - set(resources))
    if unknown:
        raise ValueError(f"unknown resource keys {unknown}; valid keys are {sorted(resources)}")
    resources.update(resource_overrides)
    return Definitions(
        assets=[
            raw_samples,
            evaluation_sets,
            basic_filtered,
            consistent_samples,
            selected_samples,
            mixture_weights,
            training_mixture,
            trained_model,
            task_error_stats,
        ],
        asset_checks=[*conservation_checks, raw_samples_accounted_for, no_eval_contamination],
        jobs=[curation_job, loop_job],
        sensors=[next_round_sensor],
        schedules=[curation_on_source_change],
        resources=resources,
    )


defs = build_definitions()
