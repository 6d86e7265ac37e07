"""The CLI says what is wrong in one line, with no traceback, and exits non-zero."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from infra.broker import free_port

CONFIG = '[[tiers]]\nname = "a"\nbackend = "simulated"\n'


def _tierflow(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def config_file(tmp_path: Path) -> str:
    path = tmp_path / "tierflow.toml"
    path.write_text(CONFIG)
    return str(path)


def _assert_one_line_error(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("tierflow: error: ") and fragment in lines[0]
    assert "Traceback" not in proc.stderr


def test_help_lists_the_commands() -> None:
    proc = _tierflow("--help")
    assert proc.returncode == 0
    for command in ("demo", "up", "down", "send", "trace", "eval", "fit", "models", "data"):
        assert command in proc.stdout


def test_missing_config(tmp_path: Path) -> None:
    _assert_one_line_error(_tierflow("up", "--config", str(tmp_path / "nope.toml")), "cannot read config")


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(CONFIG + "replicas = 0\n")
    _assert_one_line_error(_tierflow("up", "--config", str(path)), "tiers[0].replicas")


def test_detach_needs_a_deployment_that_outlives_up(config_file: str, tmp_path: Path) -> None:
    _assert_one_line_error(_tierflow("up", "--config", config_file, "--detach"), "set [ray] address")
    embedded_on_a_cluster = tmp_path / "cluster.toml"
    embedded_on_a_cluster.write_text('[ray]\naddress = "127.0.0.1:9"\n' + CONFIG)
    _assert_one_line_error(_tierflow("up", "--config", str(embedded_on_a_cluster), "--detach"), "broker outside it")


def test_down_needs_a_ray_cluster(config_file: str) -> None:
    _assert_one_line_error(_tierflow("down", "--config", config_file), "tierflow down needs [ray] address")


def test_unknown_portfolio_lists_the_known_ones() -> None:
    _assert_one_line_error(_tierflow("demo", "--portfolio", "nope"), "known: headlines")


def test_bad_request_count() -> None:
    _assert_one_line_error(_tierflow("demo", "--requests", "0"), "--requests")


def test_bad_input_line_is_named(config_file: str) -> None:
    proc = _tierflow("send", "--config", config_file, "--bootstrap", "127.0.0.1:1", stdin='{"input": "ok"}\n{oops\n')
    _assert_one_line_error(proc, "stdin:2")


def test_missing_input_file(config_file: str, tmp_path: Path) -> None:
    proc = _tierflow("send", "--config", config_file, "--bootstrap", "127.0.0.1:1", "--file", str(tmp_path / "x"))
    _assert_one_line_error(proc, "cannot read")


def test_unreachable_broker(config_file: str) -> None:
    proc = _tierflow(
        "send", "--config", config_file, "--bootstrap", f"127.0.0.1:{free_port()}", stdin='{"input": "x"}\n'
    )
    _assert_one_line_error(proc, "cannot reach the broker")


def test_send_needs_a_bootstrap(config_file: str) -> None:
    _assert_one_line_error(_tierflow("send", "--config", config_file, stdin=""), "--bootstrap")


def test_bad_backend_options_fail_before_anything_starts(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[tiers]]\nname = "a"\nbackend = "headlines"\noptions = { stage = "nope" }\n')
    proc = _tierflow("up", "--config", str(path))
    _assert_one_line_error(proc, "stage")
    assert "broker" not in proc.stderr, "no broker was started for a config that cannot run"


def test_unknown_backend_lists_the_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[tiers]]\nname = "a"\nbackend = "gpt9"\n')
    known = "known: headlines, llamacpp, openai, recorded, replay, simulated"
    _assert_one_line_error(_tierflow("up", "--config", str(path)), known)


def test_lab_and_registry_commands_fail_in_one_line(tmp_path: Path) -> None:
    _assert_one_line_error(_tierflow("eval", "--trace", str(tmp_path / "none.jsonl")), "cannot read trace")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"item_id": "x"}\n')
    _assert_one_line_error(_tierflow("eval", "--trace", str(bad)), "bad.jsonl:1: not a trace row")
    _assert_one_line_error(
        _tierflow("fit", "--trace", str(bad), "--policy", "magic", "--out", str(tmp_path / "p.json")),
        "not a trace row",
    )
    _assert_one_line_error(_tierflow("models", "fetch", "gpt-9"), "unknown model 'gpt-9'")
    _assert_one_line_error(_tierflow("up", "--config", str(tmp_path / "none.toml")), "cannot read config")
    policy = tmp_path / "policy.json"
    policy.write_text('{"format": "tierflow-policy", "version": 1, "name": "x", '
                      '"pre_call": {"name": "cheapest_first"}, "post_hoc": {"name": "oracle"}}')  # fmt: skip
    config = tmp_path / "c.toml"
    config.write_text('[[tiers]]\nname = "a"\nbackend = "simulated"\n')
    _assert_one_line_error(_tierflow("up", "--config", str(config), "--policy", str(policy)), "unknown post-hoc policy")


def test_serve_refuses_a_bad_port_or_config_in_one_line(tmp_path: Path) -> None:
    _assert_one_line_error(_tierflow("serve", "--port", "70000"), "--port must be in [1, 65535], got 70000")
    _assert_one_line_error(_tierflow("serve", "--portfolio", "nope"), "nope")
    _assert_one_line_error(_tierflow("serve", "--config", str(tmp_path / "missing.toml")), "missing.toml")


def test_scale_checks_the_pool_and_the_count_before_sending(tmp_path: Path) -> None:
    path = tmp_path / "tierflow.toml"
    path.write_text(CONFIG + "partitions = 2\n")
    _assert_one_line_error(_tierflow("scale", "--config", str(path), "worker.b", "2"), "unknown pool 'worker.b'")
    _assert_one_line_error(_tierflow("scale", "--config", str(path), "router", "0"), "at least 1 replica")
    _assert_one_line_error(_tierflow("scale", "--config", str(path), "worker.a", "3"), "at most 2 replicas")
