"""deploy/k8s/values.yaml against the Dagster chart's published values schema, and against the rest.

The schema (deploy/k8s/values.schema.json, source and version in deploy/k8s/README.md) refers to the
Kubernetes object schemas by URL; here those resolve to the copies kubernetes-validate ships, so the
check runs offline. The values must also agree with deploy/k8s/dagster.yaml (what the chart renders
from them), with the registry (pools, secrets) and with what the code reads (SERVICE_CONFIG_FILE).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import dagster
import dagster_aws
import dagster_k8s
import jsonschema
import kubernetes_validate
import pytest
from dagster_aws.s3 import S3ComputeLogManager
from dagster_k8s import K8sRunLauncher
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from resources.config import load_registry, load_service_config
from tests.deploy.conftest import K8S, KUBERNETES_VERSION, ROOT, load_yaml

SCHEMA_PATH = K8S / "values.schema.json"
README = K8S / "README.md"


def schema_refs(node: Any) -> set[str]:
    """Every $ref in a schema."""
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(schema_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(schema_refs(v) for v in node))
    return set()


def values_validator() -> jsonschema.Draft202012Validator:
    """A validator for the chart schema whose Kubernetes $refs resolve to kubernetes-validate's copies."""
    schema = json.loads(SCHEMA_PATH.read_text())
    bundled = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    # Not the strict variant: the chart's refs point at the lenient upstream definitions.
    definitions = json.loads((bundled / f"v{KUBERNETES_VERSION}-local" / "_definitions.json").read_text())
    k8s = Resource.from_contents(
        {"$defs": definitions["$defs"], "definitions": definitions["$defs"]},
        default_specification=DRAFT202012,
    )
    remote = {ref.split("#")[0] for ref in schema_refs(schema) if ref.startswith("http")}
    assert remote, "the chart schema is expected to refer to the Kubernetes definitions by URL"
    registry = Registry().with_resources((url, k8s) for url in remote)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def errors(values: dict[str, Any]) -> list[str]:
    """Schema violations of a values document, as '<path>: <message>'."""
    found = values_validator().iter_errors(values)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in found]


def test_values_validate_against_the_chart_schema(values):
    assert errors(values) == []


def _set(values: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    broken = copy.deepcopy(values)
    *parents, leaf = path.split(".")
    node = broken
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[leaf] = value
    return broken


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("runLauncher.type", "K8sRunLaunchr"),  # not a launcher the chart knows
        ("dagsterDaemon.runCoordinator.config.queuedRunCoordinator.maxConcurentRuns", 4),  # typo
        ("concurrency.pools.defaultLimit", "one"),
        ("dagster-user-deployments.deployments.0.port", "3030"),
        ("runLauncher.config.k8sRunLauncher.resources", {"limits": "3Gi"}),  # a Kubernetes type error
        ("computeLogManager.type", "S3"),
    ],
)
def test_the_schema_check_rejects_broken_values(values, path, value):
    assert errors(_set(values, path, value)), f"{path}={value!r} passed the schema"


def test_values_without_a_required_section_are_rejected(values):
    del values["runLauncher"]
    assert any("runLauncher" in e for e in errors(values))


def test_schema_file_is_the_pinned_chart_version():
    text = README.read_text()
    version = re.search(r"chart version: (\S+)", text)
    digest = re.search(r"sha256: ([0-9a-f]{64})", text)
    assert version and digest, "deploy/k8s/README.md must name the schema's chart version and sha256"
    assert version.group(1) == dagster.__version__ == "1.13.27"
    assert hashlib.sha256(SCHEMA_PATH.read_bytes()).hexdigest() == digest.group(1)
    header = (K8S / "values.yaml").read_text().splitlines()[:3]
    assert any(f"--version {dagster.__version__}" in line for line in header)
    # dagster libraries ship as 0.<minor + 16>.<patch> beside dagster 1.<minor>.<patch>.
    _, minor, patch = dagster.__version__.split(".")
    assert dagster_k8s.__version__ == dagster_aws.__version__ == f"0.{int(minor) + 16}.{patch}"


CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def snake(name: str) -> str:
    """loadInclusterConfig -> load_incluster_config."""
    return CAMEL.sub("_", name).lower()


def test_schema_fields_exist_in_the_installed_dagster_k8s_and_dagster_aws():
    # The schema snapshot may be newer than 1.13.27: every launcher and compute-log field it offers
    # must be one the installed libraries accept, or the chart would render config they refuse.
    defs = json.loads(SCHEMA_PATH.read_text())["$defs"]
    launcher_fields = set(K8sRunLauncher.config_type())
    renamed = {"image": "job_image"}
    for name in defs["K8sRunLauncherConfig"]["properties"]:
        assert renamed.get(name, snake(name)) in launcher_fields, f"K8sRunLauncher has no {name}"
    log_fields = set(S3ComputeLogManager.config_type())
    for name in defs["S3ComputeLogManager"]["properties"]:
        assert snake(name) in log_fields, f"S3ComputeLogManager has no {name}"


def test_ui_label_stays_unset(values):
    # The schema snapshot knows a `ui` instance section that dagster 1.13.27 does not: setting it
    # would render config the 1.13.27 instance refuses.
    assert values["ui"] == {"label": None, "intent": None}


# ------------------------------------------------------------------ values <-> rendered dagster.yaml


def test_rendered_run_launcher_matches_the_values(values, instance_config):
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    rendered = instance_config["run_launcher"]
    assert (rendered["module"], rendered["class"]) == ("dagster_k8s", "K8sRunLauncher")
    config = rendered["config"]
    assert config["load_incluster_config"] == launcher["loadInclusterConfig"]
    assert config["image_pull_policy"] == launcher["imagePullPolicy"]
    assert config["service_account_name"] == values["global"]["serviceAccountName"]
    assert config["dagster_home"] == values["global"]["dagsterHome"]
    assert config["postgres_password_secret"] == values["global"]["postgresqlSecretName"]
    assert config["env_config_maps"] == [c["name"] for c in launcher["envConfigMaps"]]
    assert config["env_secrets"] == [s["name"] for s in launcher["envSecrets"]]
    for key in ("volumes", "labels", "resources"):
        assert config[key] == launcher[key], key
    assert config["volume_mounts"] == launcher["volumeMounts"]
    assert config["security_context"] == launcher["securityContext"]
    assert config["fail_pod_on_run_failure"] is launcher["failPodOnRunFailure"]
    assert config["run_k8s_config"]["job_spec_config"] == launcher["runK8sConfig"]["jobSpecConfig"]


def test_rendered_storage_compute_logs_and_python_logs_match_the_values(values, instance_config):
    pg = values["postgresql"]
    for storage in ("run_storage", "event_log_storage", "schedule_storage"):
        db = instance_config[storage]["config"]["postgres_db"]
        assert db["hostname"] == pg["postgresqlHost"]
        assert db["username"] == pg["postgresqlUsername"]
        assert db["db_name"] == pg["postgresqlDatabase"]
        assert db["port"] == pg["service"]["port"]
        assert db["params"] == pg["postgresqlParams"]
        assert db["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    s3 = values["computeLogManager"]["config"]["s3ComputeLogManager"]
    assert instance_config["compute_logs"]["config"] == {snake(k): v for k, v in s3.items()}
    logs = values["pythonLogs"]
    assert instance_config["python_logs"] == {
        "python_log_level": logs["pythonLogLevel"],
        "dagster_handler_config": logs["dagsterHandlerConfig"],
    }
    scheduler = values["scheduler"]["config"]["daemonScheduler"]
    assert instance_config["scheduler"]["config"] == {snake(k): v for k, v in scheduler.items()}


def test_rendered_concurrency_monitoring_and_retries_match_the_values(values, instance_config):
    pools = values["concurrency"]["pools"]
    assert values["concurrency"]["enabled"]
    assert instance_config["concurrency"] == {
        "pools": {"default_limit": pools["defaultLimit"], "granularity": pools["granularity"]},
        "runs": {"max_concurrent_runs": values["concurrency"]["runs"]["maxConcurrentRuns"]},
    }
    # Any queued-run-coordinator value makes the chart render run_coordinator config, which
    # dagster refuses next to `concurrency.runs` (tests/deploy/test_instance_config.py).
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert all(v is None for v in queued.values())
    assert "config" not in instance_config["run_coordinator"]
    extra = values["additionalInstanceConfig"]
    assert instance_config["run_monitoring"] == extra["run_monitoring"]
    assert instance_config["run_retries"] == extra["run_retries"]
    # The chart's own blocks stay off, or the instance would get the sections twice.
    assert not values["dagsterDaemon"]["runMonitoring"]["enabled"]
    assert not values["dagsterDaemon"]["runRetries"]["enabled"]


# ------------------------------------------------------------------ the project's side


def code_pools() -> set[str]:
    """Every concurrency pool an op of either code location uses."""
    from orders_assets.definitions import build_defs as build_orders
    from pricing_assets.definitions import build_defs as build_pricing

    pools = set()
    pricing, orders = build_pricing(), build_orders()
    for defs in (pricing, orders):
        for node in defs.resolve_implicit_global_asset_job_def().nodes:
            if node.definition.pool:
                pools.add(node.definition.pool)
    return pools


def test_pools_are_one_per_supplier_plus_storefront_orders_and_history():
    registry = load_registry()
    expected = {f"supplier_{s.id}" for s in registry.suppliers} | {"storefront", "orders_db", "price_history"}
    assert code_pools() == expected
    comment = (K8S / "values.yaml").read_text()
    for pool in expected:
        assert pool in comment, f"pool {pool} is not listed beside the concurrency values"


def deployments(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The user deployments by name."""
    return {d["name"]: d for d in values["dagster-user-deployments"]["deployments"]}


def test_both_code_locations_are_user_deployments_of_one_image(values):
    found = deployments(values)
    assert {name: d["dagsterApiGrpcArgs"][:4] for name, d in found.items()} == {
        "pricing": ["-m", "pricing_assets.definitions", "-a", "defs"],
        "orders": ["-m", "orders_assets.definitions", "-a", "defs"],
    }
    workspace = load_yaml(ROOT / "workspace.yaml")
    assert {e["python_module"]["module_name"] for e in workspace["load_from"]} == {
        d["dagsterApiGrpcArgs"][1] for d in found.values()
    }
    assert len({(d["image"]["repository"], d["image"]["tag"]) for d in found.values()}) == 1
    for d in found.values():
        assert d["podSecurityContext"]["runAsNonRoot"] is True
        assert d["includeConfigInLaunchedRuns"] == {"enabled": False}  # runs are sized by the launcher


def mounts_of(container: dict[str, Any], volumes: list[dict[str, Any]]) -> dict[str, str]:
    """mountPath -> ConfigMap name for every ConfigMap volume mounted (whole directory) in a container."""
    by_name = {v["name"]: v["configMap"]["name"] for v in volumes if "configMap" in v}
    assert all("subPath" not in m for m in container), "a subPath mount is never updated in place"
    return {m["mountPath"]: by_name[m["name"]] for m in container if m["name"] in by_name}


def test_service_config_is_a_mounted_file_every_pod_reads(values, tmp_path):
    env = load_yaml(K8S / "manifests" / "supplier-pricing-env.yaml")["data"]
    assert "SERVICE_CONFIG" not in env  # the variable would take precedence over the file
    file = Path(env["SERVICE_CONFIG_FILE"])
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    pods = [(d["volumeMounts"], d["volumes"]) for d in deployments(values).values()]
    pods.append((launcher["volumeMounts"], launcher["volumes"]))
    for mounts, volumes in pods:
        assert mounts_of(mounts, volumes)[str(file.parent)] == "service-config"
    configmap = load_yaml(K8S / "manifests" / "service-config.yaml")
    assert configmap["metadata"]["name"] == "service-config"
    # The shipped ConfigMap is a valid SERVICE_CONFIG, read by the project's own loader.
    local = tmp_path / file.name
    local.write_text(configmap["data"][file.name])
    config = load_service_config({"SERVICE_CONFIG_FILE": str(local)})
    assert config.dry_run is True
    assert "SERVICE_CONFIG" not in json.dumps(values)


def test_registry_is_mounted_where_supplier_registry_points(values):
    env = load_yaml(K8S / "manifests" / "supplier-pricing-env.yaml")["data"]
    registry_dir = str(Path(env["SUPPLIER_REGISTRY"]).parent)
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    for mounts, volumes in [(d["volumeMounts"], d["volumes"]) for d in deployments(values).values()] + [
        (launcher["volumeMounts"], launcher["volumes"])
    ]:
        assert mounts_of(mounts, volumes)[registry_dir] == "supplier-registry"


def documented_secret_keys() -> set[str]:
    """The keys of the supplier-pricing-secrets Secret as docs/deploy.md creates it."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    command = re.search(
        r"kubectl -n dagster create secret generic supplier-pricing-secrets(.*?)\n\n", text, re.S
    )
    assert command, "docs/deploy.md must show how to create supplier-pricing-secrets"
    return set(re.findall(r"--from-literal=([A-Z0-9_]+)=", command.group(1)))


def test_every_secret_the_code_reads_comes_from_the_kubernetes_secret(values):
    registry = load_registry()
    needed = {"STOREFRONT_WEBHOOK_SECRET", "SHOPIFY_ACCESS_TOKEN", "ORDERS_DB_URL", "ALERT_WEBHOOK_URL"}
    env = load_yaml(K8S / "manifests" / "supplier-pricing-env.yaml")["data"]
    if urlparse(env["WAREHOUSE_DIR"]).scheme != "file" and "://" in env["WAREHOUSE_DIR"]:
        # On object storage the push lock is a PostgreSQL advisory lock: without its URL every push
        # is refused (resources/push_lock.py), so an operator following docs/deploy.md never pushes.
        needed.add("PUSH_LOCK_URL")
    for supplier in registry.suppliers:
        needed.update(supplier.auth.secret_env_names())
        if supplier.cdn is not None:
            needed.add(supplier.cdn.passphrase_env)
    assert needed <= documented_secret_keys()
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    for holder in [*deployments(values).values(), launcher]:
        assert {"name": "supplier-pricing-secrets"} in holder["envSecrets"]
    # Nothing secret is written into the values themselves.
    text = (K8S / "values.yaml").read_text()
    for name in needed:
        assert f"{name}:" not in text and f"name: {name}" not in text


def test_compute_logs_go_to_the_warehouse_bucket(values):
    env = load_yaml(K8S / "manifests" / "supplier-pricing-env.yaml")["data"]
    warehouse = urlparse(env["WAREHOUSE_DIR"])
    assert warehouse.scheme == "s3"
    assert values["computeLogManager"]["type"] == "S3ComputeLogManager"
    assert values["computeLogManager"]["config"]["s3ComputeLogManager"]["bucket"] == warehouse.netloc


def test_every_dagster_process_logs_json_lines(values):
    assert values["dagsterWebserver"]["logFormat"] == "json"
    assert values["dagsterDaemon"]["logFormat"] == "json"
    for d in deployments(values).values():
        args = d["dagsterApiGrpcArgs"]
        assert args[args.index("--log-format") + 1] == "json"
    handlers = values["pythonLogs"]["dagsterHandlerConfig"]["handlers"]
    assert {h["destination"] for h in handlers.values()} == {"stdout"}


def test_resources_are_set_for_every_long_running_pod_and_every_run(values):
    holders = {
        "webserver": values["dagsterWebserver"],
        "daemon": values["dagsterDaemon"],
        "run pods": values["runLauncher"]["config"]["k8sRunLauncher"],
        **deployments(values),
    }
    for name, holder in holders.items():
        resources = holder["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), name
        assert "memory" in resources["limits"], name
