"""Per-task mixture weights for round r, computed from round r-1's evaluation feedback.

Rules (``MixingConfig.rule``):

- ``multiplicative_weights`` (default): the multiplicative weights update, as surveyed by Arora, Hazan
  and Kale (2012, "The Multiplicative Weights Update Method: a Meta-Algorithm and Applications",
  Theory of Computing 8). Each task's weight is multiplied by ``exp(eta * s)``, where ``s`` grows with
  the task's error, so the next round samples more from the tasks the model still gets wrong. DoReMi
  (Xie et al. 2023, "DoReMi: Optimizing Data Mixtures Speeds Up Language Model Pretraining") applies
  the same update per domain with the excess loss over a reference model as the gain.
- ``exp3``: the EXP3 bandit update (Auer, Cesa-Bianchi, Freund and Schapire 2002, "The Nonstochastic
  Multiarmed Bandit Problem", SIAM J. Computing 32), which Online Data Mixing (Albalak et al. 2023)
  uses to pick domains during pre-training. Rewards are scaled to [0, 1], divided by the task's
  current weight (the importance-weighted estimate), and the result is mixed with the uniform
  distribution with share ``exploration``. The mixing with uniform keeps every task sampled when the
  signal is noisy.
- ``uniform`` and ``proportional``: the static baselines, equal weight per task with data, or weight
  proportional to the task's available rows (stratified sampling).

Signals (``MixingConfig.signal``):

- ``loss``: the held-out loss.
- ``loss_change``: the change of the loss since the previous round, so a task that stopped improving
  gains weight.
- ``excess_loss``: the loss minus a reference model's loss on the same items. This is DoReMi's
  signal, here with the base model as the reference.
- ``accuracy``: the error rate 1 - accuracy.

This module departs from the sources in these ways:

- The gain is centered and scaled: ``s_i = (v_i - mean(v)) / mean(|v|)`` over the tasks with a
  signal. For a positive signal such as the loss this is ``v_i / mean(v) - 1``. Identical signals
  give ``s = 0`` and leave the mixture where it was, and the update does not depend on the scale of
  the signal.
- EXP3 keeps the previous round's weights as its state instead of cumulative unnormalized weights,
  because the previous weights are what the warehouse records.
- ``eta * s`` is clipped to ``[-max_step, max_step]``, which bounds how far one round can move a task.

Guard rails, applied to every rule:

- The weights are clipped to ``[min_weight, max_weight]`` by proportional water-filling, so that no
  task is starved and no task takes the whole mixture. Without bounds, a task whose error stays
  highest for a few rounds pulls the mixture toward one-hot.
- ``smoothing`` mixes the new weights with the previous ones, and ``max_change`` limits the change
  of any task's weight in one round. Both are convex combinations of two weight vectors that sum to
  1 and respect the bounds, so the result does too.
- A task without an evaluation signal keeps its previous weight before renormalization, and a task
  without available rows gets weight exactly 0.
- How often one sample may repeat within a round is capped by the sampler
  (``trainer.data.plan_mixture``, ``max_repeats``).

The module is pure Python: it imports neither torch nor polars.
"""

import logging
import math
from dataclasses import asdict, dataclass, field

log = logging.getLogger(__name__)

RULES = ("multiplicative_weights", "exp3", "uniform", "proportional")
SIGNALS = ("loss", "loss_change", "excess_loss", "accuracy")
FEEDBACK_RULES = ("multiplicative_weights", "exp3")

FLAG_OK = "ok"
FLAG_NO_SIGNAL = "no_signal"
FLAG_NO_DATA = "no_data"
FLAG_INITIAL = "initial"

# A previous weight below this counts as 0, so the task restarts from the uniform share. Shares of
# denormal size would otherwise underflow to 0 after renormalization, and a task at 0 cannot grow.
MIN_CARRIED_WEIGHT = 1e-9


@dataclass(frozen=True)
class MixingConfig:
    """Settings of the mixture update.

    rule: "multiplicative_weights" or "exp3" (feedback-driven), or the static baselines "uniform"
        (equal weight per task with data) and "proportional" (weight proportional to available rows).
    signal: "loss" (mean response-token loss), "loss_change" (loss minus the previous round's loss),
        "excess_loss" (loss minus the reference model's loss) or "accuracy" (error rate
        1 - accuracy). A higher value gives more weight. A task that lacks a value the signal needs
        is flagged ``no_signal``.
    eta: step size of the update, >= 0. At 0 the mixture never moves. The default 2.0 moves a task
        whose loss is 30% above the mean by a factor of about 1.8 in one round.
    min_weight: floor for every task with data, in [0, 1). The default 0.05 keeps a task in the mixture
        even when the model already does well on it.
    max_weight: cap for every task, in (0, 1]. The default 0.7 keeps at least 30% of the mixture for
        the other tasks. It was chosen among 0.7, 0.75 and 0.8 on the dev losses of
        ``bench/mixing.py``: with 0.8, the task with the highest loss took 80% of every round from
        round 1 on, and 0.7 had the smallest gap to uniform mixing in mean loss over tasks.
    max_step: maximum absolute value of ``eta * s`` for one task in one round, > 0. The default 1.0
        limits one round to a factor of e in either direction before renormalization.
    max_change: maximum absolute change of one task's weight from the previous round, in (0, 1]. The
        default 0.5 does not bind for the default eta and max_step with three or more tasks.
    smoothing: share of the previous weights mixed into the new weights, in [0, 1). 0 applies the
        full update.
    exploration: share of the uniform distribution mixed into the "exp3" weights, in [0, 1). Only
        "exp3" reads it.
    seed: recorded in ``settings`` for provenance. None of the rules draws random numbers.

    The bounds, max_change and smoothing apply to every rule. With a previous round, they can keep a
    static rule's weights away from its target for a few rounds. Set min_weight=0 and max_weight=1 for
    unclipped baselines. When the
    bounds cannot hold for k tasks with data (min_weight * k > 1 or max_weight * k < 1), the floor is
    lowered or the cap raised to 1/k, and ``settings`` records the bounds that were used.
    """

    rule: str = "multiplicative_weights"
    signal: str = "loss"
    eta: float = 2.0
    min_weight: float = 0.05
    max_weight: float = 0.7
    max_step: float = 1.0
    max_change: float = 0.5
    smoothing: float = 0.0
    exploration: float = 0.1
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
        _require_finite_in("max_change", self.max_change, 0.0, 1.0, "use 1 for no limit", lower_open=True)
        _require_finite_in("smoothing", self.smoothing, 0.0, 1.0, "use 0 for the full update", upper_open=True)
        _require_finite_in("exploration", self.exploration, 0.0, 1.0, "use e.g. 0.1", upper_open=True)
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
    previous_loss: the task's mean_loss in the round before, for the "loss_change" signal, or None.
    reference_loss: a reference model's mean_loss on the same items, for the "excess_loss" signal,
        or None.

    NaN and infinite values are kept as given. ``compute_weights`` treats them as a missing signal and
    flags the task ``no_signal``, because one bad evaluation must not stop the next round.
    """

    n_eval: int
    mean_loss: float | None = None
    accuracy: float | None = None
    previous_loss: float | None = None
    reference_loss: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.n_eval, bool) or not isinstance(self.n_eval, int) or self.n_eval < 0:
            raise ValueError(f"TaskSignal.n_eval={self.n_eval!r} is invalid; use an int >= 0")
        for name in ("mean_loss", "previous_loss", "reference_loss"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"TaskSignal.{name}={value} is negative; a cross-entropy is >= 0")
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

    previous: last round's weights, or None in round 0. A task that is missing here or has a weight
        below MIN_CARRIED_WEIGHT starts from the uniform share 1/k, where k is the number of tasks with
        data.
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
    base = _previous_share(previous, with_data)
    if config.rule == "uniform":
        raw = {task: 1.0 for task in with_data}
        flags.update({task: FLAG_OK for task in with_data})
    elif config.rule == "proportional":
        raw = {task: float(available[task]) for task in with_data}
        flags.update({task: FLAG_OK for task in with_data})
    else:
        _set_feedback_flags(previous, signals, with_data, flags)
        if config.rule == "exp3":
            raw = _exp3_update(base, signals, config)
        else:
            raw = _multiplicative_update(base, signals, config)

    clipped = _clip_to_bounds(raw, floor, cap)
    if any(previous.get(task, 0.0) >= MIN_CARRIED_WEIGHT for task in with_data):
        clipped = _limit_round_change(clipped, _clip_to_bounds(base, floor, cap), config)
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
    if floor * k >= 1.0:
        # Floors that reserve all of the mass pin every task at 1/k and silence the signal (the default
        # 0.05 does so from 20 tasks on), so they are lowered to take half of it.
        log.warning(
            "min_weight=%s reserves %.0f%% of the mass for %d tasks with data; using the floor 0.5/%d",
            floor, 100 * floor * k, k, k,
        )
        floor = 0.5 / k
    if cap * k < 1.0:
        log.warning("max_weight=%s is infeasible for %d tasks with data; using the cap 1/%d", cap, k, k)
        cap = 1.0 / k
    return floor, cap


def _error_signal(signal: TaskSignal | None, kind: str) -> float | None:
    """Return the error value of one task (higher means worse), or None when there is no usable value."""
    if signal is None or signal.n_eval == 0:
        return None
    if kind == "accuracy":
        value = None if signal.accuracy is None else 1.0 - signal.accuracy
    elif signal.mean_loss is None:
        value = None
    elif kind == "loss":
        value = signal.mean_loss
    elif kind == "loss_change":
        value = None if signal.previous_loss is None else signal.mean_loss - signal.previous_loss
    else:
        value = None if signal.reference_loss is None else signal.mean_loss - signal.reference_loss
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _previous_share(previous: dict[str, float], with_data: list[str]) -> dict[str, float]:
    """Return the starting weights of the tasks with data, summing to 1.

    Tasks that had a weight last round keep their ratios to each other, renormalized over the tasks
    with data. New tasks, and tasks whose weight was below MIN_CARRIED_WEIGHT, start at the uniform
    share 1/k.
    """
    uniform = 1.0 / len(with_data)
    returning = [task for task in with_data if previous.get(task, 0.0) >= MIN_CARRIED_WEIGHT]
    returning_total = sum(previous[task] for task in returning)
    returning_share = 1.0 - uniform * (len(with_data) - len(returning))
    return {
        task: previous[task] / returning_total * returning_share if task in returning else uniform
        for task in with_data
    }


def _set_feedback_flags(previous, signals, with_data, flags) -> None:
    for task in with_data:
        if previous.get(task, 0.0) < MIN_CARRIED_WEIGHT:
            flags[task] = FLAG_INITIAL
        elif signals[task] is None:
            flags[task] = FLAG_NO_SIGNAL
        else:
            flags[task] = FLAG_OK


def _gains(base: dict[str, float], signals: dict[str, float | None]) -> dict[str, float]:
    """Return ``(v - mean(v)) / mean(|v|)`` per task, and 0 for a task without a signal."""
    measured = [signals[task] for task in base if signals[task] is not None]
    if not measured:
        return {task: 0.0 for task in base}
    mean_signal = sum(measured) / len(measured)
    scale = sum(abs(value) for value in measured) / len(measured)
    if scale == 0.0:
        return {task: 0.0 for task in base}
    return {task: 0.0 if signals[task] is None else (signals[task] - mean_signal) / scale for task in base}


def _multiplicative_update(
    base: dict[str, float], signals: dict[str, float | None], config: MixingConfig
) -> dict[str, float]:
    """Return unnormalized weights ``base * exp(clip(eta * s))``. A task without a signal keeps ``base``."""
    gains = _gains(base, signals)
    raw = {}
    for task, start in base.items():
        step = max(-config.max_step, min(config.max_step, config.eta * gains[task]))
        raw[task] = start * math.exp(step)
    return raw


def _exp3_update(base: dict[str, float], signals: dict[str, float | None], config: MixingConfig) -> dict[str, float]:
    """Return EXP3 weights: ``base * exp(clip(eta * r / (k * base)))`` mixed with uniform.

    The reward ``r`` is the signal scaled to [0, 1] over the tasks with a signal (the lowest error
    gets 0, the highest 1). A task without a signal gets the mean reward, so it neither gains nor
    loses against the average. Dividing by ``base`` is EXP3's importance weighting: a task that was
    sampled rarely gets a larger step for the same reward.
    """
    k = len(base)
    measured = [signals[task] for task in base if signals[task] is not None]
    low, high = (min(measured), max(measured)) if measured else (0.0, 0.0)
    spread = high - low
    rewards = {
        task: (signals[task] - low) / spread if spread > 0 and signals[task] is not None else None for task in base
    }
    known = [reward for reward in rewards.values() if reward is not None]
    mean_reward = sum(known) / len(known) if known else 0.0
    updated = {}
    for task, start in base.items():
        reward = mean_reward if rewards[task] is None else rewards[task]
        step = min(config.max_step, config.eta * reward / (k * start))
        updated[task] = start * math.exp(step)
    total = sum(updated.values())
    return {task: (1.0 - config.exploration) * value / total + config.exploration / k for task, value in updated.items()}


def _limit_round_change(new: dict[str, float], previous: dict[str, float], config: MixingConfig) -> dict[str, float]:
    """Apply ``smoothing`` and ``max_change`` to move from ``previous`` toward ``new``.

    Both inputs sum to 1 and respect the bounds, and the result is a convex combination of them, so
    it does too.
    """
    fraction = 1.0 - config.smoothing
    largest = max(abs(new[task] - previous[task]) for task in new)
    if largest * fraction > config.max_change:
        fraction = config.max_change / largest
    if fraction >= 1.0:
        return new
    return {task: previous[task] + fraction * (new[task] - previous[task]) for task in new}


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
