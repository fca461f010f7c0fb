"""`python -m bench event_writes`: what batched event writes save on the production instance (PostgreSQL).

A ranged run of 10 chained assets over the 16 catalog batches whose steps do nothing, so its time is
Dagster's own: run and step events, a planned and a stored materialization per asset and batch (357
events). Project: the production instance (deploy/postgres/dagster.yaml, a fresh database) with
DAGSTER_EVENT_BATCH_SIZE as the Kubernetes ConfigMap sets it (docs/decisions.md, "Batched event writes on
PostgreSQL"); baseline: the same instance with the variable at 0, one write per event. The line also
gives the local SQLite instance (dagster.yaml). Runs alternate in this process: Dagster reads the
variable at every event. Knob: BENCH_EVENT_WRITES_REPEATS (default 3).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import dagster as dg

from bench._harness import line
from bench.cycle import BATCH_SIZE_ENV, ROOT, instance_config
from pricing_assets.partitions import catalog_batch_partitions

ASSETS = 10
BATCHES = 16
TARGET = 0.75


class _Discard(dg.IOManager):
    """Stores nothing: the run's time is its events."""

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        """Nothing to write."""

    def load_input(self, context: dg.InputContext) -> None:
        """Nothing to read."""


def chain() -> list[dg.AssetsDefinition]:
    """ASSETS partitioned assets, each depending on the previous one, one step per asset."""
    partitions = catalog_batch_partitions(BATCHES)
    assets: list[dg.AssetsDefinition] = []
    for index in range(ASSETS):

        @dg.asset(
            name=f"link_{index}",
            partitions_def=partitions,
            backfill_policy=dg.BackfillPolicy.single_run(),
            deps=assets[-1:],
            io_manager_key="discard",
        )
        def link() -> None:
            """No work of its own."""

        assets.append(link)
    return assets


@contextlib.contextmanager
def instance(config: Path, env: dict[str, str]) -> Iterator[dg.DagsterInstance]:
    """A DagsterInstance from `config` in a temp DAGSTER_HOME, with `env` (the PostgreSQL URL) set."""
    home = Path(tempfile.mkdtemp(prefix="bench-event-writes-"))
    shutil.copy(config, home / "dagster.yaml")
    try:
        with (
            mock.patch.dict(os.environ, {**env, "DAGSTER_HOME": str(home)}),
            dg.DagsterInstance.from_config(str(home)) as opened,
        ):
            yield opened
    finally:
        shutil.rmtree(home, ignore_errors=True)


def timed_run(
    target: dg.DagsterInstance, assets: list[dg.AssetsDefinition], batch_size: str
) -> tuple[float, int]:
    """(seconds, events stored) of one ranged run over every batch with DAGSTER_EVENT_BATCH_SIZE set."""
    keys = catalog_batch_partitions(BATCHES).get_partition_keys()
    tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
    with mock.patch.dict(os.environ, {BATCH_SIZE_ENV: batch_size}):
        started = time.perf_counter()
        result = dg.materialize(assets, instance=target, tags=tags, resources={"discard": _Discard()})
        seconds = time.perf_counter() - started
    if not result.success:
        raise RuntimeError(f"bench event_writes: run {result.run_id} failed")
    return seconds, len(target.all_logs(result.run_id))


def run() -> str:
    """Alternate unbatched PostgreSQL, batched PostgreSQL and SQLite runs; print the closing line."""
    repeats = int(os.environ.get("BENCH_EVENT_WRITES_REPEATS", "3"))
    assets = chain()
    runs: dict[str, list[float]] = {"off": [], "batched": [], "sqlite": []}
    events = 0
    with (
        instance_config("postgres") as (pg_config, pg_env),
        instance(pg_config, {k: v for k, v in pg_env.items() if k != BATCH_SIZE_ENV}) as postgres,
        instance(ROOT / "dagster.yaml", {}) as sqlite,
    ):
        batch_size = pg_env[BATCH_SIZE_ENV]
        for target in (postgres, sqlite):  # warm-up: tables, imports, caches
            timed_run(target, assets, "0")
        for _ in range(repeats):
            runs["off"].append(timed_run(postgres, assets, "0")[0])
            seconds, events = timed_run(postgres, assets, batch_size)
            runs["batched"].append(seconds)
            runs["sqlite"].append(timed_run(sqlite, assets, "0")[0])
    median = {name: statistics.median(values) for name, values in runs.items()}

    def each(name: str) -> str:
        return ", ".join(f"{value:.2f}" for value in runs[name])

    detail = (
        f"batched PostgreSQL {median['batched']:.2f} s (each: {each('batched')}, "
        f"DAGSTER_EVENT_BATCH_SIZE={batch_size}), unbatched {median['off']:.2f} s (each: {each('off')}), "
        f"SQLite {median['sqlite']:.2f} s (each: {each('sqlite')}); median of {repeats}; a ranged run of "
        f"{ASSETS} assets x {BATCHES} batches doing nothing else, {events} events"
    )
    return line("event_writes", median["batched"] / median["off"], TARGET, detail)
