"""The supervisor owns the deployment: `up` can be killed, the supervisor can be killed, nothing is lost.

`tierflow up` runs as a separate driver against the session's Ray (by address, as on a
cluster) and the session's broker (as an external one). Killed with SIGKILL, it takes
nothing with it; `up --detach` attaches to the running supervisor instead of deploying a
second set; `tierflow scale` grows a pool (and is refused past its partitions); a
supervisor that Ray restarts adopts the live replicas by name, the scaled ones included;
`tierflow down` stops everything, and the results sink delivered every request exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import ray

from infra.config import load_config
from infra.supervisor import find_supervisor, supervisor_name
from topics.admin import delete_topics
from topics.control import ControllerKey

from .conftest import WAIT_S
from .helpers import delivered_ids, make_requests, send_and_collect
from .test_cli_up_send import _wait_for_line

pytestmark = pytest.mark.integration

CONFIG = """
namespace = "{ns}"
results_path = "{results}"

[ray]
address = "{ray}"

[broker]
provider = "external"
bootstrap_servers = "{bootstrap}"
session_timeout_ms = 2000

[router]
partitions = 2

[control]
signing_key_env = "{signing_env}"
public_keys = {{ {signer} = "{public}" }}

[[tiers]]
name = "small"
backend = "simulated"
threshold = 0.8
num_cpus = 0.1
options = {{ accuracy = 0.6, seed = 1 }}

[[tiers]]
name = "large"
backend = "simulated"
threshold = 0.0
num_cpus = 0.1
options = {{ accuracy = 0.9, seed = 2 }}
"""


SIGNER = ControllerKey.generate("supervisor-tests")
SIGNING_ENV = "TIERFLOW_TEST_SUPERVISOR_SIGNER"
SECRETS = {"TIERFLOW_CONTROL_KEY": "operator-secret", SIGNING_ENV: SIGNER.seed.hex()}
"""The operator's HMAC secret and the controller's private key, as `up` and `scale` read them."""


def _env() -> dict[str, str]:
    """This process's environment as it is now (Ray's ``RAY_AUTH_MODE`` included) plus the secrets."""
    return os.environ | SECRETS


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra.cli", *args],
        capture_output=True,
        text=True,
        timeout=WAIT_S * 2,
        check=False,
        env=_env(),
    )


def _named(namespace: str) -> set[str]:
    """The named actors of ``namespace`` alive in the tierflow Ray namespace."""
    return {name for name in ray.util.list_named_actors() if name.startswith(f"{namespace}.")}


def _replica_pids(namespace: str) -> dict[str, int]:
    stages = [name for name in _named(namespace) if not name.endswith((".controller", ".supervisor"))]
    return {name: int(_ask(ray.get_actor(name), "stats")["pid"]) for name in stages}


def _ask(handle: Any, method: str) -> dict[str, Any]:
    answer: dict[str, Any] = ray.get(getattr(handle, method).remote(), timeout=WAIT_S)
    return answer


def _wait(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def _send(config: Any, kafka: dict[str, Any], prefix: str) -> None:
    asyncio.run(send_and_collect(config, kafka, make_requests(50, prefix)))


def test_the_deployment_outlives_up_and_its_supervisor(
    tmp_path: Path, bootstrap: str, kafka: dict[str, Any], ray_session: None
) -> None:
    namespace = f"sup-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "tierflow.toml"
    gcs = ray.get_runtime_context().gcs_address
    path.write_text(
        CONFIG.format(
            ns=namespace,
            results=tmp_path / "results.jsonl",
            ray=gcs,
            bootstrap=bootstrap,
            signing_env=SIGNING_ENV,
            signer=SIGNER.key_id,
            public=SIGNER.public_key.hex(),
        )
    )
    config = load_config(path)
    up = subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "up", "--config", str(path)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=_env(),
    )
    try:
        _wait_for_line(up, r"pipeline ready; Ctrl-C stops it", timeout_s=WAIT_S * 2)
        stages = {f"{namespace}.{pool}.0" for pool in ("router", "verifier", "worker.small", "worker.large", "sink")}
        deployed = _named(namespace)
        assert deployed == stages | {f"{namespace}.controller", supervisor_name(namespace)}
        _send(config, kafka, "before")

        os.kill(up.pid, signal.SIGKILL)  # no handler runs: whatever up owned would die here
        up.wait(timeout=WAIT_S)
        _send(config, kafka, "orphaned")
        assert _named(namespace) == deployed

        attach = _cli("up", "--config", str(path), "--detach")
        assert attach.returncode == 0, attach.stderr
        assert f"attached to the supervisor of namespace {namespace}" in attach.stderr
        assert "detached" in attach.stderr and "Traceback" not in attach.stderr
        assert _named(namespace) == deployed  # attached, not a second set

        scaled = _cli("scale", "--config", str(path), "router", "2")
        assert scaled.returncode == 0, scaled.stderr
        assert "accepted: pool router to 2 replicas" in scaled.stdout + scaled.stderr
        deployed |= {f"{namespace}.router.1"}
        _wait(lambda: _named(namespace) == deployed, "the second router replica")
        refused = _cli("scale", "--config", str(path), "router", "3")
        assert refused.returncode == 2 and "at most 2 replicas" in refused.stderr, refused.stderr
        _send(config, kafka, "scaled")

        pids = _replica_pids(namespace)
        supervisor = find_supervisor(namespace)
        assert supervisor is not None
        ray.kill(supervisor, no_restart=False)  # Ray restarts it with the arguments it was made with
        _wait(lambda: _ask(supervisor, "describe")["state"] == "ready", "the restarted supervisor to be ready")
        assert _named(namespace) == deployed
        assert _replica_pids(namespace) == pids  # adopted by name: the same processes, none started twice
        _send(config, kafka, "adopted")

        down = _cli("down", "--config", str(path))
        assert down.returncode == 0, down.stderr
        assert f"namespace {namespace} stopped" in down.stderr
        _wait(lambda: not _named(namespace), "every actor of the namespace to be gone")
        assert find_supervisor(namespace) is None

        delivered = Counter(delivered_ids(config))
        assert len(delivered) == 200 and max(delivered.values()) == 1
    finally:
        if up.poll() is None:
            up.kill()
        if (left := find_supervisor(namespace)) is not None:
            ray.kill(left, no_restart=True)
        for name in _named(namespace):
            ray.kill(ray.get_actor(name), no_restart=True)
        asyncio.run(delete_topics(kafka, config.layout.all_topics()))
