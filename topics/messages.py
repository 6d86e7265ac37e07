"""The messages that travel between stages, one frozen dataclass each.

Wire keys are short and stable; ``from_wire`` validates every field (see
:mod:`topics.wire`). A Task carries the whole Request and the history of earlier
answers, and an Answer carries its Task, so no stage ever needs a lookup: any
replica can escalate or finish a request from the record alone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from topics.errors import DecodeError
from topics.wire import DEFAULT_MAX_PAYLOAD_BYTES, MAX_ID_CHARS, Fields, drop_none, pack, unpack


class Status(StrEnum):
    """How a request ended."""

    OK = "ok"
    """A tier's answer was accepted."""
    EXHAUSTED = "exhausted"
    """No tier was confident enough; the best answer seen is delivered."""
    EXPIRED = "expired"
    """The deadline passed before an answer was accepted."""
    REJECTED = "rejected"
    """The request could not be served (e.g. none of its allowed tiers exist)."""


@dataclass(frozen=True, slots=True)
class Hints:
    """What a client may say about where its request may run."""

    allowed_tiers: tuple[str, ...] | None = None
    """Restrict the request to these tiers; ``None`` allows all."""
    max_cost: float | None = None
    priority: int = 0

    def to_map(self) -> dict[str, Any]:
        tiers = list(self.allowed_tiers) if self.allowed_tiers is not None else None
        return drop_none({"at": tiers, "mc": self.max_cost, "pr": self.priority})

    @classmethod
    def from_fields(cls, f: Fields) -> Hints:
        return cls(
            allowed_tiers=f.str_list("at") if f.has("at") else None,
            max_cost=f.opt_float("mc", lo=0.0),
            priority=f.int_("pr", lo=-1000, hi=1000) if f.has("pr") else 0,
        )


@dataclass(frozen=True, slots=True)
class Request:
    """A query as a client submits it to ``<ns>.requests``."""

    id: str
    input: str
    created_at: float
    """Epoch seconds when the client created it; end-to-end latency counts from here."""
    deadline: float | None = None
    """Epoch seconds after which the request ends ``expired``."""
    hints: Hints = field(default_factory=Hints)
    tenant: str = ""

    def to_map(self) -> dict[str, Any]:
        return drop_none(
            {
                "id": self.id,
                "in": self.input,
                "ca": self.created_at,
                "dl": self.deadline,
                "h": self.hints.to_map(),
                "tn": self.tenant,
            }
        )

    @classmethod
    def from_fields(cls, f: Fields) -> Request:
        return cls(
            id=f.str_("id", max_len=MAX_ID_CHARS, non_empty=True),
            input=f.str_("in"),
            created_at=f.float_("ca", lo=0.0),
            deadline=f.opt_float("dl", lo=0.0),
            hints=Hints.from_fields(f.nested("h")) if f.has("h") else Hints(),
            tenant=f.str_("tn", max_len=MAX_ID_CHARS) if f.has("tn") else "",
        )

    def to_wire(self) -> bytes:
        return pack("request", self.to_map())

    @classmethod
    def from_wire(cls, raw: bytes, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Request:
        return cls.from_fields(unpack(raw, "request", max_bytes))


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One earlier answer of a request, as later hops and the verifier see it."""

    answer_id: str
    tier: str
    model: str
    output: str
    confidence: float
    cost: float
    latency_ms: float

    def to_map(self) -> dict[str, Any]:
        return {
            "aid": self.answer_id,
            "t": self.tier,
            "m": self.model,
            "o": self.output,
            "c": self.confidence,
            "co": self.cost,
            "l": self.latency_ms,
        }

    @classmethod
    def from_fields(cls, f: Fields) -> HistoryEntry:
        return cls(
            answer_id=f.str_("aid", max_len=2 * MAX_ID_CHARS),
            tier=f.str_("t", non_empty=True),
            model=f.str_("m"),
            output=f.str_("o"),
            confidence=f.confidence("c"),
            cost=f.float_("co", lo=0.0),
            latency_ms=f.float_("l", lo=0.0),
        )


@dataclass(frozen=True, slots=True)
class Task:
    """A request sent to one tier, on ``<ns>.tier.<T>`` or ``<ns>.escalate.<T>``."""

    request: Request
    tier: str
    hop: int = 0
    """0 for the router's first choice; +1 on every escalation."""
    history: tuple[HistoryEntry, ...] = ()
    policy_version: int = 0
    source_answer: str | None = None
    """The answer whose low confidence caused this escalation (``None`` on hop 0)."""
    allowed: tuple[str, ...] = ()
    """Tiers the router left for this request, cheapest first; empty means all."""

    def to_map(self) -> dict[str, Any]:
        return drop_none(
            {
                "r": self.request.to_map(),
                "t": self.tier,
                "hp": self.hop,
                "hs": [entry.to_map() for entry in self.history],
                "pv": self.policy_version,
                "sa": self.source_answer,
                "al": list(self.allowed),
            }
        )

    @classmethod
    def from_fields(cls, f: Fields) -> Task:
        return cls(
            request=Request.from_fields(f.nested("r")),
            tier=f.str_("t", non_empty=True, max_len=MAX_ID_CHARS),
            hop=f.int_("hp", lo=0, hi=1000),
            history=tuple(HistoryEntry.from_fields(e) for e in f.nested_list("hs")),
            policy_version=f.int_("pv", lo=0),
            source_answer=f.opt_str("sa"),
            allowed=f.str_list("al") if f.has("al") else (),
        )

    def to_wire(self) -> bytes:
        return pack("task", self.to_map())

    @classmethod
    def from_wire(cls, raw: bytes, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Task:
        return cls.from_fields(unpack(raw, "task", max_bytes))


@dataclass(frozen=True, slots=True)
class Answer:
    """A tier's answer to a Task, on ``<ns>.answers``."""

    task: Task
    model: str
    output: str
    confidence: float
    """Finite and in [0, 1]; a backend's invalid value is replaced by 0 and ``error`` set."""
    features: dict[str, float] = field(default_factory=dict)
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    latency_ms: float = 0.0
    error: str | None = None
    """Why this answer must not be accepted (backend failure, invalid confidence)."""

    @property
    def tier(self) -> str:
        return self.task.tier

    @property
    def request_id(self) -> str:
        return self.task.request.id

    @property
    def answer_id(self) -> str:
        """Stable id of this answer: a repeated hop yields the same id."""
        return f"{self.task.request.id}/{self.task.hop}/{self.task.tier}"

    def as_history(self) -> HistoryEntry:
        return HistoryEntry(
            answer_id=self.answer_id,
            tier=self.tier,
            model=self.model,
            output=self.output,
            confidence=self.confidence,
            cost=self.cost,
            latency_ms=self.latency_ms,
        )

    def to_wire(self) -> bytes:
        return pack(
            "answer",
            drop_none(
                {
                    "tk": self.task.to_map(),
                    "m": self.model,
                    "o": self.output,
                    "c": self.confidence,
                    "f": self.features,
                    "ti": self.tokens_in,
                    "to": self.tokens_out,
                    "co": self.cost,
                    "l": self.latency_ms,
                    "e": self.error,
                }
            ),
        )

    @classmethod
    def from_wire(cls, raw: bytes, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Answer:
        f = unpack(raw, "answer", max_bytes)
        return cls(
            task=Task.from_fields(f.nested("tk")),
            model=f.str_("m"),
            output=f.str_("o"),
            confidence=f.confidence("c"),
            features=f.float_map("f"),
            tokens_in=f.int_("ti", lo=0),
            tokens_out=f.int_("to", lo=0),
            cost=f.float_("co", lo=0.0),
            latency_ms=f.float_("l", lo=0.0),
            error=f.opt_str("e"),
        )


@dataclass(frozen=True, slots=True)
class Result:
    """The final outcome of a request, on ``<ns>.results`` (one delivered per id)."""

    request_id: str
    status: Status
    output: str = ""
    tier: str = ""
    model: str = ""
    confidence: float = 0.0
    total_cost: float = 0.0
    latency_ms: float = 0.0
    """End to end: from the request's ``created_at`` to the decision."""
    path: tuple[str, ...] = ()
    """Tiers that answered, in order."""
    policy_version: int = 0
    reason: str | None = None
    completed_at: float = 0.0

    def to_wire(self) -> bytes:
        return pack(
            "result",
            drop_none(
                {
                    "id": self.request_id,
                    "s": self.status.value,
                    "o": self.output,
                    "t": self.tier,
                    "m": self.model,
                    "c": self.confidence,
                    "co": self.total_cost,
                    "l": self.latency_ms,
                    "p": list(self.path),
                    "pv": self.policy_version,
                    "rs": self.reason,
                    "at": self.completed_at,
                }
            ),
        )

    @classmethod
    def from_wire(cls, raw: bytes, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Result:
        f = unpack(raw, "result", max_bytes)
        status = f.str_("s")
        if status not in Status.__members__.values():
            raise DecodeError("out_of_range", f"result.s={status!r} is not a known status")
        return cls(
            request_id=f.str_("id", max_len=MAX_ID_CHARS, non_empty=True),
            status=Status(status),
            output=f.str_("o"),
            tier=f.str_("t"),
            model=f.str_("m"),
            confidence=f.confidence("c"),
            total_cost=f.float_("co", lo=0.0),
            latency_ms=f.float_("l", lo=0.0),
            path=f.str_list("p"),
            policy_version=f.int_("pv", lo=0),
            reason=f.opt_str("rs"),
            completed_at=f.float_("at", lo=0.0),
        )


DEAD_LETTER_PAYLOAD_BYTES = 1024
"""How much of a bad record a dead letter keeps (enough to debug, never a whole blob)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record no stage could process, on ``<ns>.dlq``, with where it came from and why."""

    source_topic: str
    partition: int
    offset: int
    stage: str
    error_class: str
    reason: str
    detail: str
    payload_size: int
    payload_sha256: str
    payload_head: bytes
    request_id: str | None = None
    """The record's key when it had one, so a checker can account for the request."""
    at: float = 0.0

    @classmethod
    def for_record(
        cls,
        *,
        topic: str,
        partition: int,
        offset: int,
        stage: str,
        key: bytes | None,
        value: bytes | None,
        error: Exception,
        at: float,
    ) -> DeadLetter:
        payload = bytes(value or b"")
        reason = error.reason if isinstance(error, DecodeError) else "processing_error"
        return cls(
            source_topic=topic,
            partition=partition,
            offset=offset,
            stage=stage,
            error_class=type(error).__name__,
            reason=reason,
            detail=str(error)[:500],
            payload_size=len(payload),
            payload_sha256=hashlib.sha256(payload).hexdigest(),
            payload_head=b"" if reason == "too_large" else payload[:DEAD_LETTER_PAYLOAD_BYTES],
            request_id=key.decode("utf-8", "replace") if key else None,
            at=at,
        )

    def to_wire(self) -> bytes:
        return pack(
            "dead_letter",
            drop_none(
                {
                    "st": self.source_topic,
                    "pa": self.partition,
                    "of": self.offset,
                    "sg": self.stage,
                    "ec": self.error_class,
                    "rs": self.reason,
                    "dt": self.detail,
                    "ps": self.payload_size,
                    "ph": self.payload_sha256,
                    "pl": self.payload_head,
                    "id": self.request_id,
                    "at": self.at,
                }
            ),
        )

    @classmethod
    def from_wire(cls, raw: bytes) -> DeadLetter:
        f = unpack(raw, "dead_letter")
        return cls(
            source_topic=f.str_("st"),
            partition=f.int_("pa"),
            offset=f.int_("of"),
            stage=f.str_("sg"),
            error_class=f.str_("ec"),
            reason=f.str_("rs"),
            detail=f.str_("dt"),
            payload_size=f.int_("ps", lo=0),
            payload_sha256=f.str_("ph"),
            payload_head=f.bytes_("pl"),
            request_id=f.opt_str("id"),
            at=f.float_("at", lo=0.0),
        )
