"""The fault tests' Kafka proxy: header parsing, and cut / resume / reset against a loopback echo server."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import pytest

from tests.proxy import KafkaProxy, parse_client_id


def request(client_id: str | None, body: bytes = b"\x00\x01", api_key: int = 18, version: int = 3) -> bytes:
    """A Kafka request frame as a client writes it (``None``: a null client id)."""
    raw = client_id.encode() if client_id is not None else b""
    length = len(raw) if client_id is not None else -1
    header = struct.pack(">hhih", api_key, version, 7, length) + raw
    return struct.pack(">i", len(header) + len(body)) + header + body


def test_the_client_id_is_read_from_the_request_header() -> None:
    assert parse_client_id(request("ns.worker.small.0")) == "ns.worker.small.0"
    assert parse_client_id(request("ns.worker.small.0") + request("other")) == "ns.worker.small.0"
    assert parse_client_id(request(None)) == ""
    assert parse_client_id(request("")) == ""


def test_an_incomplete_header_asks_for_more_bytes() -> None:
    frame = request("ns.worker.small.0")
    for cut in range(len("ns.worker.small.0") + 14):
        assert parse_client_id(frame[:cut]) is None, cut
    assert parse_client_id(frame[: 14 + len("ns.worker.small.0")]) == "ns.worker.small.0"


@pytest.mark.parametrize(
    "frame",
    [
        struct.pack(">ihhih", -5, 18, 3, 1, 3) + b"abc",  # negative size
        struct.pack(">ihhih", 40, 18, 3, 1, -2),  # length below -1
        struct.pack(">ihhih", 12, 18, 3, 1, 50) + b"x" * 50,  # client id longer than the request
    ],
)
def test_what_cannot_start_a_kafka_request_is_refused(frame: bytes) -> None:
    with pytest.raises(ValueError, match="not a Kafka request"):
        parse_client_id(frame)


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, wait_s: float) -> bytes:
    writer.write(data)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(data)), wait_s)


async def test_a_cut_client_is_frozen_until_resumed_and_others_flow_on(echo_port: int) -> None:
    with KafkaProxy(echo_port) as proxy:
        cut_r, cut_w = await asyncio.open_connection("127.0.0.1", proxy.port)
        ok_r, ok_w = await asyncio.open_connection("127.0.0.1", proxy.port)
        first_cut, first_ok = request("ns.worker.small.0"), request("ns.worker.small.1")
        assert await _exchange(cut_r, cut_w, first_cut, 2) == first_cut  # verbatim, both ways
        assert await _exchange(ok_r, ok_w, first_ok, 2) == first_ok
        assert sorted(proxy.clients()) == ["ns.worker.small.0", "ns.worker.small.1"]

        assert proxy.cut("ns.worker.small.0") == 1
        cut_w.write(b"held")
        await cut_w.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(cut_r.readexactly(4), 0.3)
        assert await _exchange(ok_r, ok_w, b"still flowing", 2) == b"still flowing"

        # a new connection of the cut-off client connects, but even its first request is held
        late_r, late_w = await asyncio.open_connection("127.0.0.1", proxy.port)
        late_w.write(request("ns.worker.small.0-late"))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(late_r.read(1), 0.3)

        assert proxy.resume("ns.worker.small.0") == 2
        assert await asyncio.wait_for(cut_r.readexactly(4), 2) == b"held"
        assert len(await asyncio.wait_for(late_r.read(4096), 2)) > 0
        for w in (cut_w, ok_w, late_w):
            w.close()


async def test_a_reset_aborts_the_clients_connections_and_lets_new_ones_through(echo_port: int) -> None:
    with KafkaProxy(echo_port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        await _exchange(reader, writer, request("ns.worker.small.0"), 2)
        proxy.cut("ns.worker.small.0")
        assert proxy.reset("ns.worker.small.0") == 1
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 2)
        writer.close()

        again_r, again_w = await asyncio.open_connection("127.0.0.1", proxy.port)
        frame = request("ns.worker.small.0")
        assert await _exchange(again_r, again_w, frame, 2) == frame
        assert proxy.accepted("ns.worker.small.0") == 2
        again_w.close()
