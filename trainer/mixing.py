"""Per-task mixture weights for round r, computed from round r-1's evaluation feedback.

The default rule is a multiplicative weights update, as surveyed by Arora, Hazan and Kale (2012, "The
Multiplicative Weights Update Method: a Meta-Algorithm and Applications", Theory of Computing 8). Each
task's weight is multiplied by ``exp(eta * s)``, where ``s`` grows with the task's error. So the next
round samples more from the tasks the model still gets wrong. DoReMi (Xie et al. 2023, "DoReMi: Optimizing Data Mixtures
Speeds Up Language Model Pretraining") applies the same update per domain with the excess loss over a
reference model as the gain, and mixes the result with the uniform distribution.

This module departs from both in these ways:

- The gain is relative: ``s_i = signal_i / mean(signal over tasks with a signal) - 1``. Identical
  signals give ``s = 0`` and leave the mixture where it was, and the update does not depend on the
  scale of the loss. There is no reference model, so there is no excess loss.
- ``eta * s`` is clipped to ``[-max_step, max_step]``, which bounds how far one round can move a task.
- The result is clipped to ``[min_weight, max_weight]`` by proportional water-filling, so that no task
  is starved and no task takes the whole mixture. Without bounds, a task whose error stays highest
  for a few rounds pulls the mixture toward one-hot.
- ``smoothing`` mixes the update with the previous weights, not with the uniform distribution, so
  that identical signals still leave the mixture unchanged.
- A task without an evaluation signal keeps its previous weight before renormalization, and a task
  without available rows gets weight exactly 0.

The module is pure Python: it imports neither torch nor polars.
"""

import logging
import math
from dataclasses import asdict, dataclass, field

log = logging.getLogger(__name__)

RULES = ("multiplicative_weights", "uniform", "proportional")
SIGNALS = ("loss", "accuracy")

FLAG_OK = "ok"
FLAG_NO_SIGNAL = "no_signal"
FLAG_NO_DATA = "no_data"
FLAG_INITIAL = "initial"


@dataclass(frozen=True)
class MixingConfig:
    """Settings of the mixture update.

    rule: "multiplicative_weights" (feedback-driven), or the baselines "uniform" (equal weight per
        task with data) and "proportional" (weight proportional to available rows).
    signal: "loss" uses the mean response-token loss, "accuracy" uses the error rate 1 - accuracy.
        Either way, a higher error gives more weight.
    eta: step size of the multiplicative update, >= 0. At 0 the mixture never moves.
    min_weight: floor for every task with data, in [0, 1). The default 0.05 keeps a task in the mixture
        even when the model already does well on it.
    max_weight: cap for every task, in (0, 1]. The default 0.6 keeps at least 40% of the mixture for
        the other tasks.
    max_step: maximum absolute value of ``eta * s`` for one task in one round, > 0. The default 1.0
        limits one round to a factor of e in either direction before renormalization.
    smoothing: share of the previous weights mixed into the updated weights, in [0, 1). 0 applies the
        full update.
    seed: recorded in ``settings`` for provenance. None of the rules draws random numbers.

    The bounds apply to every rule. Set min_weight=0 and max_weight=1 for unclipped baselines. When the
    bounds cannot hold for k tasks with data (min_weight * k > 1 or max_weight * k < 1), the floor is
    lowered or the cap raised to 1/k, and ``settings`` records the bounds that were used.
    """

    rule: str = "multiplicative_weights"
    signal: str = "loss"
    eta: float = 1.0
    min_weight: float = 0.05
    max_weight: float = 0.6
    max_step: float = 1.0
    smoothing: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"MixingConfig.rule={self.rule!r} is not a known rule; use one of {list(RULES)}")
        if self.signal not in SIGNALS:
            raise ValueError(f"MixingConfig.signal={self.signal!r} is not a known signal; use one of {list(SIGNALS)}")
        _require_finite_in("eta", self.eta, 0.0, math.inf, "use 0 to freeze the mixture, 0.1-2 for an update")
        _require_finite_in("min_weight", self.min_weight, 0.0, 1.0, "use a floor such as 0.05", upper_open=True)
        _require_finite_in("max_weight", self.max_weight, 0.0, 1.0, "use a cap such as 0.6", lower_open=True)
        if self.min_weight > self.max_weight:
            raise ValueError(
                f"MixingConfig.min_weight={self.min_weight} is larger than max_weight={self.max_weight}; "
                "set min_weight <= max_weight"
            )
        _require_finite_in("max_step", self.max_step, 0.0, math.inf, "use a value such as 1.0", lower_open=True)
        _require_finite_in("smoothing", self.smoothing, 0.0, 1.0, "use 0 for the full update", upper_open=True)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"MixingConfig.seed={self.seed!r} is invalid; use an int")


def _require_finite_in(
    name: str, value: float, low: float, high: float, hint: str, lower_open: bool = False, upper_open: bool = False
) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"MixingConfig.{name}={value!r} is invalid; it must be a finite number ({hint})")
    too_low = value <= low if lower_open else value < low
    too_high = value >= high if upper_open else value > high
    if too_low or too_high:
        left = "(" if lower_open else "["
        right = ")" if upper_open else "]"
        raise ValueError(f"MixingConfig.{name}={value} is outside {left}{low}, {high}{right}; {hint}")


@dataclass(frozen=True)
class TaskSignal:
    """One task's evaluation result from the previous round.

    n_eval: number of evaluation samples, >= 0.
    mean_loss: token-weighted mean response-token cross-entropy in nats, >= 0, or None when not measured.
    accuracy: share of generated outputs that the task's scorer accepted, in [0, 1], or None.

    NaN and infinite values are kept as given. ``compute_weights`` treats them as a missing signal and
    flags the task ``no_signal``, because one bad evaluation must not stop the next round.
    """

    n_eval: int
    mean_loss: float | None = None
    accuracy: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.n_eval, bool) or not isinstance(self.n_eval, int) or self.n_eval < 0:
            raise ValueError(f"TaskSignal.n_eval={self.n_eval!r} is invalid; use an int >= 0")
        if self.mean_loss is not None and self.mean_loss < 0:
            raise ValueError(f"TaskSignal.mean_loss={self.mean_loss} is negative; a cross-entropy is >= 0")
        if self.accuracy is not None and not (0.0 <= self.accuracy <= 1.0) and not math.isnan(self.accuracy):
            raise ValueError(f"TaskSignal.accuracy={self.accuracy} is outside [0, 1]")


@dataclass(frozen=True)
class MixingDecision:
    """The weights for one round and how they were reached.

    weights: task -> weight. Weights sum to 1, and a task without available rows has weight 0.
    signal: task -> the error value read from the feedback (loss, or 1 - accuracy), None when it was
        missing, NaN or infinite. Only tasks with data use it.
    flags: task -> "ok", "no_signal" (weight carried over), "no_data" (weight 0) or "initial"
        (no previous weight, so the task started from the uniform share).
    rule: the rule that produced the weights.
    settings: the configuration, plus the bounds actually applied ("applied_min_weight",
        "applied_max_weight").
    """

    weights: dict[str, float]
    signal: dict[str, float | None]
    flags: dict[str, str]
    rule: str
    settings: dict = field(default_factory=dict)


def compute_weights(
    previous: dict[str, float] | None,
    feedback: dict[str, TaskSignal] | None,
    available: dict[str, int],
    config: MixingConfig = MixingConfig(),
) -> MixingDecision:
    """Compute the mixture weights for the next round.

    previous: last round's weights, or None in round 0. A task that is missing here or has weight 0
        starts from the uniform share 1/k, where k is the number of tasks with data.
    feedback: last round's per-task evaluation, or None when there is none.
    available: task -> number of rows the sampler can draw from. A task with 0 rows gets weight 0.

    Every task named in any of the three mappings appears in the result. Raises ValueError when no
    task has available rows, because no mixture can sum to 1 then.
    """
    previous = previous or {}
    feedback = feedback or {}
    _validate_inputs(previous, available)

    tasks = sorted(set(previous) | set(feedback) | set(available))
    with_data = [task for task in tasks if available.get(task, 0) > 0]
    if not with_data:
        raise ValueError(
            f"no task has available rows (available={available}); add samples before computing a mixture"
        )
    floor, cap = _applied_bounds(config, len(with_data))

    signals = {task: _error_signal(feedback.get(task), config.signal) for task in tasks}
    flags = {task: FLAG_NO_DATA for task in tasks}
    if config.rule == "uniform":
        raw = {task: 1.0 for task in with_data}
        flags.update({task: FLAG_OK for task in with_data})
    elif config.rule == "proportional":
        raw = {task: float(available[task]) for task in with_data}
        flags.update({task: FLAG_OK for task in with_data})
    else:
        raw = _multiplicative_update(previous, signals, with_data, config, flags)

    clipped = _clip_to_bounds(raw, floor, cap)
    weights = {task: clipped.get(task, 0.0) for task in tasks}
    settings = asdict(config) | {"applied_min_weight": floor, "applied_max_weight": cap}
    log.info(
        "mixture weights (%s, %d tasks with data of %d): %s; flags %s",
        config.rule,
        len(with_data),
        len(tasks),
        {task: round(weight, 4) for task, weight in weights.items()},
        flags,
    )
    return MixingDecision(weights=weights, signal=signals, flags=flags, rule=config.rule, settings=settings)


def _validate_inputs(previous: dict[str, float], available: dict[str, int]) -> None:
    for task, rows in available.items():
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
            raise ValueError(f"available[{task!r}]={rows!r} is invalid; use the row count, an int >= 0")
    for task, weight in previous.items():
        if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ValueError(
                f"previous[{task!r}]={weight!r} is invalid; previous weights must be finite and >= 0"
            )


def _applied_bounds(config: MixingConfig, k: int) -> tuple[float, float]:
    floor, cap = config.min_weight, config.max_weight
    if floor * k > 1.0:
        log.warning("min_weight=%s is infeasible for %d tasks with data; using the floor 1/%d", floor, k, k)
        floor = 1.0 / k
    if cap * k < 1.0:
        log.warning("max_weight=%s is infeasible for %d tasks with data; using the cap 1/%d", cap, k, k)
        cap = 1.0 / k
    return floor, cap


def _error_signal(signal: TaskSignal | None, kind: str) -> float | None:
    """Return the error value of one task (higher means worse), or None when there is no usable value."""
    if signal is None or signal.n_eval == 0:
        return None
    if kind == "loss":
        value = signal.mean_loss
    elif signal.accuracy is None:
        value = None
    else:
        value = 1.0 - signal.accuracy
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _multiplicative_update(
    previous: dict[str, float],
    signals: dict[str, float | None],
    with_data: list[str],
    config: MixingConfig,
    flags: dict[str, str],
) -> dict[str, float]:
    """Return unnormalized weights ``base * exp(clip(eta * s))`` for the tasks with data and set their flags."""
    uniform = 1.0 / len(with_data)
    measured = [signals[task] for task in with_data if signals[task] is not None]
    mean_signal = sum(measured) / len(measured) if measured else 0.0

    # Tasks that had a weight last round keep their ratios to each other, renormalized over the tasks
    # with data. New tasks, and tasks that had weight 0, start at the uniform share 1/k.
    returning = [task for task in with_data if previous.get(task, 0.0) > 0]
    returning_total = sum(previous[task] for task in returning)
    returning_share = 1.0 - uniform * (len(with_data) - len(returning))

    raw: dict[str, float] = {}
    for task in with_data:
        value = signals[task]
        if task in returning:
            base = previous[task] / returning_total * returning_share
            flags[task] = FLAG_OK if value is not None else FLAG_NO_SIGNAL
        else:
            base = uniform
            flags[task] = FLAG_INITIAL

        gain = 0.0
        if value is not None and mean_signal > 0:
            gain = value / mean_signal - 1.0
        step = max(-config.max_step, min(config.max_step, config.eta * gain))
        updated = base * math.exp(step)
        raw[task] = (1.0 - config.smoothing) * updated + config.smoothing * base

    return raw


def _clip_to_bounds(raw: dict[str, float], floor: float, cap: float) -> dict[str, float]:
    """Scale ``raw`` by one factor and clip each weight to [floor, cap] so that the weights sum to 1.

    This is water-filling: the weights are ``clip(lam * raw_i, floor, cap)`` with the one ``lam`` that
    makes them sum to 1. The sum is piecewise linear and non-decreasing in ``lam``, with breakpoints at
    ``floor / raw_i`` and ``cap / raw_i``, so ``lam`` is solved exactly on the right segment. Tasks that
    are not clipped keep their ratios to each other. Requires floor * k <= 1 <= cap * k.
    """
    tasks = list(raw)
    values = [max(raw[task], 0.0) for task in tasks]
    positive = [value for value in values if value > 0]
    if not positive:
        values = [1.0] * len(tasks)
        positive = values

    breakpoints = sorted({0.0} | {floor / v for v in positive} | {cap / v for v in positive})

    def total_at(lam: float) -> float:
        return sum(min(cap, max(floor, lam * v)) for v in values)

    lam = breakpoints[-1]
    for low, high in zip(breakpoints, breakpoints[1:]):
        if total_at(high) < 1.0:
            continue
        middle = (low + high) / 2.0
        fixed = 0.0
        free = 0.0
        for v in values:
            scaled = middle * v
            if scaled <= floor:
                fixed += floor
            elif scaled >= cap:
                fixed += cap
            else:
                free += v
        lam = high if free == 0 else (1.0 - fixed) / free
        break

    weights = [min(cap, max(floor, lam * v)) for v in values]
    total = sum(weights)
    # Rounding can leave the sum off by a few ulps, so the residue goes to the largest unclipped weight.
    residue = 1.0 - total
    if residue != 0.0:
        free_indices = [i for i, w in enumerate(weights) if floor < w < cap]
        if free_indices:
            target = max(free_indices, key=lambda i: weights[i])
            weights[target] += residue
    return dict(zip(tasks, weights))
