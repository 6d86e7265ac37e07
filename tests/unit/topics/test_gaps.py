"""A fetch that skips records is read again; a hole that stays is accepted after the confirm time."""

from __future__ import annotations

from aiokafka import ConsumerRecord, TopicPartition

from topics.gaps import GapGuard

TP = TopicPartition("ns.answers", 1)
OTHER = TopicPartition("ns.answers", 0)


def records(tp: TopicPartition, *offsets: int) -> list[ConsumerRecord[bytes, bytes]]:
    return [ConsumerRecord(tp.topic, tp.partition, o, 0, 0, b"k", b"v", None, 1, 1, []) for o in offsets]


class Consumer:
    """Records the seeks a guard asks for (the real consumer's ``seek`` is all it uses)."""

    def __init__(self) -> None:
        self.seeks: list[tuple[TopicPartition, int]] = []

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def offsets(batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]], tp: TopicPartition) -> list[int]:
    return [r.offset for r in batches.get(tp, [])]


def test_records_past_a_hole_wait_until_a_refetch_fills_it() -> None:
    guard, consumer = GapGuard(clock=Clock()), Consumer()
    assert offsets(guard.admit(consumer, {TP: records(TP, 10, 11)}), TP) == [10, 11]
    admitted = guard.admit(consumer, {TP: records(TP, 12, 14, 15), OTHER: records(OTHER, 3)})
    assert offsets(admitted, TP) == [12] and offsets(admitted, OTHER) == [3]
    assert consumer.seeks == [(TP, 13)] and guard.refetches == 1
    assert offsets(guard.admit(consumer, {TP: records(TP, 13, 14, 15)}), TP) == [13, 14, 15]
    assert guard.accepted == 0


def test_a_hole_at_the_start_of_a_fetch_admits_nothing_of_that_partition() -> None:
    guard, consumer = GapGuard(clock=Clock()), Consumer()
    guard.admit(consumer, {TP: records(TP, 0)})
    assert guard.admit(consumer, {TP: records(TP, 5, 6)}) == {}
    assert consumer.seeks == [(TP, 1)]


def test_a_hole_that_persists_is_accepted_as_real() -> None:
    clock = Clock()
    guard, consumer = GapGuard(confirm_s=1.0, clock=clock), Consumer()
    guard.admit(consumer, {TP: records(TP, 0)})
    assert guard.admit(consumer, {TP: records(TP, 3)}) == {}
    clock.now = 0.5
    assert guard.admit(consumer, {TP: records(TP, 3)}) == {}
    clock.now = 1.2
    assert offsets(guard.admit(consumer, {TP: records(TP, 3, 4)}), TP) == [3, 4]
    assert guard.accepted == 1 and guard.refetches == 2


def test_moving_back_is_no_hole_and_forget_drops_expectations() -> None:
    guard, consumer = GapGuard(clock=Clock()), Consumer()
    guard.admit(consumer, {TP: records(TP, 7, 8)})
    assert offsets(guard.admit(consumer, {TP: records(TP, 0, 1)}), TP) == [0, 1]  # a rewind
    guard.forget([TP])
    assert offsets(guard.admit(consumer, {TP: records(TP, 50)}), TP) == [50]  # positions set from a commit
    assert consumer.seeks == [] and guard.refetches == 0
