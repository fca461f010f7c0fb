"""Shared paths and loaders for the offline checks of deploy/k8s."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
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


@pytest.fixture
def pg_database(pg_url: str) -> Iterator[sqlalchemy.engine.URL]:
    """A fresh PostgreSQL database for one instance, dropped afterwards."""
    name = f"dagster_k8s_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sqlalchemy.engine.make_url(pg_url).set(database=name)
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
