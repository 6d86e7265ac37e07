"""``tierflow send`` refuses a bad input line before it produces anything: one line naming it, exit 2.

The CLI runs in a subprocess against a listening socket that stands in for the broker: had ``send``
dialled it before checking, a connection would be waiting in its backlog. Every test asserts none is.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.cli.send import check_line, read_requests, report_dead_letters
from infra.client import Collected
from infra.config import parse_config
from topics.messages import DeadLetter, Request, Result, Status
from topics.wire import MAX_ID_CHARS

CONFIG = '[[tiers]]\nname = "small"\nbackend = "simulated"\n\n[[tiers]]\nname = "large"\nbackend = "simulated"\n'
NOW = 1_700_000_000.0


@pytest.fixture
def config_file(tmp_path: Path) -> str:
    path = tmp_path / "tierflow.toml"
    path.write_text(CONFIG)
    return str(path)


@pytest.fixture
def broker() -> Iterator[socket.socket]:
    """A socket that listens but never answers: a connection to it would show in its backlog."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.setblocking(False)
        yield server


def _send(config_file: str, broker: socket.socket, stdin: bytes, *extra: str) -> subprocess.CompletedProcess[str]:
    host, port = broker.getsockname()
    proc = subprocess.run(
        [sys.executable, "-m", "infra.cli", "send", "--config", config_file, "--bootstrap", f"{host}:{port}", *extra],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )
    with pytest.raises(BlockingIOError):
        broker.accept()  # nothing dialled the broker
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def _lines(*items: object) -> bytes:
    return b"".join((item if isinstance(item, bytes) else json.dumps(item).encode()) + b"\n" for item in items)


def _refused(proc: subprocess.CompletedProcess[str], expected: str) -> None:
    """Exactly one stderr line, ``tierflow: error: <expected>``, exit 2, nothing on stdout."""
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"tierflow: error: {expected}"], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


GOOD = {"id": "ok", "input": "fine"}


def test_an_input_over_the_payload_limit(config_file: str, broker: socket.socket) -> None:
    proc = _send(config_file, broker, _lines(GOOD, {"input": "x" * 2_000_000}))
    assert proc.returncode == 2
    assert proc.stderr.startswith("tierflow: error: stdin:2: input too large: the request encodes to 2000")
    assert "over limits.max_payload_bytes (1048576)" in proc.stderr


def test_the_payload_limit_is_the_configs(tmp_path: Path, broker: socket.socket) -> None:
    path = tmp_path / "small.toml"
    path.write_text(CONFIG + "\n[limits]\nmax_payload_bytes = 1024\n")
    proc = _send(str(path), broker, _lines({"input": "x" * 1500}))
    assert proc.returncode == 2 and "over limits.max_payload_bytes (1024)" in proc.stderr


@pytest.mark.parametrize(
    ("deadline", "message"),
    [
        (b"NaN", "deadline_s must be a finite number, got nan"),
        (b"Infinity", "deadline_s must be a finite number, got inf"),
        (b"1" * 400, "deadline_s must be a finite number, got inf"),
        (b"-5", "deadline_s must be more than 0 seconds, got -5"),
        (b"0", "deadline_s must be more than 0 seconds, got 0"),
        (b'"30"', "deadline_s must be a number of seconds, got a string ('30')"),
        (b"true", "deadline_s must be a number of seconds, got true"),
    ],
)
def test_a_deadline_that_is_not_a_positive_finite_number(
    config_file: str, broker: socket.socket, deadline: bytes, message: str
) -> None:
    line = b'{"input": "x", "deadline_s": ' + deadline + b"}"
    _refused(_send(config_file, broker, _lines(GOOD, GOOD | {"id": "b"}, line)), f"stdin:3: {message}")


@pytest.mark.parametrize("field", ["id", "tenant"])
def test_an_id_or_tenant_over_the_wire_limit(config_file: str, broker: socket.socket, field: str) -> None:
    long = "x" * (MAX_ID_CHARS + 1)
    proc = _send(config_file, broker, _lines({"input": "x", field: long}))
    _refused(proc, f"stdin:1: {field}: expected `str` of length <= {MAX_ID_CHARS} (got {MAX_ID_CHARS + 1} characters)")


def test_an_id_at_the_limit_is_fine() -> None:
    request = check_line(json.dumps({"input": "x", "id": "x" * MAX_ID_CHARS}).encode(), ("small",), 1 << 20, NOW)
    assert request.id == "x" * MAX_ID_CHARS


def test_bytes_that_are_not_utf8(config_file: str, broker: socket.socket) -> None:
    _refused(
        _send(config_file, broker, _lines(GOOD, b'{"input": "caf\xe9"}')), "stdin:2: not UTF-8 (byte 0xe9 at column 15)"
    )


def test_a_utf8_bom_and_crlf_line_ends_are_fine(tmp_path: Path) -> None:
    config = parse_config({"tiers": [{"name": "small", "backend": "simulated"}]})
    raw = b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\r\n\r\n" + json.dumps({"input": "\u00e9"}).encode() + b"\r\n"
    given = read_requests(raw.splitlines(keepends=True), "f", config, NOW)
    assert given.problems == []
    assert [r.input for r in given.requests] == ["fine", "\u00e9"] and given.lines["ok"] == 1


def test_allowed_tiers_as_a_string_is_refused_not_split(config_file: str, broker: socket.socket) -> None:
    proc = _send(config_file, broker, _lines({"input": "x", "allowed_tiers": "large"}))
    _refused(proc, "stdin:1: allowed_tiers must be a list of tier names, got a string ('large')")


def test_unknown_tiers_are_refused_with_the_known_ones(config_file: str, broker: socket.socket) -> None:
    proc = _send(config_file, broker, _lines({"input": "x", "allowed_tiers": ["small", "huge"]}))
    _refused(proc, "stdin:1: allowed_tiers: unknown tier 'huge' (known: small, large)")


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        ([], "allowed_tiers must name at least one tier (leave it out to allow all)"),
        (["small", 3], "allowed_tiers must be a list of tier names, got a number (3) at [1]"),
    ],
)
def test_other_bad_allowed_tiers(config_file: str, broker: socket.socket, tiers: list[object], message: str) -> None:
    _refused(_send(config_file, broker, _lines({"input": "x", "allowed_tiers": tiers})), f"stdin:1: {message}")


def test_a_repeated_id_names_its_first_line(config_file: str, broker: socket.socket) -> None:
    lines = _lines({"id": "x", "input": "a"}, *({"input": f"n{i}"} for i in range(4)), b"", {"id": "x", "input": "b"})
    _refused(_send(config_file, broker, lines), "stdin:7: id 'x' repeats line 1")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"input": 5}, "input must be a string, got a number (5)"),
        ({"id": "q"}, "input is required (a string)"),
        ({"input": "x", "id": 7}, "id must be a string, got a number (7)"),
        ({"input": "x", "id": ""}, "id must not be empty (leave it out for a generated one)"),
        ({"input": "x", "tenant": ["t"]}, "tenant must be a string, got a list"),
        (
            {"input": "x", "deadline": 5},
            "unknown field 'deadline' (known: input, id, deadline_s, allowed_tiers, tenant)",
        ),
        (["input"], 'each line must be a JSON object with a string "input", got a list'),
        (b"{oops", "not JSON (Expecting property name enclosed in double quotes at column 2)"),
        (b"[" * 100_000, "not JSON the client reads (nested too deeply)"),
    ],
)
def test_other_bad_lines(config_file: str, broker: socket.socket, line: object, message: str) -> None:
    _refused(_send(config_file, broker, _lines(line)), f"stdin:1: {message}")


def test_every_bad_line_is_named_and_nothing_is_sent(config_file: str, broker: socket.socket, tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(_lines(GOOD, {"input": 1}, GOOD, b"\xff"))
    proc = _send(config_file, broker, b"", "--file", str(path))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"tierflow: error: {path}:2: input must be a string, got a number (1)",
        f"tierflow: error: {path}:3: id 'ok' repeats line 1",
        f"tierflow: error: {path}:4: not UTF-8 (byte 0xff at column 1)",
        f"tierflow: error: 3 bad lines in {path}; nothing was sent",
    ]


def test_a_flood_of_bad_lines_is_cut_short(config_file: str, broker: socket.socket) -> None:
    proc = _send(config_file, broker, _lines(*({"input": i} for i in range(50))))
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 22
    assert lines[-2:] == [
        "tierflow: error: 30 more bad lines not shown",
        "tierflow: error: 50 bad lines in stdin; nothing was sent",
    ]


def test_a_good_line_becomes_the_request_the_router_decodes() -> None:
    line = {"id": "q1", "input": "hi", "deadline_s": 30, "allowed_tiers": ["large"], "tenant": "acme"}
    request = check_line(json.dumps(line).encode(), ("small", "large"), 1 << 20, NOW)
    assert Request.from_wire(request.to_wire()) == request
    assert (request.id, request.input, request.tenant) == ("q1", "hi", "acme")
    assert request.deadline == NOW + 30 and request.hints.allowed_tiers == ("large",)


def test_absent_and_null_fields_take_their_defaults() -> None:
    request = check_line(b'{"input": "x", "id": null, "deadline_s": null, "allowed_tiers": null}', ("a",), 1 << 20, NOW)
    assert len(request.id) == 32 and request.deadline is None and request.hints.allowed_tiers is None
    assert request.tenant == ""


def _letter(request_id: str, reason: str, detail: str, stage: str = "router") -> DeadLetter:
    return DeadLetter(
        source_topic="ns.requests",
        partition=0,
        offset=1,
        stage=stage,
        error_class="DecodeError",
        reason=reason,
        detail=detail,
        payload_size=1,
        payload_sha256="",
        payload_head=b"",
        request_id=request_id,
    )


def _collected(*letters: DeadLetter, results: tuple[str, ...] = ()) -> Collected:
    collected = Collected(dead_letters=list(letters), dead_ids={letter.request_id or "" for letter in letters})
    collected.results.update({rid: Result(rid, Status.OK) for rid in results})
    return collected


def test_each_dead_letter_is_named_with_its_line_stage_and_reason(capsys: pytest.CaptureFixture[str]) -> None:
    config = parse_config({"tiers": [{"name": "small", "backend": "simulated"}]})
    given = read_requests(_lines({"id": "a", "input": "x"}, {"id": "b", "input": "y"}).splitlines(), "stdin", config)
    collected = _collected(
        _letter("b", "too_large", "too_large: 9000 bytes > limit 4096"),
        _letter("b", "wrong_type", "later"),
        _letter("a", "processing_error", "boom", stage="tier.small"),
        results=("a",),
    )
    assert report_dead_letters(given, collected) == 1
    assert capsys.readouterr().err.splitlines() == [
        "tierflow: stdin:2: request 'b' ended as a dead letter at the router (too_large: 9000 bytes > limit 4096)",
        "tierflow: 1 of 2 requests ended as dead letters",
    ]


def test_a_dead_letter_without_its_reason_in_the_detail_gets_it(capsys: pytest.CaptureFixture[str]) -> None:
    config = parse_config({"tiers": [{"name": "small", "backend": "simulated"}]})
    given = read_requests([b'{"id": "a", "input": "x"}'], "q.jsonl", config)
    assert report_dead_letters(given, _collected(_letter("a", "processing_error", "boom", stage="verifier"))) == 1
    assert (
        "q.jsonl:1: request 'a' ended as a dead letter at the verifier (processing_error: boom)"
        in capsys.readouterr().err
    )


def test_only_a_dead_letter_with_no_result_is_an_ending() -> None:
    assert _collected(_letter("a", "x", "y")).dead_letter_of("a") is not None
    assert _collected(_letter("a", "x", "y")).dead_letter_of("nobody") is None
    assert _collected(_letter("a", "x", "y"), results=("a",)).dead_letter_of("a") is None
