"""Run four rounds of the loop (round 0 and three rounds the sensor starts) with the tiny model."""

import pytest
from dagster import AssetKey

from pipelines.loop import RoundPolicy, stop_reason

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
        max_rounds=4,
        warehouse=warehouse,
        nli_model=NliModel(model=str(nli_model_dir)),
        causal_lm=CausalLM(model="tiny", cache_dir=str(tmp_path / "models")),
    )
    run_config = {"ops": {**curation_run_config(sources)["ops"], **LOOP_RUN_CONFIG["ops"]}}
    # Checkpoints go under tmp_path, not the repository's outputs/.
    run_config["ops"]["trained_model"]["config"]["checkpoint_dir"] = str(tmp_path / "checkpoints")
    run_config["ops"]["task_error_stats"]["config"]["plot_dir"] = str(tmp_path / "plots")
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
        stats_events = instance.fetch_materializations(AssetKey("task_error_stats"), limit=10).records
        metadata = {
            record.partition_key: record.asset_materialization.metadata for record in stats_events
        }
        yield {
            "warehouse": warehouse,
            "rounds": started_rounds,
            "requests": sensor_requests,
            "plot_dir": tmp_path / "plots",
            "stats_metadata": metadata,
        }


def test_sensor_runs_rounds_until_stop_rule(loop_run):
    assert loop_run["rounds"] == ["0", "1", "2", "3"]
    assert loop_run["requests"] == [["1"], ["2"], ["3"], []]


def test_feedback_has_one_row_per_task_per_round(loop_run):
    feedback = loop_run["warehouse"].query("SELECT round, task, count(*) AS n FROM feedback GROUP BY ALL")
    assert set(feedback["round"].to_list()) == {0, 1, 2, 3}
    assert set(feedback["n"].to_list()) == {1}


def test_feedback_has_evaluation_matrix_columns(loop_run):
    feedback = loop_run["warehouse"].query("SELECT * FROM feedback WHERE round = 3")
    for column in ("n_eval", "mean_loss", "accuracy", "latency_ms_per_sample", "generate_ms_per_sample", "peak_rss_mb"):
        assert column in feedback.columns, column
    assert feedback["n_eval"].min() > 0
    assert feedback["peak_rss_mb"].min() > 0


def test_round_zero_weights_are_uniform(loop_run):
    weights = loop_run["warehouse"].query("SELECT weight FROM mixture_weights WHERE round = 0")["weight"].to_list()
    assert max(weights) - min(weights) < 1e-9


def test_round_three_weights_come_from_round_two_feedback(loop_run):
    """Recompute round 3's weights from round 2's feedback rows and compare with what the asset stored."""
    from trainer.mixing import MixingConfig, TaskSignal, compute_weights

    warehouse = loop_run["warehouse"]
    stored = warehouse.query("SELECT task, weight, source_round FROM mixture_weights WHERE round = 3")
    assert set(stored["source_round"].to_list()) == {2}
    previous = dict(warehouse.query("SELECT task, weight FROM mixture_weights WHERE round = 2").iter_rows())
    feedback = warehouse.query("SELECT task, n_eval, mean_loss, accuracy FROM feedback WHERE round = 2")
    round_one = dict(warehouse.query("SELECT task, mean_loss FROM feedback WHERE round = 1").iter_rows())
    signals = {
        r["task"]: TaskSignal(r["n_eval"], r["mean_loss"], r["accuracy"], previous_loss=round_one.get(r["task"]))
        for r in feedback.iter_rows(named=True)
    }
    available = dict(warehouse.query("SELECT task, count(*) FROM selected_samples GROUP BY task").iter_rows())
    expected = compute_weights(previous, signals, available, MixingConfig()).weights
    for task, weight in stored.select("task", "weight").iter_rows():
        assert weight == pytest.approx(expected.get(task, 0.0), abs=1e-9), task


def test_round_three_signal_is_round_two_loss(loop_run):
    warehouse = loop_run["warehouse"]
    signal = dict(warehouse.query("SELECT task, signal FROM mixture_weights WHERE round = 3").iter_rows())
    loss = dict(warehouse.query("SELECT task, mean_loss FROM feedback WHERE round = 2").iter_rows())
    for task, value in loss.items():
        assert signal[task] == pytest.approx(value), task


def test_round_three_moves_toward_round_two_worst_task(loop_run):
    warehouse = loop_run["warehouse"]
    feedback = warehouse.query("SELECT task, mean_loss FROM feedback WHERE round = 2 ORDER BY mean_loss")
    best, worst = feedback["task"][0], feedback["task"][-1]
    weights = warehouse.query("SELECT round, task, weight FROM mixture_weights WHERE round IN (2, 3)")
    w = {(r, t): v for r, t, v in weights.iter_rows()}
    assert w[(3, worst)] / w[(3, best)] > w[(2, worst)] / w[(2, best)]


def test_each_round_records_a_checkpoint(loop_run):
    checkpoints = loop_run["warehouse"].query("SELECT round, path, started_from FROM checkpoints ORDER BY round")
    assert checkpoints["round"].to_list() == [0, 1, 2, 3]
    assert checkpoints["started_from"][0] == "tiny"
    assert checkpoints["started_from"][1] == checkpoints["path"][0]


def test_round_records_reproduce_each_round(loop_run):
    from trainer.data import sample_ids_sha256

    warehouse = loop_run["warehouse"]
    records = warehouse.query("SELECT * FROM round_records ORDER BY round")
    assert records["round"].to_list() == [0, 1, 2, 3]
    last = records.row(3, named=True)
    ids = warehouse.query("SELECT sample_id FROM training_mixture WHERE round = 3")["sample_id"].to_list()
    path = warehouse.query("SELECT path FROM checkpoints WHERE round = 3")["path"][0]
    assert last["sample_ids_sha256"] == sample_ids_sha256(ids)
    assert last["checkpoint_path"] == path
    assert last["rule"] == "multiplicative_weights"
    assert last["source_round"] == 2
    assert len(last["code_version"]) > 0
    assert last["train_steps_total"] == 4 * 6
    assert records["weight_change"][0] is None
    assert records["weight_change"][3] >= 0.0


def test_task_error_stats_metadata_has_plots(loop_run):
    metadata = loop_run["stats_metadata"]["3"]
    assert metadata["weights_plot"].value.startswith("![weights per round](data:image/png;base64,")
    assert metadata["task_loss_plot"].value.startswith("![task_loss per round](data:image/png;base64,")
    assert metadata["train_steps_total"].value == 24
    assert metadata["weight_change"].value >= 0.0


def test_plot_files_are_png(loop_run):
    for name in ("weights", "task_loss"):
        file = loop_run["plot_dir"] / f"round-3-{name}.png"
        assert file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_stop_rule_max_rounds():
    policy = RoundPolicy(max_rounds=4)
    assert stop_reason(2, policy) is None
    assert "max_rounds=4" in stop_reason(3, policy)


def test_stop_rule_compute_budget():
    policy = RoundPolicy(max_rounds=10, max_train_steps=100)
    assert stop_reason(1, policy, train_steps_total=99) is None
    assert "max_train_steps=100" in stop_reason(1, policy, train_steps_total=100)


def test_stop_rule_weights_stopped_moving():
    policy = RoundPolicy(max_rounds=10, min_weight_change=0.01)
    assert stop_reason(1, policy, weight_change=0.02) is None
    assert "stopped moving" in stop_reason(1, policy, weight_change=0.005)
    assert stop_reason(0, policy, weight_change=None) is None


def test_stop_rules_off_by_default():
    policy = RoundPolicy(max_rounds=10)
    assert stop_reason(5, policy, weight_change=0.0, train_steps_total=10**9) is None
