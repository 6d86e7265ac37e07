"""Routers and verifiers follow the control topic and apply the newest correctly signed PolicyUpdate.

No consumer group: every replica reads every update (a group would hand each
update to one replica only). ``start()`` reads the topic up to its end before the
stage takes its first batch, so a restarted replica never decides with an older
version than its peers; afterwards a background task follows the topic and the
stage picks up ``current`` at its next batch.

Anyone who can produce to the control topic can write a PolicyUpdate, so an update
counts only when the controller's Ed25519 key signed it for this namespace
(:func:`topics.control.verify_record`, against the public keys of the deployment's
``[control] public_keys``) and its version is above the one in force. Everything else
— unsigned, an unknown key id, a bad signature, an old or replayed version — is
ignored, counted in :attr:`PolicyFeed.ignored` by reason and logged once per reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import Any, TypeVar

from topics.control import PolicyUpdate, TrustedKeys, decode_control, verify_record
from topics.errors import DecodeError
from topics.reader import Record, TopicReader
from workers.context import StageContext
from workers.rollout import PolicyTexts
from workers.spec import DeploymentSpec
from workers.stage import Handler

log = logging.getLogger("tierflow.policy_feed")
M = TypeVar("M")
CATCH_UP_TIMEOUT_S = 10.0


def trusted_keys(deployment: DeploymentSpec) -> TrustedKeys:
    """The public keys whose signed updates, replies and reports the deployment's processes accept."""
    return TrustedKeys.from_hex(deployment.namespace, deployment.control.public_keys)


def update_verdict(update: PolicyUpdate, current: PolicyUpdate | None, trusted: TrustedKeys) -> str | None:
    """Why a feed must ignore ``update`` — ``unsigned``, ``unknown_key``, ``bad_signature``, or ``stale``
    (its version is not above the one in force: an old update written again) — or ``None`` to apply it."""
    reason = verify_record(update, trusted)
    if reason is None and current is not None and update.version <= current.version:
        return "stale"
    return reason


class PolicyFeed:
    """The newest correctly signed :class:`PolicyUpdate` on ``topic`` (``None`` until there is one).

    ``trusted`` left ``None`` is filled in by the stage the feed serves (:class:`FollowsPolicy`) from
    its deployment spec; a feed that never gets keys trusts nothing and applies nothing.
    """

    def __init__(self, kafka: dict[str, Any], topic: str, trusted: TrustedKeys | None = None) -> None:
        self.current: PolicyUpdate | None = None
        self.texts = PolicyTexts()
        """The pushed policy texts of every signed update read (later updates name them by digest)."""
        self.trusted = trusted
        self.ignored: Counter[str] = Counter()
        """Updates ignored since the feed started, by reason (see :func:`update_verdict`)."""
        self.topic = topic
        self._reader = TopicReader(kafka, [topic], partitions={topic: 1}, fetch_max_wait_ms=50)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._reader.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._catch_up(), timeout=CATCH_UP_TIMEOUT_S)
        self._task = asyncio.create_task(self._reader.follow(lambda record: self._take([record])))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._reader.stop()

    async def _catch_up(self) -> None:
        async for batch in self._reader.read_to_end():
            self._take(batch)

    def _take(self, records: list[Record]) -> None:
        trusted = self.trusted or TrustedKeys("")
        for record in records:
            try:
                message = decode_control(record.value or b"")
            except DecodeError:
                continue  # the controller answers bad commands; a stage only looks for updates
            if not isinstance(message, PolicyUpdate):
                continue
            reason = update_verdict(message, self.current, trusted)
            if reason in (None, "stale"):  # signed by the controller: its texts count even when old
                self.texts.remember(message)
            if reason is None:
                self.current = message
                continue
            self.ignored[reason] += 1
            if self.ignored[reason] == 1:
                log.warning(
                    "%s: ignored policy update v%d at offset %d (%s); further ones are only counted",
                    self.topic,
                    message.version,
                    record.offset,
                    reason,
                )


class FollowsPolicy(Handler[M]):
    """A stage that applies policy updates (router, verifier): its feed lives as long as the stage."""

    feed: PolicyFeed | None = None
    context: StageContext

    async def start(self) -> None:
        if self.feed is not None:
            if self.feed.trusted is None:
                self.feed.trusted = trusted_keys(self.context.deployment)
            await self.feed.start()

    async def stop(self) -> None:
        if self.feed is not None:
            await self.feed.stop()
