"""A Ray cluster whose autoscaler launches fake nodes on this machine, started and stopped by pid.

``ray.cluster_utils.AutoscalingCluster`` does this job in Ray's own tests, but it runs
``ray stop --force`` when it starts and when it shuts down, which stops every Ray on the
machine (this test session's among them), and in the installed wheel it reads an
``example.yaml`` that is not shipped. This launcher writes the same kind of config (Ray's
fake multi-node provider: every node it "launches" is a raylet process here) and starts the
head with ``ray start --head`` on a port of its own; :meth:`shutdown` ends the processes of
that Ray session alone, found by its session name in their command lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from infra.broker import free_port

STOP_WAIT_S = 10.0


class FakeAutoscalingCluster:
    """A head with ``head_cpus`` and an autoscaler that adds nodes of ``worker_types`` (Ray's node types:
    ``{"resources": {...}, "node_config": {}, "min_workers": 0, "max_workers": n}``) when tasks wait."""

    def __init__(self, head_cpus: int, worker_types: dict[str, Any], idle_timeout_s: float = 5.0) -> None:
        self.head_cpus = head_cpus
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp_dir = Path(tempfile.mkdtemp(prefix="tf-ray-"))
        self.config = {
            "cluster_name": "fake-autoscaling",
            "max_workers": sum(int(t["max_workers"]) for t in worker_types.values()),
            "idle_timeout_minutes": idle_timeout_s / 60.0,
            "upscaling_speed": 1.0,
            "provider": {
                "type": "fake_multinode",
                "use_node_id_as_ip": True,
                "disable_node_updaters": True,
                "disable_launch_config_check": True,
                "gcs_address": self.address,
            },
            "available_node_types": {
                **worker_types,
                "ray.head.default": {"resources": {"CPU": head_cpus}, "node_config": {}, "max_workers": 0},
            },
            "head_node_type": "ray.head.default",
            "auth": {"ssh_user": "nobody"},
            "docker": {},
            "file_mounts": {},
            "cluster_synced_files": [],
            "file_mounts_sync_continuously": False,
            "rsync_exclude": [],
            "rsync_filter": [],
            "initialization_commands": [],
            "setup_commands": [],
            "head_setup_commands": [],
            "worker_setup_commands": [],
            "head_start_ray_commands": [],
            "worker_start_ray_commands": [],
        }
        self._session = ""

    def start(self) -> None:
        config = self.temp_dir / "autoscaling.json"
        config.write_text(json.dumps(self.config))
        # Token authentication, which `ray start` turns on by default (Ray 2.59+), as a production cluster
        # has it; the driver must set RAY_AUTH_MODE=token before it imports ray (the token: ~/.ray/auth_token).
        env = os.environ | {
            "RAY_AUTH_MODE": "token",
            "RAY_FAKE_CLUSTER": "1",
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        }
        command = [
            str(Path(sys.executable).with_name("ray")),  # the CLI of the Ray this interpreter runs
            "start",
            "--head",
            f"--port={self.port}",
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={self.temp_dir}",
            f"--autoscaling-config={config}",
            f"--num-cpus={self.head_cpus}",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ]
        subprocess.run(command, env=env, check=True, capture_output=True, timeout=120)
        self._session = (self.temp_dir / "session_latest").resolve().name

    def shutdown(self) -> None:
        """Terminate this session's processes (and their children), then kill what is left."""
        if not self._session:
            return
        found: dict[int, psutil.Process] = {}
        for process in psutil.process_iter(["pid", "cmdline"]):
            with contextlib.suppress(psutil.Error):
                if any(self._session in part or str(self.temp_dir) in part for part in process.info["cmdline"] or ()):
                    found[process.pid] = process
                    for child in process.children(recursive=True):
                        found[child.pid] = child
        for process in found.values():
            with contextlib.suppress(psutil.Error):
                process.terminate()
        _, alive = psutil.wait_procs(list(found.values()), timeout=STOP_WAIT_S)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
        self._session = ""


def wait_until(condition: Any, timeout_s: float, interval_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)
    return True
