"""`SupplierClients`: the Dagster resource that fetches and validates one supplier's offers for a SKU list."""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import polars as pl
from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr

from resources.config import Registry, SupplierEntry, load_registry
from resources.offer_validation import RAW_OFFERS_SCHEMA, validate_offers
from resources.schemas import OFFERS_SCHEMA, QUARANTINE_SCHEMA, empty_frame
from resources.suppliers.adapters import (
    Collected,
    fetch_per_sku_post,
    fetch_rest_batch,
    fetch_rest_paginated,
    load_sku_map,
)
from resources.suppliers.errors import SupplierError
from resources.suppliers.http import FetchStats, SupplierHttp
from resources.suppliers.parsing import RecordMapper, record_json

REST_KINDS = ("rest_batch", "rest_paginated", "per_sku_post")


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run the block with Python's cyclic garbage collector off, then put it back as it was.

    A fetch at 1M SKUs decodes millions of JSON records into dicts and lists that live until the page
    is mapped to columns; every few hundred allocations the collector walked all of them again. They
    hold no reference cycles (reference counting frees them), so pausing it costs no memory that
    outlives the fetch: measured at 1M SKUs on this 2-core box, alpha 7.97 -> 6.63 s, beta
    7.88 -> 5.68 s, omega unchanged (docs/benchmarks.md, "cycle").
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class FetchResult:
    """One supplier's validated offers and quarantined rows for a SKU list, with what it cost."""

    supplier: str
    offers: pl.DataFrame = field(default_factory=lambda: empty_frame(OFFERS_SCHEMA))
    quarantine: pl.DataFrame = field(default_factory=lambda: empty_frame(QUARANTINE_SCHEMA))
    stats: FetchStats = field(default_factory=FetchStats)
    fetched_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    unrequested: int = 0  # rows for SKUs nobody asked for (listing rows outside the batch)

    @property
    def rejected_share(self) -> float:
        """Quarantined rows / all rows considered (0 when there were none)."""
        total = self.offers.height + self.quarantine.height
        return self.quarantine.height / total if total else 0.0

    def metadata(self) -> dict[str, float | int]:
        """Numeric materialization metadata: rows, rejected and the fetch statistics."""
        return {
            "rows": self.offers.height,
            "rejected": self.quarantine.height,
            "unrequested": self.unrequested,
            **self.stats.as_metadata(),
        }


async def fetch_supplier_offers(
    entry: SupplierEntry,
    skus: Sequence[str] | pl.DataFrame,
    *,
    known_currencies: set[str],
    registry_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FetchResult:
    """Fetch one REST supplier's offers for SKUs, map and validate them (the asset's whole fetch path).

    `skus` is a list, or a frame with a `sku` column whose other columns (a batch, a catalog row) every
    offer and rejected row of that SKU carries (a row without a SKU gets nulls there).
    """
    if entry.kind not in REST_KINDS:
        raise ValueError(f"supplier {entry.id!r} is kind {entry.kind!r}, not a REST supplier")
    started = time.perf_counter()
    stats = FetchStats()
    fetched_at = datetime.now(UTC)
    requested = _requested_frame(skus)
    unique_skus = requested.get_column("sku").to_list()
    carry = [name for name in requested.columns if name != "sku"]
    mapper = RecordMapper(
        supplier=entry.id, fields=entry.fields, parsers=entry.parsers, default_currency=entry.currency
    )
    try:
        collected = await _collect(entry, unique_skus, stats, registry_dir, environ, transport)
    except SupplierError as exc:
        stats.duration_s = time.perf_counter() - started
        exc.stats = stats
        raise
    stats.records = len(collected.records)
    raw = mapper.to_frame(collected.records, collected.skus)
    # Rows for SKUs outside the request belong to other batches; rows without a SKU stay for quarantine.
    # One left join both finds them and gives every row its SKU's carried columns: a separate filter and
    # a join to the batch catalog afterwards hashed 1M SKU strings twice (~0.2 s per supplier).
    sku = pl.col("sku").str.strip_chars()
    joined = raw.with_columns(sku.alias(_ASKED_KEY)).join(
        requested.rename({"sku": _ASKED_KEY}).with_columns(pl.lit(True).alias(_ASKED_FLAG)),
        on=_ASKED_KEY,
        how="left",
        maintain_order="left",
    )
    kept = joined.filter(sku.is_null() | (sku == "") | pl.col(_ASKED_FLAG).is_not_null())
    unrequested = raw.height - kept.height
    raw = kept.drop(_ASKED_KEY, _ASKED_FLAG)
    limits = entry.request.get("validation", {})
    offers, quarantine = validate_offers(
        raw,
        supplier=entry.id,
        known_currencies=known_currencies,
        fetched_at=fetched_at,
        max_price=Decimal(str(limits.get("max_price", "100000"))),
        max_stock=int(limits.get("max_stock", 10_000_000)),
        carry=carry,
    )
    if quarantine.height:
        positions = quarantine.get_column("raw").cast(pl.Int64).to_list()
        quarantine = quarantine.with_columns(
            raw=pl.Series([record_json(collected.records[index]) for index in positions], dtype=pl.String)
        )
    stats.duration_s = time.perf_counter() - started
    return FetchResult(
        supplier=entry.id,
        offers=offers,
        quarantine=quarantine,
        stats=stats,
        fetched_at=fetched_at,
        unrequested=unrequested,
    )


# The join of requested SKUs: its key (the mapped SKU, stripped) and its match flag.
_ASKED_KEY, _ASKED_FLAG = "_requested", "_asked"
# Columns the fetch itself makes (mapped, validated, stored, or its own helpers): a requested SKUs frame
# may not carry one of them, else it would be overwritten or selected twice.
_FETCH_COLUMNS = {*RAW_OFFERS_SCHEMA, *OFFERS_SCHEMA, *QUARANTINE_SCHEMA, "_row", _ASKED_KEY, _ASKED_FLAG}


def _requested_frame(skus: Sequence[str] | pl.DataFrame) -> pl.DataFrame:
    """The requested SKUs as a frame, each SKU once (its first row), in the order asked."""
    if isinstance(skus, pl.DataFrame):
        if "sku" not in skus.columns:
            raise ValueError(f"requested SKUs frame has no 'sku' column (columns: {skus.columns})")
        # Checked before any request: a frame the fetch cannot carry must not cost a supplier call.
        clash = sorted((set(skus.columns) - {"sku"}) & _FETCH_COLUMNS)
        if clash:
            raise ValueError(f"requested SKUs frame: columns {clash} clash with the fetch's own columns")
        return skus.unique("sku", keep="first", maintain_order=True)
    return pl.DataFrame({"sku": pl.Series(list(skus), dtype=pl.String)}).unique(
        "sku", keep="first", maintain_order=True
    )


async def _collect(
    entry: SupplierEntry,
    skus: list[str],
    stats: FetchStats,
    registry_dir: Path | None,
    environ: Mapping[str, str] | None,
    transport: httpx.AsyncBaseTransport | None,
) -> Collected:
    if not skus:
        return Collected(records=[])
    async with SupplierHttp(entry, environ=environ, stats=stats, transport=transport) as http:
        if entry.kind == "rest_batch":
            return await fetch_rest_batch(http, skus)
        if entry.kind == "rest_paginated":
            return await fetch_rest_paginated(http, skus)
        sku_map = load_sku_map(entry, registry_dir=registry_dir)
        return await fetch_per_sku_post(http, skus, sku_map=sku_map)


class SupplierClients(ConfigurableResource):
    """HTTP clients for the REST suppliers of the registry: auth, rate limits, retries, validation."""

    registry_path: str | None = Field(
        default=None, description="supplier registry YAML; default $SUPPLIER_REGISTRY or the packaged one"
    )
    _registry: Registry | None = PrivateAttr(default=None)

    def registry(self) -> Registry:
        """The supplier registry this resource serves (loaded once per resource instance)."""
        if self._registry is None:
            self._registry = load_registry(self.registry_path)
        return self._registry

    def entry(self, supplier_id: str) -> SupplierEntry:
        """One supplier's registry entry; an unknown id is a KeyError naming the known ones."""
        registry = self.registry()
        try:
            return registry.by_id[supplier_id]
        except KeyError:
            raise KeyError(
                f"unknown supplier {supplier_id!r} (registry has: {', '.join(registry.order)})"
            ) from None

    async def afetch_offers(
        self,
        supplier_id: str,
        skus: Sequence[str] | pl.DataFrame,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> FetchResult:
        """Fetch and validate a supplier's offers for SKUs (async); secrets are read from env now."""
        registry = self.registry()
        source = Path(registry.source)
        return await fetch_supplier_offers(
            self.entry(supplier_id),
            skus,
            known_currencies=set(registry.fx_rates()),
            registry_dir=source.parent if source.exists() else None,
            environ=os.environ,
            transport=transport,
        )

    def fetch_offers(self, supplier_id: str, skus: Sequence[str] | pl.DataFrame) -> FetchResult:
        """Fetch and validate a supplier's offers for SKUs (a list, or a frame of SKUs and columns their
        rows carry: `fetch_supplier_offers`); raises SupplierError when the supplier fails."""
        with collector_paused():
            return asyncio.run(self.afetch_offers(supplier_id, skus))
