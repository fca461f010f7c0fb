"""Config loaders: the supplier registry (YAML) and SERVICE_CONFIG (env var or secret file)."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from resources.config import ConfigError, expand_env, load_registry, load_service_config
from resources.runtime import RuntimeConfig

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
    resource = RuntimeConfig()
    monkeypatch.setenv("SERVICE_CONFIG", json.dumps({"dry_run": False}))
    assert resource.load().dry_run is False
    monkeypatch.setenv("SERVICE_CONFIG", json.dumps({"dry_run": True}))
    assert resource.load().dry_run is True
