"""``tierflow policy``: roll a fitted policy file out to a running pipeline, or see what runs.

``push FILE`` sends the file in a signed command (like ``budget``); the controller checks it
and publishes it in its next policy version, which every router and verifier applies at
once, without a restart. ``--shadow`` runs it beside the live policy deciding nothing (its
decisions land in each Result's ``shadow``); ``--canary SHARE`` lets it decide that share of
requests (their Results say ``canary``); without either it goes live. ``tierflow budget pin
VERSION`` rolls back to whatever that version ran. The file is checked here first, against
the config's tiers, so a bad file is one line and sends nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.cli.common import Subparsers, bootstrap_servers, control_arguments, note, send_signed, signed_arguments
from infra.config import Config, load_config

if TYPE_CHECKING:
    from topics.rollout import Rollout


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "policy",
        help="push a fitted policy file to a running pipeline (shadow, canary or live), or show what runs",
        description="Roll a policy file (tierflow fit --out) out without restarting anything: every router "
        "and verifier switches at one policy version. Roll back with tierflow budget pin VERSION.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION", help="push or show")
    common = control_arguments()
    push = actions.add_parser(
        "push",
        parents=[signed_arguments(common)],
        help="roll a policy file out (default: live)",
        description="Send FILE in a signed command; the controller checks it and publishes it in its next "
        "policy version. The previous version stays available to tierflow budget pin.",
    )
    push.add_argument("file", metavar="FILE", help="a policy file written by tierflow fit")
    reach = push.add_mutually_exclusive_group()
    reach.add_argument(
        "--canary", type=float, default=None, metavar="SHARE", help="decide only this share of requests, in (0, 1)"
    )
    reach.add_argument("--shadow", action="store_true", help="decide nothing; log what it would have decided")
    show = actions.add_parser(
        "show",
        parents=[common],
        help="the policy version in force and its rollout",
        description="Read the latest signed policy update: its version, the live policy and any canary or "
        "shadow candidate beside it.",
    )
    show.add_argument("--json", action="store_true", help="print JSON (default: one line)")


def run(args: argparse.Namespace) -> int:
    from infra.broker import kafka_options

    config = load_config(args.config)
    kafka = kafka_options(config.broker, bootstrap_servers(config, args.bootstrap))
    if args.action == "show":
        return _show(config, kafka, args.json)
    from topics.control import CommandAction

    return send_signed(config, kafka, args, CommandAction.PUSH_POLICY, rollout=read_rollout(args, config.layout.tiers))


def read_rollout(args: argparse.Namespace, tiers: tuple[str, ...]) -> Rollout:
    """The Rollout ``push`` sends: the file checked as the controller will check it, or one ConfigError line."""
    from policies.file import load_policy
    from topics.errors import ConfigError
    from topics.rollout import MAX_POLICY_BYTES, Rollout, RolloutMode, policy_digest

    policy = load_policy(args.file)  # not JSON, not a policy file, unknown policy names: one line each
    policy.check_tiers(tiers)
    text = json.dumps(policy.to_json(), sort_keys=True, separators=(",", ":"))
    if len(text.encode()) > MAX_POLICY_BYTES:
        size = len(text.encode())
        raise ConfigError(f"policy file {args.file} is {size} bytes; a push carries at most {MAX_POLICY_BYTES}")
    if args.canary is not None and not 0.0 < args.canary < 1.0:
        raise ConfigError(f"--canary must be a share in (0, 1), got {args.canary} (for all requests, leave it out)")
    mode = RolloutMode.SHADOW if args.shadow else RolloutMode.CANARY if args.canary is not None else RolloutMode.LIVE
    share = args.canary if args.canary is not None else 1.0
    return Rollout(policy=text, digest=policy_digest(text), mode=mode, share=share, name=policy.name)


def _show(config: Config, kafka: dict[str, Any], as_json: bool) -> int:
    """The newest signed policy version and what it runs; 1 when there is none yet."""
    from infra.status import collect_status
    from infra.status.render import rollout_json

    update = asyncio.run(collect_status(kafka, config)).control.policy
    if update is None:
        note("no signed policy version yet (is the pipeline up?)")
        return 1
    rollout = update.rollout
    if as_json:
        print(json.dumps({"version": update.version, "pinned": update.pinned, "rollout": rollout_json(rollout)}))
        return 0
    own = Path(config.policies.file).name if config.policies.file else config.policies.post_hoc
    running = rollout.describe() if rollout is not None else f"the config's own policy ({own})"
    print(f"policy v{update.version}{' (pinned)' if update.pinned else ''}: {running}")
    return 0
