"""The budget controller closed loop on the real broker and Ray, with simulated tiers.

Cost and quality are measured here from the results the test itself reads (not from
what the controller reports), over windows after the loop had time to settle.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import ray

from infra.config import Config
from infra.control_client import new_command, send_command, send_raw, trusted_keys
from infra.pipeline import Pipeline
from infra.status import collect_status
from topics import Result
from topics.control import CommandAction, ControlCommand, ControllerKey, Targets
from workers.backends.simulated import simulated_gold_label

from .conftest import WAIT_S, running, sim_tier, simulated_config
from .helpers import Load

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

KEY = "integration-test-key"
SIGNER = ControllerKey.generate("budget-tests")
"""The controller's Ed25519 key, configured as an operator would (test_control_security covers the ephemeral one)."""
SIGNING_ENV = "TIERFLOW_TEST_CONTROLLER_KEY"


def ladder(tmp_path: Path, **options: dict[str, Any]) -> Config:
    """small → medium → large at 1 : 4 : 16 cost; thresholds 0.8; a 3 s controller window.
    ``options`` adds simulated-backend options per tier (latency, scripted slowdown)."""
    tiers = [
        sim_tier("small", 0.6, 1, 0.001),
        sim_tier("medium", 0.75, 2, 0.004),
        sim_tier("large", 0.9, 3, 0.016),
    ]
    for tier in tiers:
        tier["options"] |= options.get(tier["name"], {})
    control = {
        "window_s": 3.0,
        "signing_key_env": SIGNING_ENV,
        "public_keys": {SIGNER.key_id: SIGNER.public_key.hex()},
    }
    return simulated_config(tmp_path, tiers=tiers, control=control)


def cost(results: list[Result]) -> float:
    assert len(results) > 100, f"only {len(results)} results in the window"
    return float(np.mean([r.total_cost for r in results]))


def accuracy(results: list[Result]) -> float:
    return float(np.mean([r.output == simulated_gold_label(r.request_id) for r in results]))


async def command(config: Config, kafka: dict[str, Any], action: CommandAction, **fields: Any) -> None:
    cmd = new_command(action, "default", KEY.encode(), now=time.time(), issuer="test", **fields)
    reply = await send_command(kafka, config.layout.control, cmd, timeout_s=WAIT_S, trusted=trusted_keys(config))
    assert reply.accepted, reply.reason


async def state(pipeline: Pipeline) -> dict[str, Any]:
    return dict(await asyncio.wait_for(pipeline.controller.state.remote(), timeout=WAIT_S))


async def wait_until(check: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


@pytest.fixture(autouse=True)
def control_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERFLOW_CONTROL_KEY", KEY)
    monkeypatch.setenv(SIGNING_ENV, SIGNER.seed.hex())


@pytest.fixture(scope="module")
async def pipeline(
    tmp_path_factory: pytest.TempPathFactory, bootstrap: str, kafka: dict[str, Any]
) -> AsyncIterator[Pipeline]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIERFLOW_CONTROL_KEY", KEY)  # read by the driver when it starts the controller
        patch.setenv(SIGNING_ENV, SIGNER.seed.hex())
        config = ladder(tmp_path_factory.mktemp("budget"))
        async with running(config, bootstrap, kafka) as started:
            await wait_until(lambda: _has_version(started), "the controller's first policy update")
            yield started


async def _has_version(pipeline: Pipeline) -> bool:
    return (await state(pipeline))["version"] >= 1


def bad_commands(now: float) -> list[tuple[str, bytes]]:
    """One record per way a command can be wrong, with the reason the controller must give.

    The first is a good command; it comes back last, as the replay."""
    key = KEY.encode()

    def signed(action: CommandAction = CommandAction.SET_TARGETS, **kw: Any) -> ControlCommand:
        fields: dict[str, Any] = {"key_id": "default", "seq": time.time_ns(), "issued_at": now, "expires_at": now + 60}
        if action is CommandAction.SET_TARGETS:
            fields["targets"] = Targets(cost_per_request=1e-4)
        return ControlCommand(action=action, **(fields | kw)).signed(key)

    def unsigned_raw(action: str, **body: Any) -> bytes:
        head = {"k": "control_command@1", "a": action, "kid": "default", "sq": time.time_ns(), "ia": now}
        return msgspec.msgpack.encode(head | {"ex": now + 60, "sig": "0" * 64} | body)

    good = signed()  # the smallest sequence number of all, so the others are not refused as replays
    return [
        ("accepted", good.to_wire()),
        ("unsigned", msgspec.structs.replace(signed(), sig="").to_wire()),
        ("bad_signature", signed().signed(b"not the key").to_wire()),
        ("unknown_key", signed(key_id="intruder").to_wire()),
        ("expired", signed(issued_at=now - 600, expires_at=now - 300).to_wire()),
        ("invalid: out_of_range", unsigned_raw("set_targets", tg={"cr": -1.0})),
        ("invalid: out_of_range", unsigned_raw("set_targets", tg={"cr": math.nan})),
        ("invalid: out_of_range", unsigned_raw("set_targets", tg={"cr": math.inf})),
        ("invalid: out_of_range", unsigned_raw("set_targets", tg={"cr": 1e12})),
        ("invalid: out_of_range", unsigned_raw("set_thresholds", th={"small": 1.5})),
        ("unknown_tier", signed(CommandAction.SET_THRESHOLDS, thresholds={"gigantic": 0.5}).to_wire()),
        ("invalid: not_msgpack", b"\xc1 definitely not msgpack"),
        ("replayed", good.to_wire()),
    ]


async def test_bad_commands_change_nothing_and_are_answered_and_counted(
    pipeline: Pipeline, kafka: dict[str, Any]
) -> None:
    config = pipeline.config
    before = await state(pipeline)
    topic = config.layout.control
    records = bad_commands(time.time())
    for expected, value in records:
        reply = await send_raw(kafka, topic, value, WAIT_S, trusted=trusted_keys(config))
        assert (reply.reason if not reply.accepted else "accepted").startswith(expected), (expected, reply)
    after = await state(pipeline)
    assert after["targets"] == Targets(cost_per_request=1e-4)  # only the one good command took effect
    for key in ("thresholds", "paused", "pinned", "version"):
        assert after[key] == before[key], key
    assert sum(after["rejected"].values()) - sum(before["rejected"].values()) == len(records) - 1
    snapshot = await asyncio.wait_for(collect_status(kafka, config), WAIT_S)
    assert [reply.accepted for _, reply in snapshot.control.replies[:3]] == [False, False, False]  # newest first
    assert all(reply.signer == SIGNER.key_id for _, reply in snapshot.control.replies)  # the configured key signs
    await command(config, kafka, CommandAction.SET_TARGETS, targets=Targets(quality_floor=0.0))  # no cost target again


async def test_a_paused_tier_gets_no_traffic_and_results_record_the_policy_version(
    pipeline: Pipeline, kafka: dict[str, Any]
) -> None:
    config = pipeline.config
    await command(config, kafka, CommandAction.PAUSE_TIER, tier="medium")
    paused_version = (await state(pipeline))["version"]
    await asyncio.sleep(1.0)  # the routers' and verifiers' feeds pick the update up within a fetch
    async with Load(config, kafka, rate=200, prefix="paused") as load:
        await asyncio.sleep(4.0)
        started = time.time()
        await asyncio.sleep(4.0)
        results = load.window(started, time.time())
    await command(config, kafka, CommandAction.RESUME_TIER, tier="medium")
    assert results
    assert all("medium" not in r.path for r in results)
    assert any("large" in r.path for r in results)  # escalation skips the paused tier instead of stopping
    assert all(r.policy_version >= paused_version for r in results)


@pytest.mark.slow
async def test_a_lowered_cost_target_holds_within_5_percent_and_raising_it_lets_quality_rise(
    pipeline: Pipeline, kafka: dict[str, Any]
) -> None:
    config = pipeline.config
    async with Load(config, kafka, prefix="budget") as load:
        t0 = time.time()
        await asyncio.sleep(12)
        baseline = load.window(t0 + 4, time.time())
        free_cost, free_accuracy = cost(baseline), accuracy(baseline)

        low = free_cost * 0.5
        await command(config, kafka, CommandAction.SET_TARGETS, targets=Targets(cost_per_request=low))
        t1 = time.time()
        await asyncio.sleep(45)
        held_low = load.window(t1 + 30, time.time())

        high = free_cost * 0.8
        await command(config, kafka, CommandAction.SET_TARGETS, targets=Targets(cost_per_request=high))
        t2 = time.time()
        await asyncio.sleep(40)
        held_high = load.window(t2 + 25, time.time())

    assert abs(cost(held_low) / low - 1) <= 0.05, (cost(held_low), low)
    assert abs(cost(held_high) / high - 1) <= 0.05, (cost(held_high), high)
    assert accuracy(held_low) < accuracy(held_high) <= free_accuracy + 0.02
    assert min(r.policy_version for r in held_high) > 1  # decided by versions the law published


async def test_a_restarted_controller_resumes_from_the_control_topic(pipeline: Pipeline, kafka: dict[str, Any]) -> None:
    config = pipeline.config
    targets = Targets(cost_per_request=0.0042, latency_ms=900.0)
    accepted = new_command(CommandAction.SET_TARGETS, "default", KEY.encode(), now=time.time(), targets=targets)
    assert (await send_command(kafka, config.layout.control, accepted, WAIT_S, trusted=trusted_keys(config))).accepted
    await asyncio.sleep(2.5)  # at least one report published after the command
    before = await state(pipeline)
    ray.kill(pipeline.controller, no_restart=False)  # Ray restarts it and resubmits run()

    async def recovered() -> bool:
        with contextlib.suppress(Exception):
            current = await asyncio.wait_for(pipeline.controller.state.remote(), timeout=5)
            return bool(current["targets"] == targets and current["version"] >= before["version"])
        return False

    await wait_until(recovered, "the restarted controller to recover its targets")
    replay = await send_raw(kafka, config.layout.control, accepted.to_wire(), WAIT_S, trusted=trusted_keys(config))
    assert replay.reason == "replayed"  # replay protection survived the restart


def _budget_cli(config_path: Path, bootstrap: str, *args: str, key: str = KEY) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"TIERFLOW_CONTROL_KEY": key}
    cli = [sys.executable, "-c", "import sys; from infra.cli import main; sys.exit(main())", "budget", *args]
    return subprocess.run(
        [*cli, "--config", str(config_path), "--bootstrap", bootstrap],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
        env=env,
    )


async def test_the_budget_cli_sets_shows_and_refuses_in_one_line(
    pipeline: Pipeline, bootstrap: str, tmp_path: Path
) -> None:
    config = pipeline.config
    path = tmp_path / "tierflow.toml"
    tiers = "".join(f'[[tiers]]\nname = "{t.name}"\nbackend = "simulated"\n\n' for t in config.tiers)
    # the controller signs with the pipeline's ephemeral key: the operator's config lists its public key
    keys = ", ".join(f'{kid} = "{public}"' for kid, public in config.control.public_keys.items())
    path.write_text(f'namespace = "{config.namespace}"\n\n[control]\npublic_keys = {{ {keys} }}\n\n{tiers}')

    done = await asyncio.to_thread(
        _budget_cli, path, bootstrap, "set", "--cost-per-request", "0.005", "--p95-ms", "900"
    )
    assert done.returncode == 0 and "accepted" in done.stdout, done.stderr
    await asyncio.sleep(config.control.report_every_s + 1.5)  # the next report carries the new targets
    shown = await asyncio.to_thread(_budget_cli, path, bootstrap, "show", "--json")
    targets = json.loads(shown.stdout)["controller"]["targets"]
    assert targets["cost_per_request"] == 0.005 and targets["latency_ms"] == 900.0

    forged = await asyncio.to_thread(_budget_cli, path, bootstrap, "set", "--cost-per-request", "1", key="guess")
    assert forged.returncode == 1 and forged.stderr.strip() == "tierflow: refused by the controller: bad_signature"
    for bad in ("-1", "nan", "1e99"):
        refused = await asyncio.to_thread(_budget_cli, path, bootstrap, "set", "--cost-per-request", bad)
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "--cost-per-request" in refused.stderr
    assert (await state(pipeline))["targets"].cost_per_request == 0.005  # none of them changed anything
