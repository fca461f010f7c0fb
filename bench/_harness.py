"""Shared benchmark plumbing: alternate project and baseline runs, take medians, print one line; the
environment of the deployment processes a benchmark starts."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A storefront nobody answers at (the discard port), for deployments whose runs never push.
NO_STOREFRONT = "http://127.0.0.1:9/storefront"


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


def deployment_env(
    *,
    home: Path | None,
    warehouse: Path | str,
    registry: Path,
    service_config: Mapping[str, Any],
    storefront_url: str = NO_STOREFRONT,
    storefront_secret: str = "unused",
    environ: Mapping[str, str] | None = None,
    scrubbed: Collection[str] = (),
) -> dict[str, str]:
    """The environment of a deployment's processes: `environ` (or os.environ) less `scrubbed`, then theirs."""
    # For dagster-daemon, dagster-webserver, code servers, run workers, `dagster job ...`: their own
    # DAGSTER_HOME (None: the caller sets it), warehouse, supplier registry, SERVICE_CONFIG and
    # storefront, and Python's warnings off.
    env = {k: v for k, v in (os.environ if environ is None else environ).items() if k not in scrubbed}
    if home is not None:
        env["DAGSTER_HOME"] = str(home)
    env.update(
        {
            "WAREHOUSE_DIR": str(warehouse),
            "SUPPLIER_REGISTRY": str(registry),
            "SERVICE_CONFIG": json.dumps(service_config),
            "STOREFRONT_URL": storefront_url,
            "STOREFRONT_WEBHOOK_SECRET": storefront_secret,
            "PYTHONWARNINGS": "ignore",
        }
    )
    return env
