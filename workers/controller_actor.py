"""The budget controller as one named Ray actor: Kafka I/O around :class:`ControllerCore`.

It reads the control topic from its beginning (recovery: the newest report and
updates restore its state, and commands that arrived after the last one it
answered are answered now), then follows two streams without a consumer group:
control (commands) and results (cost, latency, confidence; per-tier load and
latency from their paths), the latter together with the feedback topic's labels, in
one reader (a label that does not decode is dead-lettered with its reason; valid
ones are counted by kind, for the calibration watch that joins them to results).
Every ``period_s`` it runs the law and publishes a new PolicyUpdate when thresholds
moved; every ``report_every_s`` a ControllerReport (every ``quiet_report_every_s``
while its state holds still).

Everything it publishes is signed with its Ed25519 key (:class:`~topics.control.ControllerKey`,
handed over by the deployer like the HMAC keys; Ray keeps constructor arguments for restarts,
so a restarted controller signs with the same key). Recovery believes only records signed by
a key it trusts: the deployment's ``[control] public_keys`` and its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Literal

import ray
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from policies.budget import LawParams
from policies.controller import ControllerCore, report_due
from topics.control import (
    ControlCommand,
    ControllerKey,
    ControllerRecord,
    ControllerReport,
    ControlRecord,
    TrustedKeys,
    decode_control,
    record_kind,
)
from topics.errors import ConfigError, DecodeError
from topics.feedback import Feedback
from topics.messages import Answer, DeadLetter, Result
from topics.reader import Record, TopicReader
from workers.actors import post_hoc_policy
from workers.loop_thread import LoopThread
from workers.policy_feed import trusted_keys
from workers.spec import ControlConfig, DeploymentSpec
from workers.telemetry import record_controller_state, setup_telemetry

log = logging.getLogger("tierflow.controller")
CONTROLLER_FETCH_WAIT_MS = 100
"""The controller works on 1 s periods and 3 s windows: polling every 10 ms would only burn a core's share."""


def controller_name(namespace: str) -> str:
    """The Ray actor name of a deployment's controller (one per namespace)."""
    return f"{namespace}.controller"


def resolve_keys(control: ControlConfig, environ: Mapping[str, str] = os.environ) -> dict[str, bytes]:
    """Key id -> secret, from the environment variables the config names; missing ones are left out."""
    return {kid: environ[env].encode() for kid, env in control.keys.items() if environ.get(env)}


def controller_trust(config: DeploymentSpec, signer: ControllerKey) -> TrustedKeys:
    """The keys the controller believes at recovery: the configured public keys and its own."""
    trusted = trusted_keys(config)
    known = trusted.keys.get(signer.key_id)
    if known is not None and known != signer.public_key:
        raise ConfigError(f"control.public_keys.{signer.key_id} is not the public key of the controller's private key")
    return TrustedKeys(config.namespace, {**trusted.keys, signer.key_id: signer.public_key})


def new_core(config: DeploymentSpec, keys: Mapping[str, bytes], trusted: TrustedKeys) -> ControllerCore:
    tiers = config.layout.tiers
    return ControllerCore(
        tiers=tiers,
        base=post_hoc_policy(config).steerable_thresholds(tiers),
        keys=keys,
        pools=config.replica_bounds(),
        trusted=trusted,
        window_s=config.control.window_s,
        params=LawParams(step=config.control.step),
        exploration=config.exploration,
        drift_config=config.drift,
    )


class ControllerLoop:
    """Runs one controller against Kafka until ``request_stop()``."""

    def __init__(
        self,
        config: DeploymentSpec,
        keys: Mapping[str, bytes],
        signer: ControllerKey,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.kafka = config.control_connection().options()
        self.signer = signer
        self.core = new_core(config, keys, controller_trust(config, signer))
        self.clock = clock
        self._stopping = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._readers: list[TopicReader] = []
        self.labels: Counter[str] = Counter()
        """Feedback labels read since the controller started, by kind (``Feedback.verdict``), and
        ``dead_lettered`` for those that did not decode."""

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        layout = self.config.layout
        self._producer = AIOKafkaProducer(**self.kafka, acks="all", linger_ms=1)
        await self._producer.start()
        try:
            control = await self._reader([layout.control], "beginning")
            results = await self._reader([layout.results, layout.feedback, layout.explored], "end")
            await self._recover(control)
            tasks = [
                asyncio.create_task(control.follow(self._on_control)),
                asyncio.create_task(results.follow(self._on_stream)),
                asyncio.create_task(self._tick()),
            ]
            await self._stopping.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for reader in self._readers:
                await reader.stop()
            with contextlib.suppress(KafkaError):
                await self._producer.stop()

    async def _reader(self, topics: list[str], start_at: Literal["beginning", "end"]) -> TopicReader:
        reader = TopicReader(
            self.kafka,
            topics,
            start_at=start_at,
            partitions=self.config.partitions,
            fetch_max_wait_ms=max(self.config.fetch_max_wait_ms, CONTROLLER_FETCH_WAIT_MS),
        )
        self._readers.append(reader)
        await reader.start()
        return reader

    async def _recover(self, control: TopicReader) -> None:
        """Read the control topic to its end; restore state; answer commands nobody answered yet."""
        seen: list[tuple[int, ControlRecord | DecodeError]] = []
        async for batch in control.read_to_end(timeout_ms=200):
            seen += [(record.offset, _decode(record)) for record in batch]
        pending = self.core.recover(seen)
        for offset, record in pending:
            await self._handle(offset, record)
        log.info(
            "controller recovered: version %d, λ=%.3f, %d pending commands",
            self.core.version,
            self.core.lam,
            len(pending),
        )
        if self.core.ignored:
            ignored = ", ".join(f"{why} {n}" for why, n in sorted(self.core.ignored.items()))
            log.warning("controller recovery ignored control records it cannot trust: %s", ignored)

    async def _on_control(self, record: Record) -> None:
        await self._handle(record.offset, _decode(record))

    async def _handle(self, offset: int, record: ControlRecord | DecodeError) -> None:
        now = self.clock()
        if isinstance(record, DecodeError):
            await self._publish(self.core.refuse(offset, f"invalid: {record.reason}", now))
        elif isinstance(record, ControlCommand):
            reply, update = self.core.handle(offset, record, now)
            log.info("command at %d: %s (%s)", offset, "accepted" if reply.accepted else "refused", reply.reason)
            await self._publish(reply, update)
        else:  # a report, update or reply: ours, or a forgery to count (and to name in the log, once)
            reason = self.core.untrusted(record)
            if reason is not None and self.core.ignored[f"{record_kind(record)}:{reason}"] == 1:
                log.warning("controller: ignored a %s at offset %d (%s)", record_kind(record), offset, reason)

    async def _on_stream(self, record: Record) -> None:
        """A result, a label or an exploration copy's answer (one reader follows the three topics)."""
        layout = self.config.layout
        if record.topic == layout.feedback:
            await self._on_label(record)
            return
        with contextlib.suppress(DecodeError):
            if record.topic == layout.explored:
                self.core.observe_copy(Answer.from_wire(record.value or b""), self.clock())
            else:
                self.core.observe(Result.from_wire(record.value or b""), self.clock())

    async def _on_label(self, record: Record) -> None:
        """Count a valid label; a record that is not one goes to the dead-letter topic with its reason."""
        try:
            label = Feedback.from_wire(record.value or b"", self.config.limits.max_payload_bytes)
        except DecodeError as exc:
            self.labels["dead_lettered"] += 1
            letter = DeadLetter.for_record(
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                stage="controller",
                key=record.key,
                value=record.value,
                error=exc,
                at=self.clock(),
            )
            await self._send(self.config.layout.dlq, letter.to_wire(), record.key)
            return
        self.labels[label.verdict] += 1
        self.core.drift.observe_feedback(label, self.clock())

    async def _tick(self) -> None:
        control = self.config.control
        last: ControllerReport | None = None
        while True:
            now = self.clock()
            update = self.core.step(now)
            record_controller_state(self.core.lam, self.core.mu, self.core.thresholds, self.core.version)
            report = self.core.report(now)
            for alarm in sorted(set(report.drift) - set(last.drift if last else ())):
                log.warning("controller: drift: %s", alarm)
            due = report_due(report, last, control.report_every_s, control.quiet_report_every_s)
            last = report if due else last
            await self._publish(update, report if due else None)
            await asyncio.sleep(control.period_s)

    async def _publish(self, *messages: ControllerRecord | None) -> None:
        """Sign and send each message; retried until the broker takes it."""
        for message in messages:
            if message is None:
                continue
            value = self.signer.sign(message, self.config.namespace).to_wire()
            await self._send(self.config.layout.control, value, b"controller")

    async def _send(self, topic: str, value: bytes, key: bytes | None) -> None:
        """Produce one record; retried until the broker takes it (an update or a dead letter must not be lost)."""
        assert self._producer is not None
        while True:
            try:
                await self._producer.send_and_wait(topic, value, key=key)
                return
            except KafkaError as exc:  # the broker is away
                log.warning("controller: producing to %s failed, retrying: %r", topic, exc)
                await asyncio.sleep(0.5)


def _decode(record: Record) -> ControlRecord | DecodeError:
    try:
        return decode_control(record.value or b"")
    except DecodeError as exc:
        return exc


@ray.remote(max_restarts=-1, max_task_retries=-1, concurrency_groups={"control": 2})  # type: ignore[call-overload]  # stubs lack concurrency_groups
class ControllerActor:
    """The deployment's one budget controller (a named actor); threaded like the stage replicas.

    ``keys`` are the operators' HMAC secrets, ``signer`` the controller's own private key.
    Like a stage replica, it starts its loop in the constructor (so a restarted controller
    resumes whoever created it); ``run`` waits for the loop.
    """

    def __init__(self, config: DeploymentSpec, keys: Mapping[str, bytes], signer: ControllerKey) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        setup_telemetry(config.telemetry, "tierflow-controller")
        self.loop = ControllerLoop(config, keys, signer)
        self.thread: LoopThread[None] = LoopThread(self.loop.run, name="controller")

    def run(self) -> None:
        """Wait until the controller stops (or raise what ended it)."""
        self.thread.join()

    @ray.method(concurrency_group="control")
    def stop(self) -> None:
        self.thread.call_soon(self.loop.request_stop)

    @ray.method(concurrency_group="control")
    def state(self) -> dict[str, Any]:
        """λ, μ, version, thresholds, targets, the last observation, refused commands and ignored records."""
        core = self.loop.core
        return {
            "version": core.version,
            "lam": core.lam,
            "mu": core.mu,
            "thresholds": dict(core.thresholds),
            "paused": sorted(core.paused),
            "pinned": core.pinned,
            "targets": core.targets,
            "observed": core.last_observed,
            "rejected": dict(core.rejected),
            "ignored": dict(core.ignored),
            "labels": dict(self.loop.labels),
            "drift": [alarm.as_dict() for alarm in core.drift.alarms(self.loop.clock())],
            "exploration": {
                "share": core.explore_share,
                "copies": core.spend.total_copies,
                "copies_cost": core.spend.total_cost,
            },
        }
