"""What ``tierflow budget`` does on the wire: sign and send a command and wait for its reply.

(``budget show`` reads the control topic with ``tierflow status``'s reader, ``infra/status/``.)

A reply counts only when the controller signed it (Ed25519, a key in ``[control] public_keys``)
and it names the command sent (offset, key id, sequence number): anyone who can produce to the
topic could otherwise answer "accepted" for a controller that never saw the command.

Sequence numbers are nanoseconds since the epoch, so an operator's commands grow
without any state on the operator's machine; two operators use two key ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from infra.config import Config
from topics.control import (
    CommandAction,
    ControlCommand,
    ControlRecord,
    ControlReply,
    Targets,
    TrustedKeys,
    decode_control,
    verify_record,
)
from topics.errors import BrokerError, ConfigError, DecodeError
from topics.reader import TopicReader

DEFAULT_VALIDITY_S = 300.0


def trusted_keys(config: Config) -> TrustedKeys:
    """The controller public keys ``config`` lists, for its namespace."""
    return TrustedKeys.from_hex(config.namespace, config.control.public_keys)


def signing_key(config: Config, key_id: str | None, environ: Mapping[str, str] = os.environ) -> tuple[str, bytes]:
    """The key id to sign with (default: the config's first) and its secret from the environment."""
    keys = dict(config.control.keys)
    kid = key_id or next(iter(keys))
    if kid not in keys:
        raise ConfigError(f"unknown key id {kid!r}; the config knows: {', '.join(keys)}")
    secret = environ.get(keys[kid], "")
    if not secret:
        raise ConfigError(f"no key: set the environment variable {keys[kid]} (key id {kid!r})")
    return kid, secret.encode()


def new_command(
    action: CommandAction,
    key_id: str,
    key: bytes,
    *,
    now: float,
    validity_s: float = DEFAULT_VALIDITY_S,
    issuer: str = "",
    **fields: Any,
) -> ControlCommand:
    return ControlCommand(
        action=action,
        key_id=key_id,
        seq=time.time_ns(),
        issued_at=now,
        expires_at=now + validity_s,
        issuer=issuer,
        **fields,
    ).signed(key)


async def send_command(
    kafka: dict[str, Any], topic: str, command: ControlCommand, timeout_s: float, *, trusted: TrustedKeys
) -> ControlReply:
    """Produce ``command`` and wait for the controller's signed reply to it (``trusted``: :func:`trusted_keys`)."""
    return await send_raw(kafka, topic, command.to_wire(), timeout_s, (command.key_id, command.seq), trusted=trusted)


async def send_raw(
    kafka: dict[str, Any],
    topic: str,
    value: bytes,
    timeout_s: float,
    match: tuple[str, int] | None = None,
    *,
    trusted: TrustedKeys,
) -> ControlReply:
    """Produce any bytes to the control topic and wait for the signed reply to that offset (tests send bad
    ones); ``match``: the (key id, sequence number) the reply must name as well."""
    reader = TopicReader(kafka, [topic], partitions={topic: 1})
    producer = AIOKafkaProducer(**kafka, acks="all")
    ignored: list[str] = []
    try:
        await reader.start()
        await producer.start()
        meta = await producer.send_and_wait(topic, value, key=b"operator", partition=0)
        reader.seek(TopicPartition(topic, 0), meta.offset)
        return await asyncio.wait_for(_reply_to(reader, meta.offset, match, trusted, ignored), timeout=timeout_s)
    except TimeoutError as exc:
        if ignored:
            raise BrokerError(
                f"no signed reply from the budget controller within {timeout_s:g}s; ignored {len(ignored)} "
                f"({', '.join(sorted(set(ignored)))}): is its public key in [control] public_keys?"
            ) from exc
        raise BrokerError(f"no reply from the budget controller within {timeout_s:g}s (is the pipeline up?)") from exc
    except KafkaError as exc:
        raise BrokerError(f"cannot reach the control topic {topic}: {exc}") from exc
    finally:
        with contextlib.suppress(KafkaError):
            await producer.stop()
        await reader.stop()


def reply_verdict(
    message: ControlRecord, offset: int, match: tuple[str, int] | None, trusted: TrustedKeys
) -> str | None:
    """``None`` when ``message`` is the controller's signed reply to the command at ``offset`` (naming
    ``match`` too, when given); ``not_ours`` for any other record; else why the reply is not believed
    (``unsigned``, ``unknown_key``, ``bad_signature``). Pure."""
    if not isinstance(message, ControlReply) or message.offset != offset:
        return "not_ours"
    if match is not None and (message.key_id, message.seq) != match:
        return "not_ours"
    return verify_record(message, trusted)


async def _reply_to(
    reader: TopicReader, offset: int, match: tuple[str, int] | None, trusted: TrustedKeys, ignored: list[str]
) -> ControlReply:
    """The first believable reply to ``offset``; replies that are not believed go into ``ignored``."""
    while True:
        for record in await reader.poll():
            try:
                message = decode_control(record.value or b"")
            except DecodeError:
                continue
            verdict = reply_verdict(message, offset, match, trusted)
            if verdict is None:
                assert isinstance(message, ControlReply)
                return message
            if verdict != "not_ours":
                ignored.append(verdict)


def targets_from_args(
    cost_per_request: float | None,
    cost_per_second: float | None,
    latency_ms: float | None,
    latency_quantile: float,
    quality_floor: float | None,
) -> Targets:
    """Targets as the operator typed them; the schema's bounds are checked here too, for a one-line error."""
    import msgspec

    targets = Targets(cost_per_request, cost_per_second, latency_ms, latency_quantile, quality_floor)
    try:
        return msgspec.msgpack.decode(msgspec.msgpack.encode(targets), type=Targets)
    except msgspec.ValidationError as exc:
        message = str(exc)
        for key, flag in _FLAGS.items():
            message = message.replace(f"`$.{key}`", flag)
        raise ConfigError(f"invalid target: {message}") from exc


_FLAGS = {
    "cr": "--cost-per-request",
    "cs": "--cost-per-second",
    "lm": "--p95-ms",
    "lq": "--quantile",
    "qf": "--quality-floor",
}
