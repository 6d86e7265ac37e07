"""Policy files: a fitted policy pair as versioned JSON that ``tierflow up`` and ``demo`` load.

::

    {"format": "tierflow-policy", "version": 1,
     "name": "frugalgpt", "family": "post-hoc",
     "tiers": ["smollm2", "qwen-05b", ...],
     "pre_call": {"name": "chain", "params": {...}},
     "post_hoc": {"name": "frugalgpt", "params": {...}},
     "fitted": {"trace": "...", "train_items": 500, "setting": 0.0004, "train_accuracy": ..., ...}}

Loading builds both policies through the registry, so a file naming an unknown
policy or carrying bad parameters fails with one line, before anything starts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policies.base import PostHocPolicy, PreCallPolicy
from topics.errors import ConfigError

FORMAT = "tierflow-policy"
VERSION = 1


@dataclass(frozen=True)
class PolicyFile:
    name: str
    family: str
    tiers: tuple[str, ...]
    pre_call: str
    pre_call_params: Mapping[str, Any]
    post_hoc: str
    post_hoc_params: Mapping[str, Any]
    fitted: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> tuple[PreCallPolicy, PostHocPolicy]:
        from policies.registry import make_post_hoc, make_pre_call

        return make_pre_call(self.pre_call, self.pre_call_params), make_post_hoc(self.post_hoc, self.post_hoc_params)

    def check_tiers(self, configured: Sequence[str]) -> None:
        """The policy was fitted on these tiers: the deployment must have each of them."""
        missing = [t for t in self.tiers if t not in configured]
        if missing:
            raise ConfigError(f"policy {self.name!r} was fitted on tier {missing[0]!r}, which the config lacks")

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "family": self.family,
            "tiers": list(self.tiers),
            "pre_call": {"name": self.pre_call, "params": dict(self.pre_call_params)},
            "post_hoc": {"name": self.post_hoc, "params": dict(self.post_hoc_params)},
            "fitted": dict(self.fitted),
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")


def parse_policy(data: Mapping[str, Any], where: str = "policy file") -> PolicyFile:
    if data.get("format") != FORMAT:
        raise ConfigError(f"{where} is not a tierflow policy file (format must be {FORMAT!r})")
    if data.get("version") != VERSION:
        raise ConfigError(f"{where} has version {data.get('version')!r}; this tierflow reads version {VERSION}")
    try:
        policy = PolicyFile(
            name=str(data["name"]),
            family=str(data.get("family", "post-hoc")),
            tiers=tuple(map(str, data.get("tiers", ()))),
            pre_call=str(data["pre_call"]["name"]),
            pre_call_params=dict(data["pre_call"].get("params", {})),
            post_hoc=str(data["post_hoc"]["name"]),
            post_hoc_params=dict(data["post_hoc"].get("params", {})),
            fitted=dict(data.get("fitted", {})),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{where} lacks {exc}: it needs name, pre_call.name and post_hoc.name") from exc
    policy.build()  # unknown names and bad parameters fail here, in one line
    return policy


def load_policy(path: str | Path) -> PolicyFile:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read policy file {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"policy file {path} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"policy file {path} must hold a JSON object")
    return parse_policy(data, f"policy file {path}")
