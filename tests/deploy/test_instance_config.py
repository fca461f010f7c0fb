"""deploy/k8s/dagster.yaml: loads as a real DagsterInstance with dagster-k8s and dagster-aws, offline.

No cluster and no bucket are needed. Two things are swapped for loading here, nothing else: the
PostgreSQL connection (a fresh database on the machine's PostgreSQL instead of the production host),
and `load_incluster_config: true`, which only works inside a pod, for a kubeconfig file naming an
unreachable API server (the launcher reads it but connects only when it launches a run).
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
import yaml
from dagster import DagsterInstance, QueuedRunCoordinator
from dagster_aws.s3 import S3ComputeLogManager
from dagster_k8s import K8sRunLauncher

from resources.json_logs import JsonLinesHandler
from tests.deploy.conftest import load_yaml

OFFLINE_KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "offline", "cluster": {"server": "https://127.0.0.1:9"}}],
    "users": [{"name": "offline", "user": {"token": "offline"}}],
    "contexts": [{"name": "offline", "context": {"cluster": "offline", "user": "offline"}}],
    "current-context": "offline",
}
STORAGES = ("run_storage", "event_log_storage", "schedule_storage")


def offline_copy(config: dict[str, Any], home: Path, database: sqlalchemy.engine.URL) -> dict[str, Any]:
    """The instance config with only the database connection and the in-cluster flag replaced."""
    config = copy.deepcopy(config)
    for storage in STORAGES:
        config[storage]["config"]["postgres_db"] = {
            "username": database.username or "postgres",
            "password": {"env": "DAGSTER_PG_PASSWORD"},
            "hostname": database.host or "127.0.0.1",
            "db_name": database.database,
            "port": database.port or 5432,
        }
    kubeconfig = home / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(OFFLINE_KUBECONFIG))
    launcher = config["run_launcher"]["config"]
    assert launcher.pop("load_incluster_config") is True
    launcher.update(load_incluster_config=False, kubeconfig_file=str(kubeconfig))
    return config


@pytest.fixture
def k8s_instance(instance_config, pg_database, tmp_path, monkeypatch):
    """A DagsterInstance built from deploy/k8s/dagster.yaml (offline copy) in a temp DAGSTER_HOME."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(offline_copy(instance_config, home, pg_database)))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", pg_database.password or "unused")
    instance = DagsterInstance.from_config(str(home))
    try:
        yield instance
    finally:
        instance.dispose()


@pytest.mark.postgres
def test_k8s_instance_loads_its_launcher_coordinator_and_compute_logs(k8s_instance):
    launcher = k8s_instance.run_launcher
    assert isinstance(launcher, K8sRunLauncher)
    assert launcher.job_namespace == "dagster"
    assert launcher.env_secrets == ["supplier-pricing-secrets"]
    assert launcher.env_config_maps == ["supplier-pricing-env"]
    assert launcher.resources["limits"]["memory"] == "2Gi"
    assert {m["mountPath"] for m in launcher.volume_mounts} == {
        "/opt/dagster/config/service",
        "/opt/dagster/config/registry",
    }
    assert isinstance(k8s_instance.run_coordinator, QueuedRunCoordinator)
    logs = k8s_instance.compute_log_manager
    assert isinstance(logs, S3ComputeLogManager)
    assert logs.inst_data.config_dict["bucket"] == "supplier-pricing"


@pytest.mark.postgres
def test_k8s_instance_monitors_and_retries_runs_and_limits_pools(k8s_instance):
    assert k8s_instance.run_monitoring_enabled
    assert k8s_instance.run_monitoring_start_timeout_seconds == 300
    assert k8s_instance.run_monitoring_cancel_timeout_seconds == 180
    assert k8s_instance.run_monitoring_max_runtime_seconds == 1800
    assert k8s_instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 300
    assert k8s_instance.run_retries_enabled
    assert k8s_instance.run_retries_max_retries == 2
    assert k8s_instance.run_retries_retry_on_asset_or_op_failure is False
    concurrency = k8s_instance.get_concurrency_config()
    assert concurrency.pool_config.default_pool_limit == 1
    assert concurrency.pool_config.pool_granularity.value == "op"
    assert concurrency.run_queue_config.max_concurrent_runs == 8


@pytest.mark.postgres
def test_k8s_instance_refuses_a_run_limit_in_two_places(instance_config, pg_database, tmp_path, monkeypatch):
    # What the chart renders if any queuedRunCoordinator value is set next to `concurrency`
    # (values.yaml keeps them all empty for this reason): the instance must not load.
    config = offline_copy(instance_config, tmp_path, pg_database)
    config["run_coordinator"]["config"] = {"max_concurrent_runs": -1}
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", pg_database.password or "unused")
    with pytest.raises(Exception, match="max_concurrent_runs"):
        DagsterInstance.from_config(str(home))


def test_run_launcher_needs_the_cluster_only_for_its_credentials(instance_config):
    # The shipped config loads its credentials in-cluster; outside a pod that is the only failure.
    config = instance_config["run_launcher"]["config"]
    with pytest.raises(Exception, match=r"(?i)service host|incluster|KUBERNETES_SERVICE"):
        K8sRunLauncher(**config)


def test_run_launcher_config_is_accepted_by_dagster_k8s(instance_config, tmp_path):
    config = offline_copy(instance_config, tmp_path, sqlalchemy.engine.make_url("postgresql://x@h/db"))
    launcher = K8sRunLauncher(**config["run_launcher"]["config"])
    assert launcher.fail_pod_on_run_failure
    assert launcher.security_context["runAsNonRoot"] is True
    assert launcher.run_k8s_config["job_spec_config"] == {"ttlSecondsAfterFinished": 3600}


JSON_FORMATTER = "resources.json_logs"


@pytest.mark.postgres
def test_run_logs_go_to_stdout_as_json_lines(k8s_instance, capsys):
    formatter = load_yaml(Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "dagster.yaml")
    factory = formatter["python_logs"]["dagster_handler_config"]["formatters"]["json_lines"]["()"]
    assert factory.rsplit(".", 1)[0] == JSON_FORMATTER
    handlers = k8s_instance.get_handlers()
    stdout = [h for h in handlers if isinstance(h, JsonLinesHandler) and h.destination == "stdout"]
    assert stdout, "no stdout handler configured"
    record = logging.LogRecord("dagster", logging.INFO, __file__, 1, "hello", None, None)
    stdout[0].handle(record)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    event = json.loads(line)  # one JSON object per line
    assert isinstance(event, dict)
    assert "hello" in event.values()
