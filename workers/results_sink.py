"""Results sink: delivers each request's result exactly once, whatever the topic repeats.

The results topic can hold a request's result twice (a crash repeats a hop, a
client resubmits, a user sends an id again much later); the sink is idempotent on
request id. The delivered ids live in an SQLite index next to the JSONL file
(``<file>.ids.sqlite``), not in memory: a sink's memory stays flat however many
results it delivers, and a restarted replica does not re-read the whole file.

Every batch runs under an exclusive lock on the file, so replicas on one host (a
partition moving between them) cannot deliver an id twice. Order inside the lock:
index the lines other writers appended since the index's recorded offset, append
the new results, then commit the new ids with the new offset. A crash after the
append but before the commit leaves lines past the recorded offset, which the
next batch indexes; a torn last line (a crash mid-write) is cut off and its
result, never committed, is delivered again.
"""

from __future__ import annotations

import fcntl
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import msgspec

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
        "why": [msgspec.structs.asdict(decision) for decision in result.why],
    }


class JsonlResults:
    """An append-only JSONL file of delivered results, deduplicated by request id through an SQLite index."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.index_path = self.path.with_name(self.path.name + ".ids.sqlite")
        self.duplicates = 0
        self._db: sqlite3.Connection | None = None

    def _index(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Transactions are explicit; batches are serialised by the file lock, whichever thread runs them.
            db = sqlite3.connect(self.index_path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS delivered (id TEXT PRIMARY KEY) WITHOUT ROWID")
            db.execute("CREATE TABLE IF NOT EXISTS progress (one INTEGER PRIMARY KEY CHECK (one = 0), upto INTEGER)")
            db.execute("INSERT OR IGNORE INTO progress VALUES (0, 0)")
            self._db = db
        return self._db

    def _catch_up(self, db: sqlite3.Connection, handle: BinaryIO) -> None:
        """Index the complete lines past the recorded offset; cut a torn last line off.

        A file shorter than the offset was replaced (rotated, deleted): the index is rebuilt from it.
        """
        (upto,) = db.execute("SELECT upto FROM progress").fetchone()
        if handle.seek(0, 2) < upto:
            db.execute("DELETE FROM delivered")
            upto = 0
        handle.seek(upto)
        tail = handle.read()
        complete = tail[: tail.rfind(b"\n") + 1]
        if len(complete) < len(tail):
            handle.truncate(upto + len(complete))
        db.executemany(
            "INSERT OR IGNORE INTO delivered VALUES (?)", ((json.loads(line)["id"],) for line in complete.splitlines())
        )

    def deliver(self, results: Sequence[Result]) -> int:
        """Append the results not delivered before; return how many were new."""
        db = self._index()
        with self.path.open("a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            db.execute("BEGIN IMMEDIATE")
            try:
                self._catch_up(db, handle)
                lines = []
                for result in results:
                    if db.execute("INSERT OR IGNORE INTO delivered VALUES (?)", (result.request_id,)).rowcount == 0:
                        self.duplicates += 1
                        continue
                    lines.append(json.dumps(result_to_json(result), separators=(",", ":")).encode() + b"\n")
                handle.write(b"".join(lines))
                handle.flush()
                db.execute("UPDATE progress SET upto = ?", (handle.tell(),))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return len(lines)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class ResultsSink(Handler[Result]):
    stage = "sink"

    def __init__(self, context: StageContext, path: str | Path) -> None:
        self.context = context
        self.sink = JsonlResults(path)

    def topics(self) -> list[str]:
        return [self.context.layout.results]

    def decode(self, raw: bytes) -> Result:
        return Result.from_wire(raw, self.context.deployment.limits.max_payload_bytes)

    async def process(self, batch: Sequence[Inbound[Result]]) -> list[Outbound]:
        self.sink.deliver([inbound.message for inbound in batch])
        return []
