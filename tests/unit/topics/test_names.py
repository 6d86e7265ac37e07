from __future__ import annotations

import pytest

from topics import ConfigError, TopicLayout


def test_layout_builds_every_topic_from_the_namespace() -> None:
    layout = TopicLayout("prod", ("small", "large"))
    assert layout.requests == "prod.requests"
    assert layout.tier("small") == "prod.tier.small"
    assert layout.escalate("large") == "prod.escalate.large"
    assert (layout.answers, layout.results, layout.control, layout.dlq) == (
        "prod.answers",
        "prod.results",
        "prod.control",
        "prod.dlq",
    )
    assert len(layout.all_topics()) == 8 + 2 * 2


def test_unknown_tier_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="known: small, large"):
        TopicLayout("prod", ("small", "large")).tier("huge")


@pytest.mark.parametrize("bad", ["", "has space", "dots.not.allowed", "x" * 65])
def test_bad_names_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError):
        TopicLayout(bad, ("a",))
    with pytest.raises(ConfigError):
        TopicLayout("ns", (bad,))


def test_duplicate_tiers_are_refused() -> None:
    with pytest.raises(ConfigError, match="unique"):
        TopicLayout("ns", ("a", "a"))
