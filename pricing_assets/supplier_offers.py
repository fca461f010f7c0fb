"""`supplier_offers/<supplier>` and `supplier_quarantine/<supplier>`: one multi-asset per REST supplier of
the registry, partitioned by catalog batch (the offers and the rows rejected from the same fetch)."""

from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

import polars as pl
from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetOut,
    AssetRecordsFilter,
    AssetsDefinition,
    DagsterInstance,
    FreshnessPolicy,
    MetadataValue,
    Output,
    PartitionsDefinition,
    multi_asset,
)

from pricing_assets import OWNERS
from pricing_assets.logic.batching import active_batch_skus, rows_per_batch
from pricing_assets.offers_freshness import (
    FRESH_CHECK,
    FRESH_CHECK_DESCRIPTION,
    check_freshness,
)
from pricing_assets.partitions import BATCH_BACKFILL_POLICY, offers_key
from pricing_assets.sweep import SWEEP_SENSOR_NAME
from resources.config import Registry, SupplierEntry
from resources.partition_metadata import (
    add_partition_metadata,
    batch_range,
    table_metadata,
)
from resources.schemas import OFFER_TABLE_SCHEMA, QUARANTINE_SCHEMA, column_schema
from resources.service_config import ServiceConfigResource
from resources.suppliers import REST_KINDS, FetchResult, SupplierClients, SupplierError
from resources.warehouse import WarehouseTables, each_file, split_by_partition

REJECTED_SHARE_CHECK = "rejected_share"
REACHABLE_CHECK = "supplier_reachable"
DEFAULT_FRESHNESS = {"warn_minutes": 10, "fail_minutes": 30}
# Dagster's step priority tag: among steps ready together in a run, higher numbers start first.
PRIORITY_TAG = "dagster/priority"
# On Celery workers (SWEEP_EXECUTOR=celery) steps are ordered by dagster-celery's own tag instead
# (default 5, higher first), and a step with only dagster/priority draws a warning in every run.
CELERY_PRIORITY_TAG = "dagster-celery/priority"
CELERY_DEFAULT_PRIORITY = 5
# Dagster's system tag on a run a sensor launched (its value is the sensor's name).
SENSOR_NAME_TAG = "dagster/sensor_name"
# Pages of a quarantine's latest materializations read to find every batch of a run (one page of
# len(batches) records when they were last written together, as the sweep writes them); past this,
# the quarantine is written.
QUARANTINE_RECORD_PAGES = 4


def fetch_priority(kind: str) -> int:
    """Step priority of a supplier fetch: per-SKU suppliers (one request per SKU) first.

    The in-process sweep runs one step at a time. The per-SKU supplier is the long one (the soak: 18 of
    28 s, paced by its rate limit); started first, the quick listings are fetched last, seconds before
    the push, so their prices reach the storefront sooner.
    """
    return 1 if kind == "per_sku_post" else 0


def quarantine_key_path(supplier_id: str) -> list[str]:
    """Warehouse key path of a supplier's quarantined rows (one file per batch)."""
    return ["supplier_quarantine", supplier_id]


def quarantine_asset_key(supplier_id: str) -> AssetKey:
    """The asset key of a supplier's quarantined rows, the second output of its offers step."""
    return AssetKey(quarantine_key_path(supplier_id))


# Output names of the supplier multi-asset.
OFFERS_OUTPUT = "offers"
QUARANTINE_OUTPUT = "quarantine"


def freshness_policy(entry: SupplierEntry) -> FreshnessPolicy:
    """The feed's freshness window from `request.freshness` (warn/fail minutes; default 10/30)."""
    settings = {**DEFAULT_FRESHNESS, **entry.request.get("freshness", {})}
    return FreshnessPolicy.time_window(
        fail_window=timedelta(minutes=float(settings["fail_minutes"])),
        warn_window=timedelta(minutes=float(settings["warn_minutes"])),
    )


def attach_batches(result: FetchResult, batches: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Offers and quarantine as stored, from a fetch whose rows carry their batch and catalog row
    (`fetch_offers` given the batch catalog); quarantined rows without a SKU go to the first batch."""
    offers = result.offers.select([*OFFER_TABLE_SCHEMA, "batch"])
    quarantine = result.quarantine.with_columns(pl.col("batch").fill_null(batches[0])).select(
        [*QUARANTINE_SCHEMA, "batch"]
    )
    return offers, quarantine


def _numeric(values: dict[str, float | int]) -> dict[str, MetadataValue]:
    return {
        name: MetadataValue.int(value) if isinstance(value, int) else MetadataValue.float(float(value))
        for name, value in values.items()
    }


def offers_partition_metadata(
    offers: pl.DataFrame,
    quarantine: pl.DataFrame,
    skus: dict[str, int],
    *,
    fetched_at: datetime,
    warehouse: WarehouseTables,
    key_path: list[str],
) -> dict[str, dict[str, MetadataValue]]:
    """Each batch's own numbers: its offers, SKUs asked, rejects and their reasons (not the run's)."""
    batches = list(skus)
    offer_rows = rows_per_batch(offers, batches)
    # Split only the rejects (few rows): each batch's reasons table is built from its own rows.
    reject_parts = split_by_partition(quarantine, "batch", batches)
    out: dict[str, dict[str, MetadataValue]] = {}
    for batch in batches:
        rows, rejected = offer_rows[batch], reject_parts[batch].height
        out[batch] = {
            **table_metadata(warehouse, key_path, batch, rows),
            "skus": MetadataValue.int(skus[batch]),
            "rejected": MetadataValue.int(rejected),
            "rejected_share": MetadataValue.float(
                round(rejected / (rows + rejected), 6) if rows + rejected else 0.0
            ),
            "reasons": MetadataValue.md(_reasons_table(reject_parts[batch])),
            "fetched_at": MetadataValue.timestamp(fetched_at),
        }
    return out


def quarantine_partition_metadata(
    quarantine: pl.DataFrame, batches: list[str], *, warehouse: WarehouseTables, key_path: list[str]
) -> dict[str, dict[str, MetadataValue]]:
    """Each batch's own rejected rows and their reasons (the IO manager's `rows` are the run's)."""
    parts = split_by_partition(quarantine, "batch", batches)
    return {
        batch: {
            **table_metadata(warehouse, key_path, batch, parts[batch].height),
            "reasons": MetadataValue.md(_reasons_table(parts[batch])),
        }
        for batch in batches
    }


def quarantine_on_file_empty(
    instance: DagsterInstance, key: AssetKey, batches: list[str], warehouse: WarehouseTables
) -> bool:
    """Whether every batch's latest materialization of `key` recorded no rows and its file is there."""
    rows: dict[str, object] = {}
    cursor = None
    for _ in range(QUARANTINE_RECORD_PAGES):
        page = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=key, asset_partitions=batches), limit=len(batches), cursor=cursor
        )
        for record in page.records:
            materialization = record.asset_materialization
            if materialization is not None and materialization.partition is not None:
                recorded = materialization.metadata.get("rows")
                rows.setdefault(materialization.partition, None if recorded is None else recorded.value)
        if len(rows) == len(batches) or not page.has_more:
            break
        cursor = page.cursor
    if len(rows) < len(batches) or any(value != 0 for value in rows.values()):
        return False
    return all(each_file(lambda batch: warehouse.exists(key.path, batch), batches))


def _keeps_empty_quarantine(
    context: AssetExecutionContext,
    quarantine: pl.DataFrame,
    key: AssetKey,
    batches: list[str],
    warehouse: WarehouseTables,
) -> bool:
    """Whether a sweep run leaves the quarantine as it is: nothing rejected, and nothing on file either.

    Only the price_sweep sensor's runs skip it (hundreds a day, 16 events and files per supplier each);
    a run someone launched, a backfill, or the quarantine selected alone always writes it.
    """
    return (
        quarantine.is_empty()
        and context.run.tags.get(SENSOR_NAME_TAG) == SWEEP_SENSOR_NAME
        and {OFFERS_OUTPUT, QUARANTINE_OUTPUT} <= set(context.op_execution_context.selected_output_names)
        and quarantine_on_file_empty(context.instance, key, batches, warehouse)
    )


def _selected_only(context: AssetExecutionContext, events: Iterable[Any]) -> Iterator[Any]:
    """The step's events for what the run selected: the UI may materialize one of the two tables.

    Dagster refuses an Output of an unselected asset; a result of an unselected check is kept with a
    warning, so both are left out here.
    """
    outputs = context.op_execution_context.selected_output_names
    checks = context.selected_asset_check_keys
    for event in events:
        if isinstance(event, Output) and event.output_name not in outputs:
            continue
        if (
            isinstance(event, AssetCheckResult)
            and event.asset_key is not None
            and event.check_name is not None
            and AssetCheckKey(event.asset_key, event.check_name) not in checks
        ):
            continue
        yield event


def _add_metadata(
    context: AssetExecutionContext, per_batch: dict[str, dict[str, Any]], asset_key: AssetKey
) -> None:
    """Per-batch metadata of one of the step's assets, when the run materializes it."""
    if asset_key in context.selected_asset_keys:
        add_partition_metadata(context, per_batch, asset_key=asset_key)


def fetch_metadata(stats: dict[str, float | int], batches: list[str], skus: int) -> dict[str, MetadataValue]:
    """The run's fetch (requests, retries, latency, ...): one fetch served every batch of the run."""
    return {
        **_numeric(stats),
        "batches": MetadataValue.text(batch_range(batches)),
        "batch_count": MetadataValue.int(len(batches)),
        "skus": MetadataValue.int(skus),
    }


def build_supplier_offers_asset(
    entry: SupplierEntry, partitions_def: PartitionsDefinition
) -> AssetsDefinition:
    """The `supplier_offers/<id>` and `supplier_quarantine/<id>` assets of one REST supplier (one step),
    with the offers' reachability, rejects and freshness checks."""
    key = offers_key(entry.id)
    quarantine_key = quarantine_asset_key(entry.id)

    @multi_asset(
        # The op keeps the name the single asset had (step keys, run history, failure lookups).
        name=key.to_python_identifier(),
        outs={
            OFFERS_OUTPUT: AssetOut(
                key=key,
                group_name="supplier_feeds",
                description=f"Validated offers of supplier {entry.id} ({entry.kind}) for the batch's "
                "active SKUs.",
                # No Output when the offers are refused (too many rejects): the last good files stay.
                is_required=False,
                freshness_policy=freshness_policy(entry),
                owners=OWNERS,
                kinds={"polars", "parquet", "http"},
                metadata={
                    "supplier": entry.id,
                    "adapter": entry.kind,
                    "pool": entry.pool,
                    **column_schema(OFFER_TABLE_SCHEMA, partition_column="batch"),
                },
            ),
            QUARANTINE_OUTPUT: AssetOut(
                key=quarantine_key,
                group_name="supplier_feeds",
                description=f"Rows of supplier {entry.id} rejected by validation in the batch's last "
                "fetch, one reason each (written even when its offers were refused, to say why).",
                # Not written during an outage or while disabled: the last fetch's rejects stay.
                is_required=False,
                owners=OWNERS,
                kinds={"polars", "parquet", "http"},
                metadata={
                    "supplier": entry.id,
                    "adapter": entry.kind,
                    **column_schema(QUARANTINE_SCHEMA, partition_column="batch"),
                },
            ),
        },
        partitions_def=partitions_def,
        backfill_policy=BATCH_BACKFILL_POLICY,
        ins={"catalog": AssetIn("catalog")},
        pool=entry.pool,
        check_specs=[
            AssetCheckSpec(
                REACHABLE_CHECK,
                asset=key,
                blocking=False,
                description="The supplier answered within its retries (fails during an outage); "
                "its metadata is the run's fetch statistics.",
            ),
            AssetCheckSpec(
                REJECTED_SHARE_CHECK,
                asset=key,
                blocking=True,
                description="Share of quarantined rows is at most SERVICE_CONFIG quarantine_max_share.",
            ),
            AssetCheckSpec(FRESH_CHECK, asset=key, blocking=False, description=FRESH_CHECK_DESCRIPTION),
        ],
        # Either table can be materialized alone from the UI; jobs select both (one fetch writes both).
        can_subset=True,
        op_tags={
            PRIORITY_TAG: str(fetch_priority(entry.kind)),
            CELERY_PRIORITY_TAG: str(CELERY_DEFAULT_PRIORITY + fetch_priority(entry.kind)),
        },
    )
    def supplier_offers(
        context: AssetExecutionContext,
        catalog: pl.LazyFrame,
        suppliers: SupplierClients,
        warehouse: WarehouseTables,
        service_config: ServiceConfigResource,
    ) -> Iterator[Any]:
        """One supplier's normalized, validated offers and its rejected rows for the run's catalog batches."""
        yield from _selected_only(
            context, _fetch(context, entry, catalog, suppliers, warehouse, service_config)
        )

    return supplier_offers


def _fetch(
    context: AssetExecutionContext,
    entry: SupplierEntry,
    catalog: pl.LazyFrame,
    suppliers: SupplierClients,
    warehouse: WarehouseTables,
    service_config: ServiceConfigResource,
) -> Iterator[Any]:
    """The step's events for every output and check; `_selected_only` keeps the selected ones."""
    key = offers_key(entry.id)
    quarantine_key = quarantine_asset_key(entry.id)
    config = service_config.load()
    batches = list(context.partition_keys)

    def freshness(written: dict[str, datetime] | None = None) -> AssetCheckResult:
        """offers_fresh over every batch on file; `written`: what this run wrote (newest fetched_at
        per batch with offers), replacing the run's batches on file."""
        return check_freshness(
            context,
            warehouse,
            key,
            entry.id,
            ttl=config.staleness_ttl,
            written=written,
            replaced=batches if written is not None else (),
        )

    if not config.enabled(entry.id):
        context.log.warning(f"supplier {entry.id} is disabled in {config.source}: skipped")
        skipped = {"skipped": MetadataValue.text("disabled")}
        yield from _unchanged(key, skipped, reachable=None)
        # Switched off on purpose: its old files are not used, so their age is no alarm.
        yield AssetCheckResult(check_name=FRESH_CHECK, asset_key=key, passed=True, metadata=skipped)
        return
    batch_catalog = active_batch_skus(catalog, batches)
    asked = rows_per_batch(batch_catalog, batches)
    try:
        # The batch catalog itself: every offer comes back with its batch and catalog row.
        result = suppliers.fetch_offers(entry.id, batch_catalog)
    except SupplierError as exc:
        context.log.error(f"{exc}; its last good offers stay in place")
        outage: dict[str, Any] = {
            "outage": MetadataValue.text(str(exc)),
            "endpoint": MetadataValue.text(exc.endpoint or ""),
            "status": MetadataValue.int(exc.status or 0),
        }
        _add_metadata(context, {batch: {"skus": MetadataValue.int(asked[batch])} for batch in batches}, key)
        stats = exc.stats.as_metadata() if exc.stats is not None else {}
        yield from _unchanged(
            key, outage, reachable=False, check_extra=fetch_metadata(stats, batches, batch_catalog.height)
        )
        yield freshness()
        return
    offers, quarantine = attach_batches(result, batches)
    share = result.rejected_share
    limit = float(config.quarantine_max_share)
    per_batch = offers_partition_metadata(
        offers, quarantine, asked, fetched_at=result.fetched_at, warehouse=warehouse, key_path=key.path
    )
    worst = max(batches, key=lambda batch: per_batch[batch]["rejected_share"].value)
    check_metadata = {
        "rejected": MetadataValue.int(quarantine.height),
        "rows": MetadataValue.int(offers.height),
        "rejected_share": MetadataValue.float(round(share, 6)),
        "max_share": MetadataValue.float(limit),
        "batches": MetadataValue.text(batch_range(batches)),
        "worst_batch": MetadataValue.text(worst),
        "worst_batch_rejected_share": per_batch[worst]["rejected_share"],
    }
    reachable = AssetCheckResult(
        check_name=REACHABLE_CHECK,
        asset_key=key,
        passed=True,
        metadata=fetch_metadata(
            {**result.stats.as_metadata(), "unrequested": result.unrequested}, batches, batch_catalog.height
        ),
    )
    # The quarantine first, refused offers or not: it is what explains a refusal. The IO manager
    # writes every batch of the run, empty or not, so a re-run replaces stale rejects; only a sweep
    # run whose batches are all on file empty already keeps them as they are.
    if _keeps_empty_quarantine(context, quarantine, quarantine_key, batches, warehouse):
        # Every batch's latest materialization already says "no rejects" and its file holds none:
        # rewriting it would add 16 events and files per run and say nothing new. This fetch's own
        # count (rejected: 0) is on each batch's offers materialization.
        context.log.info(
            f"supplier {entry.id}: nothing rejected, and every batch's quarantine on file is empty: "
            f"{quarantine_key.to_user_string()} left as it is"
        )
    else:
        _add_metadata(
            context,
            quarantine_partition_metadata(
                quarantine, batches, warehouse=warehouse, key_path=quarantine_key.path
            ),
            quarantine_key,
        )
        yield Output(quarantine, output_name=QUARANTINE_OUTPUT)
    if share > limit:
        context.log.error(
            f"supplier {entry.id}: {quarantine.height} of {quarantine.height + offers.height} rows "
            f"rejected ({share:.1%} > {limit:.1%}); offers not published, previous files kept"
        )
        # No offers Output: the blocking check fails the step and the last good offers stay in place.
        yield reachable
        yield AssetCheckResult(
            check_name=REJECTED_SHARE_CHECK,
            asset_key=key,
            passed=False,
            severity=AssetCheckSeverity.ERROR,
            metadata=check_metadata,
        )
        yield freshness()
        return
    _add_metadata(context, per_batch, key)
    yield Output(offers, output_name=OFFERS_OUTPUT)
    yield reachable
    yield AssetCheckResult(
        check_name=REJECTED_SHARE_CHECK, asset_key=key, passed=True, metadata=check_metadata
    )
    # Every batch of the run was just written with this fetch's time (an empty batch has no offers).
    yield freshness({batch: result.fetched_at for batch in batches if per_batch[batch]["rows"].value})


def _unchanged(
    key: AssetKey,
    metadata: dict[str, Any],
    *,
    reachable: bool | None,
    check_extra: dict[str, Any] | None = None,
) -> Iterator[Any]:
    """Events for a run that leaves the supplier's files as they are (disabled, or down after retries).

    Output(None) makes the warehouse IO manager write nothing, so the last good offers stay (best_offers
    ages them out by fetched_at); an Output is still yielded because a missing one would make Dagster
    skip best_offers in the same run, and one supplier must never hold up the others.
    """
    yield Output(None, output_name=OFFERS_OUTPUT, metadata=metadata)
    check_metadata = {**metadata, **(check_extra or {})}
    if reachable is False:
        yield AssetCheckResult(
            check_name=REACHABLE_CHECK,
            asset_key=key,
            passed=False,
            severity=AssetCheckSeverity.ERROR,
            description=metadata["outage"].value,
            metadata=check_metadata,
        )
    else:
        yield AssetCheckResult(
            check_name=REACHABLE_CHECK, asset_key=key, passed=True, metadata=check_metadata
        )
    # Nothing was fetched, so nothing was rejected; check outputs must be yielded all the same.
    yield AssetCheckResult(check_name=REJECTED_SHARE_CHECK, asset_key=key, passed=True, metadata=metadata)


def _reasons_table(quarantine: pl.DataFrame) -> str:
    if quarantine.is_empty():
        return "no rejected rows"
    counts = quarantine.group_by("reason").len().sort(["len", "reason"], descending=[True, False])
    lines = ["| reason | rows |", "|---|---|"]
    lines += [f"| {row['reason']} | {row['len']} |" for row in counts.iter_rows(named=True)]
    return "\n".join(lines)


def build_supplier_offer_assets(
    registry: Registry, partitions_def: PartitionsDefinition
) -> list[AssetsDefinition]:
    """One `supplier_offers/<id>` + `supplier_quarantine/<id>` multi-asset per REST supplier of the registry
    (file suppliers: elsewhere)."""
    return [
        build_supplier_offers_asset(entry, partitions_def)
        for entry in registry.suppliers
        if entry.kind in REST_KINDS
    ]
