"""What one stage loop reports: its batch metrics, its consumer lag and its escalations' spans.

Everything is derived from what the loop already has — the records it consumed, and the
topic and decoded message of each record it produced — so policies and handlers stay free
of observability code and nothing is decoded a second time. Outputs are told apart by the
topic they went to, with the names taken from the deployment's :class:`TopicLayout`.

This module knows the loop's outputs only through :class:`Produced`, which
``workers.stage.Outbound`` satisfies: the loop imports telemetry, never the other way round.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import Field, dataclass, field, replace
from typing import Any, ClassVar, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError
from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Meter, Observation

from topics.messages import DeadLetter, Result, Status, Task
from topics.names import TopicLayout
from workers.telemetry.propagation import Headers, child_span, stage_tier, tracing_enabled, with_context
from workers.telemetry.providers import PREFIX, flush_telemetry

log = logging.getLogger("tierflow.telemetry")

ESCALATE_SPAN = f"{PREFIX}escalate"
LAG_REFRESH_S = 1.0
"""Consumer lag is re-read at most this often per stage (it needs one ``position`` call per partition)."""


class Produced(Protocol):
    """What telemetry reads of a record a stage produced (``workers.stage.Outbound`` is one)."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]
    """A dataclass: an escalation's record is copied with new headers by ``dataclasses.replace``."""

    @property
    def topic(self) -> str: ...

    @property
    def key(self) -> str: ...

    @property
    def headers(self) -> Headers: ...

    @property
    def message(self) -> object:
        """The decoded form of the record's value; ``None`` when the producer did not keep it."""


P = TypeVar("P", bound=Produced)


@dataclass(frozen=True)
class StageInstruments:
    """The stage loop's counters and histograms. Attributes: ``stage``, ``tier``, ``from_tier``,
    ``status``, ``reason`` — ids, names and codes, never text."""

    requests: Counter
    records: Counter
    results: Counter
    answers: Counter
    accepted: Counter
    escalations: Counter
    cost: Counter
    dead_letters: Counter
    e2e_latency: Histogram
    stage_duration: Histogram

    @classmethod
    def create(cls, meter: Meter) -> StageInstruments:
        """Create every stage metric on ``meter``, the ``tierflow.consumer.lag`` gauge included."""
        meter.create_observable_gauge(
            f"{PREFIX}consumer.lag", [_observe_lag], "{record}", "Highwater minus position per assigned partition"
        )
        return cls(
            requests=meter.create_counter(f"{PREFIX}requests", "{request}", "Request records the router consumed"),
            records=meter.create_counter(f"{PREFIX}stage.records", "{record}", "Records consumed per stage"),
            results=meter.create_counter(f"{PREFIX}results", "{result}", "Results produced, by status"),
            answers=meter.create_counter(f"{PREFIX}answers", "{answer}", "Answers produced per tier"),
            accepted=meter.create_counter(
                f"{PREFIX}accepted", "{answer}", "Answers accepted per tier (acceptance = accepted / answers)"
            ),
            escalations=meter.create_counter(f"{PREFIX}escalations", "{task}", "Escalations, by from_tier and tier"),
            cost=meter.create_counter(f"{PREFIX}cost", "1", "Total cost of the results produced, by status"),
            dead_letters=meter.create_counter(f"{PREFIX}dlq", "{record}", "Dead letters, by stage and reason"),
            e2e_latency=meter.create_histogram(
                f"{PREFIX}latency.e2e", "ms", "Request creation to final decision, by status"
            ),
            stage_duration=meter.create_histogram(
                f"{PREFIX}stage.duration", "ms", "Time a stage spends on one batch: decode, process, produce"
            ),
        )


@dataclass
class _Installed:
    instruments: StageInstruments | None = None
    """Set by ``setup.install_providers`` when a meter provider is installed; ``None``: metrics are off."""
    lag_sources: dict[int, StageTelemetry] = field(default_factory=dict)
    """The open stages of this process, read by the lag gauge on the exporter thread."""


_installed = _Installed()


def install_stage_instruments(meter: Meter | None) -> None:
    """Report the stage metrics to ``meter`` from now on (``None``: stop reporting them)."""
    _installed.instruments = StageInstruments.create(meter) if meter is not None else None


def metrics_enabled() -> bool:
    """True once a meter provider is installed (only then are produced records counted)."""
    return _installed.instruments is not None


def _observe_lag(options: CallbackOptions) -> Iterable[Observation]:
    for source in list(_installed.lag_sources.values()):
        for (topic, partition), lag in source.lag.items():
            yield Observation(lag, {"stage": source.stage, "topic": topic, "partition": partition})


class StageTelemetry:
    """What one stage loop reports: its spans' escalation children, its batch metrics and its lag."""

    def __init__(self, stage: str, layout: TopicLayout) -> None:
        self.stage = stage
        self.kind = stage.split(".", 1)[0]
        self.tier = stage_tier(stage)
        self.layout = layout
        self.lag: dict[tuple[str, int], int] = {}
        """Replaced whole by the loop, read by the exporter thread."""
        self._lag_at = 0.0

    def open(self) -> None:
        """Start reporting this loop's consumer lag."""
        _installed.lag_sources[id(self)] = self

    def export_last(self) -> None:
        """Export everything now, this stage's last lag reading included: a stage whose whole run is
        shorter than the export interval has no other export of its lag. Call before :meth:`close`."""
        flush_telemetry()

    def close(self) -> None:
        """Stop reporting lag and export what is buffered (the replica may be killed right after)."""
        _installed.lag_sources.pop(id(self), None)
        self.lag = {}
        flush_telemetry()

    def trace_escalations(self, out: list[P]) -> list[P]:
        """Open a ``tierflow.escalate`` span (child of the open ``verify`` span) for every record produced
        to an escalate topic, and carry its context on instead: the next ``infer`` hangs under it."""
        if not tracing_enabled():
            return out
        prefix = self.layout.escalate_prefix
        return [self._escalate(item) if item.topic.startswith(prefix) else item for item in out]

    def _escalate(self, item: P) -> P:
        attributes = {
            "tierflow.stage": self.stage,
            "tierflow.tier": item.topic.removeprefix(self.layout.escalate_prefix),
            "tierflow.request_id": item.key,
            "messaging.destination.name": item.topic,
        }
        context = child_span(ESCALATE_SPAN, item.headers, attributes)
        return replace(item, headers=with_context(item.headers, context)) if context else item

    def lag_due(self) -> bool:
        """Whether :meth:`refresh_lag` has anything to do now (cheap; checked every poll)."""
        return _installed.instruments is not None and time.monotonic() - self._lag_at >= LAG_REFRESH_S

    async def refresh_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Highwater minus position for every assigned partition whose highwater a fetch has reported.

        Until a fetch has reported one, every poll looks again (no ``position`` call is made then),
        so a short-lived stage still reports its lag instead of waiting out ``LAG_REFRESH_S`` first.
        """
        lag: dict[tuple[str, int], int] = {}
        for tp in list(consumer.assignment()):
            try:
                highwater = consumer.highwater(tp)
                if highwater is None:
                    continue
                position = await asyncio.wait_for(consumer.position(tp), timeout=0.1)
            except (TimeoutError, KafkaError, AssertionError):  # moved away by a rebalance meanwhile
                continue
            lag[(tp.topic, tp.partition)] = max(0, highwater - position)
        self.lag = lag
        if lag:
            self._lag_at = time.monotonic()

    def batch_done(
        self, records: Sequence[ConsumerRecord[bytes, bytes]], out: Sequence[Produced], seconds: float
    ) -> None:
        """Count a batch whose outputs the broker acknowledged (a redone batch counts again:
        at-least-once, like the topics)."""
        inst = _installed.instruments
        if inst is None:
            return
        stage = {"stage": self.stage}
        inst.records.add(len(records), stage)
        inst.stage_duration.record(seconds * 1000, stage)
        if self.kind == "router":
            inst.requests.add(len(records))
        layout = self.layout
        for item in out:
            topic, message = item.topic, item.message
            if topic == layout.answers:
                inst.answers.add(1, {"tier": self.tier})
            elif topic == layout.results and isinstance(message, Result):
                self._result(inst, message)
            elif topic.startswith(layout.escalate_prefix) and isinstance(message, Task):
                from_tier = message.history[-1].tier if message.history else ""
                inst.escalations.add(1, {"tier": message.tier, "from_tier": from_tier})
            elif topic == layout.dlq and isinstance(message, DeadLetter):
                inst.dead_letters.add(1, {"stage": self.stage, "reason": message.reason})
            elif topic in (layout.results, layout.dlq) or topic.startswith(layout.escalate_prefix):
                # A handler that did not keep the message it encoded: a bug to fix there, not a crash here.
                log.debug("telemetry: a record produced to %s came without its message; not counted", topic)

    @staticmethod
    def _result(inst: StageInstruments, result: Result) -> None:
        status = {"status": result.status.value}
        inst.results.add(1, status)
        inst.cost.add(result.total_cost, status)
        inst.e2e_latency.record(result.latency_ms, status)
        if result.status is Status.OK and result.tier:
            inst.accepted.add(1, {"tier": result.tier})
