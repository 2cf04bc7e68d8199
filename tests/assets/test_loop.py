"""Run three rounds of the loop through the real sensor with the tiny model."""

import pytest

from tests.conftest import project_instance
from tests.assets.conftest import SMALL_PACKAGED, curation_run_config, write_sources

LOOP_RUN_CONFIG = {
    "ops": {
        "training_mixture": {"config": {"samples_per_round": 48}},
        "trained_model": {"config": {"max_steps": 6, "batch_size": 4, "max_seq_len": 128}},
        "task_error_stats": {
            "config": {"max_eval_per_task": 8, "max_generate_per_task": 1, "max_new_tokens": 8, "max_seq_len": 128}
        },
    }
}


@pytest.fixture(scope="module")
def loop_run(tmp_path_factory, nli_model_dir):
    from pipelines.cli import rounds_from_sensor
    from pipelines.definitions import build_definitions
    from pipelines.resources import CausalLM, NliModel
    from pipelines.warehouse import Warehouse

    tmp_path = tmp_path_factory.mktemp("loop")
    sources = write_sources(tmp_path, packaged=SMALL_PACKAGED)
    warehouse = Warehouse(path=str(tmp_path / "warehouse.duckdb"), lock_timeout_s=120)
    defs = build_definitions(
        max_rounds=3,
        warehouse=warehouse,
        nli_model=NliModel(model=str(nli_model_dir)),
        causal_lm=CausalLM(model="tiny", cache_dir=str(tmp_path / "models")),
    )
    run_config = {"ops": {**curation_run_config(sources)["ops"], **LOOP_RUN_CONFIG["ops"]}}
    # Checkpoints go under tmp_path, not the repository's outputs/.
    run_config["ops"]["trained_model"]["config"]["checkpoint_dir"] = str(tmp_path / "checkpoints")
    with project_instance(tmp_path / "dagster_home") as instance:
        curation = defs.resolve_job_def("curation_job").execute_in_process(
            instance=instance, run_config={"ops": curation_run_config(sources)["ops"]}
        )
        assert curation.success
        loop_job = defs.resolve_job_def("loop_job")
        loop_config = {"ops": {k: v for k, v in run_config["ops"].items() if k not in ("raw_samples", "evaluation_sets")}}
        instance.add_dynamic_partitions("round", ["0"])
        started_rounds, sensor_requests = [], []
        pending = ["0"]
        while pending:
            key = pending.pop(0)
            started_rounds.append(key)
            assert loop_job.execute_in_process(instance=instance, partition_key=key, run_config=loop_config).success
            requested = rounds_from_sensor(defs, instance)
            sensor_requests.append(requested)
            pending.extend(requested)
        yield {"warehouse": warehouse, "rounds": started_rounds, "requests": sensor_requests}


def test_sensor_runs_rounds_until_stop_rule(loop_run):
    assert loop_run["rounds"] == ["0", "1", "2"]
    assert loop_run["requests"] == [["1"], ["2"], []]


def test_feedback_has_one_row_per_task_per_round(loop_run):
    feedback = loop_run["warehouse"].query("SELECT round, task, count(*) AS n FROM feedback GROUP BY ALL")
    assert set(feedback["round"].to_list()) == {0, 1, 2}
    assert set(feedback["n"].to_list()) == {1}


def test_round_zero_weights_are_uniform(loop_run):
    weights = loop_run["warehouse"].query("SELECT weight FROM mixture_weights WHERE round = 0")["weight"].to_list()
    assert max(weights) - min(weights) < 1e-9


def test_round_two_weights_come_from_round_one_feedback(loop_run):
    """Recompute round 2's weights from round 1's feedback rows and compare with what the asset stored."""
    from trainer.mixing import MixingConfig, TaskSignal, compute_weights

    warehouse = loop_run["warehouse"]
    stored = warehouse.query("SELECT task, weight, source_round FROM mixture_weights WHERE round = 2")
    assert set(stored["source_round"].to_list()) == {1}
    previous = dict(warehouse.query("SELECT task, weight FROM mixture_weights WHERE round = 1").iter_rows())
    feedback = warehouse.query("SELECT task, n_eval, mean_loss, accuracy FROM feedback WHERE round = 1")
    signals = {r["task"]: TaskSignal(r["n_eval"], r["mean_loss"], r["accuracy"]) for r in feedback.iter_rows(named=True)}
    available = dict(warehouse.query("SELECT task, count(*) FROM selected_samples GROUP BY task").iter_rows())
    expected = compute_weights(previous, signals, available, MixingConfig()).weights
    for task, weight in stored.select("task", "weight").iter_rows():
        assert weight == pytest.approx(expected.get(task, 0.0), abs=1e-9), task


def test_round_two_moves_toward_round_one_worst_task(loop_run):
    warehouse = loop_run["warehouse"]
    feedback = warehouse.query("SELECT task, mean_loss FROM feedback WHERE round = 1 ORDER BY mean_loss")
    best, worst = feedback["task"][0], feedback["task"][-1]
    weights = warehouse.query("SELECT round, task, weight FROM mixture_weights WHERE round IN (1, 2)")
    w = {(r, t): v for r, t, v in weights.iter_rows()}
    assert w[(2, worst)] / w[(2, best)] > w[(1, worst)] / w[(1, best)]


def test_each_round_records_a_checkpoint(loop_run):
    checkpoints = loop_run["warehouse"].query("SELECT round, path, started_from FROM checkpoints ORDER BY round")
    assert checkpoints["round"].to_list() == [0, 1, 2]
    assert checkpoints["started_from"][0] == "tiny"
    assert checkpoints["started_from"][1] == checkpoints["path"][0]
