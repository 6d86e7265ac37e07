"""Results sink: delivers each request's result exactly once, whatever the topic repeats.

The results topic can hold a request's result twice (a crash repeats a hop); the
sink is idempotent on request id. The JSONL file sink re-reads what other
replicas appended (under an exclusive lock) before it writes, so a partition
moving between replicas cannot deliver an id twice either.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from topics.messages import Result
from workers.context import StageContext
from workers.stage import Handler, Inbound, Outbound


def result_to_json(result: Result) -> dict[str, object]:
    return {
        "id": result.request_id,
        "status": result.status.value,
        "output": result.output,
        "tier": result.tier,
        "model": result.model,
        "confidence": result.confidence,
        "cost": result.total_cost,
        "latency_ms": result.latency_ms,
        "path": list(result.path),
        "policy_version": result.policy_version,
        "reason": result.reason,
    }


class JsonlResults:
    """An append-only JSONL file of delivered results, deduplicated by request id."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.delivered: set[str] = set()
        self.duplicates = 0
        self._read_upto = 0

    def _catch_up(self, handle: IO[str]) -> None:
        handle.seek(self._read_upto)
        for line in handle:
            if line.endswith("\n"):
                self.delivered.add(json.loads(line)["id"])
        self._read_upto = handle.tell()

    def deliver(self, results: Sequence[Result]) -> int:
        """Append the results not delivered before; return how many were new."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._catch_up(handle)
            new = 0
            for result in results:
                if result.request_id in self.delivered:
                    self.duplicates += 1
                    continue
                self.delivered.add(result.request_id)
                handle.write(json.dumps(result_to_json(result), separators=(",", ":")) + "\n")
                new += 1
            handle.flush()
            self._read_upto = handle.tell()
        return new


class ResultsSink(Handler[Result]):
    stage = "sink"

    def __init__(self, context: StageContext, path: str | Path) -> None:
        self.context = context
        self.sink = JsonlResults(path)

    def topics(self) -> list[str]:
        return [self.context.layout.results]

    def decode(self, raw: bytes) -> Result:
        return Result.from_wire(raw, self.context.config.limits.max_payload_bytes)

    async def process(self, batch: Sequence[Inbound[Result]]) -> list[Outbound]:
        self.sink.deliver([inbound.message for inbound in batch])
        return []
