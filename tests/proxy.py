"""A TCP proxy in front of a Kafka broker that can cut off one client: network faults for tests.

Every connection it accepts is tagged with the client id of its first Kafka request
(each request starts ``int32 size, int16 api_key, int16 api_version, int32
correlation_id, int16 client_id length, client_id``), then bytes are forwarded
verbatim both ways. :meth:`KafkaProxy.cut` stops forwarding on every connection
whose client id starts with a prefix (and holds new ones: they connect, but nothing
passes), like a network partition that drops packets; :meth:`KafkaProxy.resume`
forwards again, what was held included; :meth:`KafkaProxy.reset` aborts those
connections with a TCP RST, so the client has to reconnect, and lets new ones through.

The proxy runs its own event loop on a thread of its own, so nothing the test does on
its loop (a blocking call, a long await) stalls the traffic; its methods are
thread-safe and return once the change took effect.

The broker must advertise the proxy's address (``EmbeddedBroker(advertised_port=...)``),
or clients would leave the proxy for the broker's own address after their first
metadata request.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

HEADER = struct.Struct(">ihhih")
"""size, api_key, api_version, correlation_id, client_id length: the start of every Kafka request."""
MAX_HEADER_BYTES = 64 * 1024
"""A first request whose header is not complete within this many bytes is not Kafka: the connection is dropped."""
CHUNK = 64 * 1024


def parse_client_id(data: bytes) -> str | None:
    """The client id of the Kafka request at the start of ``data``; ``None`` until its header has arrived.

    A null client id (length -1) reads as ``""``. Raises ``ValueError`` when ``data`` cannot start a
    Kafka request (negative size, a length below -1, a client id longer than the request).
    """
    if len(data) < HEADER.size:
        return None
    size, _api_key, _api_version, _correlation_id, length = HEADER.unpack_from(data)
    if size < HEADER.size - 4 or length < -1 or (length > 0 and HEADER.size - 4 + length > size):
        raise ValueError(f"not a Kafka request header: size {size}, client id length {length}")
    if length <= 0:
        return ""
    if len(data) < HEADER.size + length:
        return None
    return data[HEADER.size : HEADER.size + length].decode("utf-8", errors="replace")


@dataclass(eq=False)
class Connection:
    """One client connection and its upstream twin."""

    client_id: str
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while bytes may pass (both directions)."""


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), dropping anything unsent."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class KafkaProxy:
    """Listens on ``127.0.0.1:listen_port`` (0: a free port) and forwards to ``127.0.0.1:upstream_port``.

    ``upstream_port`` is read at each new connection, so it may be set after :meth:`start`: start the
    proxy, start the broker advertising ``proxy.port``, then point the proxy at the broker's port.
    """

    def __init__(self, upstream_port: int, listen_port: int = 0, host: str = "127.0.0.1") -> None:
        self.host = host
        self.upstream_port = upstream_port
        self.port = listen_port
        self.connections: list[Connection] = []
        """Open connections, touched on the proxy's loop only (read a snapshot through :meth:`clients`)."""
        self._cut: set[str] = set()
        self._accepted: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- control, from any thread -------------------------------------------------------

    def start(self) -> int:
        """Start listening (on its own thread) and return the port."""
        if self._thread is not None:
            return self.port
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="kafka-proxy", daemon=True)
        self._thread.start()
        self._call(self._listen())
        return self.port

    def stop(self) -> None:
        """Close the listener and every connection, then the thread. Safe to call twice."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> KafkaProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def cut(self, prefix: str) -> int:
        """Stop forwarding for client ids starting with ``prefix``; returns how many open connections it froze."""
        return self._call(self._set_cut(prefix, cut=True))

    def resume(self, prefix: str) -> int:
        """Forward again (what was held flows on); returns how many open connections it thawed."""
        return self._call(self._set_cut(prefix, cut=False))

    def reset(self, prefix: str) -> int:
        """Abort those clients' connections with a RST and let their new ones through; returns how many it reset."""
        return self._call(self._reset(prefix))

    def clients(self) -> list[str]:
        """The client ids of the open connections (one entry per connection)."""
        return self._call(self._snapshot())

    def accepted(self, prefix: str = "") -> int:
        """How many connections with a client id starting with ``prefix`` were ever tagged."""
        return self._call(self._count_accepted(prefix))

    def _call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 10.0) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the proxy is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    # ---- on the proxy's loop --------------------------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            self._close(conn, abort=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _matches(self, client_id: str) -> bool:
        return any(client_id.startswith(prefix) for prefix in self._cut)

    async def _set_cut(self, prefix: str, *, cut: bool) -> int:
        if cut:
            self._cut.add(prefix)
        else:
            self._cut.discard(prefix)
        changed = 0
        for conn in self.connections:
            if conn.client_id.startswith(prefix):
                changed += 1
                if self._matches(conn.client_id):
                    conn.gate.clear()
                else:
                    conn.gate.set()
        return changed

    async def _reset(self, prefix: str) -> int:
        self._cut.discard(prefix)
        hit = [conn for conn in self.connections if conn.client_id.startswith(prefix)]
        for conn in hit:
            self._close(conn, abort=True)
        return len(hit)

    async def _snapshot(self) -> list[str]:
        return [conn.client_id for conn in self.connections]

    async def _count_accepted(self, prefix: str) -> int:
        return sum(1 for client_id in self._accepted if client_id.startswith(prefix))

    def _close(self, conn: Connection, *, abort: bool) -> None:
        if conn in self.connections:
            self.connections.remove(conn)
        conn.gate.set()  # wake the pumps so they notice the closed sockets and end
        for writer in (conn.client, conn.upstream):
            if abort:
                _abort(writer)
            else:
                writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            _abort(writer)
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = b""
        while (client_id := parse_client_id(first)) is None:
            if len(first) > MAX_HEADER_BYTES:
                raise ValueError("no Kafka request header")
            chunk = await reader.read(CHUNK)
            if not chunk:
                writer.close()
                return
            first += chunk
        up_reader, up_writer = await asyncio.open_connection(self.host, self.upstream_port)
        conn = Connection(client_id, writer, up_writer)
        self._accepted.append(client_id)
        self.connections.append(conn)
        if not self._matches(client_id):
            conn.gate.set()
        await conn.gate.wait()  # a new connection of a cut-off client is held, its first request too
        if conn in self.connections:
            up_writer.write(first)
            pumps = [
                asyncio.ensure_future(self._pump(conn, reader, up_writer)),
                asyncio.ensure_future(self._pump(conn, up_reader, writer)),
            ]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        if conn in self.connections:
            self._close(conn, abort=False)

    async def _pump(self, conn: Connection, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Copy bytes while the gate is open; a cut stops reading, so the kernel's buffers fill and TCP stalls."""
        with contextlib.suppress(OSError, ConnectionError):
            while True:
                await conn.gate.wait()
                data = await source.read(CHUNK)
                if not data:
                    return
                await conn.gate.wait()  # bytes read just before a cut wait for the resume
                if conn not in self.connections:
                    return
                sink.write(data)
                await sink.drain()
