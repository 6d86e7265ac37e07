"""Hot rollout on the real broker and Ray, under steady traffic: a pushed policy file runs in shadow
(logged, deciding nothing), as a canary (deciding its share), then live, and ``pin`` rolls it back —
every router and verifier switching at the version boundary, and every request ending exactly once."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from infra.cli.policy import read_rollout
from infra.config import Config
from infra.control_client import new_command, send_command, trusted_keys
from topics import Result
from topics.control import CommandAction, ControllerKey

from .conftest import WAIT_S, running, simulated_config
from .helpers import Load, await_delivered

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

KEY = "rollout-test-key"
SIGNER = ControllerKey.generate("rollout-tests")
SIGNING_ENV = "TIERFLOW_TEST_ROLLOUT_CONTROLLER_KEY"
EAGER = {"small": 0.0, "medium": 0.0}
"""The pushed policy accepts every first answer: a request it decides never leaves the small tier."""


def _policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "eager.json"
    doc = {
        "format": "tierflow-policy",
        "version": 1,
        "name": "eager",
        "tiers": ["small", "medium", "large"],
        "pre_call": {"name": "cheapest_first"},
        "post_hoc": {"name": "threshold", "params": {"thresholds": EAGER}},
    }
    path.write_text(json.dumps(doc))
    return path


async def _command(config: Config, kafka: dict[str, Any], action: CommandAction, **fields: Any) -> float:
    """Send a signed command; when the controller accepted it."""
    cmd = new_command(action, "default", KEY.encode(), now=time.time(), issuer="test", **fields)
    reply = await send_command(kafka, config.layout.control, cmd, timeout_s=WAIT_S, trusted=trusted_keys(config))
    assert reply.accepted, reply.reason
    return time.time()


async def _version(pipeline: Any) -> int:
    return int((await asyncio.wait_for(pipeline.controller.state.remote(), timeout=WAIT_S))["version"])


async def _push(config: Config, kafka: dict[str, Any], path: Path, **reach: Any) -> float:
    args = argparse.Namespace(file=str(path), canary=reach.get("canary"), shadow=reach.get("shadow", False))
    return await _command(config, kafka, CommandAction.PUSH_POLICY, rollout=read_rollout(args, config.layout.tiers))


SETTLE_S = 1.5
"""A replica applies a new version at its next batch: requests sent this long after it was published
met it at every hop."""


def _decided_by(load: Load, version: int, since: float = 0.0) -> list[Result]:
    """Results the ``version`` decided, of requests created after ``since`` (+ SETTLE_S)."""
    return [
        r
        for r in load.collector.collected.results.values()
        if r.policy_version == version and r.completed_at - r.latency_ms / 1000 >= since + SETTLE_S
    ]


async def _phase(load: Load, pipeline: Any, seconds: float = 4.0) -> int:
    """The version in force now, after ``seconds`` of traffic under it."""
    version = await _version(pipeline)
    await asyncio.sleep(seconds)
    return version


async def test_shadow_canary_live_and_rollback_under_traffic_lose_nothing(
    tmp_path: Path, bootstrap: str, kafka: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERFLOW_CONTROL_KEY", KEY)
    monkeypatch.setenv(SIGNING_ENV, SIGNER.seed.hex())
    control = {"window_s": 3.0, "signing_key_env": SIGNING_ENV, "public_keys": {SIGNER.key_id: SIGNER.public_key.hex()}}
    config = simulated_config(tmp_path, control=control)
    path = _policy_file(tmp_path)
    async with running(config, bootstrap, kafka) as pipeline:
        deadline = time.monotonic() + WAIT_S
        while await _version(pipeline) < 1:
            assert time.monotonic() < deadline, "no first policy version"
            await asyncio.sleep(0.2)
        async with Load(config, kafka, rate=120, prefix="ro") as load:
            own = await _phase(load, pipeline)
            at_shadow = await _push(config, kafka, path, shadow=True)
            shadow = await _phase(load, pipeline)
            at_canary = await _push(config, kafka, path, canary=0.3)
            canary = await _phase(load, pipeline)
            at_live = await _push(config, kafka, path)
            live = await _phase(load, pipeline)
            at_pin = await _command(config, kafka, CommandAction.PIN_POLICY, policy_version=own)
            pinned = await _phase(load, pipeline)
            await load.stop_sending()
            sent = set(load.sent)
            missing = await load.collector.wait_for(sent, WAIT_S)
        delivered = await await_delivered(config, sent)

    twice = sorted(rid for rid, n in Counter(delivered).items() if n > 1)
    assert not missing, f"no result for {sorted(missing)[:10]}"
    unsent = sorted(sent - set(delivered))
    assert not twice and not unsent, f"delivered twice: {twice[:10]}; not delivered: {unsent[:10]}"
    assert own < shadow < canary < live < pinned
    escalated = [r for r in _decided_by(load, own) if len(r.path) > 1]
    assert escalated, "the own policy (thresholds 0.8) escalates some requests"

    in_shadow = _decided_by(load, shadow, at_shadow)
    assert in_shadow, "no request went through the shadow version alone"
    assert any(len(r.path) > 1 for r in in_shadow), "the shadow changed nothing: requests still escalate"
    for r in in_shadow:  # where it would have started, and that it would have accepted the small answer
        assert [(d.stage, d.action, d.tier) for d in r.shadow[:2]] == [("route", "start", "small"),
                                                                       ("verify", "accept", "small")]  # fmt: skip

    in_canary = _decided_by(load, canary, at_canary)
    canaries = [r for r in in_canary if r.canary]
    assert 0 < len(canaries) < len(in_canary)
    assert all(r.path == ("small",) for r in canaries)  # the eager policy accepted every first answer
    assert any(len(r.path) > 1 for r in in_canary if not r.canary)

    in_live = _decided_by(load, live, at_live)
    assert in_live and all(r.path == ("small",) and not r.canary and not r.shadow for r in in_live)
    assert any(len(r.path) > 1 for r in _decided_by(load, pinned, at_pin)), "pin rolled back to the own policy"
