"""Labels on answered requests, on ``<ns>.feedback``: what the stream learns from (issue: learn from live traffic).

A label says how a request's delivered answer turned out, in one of three ways: it was
``correct`` (or not), it earned a ``score`` in [0, 1], or a named tier would have been
the ``preferred_tier``. Exactly one of the three is set; anything else is refused when
the record is decoded, so a label that says nothing, or two things, never reaches a
trace. Labels are keyed by request id and may arrive long after the result (a user's
thumbs-down a day later): nothing on the stream waits for them, and whoever joins them
to answers (a trace built from the topics, the controller's calibration watch) joins by
id whenever they come. A label judges the delivered answer unless it names a ``tier``:
then it judges that tier's answer to the request (an exploration copy's, for one).
"""

from __future__ import annotations

from topics.wire import Confidence, Id, Message, Name, NonNegative, tag

LABEL_FIELDS = ("correct", "score", "preferred_tier")
"""The ways a label can judge an answer; a label carries exactly one."""


class Feedback(
    Message,
    frozen=True,
    tag=tag("feedback"),
    rename={
        "request_id": "id",
        "correct": "ok",
        "score": "sc",
        "preferred_tier": "pt",
        "source": "src",
        "at": "at",
        "tier": "t",
    },
):
    """One label on one request's delivered answer."""

    request_id: Id
    source: Name
    """Who labelled it (a reviewer, a test harness, a user-facing thumbs button), for weighing and auditing."""
    at: NonNegative
    """Epoch seconds when the label was given (not when it was written: labels may be replayed late)."""
    correct: bool | None = None
    score: Confidence | None = None
    """A graded judgement in [0, 1] (finite: NaN and infinities are refused with the bounds)."""
    preferred_tier: Id | None = None
    """The tier that should have answered (a tier of the deployment; the CLI checks it against the config)."""
    tier: Name = ""
    """Whose answer ``correct`` or ``score`` judges: "" the delivered one, else that tier's."""

    def __post_init__(self) -> None:
        given = [name for name in LABEL_FIELDS if getattr(self, name) is not None]
        if len(given) != 1:
            said = ", ".join(given) if given else "none"
            raise ValueError(f"a label needs exactly one of {', '.join(LABEL_FIELDS)} (got {said})")
        if self.tier and self.preferred_tier is not None:
            raise ValueError("a preferred_tier label judges the request, not one tier's answer: it takes no tier")

    @property
    def verdict(self) -> str:
        """Which kind of label this is: ``correct``, ``score`` or ``preferred_tier``."""
        return next(name for name in LABEL_FIELDS if getattr(self, name) is not None)
