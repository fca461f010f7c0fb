"""The CDN file caches' state (ETag, Last-Modified, sha256, ...): one typed resource, its only writer.

Each `cdn_file` supplier's state is `_cdn_state/<id>.json` under the warehouse root (docs/warehouse.md).
It is internal state, not an analyst table: `supplier_files/<id>` reads it for its conditional GET
and writes it after each attempt; `read_cached_offers` reads `confirmed_at` from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import ConfigurableResource

from resources.warehouse import Warehouse

STATE_FOLDER = "_cdn_state"
# Where deployments before the state folder kept it: a sidecar next to the cached Parquet.
LEGACY_FOLDER = "supplier_files"
LEGACY_NAME = "state"


class CdnCacheState(ConfigurableResource):
    """Load and save each CDN file cache's state (`_cdn_state/<id>.json` in the warehouse)."""

    base_dir: str | None = None

    def _warehouse(self) -> Warehouse:
        # The warehouse's helpers give atomic local writes and single-request S3 reads/writes.
        return Warehouse(base_dir=self.base_dir)

    def path(self, supplier_id: str) -> str:
        """Where a supplier's state lives (for logs and docs)."""
        return str(self._warehouse().root().joinpath(STATE_FOLDER, f"{supplier_id}.json"))

    def load(self, supplier_id: str) -> dict[str, Any]:
        """The supplier's state; empty when none was ever saved.

        A deployment from before the state folder has it at `supplier_files/<id>.state.json`: read
        there until the next save writes the new file.
        """
        warehouse = self._warehouse()
        state = warehouse.read_json_file([STATE_FOLDER, f"{supplier_id}.json"])
        if state is None:
            state = warehouse.read_json([LEGACY_FOLDER, supplier_id], LEGACY_NAME)
        return dict(state or {})

    def save(self, supplier_id: str, state: Mapping[str, Any]) -> None:
        """Atomically replace the supplier's state."""
        self._warehouse().write_json_file(dict(state), [STATE_FOLDER, f"{supplier_id}.json"])
