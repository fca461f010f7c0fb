"""SWEEP_EXECUTOR and deploy/celery/celery.yaml, offline: the sweep jobs get the executor the variable
names, and the workers' config file says what the executor says (a worker on another broker would
never see a step). The distributed run itself: tests/integration/test_distributed_sweep.py."""

from __future__ import annotations

import pytest
from dagster import Definitions, in_process_executor, validate_run_config
from dagster_celery.cli import get_validated_config

from pricing_assets.definitions import build_definitions_without_resources, default_resources
from pricing_assets.sweep_executor import celery_executor_config, sweep_executor
from resources.config import ConfigError, load_registry
from tests.conftest import SANDBOX_ENV
from tests.deploy.conftest import ROOT, load_yaml

CELERY_YAML = ROOT / "deploy" / "celery" / "celery.yaml"
BROKER = "pyamqp://user:secret@rabbitmq:5672//"


def test_the_default_is_the_in_process_executor():
    assert sweep_executor({}) is in_process_executor
    assert sweep_executor({"SWEEP_EXECUTOR": "in_process"}) is in_process_executor


def test_celery_without_a_broker_and_an_unknown_executor_are_configuration_errors():
    with pytest.raises(ConfigError, match="CELERY_BROKER_URL"):
        sweep_executor({"SWEEP_EXECUTOR": "celery"})
    with pytest.raises(ConfigError, match="'in_process', 'celery' or 'k8s'"):
        sweep_executor({"SWEEP_EXECUTOR": "multiprocess"})


def test_the_sweep_jobs_run_on_celery_and_send_to_the_queue_the_environment_names(monkeypatch):
    monkeypatch.setenv("SWEEP_EXECUTOR", "celery")
    monkeypatch.setenv("CELERY_BROKER_URL", BROKER)
    # The cycle job's push resource resolves its URL and secret when the run config is validated.
    for name, value in {**SANDBOX_ENV, "STOREFRONT_URL": "http://127.0.0.1:9/storefront"}.items():
        monkeypatch.setenv(name, value)
    registry = load_registry()
    defs = Definitions.merge(
        build_definitions_without_resources(registry),
        Definitions(resources=default_resources(registry.source)),
    )
    for name in ("price_sweep_job", "price_cycle_job"):
        job = defs.resolve_job_def(name)
        assert job.executor_def.name == "celery"
        assert validate_run_config(job, {})  # nothing to add at launch: the sensor's runs work as they are
    queues = [
        celery_executor_config({"CELERY_BROKER_URL": BROKER, **extra})["config_source"]["task_default_queue"]
        for extra in ({}, {"CELERY_QUEUE": "pricing"})
    ]
    assert queues == ["dagster", "pricing"]
    assert defs.resolve_job_def("debug_sku").executor_def is in_process_executor  # only the sweeps move


def test_the_workers_config_matches_the_executor(monkeypatch):
    """`dagster-celery worker start -y deploy/celery/celery.yaml` reads it the way this does."""
    monkeypatch.setenv("CELERY_BROKER_URL", BROKER)
    config = load_yaml(CELERY_YAML)["execution"]["config"]
    executor = celery_executor_config({"CELERY_BROKER_URL": BROKER})
    # The queue is the worker's -q, not part of the file; everything else is the executor's.
    assert config == {key: value for key, value in executor.items() if key != "config_source"}
    validated = get_validated_config(str(CELERY_YAML))
    assert validated["broker"] == BROKER
    assert validated["backend"] == "rpc://"
