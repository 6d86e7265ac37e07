"""``tierflow budget``: set or show the targets the budget controller of a running pipeline holds.

Every command but ``show`` is signed (HMAC, with a key named in the config's ``[control]`` table)
and answered by the controller on the control topic; ``show`` only reads the status topics. Both
believe only what the controller signed with a key in ``[control] public_keys`` (its replies, its
reports): records anyone else wrote there are left out and counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from infra.cli.common import Subparsers, bootstrap_servers, control_arguments, send_signed, signed_arguments
from infra.config import load_config


def add_parser(subparsers: Subparsers) -> None:
    budget = subparsers.add_parser(
        "budget",
        help="set or show the targets the budget controller holds",
        description="Commands are signed with the key named in the config's [control] keys (the secret is "
        "read from the environment variable given there, default TIERFLOW_CONTROL_KEY) and answered by "
        "the controller on the control topic; its replies and reports count only when signed with a key in "
        "[control] public_keys.",
    )
    actions = budget.add_subparsers(
        dest="action", required=True, metavar="ACTION", help="what to do (tierflow budget ACTION --help: its flags)"
    )
    common = control_arguments()
    signed = signed_arguments(common)

    def action(name: str, parent: argparse.ArgumentParser, text: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, parents=[parent], help=text, description=text[0].upper() + text[1:] + ".")

    set_ = action("set", signed, "replace the targets")
    set_.add_argument(
        "--cost-per-request", type=float, default=None, metavar="X", help="mean cost per request (default: no target)"
    )
    set_.add_argument(
        "--cost-per-second",
        type=float,
        default=None,
        metavar="X",
        help="cost per second of traffic (default: no target)",
    )
    set_.add_argument(
        "--p95-ms", type=float, default=None, metavar="MS", help="latency target, see --quantile (default: no target)"
    )
    set_.add_argument(
        "--quantile", type=float, default=0.95, metavar="Q", help="the percentile --p95-ms holds (default 0.95)"
    )
    set_.add_argument(
        "--quality-floor", type=float, default=None, metavar="Z", help="min mean confidence (default: no target)"
    )
    show = action("show", common, "targets, observed values, thresholds, last updates")
    show.add_argument("--json", action="store_true", help="print JSON (default: a table)")
    for name, text in (("pause", "stop sending requests to a tier"), ("resume", "let a paused tier run again")):
        action(name, signed, text).add_argument("tier", help="a tier of the config")
    action("pin", signed, "restore a policy version and stop the law").add_argument(
        "version", type=int, help="the policy version to restore (budget show lists the current one)"
    )
    action("release", signed, "let the law move thresholds again")


def run(args: argparse.Namespace) -> int:
    """0 when the controller accepted the command, 1 when it refused (the reason is printed either way)."""
    from infra.broker import kafka_options
    from infra.control_client import targets_from_args
    from infra.status import collect_status
    from topics.control import CommandAction

    config = load_config(args.config)
    kafka = kafka_options(config.broker, bootstrap_servers(config, args.bootstrap))
    if args.action == "show":
        _print_budget(asyncio.run(collect_status(kafka, config)), args.json)
        return 0
    fields: dict[str, Any] = {}
    if args.action == "set":
        latency = args.p95_ms
        fields["targets"] = targets_from_args(
            args.cost_per_request, args.cost_per_second, latency, args.quantile, args.quality_floor
        )
        action = CommandAction.SET_TARGETS
    elif args.action in ("pause", "resume"):
        config.tier(args.tier)  # an unknown tier fails here, with the list of known ones
        fields["tier"] = args.tier
        action = CommandAction.PAUSE_TIER if args.action == "pause" else CommandAction.RESUME_TIER
    elif args.action == "pin":
        fields["policy_version"] = args.version
        action = CommandAction.PIN_POLICY
    else:
        action = CommandAction.RELEASE_POLICY
    return send_signed(config, kafka, args, action, **fields)


def _print_budget(snapshot: Any, as_json: bool) -> None:
    """The controller part of a status snapshot: targets, observed values, state and the newest update."""
    from rich.console import Console
    from rich.table import Table

    from infra.status import status_json

    if as_json:
        doc = status_json(snapshot)
        print(json.dumps({key: doc[key] for key in ("controller", "policy", "replies", "undecodable")}, indent=2))
        return
    console = Console()
    report, policy = snapshot.control.report, snapshot.control.policy
    if report is None:
        unsigned = sum(snapshot.control.unsigned.values())
        why = f"; {unsigned} not signed by a key in [control] public_keys were left out" if unsigned else ""
        console.print(f"controller: no signed report yet (is the pipeline up?{why})")
        return
    t, o = report.targets, report.observed
    table = Table(title=f"budget controller — policy v{report.version}{' (pinned)' if report.pinned else ''}")
    for column in ("", "target", f"observed ({o.window_s:.0f} s)"):
        table.add_column(column)
    table.add_row("cost / request", _fmt(t.cost_per_request), f"{o.cost_per_request:.4g}")
    table.add_row("cost / second", _fmt(t.cost_per_second), f"{o.cost_per_second:.4g}")
    table.add_row(f"latency p{t.latency_quantile * 100:g} (ms)", _fmt(t.latency_ms), f"{o.latency_ms:.0f}")
    table.add_row("quality (mean confidence)", _fmt(t.quality_floor), f"{o.mean_confidence:.3f}")
    table.add_row("escalation rate", "", f"{o.escalation_rate:.1%}")
    table.add_row("results / s", "", f"{o.rate:.1f}")
    table.add_row("λ (cost) / μ (latency)", "", f"{report.lam:+.3f} / {report.mu:.3f}")
    if policy is not None:
        thresholds = ", ".join(f"{k} {v:.3f}" for k, v in policy.thresholds.items())
        table.add_row("thresholds", "", f"{thresholds} (base {', '.join(f'{v:.2f}' for v in report.base.values())})")
        table.add_row("last update", "", policy.reason)
    table.add_row("paused tiers", "", ", ".join(report.paused) or "none")
    table.add_row("refused commands", "", ", ".join(f"{k}: {v}" for k, v in report.rejected.items()) or "none")
    forged = {**report.ignored, **{f"seen {k}": v for k, v in snapshot.control.unsigned.items()}}
    if forged:  # the controller's own count since it started, and what this read left out
        table.add_row("unsigned records ignored", "", ", ".join(f"{k}: {v}" for k, v in sorted(forged.items())))
    console.print(table)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
