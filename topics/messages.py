"""The messages that travel between stages, one frozen struct each.

Wire keys are short and stable (``rename``); decoding validates every field (see
:mod:`topics.wire`). A Task carries the whole Request and the history of earlier
answers, and an Answer carries its Task, so no stage ever needs a lookup: any
replica can escalate or finish a request from the record alone.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

import msgspec

from topics.errors import DecodeError
from topics.wire import (
    Confidence,
    Count,
    Finite,
    Id,
    Message,
    Name,
    NonNegative,
    Part,
    tag,
)


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


class Hints(Part, frozen=True, rename={"allowed_tiers": "at", "max_cost": "mc", "priority": "pr"}):
    """What a client may say about where its request may run."""

    allowed_tiers: tuple[str, ...] | None = None
    """Restrict the request to these tiers; ``None`` allows all."""
    max_cost: NonNegative | None = None
    priority: int = 0


class Request(
    Message,
    frozen=True,
    tag=tag("request"),
    rename={"input": "in", "created_at": "ca", "deadline": "dl", "hints": "h", "tenant": "tn"},
):
    """A query as a client submits it to ``<ns>.requests``."""

    id: Id
    input: str
    created_at: NonNegative
    """Epoch seconds when the client sent it; end-to-end latency counts from here."""
    deadline: NonNegative | None = None
    """Epoch seconds after which the request ends ``expired``."""
    hints: Hints = msgspec.field(default_factory=Hints)
    tenant: Name = ""


class HistoryEntry(
    Part,
    frozen=True,
    rename={
        "answer_id": "aid",
        "tier": "t",
        "model": "m",
        "output": "o",
        "confidence": "c",
        "cost": "co",
        "latency_ms": "l",
    },
):
    """One earlier answer of a request, as later hops and the verifier see it."""

    answer_id: str
    tier: Id
    model: str
    output: str
    confidence: Confidence
    cost: NonNegative
    latency_ms: NonNegative


class Decision(
    Part,
    frozen=True,
    rename={"stage": "sg", "policy": "p", "action": "a", "tier": "t", "confidence": "c", "reason": "rs"},
):
    """One hop's decision, as the router or the verifier made it: why a request went where it went."""

    stage: Name
    """``route`` or ``verify``."""
    policy: Name
    action: Name
    """route: ``start`` or ``reject``; verify: ``accept``, ``escalate``, ``stop``, ``expired`` or ``exhausted``."""
    tier: str = ""
    """route: the tier it starts at; verify: the tier whose answer was judged."""
    confidence: Confidence | None = None
    """verify: the answer's confidence."""
    reason: str = ""
    """The policy's own words: the score it read and the threshold it met or missed."""


class Task(
    Message,
    frozen=True,
    tag=tag("task"),
    rename={
        "request": "r",
        "tier": "t",
        "hop": "hp",
        "history": "hs",
        "policy_version": "pv",
        "source_answer": "sa",
        "allowed": "al",
        "estimates": "es",
        "why": "wy",
        "explored": "xd",
        "explore_copy": "xc",
        "propensities": "pp",
        "canary": "cn",
        "shadow": "sh",
    },
):
    """A request sent to one tier, on ``<ns>.tier.<T>`` or ``<ns>.escalate.<T>``."""

    request: Request
    tier: Name
    hop: Count = 0
    """0 for the router's first choice; +1 on every escalation."""
    history: tuple[HistoryEntry, ...] = ()
    policy_version: Count = 0
    source_answer: str | None = None
    """The answer whose low confidence caused this escalation (``None`` on hop 0)."""
    allowed: tuple[str, ...] = ()
    """Tiers the router left for this request, cheapest first; empty means all."""
    estimates: dict[Name, Confidence] = {}
    """Quality estimates per tier that the policy keeps with the request (cascade routing):
    ex ante from the router, replaced by post-hoc ones for the tiers that answered."""
    why: tuple[Decision, ...] = ()
    """Every decision so far: the router's, then the verifier's on each answer that escalated."""
    explored: bool = False
    """The router drew this request for exploration (``policies/exploration.py``)."""
    explore_copy: bool = False
    """An exploration copy: its answer goes to ``<ns>.explored``, is never verified and never delivered."""
    propensities: dict[Name, Confidence] = {}
    """With exploration configured: the probability with which each allowed tier was sent the request
    at routing (1 for the start tier, the exploration share for the others); empty without."""
    canary: bool = False
    """A canary policy decides this request (``topics/rollout.py``)."""
    shadow: tuple[Decision, ...] = ()
    """What a shadow policy would have decided so far (it decides nothing)."""


class Answer(
    Message,
    frozen=True,
    tag=tag("answer"),
    rename={
        "task": "tk",
        "model": "m",
        "output": "o",
        "confidence": "c",
        "features": "f",
        "tokens_in": "ti",
        "tokens_out": "to",
        "cost": "co",
        "latency_ms": "l",
        "error": "e",
    },
):
    """A tier's answer to a Task, on ``<ns>.answers``."""

    task: Task
    model: str
    output: str
    confidence: Confidence
    """A backend's invalid value is replaced by 0 and ``error`` set (see the model worker)."""
    features: dict[str, Finite] = {}
    tokens_in: Count = 0
    tokens_out: Count = 0
    cost: NonNegative = 0.0
    latency_ms: NonNegative = 0.0
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


class Result(
    Message,
    frozen=True,
    tag=tag("result"),
    rename={
        "request_id": "id",
        "status": "s",
        "output": "o",
        "tier": "t",
        "model": "m",
        "confidence": "c",
        "total_cost": "co",
        "latency_ms": "l",
        "path": "p",
        "policy_version": "pv",
        "reason": "rs",
        "completed_at": "at",
        "why": "wy",
        "explored": "xd",
        "propensities": "pp",
        "canary": "cn",
        "shadow": "sh",
    },
):
    """The final outcome of a request, on ``<ns>.results`` (one delivered per id)."""

    request_id: Id
    status: Status
    output: str = ""
    tier: str = ""
    model: str = ""
    confidence: Confidence = 0.0
    total_cost: NonNegative = 0.0
    latency_ms: NonNegative = 0.0
    """End to end: from the request's ``created_at`` to the decision."""
    path: tuple[str, ...] = ()
    """Tiers that answered, in order."""
    policy_version: Count = 0
    reason: str | None = None
    completed_at: NonNegative = 0.0
    why: tuple[Decision, ...] = ()
    """Each hop's decision, in order (:class:`Decision`): the route, then every verdict."""
    explored: bool = False
    """Copies of the request also ran on every other allowed tier (their answers are on ``<ns>.explored``)."""
    propensities: dict[Name, Confidence] = {}
    """As the request's Task recorded them (:attr:`Task.propensities`)."""
    canary: bool = False
    """A canary policy decided it, not the deployment's own (``topics/rollout.py``)."""
    shadow: tuple[Decision, ...] = ()
    """What a shadow policy would have decided at each hop (where it would have started, whether
    it would have accepted each answer); it changed nothing."""


DEAD_LETTER_PAYLOAD_BYTES = 1024
"""How much of a bad record a dead letter keeps (enough to debug, never a whole blob)."""


class DeadLetter(
    Message,
    frozen=True,
    tag=tag("dead_letter"),
    rename={
        "source_topic": "st",
        "partition": "pa",
        "offset": "of",
        "stage": "sg",
        "error_class": "ec",
        "reason": "rs",
        "detail": "dt",
        "payload_size": "ps",
        "payload_sha256": "ph",
        "payload_head": "pl",
        "request_id": "id",
        "at": "at",
    },
):
    """A record no stage could process, on ``<ns>.dlq``, with where it came from and why."""

    source_topic: str
    partition: int
    offset: int
    stage: str
    error_class: str
    reason: str
    detail: str
    payload_size: Count
    payload_sha256: str
    payload_head: bytes
    request_id: str | None = None
    """The record's key when it had one, so a checker can account for the request."""
    at: NonNegative = 0.0

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


class LedgerEntry(
    Message,
    frozen=True,
    tag=tag("ledger"),
    rename={
        "tenant": "tn",
        "request_id": "id",
        "period": "pd",
        "cost": "co",
        "settled": "sd",
        "result": "r",
        "at": "at",
        "origin": "or",
    },
):
    """One step of a gateway call, on ``<ns>.ledger``: its budget reservation before it is sent, or its
    settlement once its outcome is in.

    Every server process replays the ledger when it starts and follows it after, so a tenant's budget
    holds across server processes and restarts. A settlement of a call that carried an
    ``Idempotency-Key`` keeps its Result, so a retry after a restart gets it without a second model call.
    """

    tenant: str
    """"" when the config names no tenants (an idempotent call's settlement only)."""
    request_id: Id
    period: Count
    """The budget period it counts in (``floor(time / budget_period_s)``; 0 without a budget)."""
    cost: NonNegative
    """Reserved (the call's worst case) or, settled, what every hop of it cost."""
    settled: bool = False
    result: Result | None = None
    at: NonNegative = 0.0
    origin: str = ""
    """The server process that wrote it (its own entries come back to it too)."""
