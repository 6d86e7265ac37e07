"""Config validation: defaults run on a laptop; every error names the bad key in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.config import load_config, load_portfolio, parse_config, portfolio_names
from topics import ConfigError

TIER = {"name": "small", "backend": "simulated"}


def test_exploration_is_off_and_drift_watched_by_default() -> None:
    config = parse_config({"tiers": [TIER]})
    assert config.exploration.share == 0.0 and not config.exploration.enabled
    assert config.drift.acceptance_bound == 0.15 and config.runtime("h:1").drift == config.drift
    explored = parse_config({"tiers": [TIER], "exploration": {"share": 0.02, "max_cost_share": 0.2, "salt": "x"}})
    assert (explored.exploration.share, explored.runtime("h:1").exploration.salt) == (0.02, "x")


def test_minimal_config_gets_laptop_defaults() -> None:
    config = parse_config({"tiers": [TIER]})
    assert config.broker.provider == "embedded"
    assert config.ray.address == ""
    assert config.namespace == "tierflow"
    assert config.partitions()["tierflow.tier.small"] == 4


def test_the_hop_limit_follows_a_long_ladder_unless_configured() -> None:
    ladder = [{**TIER, "name": f"t{i:02d}"} for i in range(12)]
    assert parse_config({"tiers": [TIER]}).limits.max_hops == 8
    assert parse_config({"tiers": ladder}).limits.max_hops == 12  # a cascade can reach the twelfth tier
    assert parse_config({"tiers": ladder, "limits": {"max_hops": 3}}).limits.max_hops == 3


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({}, "tiers must list at least one tier"),
        ({"tiers": [{"name": "a"}]}, "tiers[0].backend is required"),
        ({"tiers": [TIER, TIER]}, "unique"),
        ({"tiers": [{**TIER, "replicas": 0}]}, "tiers[0].replicas must be in [1, 256]"),
        ({"tiers": [{**TIER, "threshold": 1.5}]}, "tiers[0].threshold must be in [0.0, 1.0]"),
        ({"tiers": [{**TIER, "replica": 2}]}, "unknown key 'tiers[0].replica'"),
        ({"tiers": [TIER], "broker": {"provider": "kafka"}}, "broker.provider must be one of"),
        ({"tiers": [TIER], "broker": {"provider": "external"}}, "broker.bootstrap_servers is required"),
        ({"tiers": [TIER], "limits": {"max_batch": "many"}}, "limits.max_batch must be int"),
        ({"tiers": [TIER], "limits": {"max_rss_mb": -1}}, "limits.max_rss_mb must be in"),
        ({"tiers": [TIER], "colour": "blue"}, "unknown key 'colour'"),
        ({"tiers": [{**TIER, "resources": {"gpu_node": -1}}]}, "tiers[0].resources.gpu_node"),
        ({"tiers": [TIER], "namespace": "a b"}, "namespace"),
        (
            {"tiers": [{**TIER, "autoscale": {"max_replicas": 8, "target_lag": 10}}]},
            "tiers[0].autoscale.max_replicas 8 is above the 4 partitions of the pool's topics",
        ),
        ({"tiers": [TIER], "router": {"autoscale": {"max_replicas": 2}}}, "router.autoscale: set exactly one of"),
        ({"tiers": [TIER], "sink": {"autoscale": {"target_lag": 1, "speed": 2}}}, "unknown key 'sink.autoscale.speed'"),
        (
            {"tiers": [{**TIER, "autoscale": {"min_replicas": -1, "target_lag": 1}}]},
            "tiers[0].autoscale.min_replicas must be in [0, 256]",
        ),
        ({"tiers": [TIER], "exploration": {"share": 1.5}}, "exploration.share must be in [0.0, 1.0]"),
        ({"tiers": [TIER], "exploration": {"share": float("nan")}}, "exploration.share must be a finite number"),
        ({"tiers": [TIER], "exploration": {"rate": 0.1}}, "unknown key 'exploration.rate'"),
        ({"tiers": [TIER], "drift": {"acceptance_bound": 0}}, "drift.acceptance_bound must be in"),
        ({"tiers": [TIER], "drift": {"min_labels": 0}}, "drift.min_labels must be in"),
    ],
)
def test_errors_name_the_key(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_load_config_reports_bad_toml_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("tiers = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_every_builtin_portfolio_is_valid() -> None:
    assert {"headlines", "simulated"} <= set(portfolio_names())
    for name in portfolio_names():
        assert load_portfolio(name).tiers
    with pytest.raises(ConfigError, match="known: "):
        load_portfolio("nope")


def test_relative_results_path_is_taken_from_the_config_folder(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "tierflow.toml"
    path.parent.mkdir()
    path.write_text('results_path = "out/results.jsonl"\n[[tiers]]\nname = "a"\nbackend = "simulated"\n')
    assert load_config(path).results_path == str(tmp_path / "conf" / "out" / "results.jsonl")


def test_relative_trace_and_gguf_paths_are_taken_from_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "tierflow.toml"
    path.write_text(
        '[[tiers]]\nname = "a"\nbackend = "replay"\noptions = { trace = "t.jsonl" }\n'
        '[[tiers]]\nname = "b"\nbackend = "llamacpp"\noptions = { model = "m/x.gguf" }\n'
        '[[tiers]]\nname = "c"\nbackend = "llamacpp"\noptions = { model = "smollm2-135m" }\n'
    )
    a, b, c = load_config(path).tiers
    assert a.options["trace"] == str(tmp_path / "conf" / "t.jsonl")
    assert b.options["model"] == str(tmp_path / "conf" / "m" / "x.gguf")
    assert c.options["model"] == "smollm2-135m"


def test_broker_memory_warning_defaults_to_2048_mb_and_0_disables_it() -> None:
    assert parse_config({"tiers": [TIER]}).broker.memory_warn_mb == 2048
    assert parse_config({"tiers": [TIER], "broker": {"memory_warn_mb": 0}}).broker.memory_warn_mb == 0
    assert parse_config({"tiers": [TIER], "broker": {"memory_warn_mb": 512}}).broker.memory_warn_mb == 512


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "broker.memory_warn_mb must be in [0, 16777216], got -1"),
        (1 << 25, "broker.memory_warn_mb must be in [0, 16777216]"),
        (float("inf"), "broker.memory_warn_mb must be int"),
        (float("nan"), "broker.memory_warn_mb must be int"),
        (512.5, "broker.memory_warn_mb must be int"),
        (True, "broker.memory_warn_mb must be int"),
        ("2GB", "broker.memory_warn_mb must be int"),
    ],
)
def test_broker_memory_warning_bound_is_a_finite_whole_number_of_mb(value: object, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"tiers": [TIER], "broker": {"memory_warn_mb": value}})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("broker", "message"),
    [
        (
            {"security_protocol": "SSL", "ssl_cafile": "/no/such/ca.pem"},
            "broker.ssl_cafile: cannot read /no/such/ca.pem",
        ),
        ({"ssl_cafile": "/no/such/ca.pem"}, "broker.ssl_cafile is set but broker.security_protocol = 'PLAINTEXT'"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI"}, "broker.sasl_mechanism must be one of PLAIN"),
        (
            {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256"},
            "broker.sasl_username is required",
        ),
        ({"sasl_username": "svc"}, "broker.sasl_username is set but broker.security_protocol = 'PLAINTEXT'"),
    ],
)
def test_tls_and_sasl_settings_that_cannot_work_fail_at_load_naming_the_key(
    broker: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"tiers": [TIER], "broker": broker})
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_complete_sasl_ssl_broker_config_loads(tmp_path: Path) -> None:
    from ...tls_material import make_ca

    ca = make_ca(tmp_path)
    broker = {
        "provider": "external",
        "bootstrap_servers": "k1:9093",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "svc",
        "sasl_password_env": "KAFKA_PW",
        "ssl_cafile": str(ca.path),
    }
    config = parse_config({"tiers": [TIER], "broker": broker})
    assert config.broker.connection("k1:9093").uses_tls and config.broker.connection("k1:9093").uses_sasl


def test_an_autoscaled_pool_starts_within_its_range_and_bounds_what_scale_accepts() -> None:
    large = {"min_replicas": 0, "max_replicas": 2, "target_lag": 50, "activation_lag": 5}
    doc = {
        "tiers": [TIER, {"name": "large", "backend": "simulated", "replicas": 3, "autoscale": large}],
        "router": {"replicas": 1, "autoscale": {"min_replicas": 2, "max_replicas": 3, "target_queue_s": 1.5}},
    }
    config = parse_config(doc)
    scaling = config.autoscaling()
    assert set(scaling) == {"router", "worker.large"}
    assert scaling["router"].target_queue_s == 1.5 and scaling["worker.large"].activation_lag == 5
    bounds = config.runtime("-").replica_bounds()
    assert (bounds["router"].low, bounds["router"].high, bounds["router"].partitions) == (2, 3, 4)
    assert (bounds["worker.large"].low, bounds["worker.large"].high) == (0, 2)
    assert (bounds["worker.small"].low, bounds["worker.small"].high) == (1, 4)  # fixed: 1 up to its partitions


def test_the_control_plane_may_have_its_own_kafka_user() -> None:
    broker = {"security_protocol": "SASL_PLAINTEXT", "sasl_username": "stages", "sasl_password_env": "STAGES_PW"}
    control = {"sasl_username": "control", "sasl_password_env": "CONTROL_PW"}
    spec = parse_config({"tiers": [TIER], "broker": broker, "control": control}).runtime("k:9092")
    assert (spec.kafka.sasl_username, spec.control_connection().sasl_username) == ("stages", "control")
    assert spec.control_connection().sasl_password_env == "CONTROL_PW"
    plain = parse_config({"tiers": [TIER], "broker": broker}).runtime("k:9092")
    assert plain.control_connection() == plain.kafka
    with pytest.raises(ConfigError, match=r"control\.sasl_username needs broker\.security_protocol SASL"):
        parse_config({"tiers": [TIER], "control": control})
    with pytest.raises(ConfigError, match="go together"):
        parse_config({"tiers": [TIER], "broker": broker, "control": {"sasl_username": "control"}})


def test_gateway_tenants_are_named_by_the_hash_of_their_key() -> None:
    key = "a" * 64
    doc = {"tiers": [TIER], "gateway": {"tenants": {"acme": {"key_sha256": key.upper(), "rate_per_s": 5, "budget": 2}}}}
    acme = parse_config(doc).gateway.tenants["acme"]
    assert (acme.key_sha256, acme.rate_per_s, acme.burst, acme.budget) == (key, 5.0, 5.0, 2.0)
    assert acme.over_budget == "downgrade"
    with pytest.raises(ConfigError, match=r"gateway\.tenants\.acme\.key_sha256 must be the 64-hex-character SHA-256"):
        parse_config({"tiers": [TIER], "gateway": {"tenants": {"acme": {"key_sha256": "secret"}}}})
    twins = {"a": {"key_sha256": key}, "b": {"key_sha256": key}}
    with pytest.raises(ConfigError, match="two tenants share one API key"):
        parse_config({"tiers": [TIER], "gateway": {"tenants": twins}})
    with pytest.raises(ConfigError, match="over_budget must be one of downgrade, refuse"):
        parse_config({"tiers": [TIER], "gateway": {"tenants": {"a": {"key_sha256": key, "over_budget": "ignore"}}}})
