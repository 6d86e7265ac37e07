"""The budget controller's logic without I/O: command checks, the measured window, state and recovery.

:class:`ControllerCore` is fed what the actor (``workers/controller_actor.py``) reads
from Kafka — commands, results, answers — and returns what to publish: replies,
policy updates and reports. The clock is passed in, so the whole loop runs in unit
tests against a simulated plant.

A command changes nothing unless :func:`check_command` finds no reason to refuse
it. Every refusal is answered on the control topic and counted by reason.

Recovery trusts nothing it cannot check: reports, updates and replies count only when
signed by a key in :attr:`ControllerCore.trusted` (anyone who can produce to the topic
could have written them), a reply only for the command it names, and an accepted command
is applied again only if its HMAC signature still checks (:func:`check_signature`). Its
expiry is not checked again: it was valid when it was accepted. Everything ignored is
counted in :attr:`ControllerCore.ignored` by ``kind:reason``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import msgspec

from policies.autoscale import ReplicaBounds
from policies.budget import (
    Goals,
    LawParams,
    Observation,
    lambda_bounds,
    latency_weights,
    next_lambda,
    next_mu,
    steer_thresholds,
)
from policies.drift import DriftConfig, DriftState
from policies.exploration import ExplorationConfig, ExplorationSpend, bounded_share
from policies.file import parse_policy
from policies.window import (
    ResultsWindow,
    ended_latency_ms,
    latency_at,
    over_latency_share,
    summarize,
    visited_share,
)
from topics.control import (
    MAX_VALIDITY_S,
    CommandAction,
    ControlCommand,
    ControllerRecord,
    ControllerReport,
    ControlRecord,
    ControlReply,
    Observed,
    PolicyUpdate,
    Targets,
    TrustedKeys,
    record_kind,
    verify_record,
)
from topics.errors import ConfigError, DecodeError
from topics.messages import Answer, Result
from topics.rollout import MAX_POLICY_BYTES, Rollout, RolloutMode, policy_digest

CLOCK_SKEW_S = 30.0
"""A command issued up to this far in the future (the operator's clock ahead of ours) is still valid."""
THRESHOLD_CHANGE = 1e-3
"""Thresholds that move less than this are not worth a new policy version."""


def check_signature(command: ControlCommand, keys: Mapping[str, bytes]) -> str | None:
    """Why ``command``'s HMAC does not prove who sent it (``unknown_key``, ``unsigned``,
    ``bad_signature``), or ``None``. Pure: the part of :func:`check_command` that never expires."""
    key = keys.get(command.key_id)
    if key is None:
        return "unknown_key"
    if not command.sig:
        return "unsigned"
    if not command.signature_ok(key):
        return "bad_signature"
    return None


def check_command(
    command: ControlCommand,
    *,
    keys: Mapping[str, bytes],
    last_seq: Mapping[str, int],
    tiers: tuple[str, ...],
    paused: frozenset[str],
    versions: Iterable[int],
    now: float,
    pools: Mapping[str, ReplicaBounds] | None = None,
) -> str | None:
    """Why ``command`` must be refused, or ``None`` to apply it. Pure; the order of checks is the
    order of trust: who sent it, is it fresh, then is it meaningful. ``pools``: the replicas each
    stage pool may run."""
    unproven = check_signature(command, keys)
    if unproven is not None:
        return unproven
    if command.seq <= last_seq.get(command.key_id, -1):
        return "replayed"
    if command.issued_at > now + CLOCK_SKEW_S:
        return "not_yet_valid"
    if command.expires_at < now:
        return "expired"
    if command.expires_at - command.issued_at > MAX_VALIDITY_S:
        return "validity_too_long"
    if command.action is CommandAction.SET_TARGETS:
        t = command.targets
        if t is None or all(v is None for v in (t.cost_per_request, t.cost_per_second, t.latency_ms, t.quality_floor)):
            return "no_targets"
    if command.action is CommandAction.SET_THRESHOLDS:
        if not command.thresholds:
            return "no_thresholds"
        if any(tier not in tiers for tier in command.thresholds):
            return "unknown_tier"
    if command.action in (CommandAction.PAUSE_TIER, CommandAction.RESUME_TIER) and command.tier not in tiers:
        return "unknown_tier"
    if command.action is CommandAction.PAUSE_TIER and set(tiers) <= paused | {command.tier}:
        return "no_tier_left"
    if command.action is CommandAction.PIN_POLICY and command.policy_version not in set(versions):
        return "unknown_version"
    if command.action is CommandAction.SCALE_POOL:
        return scale_refusal(command.pool, command.replicas, pools or {})
    if command.action is CommandAction.PUSH_POLICY:
        return rollout_refusal(command.rollout, tiers)
    return None


def rollout_refusal(rollout: Rollout | None, tiers: tuple[str, ...]) -> str | None:
    """Why a pushed policy cannot run here, or ``None``: the CLI checks the same before sending, so
    these answer a hand-made command."""
    if rollout is None:
        return "no_policy"
    if len(rollout.policy.encode()) > MAX_POLICY_BYTES:
        return "policy_too_large"
    if policy_digest(rollout.policy) != rollout.digest:
        return "bad_digest"
    if rollout.mode is RolloutMode.CANARY and not 0.0 < rollout.share < 1.0:
        return "bad_canary_share"
    try:
        doc = json.loads(rollout.policy)
        if not isinstance(doc, dict):
            return "bad_policy"
        parse_policy(doc).check_tiers(tiers)
    except (ValueError, TypeError, AttributeError, ConfigError):
        return "bad_policy"
    return None


def scale_refusal(pool: str, replicas: int, pools: Mapping[str, ReplicaBounds]) -> str | None:
    """Why ``pool`` cannot run ``replicas`` replicas, or ``None``. Pure; the CLI says the same before sending.

    Within the pool's bounds (:func:`~policies.autoscale.replica_bounds`): an autoscaled pool's
    ``[min_replicas, max_replicas]``, a fixed one's one up to its partitions. Never above the
    partitions of the pool's topics: a consumer group gives each partition to one member, so more
    replicas than partitions only idle.
    """
    within = pools.get(pool)
    if within is None:
        return "unknown_pool"
    if replicas < within.low:
        return "too_few_replicas"
    if replicas > within.partitions:
        return "more_replicas_than_partitions"
    if replicas > within.high:
        return "above_max_replicas"
    return None


def measure(window: ResultsWindow, now: float, quantile: float, latency_target: float | None = None) -> Observed:
    """What the controller saw over ``window`` at ``now``: the report's ``observed`` and the law's input."""
    results = window.current(now)
    span = window.covered_s(now)
    if not results:
        return Observed(window_s=span)
    span = max(span, 1e-3)
    stats = summarize(results, span)
    return Observed(
        requests=stats.count,
        window_s=span,
        rate=stats.rate,
        cost_per_request=stats.cost_per_request,
        cost_per_second=stats.cost_per_second,
        latency_ms=latency_at(results, quantile),
        over_latency_share=over_latency_share(results, latency_target) if latency_target else 0.0,
        escalation_rate=stats.escalation_rate,
        mean_confidence=min(1.0, stats.mean_confidence),
        visited_share=visited_share(results),
        tier_latency_ms=ended_latency_ms(results),
    )


@dataclass
class ControllerCore:
    """State and decisions of the one budget controller of a deployment."""

    tiers: tuple[str, ...]
    """Ladder order, cheapest first."""
    base: dict[str, float] | None
    """θ⁰: the verifier policy's steerable thresholds (``None``: not steerable, only pausing works)."""
    keys: Mapping[str, bytes]
    """Operators' HMAC keys by key id: who may command."""
    pools: Mapping[str, ReplicaBounds] = field(default_factory=dict)
    """The deployment's stage pools and the replicas each may run (``scale_pool``)."""
    trusted: TrustedKeys = field(default_factory=lambda: TrustedKeys(""))
    """Public keys whose signed reports, updates and replies recovery believes (default: none)."""
    window_s: float = 10.0
    params: LawParams = field(default_factory=LawParams)
    targets: Targets = field(default_factory=Targets)
    lam: float = 0.0
    mu: float = 0.0
    version: int = 0
    thresholds: dict[str, float] = field(default_factory=dict)
    paused: set[str] = field(default_factory=set)
    pinned: bool = False
    last_seq: dict[str, int] = field(default_factory=dict)
    processed_offset: int = -1
    rejected: Counter[str] = field(default_factory=Counter)
    ignored: Counter[str] = field(default_factory=Counter)
    """Control records ignored since this start, by ``kind:reason`` (see the module docstring)."""
    history: dict[int, dict[str, float]] = field(default_factory=dict)
    """Thresholds of every version this controller knows, for ``pin_policy``."""
    live: Rollout | None = None
    """The pushed policy running live (``None``: the config's own)."""
    rollout: Rollout | None = None
    """A pushed candidate in shadow or as a canary (``None``: none)."""
    rollouts: dict[int, tuple[Rollout | None, Rollout | None]] = field(default_factory=dict)
    """(live, candidate) of every version this controller knows: ``pin_policy`` restores them too."""
    texts: dict[str, str] = field(default_factory=dict)
    """Pushed policy texts by digest: each is published once, later updates name it by digest."""
    published: set[str] = field(default_factory=set)
    """Digests whose text an update on the control topic already carries."""
    own_base: dict[str, float] | None = None
    """The config's own policy's base thresholds (what a rollback to it steers from again)."""
    window: ResultsWindow = field(init=False)
    last_observed: Observed = field(default_factory=Observed)
    ended_latency_ms: dict[str, float] = field(default_factory=dict)
    """Per tier, a moving average of the latency of requests that ended there: kept while a tier
    gets no traffic, so the latency weights do not flip when the guard stops escalating into it."""
    exploration: ExplorationConfig = field(default_factory=ExplorationConfig)
    explore_share: float | None = None
    """The exploration share last published (``None``: none yet, routers draw at the configured one)."""
    spend: ExplorationSpend = field(init=False)
    """What exploration copies cost over the window: counted in the cost the law steers, bounded by it."""
    drift_config: DriftConfig = field(default_factory=DriftConfig)
    drift: DriftState = field(init=False)
    """The acceptance and calibration watch (``policies/drift.py``), fed every result and label."""
    drift_basis: dict[str, float] = field(default_factory=dict)
    """The thresholds each tier's acceptance reference was taken under (see :meth:`_rebase_moved`)."""

    def __post_init__(self) -> None:
        self.own_base = None if self.base is None else dict(self.base)
        self.window = ResultsWindow(self.window_s)
        self.spend = ExplorationSpend(max(self.window_s, SPEND_WINDOW_S))
        self.drift = DriftState(self.drift_config)
        if not self.thresholds and self.base is not None:
            self.thresholds = dict(self.base)

    # --- recovery -------------------------------------------------------------------------------

    def untrusted(self, record: ControllerRecord) -> str | None:
        """Why a report, update or reply must be ignored (and count it as ``kind:reason``), or ``None``."""
        reason = verify_record(record, self.trusted)
        if reason is not None:
            self.ignored[f"{record_kind(record)}:{reason}"] += 1
        return reason

    def recover(
        self, records: Iterable[tuple[int, ControlRecord | DecodeError]]
    ) -> list[tuple[int, ControlCommand | DecodeError]]:
        """Rebuild state from the control topic read from its beginning; return what still needs an answer.

        Only records signed by a trusted key count (see the module docstring). The newest report
        (most commands answered, then latest) gives targets, multipliers, pause/pin state and replay
        counters, the updates give the versions. Commands after that report that were already
        answered are replayed silently as their reply says: an accepted one is applied again after
        its HMAC is checked again, not its expiry (that may have passed since); unanswered ones (a
        forged reply answers nothing) are returned, to be handled now.
        """
        records = list(records)
        report: ControllerReport | None = None
        replies: dict[int, ControlReply] = {}
        for _, record in records:
            if isinstance(record, ControlCommand | DecodeError) or self.untrusted(record) is not None:
                continue
            if isinstance(record, PolicyUpdate):
                self.history[record.version] = dict(record.thresholds)
                self.rollouts[record.version] = (record.live_policy, record.rollout)
                carried = {r.digest: r.policy for r in (record.live_policy, record.rollout) if r and r.policy}
                self.texts |= carried
                self.published |= carried.keys()
                if record.version >= self.version:
                    self.version = record.version
                    self.thresholds = dict(record.thresholds)
                    self.explore_share = record.explore_share
                    self.live, self.rollout = record.live_policy, record.rollout
            elif isinstance(record, ControllerReport):
                # a genuine old report copied to the end of the topic must not roll the state back
                if report is None or (record.processed_offset, record.at) >= (report.processed_offset, report.at):
                    report = record
            elif isinstance(record, ControlReply):
                replies[record.offset] = record
        if report is not None:
            self.targets = report.targets
            self.version = max(self.version, report.version)
            self.lam, self.mu = report.lam, report.mu
            self.paused = set(report.paused) & set(self.tiers)
            self.pinned = report.pinned
            self.last_seq = dict(report.last_seq)
            self.processed_offset = report.processed_offset
            self.rejected = Counter(report.rejected)
            if report.base:
                self.base = dict(report.base)
            elif self.live is not None:  # a pushed policy without steerable thresholds runs live
                self.base = self._base_of(self.live)
        pending: list[tuple[int, ControlCommand | DecodeError]] = []
        for offset, record in records:
            if offset <= self.processed_offset or not isinstance(record, ControlCommand | DecodeError):
                continue
            reply = replies.get(offset)
            if reply is not None and isinstance(record, ControlCommand) and not _answers(reply, record):
                self.ignored["reply:other_command"] += 1
                reply = None
            if reply is None:
                pending.append((offset, record))
                continue
            self.processed_offset = offset
            if not reply.accepted:
                self.rejected[reply.reason] += 1
            elif isinstance(record, ControlCommand):
                why = self._reapplicable(record)
                if why is not None:
                    self.ignored[f"command:{why}"] += 1
                    continue
                self.last_seq[record.key_id] = max(self.last_seq.get(record.key_id, -1), record.seq)
                self._apply(record)
        return pending

    def _reapplicable(self, command: ControlCommand) -> str | None:
        """Why an accepted command must not be applied again at recovery, or ``None``: its HMAC must
        still check, and what it names must still exist (a key or a version may have gone since)."""
        why = check_signature(command, self.keys)
        if why is not None:
            return why
        if command.action is CommandAction.PIN_POLICY and command.policy_version not in self.history:
            return "unknown_version"
        if command.action is CommandAction.SET_THRESHOLDS and self.base is None:
            return "policy_not_steerable"
        if command.action is CommandAction.SET_TARGETS and command.targets is None:
            return "no_targets"
        return None

    # --- commands -------------------------------------------------------------------------------

    def refuse(self, offset: int, reason: str, now: float, command: ControlCommand | None = None) -> ControlReply:
        """Answer a command that changes nothing (also for records that could not be decoded)."""
        self.processed_offset = max(self.processed_offset, offset)
        self.rejected[reason] += 1
        key_id, seq = (command.key_id, command.seq) if command else ("", 0)
        return ControlReply(offset=offset, accepted=False, reason=reason, key_id=key_id, seq=seq, at=now)

    def handle(self, offset: int, command: ControlCommand, now: float) -> tuple[ControlReply, PolicyUpdate | None]:
        """Check and apply one command; an accepted one that changes the policy yields an update."""
        reason = check_command(
            command,
            keys=self.keys,
            last_seq=self.last_seq,
            tiers=self.tiers,
            paused=frozenset(self.paused),
            versions=self.history,
            now=now,
            pools=self.pools,
        )
        if reason is None and command.action is CommandAction.SET_THRESHOLDS and self.base is None:
            reason = "policy_not_steerable"
        if reason is not None:
            return self.refuse(offset, reason, now, command), None
        self.processed_offset = max(self.processed_offset, offset)
        self.last_seq[command.key_id] = command.seq
        why = self._apply(command)
        reply = ControlReply(offset=offset, accepted=True, reason=why, key_id=command.key_id, seq=command.seq, at=now)
        steers = command.action not in (CommandAction.SET_TARGETS, CommandAction.SCALE_POOL)
        update = self._publish(why, now, force=True) if steers else None
        return reply, update

    def _apply(self, command: ControlCommand) -> str:
        who = command.issuer or command.key_id
        match command.action:
            case CommandAction.SET_TARGETS:
                assert command.targets is not None
                self.targets = command.targets
                return f"targets set by {who}: {_describe(self.targets)}"
            case CommandAction.SET_THRESHOLDS:
                assert self.base is not None and command.thresholds
                self.base = {**self.base, **{t: v for t, v in command.thresholds.items() if t in self.base}}
                return f"base thresholds set by {who}"
            case CommandAction.PAUSE_TIER:
                self.paused.add(command.tier)
                return f"tier {command.tier} paused by {who}"
            case CommandAction.RESUME_TIER:
                self.paused.discard(command.tier)
                return f"tier {command.tier} resumed by {who}"
            case CommandAction.PIN_POLICY:
                version = command.policy_version
                self.pinned = True
                self.thresholds = dict(self.history[version])
                self.live, self.rollout = self.rollouts.get(version, (None, None))
                self.base = self._base_of(self.live)
                self.drift.rebase()
                running = self.live.describe() if self.live else "the config's own policy"
                beside = f", {self.rollout.describe()}" if self.rollout else ""
                return f"pinned to v{version} ({running}{beside}) by {who}"
            case CommandAction.RELEASE_POLICY:
                self.pinned = False
                return f"policy released by {who}"
            case CommandAction.SCALE_POOL:
                return f"pool {command.pool} to {command.replicas} replicas, by {who}"
            case CommandAction.PUSH_POLICY:
                pushed = command.rollout
                assert pushed is not None
                self.texts[pushed.digest] = pushed.policy
                self.drift.rebase()  # acceptance changes on purpose
                if pushed.mode is not RolloutMode.LIVE:
                    self.rollout = pushed  # beside whichever policy runs live
                    return f"policy {pushed.describe()} pushed by {who}"
                self.live, self.rollout = pushed, None
                self.base = self._base_of(pushed)  # the law steers the policy that runs
                self.thresholds = dict(self.base or {})
                self.pinned = False
                return f"policy {pushed.describe()} pushed by {who}"

    # --- observation and control ----------------------------------------------------------------

    def observe(self, result: Result, now: float) -> None:
        self.window.add(result, now)
        self.drift.observe(result, now)
        if result.explored:
            self.spend.add_explored(now)

    def observe_copy(self, answer: Answer, now: float) -> None:
        """An exploration copy's answer (``<ns>.explored``): its cost counts against the budget."""
        self.spend.add_copy(now, answer.cost)

    def step(self, now: float) -> PolicyUpdate | None:
        """One period of the law: measure the window, move λ and μ, publish if thresholds moved."""
        observed = self._with_exploration(
            measure(self.window, now, self.targets.latency_quantile, self.targets.latency_ms), now
        )
        self.last_observed = observed
        self._rebase_moved()
        for tier, latency in observed.tier_latency_ms.items():
            old = self.ended_latency_ms.get(tier, latency)
            self.ended_latency_ms[tier] = 0.7 * old + 0.3 * latency
        if self.version == 0:
            return self._publish("initial policy", now, force=True)
        share = self._bounded_share()
        if share is not None and not _near(share, self.explore_share):
            return self._publish(self._share_reason(share), now, force=True)
        if self.pinned or self.base is None:
            return None
        t = self.targets
        goals = Goals(t.cost_per_request, t.cost_per_second, t.latency_ms, t.quality_floor)
        obs = Observation(
            observed.requests,
            observed.cost_per_request,
            observed.cost_per_second,
            observed.latency_ms,
            observed.mean_confidence,
            observed.over_latency_share,
        )
        lam = next_lambda(self.lam, obs, goals, self.params, lambda_bounds(self.base))
        mu = next_mu(self.mu, obs, goals, self.params, t.latency_quantile)
        if (lam, mu) == (self.lam, self.mu):
            return None
        why = _law_reason(self.lam, lam, self.mu, mu, observed, t)
        self.lam, self.mu = lam, mu
        return self._publish(why, now)

    def _rebase_moved(self) -> None:
        """Restart the acceptance reference of every tier whose threshold moved since it was taken.

        A threshold the law or an operator moved changes the tier's acceptance rate on purpose;
        what the drift watch must report is the rate moving under the *same* threshold (the
        answers or the traffic changed), so a moved threshold starts a fresh reference.
        """
        for tier, threshold in self.thresholds.items():
            basis = self.drift_basis.setdefault(tier, threshold)
            if abs(threshold - basis) >= DRIFT_REBASE_MOVE:
                self.drift.rebase([tier])
                self.drift_basis[tier] = threshold

    def _with_exploration(self, observed: Observed, now: float) -> Observed:
        """``observed`` with the copies' spend added to the cost the law steers, and shown apart."""
        self.spend.trim(now)
        extra = self.spend.per_request(observed.requests)
        if not self.exploration.enabled:
            return observed
        return msgspec.structs.replace(
            observed,
            cost_per_request=observed.cost_per_request + extra,
            cost_per_second=observed.cost_per_second + extra * observed.rate,
            explore_cost_per_request=extra,
            explore_share=self._bounded_share() or 0.0,
            explored_requests=len(self.spend.explored),
        )

    def _bounded_share(self) -> float | None:
        """The share routers should explore at now (``None``: exploration is off); with no explored
        request in the window (a small share, a quiet minute) the share in force stands."""
        if not self.exploration.enabled:
            return None
        spent = self.spend.per_explored()
        if spent <= 0.0 and self.explore_share is not None:
            return self.explore_share
        return bounded_share(self.exploration, self.targets.cost_per_request, spent)

    def _share_reason(self, share: float) -> str:
        if share >= self.exploration.share:
            return f"exploration at the configured share {share:.3g}"
        bound = self.exploration.max_cost_share
        return f"exploration share {share:.3g}: its copies held to {bound:.0%} of the budget's cost per request"

    def _steered(self) -> dict[str, float]:
        if self.base is None:
            return {}
        if self.pinned:
            return dict(self.thresholds)
        weights = latency_weights(self.tiers, self.ended_latency_ms)
        return steer_thresholds(self.base, self.lam, self.mu, weights)

    def _base_of(self, live: Rollout | None) -> dict[str, float] | None:
        """The base thresholds of the policy that runs live: the config's own, or a pushed one's."""
        if live is None:
            return None if self.own_base is None else dict(self.own_base)
        _, post = parse_policy(json.loads(self.texts[live.digest])).build()
        return post.steerable_thresholds(self.tiers)

    def _on_wire(self, rollout: Rollout | None) -> Rollout | None:
        """``rollout`` as the next update carries it: with its text the first time, by digest after."""
        if rollout is None:
            return None
        if rollout.digest in self.published:
            return rollout.by_digest()
        self.published.add(rollout.digest)
        return msgspec.structs.replace(rollout, policy=self.texts[rollout.digest])

    def _publish(self, reason: str, now: float, force: bool = False) -> PolicyUpdate | None:
        thresholds = self._steered()
        moved = any(abs(v - self.thresholds.get(k, math.inf)) >= THRESHOLD_CHANGE for k, v in thresholds.items())
        if not (force or moved):
            return None
        self.version += 1
        self.thresholds = thresholds
        self.history[self.version] = dict(thresholds)
        self.rollouts[self.version] = (self.live, self.rollout)
        self.explore_share = self._bounded_share()
        return PolicyUpdate(
            version=self.version,
            thresholds=thresholds,
            allowed_tiers=tuple(t for t in self.tiers if t not in self.paused),
            reason=reason,
            issued_at=now,
            lam=self.lam,
            mu=self.mu,
            pinned=self.pinned,
            explore_share=self.explore_share,
            rollout=self._on_wire(self.rollout),
            live_policy=self._on_wire(self.live),
        )

    def report(self, now: float) -> ControllerReport:
        return ControllerReport(
            targets=self.targets,
            observed=self.last_observed,
            version=self.version,
            lam=self.lam,
            mu=self.mu,
            at=now,
            paused=tuple(t for t in self.tiers if t in self.paused),
            pinned=self.pinned,
            last_seq=dict(self.last_seq),
            processed_offset=self.processed_offset,
            rejected=dict(self.rejected),
            base=dict(self.base or {}),
            ignored=dict(self.ignored),
            drift=tuple(alarm.describe() for alarm in self.drift.alarms(now)),
        )


SPEND_WINDOW_S = 60.0
"""The least window the copies' cost per explored request is measured over: at a small share the
control window holds too few explored requests to measure it steadily."""
DRIFT_REBASE_MOVE = 0.02
"""A threshold moved this far from the one a tier's acceptance reference was taken under restarts it."""


def _near(share: float, published: float | None) -> bool:
    """Whether ``share`` is close enough to the one published that routers need no new version
    (within 10% of it: the bound is a budget, not a set point)."""
    return published is not None and abs(share - published) <= 0.1 * max(published, 1e-6)


def report_due(report: ControllerReport, last: ControllerReport | None, every_s: float, quiet_every_s: float) -> bool:
    """Whether to publish ``report``: every ``every_s`` while the state moves, every ``quiet_every_s``
    while it equals ``last`` but for its time (each report keeps a control topic's readers busy)."""
    if last is None:
        return True
    unchanged = msgspec.structs.replace(report, at=last.at) == last
    return report.at - last.at >= (quiet_every_s if unchanged else every_s)


def _answers(reply: ControlReply, command: ControlCommand) -> bool:
    """Whether ``reply`` names ``command`` (key id and sequence number, besides the offset): a genuine
    reply to an older command at the same offset (a rebuilt topic) answers nothing here."""
    return (reply.key_id, reply.seq) == (command.key_id, command.seq)


def _describe(targets: Targets) -> str:
    parts = []
    if targets.cost_per_request is not None:
        parts.append(f"cost/request {targets.cost_per_request:.4g}")
    if targets.cost_per_second is not None:
        parts.append(f"cost/s {targets.cost_per_second:.4g}")
    if targets.latency_ms is not None:
        parts.append(f"p{targets.latency_quantile * 100:g} <= {targets.latency_ms:g} ms")
    if targets.quality_floor is not None:
        parts.append(f"quality >= {targets.quality_floor:g}")
    return ", ".join(parts) or "none"


def _law_reason(lam0: float, lam: float, mu0: float, mu: float, observed: Observed, targets: Targets) -> str:
    parts = []
    if lam != lam0:
        parts.append(f"λ {lam0:+.3f}→{lam:+.3f} (cost/request {observed.cost_per_request:.4g})")
    if mu != mu0:
        parts.append(f"μ {mu0:.3f}→{mu:.3f} (p{targets.latency_quantile * 100:g} {observed.latency_ms:.0f} ms)")
    return "; ".join(parts) + f" vs {_describe(targets)}"
