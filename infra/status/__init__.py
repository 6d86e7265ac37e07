"""``tierflow status``: throughput, latency, cost against target, per-tier load and lag, controller state.

A package of four modules, each with one job:

* :mod:`infra.status.stats` — pure: the window's ``results`` object (its statistics come from
  :mod:`policies.window`, shared with the budget controller), lag arithmetic, control state
  folded from records, the :class:`Snapshot` data.
* :mod:`infra.status.reader` — the Kafka side: :class:`StatusReader` and :func:`collect_status`.
* :mod:`infra.status.render` — the ``--json`` object (documented there) and the rich tables.
* :mod:`infra.status.command` — the ``status`` subcommand: parser, ``--once`` and the live view.

The names other modules import are re-exported here.
"""

from infra.status.command import DEFAULT_INTERVAL_S, add_status_parser, run_status
from infra.status.reader import (
    CHUNK,
    CONTROL_SCAN_LIMIT,
    DEFAULT_WINDOW_S,
    MAX_RECORDS_PER_PARTITION,
    READ_TIMEOUT_S,
    StatusReader,
    collect_status,
    stage_pools,
)
from infra.status.render import controller_json, render, status_json
from infra.status.stats import (
    REPLIES_SHOWN,
    ControlState,
    Snapshot,
    control_state,
    cost_vs_target,
    lag_totals,
    partition_lag,
    uncommitted,
    window_stats,
)
from policies.window import in_window, latency_at

__all__ = [
    "CHUNK",
    "CONTROL_SCAN_LIMIT",
    "DEFAULT_INTERVAL_S",
    "DEFAULT_WINDOW_S",
    "MAX_RECORDS_PER_PARTITION",
    "READ_TIMEOUT_S",
    "REPLIES_SHOWN",
    "ControlState",
    "Snapshot",
    "StatusReader",
    "add_status_parser",
    "collect_status",
    "control_state",
    "controller_json",
    "cost_vs_target",
    "in_window",
    "lag_totals",
    "latency_at",
    "partition_lag",
    "render",
    "run_status",
    "stage_pools",
    "status_json",
    "uncommitted",
    "window_stats",
]
