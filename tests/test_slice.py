"""The thin slice end to end against the real sandbox: catalog -> alpha offers -> best -> prices -> push."""

from __future__ import annotations

import json
import math
from decimal import ROUND_HALF_UP, Decimal

from dagster import AssetKey, AssetSelection, materialize

from pricing_assets.definitions import build_pricing_assets
from pricing_assets.logic.batching import batch_index, batch_key
from resources.cdn_file import CdnFile
from resources.config import load_registry
from resources.push_state import ApprovalLog, PushState
from resources.service_config import ServiceConfigResource
from resources.shopify import ShopifyStorefront
from resources.storefront import Storefront
from resources.suppliers import SupplierClients
from resources.warehouse import Warehouse, WarehouseIOManager
from sandbox.world import World

CONFIG = {"markup": {"percent": "10", "rounding": {"mode": "step", "step": "0.01"}}, "push_batch_size": 20}


def slice_resources(sandbox_url: str, warehouse_dir) -> dict[str, object]:
    return {
        "io_manager": WarehouseIOManager(base_dir=str(warehouse_dir)),
        "warehouse": Warehouse(base_dir=str(warehouse_dir)),
        "push_state": PushState(base_dir=str(warehouse_dir)),
        "approval_log": ApprovalLog(base_dir=str(warehouse_dir)),
        "service_config": ServiceConfigResource(override_json=json.dumps(CONFIG)),
        "storefront": Storefront(url=f"{sandbox_url}/storefront", webhook_secret="sandbox-storefront-secret"),
        "suppliers": SupplierClients(),
        "cdn_files": CdnFile(),
        "shopify": ShopifyStorefront(),
    }


def expected_prices(batch: str) -> dict[str, Decimal]:
    """Computed from the sandbox's own data, independently of the pipeline."""
    world = World(seed=7, catalog_size=400)
    offers = world.offers("alpha")
    expected = {}
    for row in world.catalog:
        if not row["active"] or batch_key(batch_index(row["sku"], 16)) != batch:
            continue
        offer = offers.get(row["sku"])
        if offer is None or not (offer.stock is None or offer.stock > 0):
            continue
        if offer.stock is None:
            continue  # alpha reports no count: in_stock depends on the supplier's flag, checked below
        expected[row["sku"]] = (offer.price * Decimal("1.10")).quantize(Decimal("0.01"), ROUND_HALF_UP)
    return expected


def test_slice_pushes_exactly_the_expected_signed_prices(sandbox, warehouse_dir):
    assets_by_key = {key.to_user_string(): a for a in build_pricing_assets(load_registry()) for key in a.keys}
    resources = slice_resources(sandbox.url, warehouse_dir)
    catalog = materialize([assets_by_key["catalog"]], resources=resources)
    assert catalog.success
    selection = ["supplier_offers/alpha", "best_offers", "storefront_prices", "storefront_sync"]
    assets = [assets_by_key["catalog"], *(assets_by_key[key] for key in selection)]
    only_slice = AssetSelection.assets(*[AssetKey.from_user_string(key) for key in selection])
    result = materialize(assets, partition_key="batch-000", resources=resources, selection=only_slice)
    assert result.success

    received = sandbox.pushes()
    assert received["bad_signatures"] == 0
    assert received["duplicates"] == 0
    pushed = {
        sku: entry for push in received["pushes"] for sku, entry in ((p["sku"], p) for p in push["prices"])
    }
    available = {sku: Decimal(entry["price"]) for sku, entry in pushed.items() if entry["available"]}
    expected = expected_prices("batch-000")
    # Every in-stock alpha offer of the batch is pushed at cost x 1.10, to the cent; nothing else is priced.
    assert expected and set(expected) <= set(available)
    assert {sku: available[sku] for sku in expected} == expected
    assert all(entry["supplier"] == "alpha" for entry in pushed.values() if entry["available"])
    assert {push["batch"] for push in received["pushes"]} == {"batch-000"}
    assert len(received["pushes"]) == math.ceil(len(pushed) / CONFIG["push_batch_size"])

    # Materializing again with nothing changed pushes nothing.
    again = materialize(assets, partition_key="batch-000", resources=resources, selection=only_slice)
    assert again.success
    assert len(sandbox.pushes()["pushes"]) == len(received["pushes"])
