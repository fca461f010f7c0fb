"""The best_offers benchmark runs end to end at a tiny scale and prints the docs/architecture.md §10 line."""

from __future__ import annotations

import re

import polars as pl
import pytest

from bench import best_offers as bench


def test_bench_data_is_deterministic_and_shaped() -> None:
    catalog, offers = bench.make_data(500)
    again_catalog, again_offers = bench.make_data(500)
    assert catalog.equals(again_catalog) and offers.equals(again_offers)
    assert offers.height == 500 * len(bench.SUPPLIERS)
    assert set(offers.get_column("currency").unique()) == {"EUR", "USD", "GBP"}
    assert offers.get_column("stock").null_count() > 0
    assert bench.make_data(500, seed=1)[1].get_column("price").equals(offers.get_column("price")) is False


def test_bench_line_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_SCALE", "0.002")
    line = bench.run()
    assert re.fullmatch(
        r"best_offers: ratio \d+\.\d\d \(target <= 2\) project \d+ ms, baseline \d+ ms .*", line
    )
    assert "2,000 SKUs" in line


def test_bench_project_path_agrees_with_the_baseline_minimum() -> None:
    # Sanity: with every supplier in the store currency and all offers fresh and in stock, the chosen
    # cost is exactly the bare minimum price.
    catalog, offers = bench.make_data(300)
    offers = offers.with_columns(
        currency=pl.lit("EUR"),
        stock=pl.lit(1, dtype=pl.Int64),
        fetched_at=pl.lit(bench.NOW).dt.cast_time_unit("us"),
    )
    best = bench.select_best_offers(
        catalog,
        offers,
        supplier_order=list(bench.SUPPLIERS),
        enabled=bench.SUPPLIERS,
        fx=bench.FX,
        now=bench.NOW,
        staleness_ttl=bench.TTL,
    )
    minimum = offers.group_by("sku").agg(pl.col("price").min().alias("min"))
    joined = best.join(minimum, on="sku")
    assert joined.height == best.height > 0
    assert (joined.get_column("cost") == joined.get_column("min")).all()
