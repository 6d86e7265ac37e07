"""The autoscaling law of one stage pool: replicas from the stream's own lag and service rate.

Pure code: :func:`decide` takes the pool's settings, its last state and one observation, and
returns the next state, which says how many replicas the pool should run and why. The
supervisor (``infra/supervisor.py``) observes, decides once a second and applies; the law is
unit-tested against a simulated plant.

What one observation asks for (:func:`recommend`):

* ``target_lag`` (records per replica, KEDA's Kafka scaler): ``ceil(lag / target_lag)``.
* ``target_queue_s`` (seconds a record waits, ``lag / (n * mu)`` at the measured service rate
  ``mu`` per replica): enough replicas to keep up with the arrival rate and to bring the
  queue time under the target, ``ceil(max(arrival, lag / target_queue_s) / mu)``. (Asking for
  both at once, arrival plus the backlog's share, overshot: each change stalls the group for a
  rebalance, and the backlog of that stall asked for more replicas than the target needs.)
  Until ``mu`` has been measured the lag rule stands in, one record per replica.

What keeps it from flapping (the stabilisation windows of Kubernetes' HPA):

* Up only when every recommendation of the last ``upscale_delay_s`` asked for more, and then
  to the least of them; down only when every recommendation of the last ``downscale_delay_s``
  asked for fewer, and then to the most of them. A noisy lag moves the count only when the
  whole window agrees.
* With a queue-time target, a backlog that the replicas there keep up with and shrink does not
  scale the pool up: each change stalls the group for a rebalance (aiokafka's eager protocol),
  and the records of that stall are drained without help.
* A step moves at most ``max_step`` replicas, and a change starts a fresh window: the next
  step waits for observations made with the new replicas, so it never stacks steps on a
  backlog the new replicas have not had time to touch.
* Always within ``[min_replicas, max_replicas]``, and never above the partitions of the
  pool's topics (a consumer group gives each partition to one member).

Sleeping at zero: with ``min_replicas = 0`` a pool whose recommendations were zero (no lag,
nothing arriving) for ``downscale_delay_s`` goes to zero; it wakes as soon as ``activation_lag``
records wait, without waiting for a window (the records are in Kafka meanwhile; nothing is
dropped, and a request whose deadline passes while it waits gets an ``expired`` result).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from topics.errors import ConfigError


@dataclass(frozen=True, slots=True)
class AutoscaleConfig:
    """How one pool scales. Exactly one of ``target_lag`` and ``target_queue_s`` is set (> 0)."""

    min_replicas: int = 1
    max_replicas: int = 4
    target_lag: float = 0.0
    """Records waiting per replica the pool aims at."""
    target_queue_s: float = 0.0
    """Seconds a record waits (lag over the pool's measured service rate) the pool aims at."""
    upscale_delay_s: float = 5.0
    downscale_delay_s: float = 30.0
    activation_lag: int = 1
    """Records waiting that wake a pool at zero replicas."""
    max_step: int = 4
    """The most replicas one decision adds or removes."""

    def __post_init__(self) -> None:
        problems = autoscale_problems(self)
        if problems:
            raise ConfigError(problems[0])


def autoscale_problems(config: AutoscaleConfig) -> list[str]:
    """What is inconsistent in ``config`` (empty: nothing), each as the line a user reads."""
    problems = []
    if config.min_replicas < 0 or config.max_replicas < 1:
        problems.append("min_replicas must be >= 0 and max_replicas >= 1")
    if config.min_replicas > config.max_replicas:
        problems.append(f"min_replicas {config.min_replicas} is above max_replicas {config.max_replicas}")
    if (config.target_lag > 0) == (config.target_queue_s > 0):
        problems.append("set exactly one of target_lag and target_queue_s (> 0)")
    if config.target_lag < 0 or config.target_queue_s < 0:
        problems.append("targets must be > 0")
    if config.upscale_delay_s < 0 or config.downscale_delay_s < 0:
        problems.append("delays must be >= 0")
    if config.activation_lag < 1 or config.max_step < 1:
        problems.append("activation_lag and max_step must be >= 1")
    return problems


@dataclass(frozen=True, slots=True)
class Observation:
    """One look at a pool: what waits, what arrives, and how fast one replica serves."""

    at: float
    lag: int
    """Records of the pool's topics its consumer group has not committed."""
    arrival_rate: float = 0.0
    """Records per second produced to the pool's topics, over the last interval."""
    service_rate: float = 0.0
    """Records one replica serves per second of work (0: not measured yet)."""
    partitions: int = 1_000_000
    """The fewest partitions of the pool's topics: the most replicas its group can use."""


@dataclass(frozen=True, slots=True)
class PoolScale:
    """The law's state for one pool: the count it asks for, why, and the window it decides over."""

    desired: int
    reason: str = "configured"
    window: tuple[tuple[float, int, int], ...] = field(default=(), repr=False)
    """(time, recommendation, lag) since the last change, oldest first, trimmed to the longer delay."""
    watching_since: float | None = None
    """When the first observation since the last change was made: the window covers a delay from then on."""
    changed_at: float = 0.0


def recommend(config: AutoscaleConfig, seen: Observation) -> int:
    """The replicas ``seen`` alone asks for, before bounds and stabilisation."""
    if seen.lag <= 0 and seen.arrival_rate <= 0:
        return 0
    if config.target_queue_s > 0 and seen.service_rate > 0:
        need = max(seen.arrival_rate, seen.lag / config.target_queue_s) / seen.service_rate
    else:
        per_replica = config.target_lag if config.target_lag > 0 else 1.0
        need = seen.lag / per_replica
    return max(1, math.ceil(need - 1e-9))


@dataclass(frozen=True, slots=True)
class ReplicaBounds:
    """The replicas one pool may run: ``low`` to ``high``, and ``high`` is never above ``partitions``."""

    low: int
    high: int
    partitions: int
    """The fewest partitions of the pool's topics."""


def replica_bounds(config: AutoscaleConfig | None, partitions: int) -> ReplicaBounds:
    """An autoscaled pool's ``[min_replicas, max_replicas]`` capped by ``partitions``; a fixed one's
    one up to ``partitions`` (at zero, with nothing to wake it, its topics would go unread)."""
    low, high = bounds(config, partitions) if config is not None else (1, max(1, partitions))
    return ReplicaBounds(low, high, partitions)


def bounds(config: AutoscaleConfig, partitions: int) -> tuple[int, int]:
    """``[min_replicas, max_replicas]`` with the top capped by the partitions of the pool's topics."""
    top = max(1, min(config.max_replicas, partitions))
    return min(config.min_replicas, top), top


def decide(config: AutoscaleConfig, state: PoolScale, seen: Observation) -> PoolScale:
    """The pool's next state after ``seen`` (see the module docstring for the rules)."""
    low, high = bounds(config, seen.partitions)
    now, current = seen.at, state.desired
    if current < low or current > high:
        return _change(state, min(max(current, low), high), now, f"held within [{low}, {high}]")
    want = min(max(recommend(config, seen), low), high)
    if current == 0:
        if seen.lag >= config.activation_lag:
            return _change(state, max(1, min(want, config.max_step)), now, f"woke: lag {seen.lag}")
        return replace(state, window=(), watching_since=None)
    horizon = max(config.upscale_delay_s, config.downscale_delay_s)
    window = (*[look for look in state.window if look[0] >= now - horizon], (now, want, seen.lag))
    since = now if state.watching_since is None else state.watching_since
    state = replace(state, window=window, watching_since=since)
    up = _sustained(window, now - since, config.upscale_delay_s)
    if up and min(w for _, w, _ in up) > current and not _draining(config, seen, up, current):
        target = min(min(w for _, w, _ in up), current + config.max_step)
        return _change(state, target, now, _why(config, seen, "up"))
    down = _sustained(window, now - since, config.downscale_delay_s)
    if down and max(w for _, w, _ in down) < current:
        target = max(max(w for _, w, _ in down), current - config.max_step)
        return _change(state, target, now, _why(config, seen, "down"))
    return state


def _sustained(
    window: tuple[tuple[float, int, int], ...], watched_s: float, delay_s: float
) -> list[tuple[float, int, int]]:
    """The looks of the last ``delay_s``, or none while the pool has been watched (since the last change)
    for less than that."""
    if watched_s < delay_s:
        return []
    now = window[-1][0]
    return [look for look in window if look[0] >= now - delay_s]


def _draining(config: AutoscaleConfig, seen: Observation, looks: list[tuple[float, int, int]], current: int) -> bool:
    """Whether the backlog alone asks for more while the replicas there keep up and shrink it.

    Every change stalls the consumer group for a rebalance, and the records of that stall make a
    backlog the replicas drain by themselves: adding replicas for it is the flap this avoids. A
    pool that cannot keep up with what arrives (or whose lag did not fall over the window) scales.
    """
    if config.target_queue_s <= 0 or seen.service_rate <= 0:
        return False
    keeps_up = seen.arrival_rate <= current * seen.service_rate
    return keeps_up and looks[-1][2] < looks[0][2]


def _change(state: PoolScale, desired: int, now: float, reason: str) -> PoolScale:
    return PoolScale(desired=desired, reason=reason, changed_at=now)


def _why(config: AutoscaleConfig, seen: Observation, direction: str) -> str:
    delay = config.upscale_delay_s if direction == "up" else config.downscale_delay_s
    if config.target_queue_s > 0 and seen.service_rate > 0:
        measure = (
            f"lag {seen.lag}, arriving {seen.arrival_rate:.1f}/s, serving {seen.service_rate:.1f}/s per replica, "
            f"queue target {config.target_queue_s:g} s"
        )
    elif config.target_queue_s > 0:
        measure = f"lag {seen.lag}, service rate not measured yet (1 record per replica)"
    else:
        measure = f"lag {seen.lag}, target {config.target_lag:g} per replica"
    return f"scaled {direction}: {measure}, for {delay:g} s"
