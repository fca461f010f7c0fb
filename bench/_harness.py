"""Shared benchmark plumbing: alternate project and baseline runs, take medians, print one line."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


def scale() -> float:
    """BENCH_SCALE (default 1.0) shrinks or grows every benchmark's data size."""
    return float(os.environ.get("BENCH_SCALE", "1.0"))


def scaled(n: int, minimum: int = 1) -> int:
    """n multiplied by BENCH_SCALE, at least `minimum`."""
    return max(minimum, int(n * scale()))


@dataclass
class Timing:
    """Median wall times of the project path and the baseline over alternating repetitions."""

    project: float
    baseline: float
    project_runs: list[float]
    baseline_runs: list[float]

    @property
    def ratio(self) -> float:
        """Project time / baseline time: lower is better."""
        return self.project / self.baseline


def alternate(
    project: Callable[[], object], baseline: Callable[[], object], repeats: int = 5, warmup: int = 1
) -> Timing:
    """Time both callables alternately (baseline first each round) after warm-up runs."""
    for _ in range(warmup):
        baseline()
        project()
    project_runs: list[float] = []
    baseline_runs: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        baseline()
        baseline_runs.append(time.perf_counter() - start)
        start = time.perf_counter()
        project()
        project_runs.append(time.perf_counter() - start)
    return Timing(
        statistics.median(project_runs), statistics.median(baseline_runs), project_runs, baseline_runs
    )


def line(name: str, ratio: float, target: float, detail: str) -> str:
    """The docs/architecture.md §10 closing line."""
    return f"{name}: ratio {ratio:.2f} (target <= {target:g}) {detail}"
