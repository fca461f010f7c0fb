"""Shared paths and loaders for the offline checks of deploy/k8s."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# The Kubernetes version the plain manifests (and the k8s objects inside the values) are checked against.
KUBERNETES_VERSION = "1.33.0"


def load_yaml(path: Path) -> Any:
    """One YAML document."""
    return yaml.safe_load(path.read_text())


@pytest.fixture
def values() -> dict[str, Any]:
    """deploy/k8s/values.yaml."""
    return load_yaml(K8S / "values.yaml")


@pytest.fixture
def instance_config() -> dict[str, Any]:
    """deploy/k8s/dagster.yaml."""
    return load_yaml(K8S / "dagster.yaml")
