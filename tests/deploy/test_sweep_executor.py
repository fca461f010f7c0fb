"""deploy/k8s/sweep-k8s-executor.yaml: per-step pods and resources for the sweep on the k8s_job_executor.

The run config is validated against the real sweep job built with SWEEP_EXECUTOR=k8s (dagster-k8s's
executor in place of the in-process one), and every step it names must be a step of that job (so a
renamed asset fails here).
"""

from __future__ import annotations

import pytest
from dagster import Definitions, validate_run_config

from pricing_assets.definitions import build_definitions_without_resources, default_resources
from resources.config import load_registry
from tests.deploy.conftest import K8S, load_yaml

RUN_CONFIG = K8S / "sweep-k8s-executor.yaml"


def sweep_job(executor: str, monkeypatch: pytest.MonkeyPatch):
    """price_sweep_job as the location builds it with SWEEP_EXECUTOR=executor."""
    monkeypatch.setenv("SWEEP_EXECUTOR", executor)
    registry = load_registry()
    deployed = build_definitions_without_resources(registry)
    merged = Definitions.merge(deployed, Definitions(resources=default_resources(registry.source)))
    return merged.resolve_job_def("price_sweep_job")


def test_sweep_run_config_is_valid_for_the_k8s_job_executor(monkeypatch):
    deployed = sweep_job("in_process", monkeypatch)
    on_k8s = sweep_job("k8s", monkeypatch)
    assert on_k8s.executor_def.name == "k8s"
    assert {n.name for n in on_k8s.nodes} == {n.name for n in deployed.nodes}  # the same steps
    config = load_yaml(RUN_CONFIG)
    result = validate_run_config(on_k8s, config)
    assert result  # raises DagsterInvalidConfigError otherwise
    steps = config["execution"]["config"]["per_step_k8s_config"]
    assert set(steps) <= {n.name for n in deployed.nodes}, "per_step_k8s_config names a step the sweep lacks"


def test_every_step_has_requests_and_a_memory_limit():
    execution = load_yaml(RUN_CONFIG)["execution"]["config"]
    configs = [execution["step_k8s_config"], *execution["per_step_k8s_config"].values()]
    for step in configs:
        resources = step["container_config"]["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"])
        assert "memory" in resources["limits"]
