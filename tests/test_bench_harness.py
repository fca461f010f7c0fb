"""bench/_harness.py's deployment_env: the environment the benchmarks give the processes of a deployment."""

from __future__ import annotations

import json
from pathlib import Path

from bench._harness import NO_STOREFRONT, deployment_env


def test_the_deployment_settings_win_over_the_callers_and_scrubbed_names_are_gone() -> None:
    environ = {"PATH": "/bin", "SERVICE_CONFIG": "{}", "WAREHOUSE_DIR": "elsewhere", "DAGSTER_PG_URL": "pg"}
    env = deployment_env(
        home=Path("home"),
        warehouse=Path("warehouse"),
        registry=Path("registry.yaml"),
        service_config={"staleness_ttl": "PT6H"},
        environ=environ,
        scrubbed=("DAGSTER_PG_URL",),
    )
    assert env == {
        "PATH": "/bin",
        "DAGSTER_HOME": "home",
        "WAREHOUSE_DIR": "warehouse",
        "SUPPLIER_REGISTRY": "registry.yaml",
        "SERVICE_CONFIG": json.dumps({"staleness_ttl": "PT6H"}),
        "STOREFRONT_URL": NO_STOREFRONT,
        "STOREFRONT_WEBHOOK_SECRET": "unused",
        "PYTHONWARNINGS": "ignore",
    }
    assert environ["WAREHOUSE_DIR"] == "elsewhere"  # the caller's mapping is not changed


def test_without_a_home_dagster_home_is_left_as_the_caller_had_it(monkeypatch) -> None:
    monkeypatch.setenv("DAGSTER_HOME", "the-callers")
    env = deployment_env(
        home=None,
        warehouse="s3://bucket/warehouse",
        registry=Path("registry.yaml"),
        service_config={},
        storefront_url="http://127.0.0.1:1/sf",
        storefront_secret="secret",
    )
    assert env["DAGSTER_HOME"] == "the-callers"
    assert (env["WAREHOUSE_DIR"], env["STOREFRONT_URL"], env["STOREFRONT_WEBHOOK_SECRET"]) == (
        "s3://bucket/warehouse",
        "http://127.0.0.1:1/sf",
        "secret",
    )
    assert "DAGSTER_HOME" not in deployment_env(
        home=None, warehouse="w", registry=Path("r"), service_config={}, scrubbed=("DAGSTER_HOME",)
    )
