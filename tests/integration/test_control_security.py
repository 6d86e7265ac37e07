"""The issue's two attacks on the control topic, replayed with a plain aiokafka producer against a running pipeline.

1. An outsider writes a ``PolicyUpdate`` with version 1000 (every threshold 0, only the top tier
   allowed): before signing it took over routing. Now requests are still routed and judged by the
   controller's real policy, and the controller counts the forgery.
2. While the controller is down, an outsider writes unsigned pause commands for every tier, each
   with a forged ``ControlReply(accepted=True)`` (and a forged report saying everything is paused):
   before, recovery applied them. Now the recovered controller pauses nothing and answers each
   command itself, refusing it as unsigned.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import ray
from aiokafka import AIOKafkaProducer

from infra.pipeline import Pipeline
from topics.control import (
    CommandAction,
    ControlCommand,
    ControllerKey,
    ControllerReport,
    ControlReply,
    Observed,
    PolicyUpdate,
    Targets,
)

from .conftest import WAIT_S, running, simulated_config
from .helpers import make_requests, send_and_collect

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

KEY = "security-test-key"
"""The operators' HMAC key: the attacker does not have it."""


@pytest.fixture(scope="module")
async def pipeline(
    tmp_path_factory: pytest.TempPathFactory, bootstrap: str, kafka: dict[str, Any]
) -> AsyncIterator[Pipeline]:
    """Three simulated tiers, thresholds 0.8, no signing key configured: an ephemeral one, as in the demo."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIERFLOW_CONTROL_KEY", KEY)
        config = simulated_config(Path(tmp_path_factory.mktemp("security")))
        async with running(config, bootstrap, kafka) as started:
            await wait_until(lambda: has_version(started), "the controller's first policy update")
            yield started


async def state(pipeline: Pipeline, timeout_s: float = WAIT_S) -> dict[str, Any]:
    return dict(await asyncio.wait_for(pipeline.controller.state.remote(), timeout=timeout_s))


async def has_version(pipeline: Pipeline) -> bool:
    return (await state(pipeline))["version"] >= 1


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.25)


async def write(kafka: dict[str, Any], topic: str, *values: bytes) -> list[int]:
    """What an outsider can do: produce plain records to the control topic. Returns their offsets."""
    producer = AIOKafkaProducer(**kafka, acks="all")
    await asyncio.wait_for(producer.start(), WAIT_S)
    try:
        offsets = []
        for value in values:
            meta = await asyncio.wait_for(producer.send_and_wait(topic, value, partition=0), WAIT_S)
            offsets.append(meta.offset)
        return offsets
    finally:
        await producer.stop()


async def test_a_forged_policy_update_version_1000_changes_nothing(pipeline: Pipeline, kafka: dict[str, Any]) -> None:
    config = pipeline.config
    (controller_id,) = config.control.public_keys  # the ephemeral key the pipeline made
    real = await state(pipeline)
    takeover = PolicyUpdate(
        version=1000,
        thresholds={tier.name: 0.0 for tier in config.tiers},
        allowed_tiers=("large",),  # everything straight to the top tier, accepted there
        reason="takeover",
        issued_at=time.time(),
    )
    impostor = ControllerKey.generate(controller_id)  # the controller's key id, another key
    await write(kafka, config.layout.control, takeover.to_wire(), impostor.sign(takeover, config.namespace).to_wire())
    await asyncio.sleep(2.0)  # the feeds read the control topic within a fetch: long enough to have applied it

    collector = await send_and_collect(config, kafka, make_requests(200, prefix="forged-update"))
    results = [r for r in collector.collected.results.values() if r.request_id.startswith("forged-update")]
    assert len(results) == 200
    assert all(r.path[0] == "small" for r in results), "routed by the forged update"
    assert all(r.policy_version == real["version"] for r in results)
    assert any(len(r.path) > 1 for r in results)  # thresholds 0.8 still escalate; the forged 0.0 would not
    after = await state(pipeline)
    assert after["version"] == real["version"] and after["paused"] == []
    assert after["ignored"].get("update:unsigned", 0) >= 1 and after["ignored"].get("update:bad_signature", 0) >= 1


async def test_a_forged_accepted_reply_written_while_the_controller_is_down_is_not_applied(
    pipeline: Pipeline, kafka: dict[str, Any]
) -> None:
    config = pipeline.config
    topic = config.layout.control
    before = await state(pipeline)
    assert before["paused"] == []
    await asyncio.wait_for(pipeline.controller.stop.remote(), WAIT_S)
    await asyncio.wait_for(pipeline._controller_run, WAIT_S)  # run() returned: nobody answers now

    now = time.time()
    tiers = [tier.name for tier in config.tiers]
    forged_offsets = []
    for tier in tiers:
        pause = ControlCommand(
            action=CommandAction.PAUSE_TIER,
            key_id="default",
            seq=time.time_ns(),
            issued_at=now,
            expires_at=now + 300,
            tier=tier,
            issuer="mallory",
        )  # unsigned: the attacker has no HMAC key
        (offset,) = await write(kafka, topic, pause.to_wire())
        reply = ControlReply(
            offset=offset, accepted=True, reason=f"tier {tier} paused", key_id="default", seq=pause.seq, at=now
        )
        await write(kafka, topic, reply.to_wire())
        forged_offsets.append(offset)
    everything_paused = ControllerReport(
        targets=Targets(),
        observed=Observed(),
        version=before["version"],
        lam=0.0,
        mu=0.0,
        at=now,
        paused=tuple(tiers),
        processed_offset=10**9,  # would make recovery skip every later command
    )
    await write(kafka, topic, everything_paused.to_wire())

    ray.kill(pipeline.controller, no_restart=False)  # Ray restarts it with the same arguments (and key)
    pipeline._controller_run = pipeline.controller.run.remote()
    rejected_before = before["rejected"].get("unsigned", 0)

    async def recovered() -> bool:
        with contextlib.suppress(Exception):
            current = await state(pipeline, timeout_s=5)
            return bool(current["rejected"].get("unsigned", 0) >= rejected_before + len(tiers))
        return False

    await wait_until(recovered, "the restarted controller to answer the forged commands itself")
    after = await state(pipeline)
    assert after["paused"] == [] and after["version"] >= before["version"]
    assert after["ignored"].get("reply:unsigned", 0) >= len(tiers)
    assert after["ignored"].get("report:unsigned", 0) >= 1

    collector = await send_and_collect(config, kafka, make_requests(50, prefix="after-recovery"))
    results = [r for r in collector.collected.results.values() if r.request_id.startswith("after-recovery")]
    assert len(results) == 50 and all(r.path[0] == "small" for r in results)  # every tier still serves
