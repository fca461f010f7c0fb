"""best_offers' per-batch metadata: every number is that batch's, over its available SKUs."""

from __future__ import annotations

from decimal import Decimal

import polars as pl

from pricing_assets.best_offers import best_offers_metadata


def _best() -> pl.DataFrame:
    """Two batches; the unavailable rows carry a supplier and a spread that must not count."""
    rows = [
        # batch, available, supplier, offer_count, spread
        ("b1", True, "alpha", 1, "1.00"),
        ("b1", True, "alpha", 2, "3.00"),
        ("b1", True, "beta", 3, "2.00"),
        ("b1", True, "beta", 2, None),  # a winner without a runner-up: no spread
        ("b1", False, "omega", 1, "100.00"),
        ("b2", True, "beta", 1, "5.00"),
        ("b2", False, "alpha", 2, "50.00"),
        ("b2", False, None, 0, None),
    ]
    return pl.DataFrame(
        {
            "batch": [r[0] for r in rows],
            "available": [r[1] for r in rows],
            "supplier": [r[2] for r in rows],
            "offer_count": pl.Series([r[3] for r in rows], dtype=pl.Int64),
            "spread": pl.Series([Decimal(r[4]) if r[4] else None for r in rows], dtype=pl.Decimal(20, 4)),
        }
    )


def _values(metadata: dict) -> dict:
    return {key: value.value for key, value in metadata.items()}


def test_each_batch_counts_only_its_available_skus() -> None:
    meta = best_offers_metadata(
        _best(), {"b1": 12, "b2": 4}, ["alpha", "beta", "omega"], ["alpha", "beta"], ["b1", "b2", "b3"]
    )
    assert _values(meta["b1"]) == {
        "skus": 5,
        "available": 4,
        "unavailable": 1,
        "offers_considered": 12,
        "suppliers_used": 2,  # omega's row is unavailable
        "suppliers_disabled": "omega",
        "chosen_alpha": 2,
        "chosen_beta": 2,
        "chosen_omega": 0,
        "single_offer_skus": 1,  # the unavailable single offer does not count
        "spread_mean": 2.0,  # 1, 3, 2 (the null skipped; omega's 100 unavailable)
        "spread_median": 2.0,
        "spread_p90": 3.0,
        "spread_max": 3.0,
    }
    b2 = _values(meta["b2"])
    assert (b2["skus"], b2["available"], b2["suppliers_used"], b2["chosen_alpha"], b2["chosen_beta"]) == (
        3,
        1,
        1,
        0,
        1,
    )
    assert (b2["spread_mean"], b2["spread_max"], b2["single_offer_skus"]) == (5.0, 5.0, 1)
    # A batch of the run without rows still gets every key, at zero.
    assert _values(meta["b3"]) == {**{key: 0 for key in meta["b3"]}, "suppliers_disabled": "omega"} | {
        name: 0.0 for name in ("spread_mean", "spread_median", "spread_p90", "spread_max")
    }
