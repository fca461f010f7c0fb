"""Asset code reads the warehouse and never writes it: each table's writer is its asset's IO manager,
and internal state has its own typed resource (docs/architecture.md §6, docs/decisions.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from orders_assets.definitions import build_defs as build_orders
from pricing_assets.definitions import default_resources
from resources.warehouse import Warehouse, WarehouseTables

ROOT = Path(__file__).resolve().parent.parent
ASSET_PACKAGES = ("pricing_assets", "orders_assets")


def imported_names(path: Path) -> set[str]:
    """Every name a module imports from resources.warehouse."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "resources.warehouse"
        for alias in node.names
    }


@pytest.mark.parametrize(
    "module",
    sorted(str(p.relative_to(ROOT)) for package in ASSET_PACKAGES for p in (ROOT / package).rglob("*.py")),
)
def test_asset_code_never_imports_the_writing_warehouse(module: str):
    assert "Warehouse" not in imported_names(ROOT / module)


def test_both_locations_bind_a_read_only_warehouse_to_asset_code():
    orders = build_orders().resources["warehouse"]
    for bound in (default_resources()["warehouse"], orders):
        assert type(bound) is WarehouseTables
        assert not isinstance(bound, Warehouse)
    writers = {"write", "write_json", "write_json_file", "remove_orphan_temp_files"}
    assert not writers & set(dir(WarehouseTables))
    assert writers <= set(dir(Warehouse))
