"""The embedded broker: a real subprocess on loopback, readiness-checked, stopped with its owner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from infra.broker import DockerKafka, EmbeddedBroker, docker_available
from topics import BrokerError
from topics.admin import delete_topics, ensure_topics

pytestmark = pytest.mark.integration


async def test_embedded_broker_starts_serves_and_stops(tmp_path: Path) -> None:
    broker = EmbeddedBroker(log_dir=tmp_path)
    bootstrap = broker.start()
    pid = broker.pid
    try:
        assert bootstrap.startswith("127.0.0.1:")
        assert pid is not None
        os.kill(pid, 0)  # alive
        options = {"bootstrap_servers": bootstrap}
        assert await ensure_topics(options, {"t.a": 3, "t.b": 1}) == ["t.a", "t.b"]
        assert await ensure_topics(options, {"t.a": 3}) == [], "existing topics are left alone"
        await delete_topics(options, ["t.a", "t.b"])
        assert broker.log_path.exists()
    finally:
        broker.stop()
        broker.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_binary_that_cannot_run_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    not_executable = tmp_path / "tansu"
    not_executable.write_text("")
    monkeypatch.setenv("CALF_TANSU_BIN", str(not_executable))
    with pytest.raises(BrokerError, match="no Tansu binary"):
        EmbeddedBroker(log_dir=tmp_path).start()


def test_a_binary_that_exits_at_start_is_reported_with_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "fake-broker"
    script.write_text("#!/bin/sh\necho 'address already in use' >&2\nexit 3\n")
    script.chmod(0o755)
    monkeypatch.setenv("CALF_TANSU_BIN", str(script))
    with pytest.raises(BrokerError, match="exited at start: address already in use"):
        EmbeddedBroker(log_dir=tmp_path).start()


@pytest.mark.skipif(docker_available(), reason="a Docker engine answers here")
def test_docker_provider_without_an_engine_says_so() -> None:
    with pytest.raises(BrokerError, match="Docker engine"):
        DockerKafka().start()


def test_no_broker_is_left_behind(tmp_path: Path) -> None:
    broker = EmbeddedBroker(log_dir=tmp_path)
    with broker:
        pid = broker.pid
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
