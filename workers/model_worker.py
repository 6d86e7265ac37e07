"""ModelWorker stage: one per tier, answers Tasks with its backend in batches.

A backend failure or timeout never loses a request: every task of the failed call
gets an Answer with ``error`` set, which no policy accepts, so the verifier
escalates it (or ends it ``exhausted``). Invalid confidences (NaN, ±inf, outside
[0, 1]) are caught here for the same reason.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence

from topics.errors import DecodeError
from topics.messages import Answer, Status, Task
from workers.backends.base import Backend, Completion, Query, create_backend
from workers.context import StageContext
from workers.stage import Handler, Inbound, Outbound


class ModelWorker(Handler[Task]):
    def __init__(self, context: StageContext, tier: str, backend: Backend | None = None) -> None:
        self.context = context
        self.tier_config = context.deployment.tier(tier)
        self.tier = tier
        self.stage = f"worker.{tier}"
        self.backend = backend or create_backend(self.tier_config.backend, tier, self.tier_config.options)

    def topics(self) -> list[str]:
        layout = self.context.layout
        return [layout.tier(self.tier), layout.escalate(self.tier)]

    async def start(self) -> None:
        await asyncio.to_thread(self.backend.load)

    async def stop(self) -> None:
        await self.backend.close()

    def decode(self, raw: bytes) -> Task:
        task = Task.from_wire(raw, self.context.deployment.limits.max_payload_bytes)
        if task.tier != self.tier:
            raise DecodeError("unknown_tier", f"task for tier {task.tier!r} on the topic of {self.tier!r}")
        return task

    async def process(self, batch: Sequence[Inbound[Task]]) -> list[Outbound]:
        ctx = self.context
        out: list[Outbound] = []
        live: list[Inbound[Task]] = []
        for inbound in batch:
            if ctx.expired(inbound.message.request) and inbound.message.explore_copy:
                continue  # a copy is never a result: its request ends on its own path
            if ctx.expired(inbound.message.request):
                reason = f"deadline passed before tier {self.tier}"
                out.append(ctx.result(inbound, ctx.final(inbound.message, Status.EXPIRED, reason=reason)))
            else:
                live.append(inbound)
        size = self.tier_config.batch_size
        for start in range(0, len(live), size):
            chunk = live[start : start + size]
            for inbound, answer in zip(chunk, await self._answer(chunk), strict=True):
                topic = ctx.layout.explored if answer.task.explore_copy else ctx.layout.answers
                out.append(Outbound(topic, answer.request_id, answer.to_wire(), inbound.headers, message=answer))
        return out

    async def _answer(self, chunk: Sequence[Inbound[Task]]) -> list[Answer]:
        tasks = [inbound.message for inbound in chunk]
        queries = [Query(task.request.id, task.request.input) for task in tasks]
        started = time.perf_counter()
        try:
            completions = await asyncio.wait_for(
                self.backend.infer(queries), timeout=self.context.deployment.limits.infer_timeout_s
            )
            if len(completions) != len(tasks):
                raise ValueError(f"backend returned {len(completions)} answers for {len(tasks)} queries")
        except Exception as exc:  # noqa: BLE001 - any backend failure becomes an escalation, not a crash
            elapsed_ms = (time.perf_counter() - started) * 1000 / len(tasks)
            error = "timeout" if isinstance(exc, TimeoutError) else f"backend error: {type(exc).__name__}"
            return [self._failed(task, error, elapsed_ms) for task in tasks]
        model = self.backend.model_name
        return [to_answer(task, model, completion) for task, completion in zip(tasks, completions, strict=True)]

    def _failed(self, task: Task, error: str, latency_ms: float) -> Answer:
        return Answer(
            task=task, model=self.backend.model_name, output="", confidence=0.0, latency_ms=latency_ms, error=error
        )


def to_answer(task: Task, model: str, completion: Completion) -> Answer:
    """The Answer a tier sends for ``completion``; invalid numbers become an error answer (module docstring)."""
    confidence, error = completion.confidence, completion.error
    if error is not None:
        confidence = 0.0
    elif not (math.isfinite(confidence) and 0.0 <= confidence <= 1.0):
        confidence, error = 0.0, f"invalid confidence {confidence!r}"
    features = {k: float(v) for k, v in completion.features.items() if math.isfinite(v)}
    return Answer(
        task=task,
        model=model,
        output=completion.output,
        confidence=confidence,
        features=features,
        tokens_in=max(0, completion.tokens_in),
        tokens_out=max(0, completion.tokens_out),
        cost=completion.cost if math.isfinite(completion.cost) and completion.cost >= 0 else 0.0,
        latency_ms=max(0.0, completion.latency_ms),
        error=error,
    )
