"""`storefront_sync`: push what changed to the storefront, exactly once, and keep its acknowledged state.

Exactly once (docs/storefront.md): every chunk is written to the batch's push journal *before* it
is sent, with its exact entries (the Idempotency-Key is the hash of that content). The next sync
first resends every journaled chunk the ledger does not hold, unchanged (same key, so the storefront
answers 409 if it had applied it), and only then diffs the rest; SKUs of a chunk still in doubt are
left out of the diff, so no change ever travels under two keys."""

import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Config,
    Failure,
    MetadataValue,
    Output,
    PartitionsDefinition,
    asset,
)
from pydantic import Field as PydanticField

from pricing_assets import OWNERS
from pricing_assets.checks import split_pushable
from pricing_assets.logic.ledger import (
    SYNC_SCHEMA,
    Pending,
    apply_acknowledged,
    compute_changes,
    empty_ledger,
    entry_frame,
    mark_pending,
    unconfirmed,
)
from pricing_assets.partitions import BATCH_BACKFILL_POLICY
from pricing_assets.reconcile import Repair, drift_counts, find_drift
from resources.partition_metadata import add_partition_metadata, batch_range, table_metadata
from resources.push_state import JOURNAL_SCHEMA, LEDGER_KEY, PushJournal, PushState
from resources.schemas import column_schema
from resources.service_config import ServiceConfigResource
from resources.shopify import ShopifyStorefront, variants_from_catalog
from resources.storefront import (
    ACKNOWLEDGED,
    DEFERRED,
    IN_DOUBT,
    REFUSED,
    PushChunk,
    PushOutcome,
    PushStats,
    Storefront,
    StorefrontPusher,
)
from resources.warehouse import WarehouseTables

CATALOG_KEY = AssetKey("catalog")
LOGGED_WOULD_PUSH = 50


@dataclass
class BatchSync:
    """The result of syncing one batch: the new ledger and what happened, for metadata."""

    batch: str
    ledger: pl.DataFrame
    counts: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    would_push: list[dict[str, Any]] = field(default_factory=list)
    storefront_unavailable: bool = False


def _journaled_chunks(batch: str, rows: pl.DataFrame) -> list[tuple[int, PushChunk]]:
    """The journal's chunks, rebuilt with the keys they were sent with."""
    return [
        (
            int(chunk_id),
            PushChunk.build(
                batch, group.drop("chunk", "key"), key=group.get_column("key")[0], sent_before=True
            ),
        )
        for (chunk_id,), group in rows.group_by("chunk", maintain_order=True)
    ]


def sync_batch(
    batch: str,
    targets: pl.DataFrame,
    ledger: pl.DataFrame,
    *,
    journal: PushJournal,
    pusher: StorefrontPusher | None,
    push_batch_size: int,
    dry_run: bool,
    stats: PushStats,
    now: datetime,
    may_send: bool = True,
) -> BatchSync:
    """Resend the batch's unconfirmed pushes, then push the diff in chunks; return the new ledger.

    `pusher` may be None for a dry run. `may_send=False` (the storefront was found unavailable
    earlier in the run) sends nothing and leaves everything pending for the next sync.
    Everything from reading the journal to writing it back happens under the batch's push lock, so
    two overlapping syncs of one batch never both diff it (whatever the concurrency pools say): the
    second one finds the first one's chunks in the journal and resends them under their keys.
    """
    # A dry run writes no journal and sends nothing: nothing to protect.
    with nullcontext() if dry_run else journal.exclusive(batch):
        run = _BatchDelivery(
            batch, ledger, pusher, stats, sending=may_send and not dry_run and pusher is not None
        )
        result = run.result
        on_disk = journal.load(batch)
        outstanding_rows = unconfirmed(on_disk, ledger)
        outstanding = _journaled_chunks(batch, outstanding_rows)

        # 1. Whatever was sent before and is not in the ledger goes first, with its journaled key.
        for chunk_id, chunk in outstanding:
            if run.sending:
                result.counts["resent_chunks"] += 1
                run.deliver(chunk_id, chunk, resend=True)
                continue
            run.keep.add(chunk_id)
            run.leave_pending(chunk, IN_DOUBT, "sent earlier, outcome not confirmed")
        resent = run.acknowledged_rows(outstanding_rows) if outstanding else outstanding_rows.clear()
        ledger = apply_acknowledged(ledger, resent, now)

        # 2. The diff against what is acknowledged now, without SKUs still pending from step 1 (in doubt,
        #    or refused: the same content would be refused again now).
        pending = run.pending
        changes = compute_changes(targets, ledger)
        if pending:
            changes = changes.filter(~pl.col("sku").is_in(list(pending)))
        held = targets.filter(pl.col("held"))
        result.counts["held"] += held.height
        settled = targets.filter(~pl.col("held")).join(changes.select("sku"), on="sku", how="anti")
        result.counts["unchanged"] += settled.filter(~pl.col("sku").is_in(list(pending))).height
        for sku, price, reason in held.select("sku", "price", "hold_reason").iter_rows():
            pending.setdefault(sku, Pending("held", price, reason))
        first_id = int(on_disk.get_column("chunk").max() or 0) + 1 if on_disk.height else 0
        entries = entry_frame(changes)
        new_chunks = [
            (first_id + index, PushChunk.build(batch, entries.slice(start, push_batch_size)))
            for index, start in enumerate(range(0, entries.height, push_batch_size))
        ]

        if dry_run:
            would = [outstanding_rows.drop("chunk", "key"), entries]
            result.would_push = pl.concat(would).to_dicts()
            result.counts["would_push"] += len(result.would_push)
            for sku, price in entries.select("sku", "price").iter_rows():
                pending[sku] = Pending("would_push", price)
            result.ledger = mark_pending(ledger, pending)
            return result
        index = pl.int_range(0, entries.height, dtype=pl.Int64, eager=True) // push_batch_size
        keys = pl.Series("key", [chunk.key for _, chunk in new_chunks], dtype=pl.String)
        new_rows = entries.with_columns(chunk=index + first_id, key=keys.gather(index)).select(
            list(JOURNAL_SCHEMA)
        )
        if new_chunks and run.sending:
            # Write-ahead: the journal holds each chunk before the storefront can possibly apply it.
            on_disk = pl.concat([outstanding_rows.filter(pl.col("chunk").is_in(list(run.keep))), new_rows])
            journal.save(batch, on_disk)
        for chunk_id, chunk in new_chunks:
            if run.sending:
                run.deliver(chunk_id, chunk, resend=False)
                continue
            run.leave_pending(chunk, DEFERRED, "not sent: the storefront is unavailable")
        # Acknowledged chunks stay journaled until the next sync finds them in the written ledger:
        # a crash before then resends them under the same key instead of re-diffing them.
        final = pl.concat([outstanding_rows, new_rows]).filter(pl.col("chunk").is_in(list(run.keep)))
        if run.partial_keep:
            final = pl.concat([final, *(part.select(list(JOURNAL_SCHEMA)) for part in run.partial_keep)])
        if not final.equals(on_disk):
            journal.save(batch, final)
        fresh = run.acknowledged_rows(new_rows)
        ledger = apply_acknowledged(ledger, fresh, now)
        result.counts["pushed"] += resent.height + fresh.height
        result.ledger = mark_pending(ledger, pending)
        return result


class _BatchDelivery:
    """What one sync of a batch learns from the storefront, chunk by chunk, and what it must keep."""

    def __init__(
        self,
        batch: str,
        ledger: pl.DataFrame,
        pusher: StorefrontPusher | None,
        stats: PushStats,
        *,
        sending: bool,
    ) -> None:
        self.batch = batch
        self.result = BatchSync(batch, ledger)
        self.pusher = pusher
        self.stats = stats
        self.sending = sending  # turns False once the storefront is found unavailable
        self.pending: dict[str, Pending] = {}
        self.acked: set[int] = set()  # chunk ids the storefront acknowledged...
        self.not_acked: list[tuple[int, str]] = []  # ...except these (chunk, sku) inside them
        self.keep: set[int] = set()  # chunk ids the journal keeps whole
        self.partial_keep: list[pl.DataFrame] = []  # rows kept from chunks only partly in doubt

    def leave_pending(self, chunk: PushChunk, status: str, why: str) -> None:
        """Every SKU of a chunk that is not sent now stays pending with `status`."""
        for sku, price in chunk.entries.select("sku", "price").iter_rows():
            self.pending[sku] = Pending(status, price, why)
            self.result.counts[status] += 1

    def deliver(self, chunk_id: int, chunk: PushChunk, *, resend: bool) -> None:
        """Push one chunk, record each SKU's fate, and keep in the journal what may have been applied."""
        assert self.pusher is not None
        result = self.result
        outcome = self.pusher.push_prices(chunk, stats=self.stats)
        if outcome.acknowledged:
            self.acked.add(chunk_id)
        if outcome.acknowledged and not outcome.per_sku:
            self.keep.add(chunk_id)
            return
        journaled = []
        for sku, price in chunk.entries.select("sku", "price").iter_rows():
            status, error = outcome.sku_status(sku)
            if status == ACKNOWLEDGED:
                journaled.append(sku)
                continue
            self.not_acked.append((chunk_id, sku))
            if resend and (status == DEFERRED or (status == REFUSED and outcome.http_status == 409)):
                # Not applied now (or a 409 that confirms nothing), but the earlier attempt might
                # have been: still in doubt, kept in the journal and resent under the same key.
                status = IN_DOUBT
            if status == IN_DOUBT:
                journaled.append(sku)
            self.pending[sku] = Pending(status, price, error)
            result.counts[status] += 1
        if len(journaled) == chunk.entries.height:
            self.keep.add(chunk_id)
        elif journaled:
            part = PushChunk.build(self.batch, chunk.entries.filter(pl.col("sku").is_in(journaled)))
            self.partial_keep.append(
                part.entries.with_columns(
                    pl.lit(chunk_id, dtype=pl.Int64).alias("chunk"), pl.lit(part.key).alias("key")
                )
            )
        if not outcome.acknowledged or outcome.per_sku:
            result.errors.append(outcome.error or next(iter(outcome.per_sku.values()))[1])
        if outcome.status in (IN_DOUBT, DEFERRED):
            # The storefront is unavailable: stop instead of burning retries on every chunk.
            self.sending = False
            result.storefront_unavailable = True

    def acknowledged_rows(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Journal rows of acknowledged chunks, without the SKUs inside them that were not acknowledged."""
        rows = rows.filter(pl.col("chunk").is_in(list(self.acked))).rename({"key": "idempotency_key"})
        if not self.not_acked:
            return rows
        refused = pl.DataFrame(self.not_acked, schema={"chunk": pl.Int64, "sku": pl.String}, orient="row")
        return rows.join(refused, on=["chunk", "sku"], how="anti")


def _open_pusher(
    adapter: str, storefront: Storefront, shopify: ShopifyStorefront, warehouse: WarehouseTables
) -> AbstractContextManager[StorefrontPusher]:
    if adapter == "shopify":
        # Shopify addresses variants, not SKUs: the catalog maps one to the other.
        return shopify.open_pusher(variants_from_catalog(warehouse.read(CATALOG_KEY.path)))
    return storefront.open_pusher()


class _LazyPusher:
    """Opens the real pusher on the first push, so a sync with nothing to send opens nothing."""

    def __init__(
        self, opener: Callable[[], AbstractContextManager[StorefrontPusher]], stack: ExitStack
    ) -> None:
        self._opener = opener
        self._stack = stack
        self._pusher: StorefrontPusher | None = None

    def push_prices(self, chunk: PushChunk, *, stats: PushStats) -> PushOutcome:
        """Push through the real pusher, opening it first if needed."""
        if self._pusher is None:
            self._pusher = self._stack.enter_context(self._opener())
        return self._pusher.push_prices(chunk, stats=stats)


def _preview(rows: Sequence[Mapping[str, Any]], limit: int = 20) -> str:
    """A markdown table of the first rows, for the UI."""
    lines = ["| sku | price | available | supplier | version |", "|---|---|---|---|---|"]
    for row in rows[:limit]:
        lines.append(
            f"| {row['sku']} | {row['price']} | {row['available']} | {row['supplier']} | {row['version']} |"
        )
    if len(rows) > limit:
        lines.append(f"| … {len(rows) - limit} more | | | | |")
    return "\n".join(lines)


class StorefrontSyncConfig(Config):
    """Run config of storefront_sync."""

    reconcile: bool = PydanticField(
        default=False,
        description="Read what the storefront shows first and push again every acknowledged SKU it "
        "does not show (storefront_reconcile_job sets it).",
    )


def _read_live(adapter: str, storefront: Storefront, shopify: ShopifyStorefront) -> pl.DataFrame:
    """What the storefront shows now, through the adapter the pushes use."""
    return shopify.fetch_live_prices() if adapter == "shopify" else storefront.fetch_live_prices()


def _batch_metadata(outcome: BatchSync, stats: PushStats, seconds: float) -> dict[str, MetadataValue]:
    """One batch's own numbers of a sync."""
    counts = outcome.counts
    return {
        "pushed": MetadataValue.int(counts["pushed"]),
        "unchanged": MetadataValue.int(counts["unchanged"]),
        "held": MetadataValue.int(counts["held"]),
        "failed": MetadataValue.int(counts[REFUSED] + counts[DEFERRED] + counts[IN_DOUBT]),
        "refused": MetadataValue.int(counts[REFUSED]),
        "deferred": MetadataValue.int(counts[DEFERRED]),
        "in_doubt": MetadataValue.int(counts[IN_DOUBT]),
        "would_push": MetadataValue.int(counts["would_push"]),
        "resent_chunks": MetadataValue.int(counts["resent_chunks"]),
        "duplicates_avoided": MetadataValue.int(stats.duplicates_avoided),
        "requests": MetadataValue.int(stats.requests),
        "retries": MetadataValue.int(stats.retries),
        "throttled": MetadataValue.int(stats.throttled),
        "throttle_wait_s": MetadataValue.float(round(stats.throttle_wait_seconds, 3)),
        "duration_s": MetadataValue.float(round(seconds, 3)),
    }


ACKNOWLEDGED_CHECK = "storefront_acknowledged"


def acknowledgement_check(results: Sequence[BatchSync]) -> AssetCheckResult:
    """Passes when the storefront acknowledged everything the sync sent; else its answers are the reason.

    A refusal (a 4xx, or a 409 that does not confirm a key the journal sent before), a deferral and a
    request in doubt all fail it, with the storefront's answer in the description and metadata.
    """
    totals: Counter[str] = Counter()
    for outcome in results:
        totals.update(outcome.counts)
    counts = {status: totals[status] for status in (REFUSED, DEFERRED, IN_DOUBT)}
    errors = sorted({error for outcome in results for error in outcome.errors})
    metadata: dict[str, Any] = {status: MetadataValue.int(count) for status, count in counts.items()}
    if errors:
        metadata["reasons"] = MetadataValue.md("\n".join(f"- {error}" for error in errors[:10]))
    pending = sum(counts.values())
    return AssetCheckResult(
        check_name=ACKNOWLEDGED_CHECK,
        passed=pending == 0,
        severity=AssetCheckSeverity.ERROR,
        description=None
        if pending == 0
        else f"{pending} prices not acknowledged by the storefront: {'; '.join(errors[:3])}",
        metadata=metadata,
    )


def build_storefront_sync_asset(partitions_def: PartitionsDefinition) -> AssetsDefinition:
    """The storefront_sync asset for the catalog batches."""

    @asset(
        name="storefront_sync",
        group_name="pricing",
        partitions_def=partitions_def,
        backfill_policy=BATCH_BACKFILL_POLICY,
        owners=OWNERS,
        kinds={"polars", "parquet", "http"},
        metadata=column_schema(SYNC_SCHEMA, partition_column="batch"),
        pool="storefront",
        # Read for Shopify's variant ids only, when the push opens; an input would load it every run.
        deps=[CATALOG_KEY],
        check_specs=[
            AssetCheckSpec(
                ACKNOWLEDGED_CHECK,
                asset="storefront_sync",
                description="The storefront acknowledged every price this sync sent (fails with its "
                "answer: a refusal, an unconfirmed 409, a deferral, a request in doubt).",
            )
        ],
    )
    def storefront_sync(
        context: AssetExecutionContext,
        config: StorefrontSyncConfig,
        storefront_prices: pl.DataFrame,
        storefront: Storefront,
        shopify: ShopifyStorefront,
        push_state: PushState,
        warehouse: WarehouseTables,
        service_config: ServiceConfigResource,
    ) -> Iterator[Any]:
        """What the storefront has acknowledged per SKU, after pushing only what changed, exactly once."""
        started = time.monotonic()
        service = service_config.load()
        # A push in its own run (storefront_sync_job, reconcile) is not stopped by the blocking checks
        # on storefront_prices: the same invariants are enforced here, so a failing price is never pushed.
        pushable, blocked = split_pushable(storefront_prices, service.markup.min_margin)
        if blocked.height:
            context.log.error(
                f"{blocked.height} prices failed the blocking invariants and are not pushed: "
                f"{blocked.get_column('sku').head(10).to_list()}"
            )
        adapter = storefront.resolved_adapter()
        live: pl.DataFrame | None = None
        if config.reconcile:
            try:
                live = _read_live(adapter, storefront, shopify)
            except Exception as exc:
                # Nothing was compared or pushed: the ledger and the marks stay as they were.
                raise Failure(
                    description=f"reconcile: cannot read what the storefront shows ({adapter}): {exc}"
                ) from exc
            context.log.info(f"reconcile: the storefront ({adapter}) shows {live.height} SKUs")
        journal = push_state.journal()
        marks = push_state.marks()
        totals_stats = PushStats()
        results: list[BatchSync] = []
        per_batch: dict[str, dict[str, MetadataValue]] = {}
        may_send = True
        with ExitStack() as stack:
            opener = partial(_open_pusher, adapter, storefront, shopify, warehouse)
            pusher = _LazyPusher(opener, stack)
            for batch in context.partition_keys:
                batch_started = time.monotonic()
                stats = PushStats()
                previous = push_state.ledger(batch)
                ledger = empty_ledger() if previous is None else previous.select(list(SYNC_SCHEMA))
                now = datetime.now(UTC)
                stored = marks.load(batch)
                drift = find_drift(ledger, live, now) if live is not None else None
                repair = Repair.of(drift if drift is not None else stored, ledger)
                targets = repair.targets(pushable.filter(pl.col("batch") == batch), ledger)
                outcome = sync_batch(
                    batch,
                    targets,
                    repair.ledger_for_diff(ledger),
                    journal=journal,
                    pusher=None if service.dry_run else pusher,
                    push_batch_size=service.push_batch_size,
                    dry_run=service.dry_run,
                    stats=stats,
                    now=now,
                    may_send=may_send,
                )
                outcome.ledger, repaired, still = repair.settle(outcome.ledger, ledger)
                if not service.dry_run and not still.equals(stored):
                    marks.save(batch, still)
                may_send = may_send and not outcome.storefront_unavailable
                results.append(outcome)
                for name in ("requests", "retries", "throttled", "duplicates_avoided"):
                    setattr(totals_stats, name, getattr(totals_stats, name) + getattr(stats, name))
                totals_stats.throttle_wait_seconds += stats.throttle_wait_seconds
                outcome.counts["repaired"] += len(repaired)
                outcome.counts["repair_pending"] += still.height
                metadata = _batch_metadata(outcome, stats, time.monotonic() - batch_started)
                metadata["repaired"] = MetadataValue.int(len(repaired))
                metadata["repair_pending"] = MetadataValue.int(still.height)
                if drift is not None:
                    checked = ledger.filter(pl.col("acknowledged_at").is_not_null()).height
                    outcome.counts["skus_checked"] += checked
                    outcome.counts["drift_found"] += drift.height
                    metadata["skus_checked"] = MetadataValue.int(checked)
                    metadata["drift_found"] = MetadataValue.int(drift.height)
                    for kind, count in drift_counts(drift).items():
                        metadata[f"drift_{kind}"] = MetadataValue.int(count)
                        outcome.counts[f"drift_{kind}"] += count
                    if drift.height:
                        context.log.warning(
                            f"reconcile, {batch}: the storefront does not show {drift.height} acknowledged "
                            f"SKUs ({drift_counts(drift)}), e.g. {drift.get_column('sku').head(5).to_list()}"
                        )
                per_batch[batch] = metadata
                if outcome.would_push:
                    # Every SKU is in the ledger; the log gets a sample (one event per line is costly).
                    sample = "\n".join(str(entry) for entry in outcome.would_push[:LOGGED_WOULD_PUSH])
                    context.log.info(
                        f"dry run, {batch}: would push {len(outcome.would_push)} prices:\n{sample}"
                    )
        totals: Counter[str] = Counter()
        for outcome in results:
            totals.update(outcome.counts)
        failed = totals[REFUSED] + totals[DEFERRED] + totals[IN_DOUBT]
        would_push = [entry for outcome in results for entry in outcome.would_push]
        # Facts of the whole run, true for each of its batches.
        run_facts: dict[str, Any] = {
            "adapter": MetadataValue.text(adapter),
            "dry_run": MetadataValue.bool(service.dry_run),
            "reconcile": MetadataValue.bool(config.reconcile),
        }
        metadata: dict[str, Any] = {
            **run_facts,
            **{name: MetadataValue.int(totals[name]) for name in ("pushed", "unchanged", "held")},
            "blocked_invalid": MetadataValue.int(blocked.height),
            "failed": MetadataValue.int(failed),
            **{name: MetadataValue.int(totals[name]) for name in (REFUSED, DEFERRED, IN_DOUBT)},
            **{name: MetadataValue.int(totals[name]) for name in ("would_push", "resent_chunks")},
            "duplicates_avoided": MetadataValue.int(totals_stats.duplicates_avoided),
            "requests": MetadataValue.int(totals_stats.requests),
            "retries": MetadataValue.int(totals_stats.retries),
            "throttled": MetadataValue.int(totals_stats.throttled),
            "throttle_wait_s": MetadataValue.float(round(totals_stats.throttle_wait_seconds, 3)),
            "repaired": MetadataValue.int(totals["repaired"]),
            "repair_pending": MetadataValue.int(totals["repair_pending"]),
            "duration_s": MetadataValue.float(round(time.monotonic() - started, 3)),
            "batches": MetadataValue.text(batch_range(list(context.partition_keys))),
        }
        if config.reconcile:
            metadata["skus_checked"] = MetadataValue.int(totals["skus_checked"])
            metadata["drift_found"] = MetadataValue.int(totals["drift_found"])
        ledgers = [outcome.ledger.with_columns(pl.lit(outcome.batch).alias("batch")) for outcome in results]
        blocked_by_batch = dict(blocked.group_by("batch").len().iter_rows()) if blocked.height else {}
        for outcome, frame in zip(results, ledgers, strict=True):
            own = per_batch[outcome.batch]
            own.update(table_metadata(warehouse, LEDGER_KEY, outcome.batch, frame.height))
            own["blocked_invalid"] = MetadataValue.int(int(blocked_by_batch.get(outcome.batch, 0)))
            if outcome.would_push:
                own["would_push_preview"] = MetadataValue.md(_preview(outcome.would_push))
        add_partition_metadata(context, per_batch)
        if would_push:
            context.log.info(f"dry run: would push {len(would_push)} prices in all")
        # The ledger is written by the IO manager alone, also when some prices failed: what the
        # storefront did acknowledge is recorded for the guard and analysts before the step fails.
        if not ledgers:
            yield Output(
                empty_ledger().with_columns(pl.lit(None, dtype=pl.String).alias("batch")), metadata=run_facts
            )
        else:
            yield Output(pl.concat(ledgers), metadata=run_facts)
        yield acknowledgement_check(results)
        if failed and not service.dry_run:
            errors = sorted({error for outcome in results for error in outcome.errors})
            raise Failure(
                description=f"{failed} prices still pending for the next sync: {'; '.join(errors[:3])}",
                metadata=metadata,
            )

    return storefront_sync


__all__ = [
    "ACKNOWLEDGED_CHECK",
    "BatchSync",
    "StorefrontSyncConfig",
    "acknowledgement_check",
    "build_storefront_sync_asset",
    "sync_batch",
]
