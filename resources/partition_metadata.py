"""Per-partition materialization metadata: a ranged run gives each partition its own numbers.

A run over many partitions emits one materialization per partition. Metadata added with
`add_output_metadata` (and what the warehouse IO manager adds: the run's `rows`, `paths`,
`first_path`) goes to every one of them, so the UI would plot the range's totals for each
partition. Metadata added with `context.add_asset_metadata(..., partition_key=...)` goes to that
partition only and wins over the shared keys (checked in dagster's execute_step: partition-scoped
asset metadata is merged last), so each partition's `rows` and `path` here replace the run's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dagster import AssetExecutionContext, AssetKey, MetadataValue

from resources.warehouse import WarehouseTables


def table_metadata(
    warehouse: WarehouseTables, key_path: Sequence[str], partition: str, rows: int
) -> dict[str, MetadataValue]:
    """What the IO manager reports for a run, for one partition: its rows and its file."""
    path = str(warehouse.path(key_path, partition))
    # `paths`/`first_path` are the IO manager's keys for a ranged run: per partition, one file, its own.
    return {
        "rows": MetadataValue.int(rows),
        "path": MetadataValue.path(path),
        "paths": MetadataValue.int(1),
        "first_path": MetadataValue.path(path),
    }


def add_partition_metadata(
    context: AssetExecutionContext,
    per_partition: Mapping[str, Mapping[str, Any]],
    *,
    asset_key: AssetKey | None = None,
) -> None:
    """Attach each partition's own metadata to that partition's materialization of this step."""
    for partition, metadata in per_partition.items():
        context.add_asset_metadata(dict(metadata), asset_key=asset_key, partition_key=partition)


def batch_range(keys: Sequence[str]) -> str:
    """A run's partitions for run-level metadata: `batch-000..batch-015`, or the one key."""
    if not keys:
        return "none"
    ordered = sorted(keys)
    return ordered[0] if len(ordered) == 1 else f"{ordered[0]}..{ordered[-1]}"
