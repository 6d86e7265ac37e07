"""The OpenAI-compatible front door: a Starlette app in front of the pipeline's Kafka topics.

``POST /v1/chat/completions`` and ``POST /v1/completions`` check the body
(:mod:`infra.gateway.shapes`), produce one :class:`~topics.messages.Request` to
``<ns>.requests`` and answer with the result the shared :class:`ResultWaiter` hands over;
``GET /v1/models`` lists ``tierflow`` (routed) and the tiers; ``GET /healthz`` says whether
the broker answers (503 when it does not). Every error is one object in OpenAI's shape, never a traceback; a
body that fails its check never reaches Kafka, and the prompt never reaches a log line.

Kafka stays the data plane: any number of server processes can stand behind one address,
each with its own producer and results reader (results are read group-less, so every
process sees every result and keeps the ones its calls wait for), and the tenants' budgets
and idempotent calls are shared through ``<ns>.ledger`` (:mod:`infra.gateway.ledger`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiokafka.errors import KafkaError
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from infra.broker import kafka_options
from infra.client import RequestProducer
from infra.config import Config
from infra.gateway.ledger import LedgerLog
from infra.gateway.results import Outcome, ResultWaiter
from infra.gateway.shapes import (
    IDEMPOTENT_PREFIX,
    Call,
    GatewayError,
    models,
    parse_call,
    request_id,
    response,
    result_error,
    stream_chunks,
)
from infra.pipeline import Pipeline
from policies.admission import BudgetLedger, TokenBucket
from topics.errors import BrokerError
from topics.messages import DeadLetter, LedgerEntry, Result

log = logging.getLogger("tierflow.gateway")
DEADLINE_MARGIN_S = 5.0
"""A call waits this much past its request's deadline for the pipeline's ``expired`` result."""


class Gateway:
    """The server's state: the config, one producer and one results reader; ``start()``/``stop()``."""

    def __init__(self, config: Config, bootstrap: str, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.tiers = tuple(tier.name for tier in config.tiers)
        self.costs = {tier.name: tier.cost for tier in config.tiers}
        self.tenants = {t.key_sha256: name for name, t in config.gateway.tenants.items()}
        self.buckets = {
            name: TokenBucket(t.rate_per_s, t.burst) for name, t in config.gateway.tenants.items() if t.rate_per_s > 0
        }
        self.ledgers = {
            name: BudgetLedger(t.budget, t.budget_period_s, t.over_budget)
            for name, t in config.gateway.tenants.items()
            if t.budget > 0
        }
        self.kafka = kafka_options(config.broker, bootstrap)
        self.max_bytes = config.limits.max_payload_bytes
        self.default_deadline_s = config.limits.default_deadline_s
        self.claim_s = self.default_deadline_s + DEADLINE_MARGIN_S
        """How long a call claimed on the ledger by another process counts as in flight there."""
        self.origin = uuid.uuid4().hex[:12]
        """This server process, in the ledger entries it writes."""
        self._producer: RequestProducer | None = None
        self._waiter: ResultWaiter | None = None
        self._ledger: LedgerLog | None = None

    @property
    def producer(self) -> RequestProducer:
        assert self._producer is not None, "start() first"
        return self._producer

    @property
    def waiter(self) -> ResultWaiter:
        assert self._waiter is not None, "start() first"
        return self._waiter

    @property
    def ledger(self) -> LedgerLog:
        assert self._ledger is not None, "start() first"
        return self._ledger

    async def start(self) -> None:
        """Kafka clients are made here, in the server's event loop (aiokafka binds them to the loop they
        were made in, and the app may be built in another)."""
        wait_ms = self.config.broker.fetch_max_wait_ms
        self._waiter = ResultWaiter(self.kafka, self.config.layout, wait_ms)
        await self._waiter.start()
        self._ledger = LedgerLog(self.kafka, self.config.layout, self._apply, wait_ms)
        await self._ledger.start()  # budgets and finished calls as every server process left them
        self._producer = RequestProducer(self.kafka, self.config.layout)
        await self._producer.start()

    async def stop(self) -> None:
        producer, ledger, waiter = self._producer, self._ledger, self._waiter
        self._producer, self._ledger, self._waiter = None, None, None
        if producer is not None:
            with contextlib.suppress(KafkaError):
                await producer.stop()
        if ledger is not None:
            await ledger.stop()
        if waiter is not None:
            await waiter.stop()

    def _apply(self, entry: LedgerEntry) -> None:
        """An entry of the ledger topic (this process's own come back too, and count once)."""
        now = self.clock()
        if (ledger := self.ledgers.get(entry.tenant)) is not None:
            if entry.settled:
                ledger.settle(entry.request_id, entry.cost, now, entry.period)
            else:
                ledger.hold(entry.request_id, entry.cost, entry.period, now)
        if entry.result is not None:
            self.waiter.remember(entry.result)
        elif (
            not entry.settled
            and entry.origin != self.origin
            and entry.request_id.startswith(IDEMPOTENT_PREFIX)
            and now - entry.at < self.claim_s
        ):
            self.waiter.claimed_elsewhere(entry.request_id)  # a retry reaching this process waits for it

    async def call(self, kind: str, http: HttpRequest) -> Response:
        raw = await http.body()
        if len(raw) > self.max_bytes * 2:  # the query itself is checked against max_bytes below
            raise GatewayError(413, f"the body is {len(raw)} bytes, over the limit of {self.max_bytes * 2}")
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise GatewayError(400, f"the body is not JSON: {exc.msg if hasattr(exc, 'msg') else exc}") from None
        tenant = self._tenant(http)
        self._limit_rate(tenant)
        call = parse_call(kind, body, self.tiers, self.max_bytes)
        key = http.headers.get("idempotency-key")
        rid = request_id(tenant, key, f"http-{uuid.uuid4().hex}")
        outcome = self.waiter.finished(rid)
        downgraded = sent = False
        if outcome is None:
            if not self.waiter.in_flight(rid):  # a retry of a call in flight waits for the same request
                self.waiter.expect(rid)  # from here on, before any await
                try:
                    call, downgraded, claim = self._within_budget(tenant, rid, call)
                    if claim is None and key is not None:  # other server processes: this call is in flight here
                        claim = LedgerEntry(tenant, rid, 0, 0.0, at=self.clock(), origin=self.origin)
                    if claim is not None:
                        await self._produce(self.ledger.append(claim), lambda: self._release(tenant, rid))
                    await self._send(call.request(rid, self.clock(), tenant), tenant)
                except GatewayError:
                    self.waiter.forget(rid)
                    raise
                sent = True
            timeout = (call.deadline_s or self.default_deadline_s) + DEADLINE_MARGIN_S
            try:
                outcome = await self.waiter.wait(rid, timeout)
            except TimeoutError:
                raise GatewayError(504, f"no result within {timeout:g} s", type="timeout") from None
        await self._settle(tenant, rid, outcome, keep=sent and key is not None)
        if isinstance(outcome, DeadLetter):
            raise GatewayError(422, f"the pipeline refused the request: {outcome.reason}")
        if (error := result_error(outcome)) is not None:
            raise error
        if call.stream:
            return StreamingResponse(_events(stream_chunks(call, outcome)), media_type="text/event-stream")
        doc = response(call, outcome)
        doc["tierflow"]["downgraded"] = downgraded
        return JSONResponse(doc)

    def _tenant(self, http: HttpRequest) -> str:
        """The tenant whose API key the call carries ("" when the config names no tenants); 401 otherwise."""
        if not self.tenants:
            return ""
        scheme, _, key = http.headers.get("authorization", "").partition(" ")
        tenant = (
            self.tenants.get(hashlib.sha256(key.strip().encode()).hexdigest()) if scheme.lower() == "bearer" else None
        )
        if tenant is None:
            raise GatewayError(
                401, "a valid API key is required (Authorization: Bearer <key>)", type="authentication_error"
            )
        return tenant

    def _limit_rate(self, tenant: str) -> None:
        bucket = self.buckets.get(tenant)
        if bucket is not None and (wait := bucket.take(self.clock())) > 0:
            raise GatewayError(
                429,
                f"rate limit of {bucket.rate_per_s:g} calls/s",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                retry_after_s=wait,
            )

    def _within_budget(self, tenant: str, rid: str, call: Call) -> tuple[Call, bool, LedgerEntry | None]:
        """The call narrowed to the tiers the tenant's budget still pays for, or a 429 (``over_budget``),
        with its new reservation for the ledger topic (``None`` when it reserved nothing new)."""
        ledger = self.ledgers.get(tenant)
        if ledger is None:
            return call, False, None
        now = self.clock()
        admission = ledger.admit(rid, call.allowed_tiers, self.costs, call.max_cost, now)
        if admission.refused:
            raise GatewayError(
                429,
                admission.refused,
                type="insufficient_quota",
                code="budget_exceeded",
                retry_after_s=ledger.period_s - now % ledger.period_s,
            )
        claim = None
        if admission.reserved is not None:
            claim = LedgerEntry(tenant, rid, ledger.period_of(now), admission.reserved, at=now, origin=self.origin)
        if admission.downgraded:
            return dataclasses.replace(call, allowed_tiers=admission.allowed), True, claim
        return call, False, claim

    def _release(self, tenant: str, rid: str) -> None:
        """The call was never sent: its reservation goes."""
        if (ledger := self.ledgers.get(tenant)) is not None:
            ledger.release(rid)

    async def _send(self, request: Any, tenant: str) -> None:
        await self._produce(self.producer.send_many([request]), lambda: self._release(tenant, request.id))

    async def _produce(self, sending: Awaitable[None], undo: Callable[[], None]) -> None:
        """Await ``sending``; when the broker refuses it, ``undo`` and answer 503."""
        try:
            await sending
        except (KafkaError, BrokerError, OSError) as exc:
            undo()
            log.warning("gateway: the broker refused a record: %r", exc)
            raise GatewayError(503, "the broker is unreachable; try again", type="service_unavailable") from None

    async def _settle(self, tenant: str, rid: str, outcome: Outcome, keep: bool) -> None:
        """Count the call's cost against its tenant's budget, once; on the ledger topic with its Result
        when ``keep`` (it carried an Idempotency-Key), so a retry reaching any server process finds it."""
        cost = outcome.total_cost if isinstance(outcome, Result) else 0.0
        now = self.clock()
        ledger = self.ledgers.get(tenant)
        newly = ledger.settle(rid, cost, now) if ledger is not None else False
        if not (newly or keep):
            return
        result = outcome if keep and isinstance(outcome, Result) else None
        period = ledger.period_of(now) if ledger is not None else 0
        entry = LedgerEntry(tenant, rid, period, cost, settled=True, result=result, at=now, origin=self.origin)
        try:
            await self.ledger.append(entry)
        except (KafkaError, BrokerError, OSError) as exc:  # the answer is there: give it; its reservation stays
            log.warning("gateway: could not write a settlement to the ledger: %r", exc)


async def _events(chunks: Any) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield f"data: {json.dumps(chunk)}\n\n".encode()
    yield b"data: [DONE]\n\n"


def build_app(
    config: Config,
    bootstrap: str,
    pipeline: Pipeline | None = None,
    on_ready: Callable[[], None] | None = None,
    on_stop: Callable[[], None] | None = None,
) -> Starlette:
    """The ASGI app for ``config``'s pipeline behind the broker at ``bootstrap``; with ``pipeline``, the
    app deploys it when it starts and stops it when it stops (``tierflow serve`` on the embedded broker).
    ``on_ready`` runs once calls can be answered, ``on_stop`` first thing when the server stops (before
    the pipeline: ``serve --workers`` ends its other server processes there)."""
    gateway = Gateway(config, bootstrap)
    models_by_tier = {tier.name: str(tier.options.get("model", tier.backend)) for tier in config.tiers}

    def guarded(kind: str) -> Any:
        async def endpoint(http: HttpRequest) -> Response:
            try:
                return await gateway.call(kind, http)
            except GatewayError as error:
                return JSONResponse(error.body(), status_code=error.status, headers=_headers(error))
            except Exception:  # an error object for the client; the details (never the prompt) in the log
                log.exception("gateway: unexpected error in %s", kind)
                failure = GatewayError(500, "internal error", type="server_error")
                return JSONResponse(failure.body(), status_code=500)

        return endpoint

    async def list_models(http: HttpRequest) -> Response:
        return JSONResponse(models(gateway.tiers, models_by_tier))

    async def healthz(http: HttpRequest) -> Response:
        reachable = await gateway.waiter.broker_reachable()
        doc = {"status": "ok" if reachable else "unavailable", "broker": "reachable" if reachable else "unreachable",
               "namespace": config.namespace, "tiers": list(gateway.tiers), "pid": os.getpid()}  # fmt: skip
        return JSONResponse(doc, status_code=200 if reachable else 503)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if pipeline is not None:
            await pipeline.start()
        await gateway.start()
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            if on_stop is not None:
                on_stop()
            await gateway.stop()
            if pipeline is not None:
                await pipeline.stop()

    routes = [
        Route("/v1/chat/completions", guarded("chat"), methods=["POST"]),
        Route("/v1/completions", guarded("completion"), methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gateway = gateway
    return app


def _headers(error: GatewayError) -> dict[str, str]:
    if error.retry_after_s is not None:
        return {"Retry-After": str(max(1, math.ceil(error.retry_after_s)))}
    return {"Retry-After": "1"} if error.status == 503 else {}
