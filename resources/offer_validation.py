"""Validation of supplier offers: pandera (polars backend) decides; rejects are quarantined with a reason."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

import pandera.polars as pa
import polars as pl
from pandera.config import ValidationDepth, config_context
from pandera.errors import SchemaErrors

from resources.schemas import OFFERS_SCHEMA, QUARANTINE_SCHEMA, UTC_TS, conform

# Columns every supplier parser hands to validate_offers (the CDN parser too).
RAW_OFFERS_SCHEMA: dict[str, pl.DataType] = {
    "sku": pl.String(),
    "price": pl.String(),  # decimal text in major units
    "currency": pl.String(),
    "stock": pl.Int64(),
    "in_stock": pl.Boolean(),
    "raw": pl.String(),  # the original record as JSON
}

# Wide enough that any plausible price text parses; the contract's MONEY is applied after the checks.
_PARSE_DECIMAL = pl.Decimal(38, 4)

# Reasons, in the order they are listed when a row breaks several rules.
MISSING_SKU = "missing sku"
MISSING_PRICE = "missing price"
PRICE_NOT_A_NUMBER = "price is not a decimal number"
PRICE_NOT_POSITIVE = "price <= 0"
ABSURD_PRICE = "absurd price"
MISSING_CURRENCY = "missing currency"
UNKNOWN_CURRENCY = "unknown currency"
NEGATIVE_STOCK = "negative stock"
ABSURD_STOCK = "absurd stock"
CONFLICTING_DUPLICATE = "conflicting duplicate sku"
REASONS: tuple[str, ...] = (
    MISSING_SKU,
    MISSING_PRICE,
    PRICE_NOT_A_NUMBER,
    PRICE_NOT_POSITIVE,
    ABSURD_PRICE,
    MISSING_CURRENCY,
    UNKNOWN_CURRENCY,
    NEGATIVE_STOCK,
    ABSURD_STOCK,
    CONFLICTING_DUPLICATE,
)
_NULL_REASONS = {"sku": MISSING_SKU, "price_text": MISSING_PRICE, "currency": MISSING_CURRENCY}


def _parses_as_decimal(data: pa.PolarsData) -> pl.LazyFrame:
    return data.lazyframe.select(
        pl.col(data.key).is_null() | pl.col(data.key).cast(_PARSE_DECIMAL, strict=False).is_not_null()
    )


def _no_conflicting_duplicate(data: pa.PolarsData) -> pl.LazyFrame:
    # Identical copies were collapsed before validation, so any remaining repeat disagrees.
    return data.lazyframe.select(pl.col(data.key).is_null() | pl.col(data.key).is_duplicated().not_())


def offers_schema(*, known_currencies: set[str], max_price: Decimal, max_stock: int) -> pa.DataFrameSchema:
    """The pandera schema an offer row must satisfy; each check's error text is its quarantine reason."""
    return pa.DataFrameSchema(
        {
            "sku": pa.Column(
                pl.String,
                nullable=False,
                checks=[pa.Check(_no_conflicting_duplicate, error=CONFLICTING_DUPLICATE)],
            ),
            "price_text": pa.Column(
                pl.String,
                nullable=False,
                checks=[pa.Check(_parses_as_decimal, error=PRICE_NOT_A_NUMBER)],
            ),
            "price": pa.Column(
                _PARSE_DECIMAL,
                nullable=True,
                checks=[
                    pa.Check.gt(Decimal(0), error=PRICE_NOT_POSITIVE),
                    pa.Check.le(max_price, error=ABSURD_PRICE),
                ],
            ),
            "currency": pa.Column(
                pl.String,
                nullable=False,
                checks=[pa.Check.isin(sorted(known_currencies), error=UNKNOWN_CURRENCY)],
            ),
            "stock": pa.Column(
                pl.Int64,
                nullable=True,
                checks=[
                    pa.Check.ge(0, error=NEGATIVE_STOCK),
                    pa.Check.le(max_stock, error=ABSURD_STOCK),
                ],
            ),
            "in_stock": pa.Column(pl.Boolean, nullable=True),
        },
        strict=False,
        coerce=False,
        name="supplier_offers",
    )


def _normalize(raw: pl.DataFrame, carry: Sequence[str] = ()) -> pl.DataFrame:
    missing = [name for name in [*RAW_OFFERS_SCHEMA, *carry] if name not in raw.columns]
    if missing:
        raise ValueError(f"raw offers frame is missing columns: {', '.join(missing)}")
    frame = raw.select([*(pl.col(name).cast(dtype) for name, dtype in RAW_OFFERS_SCHEMA.items()), *carry])
    blank_to_null = {
        "sku": pl.col("sku").str.strip_chars(),
        "price_text": pl.col("price").str.strip_chars(),
        "currency": pl.col("currency").str.strip_chars().str.to_uppercase(),
    }
    frame = frame.with_columns(
        [
            pl.when(expr.str.len_chars() > 0).then(expr).otherwise(None).alias(name)
            for name, expr in blank_to_null.items()
        ]
    ).with_columns(price=pl.col("price_text").cast(_PARSE_DECIMAL, strict=False))
    # A known stock count decides availability: stock 0 with in_stock=true would invite overselling.
    frame = frame.with_columns(
        in_stock=pl.when(pl.col("stock").is_not_null())
        .then(pl.col("stock") > 0)
        .otherwise(pl.col("in_stock").fill_null(False))
    )
    # Identical copies of one offer are one offer; the key uses parsed values so "9.5" equals "9.50".
    frame = frame.with_columns(_price_key=pl.coalesce(pl.col("price").cast(pl.String), pl.col("price_text")))
    frame = frame.unique(
        subset=["sku", "_price_key", "currency", "stock", "in_stock"], keep="first", maintain_order=True
    )
    return frame.drop("_price_key").with_row_index("_row")


def _failed_rows(frame: pl.DataFrame, schema: pa.DataFrameSchema) -> pl.DataFrame:
    """Row number -> reason for every failed check, read from pandera's failure cases."""
    try:
        with config_context(validation_enabled=True, validation_depth=ValidationDepth.SCHEMA_AND_DATA):
            schema.validate(frame.drop("_row", "raw"), lazy=True)
    except SchemaErrors as errors:
        cases = errors.failure_cases
        summary = str(errors)
    else:
        return pl.DataFrame(schema={"_row": pl.UInt32(), "reason": pl.String()})
    if cases.get_column("index").null_count():
        # A failure without row numbers is a schema (dtype) error: a bug in a parser, not bad data.
        raise ValueError(f"offers frame does not fit the validation schema: {summary}")
    return cases.select(
        pl.col("index").cast(pl.UInt32).alias("_row"),
        pl.when(pl.col("check") == "not_nullable")
        .then(pl.col("column").replace_strict(_NULL_REASONS, default=None))
        .otherwise(pl.col("check"))
        .alias("reason"),
    )


def validate_offers(
    raw: pl.DataFrame,
    *,
    supplier: str,
    known_currencies: set[str],
    fetched_at: datetime,
    max_price: Decimal = Decimal("100000"),
    max_stock: int = 10_000_000,
    carry: Sequence[str] = (),
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split raw offers into (valid offers: OFFERS_SCHEMA, rejected rows with reasons: QUARANTINE_SCHEMA).

    `carry`: columns of `raw` that both outputs keep, after their contract's, as they are.
    """
    if fetched_at.tzinfo is None:
        raise ValueError("fetched_at must be timezone-aware (UTC)")
    fetched_at = fetched_at.astimezone(UTC)
    frame = _normalize(raw, carry)
    schema = offers_schema(
        known_currencies={code.upper() for code in known_currencies},
        max_price=max_price,
        max_stock=max_stock,
    )
    failed = _failed_rows(frame, schema)
    order = {reason: index for index, reason in enumerate(REASONS)}
    reasons = (
        failed.unique()
        .with_columns(
            _order=pl.col("reason").replace_strict(order, default=len(order), return_dtype=pl.Int64)
        )
        .sort("_row", "_order")
        .group_by("_row", maintain_order=True)
        .agg(pl.col("reason").str.join("; "))
    )
    stamped = frame.with_columns(
        supplier=pl.lit(supplier, dtype=pl.String),
        fetched_at=pl.lit(fetched_at, dtype=UTC_TS),
    )
    offers = conform(stamped.join(reasons, on="_row", how="anti"), OFFERS_SCHEMA, carry)
    quarantine = conform(stamped.join(reasons, on="_row", how="inner").sort("_row"), QUARANTINE_SCHEMA, carry)
    return offers, quarantine
