"""Topic names, built in one place from a namespace and the configured tiers."""

from __future__ import annotations

import re
from dataclasses import dataclass

from topics.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def check_name(kind: str, name: str) -> str:
    """Validate a namespace or tier name (letters, digits, ``_`` and ``-``; Kafka-safe)."""
    if not _NAME.match(name):
        raise ConfigError(f"{kind} {name!r} must be 1-64 letters, digits, '_' or '-'")
    return name


@dataclass(frozen=True, slots=True)
class TopicLayout:
    """Every topic of one deployment: ``<ns>.requests``, ``<ns>.tier.<T>``, …"""

    namespace: str
    tiers: tuple[str, ...]
    """Tier names, cheapest first (the order escalation follows by default)."""

    def __post_init__(self) -> None:
        check_name("namespace", self.namespace)
        for tier in self.tiers:
            check_name("tier", tier)
        if len(set(self.tiers)) != len(self.tiers):
            raise ConfigError(f"tier names must be unique: {list(self.tiers)}")

    def _require(self, tier: str) -> str:
        if tier not in self.tiers:
            raise ConfigError(f"unknown tier {tier!r}; known: {', '.join(self.tiers)}")
        return tier

    @property
    def requests(self) -> str:
        return f"{self.namespace}.requests"

    def tier(self, name: str) -> str:
        return f"{self.namespace}.tier.{self._require(name)}"

    def escalate(self, name: str) -> str:
        return f"{self.escalate_prefix}{self._require(name)}"

    @property
    def escalate_prefix(self) -> str:
        """What every escalation topic's name starts with (the tier name follows)."""
        return f"{self.namespace}.escalate."

    @property
    def answers(self) -> str:
        return f"{self.namespace}.answers"

    @property
    def results(self) -> str:
        return f"{self.namespace}.results"

    @property
    def control(self) -> str:
        return f"{self.namespace}.control"

    @property
    def dlq(self) -> str:
        return f"{self.namespace}.dlq"

    @property
    def ledger(self) -> str:
        """The gateway's reservations and settlements (:class:`~topics.messages.LedgerEntry`)."""
        return f"{self.namespace}.ledger"

    @property
    def feedback(self) -> str:
        """Labels on answered requests (:class:`~topics.feedback.Feedback`), keyed by request id."""
        return f"{self.namespace}.feedback"

    @property
    def explored(self) -> str:
        """Answers of exploration copies (``policies/exploration.py``): never verified, read to learn from."""
        return f"{self.namespace}.explored"

    def all_topics(self) -> list[str]:
        """Every topic name of the deployment, for creation and deletion."""
        names = [self.requests, self.answers, self.results, self.control, self.dlq, self.ledger, self.feedback]
        names.append(self.explored)
        for tier in self.tiers:
            names += [self.tier(tier), self.escalate(tier)]
        return names
