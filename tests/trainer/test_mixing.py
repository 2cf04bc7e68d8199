import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.mixing import MixingConfig, TaskSignal, compute_weights

# One round of feedback in which one task has no evaluation samples, one task has no rows
# and one task's loss is 4.5 times another's.
FEEDBACK_ROUND = json.loads(
    """
    {
      "previous_weights": {"math": 0.40, "code": 0.30, "chat": 0.20, "safety": 0.10},
      "per_task_eval": {
        "math":   {"n_eval": 200, "mean_loss": 0.90},
        "code":   {"n_eval": 150, "mean_loss": 0.20},
        "chat":   {"n_eval": 0,   "mean_loss": null},
        "safety": {"n_eval": 50,  "mean_loss": 0.20}
      },
      "available_rows": {"math": 5000, "code": 4000, "chat": 3000, "safety": 0}
    }
    """
)

# The same round, except that every task has the same evaluation result.
IDENTICAL_ROUND = {
    **FEEDBACK_ROUND,
    "per_task_eval": {task: {"n_eval": 100, "mean_loss": 0.5} for task in FEEDBACK_ROUND["previous_weights"]},
}


def decide(case: dict, config: MixingConfig = MixingConfig()):
    feedback = {task: TaskSignal(**values) for task, values in case["per_task_eval"].items()}
    return compute_weights(case["previous_weights"], feedback, case["available_rows"], config)


def test_degenerate_feedback_weights_sum_to_one():
    weights = decide(FEEDBACK_ROUND).weights
    for task, weight in weights.items():
        assert math.isfinite(weight), task
        assert 0.0 <= weight <= 1.0, task
    assert abs(sum(weights.values()) - 1.0) < 1e-9


def test_degenerate_feedback_carries_over_task_without_eval():
    """chat has n_eval=0, so its weight before normalization is its previous weight.

    Its ratio to code must then equal 0.2 / (code's updated weight), computed here by hand.
    """
    config = MixingConfig()
    decision = decide(FEEDBACK_ROUND, config)
    mean_loss = (0.90 + 0.20) / 2  # math and code are the tasks with data and a signal
    step = max(-config.max_step, config.eta * (0.20 / mean_loss - 1.0))
    code_updated = 0.30 / 0.90 * math.exp(step)
    chat_carried = 0.20 / 0.90
    assert decision.flags["chat"] == "no_signal"
    assert decision.signal["chat"] is None
    assert decision.weights["chat"] > 0.0
    assert decision.weights["chat"] < decision.settings["applied_max_weight"]
    assert decision.weights["chat"] / decision.weights["code"] == pytest.approx(chat_carried / code_updated)


def test_degenerate_feedback_gives_zero_to_task_without_rows():
    decision = decide(FEEDBACK_ROUND)
    assert decision.weights["safety"] == 0.0
    assert decision.flags["safety"] == "no_data"


def test_degenerate_feedback_moves_weight_toward_higher_loss():
    weights = decide(FEEDBACK_ROUND).weights
    assert weights["math"] / weights["code"] > 0.40 / 0.30


def test_degenerate_feedback_respects_floor_and_cap():
    """Defaults: floor 0.05 and cap 0.7. A smaller cap binds on math, whose raw update is about 0.78."""
    config = MixingConfig(max_weight=0.6)
    decision = decide(FEEDBACK_ROUND, config)
    assert MixingConfig().min_weight == 0.05
    assert MixingConfig().max_weight == 0.7
    for task in ("math", "code", "chat"):
        assert decision.weights[task] >= config.min_weight, task
        assert decision.weights[task] <= config.max_weight + 1e-12, task
    assert decision.weights["math"] == pytest.approx(config.max_weight)


def test_degenerate_feedback_large_eta_does_not_collapse():
    config = MixingConfig(eta=50.0, max_step=50.0)
    weights = decide(FEEDBACK_ROUND, config).weights
    assert weights["math"] <= config.max_weight + 1e-12
    assert weights["code"] >= config.min_weight - 1e-12
    assert weights["chat"] >= config.min_weight - 1e-12


def test_identical_signals_keep_previous_weights():
    decision = decide(IDENTICAL_ROUND)
    with_data_total = 0.40 + 0.30 + 0.20
    assert decision.weights["math"] == pytest.approx(0.40 / with_data_total, abs=1e-12)
    assert decision.weights["code"] == pytest.approx(0.30 / with_data_total, abs=1e-12)
    assert decision.weights["chat"] == pytest.approx(0.20 / with_data_total, abs=1e-12)
    assert decision.weights["safety"] == 0.0
    assert decision.flags["safety"] == "no_data"


def test_round_zero_is_uniform_over_tasks_with_data():
    decision = compute_weights(None, None, {"math": 10, "code": 5, "chat": 0})
    assert decision.weights["math"] == pytest.approx(0.5)
    assert decision.weights["code"] == pytest.approx(0.5)
    assert decision.weights["chat"] == 0.0
    assert decision.flags["math"] == "initial"
    assert decision.flags["chat"] == "no_data"


def test_higher_loss_task_gains_weight():
    previous = {"a": 0.5, "b": 0.5}
    feedback = {"a": TaskSignal(10, 2.0), "b": TaskSignal(10, 1.0)}
    weights = compute_weights(previous, feedback, {"a": 100, "b": 100}).weights
    assert weights["a"] > 0.5
    assert weights["b"] < 0.5


def test_accuracy_signal_favours_lower_accuracy():
    previous = {"a": 0.5, "b": 0.5}
    feedback = {"a": TaskSignal(10, None, accuracy=0.2), "b": TaskSignal(10, None, accuracy=0.8)}
    config = MixingConfig(signal="accuracy")
    weights = compute_weights(previous, feedback, {"a": 100, "b": 100}, config).weights
    assert weights["a"] > weights["b"]


def test_nan_loss_is_treated_as_no_signal():
    previous = {"a": 0.5, "b": 0.5}
    feedback = {"a": TaskSignal(10, float("nan")), "b": TaskSignal(10, 1.0)}
    decision = compute_weights(previous, feedback, {"a": 100, "b": 100})
    assert decision.flags["a"] == "no_signal"
    assert decision.weights["a"] == pytest.approx(0.5)
    assert math.isfinite(decision.weights["b"])


def test_new_task_starts_at_uniform_share():
    previous = {"a": 0.7, "b": 0.3}
    decision = compute_weights(previous, None, {"a": 100, "b": 100, "c": 100})
    assert decision.flags["c"] == "initial"
    assert decision.weights["c"] == pytest.approx(1.0 / 3.0)
    assert decision.weights["a"] / decision.weights["b"] == pytest.approx(0.7 / 0.3)


def test_proportional_rule_follows_available_rows():
    config = MixingConfig(rule="proportional", min_weight=0.0, max_weight=1.0)
    weights = compute_weights(None, None, {"a": 300, "b": 100, "c": 0}, config).weights
    assert weights["a"] == pytest.approx(0.75)
    assert weights["b"] == pytest.approx(0.25)
    assert weights["c"] == 0.0


def test_uniform_rule_ignores_feedback():
    config = MixingConfig(rule="uniform")
    feedback = {"a": TaskSignal(10, 5.0), "b": TaskSignal(10, 0.1)}
    weights = compute_weights({"a": 0.9, "b": 0.1}, feedback, {"a": 1, "b": 1}, config).weights
    assert weights["a"] == pytest.approx(0.5)
    assert weights["b"] == pytest.approx(0.5)


def test_single_task_gets_all_weight_despite_cap():
    decision = compute_weights(None, None, {"a": 5, "b": 0})
    assert decision.weights["a"] == pytest.approx(1.0)
    assert decision.settings["applied_max_weight"] == pytest.approx(1.0)


def test_infeasible_floor_is_lowered_to_half_of_uniform():
    config = MixingConfig(min_weight=0.4, max_weight=0.6)
    decision = compute_weights(None, None, {"a": 1, "b": 1, "c": 1}, config)
    assert decision.settings["applied_min_weight"] == pytest.approx(0.5 / 3.0)
    assert sum(decision.weights.values()) == pytest.approx(1.0)


def test_default_floor_does_not_pin_twenty_tasks_to_uniform():
    available = {f"t{i:02d}": 10 ** (i % 6) for i in range(20)}
    weights = compute_weights(None, None, available, MixingConfig(rule="proportional")).weights
    assert max(weights.values()) > 2 * min(weights.values())
    assert sum(weights.values()) == pytest.approx(1.0)


def test_no_task_with_rows_raises():
    with pytest.raises(ValueError, match="no task has available rows"):
        compute_weights({"a": 1.0}, None, {"a": 0})


def test_smoothing_keeps_part_of_previous_weights():
    previous = {"a": 0.5, "b": 0.5}
    feedback = {"a": TaskSignal(10, 2.0), "b": TaskSignal(10, 1.0)}
    full = compute_weights(previous, feedback, {"a": 1, "b": 1}).weights
    damped = compute_weights(previous, feedback, {"a": 1, "b": 1}, MixingConfig(smoothing=0.5)).weights
    assert 0.5 < damped["a"] < full["a"]


def test_loss_change_signal_favours_stalled_task():
    """a's loss did not move, b's fell by 0.5: a gains weight although its loss is lower."""
    previous = {"a": 0.5, "b": 0.5}
    feedback = {
        "a": TaskSignal(10, 1.0, previous_loss=1.0),
        "b": TaskSignal(10, 1.5, previous_loss=2.0),
    }
    config = MixingConfig(signal="loss_change")
    decision = compute_weights(previous, feedback, {"a": 100, "b": 100}, config)
    assert decision.signal["a"] == pytest.approx(0.0)
    assert decision.signal["b"] == pytest.approx(-0.5)
    assert decision.weights["a"] > decision.weights["b"]


def test_loss_change_without_previous_loss_is_no_signal():
    feedback = {"a": TaskSignal(10, 1.0), "b": TaskSignal(10, 1.5, previous_loss=2.0)}
    config = MixingConfig(signal="loss_change")
    decision = compute_weights({"a": 0.5, "b": 0.5}, feedback, {"a": 1, "b": 1}, config)
    assert decision.flags["a"] == "no_signal"
    assert decision.flags["b"] == "ok"


def test_excess_loss_signal_uses_reference_loss():
    """a's loss is higher, but b is further above its reference, so b gains weight."""
    feedback = {
        "a": TaskSignal(10, 3.0, reference_loss=2.9),
        "b": TaskSignal(10, 2.0, reference_loss=1.0),
    }
    config = MixingConfig(signal="excess_loss")
    decision = compute_weights({"a": 0.5, "b": 0.5}, feedback, {"a": 1, "b": 1}, config)
    assert decision.signal["b"] == pytest.approx(1.0)
    assert decision.weights["b"] > decision.weights["a"]


def test_exp3_moves_toward_higher_loss():
    previous = {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}
    feedback = {"a": TaskSignal(10, 3.0), "b": TaskSignal(10, 2.0), "c": TaskSignal(10, 1.0)}
    config = MixingConfig(rule="exp3", eta=0.5)
    weights = compute_weights(previous, feedback, {"a": 1, "b": 1, "c": 1}, config).weights
    assert weights["a"] > weights["b"]
    assert weights["b"] > weights["c"]
    assert weights["c"] >= config.exploration / 3 - 1e-12


def test_exp3_rarely_sampled_task_takes_larger_step():
    """Same reward for a and b, but a was sampled less, so EXP3's importance weighting raises a's ratio."""
    previous = {"a": 0.2, "b": 0.4, "c": 0.4}
    feedback = {"a": TaskSignal(10, 3.0), "b": TaskSignal(10, 3.0), "c": TaskSignal(10, 1.0)}
    config = MixingConfig(rule="exp3", exploration=0.0, eta=0.5, max_step=10.0, max_change=1.0)
    weights = compute_weights(previous, feedback, {"a": 1, "b": 1, "c": 1}, config).weights
    assert weights["a"] / weights["b"] > 0.2 / 0.4


def test_max_change_limits_one_round_move():
    previous = {"a": 0.5, "b": 0.5}
    feedback = {"a": TaskSignal(10, 10.0), "b": TaskSignal(10, 0.1)}
    config = MixingConfig(eta=20.0, max_step=20.0, min_weight=0.0, max_weight=1.0, max_change=0.1)
    weights = compute_weights(previous, feedback, {"a": 1, "b": 1}, config).weights
    assert weights["a"] == pytest.approx(0.6)
    assert weights["b"] == pytest.approx(0.4)


def test_smoothing_applies_to_static_rule():
    config = MixingConfig(rule="uniform", smoothing=0.5, max_weight=0.8)
    weights = compute_weights({"a": 0.8, "b": 0.2}, None, {"a": 1, "b": 1}, config).weights
    assert weights["a"] == pytest.approx(0.65)
    assert weights["b"] == pytest.approx(0.35)


def test_static_rules_ignore_previous_without_rails():
    config = MixingConfig(rule="proportional", min_weight=0.0, max_weight=1.0)
    weights = compute_weights({"a": 0.5, "b": 0.5}, None, {"a": 300, "b": 100}, config).weights
    assert weights["a"] == pytest.approx(0.75)
    assert weights["b"] == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("rule", "softmax", "not a known rule"),
        ("signal", "perplexity", "not a known signal"),
        ("eta", -0.1, "outside"),
        ("eta", float("nan"), "finite"),
        ("min_weight", 1.0, "outside"),
        ("max_weight", 0.0, "outside"),
        ("max_step", 0.0, "outside"),
        ("smoothing", 1.0, "outside"),
        ("max_change", 0.0, "outside"),
        ("exploration", 1.0, "outside"),
    ],
)
def test_mixing_config_rejects_invalid_value(field, value, message):
    with pytest.raises(ValueError, match=message):
        MixingConfig(**{field: value})


def test_mixing_config_rejects_floor_above_cap():
    with pytest.raises(ValueError, match="larger than max_weight"):
        MixingConfig(min_weight=0.5, max_weight=0.4)


def test_task_signal_rejects_negative_count():
    with pytest.raises(ValueError, match="n_eval"):
        TaskSignal(n_eval=-1, mean_loss=1.0)


def test_negative_available_rows_raises():
    with pytest.raises(ValueError, match="available"):
        compute_weights(None, None, {"a": -3})


task_names = st.sampled_from([f"task{i}" for i in range(8)])
losses = st.one_of(
    st.none(),
    st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
    st.just(float("nan")),
    st.just(float("inf")),
)


@settings(max_examples=300, deadline=None)
@given(
    previous=st.dictionaries(task_names, st.floats(min_value=0.0, max_value=10.0), max_size=8),
    feedback=st.dictionaries(
        task_names, st.tuples(st.integers(min_value=0, max_value=1000), losses), max_size=8
    ),
    available=st.dictionaries(task_names, st.integers(min_value=0, max_value=10_000), min_size=1, max_size=8),
    eta=st.floats(min_value=0.0, max_value=20.0),
    min_weight=st.floats(min_value=0.0, max_value=0.3),
    max_weight=st.floats(min_value=0.3, max_value=1.0),
    rule=st.sampled_from(["multiplicative_weights", "exp3", "uniform", "proportional"]),
    signal=st.sampled_from(["loss", "loss_change", "excess_loss"]),
    max_change=st.floats(min_value=0.01, max_value=1.0),
    smoothing=st.floats(min_value=0.0, max_value=0.9),
    other_loss=losses,
)
def test_weights_stay_valid_for_random_signals(
    previous, feedback, available, eta, min_weight, max_weight, rule, signal, max_change, smoothing, other_loss
):
    with_data = [task for task, rows in available.items() if rows > 0]
    if not with_data:
        return
    config = MixingConfig(
        rule=rule,
        signal=signal,
        eta=eta,
        min_weight=min_weight,
        max_weight=max_weight,
        max_step=5.0,
        max_change=max_change,
        smoothing=smoothing,
    )
    signals = {
        task: TaskSignal(n, loss, previous_loss=other_loss, reference_loss=other_loss)
        for task, (n, loss) in feedback.items()
    }
    decision = compute_weights(previous, signals, available, config)

    weights = decision.weights
    assert all(math.isfinite(weight) for weight in weights.values())
    assert abs(sum(weights.values()) - 1.0) < 1e-9
    for task, weight in weights.items():
        if available.get(task, 0) == 0:
            assert weight == 0.0, task
    k = len(with_data)
    if min_weight * k < 1.0 <= max_weight * k:
        for task in with_data:
            assert min_weight - 1e-12 <= weights[task] <= max_weight + 1e-12, task
