"""The orders location on a warehouse on S3: the same tables, byte for byte in content, as on a local disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import materialize

from orders_assets.assets import ORDERS_ASSETS
from resources.warehouse import Warehouse
from tests.conftest import keys_under
from tests.orders.conftest import DAYS, make_env, run_days

pytestmark = pytest.mark.s3
TABLES = ["orders", "order_rejects", "order_allocations", "sales_report"]


def test_every_orders_asset_writes_the_same_tables_on_s3(s3_root, bucket, tmp_path: Path):
    first, last = DAYS[0].isoformat(), DAYS[-1].isoformat()
    on_s3 = make_env(f"sqlite:///{tmp_path / 's3-orders.db'}", s3_root)  # type: ignore[arg-type]
    on_disk = make_env(f"sqlite:///{tmp_path / 'disk-orders.db'}", tmp_path / "warehouse")
    for env in (on_s3, on_disk):
        run_days(env, first, last)
        # sales_summary too: every asset of the location.
        assert materialize(ORDERS_ASSETS, resources=env.resources(), selection=["sales_summary"]).success

    s3, disk = Warehouse(base_dir=str(on_s3.warehouse)), Warehouse(base_dir=str(on_disk.warehouse))
    for table in TABLES:
        for day in (first, last):
            remote, local = s3.read([table], day), disk.read([table], day)
            assert remote.height > 0, (table, day)
            assert remote.equals(local), (table, day)
    assert s3.read(["sales_summary"]).equals(disk.read(["sales_summary"]))
    written = keys_under(bucket, s3_root)
    assert {f"{table}/{day}.parquet" for table in TABLES for day in (first, last)} <= written
    assert "sales_summary.parquet" in written
    # Nothing half-written or temporary is left in the bucket.
    assert not [key for key in written if not key.endswith((".parquet", ".json"))]
