"""scale: the sweep at 1M and at 10M SKUs x 4 suppliers; time per SKU at the largest size over the smallest.

What is measured. For each catalog size, `bench/sweep.py`'s deployment (four `cdn_file` suppliers whose
feeds are cached in the warehouse, the real `price_sweep` sensor planning one full cycle, each run a
fresh `dagster job execute` process on the deployment's SQLite instance, one after another) prices
every SKU once. The ratio is wall time per SKU of the largest size over that of the smallest: 1.0 means
the sweep grows linearly with the catalog.

Batches grow with the catalog: `batches_for` keeps a batch at 62,500 SKUs (the default 16 batches of a
1M-SKU catalog), so a run of `sweep_batches_per_run` (16) batches holds ~1M SKUs at any catalog size and
a 10M catalog is swept by 10 runs of that size instead of one run holding 10M SKUs (docs/scaling.md).

The detail gives peak RSS of the run processes (the kernel's high-water mark of each exited run, wait4;
goal <= 8 GiB at 10M) and where the time goes; the per-stage table (step time from each run's event log,
STEP_START -> STEP_SUCCESS, and the highest RSS polled from /proc while the step ran) goes to stderr as
Markdown, for docs/scaling.md.

Knobs: BENCH_SCALE_SIZES (catalog sizes in millions of SKUs, comma-separated, default "1,10"; the first
and last give the ratio), BENCH_SCALE_REPEATS (sweeps per size, the median is used; default 1: a 10M
sweep takes minutes), BENCH_SWEEP_MINUTES (the sensor's grouping; default SERVICE_CONFIG's).
"""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from bench._harness import line
from bench._sweep_location import DEPLOYED_JOB
from bench.sweep import RunTiming, SweepTiming, deployment, project_sweep, sensor_plan
from pricing_assets.partitions import catalog_batch_partitions
from resources.config import Registry, ServiceConfig

NAME = "scale"
TARGET = 1.2
MEMORY_GOAL = 8 * 2**30  # bytes, for a run at the largest size
BATCH_SKUS = 62_500  # 1M SKUs / the default 16 batches
POLL_SECONDS = 0.2
STAGES = ("supplier_offers", "best_offers", "storefront_prices", "checks")


def max_batches() -> int:
    """The largest `catalog_batches` the registry accepts (resources/config.py)."""
    limits = Registry.model_fields["catalog_batches"].metadata
    return next(int(limit.le) for limit in limits if hasattr(limit, "le"))


def batches_for(skus: int, batch_skus: int = BATCH_SKUS) -> int:
    """Catalog batches for a catalog of `skus`: batches of ~batch_skus each, within the registry's limit."""
    return max(1, min(max_batches(), round(skus / batch_skus)))


def parse_sizes(raw: str) -> list[int]:
    """'1,10' (millions of SKUs, fractions allowed) -> [1_000_000, 10_000_000]."""
    sizes = [int(float(part) * 1_000_000) for part in raw.split(",") if part.strip()]
    if not sizes or min(sizes) < 1000:
        raise ValueError(f"BENCH_SCALE_SIZES needs sizes of at least 0.001 (1000 SKUs), got {raw!r}")
    return sizes


def stage_of(step_key: str) -> str:
    """The stage a step key belongs to: the four supplier steps are one stage, the price checks another."""
    if step_key.startswith("supplier_offers"):
        return "supplier_offers"
    return step_key if step_key in ("best_offers", "storefront_prices") else "checks"


@dataclass
class SizeResult:
    """One catalog size: its sweep (the median one) and how it was cut."""

    skus: int
    batches: int
    sweep: SweepTiming

    @property
    def runs(self) -> list[RunTiming]:
        """The sweep's runs."""
        return self.sweep.runs

    @property
    def per_sku(self) -> float:
        """Sweep wall time per SKU, seconds."""
        return self.sweep.wall / self.skus

    @property
    def peak_rss(self) -> int:
        """The highest peak RSS of any run process, bytes."""
        return max(r.peak_rss for r in self.runs)

    def stage_seconds(self, stage: str) -> float:
        """Step time of one stage summed over the sweep's runs."""
        return sum(t for r in self.runs for key, t in r.steps.items() if stage_of(key) == stage)

    def stage_peak(self, stage: str) -> int:
        """Highest RSS polled while a step of the stage ran, over all runs, bytes."""
        peaks = [p for r in self.runs for key, p in r.step_peaks.items() if stage_of(key) == stage]
        return max(peaks, default=0)

    @property
    def startup(self) -> float:
        """Process start-up until RUN_START, summed over runs."""
        return sum(r.startup for r in self.runs)

    @property
    def other(self) -> float:
        """Wall time neither in start-up nor in steps: step orchestration, event writes, exit."""
        return self.sweep.wall - self.startup - sum(r.in_steps for r in self.runs)


def gib(size: int) -> str:
    """Bytes as GiB with two decimals."""
    return f"{size / 2**30:.2f} GiB"


def millions(skus: int) -> str:
    """1_000_000 -> '1M', 2_500_000 -> '2.5M', 20_000 -> '0.02M'."""
    return f"{skus / 1_000_000:g}M"


def per_sku_ratio(small: SizeResult, large: SizeResult) -> float:
    """Time per SKU at the large size over time per SKU at the small one."""
    return large.per_sku / small.per_sku


def stage_table(results: Sequence[SizeResult]) -> str:
    """Per size: wall, start-up, each stage's time (and peak RSS while it ran), the rest, as Markdown."""
    head = ["SKUs", "batches / runs", "sweep wall", "us/SKU", "start-up", *STAGES, "other", "run peak RSS"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for result in results:
        stages = [
            f"{result.stage_seconds(stage):.1f} s ({result.stage_peak(stage) / 2**30:.2f} GiB)"
            for stage in STAGES
        ]
        cells = [
            millions(result.skus),
            f"{result.batches} / {len(result.runs)}",
            f"{result.sweep.wall:.1f} s",
            f"{result.per_sku * 1e6:.2f}",
            f"{result.startup:.1f} s",
            *stages,
            f"{result.other:.1f} s",
            gib(result.peak_rss),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def measure_size(skus: int, sweep_minutes: int, repeats: int) -> SizeResult:
    """Seed a catalog of `skus`, sweep it `repeats` times through the deployment, keep the median sweep."""
    batches = batches_for(skus)
    plan = sensor_plan(catalog_batch_partitions(batches), sweep_minutes)
    with deployment(skus, batches) as deployed:
        sweeps = [
            project_sweep(deployed.home, deployed.env, plan, DEPLOYED_JOB, POLL_SECONDS)
            for _ in range(repeats)
        ]
    median = sorted(sweeps, key=lambda sweep: sweep.wall)[len(sweeps) // 2]
    return SizeResult(skus, batches, median)


def run() -> str:
    """Sweep each size; return the result line, the per-stage table to stderr."""
    sizes = parse_sizes(os.environ.get("BENCH_SCALE_SIZES", "1,10"))
    repeats = int(os.environ.get("BENCH_SCALE_REPEATS", "1"))
    sweep_minutes = int(os.environ.get("BENCH_SWEEP_MINUTES") or ServiceConfig().sweep_minutes)
    load = os.getloadavg()[0]
    results = [measure_size(skus, sweep_minutes, repeats) for skus in sizes]
    print(stage_table(results), file=sys.stderr, flush=True)
    small, large = results[0], results[-1]
    sizes_text = ", ".join(
        f"{millions(r.skus)}: {r.sweep.wall:.1f} s ({r.per_sku * 1e6:.2f} us/SKU, {r.batches} batches, "
        f"{len(r.runs)} run(s), peak RSS {gib(r.peak_rss)})"
        for r in results
    )
    per_run = statistics.median(r.wall for r in large.runs)
    detail = (
        f"{sizes_text}; peak RSS at {millions(large.skus)} {gib(large.peak_rss)} "
        f"(goal <= {gib(MEMORY_GOAL)}); "
        f"at {millions(large.skus)}: start-up {large.startup:.1f} s, "
        + ", ".join(f"{stage} {large.stage_seconds(stage):.1f} s" for stage in STAGES)
        + f", other {large.other:.1f} s, median run {per_run:.1f} s; 4 file suppliers, sweep_minutes="
        f"{sweep_minutes}, {repeats} sweep(s) per size, load average {load:.2f} at start"
    )
    return line(NAME, per_sku_ratio(small, large), TARGET, detail)


if __name__ == "__main__":
    print(run())
