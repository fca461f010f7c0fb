"""The `offers_fresh` check: are a supplier's offers on file younger than `staleness_ttl`?

A supplier that is down still records a materialization (its step must succeed so best_offers runs:
docs/decisions.md), so the asset's freshness policy, which only sees materializations, stays
green through an outage. This check looks at what is actually on file: per batch, the newest
`fetched_at` of the supplier's offers. Once any batch's newest successful fetch is older than
`staleness_ttl` (when best_offers stops using it), the check fails; the next successful fetch
passes it again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl
from dagster import AssetCheckResult, AssetCheckSeverity, AssetExecutionContext, AssetKey, MetadataValue

from pricing_assets.partitions import offers_key
from resources.warehouse import WarehouseTables, scan_parquet

FRESH_CHECK = "offers_fresh"
FRESH_CHECK_DESCRIPTION = (
    "Every batch's newest successful fetch is within SERVICE_CONFIG staleness_ttl "
    "(fails while a supplier's offers are too old to be used, passes again after recovery)."
)


@dataclass(frozen=True)
class Freshness:
    """Newest successful fetch per batch of one supplier, judged against staleness_ttl at `now`."""

    newest_by_batch: Mapping[str, datetime]  # batches with offers on file
    now: datetime
    ttl: timedelta

    @property
    def stale(self) -> list[str]:
        """Batches whose newest fetch is older than the TTL, oldest first."""
        old = [(at, batch) for batch, at in self.newest_by_batch.items() if self.now - at > self.ttl]
        return [batch for _, batch in sorted(old)]

    @property
    def passed(self) -> bool:
        """Fresh: offers on file, none of them past the TTL."""
        return bool(self.newest_by_batch) and not self.stale

    def metadata(self) -> dict[str, MetadataValue]:
        """What the UI shows next to the check."""
        values = list(self.newest_by_batch.values())
        out: dict[str, MetadataValue] = {
            "staleness_ttl_s": MetadataValue.float(self.ttl.total_seconds()),
            "batches_on_file": MetadataValue.int(len(values)),
            "stale_batches": MetadataValue.int(len(self.stale)),
        }
        if values:
            oldest = min(values)
            out["newest_fetched_at"] = MetadataValue.timestamp(max(values))
            out["oldest_batch_fetched_at"] = MetadataValue.timestamp(oldest)
            out["oldest_batch_age_s"] = MetadataValue.float(round((self.now - oldest).total_seconds(), 3))
        if self.stale:
            out["stale_batch_list"] = MetadataValue.text(", ".join(self.stale[:20]))
        return out

    def description(self, supplier: str) -> str | None:
        """Why the check failed (None when it passed)."""
        if self.passed:
            return None
        if not self.newest_by_batch:
            return f"supplier {supplier}: no successful fetch on file"
        oldest = min(self.newest_by_batch.values())
        age_min = (self.now - oldest).total_seconds() / 60
        return (
            f"supplier {supplier}: offers of {len(self.stale)} batch(es) are stale: newest successful "
            f"fetch {oldest.isoformat()} is {age_min:.1f} min old, staleness_ttl is "
            f"{self.ttl.total_seconds() / 60:g} min; best_offers no longer uses them"
        )


def newest_fetch_by_batch(
    warehouse: WarehouseTables, supplier: str, skip: Sequence[str] = ()
) -> dict[str, datetime]:
    """Per batch file of `supplier_offers/<supplier>` (but `skip`), the newest fetched_at (empty
    batches left out)."""
    folder = warehouse.root().joinpath(*offers_key(supplier).path)
    if not folder.exists():
        return {}
    newest: dict[str, datetime] = {}
    skipped = set(skip)
    for path in sorted(folder.glob("*.parquet")):
        if path.stem in skipped:
            continue
        value = scan_parquet(path).select(pl.col("fetched_at").max()).collect().item()
        if value is not None:
            newest[path.stem] = value
    return newest


def evaluate_freshness(
    warehouse: WarehouseTables,
    supplier: str,
    *,
    now: datetime,
    ttl: timedelta,
    observed: Mapping[str, datetime] | None = None,
    replaced: Sequence[str] = (),
) -> Freshness:
    """The supplier's freshness from its files, where this run's own batches (`replaced`) count with
    what the run wrote (`observed`: newest fetched_at per batch; a batch without rows is left out)."""
    # The run's own batches are judged by what it wrote, without reading their files back.
    newest = newest_fetch_by_batch(warehouse, supplier, skip=replaced)
    newest.update(observed or {})
    return Freshness(newest, now, ttl)


def freshness_result(key: AssetKey, supplier: str, freshness: Freshness) -> AssetCheckResult:
    """The `offers_fresh` result: ERROR severity (stale offers drop out of pricing), not blocking."""
    return AssetCheckResult(
        check_name=FRESH_CHECK,
        asset_key=key,
        passed=freshness.passed,
        severity=AssetCheckSeverity.ERROR,
        description=freshness.description(supplier),
        metadata=freshness.metadata(),
    )


def check_freshness(
    context: AssetExecutionContext,
    warehouse: WarehouseTables,
    key: AssetKey,
    supplier: str,
    *,
    ttl: timedelta,
    written: Mapping[str, datetime] | None = None,
    replaced: Sequence[str] = (),
) -> AssetCheckResult:
    """`offers_fresh` over every batch on file now, `written` replacing the `replaced` batches; a
    failure is logged as an error too (the run's log is where an operator looks first)."""
    state = evaluate_freshness(
        warehouse, supplier, now=datetime.now(UTC), ttl=ttl, observed=written, replaced=replaced
    )
    if not state.passed:
        context.log.error(state.description(supplier))
    return freshness_result(key, supplier, state)
