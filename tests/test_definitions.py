"""Both code locations load, validate, and expose the contract asset keys (docs/architecture.md §3)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dagster import AssetKey

ROOT = Path(__file__).resolve().parent.parent


def python(code: str, warnings: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`code` run by a fresh interpreter at the repository root with `-W warnings` (env: inherited)."""
    return subprocess.run(
        [sys.executable, "-W", warnings, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def test_pricing_location_has_contract_assets():
    from pricing_assets.definitions import build_defs

    defs = build_defs()
    keys = {spec.key for spec in defs.resolve_all_asset_specs()}
    expected = {
        AssetKey("catalog"),
        AssetKey("best_offers"),
        AssetKey("storefront_prices"),
        AssetKey("storefront_sync"),
        *(AssetKey(["supplier_offers", s]) for s in ("alpha", "beta", "gamma", "delta")),
        AssetKey(["supplier_files", "delta"]),
        # The quarantine tables: second outputs of the supplier steps (issue 14).
        *(AssetKey(["supplier_quarantine", s]) for s in ("alpha", "beta", "gamma")),
        AssetKey(["supplier_files_quarantine", "delta"]),
    }
    assert expected <= keys
    batch_keys = defs.resolve_assets_def("best_offers").partitions_def.get_partition_keys()
    assert batch_keys[0] == "batch-000" and len(batch_keys) == 16


def test_orders_location_has_contract_assets():
    from orders_assets.definitions import build_defs

    defs = build_defs()
    keys = {spec.key for spec in defs.resolve_all_asset_specs()}
    assert {
        AssetKey(k) for k in ("orders", "order_rejects", "order_allocations", "sales_report", "sales_summary")
    } <= keys


def test_package_entry_points_expose_defs():
    from dagster import Definitions

    import orders_assets
    import pricing_assets

    assert isinstance(pricing_assets.defs, Definitions) and isinstance(orders_assets.defs, Definitions)


def test_dagster_definitions_validate_workspace(tmp_path):
    import os
    import shutil

    shutil.copyfile(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    dagster = Path(sys.executable).parent / "dagster"
    proc = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_both_code_locations_load_without_a_deprecation_warning():
    """Dagster's deprecated API (e.g. `define_asset_job(partitions_def=...)`) fails this load."""
    code = "import pricing_assets.definitions as p, orders_assets.definitions as o; p.defs(); o.defs()"
    result = python(code, "error::DeprecationWarning")
    assert result.returncode == 0, result.stderr[-2000:]


def test_importing_the_locations_reads_no_registry(tmp_path):
    """Importing either definitions module does no I/O; building the pricing location reads the registry."""
    import os

    missing = tmp_path / "absent.yaml"
    code = (
        "import gc, pricing_assets.definitions as p, orders_assets.definitions as o, pricing_assets, "
        "orders_assets\n"
        "assert not gc.get_freeze_count(), 'gc.freeze() ran at import'\n"
        "o.defs()\n"
        "try:\n"
        "    p.defs()\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    result = python(code, "error::DeprecationWarning", env={**os.environ, "SUPPLIER_REGISTRY": str(missing)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == f"ConfigError {missing}: supplier registry not found"


def test_the_loaders_build_once_and_the_package_attribute_is_the_built_location():
    import orders_assets
    import pricing_assets
    from orders_assets.definitions import defs as orders_loader
    from pricing_assets.definitions import defs as pricing_loader

    assert pricing_loader() is pricing_loader() is pricing_assets.defs
    assert orders_loader() is orders_loader() is orders_assets.defs


def test_loading_both_locations_shows_no_warning_at_all():
    """What a user sees at start-up: no deprecation, supersession, beta or preview warning, nor any other."""
    code = "import pricing_assets.definitions as p, orders_assets.definitions as o; p.defs(); o.defs()"
    result = python(code, "error")
    assert result.returncode == 0, result.stderr[-2000:]


def test_supplier_jobs_write_the_quarantine_with_its_supplier_step():
    """The quarantine tables are written in the supplier steps, so the jobs running them select them."""
    from pricing_assets.definitions import build_defs

    defs = build_defs()
    quarantine = {AssetKey(["supplier_quarantine", s]) for s in ("alpha", "beta", "gamma")}
    for name in ("price_sweep_job", "price_cycle_job"):
        keys = set(defs.resolve_job_def(name).asset_layer.executable_asset_keys)
        assert quarantine | {AssetKey(["supplier_offers", "alpha"])} <= keys, name
    files = set(defs.resolve_job_def("supplier_files_job").asset_layer.executable_asset_keys)
    assert files == {AssetKey(["supplier_files", "delta"]), AssetKey(["supplier_files_quarantine", "delta"])}
