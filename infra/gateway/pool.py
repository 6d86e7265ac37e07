"""Several server processes behind one address: ``tierflow serve --workers N``.

Every process binds the same host and port with ``SO_REUSEPORT``, so the kernel spreads new
connections over them (as gunicorn's and uvicorn's own workers do, without a process in
front): one Python process is one core's worth of JSON, HTTP and Kafka clients, and this is
how a server uses more. Each process has its own producer, results reader and ledger
follower; any of them can answer any call because every process reads every result, and the
tenants' budgets and idempotent calls are shared through ``<ns>.ledger``
(:mod:`infra.gateway.ledger`). Token-bucket rate limits are each process's own: ``N`` processes
admit up to ``N`` times a tenant's rate.

The first process (the one ``tierflow serve`` runs) deploys the pipeline when it owns the
broker, starts the others once it answers calls, and stops them before the pipeline. They are
plain processes, not Ray actors: they must share this machine's port, and a Ray placement
would have no port to share.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.process
import socket

from infra.config import Config

STOP_S = 10.0
"""How long a worker may take to finish its calls in flight after it is told to stop."""


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` that other processes may bind too (``SO_REUSEPORT``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def claim_port(host: str, port: int) -> socket.socket:
    """The first process's socket: refused if anything listens on ``host:port`` already, another
    ``tierflow serve`` included (with ``SO_REUSEPORT`` alone, a second deployment could silently
    join the first one's port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, port))
    return reuse_port_socket(host, port)


def serve_worker(config: Config, bootstrap: str, host: str, port: int) -> None:
    """One more server process on the shared port (a spawned process's target)."""
    import uvicorn

    from infra.gateway.app import build_app

    sock = reuse_port_socket(host, port)
    uvicorn.Server(uvicorn.Config(build_app(config, bootstrap), log_level="warning")).run(sockets=[sock])


class ServerPool:
    """The extra server processes: ``start()`` spawns them, ``stop()`` ends them (SIGTERM, then kill)."""

    def __init__(self, config: Config, bootstrap: str, host: str, port: int, extra: int) -> None:
        self.args = (config, bootstrap, host, port)
        self.extra = extra
        self.processes: list[multiprocessing.process.BaseProcess] = []

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")  # no forked copy of this process's loop and clients
        for i in range(self.extra):
            process = context.Process(target=serve_worker, args=self.args, name=f"tierflow-serve-{i + 1}", daemon=True)
            process.start()
            self.processes.append(process)

    def stop(self) -> None:
        processes, self.processes = self.processes, []
        for process in processes:
            if process.is_alive():
                process.terminate()  # uvicorn finishes the calls in flight on SIGTERM
        for process in processes:
            process.join(STOP_S)
            if process.is_alive():
                process.kill()
                process.join(STOP_S)
        for process in processes:
            with contextlib.suppress(ValueError):
                process.close()
