"""Routers and verifiers apply only the controller's signed policy updates (no broker: records fed by hand)."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from aiokafka import ConsumerRecord

from policies import ConfidenceThreshold
from topics import Answer, Request, Task
from topics.control import ControllerKey, PolicyUpdate, TrustedKeys
from workers.context import StageContext
from workers.policy_feed import PolicyFeed, trusted_keys, update_verdict
from workers.verifier import Verifier

from .helpers import config, inbound

NAMESPACE = "unit"
SIGNER = ControllerKey.generate("ctl")
TRUST = TrustedKeys(NAMESPACE, {"ctl": SIGNER.public_key})


def update(version: int, **kw: Any) -> PolicyUpdate:
    fields: dict[str, Any] = {"thresholds": {"small": 0.8}, "allowed_tiers": ("small", "large")}
    return PolicyUpdate(version=version, reason=f"v{version}", issued_at=0.0, **(fields | kw))


def records(*values: bytes) -> list[ConsumerRecord[bytes, bytes]]:
    return [ConsumerRecord("unit.control", 0, i, 0, 0, b"k", v, None, 1, len(v), []) for i, v in enumerate(values)]


def signed(record: PolicyUpdate, key: ControllerKey = SIGNER, namespace: str = NAMESPACE) -> bytes:
    return key.sign(record, namespace).to_wire()


def test_the_verdict_on_an_update() -> None:
    v2 = SIGNER.sign(update(2), NAMESPACE)
    assert update_verdict(v2, None, TRUST) is None
    assert update_verdict(v2, SIGNER.sign(update(1), NAMESPACE), TRUST) is None
    assert update_verdict(v2, v2, TRUST) == "stale"  # the same update written again
    assert update_verdict(v2, SIGNER.sign(update(5), NAMESPACE), TRUST) == "stale"
    assert update_verdict(update(1000), v2, TRUST) == "unsigned"


def test_forged_updates_are_ignored_counted_and_logged_once_per_reason(caplog: pytest.LogCaptureFixture) -> None:
    """The issue's attack: an outsider's PolicyUpdate v1000 (every threshold 0, only the top tier) must
    not take over; nor must one signed with another key, for another namespace, or an old one again."""
    feed = PolicyFeed({}, "unit.control", TRUST)
    takeover = update(1000, thresholds={"small": 0.0}, allowed_tiers=("large",))
    with caplog.at_level(logging.WARNING, logger="tierflow.policy_feed"):
        feed._take(
            records(
                signed(update(1)),
                takeover.to_wire(),  # a plain producer: no signature
                takeover.to_wire(),
                signed(takeover, ControllerKey.generate("ctl")),  # the right key id, the wrong key
                signed(takeover, ControllerKey.generate("mallory")),
                signed(takeover, SIGNER, "another-namespace"),  # genuine, but for another deployment
                signed(update(2)),
                signed(update(1)),  # a genuine old update written again
                b"\x00 not msgpack",
            )
        )
    assert feed.current is not None and feed.current.version == 2 and feed.current.signer == "ctl"
    assert feed.ignored == {"unsigned": 2, "bad_signature": 2, "unknown_key": 1, "stale": 1}
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 4 and sum("(unsigned)" in line for line in logged) == 1
    assert "ignored policy update v1000 at offset 1 (unsigned)" in logged[0]


def test_a_feed_without_keys_trusts_nothing() -> None:
    feed = PolicyFeed({}, "unit.control")
    feed._take(records(signed(update(1))))
    assert feed.current is None and feed.ignored == {"unknown_key": 1}


def test_two_keys_are_accepted_during_a_rotation() -> None:
    new = ControllerKey.generate("ctl-new")
    feed = PolicyFeed({}, "unit.control", TrustedKeys(NAMESPACE, {"ctl": SIGNER.public_key, "ctl-new": new.public_key}))
    feed._take(records(signed(update(1)), signed(update(2), new)))
    assert feed.current is not None and feed.current.version == 2 and feed.ignored == {}


async def test_the_stage_gives_its_feed_the_deployments_keys_and_decides_by_the_real_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deployment = config(control={"public_keys": {"ctl": SIGNER.public_key.hex()}})
    assert trusted_keys(deployment) == TRUST
    feed = PolicyFeed({}, "unit.control")

    async def no_broker() -> None:
        return None

    monkeypatch.setattr(feed, "start", no_broker)
    verifier = Verifier(StageContext(deployment), ConfidenceThreshold(thresholds={"small": 0.8}), feed)
    await verifier.start()
    assert feed.trusted == TRUST
    accept_all = update(1000, thresholds={"small": 0.0})
    feed._take(records(signed(update(3)), accept_all.to_wire()))
    request = Request("r1", "q", created_at=time.time())
    answer = Answer(Task(request, "small"), "m-small", "out", 0.5)
    (out,) = await verifier.process([inbound(answer)])
    assert out.topic == "unit.escalate.large"  # 0.5 < 0.8: escalated, as v3 says, not accepted at v1000's 0.0
    assert Task.from_wire(out.value).policy_version == 3
