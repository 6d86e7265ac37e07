"""The control plane's messages on ``<ns>.control``: operator commands and the controller's output.

* :class:`ControlCommand` — an operator's signed order: set targets, pause or resume
  a tier, pin or release a policy version.
* :class:`ControlReply` — the controller's answer to one command: accepted, or
  rejected with a reason code (nothing changed).
* :class:`PolicyUpdate` — a versioned set of per-tier thresholds, the multipliers
  that produced them and the tiers allowed; routers and verifiers apply the newest.
* :class:`ControllerReport` — targets, observed values and state, published every
  few seconds; ``tierflow budget show``/``status`` read it and a restarted controller
  recovers from it.

Signing: HMAC-SHA256 over the canonical encoding — the command's own msgpack with
the ``sig`` field empty (msgspec writes fields in declaration order, floats as
float64, so the bytes are the same in every process). The key id names the key, the
sequence number must grow per key (replays are refused), and the command is valid
only between ``issued_at`` and ``expires_at``. Value bounds are part of the schema,
so NaN, infinite, negative or absurd budgets fail at decode like any bad record.
"""

from __future__ import annotations

import hashlib
import hmac
from enum import StrEnum
from typing import Annotated

import msgspec

from topics.wire import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    Confidence,
    Count,
    Id,
    Message,
    Name,
    NonNegative,
    Part,
    decode_any,
    tag,
)

MAX_BUDGET = 1e6
"""Cost per request or per second above this is refused as absurd (any currency unit)."""
MAX_LATENCY_MS = 3_600_000.0
MAX_VALIDITY_S = 24 * 3600.0
"""A command may be valid for at most a day: a leaked old command must not stay usable."""

Budget = Annotated[float, msgspec.Meta(gt=0.0, le=MAX_BUDGET)]
LatencyMs = Annotated[float, msgspec.Meta(gt=0.0, le=MAX_LATENCY_MS)]
Quantile = Annotated[float, msgspec.Meta(ge=0.5, le=0.999)]
Multiplier = Annotated[float, msgspec.Meta(ge=-1e6, le=1e6)]


class CommandAction(StrEnum):
    SET_TARGETS = "set_targets"
    SET_THRESHOLDS = "set_thresholds"
    """Replace the base thresholds θ⁰ the controller steers from."""
    PAUSE_TIER = "pause_tier"
    RESUME_TIER = "resume_tier"
    PIN_POLICY = "pin_policy"
    RELEASE_POLICY = "release_policy"


class Targets(
    Part,
    frozen=True,
    rename={
        "cost_per_request": "cr",
        "cost_per_second": "cs",
        "latency_ms": "lm",
        "latency_quantile": "lq",
        "quality_floor": "qf",
    },
):
    """What the controller holds; an absent target is not controlled."""

    cost_per_request: Budget | None = None
    cost_per_second: Budget | None = None
    latency_ms: LatencyMs | None = None
    """The end-to-end latency that the ``latency_quantile`` of requests must stay under."""
    latency_quantile: Quantile = 0.95
    quality_floor: Confidence | None = None
    """Mean delivered confidence (the online proxy for accuracy) must not fall below this."""


class ControlCommand(
    Message,
    frozen=True,
    tag=tag("control_command"),
    rename={
        "action": "a",
        "targets": "tg",
        "thresholds": "th",
        "tier": "t",
        "policy_version": "pv",
        "issuer": "is",
        "key_id": "kid",
        "seq": "sq",
        "issued_at": "ia",
        "expires_at": "ex",
        "sig": "sig",
    },
):
    """An operator's order, signed (see the module docstring)."""

    action: CommandAction
    key_id: Id
    seq: Count
    issued_at: NonNegative
    expires_at: NonNegative
    targets: Targets | None = None
    """For ``set_targets``: replaces the current targets."""
    thresholds: dict[str, Confidence] | None = None
    """For ``set_thresholds``: new base thresholds of some tiers, each in [0, 1]."""
    tier: Name = ""
    """For ``pause_tier``/``resume_tier``."""
    policy_version: Count = 0
    """For ``pin_policy``: the version whose thresholds to restore and hold."""
    issuer: Name = ""
    sig: str = ""

    def canonical(self) -> bytes:
        """The signed bytes: this command with an empty signature."""
        return msgspec.structs.replace(self, sig="").to_wire()

    def signed(self, key: bytes) -> ControlCommand:
        return msgspec.structs.replace(self, sig=signature(key, self.canonical()))

    def signature_ok(self, key: bytes) -> bool:
        return hmac.compare_digest(self.sig, signature(key, self.canonical()))


def signature(key: bytes, payload: bytes) -> str:
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


class ControlReply(
    Message,
    frozen=True,
    tag=tag("control_reply"),
    rename={"key_id": "kid", "seq": "sq", "offset": "of", "accepted": "ok", "reason": "rs", "at": "at"},
):
    """The controller's answer to the command at ``offset`` of the control topic."""

    offset: int
    accepted: bool
    reason: str
    key_id: str = ""
    seq: int = 0
    at: NonNegative = 0.0


class PolicyUpdate(
    Message,
    frozen=True,
    tag=tag("policy_update"),
    rename={
        "version": "v",
        "thresholds": "th",
        "lam": "lam",
        "mu": "mu",
        "allowed_tiers": "at",
        "reason": "rs",
        "issued_at": "ia",
        "pinned": "pn",
    },
):
    """A version of the routing/verifying policy; routers and verifiers apply the newest."""

    version: Count
    thresholds: dict[str, Confidence]
    """Per-tier acceptance thresholds for the verifier's policy."""
    allowed_tiers: tuple[str, ...]
    """Tiers that may run (paused ones left out), in ladder order."""
    reason: str
    issued_at: NonNegative
    lam: Multiplier = 0.0
    """The cost multiplier λ that produced the thresholds."""
    mu: Multiplier = 0.0
    """The latency multiplier μ that produced the thresholds."""
    pinned: bool = False


class Observed(
    Part,
    frozen=True,
    rename={
        "requests": "n",
        "window_s": "w",
        "rate": "r",
        "cost_per_request": "cr",
        "cost_per_second": "cs",
        "latency_ms": "lm",
        "escalation_rate": "er",
        "mean_confidence": "mc",
        "over_latency_share": "ol",
        "visited_share": "ts",
        "tier_latency_ms": "tl",
    },
):
    """What the controller saw over its window."""

    requests: Count = 0
    window_s: NonNegative = 0.0
    rate: NonNegative = 0.0
    """Results per second."""
    cost_per_request: NonNegative = 0.0
    cost_per_second: NonNegative = 0.0
    latency_ms: NonNegative = 0.0
    """At the targets' latency quantile."""
    escalation_rate: Confidence = 0.0
    mean_confidence: Confidence = 0.0
    over_latency_share: Confidence = 0.0
    """Share of requests slower than the latency target (what μ steers)."""
    visited_share: dict[str, Confidence] = {}
    """Share of requests each tier ran for (a request escalated twice counts at three tiers): where the work went."""
    tier_latency_ms: dict[str, NonNegative] = {}
    """Mean end-to-end latency of the requests whose path ended at each tier."""


class ControllerReport(
    Message,
    frozen=True,
    tag=tag("controller_report"),
    rename={
        "targets": "tg",
        "observed": "ob",
        "version": "v",
        "lam": "lam",
        "mu": "mu",
        "paused": "pa",
        "pinned": "pn",
        "last_seq": "ls",
        "processed_offset": "po",
        "rejected": "rj",
        "base": "b",
        "at": "at",
    },
):
    """The controller's state, published periodically (and what a restarted controller resumes from)."""

    targets: Targets
    observed: Observed
    version: Count
    lam: Multiplier
    mu: Multiplier
    at: NonNegative
    paused: tuple[str, ...] = ()
    pinned: bool = False
    last_seq: dict[str, int] = {}
    """Highest accepted sequence number per key id (replay protection survives restarts)."""
    processed_offset: int = -1
    """Control-topic offset up to which commands were answered."""
    rejected: dict[str, int] = {}
    """Rejected commands by reason, since the controller's first start."""
    base: dict[str, Confidence] = {}
    """The base thresholds θ⁰ the controller steers from."""


ControlRecord = ControlCommand | ControlReply | PolicyUpdate | ControllerReport
CONTROL_KINDS = (ControlCommand, ControlReply, PolicyUpdate, ControllerReport)


def decode_control(raw: bytes, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> ControlRecord:
    """Decode any record of the control topic (raises :class:`~topics.errors.DecodeError`)."""
    return decode_any(CONTROL_KINDS, raw, max_bytes)  # type: ignore[return-value]
