"""The deployment configuration: one TOML file, validated at start.

Every error is one line naming the bad key (``tiers[1].replicas must be >= 1``),
so ``tierflow up --config`` fails before it touches a broker. Defaults run on a
laptop: embedded broker, local Ray, one replica per stage.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from policies.autoscale import AutoscaleConfig
from policies.decisions import hop_limit
from policies.drift import DriftConfig
from policies.exploration import ExplorationConfig
from policies.registry import make_post_hoc, make_pre_call
from topics.connection import SECURITY_PROTOCOLS, KafkaConnection
from topics.control import parse_key_hex
from topics.errors import ConfigError
from topics.names import TopicLayout, check_name
from workers.backends import check_backend_options
from workers.spec import (
    ControlConfig,
    DeploymentSpec,
    LimitsConfig,
    PolicyConfig,
    TelemetryConfig,
    TierConfig,
    find_tier,
)

T = TypeVar("T")
PROVIDERS = ("embedded", "docker", "external")
EXPORTERS = ("none", "console", "otlp")


class _Section:
    """Typed reads from one TOML table that remember which keys were used."""

    def __init__(self, data: object, path: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{path or 'config'} must be a table")
        self.data: dict[str, Any] = data
        self.path = path
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str, kind: type[T], default: T) -> T:
        self.used.add(name)
        value = self.data.get(name, default)
        ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise ConfigError(f"{self.key(name)} must be {kind.__name__}, got {value!r}")
        return value

    def number(self, name: str, kind: type[T], default: T, lo: float, hi: float | None = None) -> T:
        value = self.get(name, kind, default)
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise ConfigError(f"{self.key(name)} must be a finite number, got {value}")
        if value < lo or (hi is not None and value > hi):  # type: ignore[operator]
            bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise ConfigError(f"{self.key(name)} must be {bound}, got {value}")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(name, str, default)
        if value not in choices:
            raise ConfigError(f"{self.key(name)} must be one of {', '.join(choices)}; got {value!r}")
        return value

    def table(self, name: str) -> _Section:
        self.used.add(name)
        return _Section(self.data.get(name, {}), self.key(name))

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(f"unknown key {self.key(unknown[0])!r}")


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    provider: str = "embedded"
    bootstrap_servers: str = ""
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password_env: str = ""
    """Name of the environment variable holding the SASL password (never the password)."""
    ssl_cafile: str = ""
    session_timeout_ms: int = 3000
    fetch_max_wait_ms: int = 10
    idle_fetch_wait_ms: int = 200
    """The fetch wait of a consumer that has read nothing for 5 s (``topics/pacing.py``); <= fetch_max_wait_ms: off."""
    commit_interval_ms: int = 100
    """A stage commits its acknowledged offsets at most this often (0: after every batch)."""
    poll_interval_ms: int = 10
    """A stage whose last batch was not full polls at most this often (0: at once); see ``workers/stage.py``."""
    replication_factor: int = 1
    memory_warn_mb: int = 2048
    """Embedded provider only: ``tierflow up`` warns when the broker's resident memory nears and
    passes this many MB (0: never). The embedded broker keeps every record in memory with no
    retention, so a long run grows until the machine runs out; the warning says so in time."""
    drain_s: float = 30.0
    """Embedded provider only: on Ctrl-C or SIGTERM, how long ``tierflow up`` keeps the stages running to
    finish what the broker holds before it stops the broker (which forgets it); 0 stops at once."""

    def connection(self, bootstrap: str) -> KafkaConnection:
        """How clients reach the broker at ``bootstrap`` with these TLS and SASL settings."""
        return KafkaConnection(
            bootstrap=bootstrap,
            security_protocol=self.security_protocol,
            sasl_mechanism=self.sasl_mechanism,
            sasl_username=self.sasl_username,
            sasl_password_env=self.sasl_password_env,
            ssl_cafile=self.ssl_cafile,
        )


@dataclass(frozen=True, slots=True)
class RayConfig:
    address: str = ""
    """Empty: start a local Ray bound to 127.0.0.1. Else ``ray://…`` or ``host:port`` to join."""
    num_cpus: int = 0
    """CPUs a local Ray advertises; 0 lets Ray count them."""


@dataclass(frozen=True, slots=True)
class StageConfig:
    replicas: int = 1
    num_cpus: float = 0.1
    partitions: int = 4
    autoscale: AutoscaleConfig | None = None
    """How the supervisor sizes the pool (``policies/autoscale.py``); ``None``: fixed at ``replicas``."""


OVER_BUDGET = ("downgrade", "refuse")


@dataclass(frozen=True, slots=True)
class TenantConfig:
    """One tenant of ``tierflow serve`` (``[gateway.tenants.<name>]``)."""

    key_sha256: str
    """The SHA-256 of the tenant's API key, in hex (the key itself is never in the config)."""
    rate_per_s: float = 0.0
    """Calls per second (a token bucket); 0: no limit."""
    burst: float = 0.0
    """Calls at once above the rate (default: one second's worth, at least 1)."""
    budget: float = 0.0
    """Cost per period, all hops counted; 0: no budget."""
    budget_period_s: float = 3600.0
    over_budget: str = "downgrade"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """``tierflow serve`` (``[gateway]``): with tenants, every call needs one of their API keys."""

    tenants: Mapping[str, TenantConfig] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Config:
    namespace: str
    tiers: tuple[TierConfig, ...]
    broker: BrokerConfig = BrokerConfig()
    ray: RayConfig = RayConfig()
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    policies: PolicyConfig = field(default_factory=PolicyConfig)
    router: StageConfig = StageConfig()
    verifier: StageConfig = StageConfig()
    sink: StageConfig = StageConfig(partitions=4)
    control: ControlConfig = field(default_factory=ControlConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    exploration: ExplorationConfig = field(default_factory=ExplorationConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    results_path: str = ""
    """Where the results sink appends delivered results (JSONL); empty: no file sink."""
    dataset: str = ""
    """The labelled data set the demo streams through this portfolio."""
    demo_requests: int = 500
    """How many items ``tierflow demo`` streams by default (LLM portfolios need fewer)."""

    @property
    def layout(self) -> TopicLayout:
        return TopicLayout(self.namespace, tuple(tier.name for tier in self.tiers))

    def tier(self, name: str) -> TierConfig:
        return find_tier(self.tiers, name)

    def runtime(self, bootstrap: str) -> DeploymentSpec:
        """What the stream runtime of this deployment needs, for a broker at ``bootstrap``."""
        return DeploymentSpec(
            namespace=self.namespace,
            tiers=self.tiers,
            kafka=self.broker.connection(bootstrap),
            partitions=self.partitions(),
            limits=self.limits,
            policies=self.policies,
            control=self.control,
            telemetry=self.telemetry,
            results_path=self.results_path,
            session_timeout_ms=self.broker.session_timeout_ms,
            fetch_max_wait_ms=self.broker.fetch_max_wait_ms,
            idle_fetch_wait_ms=self.broker.idle_fetch_wait_ms,
            commit_interval_ms=self.broker.commit_interval_ms,
            poll_interval_ms=self.broker.poll_interval_ms,
            autoscale=self.autoscaling(),
            exploration=self.exploration,
            drift=self.drift,
        )

    def autoscaling(self) -> dict[str, AutoscaleConfig]:
        """The autoscaled pools, by pool name (``router``, ``verifier``, ``sink``, ``worker.<tier>``)."""
        pools = {"router": self.router.autoscale, "verifier": self.verifier.autoscale, "sink": self.sink.autoscale}
        pools |= {f"worker.{tier.name}": tier.autoscale for tier in self.tiers}
        return {pool: scaling for pool, scaling in pools.items() if scaling is not None}

    def partitions(self) -> dict[str, int]:
        """Partition count of every topic of the deployment."""
        layout = self.layout
        counts = {
            layout.requests: self.router.partitions,
            layout.answers: self.verifier.partitions,
            layout.results: self.sink.partitions,
            layout.control: 1,
            layout.dlq: 1,
            layout.ledger: 1,
            layout.feedback: self.sink.partitions,
            layout.explored: self.verifier.partitions,
        }
        for tier in self.tiers:
            counts[layout.tier(tier.name)] = tier.partitions
            counts[layout.escalate(tier.name)] = tier.partitions
        return counts


def _stage(section: _Section, name: str) -> StageConfig:
    s = section.table(name)
    stage = StageConfig(
        replicas=s.number("replicas", int, 1, 1, 256),
        num_cpus=s.number("num_cpus", float, 0.1, 0.0, 1024),
        partitions=s.number("partitions", int, 4, 1, 10_000),
        autoscale=_autoscale(s),
    )
    s.finish()
    return stage


def _autoscale(parent: _Section) -> AutoscaleConfig | None:
    """The ``autoscale`` table of a pool (absent: the pool keeps its configured replicas)."""
    present = "autoscale" in parent.data
    s = parent.table("autoscale")
    if not present:
        return None
    try:
        config = AutoscaleConfig(
            min_replicas=s.number("min_replicas", int, 1, 0, 256),
            max_replicas=s.number("max_replicas", int, 4, 1, 256),
            target_lag=s.number("target_lag", float, 0.0, 0.0),
            target_queue_s=s.number("target_queue_s", float, 0.0, 0.0),
            upscale_delay_s=s.number("upscale_delay_s", float, 5.0, 0.0, 3600),
            downscale_delay_s=s.number("downscale_delay_s", float, 30.0, 0.0, 86_400),
            activation_lag=s.number("activation_lag", int, 1, 1),
            max_step=s.number("max_step", int, 4, 1, 256),
        )
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(s.path) else f"{s.path}: {message}") from None
    s.finish()
    return config


def _tier(data: object, index: int) -> TierConfig:
    s = _Section(data, f"tiers[{index}]")
    name = s.get("name", str, "")
    if not name:
        raise ConfigError(f"{s.key('name')} is required")
    check_name(s.key("name"), name)
    backend = s.get("backend", str, "")
    if not backend:
        raise ConfigError(f"{s.key('backend')} is required")
    resources = s.table("resources")
    for key, value in resources.data.items():
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{resources.key(key)} must be a number >= 0")
    tier = TierConfig(
        name=name,
        backend=backend,
        replicas=s.number("replicas", int, 1, 1, 256),
        num_cpus=s.number("num_cpus", float, 0.5, 0.0, 1024),
        num_gpus=s.number("num_gpus", float, 0.0, 0.0, 64),
        resources={key: float(value) for key, value in resources.data.items()},
        partitions=s.number("partitions", int, 4, 1, 10_000),
        threshold=s.number("threshold", float, 0.5, 0.0, 1.0),
        cost=s.number("cost", float, 0.0, 0.0),
        batch_size=s.number("batch_size", int, 32, 1, 100_000),
        options=dict(s.table("options").data),
        optional=s.get("optional", bool, False),
        autoscale=_autoscale(s),
    )
    s.finish()
    try:
        check_backend_options(tier.backend, tier.name, tier.options)
    except ConfigError as exc:
        raise ConfigError(f"tiers[{index}]: {exc}") from exc
    return tier


def parse_config(data: Mapping[str, Any]) -> Config:
    """Build a validated :class:`Config` from a parsed TOML document."""
    root = _Section(dict(data), "")
    namespace = check_name("namespace", root.get("namespace", str, "tierflow"))
    raw_tiers = root.get("tiers", list, [])
    if not raw_tiers:
        raise ConfigError("tiers must list at least one tier ([[tiers]] tables)")
    tiers = tuple(_tier(item, i) for i, item in enumerate(raw_tiers))
    names = [tier.name for tier in tiers]
    if len(set(names)) != len(names):
        raise ConfigError(f"tiers[].name must be unique, got {names}")

    b = root.table("broker")
    broker = BrokerConfig(
        provider=b.choice("provider", PROVIDERS, "embedded"),
        bootstrap_servers=b.get("bootstrap_servers", str, ""),
        security_protocol=b.choice("security_protocol", SECURITY_PROTOCOLS, "PLAINTEXT"),
        sasl_mechanism=b.get("sasl_mechanism", str, ""),
        sasl_username=b.get("sasl_username", str, ""),
        sasl_password_env=b.get("sasl_password_env", str, ""),
        ssl_cafile=b.get("ssl_cafile", str, ""),
        session_timeout_ms=b.number("session_timeout_ms", int, 3000, 500, 600_000),
        fetch_max_wait_ms=b.number("fetch_max_wait_ms", int, 10, 1, 60_000),
        idle_fetch_wait_ms=b.number("idle_fetch_wait_ms", int, 200, 0, 60_000),
        commit_interval_ms=b.number("commit_interval_ms", int, 100, 0, 60_000),
        poll_interval_ms=b.number("poll_interval_ms", int, 10, 0, 60_000),
        replication_factor=b.number("replication_factor", int, 1, 1, 16),
        memory_warn_mb=b.number("memory_warn_mb", int, 2048, 0, 1 << 24),
        drain_s=b.number("drain_s", float, 30.0, 0.0, 86_400.0),
    )
    b.finish()
    if broker.provider == "external" and not broker.bootstrap_servers:
        raise ConfigError("broker.bootstrap_servers is required when broker.provider = 'external'")
    broker.connection(broker.bootstrap_servers).check()  # TLS and SASL settings that cannot work, by key

    r = root.table("ray")
    ray = RayConfig(address=r.get("address", str, ""), num_cpus=r.number("num_cpus", int, 0, 0, 100_000))
    r.finish()

    lim = root.table("limits")
    limits = LimitsConfig(
        max_payload_bytes=lim.number("max_payload_bytes", int, 1 << 20, 1024, 64 << 20),
        max_batch=lim.number("max_batch", int, 64, 1, 100_000),
        max_hops=lim.number("max_hops", int, hop_limit(len(tiers)), 1, 1000),
        default_deadline_s=lim.number("default_deadline_s", float, 120.0, 0.001),
        infer_timeout_s=lim.number("infer_timeout_s", float, 60.0, 0.001),
        max_rss_mb=lim.number("max_rss_mb", int, 0, 0, 1 << 24),
    )
    lim.finish()

    p = root.table("policies")
    policies = PolicyConfig(
        file=p.get("file", str, ""),
        pre_call=p.get("pre_call", str, "cheapest_first"),
        pre_call_params=dict(p.table("pre_call_params").data),
        post_hoc=p.get("post_hoc", str, "threshold"),
        post_hoc_params=dict(p.table("post_hoc_params").data),
    )
    p.finish()

    c = root.table("control")
    keys = c.table("keys")
    for key_id, env in keys.data.items():
        check_name(keys.key(key_id), key_id)
        if not isinstance(env, str) or not env:
            raise ConfigError(f"{keys.key(key_id)} must name an environment variable holding the key")
    public_keys = c.table("public_keys")
    for key_id, text in public_keys.data.items():
        check_name(public_keys.key(key_id), key_id)
        if not isinstance(text, str):
            raise ConfigError(f"{public_keys.key(key_id)} must be a string (an Ed25519 public key in hex)")
        parse_key_hex(text, public_keys.key(key_id))
    control = ControlConfig(
        enabled=c.get("enabled", bool, True),
        keys=dict(keys.data) or ControlConfig().keys,
        signing_key_env=c.get("signing_key_env", str, ""),
        sasl_username=c.get("sasl_username", str, ""),
        sasl_password_env=c.get("sasl_password_env", str, ""),
        public_keys={key_id: text.strip() for key_id, text in public_keys.data.items()},
        period_s=c.number("period_s", float, 1.0, 0.05, 3600),
        window_s=c.number("window_s", float, 3.0, 0.5, 86_400),
        report_every_s=c.number("report_every_s", float, 2.0, 0.1, 3600),
        quiet_report_every_s=c.number("quiet_report_every_s", float, 60.0, 0.1, 86_400),
        step=c.number("step", float, 0.04, 1e-6, 1.0),
    )
    c.finish()
    if control.sasl_username and not broker.connection("").uses_sasl:
        raise ConfigError("control.sasl_username needs broker.security_protocol SASL_PLAINTEXT or SASL_SSL")
    if bool(control.sasl_username) != bool(control.sasl_password_env):
        raise ConfigError("control.sasl_username and control.sasl_password_env go together")

    t = root.table("telemetry")
    telemetry = TelemetryConfig(
        exporter=t.choice("exporter", EXPORTERS, "none"),
        endpoint=t.get("endpoint", str, ""),
        console_path=t.get("console_path", str, ""),
        metric_interval_s=t.number("metric_interval_s", float, 5.0, 0.1, 3600),
    )
    t.finish()

    config = Config(
        namespace=namespace,
        tiers=tiers,
        broker=broker,
        ray=ray,
        limits=limits,
        policies=policies,
        router=_stage(root, "router"),
        verifier=_stage(root, "verifier"),
        sink=_stage(root, "sink"),
        control=control,
        telemetry=telemetry,
        gateway=_gateway(root),
        exploration=_exploration(root),
        drift=_drift(root),
        results_path=root.get("results_path", str, ""),
        dataset=root.get("dataset", str, ""),
        demo_requests=root.number("demo_requests", int, 500, 1, 10_000_000),
    )
    root.finish()
    check_policies(config.policies)
    check_autoscaling(config)
    return config


def _exploration(root: _Section) -> ExplorationConfig:
    e = root.table("exploration")
    exploration = ExplorationConfig(
        share=e.number("share", float, 0.0, 0.0, 1.0),
        max_cost_share=e.number("max_cost_share", float, 0.1, 0.0, 1.0),
        salt=e.get("salt", str, ""),
    )
    e.finish()
    return exploration


def _drift(root: _Section) -> DriftConfig:
    """``[drift]``: when the controller reports a tier's acceptance rate or calibration as moved."""
    d = root.table("drift")
    default = DriftConfig()
    drift = DriftConfig(
        window_s=d.number("window_s", float, default.window_s, 1.0, 86_400.0 * 7),
        acceptance_bound=d.number("acceptance_bound", float, default.acceptance_bound, 0.001, 0.999),
        calibration_bound=d.number("calibration_bound", float, default.calibration_bound, 0.001, 0.999),
        min_answers=d.number("min_answers", int, default.min_answers, 1, 10_000_000),
        min_labels=d.number("min_labels", int, default.min_labels, 1, 10_000_000),
        label_horizon_s=d.number("label_horizon_s", float, default.label_horizon_s, 1.0, 86_400.0 * 30),
        calibration_window_s=d.number("calibration_window_s", float, default.calibration_window_s, 1.0, 86_400.0 * 30),
    )
    d.finish()
    return drift


def _gateway(root: _Section) -> GatewayConfig:
    g = root.table("gateway")
    tenants_table = g.table("tenants")
    tenants = {}
    for name in tenants_table.data:
        check_name(tenants_table.key(name), name)
        t = tenants_table.table(name)
        key = t.get("key_sha256", str, "").strip().lower()
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ConfigError(f"{t.key('key_sha256')} must be the 64-hex-character SHA-256 of the tenant's API key")
        rate = t.number("rate_per_s", float, 0.0, 0.0, 1e6)
        tenants[name] = TenantConfig(
            key_sha256=key,
            rate_per_s=rate,
            burst=t.number("burst", float, max(1.0, rate), 1.0, 1e6),
            budget=t.number("budget", float, 0.0, 0.0, 1e9),
            budget_period_s=t.number("budget_period_s", float, 3600.0, 1.0, 366 * 86_400.0),
            over_budget=t.choice("over_budget", OVER_BUDGET, "downgrade"),
        )
        t.finish()
    if len({t.key_sha256 for t in tenants.values()}) < len(tenants):
        raise ConfigError(f"{tenants_table.path}: two tenants share one API key")
    g.finish()
    return GatewayConfig(tenants=tenants)


def check_autoscaling(config: Config) -> None:
    """An autoscaled pool's ``max_replicas`` must fit its topics' partitions (a consumer group gives each
    partition to one member; replicas beyond that would idle). Its ``replicas`` is where it starts, brought
    within ``[min_replicas, max_replicas]``."""
    spec = config.runtime("-")
    most = spec.max_replicas()
    for pool, scaling in spec.autoscale.items():
        key = _pool_key(config, pool)
        if scaling.max_replicas > most[pool]:
            raise ConfigError(
                f"{key}.autoscale.max_replicas {scaling.max_replicas} is above the {most[pool]} partitions of "
                f"the pool's topics: a consumer group cannot use more replicas than partitions (raise {key}.partitions)"
            )


def _pool_key(config: Config, pool: str) -> str:
    """The config table of a pool, as error messages name it (``router``, ``tiers[1]``)."""
    if pool.startswith("worker."):
        name = pool.removeprefix("worker.")
        return f"tiers[{next(i for i, t in enumerate(config.tiers) if t.name == name)}]"
    return pool


def check_policies(policies: PolicyConfig) -> None:
    """Build both policies once, so an unknown name or a bad parameter fails at load, naming the key."""
    for key, make, name, params in (
        ("policies.pre_call", make_pre_call, policies.pre_call, policies.pre_call_params),
        ("policies.post_hoc", make_post_hoc, policies.post_hoc, policies.post_hoc_params),
    ):
        try:
            make(name, params)
        except ConfigError as exc:
            raise ConfigError(f"{key}: {exc}") from exc


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML config file; relative paths are taken from the file's folder.

    Stage replicas do not share the caller's working directory, so every path they
    see must be absolute: ``results_path``, and the tier options that name files
    (``trace``, and a ``model`` ending in ``.gguf``).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    config = parse_config(data)
    folder = Path(path).resolve().parent
    if config.results_path and not Path(config.results_path).is_absolute():
        config = replace(config, results_path=str(folder / config.results_path))
    config = replace(config, tiers=tuple(_absolute_paths(tier, folder) for tier in config.tiers))
    if config.policies.file:
        config = with_policy_file(config, folder / config.policies.file)
    return config


def with_policy_file(config: Config, path: str | Path) -> Config:
    """``config`` running the policies of a fitted policy file (checked against the config's tiers)."""
    from policies.file import load_policy

    policy = load_policy(path)
    policy.check_tiers([tier.name for tier in config.tiers])
    policies = PolicyConfig(
        file=str(Path(path).resolve()),
        pre_call=policy.pre_call,
        pre_call_params=policy.pre_call_params,
        post_hoc=policy.post_hoc,
        post_hoc_params=policy.post_hoc_params,
    )
    check_policies(policies)
    return replace(config, policies=policies)


def _absolute_paths(tier: TierConfig, folder: Path) -> TierConfig:
    options = dict(tier.options)
    for key, value in tier.options.items():
        names_file = key == "trace" or (key == "model" and str(value).endswith(".gguf"))
        if names_file and isinstance(value, str) and not Path(value).expanduser().is_absolute():
            options[key] = str(folder / value)
    return replace(tier, options=options)


PORTFOLIO_DIR = Path(__file__).with_name("portfolios")


def portfolio_names() -> list[str]:
    return sorted(path.stem for path in PORTFOLIO_DIR.glob("*.toml"))


def load_portfolio(name: str) -> Config:
    """A built-in portfolio config (``infra/portfolios/<name>.toml``)."""
    path = PORTFOLIO_DIR / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"unknown portfolio {name!r}; known: {', '.join(portfolio_names())}")
    return load_config(path)


def load_config_or_portfolio(name: str) -> Config:
    """A config file by path (``*.toml`` or an existing file), else a built-in portfolio by name."""
    if name.endswith(".toml") or Path(name).is_file():
        return load_config(name)
    return load_portfolio(name)
