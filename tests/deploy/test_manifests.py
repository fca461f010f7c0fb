"""The plain manifests in deploy/k8s/manifests validate with kubernetes-validate (strict), Kubernetes 1.33."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import K8S, KUBERNETES_VERSION

MANIFESTS = sorted((K8S / "manifests").glob("*.yaml"))


def documents(path: Path) -> list[dict[str, Any]]:
    """The non-empty YAML documents of one manifest file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_there_are_manifests_to_check():
    names = {path.name for path in MANIFESTS}
    assert {"oauth2-proxy.yaml", "service-config.yaml", "supplier-pricing-env.yaml"} <= names


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_strictly(path):
    for doc in documents(path):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        assert doc["metadata"]["namespace"] == "dagster", f"{doc['kind']} {doc['metadata']['name']}"


def test_strict_validation_rejects_a_misspelled_field():
    deployment = next(
        d for d in documents(K8S / "manifests" / "oauth2-proxy.yaml") if d["kind"] == "Deployment"
    )
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_ui_is_reachable_only_through_the_proxy(values):
    docs = {d["kind"]: d for d in documents(K8S / "manifests" / "oauth2-proxy.yaml")}
    assert values["ingress"]["enabled"] is False
    assert values["dagsterWebserver"]["service"]["type"] == "ClusterIP"
    backend = docs["Ingress"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == docs["Service"]["metadata"]["name"] == "oauth2-proxy"
    args = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    port = values["dagsterWebserver"]["service"]["port"]
    assert f"--upstream=http://dagster-dagster-webserver.dagster.svc.cluster.local:{port}" in args
    policy = docs["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= values["dagsterWebserver"]["labels"].items()
    allowed = policy["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert allowed.items() <= docs["Deployment"]["spec"]["template"]["metadata"]["labels"].items()
    env = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert all("valueFrom" in e for e in env), "proxy credentials come from the Secret only"
