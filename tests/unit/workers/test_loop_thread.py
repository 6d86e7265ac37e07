"""A loop started from a constructor: stop before it runs, results and errors reach join()."""

from __future__ import annotations

import asyncio

import pytest

from workers.loop_thread import LoopThread


class Loop:
    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self.ticks = 0

    async def run(self) -> int:
        while not self.stopping.is_set():
            self.ticks += 1
            await asyncio.sleep(0.001)
        return self.ticks

    def request_stop(self) -> None:
        self.stopping.set()


def test_a_stop_asked_before_the_loop_started_is_kept() -> None:
    loop = Loop()
    thread = LoopThread(loop.run, name="test")
    thread.call_soon(loop.request_stop)  # at once: the thread may not have made its event loop yet
    assert thread.join(timeout_s=10) >= 0
    assert thread.done


def test_coroutines_run_on_the_loop_and_join_returns_the_result() -> None:
    loop = Loop()
    thread = LoopThread(loop.run, name="test")

    async def ticks() -> int:
        await asyncio.sleep(0.01)
        return loop.ticks

    assert thread.run_coroutine(ticks(), timeout_s=10) > 0
    thread.call_soon(loop.request_stop)
    assert thread.join(timeout_s=10) >= 1
    with pytest.raises(RuntimeError, match="not running"):
        thread.run_coroutine(ticks(), timeout_s=1)
    thread.call_soon(loop.request_stop)  # after the end: dropped, no error


def test_join_raises_what_ended_the_loop() -> None:
    async def fails() -> None:
        raise ValueError("the backend cannot load")

    thread: LoopThread[None] = LoopThread(fails, name="test")
    with pytest.raises(ValueError, match="cannot load"):
        thread.join(timeout_s=10)
