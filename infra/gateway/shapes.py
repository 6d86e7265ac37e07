"""OpenAI's request and response shapes, and tierflow's messages: the gateway's pure half.

A chat or completion body becomes a :class:`Call` (the query text, the routed model or a
tier, streaming, hints) or a :class:`GatewayError` naming the field; a :class:`Result`
becomes OpenAI's response object with a ``tierflow`` object beside ``choices`` and ``usage``:
the tiers that answered, confidence, cost, status and the policy version. Hints ride in the
body's ``tierflow`` extension (``allowed_tiers``, ``max_cost``, ``deadline_s``, ``priority``);
``model`` is ``tierflow`` (route) or one tier's name (that tier only).

``usage`` counts whitespace-separated words, not a tokenizer's tokens: the pipeline's tiers
may be any models, and the gateway does not pretend to know their tokenizers.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from topics.messages import Hints, Request, Result, Status
from workers.results_sink import result_to_json

ROUTED_MODEL = "tierflow"
"""The model name that lets tierflow choose (every other name must be a tier)."""
MAX_DEADLINE_S = 3600.0
HINT_KEYS = frozenset({"allowed_tiers", "max_cost", "deadline_s", "priority"})


@dataclass(frozen=True, slots=True)
class GatewayError(Exception):
    """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with an HTTP status."""

    status: int
    message: str
    param: str | None = None
    type: str = "invalid_request_error"
    code: str | None = None
    retry_after_s: float | None = None
    """With 429 and 503: when to try again (the ``Retry-After`` header)."""

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True, slots=True)
class Call:
    """One chat or completion call, checked."""

    kind: str
    """``chat`` or ``completion``."""
    text: str
    model: str
    stream: bool
    allowed_tiers: tuple[str, ...] | None
    max_cost: float | None
    deadline_s: float | None
    priority: int

    def request(self, request_id: str, now: float, tenant: str = "") -> Request:
        deadline = None if self.deadline_s is None else now + self.deadline_s
        hints = Hints(allowed_tiers=self.allowed_tiers, max_cost=self.max_cost, priority=self.priority)
        return Request(id=request_id, input=self.text, created_at=now, deadline=deadline, hints=hints, tenant=tenant)


def _bad(message: str, param: str | None) -> GatewayError:
    return GatewayError(400, message, param)


def _text(content: Any, param: str) -> str:
    """A message's content: a string, or OpenAI's list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _bad("only text content parts are supported", f"{param}[{i}]")
            parts.append(part["text"])
        return "\n".join(parts)
    raise _bad("content must be a string or a list of text parts", param)


def chat_text(messages: Any) -> str:
    """The query a chat becomes: the user's last message, with the earlier turns before it as context."""
    if not isinstance(messages, list) or not messages:
        raise _bad("messages must be a non-empty list", "messages")
    lines = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _bad("each message must be an object", f"messages[{i}]")
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant"):
            raise _bad("role must be system, developer, user or assistant", f"messages[{i}].role")
        lines.append((role, _text(message.get("content"), f"messages[{i}].content")))
    if lines[-1][0] != "user":
        raise _bad("the last message must be the user's", f"messages[{len(lines) - 1}].role")
    if len(lines) == 1:
        return lines[0][1]
    return "\n".join(f"{role}: {text}" for role, text in lines)


def parse_call(kind: str, body: Any, tiers: Sequence[str], max_bytes: int) -> Call:
    """Check a ``/v1/chat/completions`` (``kind="chat"``) or ``/v1/completions`` body."""
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object", None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model is required: tierflow (routed) or a tier's name", "model")
    if model != ROUTED_MODEL and model not in tiers:
        known = ", ".join([ROUTED_MODEL, *tiers])
        raise GatewayError(404, f"model {model!r} does not exist; known: {known}", "model", code="model_not_found")
    if kind == "chat":
        text = chat_text(body.get("messages"))
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise _bad("prompt must be a string (one prompt per call)", "prompt")
        text = prompt
    where = "messages" if kind == "chat" else "prompt"
    try:
        size = len(text.encode())
    except UnicodeEncodeError:  # JSON may escape a lone surrogate, which no UTF-8 text holds
        raise _bad("the text is not valid Unicode (a lone surrogate)", where) from None
    if size > max_bytes:
        raise GatewayError(413, f"the query is {size} bytes, over the limit of {max_bytes}", where)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("stream must be true or false", "stream")
    if (n := body.get("n", 1)) != 1:
        raise _bad(f"n must be 1 (one answer per call), got {n!r}", "n")
    hints = body.get("tierflow") or {}
    if not isinstance(hints, dict):
        raise _bad("tierflow must be an object of hints", "tierflow")
    if unknown := sorted(set(hints) - HINT_KEYS):
        raise _bad(f"unknown hint {unknown[0]!r}; hints: {', '.join(sorted(HINT_KEYS))}", f"tierflow.{unknown[0]}")
    allowed = _allowed(hints.get("allowed_tiers"), tiers)
    if model != ROUTED_MODEL:
        if allowed is not None and model not in allowed:
            raise _bad(f"model {model!r} is not among tierflow.allowed_tiers", "tierflow.allowed_tiers")
        allowed = (model,)
    return Call(
        kind=kind,
        text=text,
        model=model,
        stream=stream,
        allowed_tiers=allowed,
        max_cost=_number(hints.get("max_cost"), "tierflow.max_cost", 0.0, 1e6),
        deadline_s=_number(hints.get("deadline_s"), "tierflow.deadline_s", 1e-3, MAX_DEADLINE_S),
        priority=_priority(hints.get("priority", 0)),
    )


def _allowed(value: Any, tiers: Sequence[str]) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
        raise _bad("allowed_tiers must be a non-empty list of tier names", "tierflow.allowed_tiers")
    if unknown := [t for t in value if t not in tiers]:
        raise _bad(f"unknown tier {unknown[0]!r}; tiers: {', '.join(tiers)}", "tierflow.allowed_tiers")
    return tuple(value)


def _number(value: Any, param: str, low: float, high: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(f"{param} must be a finite number", param)
    if not low <= value <= high:
        raise _bad(f"{param} must be in [{low:g}, {high:g}], got {value:g}", param)
    return float(value)


def _priority(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -1000 <= value <= 1000:
        raise _bad("tierflow.priority must be a whole number in [-1000, 1000]", "tierflow.priority")
    return value


IDEMPOTENT_PREFIX = "idem-"
"""What the id of a request named by an ``Idempotency-Key`` starts with."""


def request_id(tenant: str, idempotency_key: str | None, fresh: str) -> str:
    """The request's id: derived from the tenant and the client's ``Idempotency-Key`` (a retry names the
    same request), else ``fresh``."""
    if not idempotency_key:
        return fresh
    return IDEMPOTENT_PREFIX + hashlib.sha256(f"{tenant}\x00{idempotency_key}".encode()).hexdigest()[:32]


def _words(text: str) -> int:
    return len(text.split())


def _tierflow(result: Result) -> dict[str, Any]:
    """What tierflow says of the result beside OpenAI's fields: the row a results sink writes, less the id
    and the output (``status``, ``tier``, ``path``, ``confidence``, ``cost``, ``why`` …)."""
    return {key: value for key, value in result_to_json(result).items() if key not in ("id", "output")}


def _finish(result: Result) -> str:
    return "stop" if result.status in (Status.OK, Status.EXHAUSTED) else "length"


def response(call: Call, result: Result, created: int | None = None) -> dict[str, Any]:
    """OpenAI's chat completion or completion object for ``result``."""
    created = int(time.time()) if created is None else created
    model = result.model or result.tier or call.model
    usage = {"prompt_tokens": _words(call.text), "completion_tokens": _words(result.output)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    if call.kind == "chat":
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": result.output},
            "finish_reason": _finish(result),
            "logprobs": None,
        }
        kind = "chat.completion"
    else:
        choice = {"index": 0, "text": result.output, "finish_reason": _finish(result), "logprobs": None}
        kind = "text_completion"
    return {
        "id": f"{'chatcmpl' if call.kind == 'chat' else 'cmpl'}-{result.request_id}",
        "object": kind,
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage,
        "tierflow": _tierflow(result),
    }


def stream_chunks(call: Call, result: Result, created: int | None = None) -> Iterator[dict[str, Any]]:
    """The server-sent event payloads of a streamed answer: sent once the answer is complete (a tier's
    answer is accepted or escalated whole, so there is nothing earlier to stream), in OpenAI's chunk shape."""
    whole = response(call, result, created)
    base = {key: whole[key] for key in ("id", "created", "model")}
    if call.kind == "chat":
        base["object"] = "chat.completion.chunk"
        yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        yield {**base, "choices": [{"index": 0, "delta": {"content": result.output}, "finish_reason": None}]}
        last = {"index": 0, "delta": {}, "finish_reason": whole["choices"][0]["finish_reason"]}
        yield {**base, "choices": [last], "usage": whole["usage"], "tierflow": whole["tierflow"]}
    else:
        base["object"] = "text_completion"
        finish = whole["choices"][0]["finish_reason"]
        yield {**base, "choices": [{"index": 0, "text": result.output, "finish_reason": finish, "logprobs": None}]}


def models(tiers: Sequence[str], models_by_tier: Mapping[str, str], created: int = 0) -> dict[str, Any]:
    """``GET /v1/models``: the routed model, then every tier (``owned_by`` names what it runs)."""
    data = [{"id": ROUTED_MODEL, "object": "model", "created": created, "owned_by": "tierflow"}]
    data += [
        {"id": tier, "object": "model", "created": created, "owned_by": models_by_tier.get(tier, "tierflow")}
        for tier in tiers
    ]
    return {"object": "list", "data": data}


def result_error(result: Result) -> GatewayError | None:
    """The error a final result means for the caller, or None when it carries an answer."""
    if result.status is Status.EXPIRED:
        return GatewayError(504, f"the deadline passed before an answer: {result.reason or 'expired'}", type="timeout")
    if result.status is Status.REJECTED:
        return GatewayError(422, f"the pipeline could not serve the request: {result.reason or 'rejected'}")
    return None
