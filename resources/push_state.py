"""The push's state behind typed resources: `PushState` (journal, reconcile marks, locks, the ledger read
back) and `ApprovalLog` (the approvals read back). docs/architecture.md §6 lists the state folders.

Only these resources touch the push's internal state, so each folder has one writer: `_journal/`
(chunks sent, before the storefront's answer, docs/architecture.md §7), `_reconcile/` (drifted SKUs
waiting for their repair push) and `_locks/` (the per-batch push lock's files, when the lock is a file).

The ledger (`storefront_sync/<batch>`) and the approval log (`price_approvals`) are asset tables,
written only by the IO manager. What reads them here are the two feedback edges of pricing:
`storefront_prices` compares each new price with what the storefront last acknowledged and releases
holds an operator approved. Both tables are downstream of `storefront_prices` in the asset graph, and a
Dagster asset graph has no cycles, so these reads are resources, named in the asset's definition
metadata (`feedback_inputs`) instead of drawn as edges (docs/decisions.md, "Feedback into pricing").
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager

import polars as pl
from dagster import ConfigurableResource

from resources.push_lock import BatchLock, batch_lock_for
from resources.schemas import MONEY, UTC_TS
from resources.storefront import ENTRY_SCHEMA
from resources.warehouse import Warehouse

# The storefront_sync asset's table: what the storefront acknowledged per SKU (one file per batch).
LEDGER_KEY = ["storefront_sync"]
# price_approvals, the approval log (one row per approved change).
APPROVALS_KEY = ["price_approvals"]
# Internal state, not analyst tables: <WAREHOUSE_DIR>/_journal/storefront_sync/<batch>.parquet ...
JOURNAL_KEY = ["_journal", "storefront_sync"]
MARKS_KEY = ["_reconcile", "storefront_sync"]
# ... and the folders the state resources own (the lock's files live in `_locks/`: resources/push_lock.py).
STATE_FOLDERS = ("_journal", "_reconcile", "_locks")

# Push entries as sent, tagged with the request (chunk) they went in and its Idempotency-Key.
JOURNAL_SCHEMA: dict[str, pl.DataType] = {"chunk": pl.Int64(), "key": pl.String(), **ENTRY_SCHEMA}
MARK_SCHEMA: dict[str, pl.DataType] = {
    "sku": pl.String(),
    "version": pl.Int64(),  # the ledger version the storefront was found not to show
    "kind": pl.String(),  # missing | price | available | supplier
    "detected_at": UTC_TS,
}
APPROVALS_SCHEMA: dict[str, pl.DataType] = {
    "sku": pl.String(),
    "batch": pl.String(),
    "price": MONEY,  # approved new price
    "last_pushed_price": MONEY,  # the price it was approved to move away from
    "approved_at": UTC_TS,
}
# What pricing reads back from the ledger: the acknowledged price, availability and supplier per SKU.
ACKNOWLEDGED_SCHEMA: dict[str, pl.DataType] = {
    "sku": pl.String(),
    "price": MONEY,
    "available": pl.Boolean(),
    "supplier": pl.String(),
}

# storefront_prices' definition metadata: the inputs it reads back through these resources.
FEEDBACK_METADATA_KEY = "feedback_inputs"
FEEDBACK_INPUTS: dict[str, str] = {
    "storefront_sync": "what the storefront last acknowledged per SKU, read through `PushState` "
    "(the guard compares each new price with it)",
    "price_approvals": "the approved held changes, read through `ApprovalLog` (an approval releases "
    "its hold)",
}


def feedback_markdown() -> str:
    """FEEDBACK_INPUTS as the markdown the UI shows on storefront_prices' definition."""
    return "\n".join(f"- `{key}`: {why}" for key, why in FEEDBACK_INPUTS.items())


def empty_marks() -> pl.DataFrame:
    """No marks."""
    return pl.DataFrame(schema=MARK_SCHEMA)


def empty_approvals() -> pl.DataFrame:
    """An approval log with no approvals."""
    return pl.DataFrame(schema=APPROVALS_SCHEMA)


class PushJournal:
    """Per batch, the chunks sent that the ledger may not show yet (_journal/storefront_sync/<batch>)."""

    def __init__(self, warehouse: Warehouse, lock: BatchLock | None = None) -> None:
        self._warehouse = warehouse
        self._lock = lock

    def exclusive(self, batch: str) -> AbstractContextManager[None]:
        """Hold the batch's push lock (across processes and machines: resources/push_lock.py)."""
        if self._lock is None:
            self._lock = batch_lock_for(self._warehouse.local_root())
        return self._lock("storefront_sync", batch)

    def load(self, batch: str) -> pl.DataFrame:
        """The batch's journal rows (JOURNAL_SCHEMA), empty when never written."""
        if not self._warehouse.exists(JOURNAL_KEY, batch):
            return pl.DataFrame(schema=JOURNAL_SCHEMA)
        return self._warehouse.read(JOURNAL_KEY, batch).select(list(JOURNAL_SCHEMA))

    def save(self, batch: str, rows: pl.DataFrame) -> None:
        """Atomically replace the batch's journal."""
        self._warehouse.write(rows.select(list(JOURNAL_SCHEMA)), JOURNAL_KEY, batch)


class MarkStore:
    """Per batch, the drifted SKUs still waiting for their repair push (_reconcile/storefront_sync)."""

    def __init__(self, warehouse: Warehouse) -> None:
        self._warehouse = warehouse

    def load(self, batch: str) -> pl.DataFrame:
        """The batch's open marks (MARK_SCHEMA), empty when never written."""
        if not self._warehouse.exists(MARKS_KEY, batch):
            return empty_marks()
        return self._warehouse.read(MARKS_KEY, batch).select(list(MARK_SCHEMA))

    def save(self, batch: str, marks: pl.DataFrame) -> None:
        """Atomically replace the batch's marks."""
        self._warehouse.write(marks.select(list(MARK_SCHEMA)), MARKS_KEY, batch)


class PushState(ConfigurableResource):
    """The push's internal state (journal, marks, locks) and the acknowledged ledger, read back."""

    base_dir: str | None = None

    def _warehouse(self) -> Warehouse:
        return Warehouse(base_dir=self.base_dir)

    def journal(self) -> PushJournal:
        """The push journal (its only writer), locked per batch."""
        return PushJournal(self._warehouse())

    def marks(self) -> MarkStore:
        """The reconcile marks (their only writer)."""
        return MarkStore(self._warehouse())

    def ledger(self, batch: str) -> pl.DataFrame | None:
        """The batch's ledger as storefront_sync last wrote it (None before its first sync)."""
        return self._warehouse().read_partitions(LEDGER_KEY, [batch])

    def acknowledged(self, batches: Sequence[str] | None = None) -> pl.DataFrame:
        """What the storefront last acknowledged for these batches (all when None; empty before a push)."""
        ledger = self._warehouse().read_partitions(LEDGER_KEY, None if batches is None else list(batches))
        if ledger is None:
            return pl.DataFrame(schema=ACKNOWLEDGED_SCHEMA)
        return ledger.select(list(ACKNOWLEDGED_SCHEMA))


class ApprovalLog(ConfigurableResource):
    """The approval log (`price_approvals`, written by its asset), read back by pricing."""

    base_dir: str | None = None

    def read(self) -> pl.DataFrame:
        """Every approval on file (APPROVALS_SCHEMA), empty before the first approval."""
        warehouse = Warehouse(base_dir=self.base_dir)
        if not warehouse.exists(APPROVALS_KEY):
            return empty_approvals()
        return warehouse.read(APPROVALS_KEY).select(
            [pl.col(name).cast(dtype) for name, dtype in APPROVALS_SCHEMA.items()]
        )
