"""Cheapest available offer per active catalog SKU, with runner-up and spread (docs/architecture.md §4)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from decimal import Decimal

import polars as pl

from resources.schemas import BEST_OFFERS_SCHEMA, CATALOG_ROW, MONEY

# Offer prices carry 4 decimals; an FX rate may carry at most this many, so that
# price x rate stays exact inside polars' 128-bit decimals before it is rounded.
MAX_RATE_DECIMALS = 18


def tie_break_order(supplier_order: list[str], enabled: Collection[str]) -> list[str]:
    """Enabled suppliers in tie-break order: registry order first, then the rest by id."""
    enabled_set = set(enabled)
    ranked = list(dict.fromkeys(s for s in supplier_order if s in enabled_set))
    return ranked + sorted(enabled_set - set(ranked))


# Why an offer whose currency has no FX rate is not a candidate: its cost is null (never guessed).
NO_RATE = "currency not in the FX table"


def candidate_rules(*, rank: pl.Expr, now: datetime, staleness_ttl: timedelta) -> list[tuple[str, pl.Expr]]:
    """The rules an offer must meet to be a candidate, as (why an offer fails it, the condition).

    `rank` is the offer's tie-break rank, null when its supplier is not enabled. The one other rule is
    that the offer has a cost in the store currency (`NO_RATE`).
    """
    # The one statement of the candidate rule: select_best_offers filters by it, and debug_sku explains
    # every offer with it, so the two cannot drift apart.
    in_stock = (pl.col("stock") > 0) | (pl.col("stock").is_null() & pl.col("in_stock").fill_null(False))
    return [
        ("supplier disabled", rank.is_not_null()),
        (f"stale (older than {staleness_ttl})", pl.col("fetched_at") >= now - staleness_ttl),
        ("out of stock", in_stock),
        ("price <= 0", pl.col("price") > 0),
    ]


def supplier_rank(ranked: list[str], dtype: pl.DataType) -> pl.Expr:
    """Each offer's position in the tie-break order `ranked`; null for a supplier not in it."""
    return _lookup("supplier", {s: i for i, s in enumerate(ranked)}, dtype)


def _rate_decimals(fx: Mapping[str, Decimal]) -> int:
    """Decimals needed to hold every FX rate exactly; rejects rates that are not usable."""
    decimals = 0
    for currency, rate in fx.items():
        if not isinstance(rate, Decimal) or not rate.is_finite() or rate <= 0:
            raise ValueError(f"fx rate for {currency!r} must be a positive finite Decimal, got {rate!r}")
        exponent = rate.normalize().as_tuple().exponent
        decimals = max(decimals, -int(exponent))
    if decimals > MAX_RATE_DECIMALS:
        raise ValueError(f"fx rates may have at most {MAX_RATE_DECIMALS} decimals, got {decimals}")
    return decimals


def _lookup(column: str | pl.Expr, mapping: Mapping[str, object], dtype: pl.DataType) -> pl.Expr:
    """Map a low-cardinality String column through a small dict; unknown values become null."""
    source = pl.col(column) if isinstance(column, str) else column
    # A when/then chain over a handful of keys is ~8x faster than replace_strict on millions of rows.
    expr = pl.lit(None, dtype=dtype)
    for key, value in reversed(list(mapping.items())):
        expr = pl.when(source == key).then(pl.lit(value, dtype=dtype)).otherwise(expr)
    return expr


def convert_to_store_currency(price: pl.Expr, currency: pl.Expr, fx: Mapping[str, Decimal]) -> pl.Expr:
    """price x fx[currency] as MONEY, rounded half-even to 4 decimals; null for an unknown currency."""
    rate = _lookup(currency, dict(fx), pl.Decimal(38, 4 + _rate_decimals(fx)))
    return (price.cast(MONEY) * rate).round(4, mode="half_to_even").cast(MONEY)


def _units_to_money(units: pl.Expr) -> pl.Expr:
    """Integer ten-thousandths back to MONEY, exactly."""
    return (units.cast(pl.Decimal(38, 0)) * pl.lit(Decimal("0.0001"), dtype=pl.Decimal(38, 4))).cast(MONEY)


def _with_cost_units(frame: pl.LazyFrame, fx: Mapping[str, Decimal], key_dtype: pl.DataType) -> pl.LazyFrame:
    """Adds `cost`: the offer's store-currency ten-thousandths, exact, half-even; null if no rate."""
    decimals = _rate_decimals(fx)
    if key_dtype != pl.Int64():
        cost = convert_to_store_currency(pl.col("price"), pl.col("currency"), fx)
        return frame.with_columns(cost=cost.to_physical().cast(pl.Int128))
    # Integer fast path (about twice as fast as decimal multiply-and-round); the caller checked
    # that price units x scaled rate cannot overflow 63 bits.
    divisor = 10**decimals
    rate = _lookup("currency", {c: int(r.scaleb(decimals)) for c, r in fx.items()}, pl.Int64())
    frame = frame.with_columns(cost=pl.col("price").cast(MONEY).to_physical().cast(pl.Int64) * rate)
    if divisor == 1:
        return frame
    # One stage per intermediate: written as one expression, polars evaluated the product three
    # times (33 ms against 21 ms on 4M offers).
    quotient, twice_rest = pl.col("quotient"), pl.col("twice_rest")
    round_up = (twice_rest > divisor) | ((twice_rest == divisor) & (quotient % 2 == 1))
    return (
        frame.with_columns(quotient=pl.col("cost") // divisor)
        .with_columns(twice_rest=2 * (pl.col("cost") - quotient * divisor))
        .with_columns(cost=quotient + round_up.cast(pl.Int64))
        .drop("quotient", "twice_rest")
    )


def _sku_hash(sku: pl.Expr) -> pl.Expr:
    """The 64-bit grouping key of a SKU string (a function so tests can force collisions)."""
    return sku.hash()


def _per_sku(union: pl.LazyFrame, by: str, per_rank: list[str]) -> pl.DataFrame:
    """Per catalog row (`idx`, in catalog order): each rank's minimum key."""
    return (
        union.group_by(by)
        .agg(pl.col("idx").min(), *[pl.col(k).min() for k in per_rank])
        .filter(pl.col("idx").is_not_null())
        .sort("idx")
        .select("idx", *per_rank)
        .collect()
    )


def _top(key_dtype: pl.DataType) -> int:
    """The largest key of the key type: sorts after every real key."""
    return (1 << (127 if key_dtype == pl.Int128() else 63)) - 1


def _with_best_runner_count(
    frame: pl.LazyFrame, per_rank: list[str], key_dtype: pl.DataType, *, missing_is_top: bool = False
) -> pl.LazyFrame:
    """Adds best_key, runner_key (the best of the other suppliers) and offer_count from per-rank minima.

    A rank without a candidate is null, or with `missing_is_top` holds the top key instead.
    """
    # Keys of different ranks never tie (the rank is in the key), so the runner-up is simply the
    # second smallest. A running (smallest, second) pair is ~4x faster than masking out the best, and
    # one stage per rank keeps polars from re-evaluating the chain (11 -> 7 ms on 1M rows).
    top = pl.lit(_top(key_dtype), dtype=key_dtype)
    present = [pl.col(k) != top if missing_is_top else pl.col(k).is_not_null() for k in per_rank]
    count = pl.sum_horizontal(present) if per_rank else pl.lit(0)
    frame = frame.with_columns(
        count.cast(pl.Int64).alias("offer_count"), _first=top, _second=top, _filled=top
    )
    for column in per_rank:
        filled = pl.col(column) if missing_is_top else pl.col(column).fill_null(top)
        frame = frame.with_columns(_filled=filled).with_columns(
            _first=pl.min_horizontal("_first", "_filled"),
            _second=pl.min_horizontal("_second", pl.max_horizontal("_first", "_filled")),
        )
    return frame.with_columns(
        best_key=pl.when(pl.col("_first") != top).then("_first"),
        runner_key=pl.when(pl.col("_second") != top).then("_second"),
    ).drop("_first", "_second", "_filled")


def _winners_carry_sku(
    chosen: pl.DataFrame, active_sku: pl.Series, offer_sku: pl.Series, per_rank: list[str], row_bits: int
) -> pl.LazyFrame:
    """One boolean: every rank's winning offer in row i of `chosen` is for active catalog SKU i."""
    # Grouped by SKU hash with one group per active catalog row, no two catalog SKUs share a hash.
    # If each group's winners all carry that row's SKU, no colliding foreign offer won, so each
    # rank's minimum over the group equals the minimum over the SKU's own offers: the result is
    # exactly the one grouping by the SKU string would give.
    row_mask = (1 << row_bits) - 1
    offer_sku_at = pl.lit(offer_sku)
    same_sku = [
        pl.col(k).is_null()
        | offer_sku_at.gather((pl.col(k) & row_mask).cast(pl.UInt64)).eq_missing(pl.col("sku"))
        for k in per_rank
    ]
    check = chosen.lazy().select(*per_rank).with_columns(sku=active_sku)
    return check.select(exact=pl.all_horizontal(True, *same_sku).all())


def _result(
    chosen: pl.DataFrame | pl.LazyFrame,
    rows: pl.DataFrame | pl.LazyFrame,
    offers: pl.DataFrame,
    ranked: list[str],
    per_rank: list[str],
    row_bits: int,
    key_dtype: pl.DataType,
    *,
    missing_is_top: bool = False,
) -> pl.LazyFrame:
    """BEST_OFFERS_SCHEMA rows from the per-SKU keys and the matching catalog rows (sku, category)."""
    rank_bits = max(1, len(ranked).bit_length())
    low_bits = row_bits + rank_bits
    names = pl.lit(pl.Series("names", ranked or [""], dtype=pl.String))
    best_row = (pl.col("best_key") % (1 << row_bits)).cast(pl.UInt64)
    cost_units = pl.col("best_key") // (1 << low_bits)
    runner_units = pl.col("runner_key") // (1 << low_bits)
    keys = _with_best_runner_count(chosen.lazy(), per_rank, key_dtype, missing_is_top=missing_is_top).drop(
        ["idx", *per_rank]
    )
    result = pl.concat([keys, rows.lazy()], how="horizontal").select(
        sku="sku",
        category="category",
        available=pl.col("best_key").is_not_null(),
        supplier=names.gather((pl.col("best_key") // (1 << row_bits)) % (1 << rank_bits)),
        cost=_units_to_money(cost_units),
        # Gathers inside the query, so polars runs them in parallel with the rest.
        supplier_price=pl.lit(offers.get_column("price").cast(MONEY)).gather(best_row),
        supplier_currency=pl.lit(offers.get_column("currency")).gather(best_row),
        stock=pl.lit(offers.get_column("stock")).gather(best_row),
        runner_up_supplier=names.gather((pl.col("runner_key") // (1 << row_bits)) % (1 << rank_bits)),
        runner_up_cost=_units_to_money(runner_units),
        offer_count="offer_count",
        # Exact either way; one conversion of the integer difference is half the work of two.
        spread=_units_to_money(runner_units - cost_units),
    )
    return result.select([pl.col(name).cast(dtype) for name, dtype in BEST_OFFERS_SCHEMA.items()])


def _by_row(found: pl.DataFrame, rows: int, per_rank: list[str], key_dtype: pl.DataType) -> pl.DataFrame:
    """Per catalog row, each rank's smallest key (the top key where none), from (slot, key) candidates.

    A candidate's slot is rank x rows + its catalog row: one scatter fills every rank's column at once.
    """
    slot = found.get_column("slot")
    if slot.len() > 1 and not (slot.slice(1) > slot.slice(0, slot.len() - 1)).all():
        # Not one listing per slot in order (a supplier listing a SKU twice): the minimum per slot first.
        found = found.group_by("slot").agg(pl.col("key").min())
        slot = found.get_column("slot")
    # The top key rather than null: scattering into a column without a validity mask is 2x faster.
    keys = pl.repeat(_top(key_dtype), rows * len(per_rank), dtype=key_dtype, eager=True)
    if slot.len():
        keys = keys.scatter(slot, found.get_column("key"))
    # `idx` (unused here) keeps the shape _result expects, and the height when no supplier is enabled.
    idx = pl.repeat(None, rows, dtype=pl.UInt32, eager=True).alias("idx")
    return pl.DataFrame([idx, *[keys.slice(r * rows, rows).alias(k) for r, k in enumerate(per_rank)]])


def _select_by_catalog_row(
    catalog: pl.DataFrame,
    offers: pl.DataFrame,
    candidates: pl.LazyFrame,
    ranked: list[str],
    per_rank: list[str],
    row_bits: int,
    key_dtype: pl.DataType,
) -> pl.DataFrame | None:
    """The selection placed by each offer's CATALOG_ROW, no SKU hashing; None when that is not exact.

    Exact only when every candidate offer's row holds its own SKU and no SKU has two catalog rows (then
    each SKU's candidates land on its one row, as grouping by the SKU would put them); both are checked
    here. Offers that are not candidates are never placed, so their rows do not matter.
    """
    at = offers.get_column(CATALOG_ROW)
    if at.null_count() or (offers.height and at.max() >= catalog.height):  # type: ignore[operator]
        return None
    catalog_sku = catalog.get_column("sku").rechunk()
    # Hashes of different strings can collide, but distinct hashes cannot belong to equal strings: all
    # hashes distinct proves all SKUs distinct (~15 ms on 1M rows, against a string n_unique's ~25).
    skus_distinct = pl.LazyFrame({"sku": catalog_sku}).select(pl.col("sku").hash().n_unique() == pl.len())
    # Only candidates can win or be counted, so only their rows must hold their SKU: checked in the
    # same pass that computes their keys (a separate pass over every offer cost ~13 ms more).
    slots = candidates.select(
        slot=pl.col("rank") * catalog.height + pl.col(CATALOG_ROW).cast(pl.Int64),
        key="key",
        holds=pl.lit(catalog_sku).gather(pl.col(CATALOG_ROW)) == pl.col("sku"),
    )
    # One collect_all, so polars runs the distinctness check beside the candidates.
    distinct_check, found = pl.collect_all([skus_distinct, slots])
    if not (distinct_check.item() and found.get_column("holds").all()):
        return None
    found = found.drop("holds")
    is_active = catalog.get_column("active").fill_null(False)
    # Both filtered inside the result's query (in parallel with its other work), and the catalog's two
    # columns only: filtering the whole frames first cost ~40 ms of ~300 on 1M SKUs.
    chosen = _by_row(found, catalog.height, per_rank, key_dtype).lazy().filter(is_active)
    active = catalog.lazy().select("sku", "category").filter(is_active)
    return _result(
        chosen, active, offers, ranked, per_rank, row_bits, key_dtype, missing_is_top=True
    ).collect()


def select_best_offers(
    catalog: pl.DataFrame,
    offers: pl.DataFrame,
    *,
    supplier_order: list[str],
    enabled: Collection[str],
    fx: Mapping[str, Decimal],
    now: datetime,
    staleness_ttl: timedelta,
) -> pl.DataFrame:
    """One BEST_OFFERS_SCHEMA row per active catalog SKU: chosen offer, runner-up, count, spread."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    ranked = tie_break_order(supplier_order, enabled)
    rate_decimals = _rate_decimals(fx)

    # Every offer becomes one integer that sorts by (cost, tie-break rank, row): min() is then the
    # whole selection rule, and the row says where the winner's other fields are. Int64 when the
    # largest possible key fits (the fast path), else Int128 (always fits: cost < 10^20 < 2^67).
    row_bits = max(1, offers.height.bit_length())
    rank_bits = max(1, len(ranked).bit_length())
    low_bits = row_bits + rank_bits
    units = pl.col("price").cast(MONEY).to_physical()  # both bounds in one parallel pass
    low, high = (
        offers.select(units.min().alias("low"), units.max().alias("high")).row(0) if offers.height else (0, 0)
    )
    max_units = max(abs(low or 0), abs(high or 0))
    max_rate = max((int(r.scaleb(rate_decimals)) for r in fx.values()), default=0)
    max_cost_units = max_units * max_rate // 10**rate_decimals + 1
    fits_int64 = max_units * max_rate < 2**62 and (max_cost_units + 1) << low_bits < 2**63
    key_dtype = pl.Int64() if fits_int64 else pl.Int128()

    rules = candidate_rules(rank=pl.col("rank"), now=now, staleness_ttl=staleness_ttl)
    key = (
        pl.col("cost").cast(key_dtype) * (1 << low_bits)
        + pl.col("rank") * (1 << row_bits)
        + pl.col("row").cast(key_dtype)
    )
    per_rank = [f"k{r}" for r in range(len(ranked))]
    fresh = (
        offers.lazy()
        .with_row_index("row")
        .with_columns(rank=supplier_rank(ranked, key_dtype))
        .filter(*[condition for _, condition in rules])
    )
    aligned = CATALOG_ROW in offers.columns and key_dtype == pl.Int64()
    costed = (
        _with_cost_units(fresh, fx, key_dtype)
        .select("sku", "rank", *([CATALOG_ROW] if aligned else []), key=key)
        .filter(pl.col("key").is_not_null())  # NO_RATE: no cost in the store currency
    )
    if aligned:
        # Offers that carry their catalog row (as stored by the supplier steps) skip the hash
        # group_by; if any row does not hold its offer's SKU, the group_by below decides instead.
        placed = _select_by_catalog_row(catalog, offers, costed, ranked, per_rank, row_bits, key_dtype)
        if placed is not None:
            return placed
    candidates = (
        costed
        # One column per supplier, then plain min() per SKU: polars' fast aggregation path, and it
        # collapses a supplier's duplicate listings so the runner-up is always another supplier.
        .select(
            "sku",
            pl.lit(None, dtype=pl.UInt32).alias("idx"),
            *[pl.when(pl.col("rank") == r).then(pl.col("key")).alias(k) for r, k in enumerate(per_rank)],
        )
    )
    active = catalog.lazy().filter(pl.col("active").fill_null(False)).select("sku", "category").collect()
    # The active catalog rides along in the same group_by (its row number as `idx`) instead of a
    # separate join afterwards: one hash pass over the SKUs instead of two.
    catalog_rows = (
        active.lazy()
        .with_row_index("idx")
        .select("sku", "idx", *[pl.lit(None, dtype=key_dtype).alias(k) for k in per_rank])
    )
    union = pl.concat([catalog_rows, candidates])
    # Grouping by a 64-bit hash of the SKU is ~1.6x faster than by the string. Whether a collision
    # could have changed the answer is checked exactly, alongside building the result; if so, the
    # SKU string is the key instead.
    chosen = _per_sku(union.with_columns(h=_sku_hash(pl.col("sku"))), "h", per_rank)
    if chosen.height == active.height:  # one group per active row: row i of `chosen` is active row i
        check = _winners_carry_sku(
            chosen, active.get_column("sku"), offers.get_column("sku").rechunk(), per_rank, row_bits
        )
        exact, result = pl.collect_all(
            [check, _result(chosen, active, offers, ranked, per_rank, row_bits, key_dtype)]
        )
        if exact.item():
            return result
    chosen = _per_sku(union, "sku", per_rank)
    rows = active.select(pl.all().gather(chosen.get_column("idx")))
    return _result(chosen, rows, offers, ranked, per_rank, row_bits, key_dtype).collect()
