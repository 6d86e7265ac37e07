"""The manifests in infra/deploy/ agree with the tierflow.toml next to them.

A KubeRay RayCluster, a Strimzi Kafka with its KafkaTopics and KafkaUsers, and the config:
the same Kubernetes namespace everywhere, one topic per topic of the config with its
partitions, the config's addresses naming the services the operators create, the Kafka users
the config names (and only the control plane and the operators allowed to write the control
topic), and for every tier a worker group that offers the resources it asks for.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.config import Config, parse_config

from ...tls_material import make_ca

DEPLOY = Path(__file__).resolve().parents[3] / "infra" / "deploy"


def _documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / name).read_text()) if doc]


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """tierflow.toml as written, with its CA file (on the pods, from a Secret) made here."""
    doc = tomllib.loads((DEPLOY / "tierflow.toml").read_text())
    doc["broker"]["ssl_cafile"] = str(make_ca(tmp_path_factory.mktemp("ca")).path)
    return parse_config(doc)


@pytest.fixture(scope="module")
def manifests() -> dict[str, list[dict[str, Any]]]:
    return {name: _documents(name) for name in ("raycluster.yaml", "kafka.yaml", "topics.yaml", "users.yaml")}


def test_every_manifest_is_in_one_namespace(manifests: dict[str, list[dict[str, Any]]]) -> None:
    namespaces = {doc["metadata"]["namespace"] for docs in manifests.values() for doc in docs}
    assert namespaces == {"tierflow"}


def test_one_kafka_topic_per_topic_of_the_config_with_its_partitions(
    config: Config, manifests: dict[str, list[dict[str, Any]]]
) -> None:
    cluster = _one(manifests["kafka.yaml"], "Kafka")["metadata"]["name"]
    topics = [doc for doc in manifests["topics.yaml"] if doc["kind"] == "KafkaTopic"]
    assert all(doc["metadata"]["labels"]["strimzi.io/cluster"] == cluster for doc in topics)
    declared = {doc["spec"]["topicName"]: doc["spec"]["partitions"] for doc in topics}
    assert declared == config.partitions()
    assert all(doc["spec"]["replicas"] >= config.broker.replication_factor for doc in topics)
    control = next(doc for doc in topics if doc["spec"]["topicName"] == config.layout.control)
    assert control["spec"]["config"]["retention.ms"] == "-1"  # replayed from its beginning: kept for good


def test_the_config_reaches_the_services_the_operators_create(
    config: Config, manifests: dict[str, list[dict[str, Any]]]
) -> None:
    kafka = _one(manifests["kafka.yaml"], "Kafka")
    name, namespace = kafka["metadata"]["name"], kafka["metadata"]["namespace"]
    listener = next(item for item in kafka["spec"]["kafka"]["listeners"] if item["tls"])
    assert config.broker.bootstrap_servers == f"{name}-kafka-bootstrap.{namespace}.svc:{listener['port']}"
    assert config.broker.security_protocol == "SASL_SSL"
    assert listener["authentication"]["type"] == config.broker.sasl_mechanism.lower()
    assert kafka["spec"]["kafka"]["authorization"]["type"] == "simple"
    assert kafka["spec"]["kafka"]["config"]["auto.create.topics.enable"] is False
    ray = _one(manifests["raycluster.yaml"], "RayCluster")["metadata"]
    assert config.ray.address == f"ray://{ray['name']}-head-svc.{ray['namespace']}.svc:10001"


def _may(user: dict[str, Any], operation: str, topic: str) -> bool:
    for acl in user["spec"]["authorization"]["acls"]:
        resource = acl["resource"]
        if resource["type"] != "topic" or operation not in acl["operations"]:
            continue
        literal = resource.get("patternType", "literal") == "literal"
        if (topic == resource["name"]) if literal else topic.startswith(resource["name"]):
            return True
    return False


def test_only_the_control_plane_and_the_operators_write_the_control_topic(
    config: Config, manifests: dict[str, list[dict[str, Any]]]
) -> None:
    users = {doc["metadata"]["name"]: doc for doc in manifests["users.yaml"] if doc["kind"] == "KafkaUser"}
    stages, control = config.broker.sasl_username, config.control.sasl_username
    assert {stages, control} <= set(users) and stages != control
    assert all(user["spec"]["authentication"]["type"] == "scram-sha-512" for user in users.values())
    writers = {name for name, user in users.items() if _may(user, "Write", config.layout.control)}
    assert writers == {control, "tierflow-operator"}
    ledger = config.layout.ledger  # the gateway's (it runs as the operator), no stage's
    feedback = config.layout.feedback  # labels: operators and their tools write them, the controller reads them
    data = set(config.partitions()) - {config.layout.control, ledger, feedback}
    assert all(_may(users[stages], "Write", topic) for topic in data)
    assert all(_may(users[stages], "Read", topic) for topic in data if topic != config.layout.dlq)
    for operator_only in (ledger, feedback):
        assert _may(users["tierflow-operator"], "Write", operator_only)
        assert not _may(users[stages], "Write", operator_only)
    assert all(_may(users[control], "Read", topic) for topic in config.partitions())
    assert _may(users[control], "Write", config.layout.dlq)  # a label it cannot decode becomes a dead letter


def _offers(group: dict[str, Any]) -> dict[str, float]:
    """What one worker group's nodes offer Ray: CPUs, GPUs and custom resources."""
    params = group["rayStartParams"]
    offered = {key: float(value) for key, value in json.loads(json.loads(params.get("resources", '"{}"'))).items()}
    offered["CPU"] = float(params.get("num-cpus", 0))
    offered["GPU"] = float(params.get("num-gpus", 0))
    return offered


def test_every_tier_has_a_worker_group_that_offers_what_it_asks_for(
    config: Config, manifests: dict[str, list[dict[str, Any]]]
) -> None:
    ray = _one(manifests["raycluster.yaml"], "RayCluster")["spec"]
    assert ray["enableInTreeAutoscaling"] is True
    groups = {group["groupName"]: _offers(group) for group in ray["workerGroupSpecs"]}
    head = _offers(ray["headGroupSpec"])
    assert set(head) == {"CPU", "GPU"}  # no tier resource on the head: tiers land on workers only
    for tier in config.tiers:
        asks = {"CPU": tier.num_cpus, "GPU": tier.num_gpus, **tier.resources}
        fitting = [name for name, offers in groups.items() if all(offers.get(k, 0) >= v for k, v in asks.items())]
        assert fitting, f"no worker group offers what tier {tier.name} asks for: {asks}"
        assert tier.resources, f"tier {tier.name} names no custom resource: it could land on any node"
    scaling = config.autoscaling()
    gpu = next(g for g in ray["workerGroupSpecs"] if g["groupName"] == "gpu")
    assert gpu["minReplicas"] == 0 and scaling["worker.large"].min_replicas == 0  # both may sleep at zero
