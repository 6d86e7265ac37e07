"""``tierflow eval`` and ``tierflow fit``: every method fitted on the train split, judged on the test split.

For each method: fit on train, sweep its setting, simulate each setting on the test
split with the stream's decision code (``simulate``), and report the curve's
metrics (``metrics``) next to the baselines: every single tier, the random mix of
the cheapest and the most accurate tier, and the oracle (per item, the cheapest
tier that is right, else the most accurate one).

A trace built from the stream (some row recorded by chance, ``propensity`` < 1, or a request
without every tier) is evaluated off-policy instead (:func:`evaluate_stream`): methods are fitted
on the train split's explored requests, and each one, at the setting ``fit`` would pick, and each
single tier is reported as an IPS or DR estimate over every test request, with its bootstrap
interval (:mod:`infra.lab.offpolicy`). A complete trace gives exactly the report it always did.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.table import Table

from infra.lab.features import fitted_prefix, query_vectors
from infra.lab.fitters import Method, Pair, check_trace, params_of
from infra.lab.metrics import COST_SHARES, Point, Reference, best_at, best_single_at_cost, summary
from infra.lab.offpolicy import (
    ESTIMATORS,
    Estimator,
    Logged,
    OutcomeModel,
    Partial,
    PolicyEstimate,
    check_tiers,
    estimate_partials,
    exploration_share,
    explored_rows,
    is_stream_trace,
    logged_items,
    logged_of,
    query_table,
    simulate_partial,
    single_tier,
    tier_infos,
)
from infra.lab.registry import METHODS, make_method, method_names
from infra.lab.simulate import Summary, simulate, summarise
from infra.lab.table import TraceTable, in_train
from policies.base import TierInfo
from policies.features import DEFAULT_EMBEDDING
from policies.file import PolicyFile
from topics.errors import ConfigError, DataError
from topics.traces import TraceRow, read_trace


@dataclass(frozen=True)
class LabOptions:
    trace: str
    policies: str = "all"
    budgets: tuple[float, ...] = ()
    tiers: tuple[str, ...] = ()
    """Restrict to these tiers, in this (ladder) order; default: every tier of the trace."""
    train_fraction: float = 0.5
    max_hops: int | None = None
    """The hop limit simulated; default: the portfolio's (``policies.decisions.hop_limit``)."""
    embedding: str = DEFAULT_EMBEDDING
    """The query embedding the routers are fitted on (``policies/features.py``)."""
    split_seed: int = 0
    """0: the standard split; another value draws another train/test split."""
    estimator: Estimator = "dr"
    """The off-policy estimator of a stream trace's report (``ips`` or ``dr``); a complete trace is simulated."""
    bootstrap_seed: int = 0
    """Seeds the bootstrap intervals of a stream trace's report, so a report is reproducible."""


@dataclass(frozen=True)
class Loaded:
    rows: list[TraceRow]
    tiers: tuple[str, ...]
    """The tiers asked for (``--tiers``), else the trace's in trace order."""
    stream: bool
    """Built from the stream: some row recorded by chance, or some request without every tier."""


def load_rows(options: LabOptions) -> Loaded:
    """The trace's rows, its tiers checked, and whether it is a stream trace."""
    if not 0.0 < options.train_fraction < 1.0:
        raise ConfigError("--train-fraction must be between 0 and 1")
    if options.estimator not in ESTIMATORS:
        raise ConfigError(f"--estimator must be one of {', '.join(ESTIMATORS)}")
    rows = read_trace(options.trace)
    tiers = check_tiers(rows, options.tiers)
    return Loaded(rows, tiers, is_stream_trace(rows, tiers))


def load_table(options: LabOptions, loaded: Loaded | None = None) -> tuple[TraceTable, TraceTable, TraceTable]:
    """(all, train, test) of the trace's items that every tier answered, checked; of a stream trace,
    its explored requests (:func:`~infra.lab.offpolicy.explored_rows`), the ones fit on."""
    loaded = loaded or load_rows(options)
    rows = explored_rows(loaded.rows, loaded.tiers) if loaded.stream else loaded.rows
    table = TraceTable.from_rows(rows, options.tiers or None)
    check_trace(table)
    train, test = table.split(options.train_fraction, options.split_seed)
    return table, train, test


def embed_first(names: Sequence[str], splits: Sequence[TraceTable], embedding: str, console: Console) -> None:
    """Embed the splits' queries once, with a progress bar, when a method reads them (they are cached),
    without the prefix the first (train) split's queries share, as the routers will read them."""
    if any(METHODS[name].reads_queries for name in names):
        prefix = fitted_prefix(splits[0], console)
        for split in splits:
            query_vectors(split, embedding, console, prefix)


def single_points(table: TraceTable) -> list[Point]:
    return [
        Point(float(table.cost[:, t].mean()), float(table.correct[:, t].mean()), 1.0) for t in range(len(table.tiers))
    ]


def baselines(test: TraceTable, ref: Reference, budgets: Sequence[float]) -> list[dict[str, Any]]:
    singles = single_points(test)
    out = [
        {"name": f"single:{tier}", "family": "baseline", "params": {}, **summary([point], ref, budgets)}
        for tier, point in zip(test.tiers, singles, strict=True)
    ]
    shares = np.linspace(0.0, 1.0, 21)
    mix = [
        Point(
            (1 - s) * ref.weak_cost + s * ref.strong_cost,
            (1 - s) * ref.weak_accuracy + s * ref.strong_accuracy,
            setting=float(s),
        )
        for s in shares
    ]
    out.append({"name": "random", "family": "baseline", "params": {"mixes": "cheapest and most accurate"},
                **summary(mix, ref, budgets)})  # fmt: skip
    order = np.argsort(test.cost.mean(axis=0), kind="stable")
    # the cheapest tier that is right; where none is, the oracle knows that too and pays the cheapest
    picks = [next((t for t in order if test.correct[i, t]), order[0]) for i in range(len(test))]
    oracle = Point(
        float(np.mean([test.cost[i, t] for i, t in enumerate(picks)])),
        float(np.mean([test.correct[i, t] for i, t in enumerate(picks)])),
    )
    params = {"when no tier is right": "charged the cheapest tier"}
    out.append({"name": "oracle", "family": "baseline", "params": params, **summary([oracle], ref, budgets)})
    return out


@dataclass
class Sweep:
    method: Method
    settings: list[float]
    train: list[Point]
    test: list[Point]


def sweep(method: Method, train: TraceTable, test: TraceTable, max_hops: int | None = None) -> Sweep:
    if method.needs_confidence and not (train.has_confidence and test.has_confidence):
        raise DataError(f"{method.name} decides on the tiers' confidences, and this trace has none")
    method.prepare(train)
    settings = method.settings()
    curves: dict[str, list[Point]] = {"train": [], "test": []}
    for setting in settings:
        pre, post = method.policies(setting)
        for split, table in (("train", train), ("test", test)):
            s = summarise(simulate(table, pre, post, max_hops))
            curves[split].append(Point(s.cost, s.accuracy, s.calls, setting))
    return Sweep(method, settings, curves["train"], curves["test"])


def choose(points: Sequence[Point], budget: float | None, target: float | None, strong_accuracy: float) -> Point:
    """The train point ``fit`` picks: best accuracy within ``budget``; else least cost reaching
    ``target`` (default: the strongest single tier's train accuracy), else the most accurate."""
    if budget is not None:
        affordable = [p for p in points if p.cost <= budget + 1e-15]
        if not affordable:
            cheapest = min(p.cost for p in points)
            raise DataError(f"no setting costs <= {budget:g} per request on the train split (cheapest: {cheapest:.3g})")
        return max(affordable, key=lambda p: (p.accuracy, -p.cost))
    goal = strong_accuracy if target is None else target
    reaching = [p for p in points if p.accuracy >= goal - 1e-12]
    if reaching:
        return min(reaching, key=lambda p: (p.cost, -p.accuracy))
    if target is not None:
        best = max(p.accuracy for p in points)
        raise DataError(f"no setting reaches accuracy {target:.3f} on the train split (best: {best:.3f})")
    return max(points, key=lambda p: (p.accuracy, -p.cost))


def compact(value: Any, longest: int = 32) -> Any:
    """``value`` with every list longer than ``longest`` replaced by its size: a router's weights are
    hundreds of numbers per tier, which belong in the policy file ``fit`` writes, not in a report."""
    if isinstance(value, dict):
        return {key: compact(item, longest) for key, item in value.items()}
    if isinstance(value, list | tuple):
        size = np.asarray(value, dtype=object).shape
        if int(np.prod(size)) > longest:
            return f"<{'x'.join(map(str, size))} numbers>"
        return [compact(item, longest) for item in value]
    return value


def evaluate(options: LabOptions, console: Console) -> dict[str, Any]:
    loaded = load_rows(options)
    if loaded.stream:
        return evaluate_stream(options, loaded, console)
    table, train, test = load_table(options, loaded)
    ref = Reference.of(single_points(test))
    train_strong = max(p.accuracy for p in single_points(train))
    report: dict[str, Any] = {
        "trace": options.trace,
        "tiers": list(table.tiers),
        "items": {"train": len(train), "test": len(test)},
        "reference": {
            "weak": {"cost": ref.weak_cost, "accuracy": ref.weak_accuracy},
            "strong": {"cost": ref.strong_cost, "accuracy": ref.strong_accuracy},
        },
        "budgets": list(options.budgets),
        "embedding": options.embedding,
        "baselines": baselines(test, ref, options.budgets),
        "best_single_at_cost": best_single_at_cost(list(zip(test.tiers, single_points(test), strict=True)), ref),
        "policies": [],
    }
    every = options.policies.strip() == "all"
    embed_first(method_names(options.policies), (train, test), options.embedding, console)
    for name in method_names(options.policies):
        try:
            with console.status(f"fitting and sweeping {name}…"):
                result = sweep(make_method(name, options.embedding), train, test, options.max_hops)
        except DataError as exc:
            if not every:
                raise
            console.print(f"[yellow]skipped {name}[/]: {exc}")  # 'all' means every method this trace supports
            report.setdefault("skipped", {})[name] = str(exc)
            continue
        picked = choose(result.train, None, None, train_strong)
        assert picked.setting is not None
        entry = {
            "name": name,
            "family": result.method.family,
            "setting": picked.setting,
            "params": compact(params_of(result.method.policies(picked.setting))),
            **summary(result.test, ref, options.budgets),
        }
        report["policies"].append(entry)
    report["highlights"] = highlights(report)
    return report


def evaluate_stream(options: LabOptions, loaded: Loaded, console: Console) -> dict[str, Any]:
    """The report of a stream trace: off-policy estimates over every test request.

    Each method is fitted on the train split's explored requests and swept there as usual; it is
    reported at the setting ``fit`` would pick (the cheapest reaching the strongest single tier's
    train accuracy), with an interval, and its ``points`` are the point estimates of every setting
    (for the plot). DR's outcome model is each candidate's own train outcomes, per live path.
    """
    table = TraceTable.from_rows(explored_rows(loaded.rows, loaded.tiers), options.tiers or None)
    check_trace(table)
    fraction, seed = options.train_fraction, options.split_seed
    train = table.subset([i for i, item in enumerate(table.items) if in_train(item, fraction, seed)])
    if not len(train):
        raise DataError(f"none of the {len(table)} explored requests is in the train split: the trace needs more")
    requests = [r for r in logged_items(loaded.rows, table.tiers) if not in_train(r.item, fraction, seed)]
    if not requests:
        raise DataError("no request of the trace is in the test split: the trace needs more requests")
    infos = tier_infos(requests, table.tiers)
    rng = np.random.default_rng(options.bootstrap_seed)
    paths = [item.live_path() for item in logged_of(train)]
    dr = options.estimator == "dr"

    def model(correct: npt.ArrayLike, cost: npt.ArrayLike) -> OutcomeModel | None:
        return OutcomeModel.fit(paths, correct, cost) if dr else None

    singles = single_points(train)
    train_strong = max(p.accuracy for p in singles)
    report: dict[str, Any] = {
        "trace": options.trace,
        "kind": "stream",
        "estimator": options.estimator,
        "confidence_level": 0.95,
        "tiers": list(table.tiers),
        "items": {"train": len(train), "test": len(requests)},
        "test_explored": sum(any(row.propensity < 1.0 for row in r.rows.values()) for r in requests),
        "exploration_share": exploration_share(loaded.rows),
        "budgets": list(options.budgets),
        "embedding": options.embedding,
        "baselines": [],
        "policies": [],
    }
    for t, tier in enumerate(table.tiers):
        found = estimate_partials(requests, single_tier(requests, tier), options.estimator,
                                  model(train.correct[:, t], train.cost[:, t]), rng)  # fmt: skip
        report["baselines"].append(
            _stream_entry(f"single:{tier}", "baseline", None, {}, singles[t], found, [(None, found)], options.budgets)
        )
    every = options.policies.strip() == "all"
    names = method_names(options.policies)
    embed_first(names, (train, query_table(requests)), options.embedding, console)
    confident = train.has_confidence and all(r.confidence is not None for q in requests for r in q.rows.values())
    for name in names:
        method = make_method(name, options.embedding)
        try:
            if method.needs_confidence and not confident:
                raise DataError(f"{name} decides on the tiers' confidences, and this trace has none")
            with console.status(f"fitting {name} and estimating its sweep off-policy…"):
                method.prepare(train)
                settings = method.settings()
                swept = [_stream_setting(method.policies(s), train, requests, infos, options, model) for s in settings]
        except DataError as exc:
            if not every:
                raise
            console.print(f"[yellow]skipped {name}[/]: {exc}")
            report.setdefault("skipped", {})[name] = str(exc)
            continue
        on_train = [(setting, swept_train) for setting, (swept_train, _, _) in zip(settings, swept, strict=True)]
        train_points = [Point(s.cost, s.accuracy, s.calls, setting) for setting, s in on_train]
        picked = choose(train_points, None, None, train_strong)
        assert picked.setting is not None
        _, partials, fitted = swept[settings.index(picked.setting)]
        found = estimate_partials(requests, partials, options.estimator, fitted, rng)
        sweep_points = [(setting, estimate_partials(requests, p, options.estimator, m, None))
                        for setting, (_, p, m) in zip(settings, swept, strict=True)]  # fmt: skip
        params = compact(params_of(method.policies(picked.setting)))
        entry = _stream_entry(name, method.family, picked.setting, params, picked, found, sweep_points, options.budgets)
        report["policies"].append(entry)
    return report


def _stream_setting(
    pair: Pair,
    train: TraceTable,
    requests: Sequence[Logged],
    infos: tuple[TierInfo, ...],
    options: LabOptions,
    model: Callable[[npt.ArrayLike, npt.ArrayLike], OutcomeModel | None],
) -> tuple[Summary, list[Partial], OutcomeModel | None]:
    """One setting: its train summary, its partial outcomes on the test requests, DR's outcome model."""
    pre, post = pair
    outcomes = simulate(train, pre, post, options.max_hops)
    fitted = model([o.correct for o in outcomes], [o.cost for o in outcomes])
    return summarise(outcomes), simulate_partial(requests, pre, post, infos, options.max_hops), fitted


def _stream_entry(
    name: str,
    family: str,
    setting: float | None,
    params: dict[str, Any],
    train: Point,
    found: PolicyEstimate,
    sweep_points: Sequence[tuple[float | None, PolicyEstimate]],
    budgets: Sequence[float],
) -> dict[str, Any]:
    points = [Point(e.cost.value, e.accuracy.value, setting=s) for s, e in sweep_points]
    return {
        "name": name,
        "family": family,
        "setting": setting,
        "params": params,
        "train": {"accuracy": train.accuracy, "cost": train.cost},
        "accuracy": found.accuracy.value,
        "accuracy_interval": found.accuracy.interval,
        "cost": found.cost.value,
        "cost_interval": found.cost.interval,
        "observed": found.observed,
        "requests": found.requests,
        "accuracy_at_budget": {str(b): best_at(points, b) for b in budgets},
        "points": [{"cost": p.cost, "accuracy": p.accuracy, "setting": p.setting} for p in points],
    }


def fit(
    options: LabOptions, name: str, budget: float | None, target: float | None, out: str, console: Console
) -> PolicyFile:
    if budget is not None and target is not None:
        raise ConfigError("give --budget or --target-accuracy, not both")
    loaded = load_rows(options)
    table, train, test = load_table(options, loaded)
    method = make_method(name, options.embedding)
    embed_first([name], (train, test), options.embedding, console)
    with console.status(f"fitting {name} on {len(train)} train items…"):
        result = sweep(method, train, test, options.max_hops)
    train_strong = max(p.accuracy for p in single_points(train))
    picked = choose(result.train, budget, target, train_strong)
    assert picked.setting is not None
    held_out = result.test[result.settings.index(picked.setting)]
    pair = method.policies(picked.setting)
    params = params_of(pair)
    policy = PolicyFile(
        name=name,
        family=method.family,
        tiers=table.tiers,
        pre_call=params["pre_call"]["name"],
        pre_call_params=params["pre_call"]["params"],
        post_hoc=params["post_hoc"]["name"],
        post_hoc_params=params["post_hoc"]["params"],
        fitted={
            "trace": str(Path(options.trace).resolve()),
            "train_fraction": options.train_fraction,
            "split_seed": options.split_seed,
            "train_items": len(train),
            "budget": budget,
            "target_accuracy": target,
            "setting": picked.setting,
            "train": {"accuracy": picked.accuracy, "cost": picked.cost, "calls": picked.calls},
            "test": {"accuracy": held_out.accuracy, "cost": held_out.cost, "calls": held_out.calls},
            "train_curve": [{"setting": p.setting, "cost": p.cost, "accuracy": p.accuracy} for p in result.train],
            **({"fitted_on": "explored requests of a stream trace"} if loaded.stream else {}),
            **method.describe(),
        },
    )
    policy.save(out)
    return policy


def highlights(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The best policy of each family (by APGR) and its gain over the baselines and the best post-hoc policy."""

    def best(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
        rated = [e for e in entries if e["apgr"] is not None]
        return max(rated, key=lambda e: e["apgr"]) if rated else None

    baselines = {e["name"]: e for e in report["baselines"]}
    singles = [e for e in report["baselines"] if e["name"].startswith("single:")]
    best_single = max(singles, key=lambda e: e["best_accuracy"])
    post_hoc = best([e for e in report["policies"] if e["family"] == "post-hoc"])
    out = []
    for family in dict.fromkeys(e["family"] for e in report["policies"]):
        top = best([e for e in report["policies"] if e["family"] == family])
        if top is None:
            continue
        random_apgr = baselines["random"]["apgr"]
        out.append({
            "family": family,
            "policy": top["name"],
            "apgr": top["apgr"],
            "apgr_over_random": None if random_apgr is None else top["apgr"] - random_apgr,
            "apgr_over_best_post_hoc": None if post_hoc is None or family == "post-hoc"
            else top["apgr"] - post_hoc["apgr"],
            "best_post_hoc": None if post_hoc is None else post_hoc["name"],
            "accuracy_over_best_single": top["best_accuracy"] - best_single["best_accuracy"],
            "best_single": best_single["name"].removeprefix("single:"),
            "cost_at_strongest_accuracy_pct": top["cost_at_strongest_accuracy_pct"],
        })  # fmt: skip
    return out


def highlight_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for h in report.get("highlights", []):
        versus = "" if h["apgr_over_best_post_hoc"] is None else (
            f", {h['apgr_over_best_post_hoc']:+.3f} over the best post-hoc ({h['best_post_hoc']})")  # fmt: skip
        lines.append(
            f"best {h['family']}: {h['policy']}, APGR {h['apgr']:.3f} "
            f"({_signed(h['apgr_over_random'])} over the random mix{versus}); "
            f"best accuracy {h['accuracy_over_best_single']:+.1%} against the best single tier ({h['best_single']}), "
            f"cost at the strongest tier's accuracy {_pct(h['cost_at_strongest_accuracy_pct'])}"
        )
    return lines


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f}"


def print_report(report: dict[str, Any], console: Console) -> None:
    if report.get("kind") == "stream":
        console.print(stream_table(report))
        console.print(stream_line(report), highlight=False)
        return
    console.print(metrics_table(report))
    for line in [*highlight_lines(report), affordable_line(report)]:
        console.print(line, highlight=False)


def affordable_line(report: dict[str, Any]) -> str:
    """The best single tier within each share of the strongest tier's cost: the buyer's other option."""
    parts = []
    for share, best in report.get("best_single_at_cost", {}).items():
        within = f"within {float(share):.0%}"
        parts.append(f"{within}: none" if best is None else f"{within}: {best['tier']} at {best['accuracy']:.1%}")
    return "best single tier affordable at a share of the strongest tier's cost: " + "; ".join(parts)


def _fmt(value: object, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


COLUMNS = ("policy", "family", "APGR", "CPT(50%)", "CPT(80%)", "AIQ", "cost to match strongest",
           *(f"acc @ {share:.0%} cost" for share in COST_SHARES), "best acc")  # fmt: skip


def _cells(entry: dict[str, Any]) -> list[str]:
    at_cost = entry.get("accuracy_at_cost", {})
    return [
        entry["name"],
        entry["family"],
        _fmt(entry["apgr"], ".3f"),
        _pct(entry["cpt50"]),
        _pct(entry["cpt80"]),
        _fmt(entry["aiq"], ".4f"),
        _pct(entry["cost_at_strongest_accuracy_pct"]),
        *(_fmt(at_cost.get(str(share)), ".1%") for share in COST_SHARES),
        f"{entry['best_accuracy']:.1%}",
    ]


def metrics_table(report: dict[str, Any]) -> Table:
    """Every policy and baseline; names fold rather than being cut on a narrow terminal."""
    table = Table(title=f"{report['trace']}: {report['items']['test']} test items")
    for column in COLUMNS:
        left = column in ("policy", "family")
        table.add_column(column, justify="left" if left else "right", overflow="fold")
    for entry in [*report["policies"], *report["baselines"]]:
        table.add_row(*_cells(entry))
    return table


STREAM_COLUMNS = ("policy", "family", "setting", "accuracy", "interval", "cost/request", "interval", "observed")


def _stream_cells(entry: dict[str, Any]) -> list[str]:
    (alow, ahigh), (clow, chigh) = entry["accuracy_interval"], entry["cost_interval"]
    return [
        entry["name"],
        entry["family"],
        _fmt(entry["setting"], ".4g"),
        f"{entry['accuracy']:.1%}",
        f"{alow:.1%} to {ahigh:.1%}",
        f"{entry['cost']:.3g}",
        f"{clow:.3g} to {chigh:.3g}",
        f"{entry['observed']} of {entry['requests']}",
    ]


def stream_table(report: dict[str, Any]) -> Table:
    """A stream trace's estimates: each policy at its picked setting, each single tier, with intervals."""
    level = f"{report['confidence_level']:.0%}"
    title = (f"{report['trace']}: {report['estimator'].upper()} estimates over {report['items']['test']} test "
             f"requests, {level} intervals")  # fmt: skip
    table = Table(title=title)
    for column in STREAM_COLUMNS:
        left = column in ("policy", "family")
        table.add_column(f"{level} {column}" if column == "interval" else column,
                         justify="left" if left else "right", overflow="fold")  # fmt: skip
    for entry in [*report["policies"], *report["baselines"]]:
        table.add_row(*_stream_cells(entry))
    return table


def stream_line(report: dict[str, Any]) -> str:
    """How the figures of a stream trace's report were made."""
    share = report["exploration_share"]
    explored = f"{report['test_explored']} of them explored" + (
        "" if share is None else f" (exploration share {share:.3g})")  # fmt: skip
    model = ", outcome model: each candidate's train mean per live path" if report["estimator"] == "dr" else ""
    return (
        f"off-policy ({report['estimator'].upper()}{model}) over {report['items']['test']} test requests, "
        f"{explored}; methods fitted on {report['items']['train']} explored train requests and shown at the "
        "setting fit would pick; intervals: bootstrap over requests; observed: requests whose outcome the trace shows"
    )


def markdown(report: dict[str, Any]) -> str:
    if report.get("kind") == "stream":
        entries = [*report["policies"], *report["baselines"]]
        lines = ["| " + " | ".join(STREAM_COLUMNS) + " |", "|" + "---|" * len(STREAM_COLUMNS)]
        lines.extend("| " + " | ".join(_stream_cells(e)) + " |" for e in entries)
        return "\n".join(lines) + "\n\n- " + stream_line(report) + "\n"
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines.extend("| " + " | ".join(_cells(e)) + " |" for e in [*report["policies"], *report["baselines"]])
    extra = [*highlight_lines(report), affordable_line(report)]
    return "\n".join(lines) + "\n" + ("\n" + "\n".join(f"- {line}" for line in extra) + "\n" if extra else "")


def plot(report: dict[str, Any], path: str) -> None:
    """Accuracy against mean cost per request: each policy's test curve, baselines as points and a line.

    Every series has its own colour and marker (a colour map of 20, markers cycling past it), the
    best policy of each family (by APGR) is drawn bold and named so in the legend, and the legend
    sits beside the axes, never on the data.
    """
    import itertools

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = {h["policy"]: h["family"] for h in report.get("highlights", [])}
    palette = plt.get_cmap("tab20")
    colours = itertools.cycle([palette(i) for i in range(20)])
    markers = itertools.cycle("o^sDvP<>Xph*H8d")
    fig, ax = plt.subplots(figsize=(10, 5.5))
    for entry in report["policies"]:
        points = sorted((p["cost"], p["accuracy"]) for p in entry["points"])
        top = entry["name"] in best
        label = f"{entry['name']} (best {best[entry['name']]})" if top else entry["name"]
        ax.plot([c for c, _ in points], [a for _, a in points], marker=next(markers), markersize=4,
                color=next(colours), linewidth=2.6 if top else 1.0, label=label, zorder=3 if top else 2)  # fmt: skip
    for entry in report["baselines"]:
        points = sorted((p["cost"], p["accuracy"]) for p in entry["points"])
        if entry["name"] == "random":
            style: dict[str, Any] = {"linestyle": "--", "color": "grey", "marker": ""}
        else:
            style = {"linestyle": "none", "color": next(colours), "marker": "*" if entry["name"] == "oracle" else "s"}
        ax.plot([c for c, _ in points], [a for _, a in points], label=entry["name"], markersize=8, zorder=4, **style)
    ax.set_xscale("log")
    ax.set_xlabel("mean cost per request (log scale)")
    estimated = f", {report['estimator'].upper()} estimate" if report.get("kind") == "stream" else ""
    ax.set_ylabel(f"accuracy (test split{estimated})")
    ax.set_title(Path(report["trace"]).name)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def write_outputs(report: dict[str, Any], json_path: str, plot_path: str, md_path: str) -> None:
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if md_path:
        Path(md_path).write_text(markdown(report), encoding="utf-8")
    if plot_path:
        plot(report, plot_path)
