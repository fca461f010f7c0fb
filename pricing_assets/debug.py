"""`debug_sku`: one SKU through fetch -> validation -> best offer -> storefront price, logging every step.

Launched from the UI with run config `ops: {trace_sku: {config: {sku: "SKU-000123"}}}`. It
fetches that SKU live from every enabled REST supplier, reads file suppliers' cached offers, and
computes the best offer and the storefront price exactly as the sweep would (markup, rounding, floor,
guard against the last pushed price, approvals). It writes nothing to the warehouse (intermediate
values stay in memory, in one process) and pushes nothing to the storefront.
"""

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import polars as pl
from dagster import (
    Config,
    Failure,
    JobDefinition,
    Nothing,
    OpExecutionContext,
    Out,
    in_process_executor,
    job,
    op,
)
from pydantic import Field

from pricing_assets.logic.batching import batch_index, batch_key
from pricing_assets.logic.best_offers import (
    NO_RATE,
    candidate_rules,
    convert_to_store_currency,
    select_best_offers,
    supplier_rank,
    tie_break_order,
)
from pricing_assets.logic.markup import margin_floor, markup_percent
from pricing_assets.logic.pricing import price_offers
from pricing_assets.supplier_files import read_cached_offers
from resources.config import Registry, ServiceConfig
from resources.push_state import ApprovalLog, PushState
from resources.schemas import CATALOG_SCHEMA, OFFERS_SCHEMA, QUARANTINE_SCHEMA, empty_frame
from resources.service_config import ServiceConfigResource
from resources.suppliers import REST_KINDS, SupplierClients, SupplierError
from resources.warehouse import WarehouseTables

DEBUG_JOB_NAME = "debug_sku"
TRACE_OP = "trace_sku"
# The last log line of a trace: this prefix and the would-be push entry as JSON (scripts parse it).
RESULT_PREFIX = "debug_sku result: "


class DebugSkuConfig(Config):
    """The one SKU to trace."""

    sku: str = Field(description="the SKU to fetch, price and explain (nothing is written or pushed)")


@dataclass
class Fetched:
    """What the fetch step found for the SKU."""

    sku: str
    catalog: pl.DataFrame  # one CATALOG_SCHEMA row plus batch
    offers: pl.DataFrame  # OFFERS_SCHEMA rows that passed validation
    quarantine: pl.DataFrame  # QUARANTINE_SCHEMA rows that did not
    outages: dict[str, str]


def _fmt(row: Mapping[str, Any]) -> str:
    """A row as `key=value` pairs, decimals as exact text."""
    return ", ".join(f"{key}={value}" for key, value in row.items())


def explain_candidates(
    offers: pl.DataFrame,
    *,
    enabled: Collection[str],
    fx: Mapping[str, Decimal],
    now: datetime,
    staleness_ttl: timedelta,
) -> pl.DataFrame:
    """Each offer with its store-currency cost and why it is not a candidate (null `excluded`: it is)."""
    rank = supplier_rank(tie_break_order([], enabled), pl.Int64())
    cost = convert_to_store_currency(pl.col("price"), pl.col("currency"), fx)
    reasons = [
        *candidate_rules(rank=rank, now=now, staleness_ttl=staleness_ttl),
        # The conversion's null cost, named by its cause (a null price already fails `price <= 0`).
        (NO_RATE, pl.col("currency").is_in(list(fx))),
    ]
    excluded = pl.concat_str(
        [pl.when(~condition.fill_null(False)).then(pl.lit(text)) for text, condition in reasons],
        separator="; ",
        ignore_nulls=True,
    )
    return offers.with_columns(
        cost=cost,
        excluded=pl.when(excluded != "").then(excluded),
    )


def _catalog_row(
    warehouse: WarehouseTables, sku: str, batches: int, context: OpExecutionContext
) -> pl.DataFrame:
    """The SKU's catalog row (with batch) from the warehouse; a SKU missing from the catalog fails."""
    if warehouse.exists(["catalog"]):
        row = warehouse.read(["catalog"]).filter(pl.col("sku") == sku)
        if row.is_empty():
            raise Failure(description=f"SKU {sku!r} is not in the catalog")
        if not row.get_column("active").fill_null(False).item(0):
            context.log.warning(f"{sku} is inactive: the sweep does not price it; tracing it anyway")
        row = row.with_columns(active=pl.lit(True))
        if "batch" not in row.columns:
            row = row.with_columns(batch=pl.lit(batch_key(batch_index(sku, batches))))
        return row
    context.log.warning("no catalog in the warehouse yet: tracing with no category (global markup)")
    frame = pl.DataFrame([{"sku": sku, "active": True}], schema=CATALOG_SCHEMA)
    return frame.with_columns(batch=pl.lit(batch_key(batch_index(sku, batches))))


def fetch_stage(
    context: OpExecutionContext,
    sku: str,
    registry: Registry,
    settings: ServiceConfig,
    suppliers: SupplierClients,
    warehouse: WarehouseTables,
) -> Fetched:
    """The SKU's catalog row and every enabled supplier's validated offer for it, logged."""
    catalog = _catalog_row(warehouse, sku, registry.catalog_batches, context)
    context.log.info(f"catalog: {_fmt(catalog.row(0, named=True))}")
    offers, quarantine, outages = [], [], {}
    for entry in registry.suppliers:
        if not settings.enabled(entry.id):
            context.log.info(f"{entry.id}: disabled in {settings.source}, not fetched")
            continue
        if entry.kind in REST_KINDS:
            try:
                result = suppliers.fetch_offers(entry.id, [sku])
            except SupplierError as exc:
                outages[entry.id] = str(exc)
                context.log.warning(f"{entry.id}: unreachable ({exc}); the sweep would keep its last offers")
                continue
            found, rejected = result.offers, result.quarantine
            context.log.info(f"{entry.id}: fetched live ({entry.kind}), {found.height} valid row(s)")
        else:
            found = read_cached_offers(warehouse, entry.id, [sku])
            rejected = empty_frame(QUARANTINE_SCHEMA)
            context.log.info(f"{entry.id}: cached file offers ({entry.kind}), {found.height} row(s)")
        for row in found.iter_rows(named=True):
            context.log.info(f"{entry.id}: offer {_fmt(row)}")
        for row in rejected.iter_rows(named=True):
            context.log.warning(f"{entry.id}: rejected by validation: {row['reason']} (raw {row['raw']})")
        offers.append(found.select(list(OFFERS_SCHEMA)))
        quarantine.append(rejected.select(list(QUARANTINE_SCHEMA)))
    return Fetched(
        sku=sku,
        catalog=catalog,
        offers=pl.concat(offers) if offers else empty_frame(OFFERS_SCHEMA),
        quarantine=pl.concat(quarantine) if quarantine else empty_frame(QUARANTINE_SCHEMA),
        outages=outages,
    )


def best_offer_stage(
    context: OpExecutionContext, fetched: Fetched, registry: Registry, settings: ServiceConfig
) -> pl.DataFrame:
    """The SKU's best_offers row, chosen exactly as best_offers does, with each offer's candidacy logged."""
    enabled = [s for s in registry.order if settings.enabled(s)]
    now = datetime.now(UTC)
    fx = registry.fx_rates()
    explained = explain_candidates(
        fetched.offers, enabled=enabled, fx=fx, now=now, staleness_ttl=settings.staleness_ttl
    )
    for row in explained.iter_rows(named=True):
        verdict = f"excluded: {row['excluded']}" if row["excluded"] else "candidate"
        context.log.info(
            f"{row['supplier']}: {row['price']} {row['currency']} = {row['cost']} "
            f"{registry.store_currency} cost, stock={row['stock']}, in_stock={row['in_stock']}"
            f" -> {verdict}"
        )
    best = select_best_offers(
        fetched.catalog,
        fetched.offers,
        supplier_order=registry.order,
        enabled=enabled,
        fx=fx,
        now=now,
        staleness_ttl=settings.staleness_ttl,
    ).with_columns(batch=pl.lit(fetched.catalog.get_column("batch").item(0)))
    context.log.info(f"best offer: {_fmt(best.row(0, named=True))}")
    if not best.get_column("available").item(0):
        context.log.warning(f"{fetched.sku}: no candidate, unavailable (its price would stay as it was)")
    return best


def price_stage(
    context: OpExecutionContext,
    best: pl.DataFrame,
    registry: Registry,
    settings: ServiceConfig,
    push_state: PushState,
    approval_log: ApprovalLog,
) -> dict[str, Any]:
    """Markup, rounding, floor and guard for the SKU, each value logged; returns the would-be push entry."""
    rules = settings.markup
    row = best.row(0, named=True)
    percent = markup_percent(row["sku"], row["category"], rules)
    context.log.info(
        f"markup: {percent}% (sku override: {row['sku'] in rules.skus}, category "
        f"{row['category']!r} rule: {row['category'] in rules.categories}), "
        f"rounding {rules.rounding.mode}"
        + (f" step {rules.rounding.step}" if rules.rounding.mode == "step" else "")
    )
    if row["cost"] is not None:
        floor = best.select(margin_floor(pl.col("cost"), rules.min_margin)).item()
        context.log.info(f"floor: cost {row['cost']} x (1 + {rules.min_margin}) = {floor}")
    # The batch share rules need the whole batch; for one SKU only the per-SKU rule is meaningful.
    priced = price_offers(
        best,
        markup=rules,
        guard=settings.guard,
        store_currency=registry.store_currency,
        last_pushed=push_state.acknowledged([row["batch"]]).filter(pl.col("sku") == row["sku"]),
        approvals=approval_log.read(),
    )
    guarded, released = priced.prices, bool(priced.released.any())
    context.log.info(f"price after markup, rounding and floor: {guarded.get_column('price').item(0)}")
    last_pushed = guarded.get_column("last_pushed_price").item(0)
    context.log.info("last pushed: never pushed" if last_pushed is None else f"last pushed: {last_pushed}")
    result = guarded.row(0, named=True)
    context.log.info(
        f"guard: change_pct={result['change_pct']}, held={result['held']}, reason={result['hold_reason']}"
        + (", released by an approval" if released else "")
    )
    entry = {
        "sku": result["sku"],
        "price": None if result["price"] is None else str(result["price"]),
        "currency": result["currency"],
        "available": result["available"],
        "supplier": result["supplier"],
        "held": bool(result["held"]),
    }
    if entry["held"]:
        context.log.warning(f"held: would NOT be pushed until approved: {entry}")
    else:
        context.log.info(f"would push (debug: nothing sent): {entry}")
    return entry


def build_debug_job(registry: Registry) -> JobDefinition:
    """The `debug_sku` job for the suppliers of `registry`."""

    # One op on purpose: its intermediate values stay in memory, where the warehouse IO manager that
    # the location binds for every output would otherwise write them as tables.
    @op(
        name=TRACE_OP,
        out=Out(Nothing),
        description="fetch -> validate -> best offer -> storefront price, logged",
    )
    def trace_sku(
        context: OpExecutionContext,
        config: DebugSkuConfig,
        suppliers: SupplierClients,
        warehouse: WarehouseTables,
        push_state: PushState,
        approval_log: ApprovalLog,
        service_config: ServiceConfigResource,
    ) -> None:
        """Trace one SKU through the pricing path; writes and pushes nothing."""
        sku = config.sku.strip()
        if not sku:
            raise Failure(description="config `sku` is empty")
        settings = service_config.load()
        settings.check_suppliers(registry.order)
        fetched = fetch_stage(context, sku, registry, settings, suppliers, warehouse)
        best = best_offer_stage(context, fetched, registry, settings)
        entry = price_stage(context, best, registry, settings, push_state, approval_log)
        best_row = best.row(0, named=True)
        summary = {
            **entry,
            "cost": None if best_row["cost"] is None else str(best_row["cost"]),
            "offers": fetched.offers.height,
            "rejected": fetched.quarantine.height,
            "outages": sorted(fetched.outages),
        }
        context.log.info(f"{RESULT_PREFIX}{json.dumps(summary, sort_keys=True)}")

    @job(
        name=DEBUG_JOB_NAME,
        executor_def=in_process_executor,
        description="Trace one SKU: fetch -> validate -> best offer -> storefront price. Writes and pushes "
        f"nothing. Config: ops.{TRACE_OP}.config.sku",
    )
    def debug_sku() -> None:
        """fetch -> best offer -> storefront price for one SKU."""
        trace_sku()

    return debug_sku


__all__ = [
    "DEBUG_JOB_NAME",
    "RESULT_PREFIX",
    "TRACE_OP",
    "DebugSkuConfig",
    "best_offer_stage",
    "build_debug_job",
    "explain_candidates",
    "fetch_stage",
    "price_stage",
]
