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
* :class:`PoolReport` — the supervisor's pools (desired, running, ready replicas) and
  the inputs and reason of each scaling decision; ``tierflow status`` shows it.

Signing: HMAC-SHA256 over the canonical encoding — the command's own msgpack with
the ``sig`` field empty (msgspec writes fields in declaration order, floats as
float64, so the bytes are the same in every process). The key id names the key, the
sequence number must grow per key (replays are refused), and the command is valid
only between ``issued_at`` and ``expires_at``. Value bounds are part of the schema,
so NaN, infinite, negative or absurd budgets fail at decode like any bad record.

The controller signs what it writes (:class:`PolicyUpdate`, :class:`ControlReply`,
:class:`ControllerReport`) with its Ed25519 private key: anyone who can produce to the
topic can write such a record, and without a signature a forged update would take over
routing and a forged reply would be applied by a recovering controller. The signature
covers :func:`signed_bytes` — a context naming the deployment's namespace, then the
record's canonical msgpack with ``sig`` empty and ``signer`` (the key id) kept — so a
record signed for one namespace is worthless in another that trusts the same key.
Keys are 64 hex characters: the raw 32-byte private seed, the raw 32-byte public key.
:func:`verify_record` is the one check every reader makes against the public keys it
trusts (:class:`TrustedKeys`); a record without a valid signature is ignored.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, TypeVar

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from topics.errors import ConfigError, DecodeError
from topics.rollout import Rollout
from topics.wire import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    Confidence,
    Count,
    Id,
    Message,
    Name,
    NonNegative,
    Part,
    decode,
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
    SCALE_POOL = "scale_pool"
    """Run ``replicas`` replicas of ``pool``; the controller checks it, the supervisor applies it."""
    PUSH_POLICY = "push_policy"
    """Roll a policy file out in shadow, as a canary, or live (``topics/rollout.py``)."""


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
        "pool": "pl",
        "replicas": "rp",
        "issuer": "is",
        "key_id": "kid",
        "seq": "sq",
        "issued_at": "ia",
        "expires_at": "ex",
        "sig": "sig",
        "rollout": "ro",
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
    pool: Name = ""
    """For ``scale_pool``: ``router``, ``verifier``, ``sink`` or ``worker.<tier>``."""
    replicas: Count = 0
    """For ``scale_pool``: how many replicas the pool should run."""
    issuer: Name = ""
    sig: str = ""
    rollout: Rollout | None = None
    """For ``push_policy``: the policy file and how far it reaches."""

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
    rename={
        "key_id": "kid",
        "seq": "sq",
        "offset": "of",
        "accepted": "ok",
        "reason": "rs",
        "at": "at",
        "signer": "sk",
        "sig": "sg",
    },
):
    """The controller's answer to the command at ``offset`` of the control topic (signed by the controller)."""

    offset: int
    accepted: bool
    reason: str
    key_id: str = ""
    """The answered command's key id and sequence number: a reply counts only for the command it names."""
    seq: int = 0
    at: NonNegative = 0.0
    signer: Name = ""
    """Id of the controller key that signed this record (see :meth:`ControllerKey.sign`)."""
    sig: Name = ""
    """Ed25519 signature over :func:`signed_bytes`, hex; empty: unsigned, ignored by every reader."""


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
        "signer": "sk",
        "sig": "sg",
        "explore_share": "xs",
        "rollout": "ro",
        "live_policy": "lp",
    },
):
    """A version of the routing/verifying policy; routers and verifiers apply the newest correctly signed one."""

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
    signer: Name = ""
    """Id of the controller key that signed this record (see :meth:`ControllerKey.sign`)."""
    sig: Name = ""
    """Ed25519 signature over :func:`signed_bytes`, hex; empty: unsigned, ignored by every reader."""
    explore_share: Confidence | None = None
    """The exploration share routers draw at, bounded by the budget (``None``: the configured one)."""
    rollout: Rollout | None = None
    """A pushed candidate in shadow or as a canary beside the policy that runs live (``None``: none)."""
    live_policy: Rollout | None = None
    """A pushed policy running live instead of the config's own (``None``: the config's own runs)."""


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
        "explore_cost_per_request": "xc",
        "explore_share": "xs",
        "explored_requests": "xn",
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
    explore_cost_per_request: NonNegative = 0.0
    """What exploration copies cost, spread over every request of the window (included in
    ``cost_per_request``, which the law steers)."""
    explore_share: Confidence = 0.0
    """The exploration share in force (0 without exploration)."""
    explored_requests: Count = 0
    """Requests of the window drawn for exploration."""


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
        "ignored": "ig",
        "signer": "sk",
        "sig": "sg",
        "drift": "dr",
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
    ignored: dict[str, int] = {}
    """Records of the control topic this controller ignored since it last started, by ``kind:reason``
    (``reply:unsigned``, ``update:bad_signature``, ``command:unknown_key`` for an accepted command
    whose signature no longer checks at recovery, …): forgeries show up here."""
    drift: tuple[str, ...] = ()
    """The tiers drifting now, one sentence each with the window that shows it (``policies/drift.py``)."""
    signer: Name = ""
    """Id of the controller key that signed this record (see :meth:`ControllerKey.sign`)."""
    sig: Name = ""
    """Ed25519 signature over :func:`signed_bytes`, hex; empty: unsigned, ignored by every reader."""


class PoolStatus(
    Part,
    frozen=True,
    rename={
        "pool": "p",
        "desired": "d",
        "running": "r",
        "ready": "rd",
        "low": "lo",
        "high": "hi",
        "autoscaled": "as",
        "lag": "l",
        "arrival_rate": "ar",
        "service_rate": "sr",
        "reason": "rs",
        "changed_at": "ca",
    },
):
    """One stage pool as the supervisor sees it, with the inputs of its last scaling decision."""

    pool: Name
    desired: Count
    running: Count
    """Replicas started and not finished."""
    ready: Count
    """Replicas that answered and hold at least one partition."""
    low: Count = 0
    high: Count = 0
    """The replicas the pool may run (``policies.autoscale.ReplicaBounds``)."""
    autoscaled: bool = False
    lag: Count = 0
    arrival_rate: NonNegative = 0.0
    """Records per second produced to the pool's topics."""
    service_rate: NonNegative = 0.0
    """Records one replica serves per second of work (0: not measured)."""
    reason: str = ""
    """Why ``desired`` is what it is (``configured``, ``scaled up: lag …``, ``ordered by …``)."""
    changed_at: NonNegative = 0.0


class PoolReport(
    Message,
    frozen=True,
    tag=tag("pool_report"),
    rename={"pools": "ps", "changed": "ch", "at": "at", "signer": "sk", "sig": "sg"},
):
    """The supervisor's pools, published every few seconds and at once after each scaling decision
    (``changed`` names the pools it resized; signed with the controller's key, which the supervisor holds)."""

    pools: tuple[PoolStatus, ...]
    at: NonNegative
    changed: tuple[str, ...] = ()
    signer: Name = ""
    sig: Name = ""


ControlRecord = ControlCommand | ControlReply | PolicyUpdate | ControllerReport | PoolReport
CONTROL_KINDS = (ControlCommand, ControlReply, PolicyUpdate, ControllerReport, PoolReport)
ControllerRecord = ControlReply | PolicyUpdate | ControllerReport | PoolReport
"""What only the controller (and the supervisor, with the controller's key) writes, and signs."""
R = TypeVar("R", bound=ControllerRecord)

SIGNATURE_CONTEXT = b"tierflow-control-signature-v1\x00"
"""Domain separation: these bytes can never be mistaken for any other Ed25519-signed message."""
KEY_HEX_CHARS = 64
"""Private seeds and public keys are 32 raw bytes, written as 64 hex characters."""


def record_kind(record: ControllerRecord) -> str:
    """``update``, ``reply``, ``report`` or ``pools``: the short name counters and logs use."""
    if isinstance(record, PolicyUpdate):
        return "update"
    if isinstance(record, PoolReport):
        return "pools"
    return "reply" if isinstance(record, ControlReply) else "report"


def signed_bytes(record: ControllerRecord, namespace: str) -> bytes:
    """What the controller's signature covers: the context, the namespace, then the record's canonical
    msgpack (its own encoding with ``sig`` empty; ``signer`` stays, so the key id is signed too)."""
    canonical = msgspec.structs.replace(record, sig="").to_wire()
    return b"".join((SIGNATURE_CONTEXT, namespace.encode(), b"\x00", canonical))


def parse_key_hex(text: str, what: str) -> bytes:
    """32 raw key bytes from 64 hex characters (surrounding whitespace allowed); ``what`` names the key
    in the one-line error."""
    value = text.strip()
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(value) != KEY_HEX_CHARS or len(raw) != KEY_HEX_CHARS // 2:
        raise ConfigError(f"{what} must be {KEY_HEX_CHARS} hex characters (a raw 32-byte Ed25519 key)")
    return raw


@dataclass(frozen=True, slots=True)
class ControllerKey:
    """The controller's private key: a key id and the raw 32-byte seed.

    Plain bytes rather than a ``cryptography`` key object, because it travels to the
    controller actor by pickle (the object does not pickle); the seed stays out of ``repr``.
    """

    key_id: str
    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.seed) != KEY_HEX_CHARS // 2:
            raise ConfigError("an Ed25519 private key is 32 bytes")

    @classmethod
    def generate(cls, key_id: str = "") -> ControllerKey:
        """A fresh random key; its id defaults to ``ephemeral-`` and the start of its public key."""
        seed = Ed25519PrivateKey.generate().private_bytes_raw()
        public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
        return cls(key_id or f"ephemeral-{public.hex()[:12]}", seed)

    @classmethod
    def from_hex(cls, key_id: str, text: str, what: str = "the controller's private key") -> ControllerKey:
        return cls(key_id, parse_key_hex(text, what))

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key that verifies this key's signatures."""
        return _private_key(self.seed).public_key().public_bytes_raw()

    def sign(self, record: R, namespace: str) -> R:
        """``record`` with ``signer`` set to this key's id and ``sig`` to its signature for ``namespace``.

        The record is signed as a reader will see it: decoded from its own bytes first, so an ``int``
        where the schema says ``float`` (``issued_at=1``, a threshold of ``1`` from a policy file)
        is signed as the float a reader re-encodes, not as the int that would never verify.
        """
        named = msgspec.structs.replace(record, signer=self.key_id, sig="")
        with contextlib.suppress(DecodeError):  # out of range: no reader decodes it, nothing to agree on
            named = decode(type(named), named.to_wire())
        return msgspec.structs.replace(named, sig=_private_key(self.seed).sign(signed_bytes(named, namespace)).hex())


@dataclass(frozen=True, slots=True)
class TrustedKeys:
    """The public keys whose signatures a reader accepts, and the namespace the records must be for.

    Two keys may be trusted at once, so the controller's key can be rotated without a gap:
    list the new key, switch the controller to it, then drop the old one.
    """

    namespace: str
    keys: Mapping[str, bytes] = field(default_factory=dict)
    """Key id -> raw 32-byte Ed25519 public key."""

    @classmethod
    def from_hex(cls, namespace: str, public_keys: Mapping[str, str]) -> TrustedKeys:
        """From the config's ``[control] public_keys`` (key id -> 64 hex characters)."""
        keys = {kid: parse_key_hex(text, f"control.public_keys.{kid}") for kid, text in public_keys.items()}
        return cls(namespace, keys)


def verify_record(record: ControllerRecord, trusted: TrustedKeys) -> str | None:
    """Why ``record`` must be ignored — ``unsigned``, ``unknown_key`` or ``bad_signature`` — or ``None``
    when a trusted key signed exactly these bytes for this namespace. Pure; never raises."""
    if not record.sig:
        return "unsigned"
    public = trusted.keys.get(record.signer)
    if public is None:
        return "unknown_key"
    try:
        _public_key(bytes(public)).verify(bytes.fromhex(record.sig), signed_bytes(record, trusted.namespace))
    except (InvalidSignature, ValueError):
        return "bad_signature"
    return None


@functools.lru_cache(maxsize=16)
def _private_key(seed: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(seed)


@functools.lru_cache(maxsize=64)
def _public_key(raw: bytes) -> Ed25519PublicKey:
    """Parsed once per key: every update a replica reads is verified with it."""
    return Ed25519PublicKey.from_public_bytes(raw)


def decode_control(raw: bytes, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> ControlRecord:
    """Decode any record of the control topic (raises :class:`~topics.errors.DecodeError`)."""
    return decode_any(CONTROL_KINDS, raw, max_bytes)  # type: ignore[return-value]
