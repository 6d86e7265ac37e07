"""Run an actor's stream loop on its own thread from the constructor, so a restarted actor resumes by itself.

A replica whose loop ran inside a long actor task depended on that task's caller: after
a crash Ray restarts the actor, and only the caller that submitted ``run`` resubmits it.
When that caller is gone (a supervisor that was itself restarted, a driver that died),
the restarted replica would sit idle, and a new caller's ``run`` would queue behind the
old one and start a second loop when the first ended. Started from the constructor, the
loop runs in every incarnation exactly once; ``join`` only waits for it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class LoopThread(Generic[T]):
    """One coroutine on a fresh event loop in a daemon thread, started at once."""

    def __init__(self, main: Callable[[], Awaitable[T]], name: str) -> None:
        self._main = main
        self._done = threading.Event()
        self._started = threading.Event()
        self._lock = threading.Lock()
        self._pending: list[Callable[[], object]] = []
        self.event_loop: asyncio.AbstractEventLoop | None = None
        self._result: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = asyncio.run(self._drive())
        except BaseException as exc:  # noqa: BLE001 - handed to join(), which raises it in the caller
            self._error = exc
        finally:
            self._done.set()
            self._started.set()  # a loop that never started (asyncio.run failed) wakes its waiters

    async def _drive(self) -> T:
        with self._lock:
            self.event_loop = asyncio.get_running_loop()
            pending, self._pending = self._pending, []
        self._started.set()
        for callback in pending:  # asked before the loop existed (a stop right after creation)
            callback()
        return await self._main()

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` on the loop's thread (thread-safe; kept until the loop starts; dropped after it ended)."""
        with self._lock:
            if self.event_loop is None:
                self._pending.append(callback)
                return
        if not self._done.is_set():
            self.event_loop.call_soon_threadsafe(callback)

    def run_coroutine(self, coroutine: Coroutine[Any, Any, R], timeout_s: float) -> R:
        """Run ``coroutine`` on the loop and wait for its result (from another thread; a loop about to start is
        waited for, within the same ``timeout_s``)."""
        self._started.wait(timeout_s)
        if self.event_loop is None or self._done.is_set():
            coroutine.close()
            raise RuntimeError("the loop is not running")
        return asyncio.run_coroutine_threadsafe(coroutine, self.event_loop).result(timeout_s)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def join(self, timeout_s: float | None = None) -> T:
        """Wait for the loop to end; its result, or the exception it ended with."""
        self._done.wait(timeout_s)
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]  # set when the main coroutine returned
