"""The autoscaling law against a simulated plant: a pool whose replicas each serve ``mu`` records/s.

The plant is a fluid queue sampled once a second, like the supervisor's loop: records arrive at
``rate(t)`` (with noise where a test says so), ``n`` ready replicas take ``n * mu`` per second,
and a replica the law adds serves only after ``ready_s``, as a Ray actor does once it joined
the group.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from policies.autoscale import AutoscaleConfig, Observation, PoolScale, bounds, decide, recommend
from topics.errors import ConfigError

QUEUE = AutoscaleConfig(
    min_replicas=1, max_replicas=8, target_queue_s=2.0, upscale_delay_s=3, downscale_delay_s=20, max_step=4
)


@dataclass
class Plant:
    config: AutoscaleConfig
    mu: float = 50.0
    ready_s: float = 3.0
    partitions: int = 8
    noise: float = 0.0
    seed: int = 0
    tick_s: float = 1.0
    """Seconds between two looks (the supervisor's ticks take a little longer than its 1 s sleep)."""
    stall_s: float = 0.0
    """Seconds the whole group serves nothing after each change (a consumer-group rebalance)."""
    stalled_until: float = 0.0
    lag: float = 0.0
    state: PoolScale = field(default_factory=lambda: PoolScale(desired=1))
    ready: list[float] = field(default_factory=lambda: [0.0])
    """When each replica started serving (a scale-down removes the newest)."""
    history: list[tuple[float, int, float]] = field(default_factory=list)
    """(t, desired, lag) after each decision."""

    def run(self, rate: Callable[[float], float], seconds: int, start: float = 0.0) -> None:
        rng = random.Random(self.seed)
        for step in range(int(seconds / self.tick_s)):
            t = start + (step + 1) * self.tick_s
            arriving = max(0.0, rate(t) * (1 + rng.uniform(-self.noise, self.noise))) * self.tick_s
            working = sum(1 for at in self.ready if at <= t) if t >= self.stalled_until else 0
            serving = working * self.mu * self.tick_s
            self.lag = max(0.0, self.lag + arriving - serving)
            seen = Observation(t, round(self.lag), arriving / self.tick_s, self.mu, self.partitions)
            before, self.state = self.state.desired, decide(self.config, self.state, seen)
            if self.state.desired != before:
                self.stalled_until = t + self.stall_s
            while len(self.ready) < self.state.desired:
                self.ready.append(t + self.ready_s)
            del self.ready[self.state.desired :]
            self.history.append((t, self.state.desired, self.lag))

    def changes(self, after: float = 0.0) -> list[tuple[int, int]]:
        counts = [d for t, d, _ in self.history if t > after]
        return [(a, b) for a, b in itertools.pairwise(counts) if a != b]


@pytest.mark.parametrize("tick_s", [1.0, 1.07])
def test_a_fourfold_step_scales_up_drains_the_backlog_and_scales_back_down(tick_s: float) -> None:
    plant = Plant(QUEUE, tick_s=tick_s)
    plant.run(lambda t: 40.0, 60)
    assert plant.state.desired == 1  # 40/s fits one replica at 50/s
    plant.run(lambda t: 160.0, 120, start=60)
    peak = max(d for _, d, _ in plant.history)
    assert peak >= 4 and plant.state.desired in (4, 5)  # 160/s needs 3.2 replicas
    drained = [t for t, _, lag in plant.history if t > 90 and lag <= 2.0 * plant.mu * plant.state.desired]
    assert drained and drained[0] < 120  # back under the queue target well inside the step
    plant.run(lambda t: 40.0, 120, start=180)
    assert plant.state.desired == 1
    assert "scaled down" in plant.state.reason


def test_the_stall_of_each_rebalance_does_not_make_it_flap() -> None:
    """Each change stops the whole group for 4 s (aiokafka's eager rebalance): the backlog of that
    stall must not read as a reason to scale again (80/s at 20/s per replica needs 4.0-5)."""
    config = AutoscaleConfig(max_replicas=8, target_queue_s=1.0, upscale_delay_s=5, downscale_delay_s=30)
    plant = Plant(config, mu=20.0, stall_s=4.0, noise=0.1, seed=3)
    plant.run(lambda t: 80.0, 600)
    assert plant.state.desired in (4, 5, 6)
    assert len(plant.changes(after=120)) <= 1


def test_noisy_lag_does_not_make_it_flap() -> None:
    plant = Plant(QUEUE, noise=0.4, seed=7)
    plant.run(lambda t: 120.0, 600)
    assert len(plant.changes(after=60)) <= 1  # settled within a minute, then at most one correction


@pytest.mark.parametrize("seed", range(5))
def test_steps_are_bounded_and_within_min_max_and_partitions(seed: int) -> None:
    config = AutoscaleConfig(min_replicas=2, max_replicas=6, target_lag=100, upscale_delay_s=1, max_step=2)
    plant = Plant(config, mu=20.0, partitions=5, noise=0.5, seed=seed, state=PoolScale(desired=2), ready=[0.0, 0.0])
    rng = random.Random(seed)
    levels = [rng.uniform(0, 300) for _ in range(10)]
    plant.run(lambda t: levels[int(t) // 60 % len(levels)], 600)
    counts = [d for _, d, _ in plant.history]
    assert min(counts) >= 2 and max(counts) <= 5  # 5 partitions cap max_replicas 6
    assert all(abs(b - a) <= 2 for a, b in plant.changes())


def test_a_change_waits_for_observations_made_with_the_new_replicas() -> None:
    plant = Plant(QUEUE, ready_s=5.0)
    plant.run(lambda t: 400.0, 30)
    ups = [t for t, d, _ in plant.history if d > 1]
    steps = plant.changes()
    assert steps[0] == (1, 5)  # one bounded step of max_step
    first_change = ups[0]
    second = next(t for t, d, _ in plant.history if d > 5)
    assert second - first_change >= QUEUE.upscale_delay_s


def test_a_pool_sleeps_at_zero_and_wakes_on_activation_lag() -> None:
    config = AutoscaleConfig(min_replicas=0, max_replicas=4, target_lag=50, downscale_delay_s=10, activation_lag=5)
    plant = Plant(config)
    plant.run(lambda t: 0.0, 15)
    assert plant.state.desired == 0 and plant.ready == []
    plant.run(lambda t: 3.0 if t == 16 else 0.0, 3, start=15)
    assert plant.state.desired == 0  # 3 records wait: below activation_lag
    plant.run(lambda t: 10.0 if t == 19 else 0.0, 1, start=18)
    assert plant.state.desired == 1 and plant.state.reason == "woke: lag 13"


def test_a_pool_without_a_measured_service_rate_scales_on_lag() -> None:
    seen = Observation(at=0, lag=250, arrival_rate=100.0, service_rate=0.0)
    assert recommend(QUEUE, seen) == 250  # one record per replica until mu is known
    assert recommend(AutoscaleConfig(target_lag=100), seen) == 3
    assert recommend(QUEUE, Observation(at=0, lag=250, arrival_rate=100.0, service_rate=50.0)) == 3  # max(100, 125)/50


def test_bounds_cap_the_top_by_partitions_but_never_below_one() -> None:
    assert bounds(AutoscaleConfig(min_replicas=0, max_replicas=8, target_lag=1), partitions=4) == (0, 4)
    assert bounds(AutoscaleConfig(min_replicas=3, max_replicas=8, target_lag=1), partitions=2) == (2, 2)


def test_a_count_outside_the_bounds_is_brought_back_at_once() -> None:
    config = AutoscaleConfig(min_replicas=1, max_replicas=3, target_lag=10)
    state = decide(config, PoolScale(desired=6), Observation(at=5, lag=0, partitions=8))
    assert state.desired == 3 and state.reason == "held within [1, 3]"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"min_replicas": 3, "max_replicas": 2, "target_lag": 1}, "min_replicas 3 is above max_replicas 2"),
        ({"target_lag": 10, "target_queue_s": 1}, "set exactly one of target_lag and target_queue_s"),
        ({}, "set exactly one of target_lag and target_queue_s"),
        ({"target_lag": 1, "activation_lag": 0}, "activation_lag and max_step must be >= 1"),
    ],
)
def test_inconsistent_settings_are_one_line(settings: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AutoscaleConfig(**settings)  # type: ignore[arg-type]
