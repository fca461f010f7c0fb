"""The cdn_state resource: the CDN caches' state in `_cdn_state/<id>.json`, the old sidecar still read."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl

from pricing_assets.supplier_files import read_cached_offers
from resources.cdn_state import CdnCacheState, write_cached_offers
from resources.schemas import OFFERS_SCHEMA
from resources.warehouse import Warehouse


def test_save_then_load_round_trips_in_the_state_folder(tmp_path: Path) -> None:
    state = CdnCacheState(base_dir=str(tmp_path))
    assert state.load("delta") == {}
    state.save("delta", {"etag": "abc", "rows": 3, "last_error": None})
    assert state.load("delta") == {"etag": "abc", "rows": 3, "last_error": None}
    assert json.loads((tmp_path / "_cdn_state" / "delta.json").read_text())["etag"] == "abc"
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["delta.json"]  # no temp file left


def test_the_old_sidecar_is_read_until_the_new_file_exists(tmp_path: Path) -> None:
    legacy = tmp_path / "supplier_files" / "delta.state.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(json.dumps({"etag": "old"}))
    state = CdnCacheState(base_dir=str(tmp_path))
    assert state.load("delta") == {"etag": "old"}
    state.save("delta", {"etag": "new"})
    assert state.load("delta") == {"etag": "new"}  # the new location wins once written
    assert CdnCacheState(base_dir=str(tmp_path)).load("other") == {}


def test_read_cached_offers_takes_confirmed_at_from_the_old_sidecar(tmp_path: Path) -> None:
    warehouse = Warehouse(base_dir=str(tmp_path))
    fetched = datetime(2026, 1, 1, tzinfo=UTC)
    offers = pl.DataFrame(
        [
            {
                "sku": "S1",
                "supplier": "delta",
                "price": Decimal("1.00"),
                "currency": "EUR",
                "stock": 1,
                "in_stock": True,
                "fetched_at": fetched,
            }
        ],
        schema=OFFERS_SCHEMA,
    )
    write_cached_offers(warehouse, "delta", offers, 1)
    confirmed = datetime(2026, 1, 2, tzinfo=UTC)
    warehouse.write_json({"confirmed_at": confirmed.isoformat()}, ["supplier_files", "delta"], "state")
    [row] = read_cached_offers(warehouse, "delta", ["S1"]).iter_rows(named=True)
    assert row["fetched_at"] == confirmed
