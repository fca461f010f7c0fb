"""Config loaders: the supplier registry (YAML) and SERVICE_CONFIG (env var or secret file)."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from dagster import AssetSpec, Failure, materialize

from pricing_assets.definitions import build_pricing_assets
from resources.config import ConfigError, ServiceConfig, expand_env, load_registry, load_service_config
from resources.service_config import ServiceConfigResource
from resources.suppliers import SupplierClients
from resources.warehouse import Warehouse, WarehouseIOManager

ENTRY = """
  - id: {id}
    kind: rest_batch
    base_url: http://127.0.0.1:1/{id}
    auth: {{kind: api_key, key_env: {env}}}
"""


def write_registry(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "suppliers.yaml"
    path.write_text(body)
    return path


def test_shipped_registry_loads_with_tie_break_order():
    registry = load_registry()
    assert registry.order == ["alpha", "beta", "gamma", "delta"]
    assert registry.fx_rates()["EUR"] == Decimal(1)
    assert {entry.kind for entry in registry.suppliers} >= {
        "rest_batch",
        "rest_paginated",
        "per_sku_post",
        "cdn_file",
    }


def test_duplicate_supplier_id_names_id_and_file(tmp_path):
    path = write_registry(tmp_path, "suppliers:" + ENTRY.format(id="alpha", env="A") * 2)
    with pytest.raises(ConfigError) as err:
        load_registry(path)
    assert "duplicate supplier id 'alpha'" in str(err.value)
    assert str(path) in str(err.value)


def test_unknown_key_is_named(tmp_path):
    path = write_registry(tmp_path, "suppliers:" + ENTRY.format(id="alpha", env="A") + "    colour: red\n")
    with pytest.raises(ConfigError, match=r"key 'suppliers\.0\.colour'"):
        load_registry(path)


def test_wrong_type_is_named(tmp_path):
    body = "catalog_batches: many\nsuppliers:" + ENTRY.format(id="alpha", env="A")
    with pytest.raises(ConfigError, match=r"key 'catalog_batches'"):
        load_registry(write_registry(tmp_path, body))


def test_auth_kind_without_its_secret_env_is_an_error(tmp_path):
    body = (
        "suppliers:\n  - id: alpha\n    kind: rest_batch\n    base_url: http://x\n    auth: {kind: basic}\n"
    )
    with pytest.raises(ConfigError, match="needs username_env, password_env"):
        load_registry(write_registry(tmp_path, body))


def test_missing_secret_env_var_is_named_without_value(tmp_path):
    registry = load_registry(
        write_registry(tmp_path, "suppliers:" + ENTRY.format(id="alpha", env="ALPHA_KEY"))
    )
    with pytest.raises(ConfigError) as err:
        registry.check_secrets({})
    assert "ALPHA_KEY (supplier 'alpha')" in str(err.value)
    registry.check_secrets({"ALPHA_KEY": "s3cret"})  # set: no error


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_registry(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_registry(write_registry(tmp_path, "suppliers: [\n"))


def test_base_url_env_expansion():
    assert expand_env("${X:-http://d}/a", {}) == "http://d/a"
    assert expand_env("${X:-http://d}/a", {"X": "http://e"}) == "http://e/a"
    with pytest.raises(ConfigError, match="environment variable Y is not set"):
        expand_env("${Y}/a", {})


def test_service_config_defaults_without_env():
    config = load_service_config({})
    assert config.dry_run is False
    assert config.staleness_ttl == timedelta(minutes=30)
    assert config.guard.max_change_pct == Decimal(30)
    assert config.enabled("alpha")


def test_service_config_from_env_var():
    raw = {"dry_run": True, "suppliers": {"beta": {"enabled": False}}, "staleness_ttl": 600}
    config = load_service_config({"SERVICE_CONFIG": json.dumps(raw)})
    assert config.dry_run and not config.enabled("beta") and config.enabled("alpha")
    assert config.staleness_ttl == timedelta(minutes=10)


def test_service_config_from_secret_file(tmp_path):
    path = tmp_path / "service_config.json"
    path.write_text(json.dumps({"markup": {"percent": "12.5"}}))
    config = load_service_config({"SERVICE_CONFIG_FILE": str(path)})
    assert config.markup.percent == Decimal("12.5")
    assert str(path) in config.source


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"dryrun": True}, "key 'dryrun'"),
        ({"guard": {"max_change_pct": "lots"}}, "key 'guard.max_change_pct'"),
        ({"suppliers": {"alpha": {"enabled": "maybe"}}}, "key 'suppliers.alpha.enabled'"),
    ],
)
def test_service_config_bad_input_names_the_key(raw, named):
    with pytest.raises(ConfigError) as err:
        load_service_config({"SERVICE_CONFIG": json.dumps(raw)})
    assert named in str(err.value)
    assert "SERVICE_CONFIG (environment variable)" in str(err.value)


def test_service_config_unreadable_and_invalid_json(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_service_config({"SERVICE_CONFIG_FILE": str(tmp_path / "missing.json")})
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_service_config({"SERVICE_CONFIG": "{nope"})


def test_unknown_supplier_switch_is_named():
    config = load_service_config({"SERVICE_CONFIG": json.dumps({"suppliers": {"omega": {"enabled": False}}})})
    with pytest.raises(ConfigError, match=r"key 'suppliers\.omega': unknown supplier"):
        config.check_suppliers(["alpha", "beta"])


def test_runtime_config_rereads_env_each_load(monkeypatch):
    resource = ServiceConfigResource()
    monkeypatch.setenv("SERVICE_CONFIG", json.dumps({"dry_run": False}))
    assert resource.load().dry_run is False
    monkeypatch.setenv("SERVICE_CONFIG", json.dumps({"dry_run": True}))
    assert resource.load().dry_run is True


# ---------------------------------------------------------------- hardening (issue 13)


def load_json(raw: str) -> ServiceConfig:
    return load_service_config({"SERVICE_CONFIG": raw})


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"push_batch_size": True}, "key 'push_batch_size'"),  # was loaded as 1
        ({"push_batch_size": "50"}, "key 'push_batch_size'"),  # was loaded as 50
        ({"push_batch_size": 50.0}, "key 'push_batch_size'"),
        ({"sweep_minutes": False}, "key 'sweep_minutes'"),
        ({"dry_run": "yes"}, "key 'dry_run'"),
        ({"dry_run": 1}, "key 'dry_run'"),
        ({"suppliers": {"alpha": {"enabled": 0}}}, "key 'suppliers.alpha.enabled'"),
        ({"staleness_ttl": True}, "key 'staleness_ttl'"),
        ({"staleness_ttl": "1800"}, "key 'staleness_ttl'"),
        ({"guard": {"max_change_pct": True}}, "key 'guard.max_change_pct'"),
        ({"markup": {"percent": False}}, "key 'markup.percent'"),
        ({"markup": {"categories": {"games": True}}}, "key 'markup.categories.games'"),
        ({"quarantine_max_share": "lots"}, "key 'quarantine_max_share'"),
    ],
)
def test_wrong_types_are_rejected_not_coerced(raw, named):
    with pytest.raises(ConfigError) as err:
        load_json(json.dumps(raw))
    assert named in str(err.value)
    assert str(err.value).startswith("SERVICE_CONFIG (environment variable): ")


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"staleness_ttl": 0}, "key 'staleness_ttl': must be more than 0 seconds"),
        ({"staleness_ttl": -60}, "key 'staleness_ttl': must be more than 0 seconds"),
        ({"staleness_ttl": "PT0S"}, "key 'staleness_ttl': must be more than 0 seconds"),
        ({"push_batch_size": 0}, "key 'push_batch_size'"),
        ({"sweep_batches_per_run": 0}, "key 'sweep_batches_per_run'"),
        ({"quarantine_max_share": "1.5"}, "key 'quarantine_max_share'"),
        ({"quarantine_max_share": -0.1}, "key 'quarantine_max_share'"),
        ({"guard": {"max_batch_change_share": "0"}}, "key 'guard.max_batch_change_share'"),
        ({"guard": {"max_batch_change_share": 2}}, "key 'guard.max_batch_change_share'"),
        ({"guard": {"max_batch_unavailable_share": "1.01"}}, "key 'guard.max_batch_unavailable_share'"),
        ({"guard": {"max_change_pct": 0}}, "key 'guard.max_change_pct'"),
        ({"markup": {"percent": "-100.01"}}, "key 'markup.percent'"),
        ({"markup": {"skus": {"SKU-1": "5000"}}}, "key 'markup.skus.SKU-1'"),
        ({"markup": {"min_margin": "-0.01"}}, "key 'markup.min_margin'"),
        ({"markup": {"rounding": {"mode": "step", "step": "0"}}}, "key 'markup.rounding.step'"),
        ({"markup": {"percent": "NaN"}}, "key 'markup.percent'"),
    ],
)
def test_out_of_range_values_are_rejected(raw, named):
    with pytest.raises(ConfigError) as err:
        load_json(json.dumps(raw))
    assert named in str(err.value)


def test_accepted_forms_stay_exact():
    config = load_json(
        '{"markup": {"percent": 12.5, "min_margin": "0.05"}, "guard": {"max_batch_change_share": 1},'
        ' "staleness_ttl": "PT45M", "quarantine_max_share": 0.1}'
    )
    assert config.markup.percent == Decimal("12.5") and isinstance(config.markup.percent, Decimal)
    assert config.guard.max_batch_change_share == Decimal(1)
    assert config.quarantine_max_share == Decimal("0.1")  # exact, not 0.1000000000000000055...
    assert config.staleness_ttl == timedelta(minutes=45)
    assert load_json('{"staleness_ttl": 90}').staleness_ttl == timedelta(seconds=90)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('{"push_batch_size": 100, "push_batch_size": 1}', "key 'push_batch_size': given more than once"),
        (
            '{"guard": {"max_change_pct": "30", "max_change_pct": "300"}}',
            "key 'guard.max_change_pct': given more than once",
        ),
        (
            '{"suppliers": {"beta": {"enabled": false}, "beta": {"enabled": true}}}',
            "key 'suppliers.beta': given more than once",
        ),
    ],
)
def test_duplicate_json_keys_are_rejected_with_their_path(text, named, tmp_path):
    with pytest.raises(ConfigError) as err:
        load_json(text)
    assert named in str(err.value)
    path = tmp_path / "service_config.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as from_file:
        load_service_config({"SERVICE_CONFIG_FILE": str(path)})
    assert f"SERVICE_CONFIG_FILE {path}: {named}" in str(from_file.value)


def test_registry_rejects_duplicate_keys_and_coerced_types(tmp_path):
    duplicate = "catalog_batches: 16\ncatalog_batches: 4\nsuppliers:" + ENTRY.format(id="alpha", env="A")
    path = write_registry(tmp_path, duplicate)
    with pytest.raises(ConfigError) as err:
        load_registry(path)
    assert str(path) in str(err.value) and "'catalog_batches' given more than once (line 2)" in str(err.value)

    quoted = "catalog_batches: '16'\nsuppliers:" + ENTRY.format(id="alpha", env="A")
    with pytest.raises(ConfigError, match=r"key 'catalog_batches'"):
        load_registry(write_registry(tmp_path, quoted))
    burst = "suppliers:" + ENTRY.format(id="alpha", env="A") + "    rate_limit: {burst: true}\n"
    with pytest.raises(ConfigError, match=r"key 'suppliers\.0\.rate_limit\.burst'"):
        load_registry(write_registry(tmp_path, burst))
    float_fx = "fx: {USD: 0.92}\nsuppliers:" + ENTRY.format(id="alpha", env="A")
    with pytest.raises(ConfigError, match=r"key 'fx\.USD': expected a decimal as a string"):
        load_registry(write_registry(tmp_path, float_fx))


def test_unknown_supplier_is_rejected_when_the_config_is_read(tmp_path):
    registry = write_registry(tmp_path, "suppliers:" + ENTRY.format(id="alpha", env="A"))
    raw = json.dumps({"suppliers": {"alpha": {"enabled": True}, "omega": {"enabled": False}}})
    named = r"key 'suppliers\.omega': unknown supplier \(registry has: alpha\)"
    with pytest.raises(ConfigError, match=named):
        load_service_config({"SERVICE_CONFIG": raw}, known_suppliers=["alpha"])
    with pytest.raises(Failure) as failure:
        ServiceConfigResource(override_json=raw, registry_path=str(registry)).load()
    assert failure.value.description == (
        "SERVICE_CONFIG (environment variable): key 'suppliers.omega': unknown supplier (registry has: alpha)"
    )
    # The same switch is fine against a registry that has the supplier.
    other = write_registry(tmp_path, "suppliers:" + ENTRY.format(id="omega", env="O"))
    ok = json.dumps({"suppliers": {"omega": {"enabled": False}}})
    assert not ServiceConfigResource(override_json=ok, registry_path=str(other)).load().enabled("omega")


def test_a_config_error_fails_the_supplier_step_before_any_fetch_with_file_and_key_first(
    sandbox, tmp_path, monkeypatch
):
    """Through materialize: the step's failure says file and key on its first line; alpha got no request."""
    registry = load_registry()
    assets = {key.to_user_string(): a for a in build_pricing_assets(registry) for key in a.keys}
    warehouse = Warehouse(base_dir=str(tmp_path / "warehouse"))
    warehouse.write(
        pl.DataFrame({"sku": ["SKU-000001"], "active": [True], "batch": ["batch-000"]}), ["catalog"]
    )
    config_file = tmp_path / "service_config.json"
    switches = {"alpha": {"enabled": True}, "omgea": {"enabled": False}}
    config_file.write_text(json.dumps({"suppliers": switches}))
    monkeypatch.delenv("SERVICE_CONFIG", raising=False)
    monkeypatch.setenv("SERVICE_CONFIG_FILE", str(config_file))
    result = materialize(
        [AssetSpec("catalog"), assets["supplier_offers/alpha"]],
        partition_key="batch-000",
        resources={
            "io_manager": WarehouseIOManager(base_dir=str(warehouse.root())),
            "warehouse": warehouse,
            "service_config": ServiceConfigResource(),
            "suppliers": SupplierClients(),
        },
        raise_on_error=False,
    )
    assert not result.success
    failure = next(event for event in result.all_events if event.is_step_failure)
    expected = f"SERVICE_CONFIG_FILE {config_file}: key 'suppliers.omgea': unknown supplier"
    assert failure.step_failure_data.user_failure_data.description.startswith(expected)
    # What the UI shows first for the failed step: the Failure's description, not "Error occurred...".
    assert failure.step_failure_data.error.message.splitlines()[0].endswith(
        f"Failure: {failure.step_failure_data.user_failure_data.description}"
    )
    assert sandbox.counters().get("alpha.requests", 0) == 0
