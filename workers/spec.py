"""What the stream runtime needs to run one deployment: plain, picklable specs it defines itself.

``infra/config.py`` parses the TOML file into these (and adds what only the
deployment needs: broker provider, Ray, pool sizes), then hands each replica one
:class:`DeploymentSpec`. The runtime never sees the config module, so it can be
driven by any deployer (the CLI, a supervisor, a test) that fills these in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from policies.autoscale import AutoscaleConfig, ReplicaBounds, replica_bounds
from policies.decisions import DEFAULT_MAX_HOPS
from policies.drift import DriftConfig
from policies.exploration import ExplorationConfig
from topics.connection import KafkaConnection
from topics.errors import ConfigError
from topics.names import TopicLayout


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_payload_bytes: int = 1 << 20
    max_batch: int = 64
    """Records one actor takes per poll: the bound on its in-flight work."""
    max_hops: int = DEFAULT_MAX_HOPS
    default_deadline_s: float = 120.0
    """Deadline given to requests that carry none."""
    infer_timeout_s: float = 60.0
    max_rss_mb: int = 0
    """A replica whose resident memory passes this after a batch finishes it, commits, leaves and is
    replaced by a fresh one (0: no bound). Like Celery's max memory per child: a leak or a fragmented
    heap costs a restart, not the machine. LLM tiers count their mapped weights: leave them room."""


@dataclass(frozen=True, slots=True)
class TierConfig:
    name: str
    backend: str
    replicas: int = 1
    num_cpus: float = 0.5
    num_gpus: float = 0.0
    resources: Mapping[str, float] = field(default_factory=dict)
    partitions: int = 4
    threshold: float = 0.5
    cost: float = 0.0
    """Expected cost per call, for routing; the backend reports the actual cost."""
    batch_size: int = 32
    options: Mapping[str, Any] = field(default_factory=dict)
    optional: bool = False
    """The demo leaves this tier out (saying why) when its backend cannot load, e.g. recorded data absent."""
    autoscale: AutoscaleConfig | None = None
    """How the supervisor sizes the tier's pool (``policies/autoscale.py``); ``None``: fixed at ``replicas``."""


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    file: str = ""
    """A fitted policy file (``tierflow fit``); when set, it supplies both policies and their parameters."""
    pre_call: str = "cheapest_first"
    pre_call_params: Mapping[str, Any] = field(default_factory=dict)
    post_hoc: str = "threshold"
    post_hoc_params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ControlConfig:
    """The budget controller and who may command it (``[control]``)."""

    enabled: bool = True
    keys: Mapping[str, str] = field(default_factory=lambda: {"default": "TIERFLOW_CONTROL_KEY"})
    """Key id -> name of the environment variable holding its secret (never the secret itself)."""
    signing_key_env: str = ""
    """Name of the environment variable holding the controller's Ed25519 private key (64 hex characters:
    the raw 32-byte seed), never the key itself; the deployer reads it. Empty, or the variable empty:
    the deployer makes an ephemeral key pair for the deployment and adds its public key below."""
    public_keys: Mapping[str, str] = field(default_factory=dict)
    """Key id -> Ed25519 public key (64 hex characters) whose signatures on policy updates, replies and
    reports the replicas, the controller's recovery and ``tierflow status`` accept. Two at once during a
    rotation; the controller signs with the id whose public key matches its private key."""
    period_s: float = 1.0
    """How often the control law runs."""
    window_s: float = 3.0
    """The sliding window observed cost, latency and quality are measured over (longer: less noise,
    but more delay in the loop, which makes the law oscillate; 3 s settles in ~15 s at 300 req/s)."""
    report_every_s: float = 2.0
    """How often the controller reports its state while that state moves (``tierflow status`` reads it)."""
    quiet_report_every_s: float = 60.0
    """How often while it holds still (an idle deployment): every reader of the control topic (the
    routers' and verifiers' policy feeds, the controller) then falls back to its idle fetch wait."""
    step: float = 0.04
    """Largest change of a multiplier per period (the bounded step of the dual ascent)."""
    sasl_username: str = ""
    """The control plane's own Kafka user: the budget controller and the supervisor write the control
    topic with it, so ACLs can keep the stages' user from writing there (empty: the broker's user)."""
    sasl_password_env: str = ""
    """Name of the environment variable holding that user's password (never the password)."""


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """Where spans and metrics go (``[telemetry]``)."""

    exporter: str = "none"
    """``none``, ``console`` (JSON lines to ``console_path``, else stdout) or ``otlp`` (HTTP)."""
    endpoint: str = ""
    """OTLP/HTTP base URL (default: the SDK's, http://localhost:4318)."""
    console_path: str = ""
    metric_interval_s: float = 5.0


@dataclass(frozen=True)
class DeploymentSpec:
    """Everything a replica (or the budget controller) of one deployment reads: sent once at creation."""

    namespace: str
    tiers: tuple[TierConfig, ...]
    kafka: KafkaConnection
    partitions: Mapping[str, int]
    """Partition count of every topic of the deployment."""
    limits: LimitsConfig = LimitsConfig()
    policies: PolicyConfig = PolicyConfig()
    control: ControlConfig = ControlConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    results_path: str = ""
    session_timeout_ms: int = 3000
    fetch_max_wait_ms: int = 10
    idle_fetch_wait_ms: int = 200
    commit_interval_ms: int = 100
    poll_interval_ms: int = 10
    autoscale: Mapping[str, AutoscaleConfig] = field(default_factory=dict)
    """The pools the supervisor sizes, by pool name (the others keep their configured replicas)."""
    exploration: ExplorationConfig = field(default_factory=ExplorationConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)

    @cached_property
    def layout(self) -> TopicLayout:
        return TopicLayout(self.namespace, tuple(tier.name for tier in self.tiers))

    def tier(self, name: str) -> TierConfig:
        return find_tier(self.tiers, name)

    def pool_topics(self) -> dict[str, list[str]]:
        """Every stage pool of the deployment and the topics its consumer group reads."""
        layout = self.layout
        pools = {"router": [layout.requests], "verifier": [layout.answers]}
        pools |= {f"worker.{t.name}": [layout.tier(t.name), layout.escalate(t.name)] for t in self.tiers}
        if self.results_path:
            pools["sink"] = [layout.results]
        return pools

    def max_replicas(self) -> dict[str, int]:
        """Per pool, the most replicas that can all hold a partition: its topics' smallest partition count
        (a consumer group gives each partition to one member; members beyond that idle)."""
        return {pool: min(self.partitions[t] for t in topics) for pool, topics in self.pool_topics().items()}

    def control_connection(self) -> KafkaConnection:
        """How the control plane (controller, supervisor) reaches the broker: as the stages do, but as the
        ``[control]`` user when one is set."""
        if not self.control.sasl_username:
            return self.kafka
        return replace(
            self.kafka, sasl_username=self.control.sasl_username, sasl_password_env=self.control.sasl_password_env
        )

    def replica_bounds(self) -> dict[str, ReplicaBounds]:
        """Per pool, the replicas it may run (:func:`~policies.autoscale.replica_bounds`)."""
        return {pool: replica_bounds(self.autoscale.get(pool), most) for pool, most in self.max_replicas().items()}


def find_tier(tiers: tuple[TierConfig, ...], name: str) -> TierConfig:
    """The tier called ``name``; an unknown name lists the known ones."""
    for tier in tiers:
        if tier.name == name:
            return tier
    raise ConfigError(f"unknown tier {name!r}; known: {', '.join(t.name for t in tiers)}")
