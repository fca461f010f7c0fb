"""The scale benchmark's pure parts: batches as the catalog grows, sizes, stages, the ratio, the table."""

import pytest

from bench import scale
from bench.sweep import RunTiming, SweepTiming, target_for
from resources.config import Registry


def test_batches_keep_their_size_as_the_catalog_grows() -> None:
    assert scale.batches_for(1_000_000) == 16  # the default of a 1M catalog
    assert scale.batches_for(3_000_000) == 48
    assert scale.batches_for(10_000_000) == 160
    assert scale.batches_for(20_000) == 1  # never zero batches


def test_batches_stop_at_the_registry_limit() -> None:
    limit = scale.max_batches()
    assert limit == 1000
    assert scale.batches_for(100_000_000) == limit
    Registry(catalog_batches=limit, suppliers=[])
    with pytest.raises(ValueError):
        Registry(catalog_batches=limit + 1, suppliers=[])


def test_sizes_are_millions() -> None:
    assert scale.parse_sizes("1,10") == [1_000_000, 10_000_000]
    assert scale.parse_sizes(" 0.02, 3 ") == [20_000, 3_000_000]
    with pytest.raises(ValueError):
        scale.parse_sizes("0.0001")
    with pytest.raises(ValueError):
        scale.parse_sizes("")


def test_steps_fall_into_stages() -> None:
    assert scale.stage_of("supplier_offers__alpha") == "supplier_offers"
    assert scale.stage_of("best_offers") == "best_offers"
    assert scale.stage_of("storefront_prices") == "storefront_prices"
    assert scale.stage_of("storefront_prices_not_below_floor") == "checks"


def _run(wall: float, peak: int, steps: dict[str, float], step_peaks: dict[str, int]) -> RunTiming:
    return RunTiming(
        wall=wall,
        startup=2.0,
        in_steps=sum(steps.values()),
        peak_rss=peak,
        steps=steps,
        step_peaks=step_peaks,
    )


def test_ratio_is_time_per_sku_and_the_table_sums_runs() -> None:
    steps = {"supplier_offers__alpha": 1.0, "supplier_offers__beta": 1.5, "best_offers": 2.0}
    small = scale.SizeResult(1_000_000, 16, SweepTiming([_run(10.0, 2**30, steps, {"best_offers": 2**29})]))
    large = scale.SizeResult(
        10_000_000,
        160,
        SweepTiming([_run(12.0, 3 * 2**30, steps, {"best_offers": 2**30}) for _ in range(10)]),
    )
    assert scale.per_sku_ratio(small, large) == pytest.approx(1.2)
    assert large.peak_rss == 3 * 2**30
    assert large.stage_seconds("supplier_offers") == pytest.approx(25.0)
    assert large.startup == pytest.approx(20.0)
    assert large.other == pytest.approx(120.0 - 20.0 - 45.0)
    table = scale.stage_table([small, large]).splitlines()
    assert len(table) == 4
    assert table[3].startswith(
        "| 10M | 160 / 10 | 120.0 s | 12.00 | 20.0 s | 25.0 s (0.00 GiB) | 20.0 s (1.00 GiB)"
    )
    assert table[3].endswith("| 3.00 GiB |")
    line = scale.line(scale.NAME, scale.per_sku_ratio(small, large), scale.TARGET, "x")
    assert line == "scale: ratio 1.20 (target <= 1.2) x"


def test_the_sweep_bench_prints_the_target_of_its_catalog_size():
    assert target_for(1_000_000) == 1.5
    assert target_for(4_000_000) == target_for(10_000_000) == 1.1
