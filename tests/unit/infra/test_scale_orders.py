"""The supervisor scales only on a scale command the controller accepted in a reply it signed."""

from __future__ import annotations

from infra.supervisor import ScaleOrders
from topics.control import CommandAction, ControlCommand, ControllerKey, ControlReply, TrustedKeys

CONTROLLER = ControllerKey.generate("ctl")
NAMESPACE = "ns"
TRUSTED = TrustedKeys(NAMESPACE, {CONTROLLER.key_id: CONTROLLER.public_key})


def scale(pool: str, replicas: int, seq: int = 1) -> ControlCommand:
    action = CommandAction.SCALE_POOL
    command = ControlCommand(action, key_id="ops", seq=seq, issued_at=1.0, expires_at=9.0, pool=pool, replicas=replicas)
    return command.signed(b"secret")


def reply(offset: int, accepted: bool = True, seq: int = 1, signer: ControllerKey | None = CONTROLLER) -> ControlReply:
    answer = ControlReply(offset=offset, accepted=accepted, reason="r", key_id="ops", seq=seq)
    return signer.sign(answer, NAMESPACE) if signer else answer


def test_an_accepted_signed_reply_orders_the_scale() -> None:
    orders = ScaleOrders(TRUSTED)
    assert orders.feed(10, scale("router", 3)) is None
    assert orders.feed(11, reply(10)) == ("router", 3)
    assert orders.feed(12, reply(10)) is None  # answered once: a repeated reply orders nothing more


def test_refused_forged_or_mismatched_replies_order_nothing() -> None:
    orders = ScaleOrders(TRUSTED)
    orders.feed(1, scale("router", 3))
    assert orders.feed(2, reply(1, signer=None)) is None  # unsigned: anyone could have written it
    assert orders.feed(3, reply(1, signer=ControllerKey.generate("impostor"))) is None
    orders.feed(4, scale("sink", 2, seq=7))
    assert orders.feed(5, reply(4, seq=8)) is None  # names another command
    orders.feed(6, scale("verifier", 2, seq=9))
    assert orders.feed(7, reply(6, accepted=False, seq=9)) is None
    assert orders.feed(8, reply(1)) == ("router", 3)  # the signed reply still counts
