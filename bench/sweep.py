"""sweep: pricing 1M SKUs through Dagster, runs launched as the sweep sensor launches them, vs direct calls.

What is measured. Four file suppliers (kind `cdn_file`, a benchmark registry) whose decrypted feeds are
already cached in the warehouse (`supplier_files/<id>.parquet`, seeded, 1M SKUs each), and the catalog.
One sweep = every catalog batch through the deployment's `price_sweep_job`: `supplier_offers/<id>` (the
batch slice of each cached feed) -> `best_offers` -> `storefront_prices` -> its two blocking checks, with
Parquet written per batch. The sandbox cannot serve 1M SKUs fast enough, and supplier HTTP and CDN
decryption are benchmarked elsewhere (supplier_fetch, cdn_feed).

- project: the real `price_sweep` sensor plans one full cycle (its cursor, SERVICE_CONFIG `sweep_minutes`);
  each run request is launched as the run launcher launches a run: a fresh process
  (`dagster job execute`) that loads the code location and runs the job with its executor, tagged with
  the request's partition range, against a SQLite instance in a temp DAGSTER_HOME (the deployment's
  dagster.yaml). Runs go one after another (sensor ticks are 30 s apart, so they do not overlap in
  production). Queue and daemon tick latency are not counted.
- baseline: the same functions and Parquet writes called directly in this process, range by range as the
  sensor groups them: read_cached_offers per supplier, select_best_offers, price_offers (markup, guard,
  approvals), both checks, writing supplier_offers, best_offers and storefront_prices per batch.

The detail says where Dagster's extra time goes, from the runs' event logs: process start-up (interpreter,
imports, code location load, instance) until RUN_START, time inside steps, and the rest (step process
spawns, event writes).

Knobs: BENCH_SCALE (SKUs), BENCH_SWEEP_MINUTES (the sensor's grouping; default: SERVICE_CONFIG's),
BENCH_SWEEP_EXECUTOR (`deployment`: price_sweep_job as defined; `in_process`: the same assets in process;
`forkserver`: multiprocess with steps forked from a preloaded server),
BENCH_SWEEP_REPEATS (default 3), BENCH_SWEEP_BATCHES_PER_RUN (instead of the sensor's plan, the ranged
runs a UI backfill of every batch launches under BackfillPolicy.multi_run(N)).
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import yaml
from dagster import (
    AssetSelection,
    DagsterEventType,
    DagsterInstance,
    RunRequest,
    StaticPartitionsDefinition,
    build_sensor_context,
)

from bench._harness import deployment_env, line, scaled
from bench._procfs import stolen_seconds
from bench._sweep_location import DEPLOYED_JOB, FORKSERVER_JOB, IN_PROCESS_JOB
from bench.best_offers import CURRENCIES, FX, NOW, SUPPLIERS, iter_data
from pricing_assets.best_offers import read_run_catalog, read_supplier_offers
from pricing_assets.checks import split_pushable
from pricing_assets.logic.batching import active_batch_skus, assign_batches
from pricing_assets.logic.best_offers import select_best_offers
from pricing_assets.logic.guard import check_no_nonpositive_price, check_not_below_floor
from pricing_assets.logic.pricing import price_offers
from pricing_assets.partitions import catalog_batch_partitions
from pricing_assets.supplier_files import read_cached_offers
from pricing_assets.sweep import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    SweepCursor,
    build_price_sweep_sensor,
    build_sweep_job,
)
from resources.cdn_state import write_cached_offers
from resources.config import Registry, ServiceConfig, load_registry
from resources.push_state import ApprovalLog, PushState
from resources.service_config import ServiceConfigResource
from resources.warehouse import Warehouse

NAME = "sweep"
TARGET = 1.5
# From 4M SKUs (BENCH_SCALE=4) start-up is amortized: what remains is the Dagster path's per-row cost.
LARGE_SKUS = 4_000_000
LARGE_TARGET = 1.1


def target_for(skus: int) -> float:
    """The ratio target at this catalog size: 1.5 at 1M SKUs, 1.1 from 4M."""
    return LARGE_TARGET if skus >= LARGE_SKUS else TARGET


SKUS = 1_000_000
BATCHES = 16
ROOT = Path(__file__).resolve().parent.parent
# A long TTL: the offers are stamped once and a benchmark takes minutes; stale ones stay stale.
SERVICE_CONFIG: dict[str, Any] = {"staleness_ttl": "PT6H"}


@dataclass
class RunTiming:
    """One launched run: wall time from spawn to exit, start-up before RUN_START, and time in steps."""

    wall: float
    startup: float
    in_steps: float
    run_creation: float = 0.0  # first event (a planned materialization) -> RUN_START
    events: int = 0
    peak_rss: int = 0  # bytes: the kernel's high-water mark of the run process (wait4)
    steps: dict[str, float] = field(default_factory=dict)  # step key -> STEP_START..STEP_SUCCESS seconds
    step_peaks: dict[str, int] = field(default_factory=dict)  # step key -> highest RSS polled in it, bytes


@dataclass
class Launched:
    """One run process after it exited: wall time, peak RSS, and RSS polled while it ran."""

    wall: float
    peak_rss: int  # bytes
    rss: list[tuple[float, int]] = field(default_factory=list)  # (unix time, bytes)


@dataclass
class SweepTiming:
    """All runs of one sweep."""

    runs: list[RunTiming] = field(default_factory=list)

    @property
    def wall(self) -> float:
        """Total wall time of the sweep's runs."""
        return sum(r.wall for r in self.runs)


def write_registry(path: Path, batches: int = BATCHES) -> None:
    """A registry of four file suppliers (no network: their feeds are read from the warehouse cache)."""
    suppliers = [
        {
            "id": supplier,
            "kind": "cdn_file",
            "base_url": "http://127.0.0.1:9/cdn",
            "priority": 10 * (index + 1),
            "currency": CURRENCIES[supplier],
            "cdn": {"path": f"/{supplier}.csv.enc", "passphrase_env": "BENCH_SWEEP_UNUSED_PASSPHRASE"},
        }
        for index, supplier in enumerate(SUPPLIERS)
    ]
    fx = {currency: str(rate) for currency, rate in FX.items() if currency != "EUR"}
    path.write_text(
        yaml.safe_dump(
            {"store_currency": "EUR", "catalog_batches": batches, "fx": fx, "suppliers": suppliers}
        )
    )


def write_data(warehouse: Warehouse, n: int, batches: int = BATCHES) -> None:
    """Seeded catalog (with batches) and each supplier's whole feed as its cached file.

    One supplier's feed in memory at a time: at 10M SKUs all four together would be ~2 GiB more.
    """
    frames = iter_data(n)
    warehouse.write(assign_batches(next(frames), batches).sort("batch", "sku"), ["catalog"])
    for supplier, offers in zip(SUPPLIERS, frames, strict=True):
        # iter_data stamps offers around its own fixed instant: move them to now, keeping stale ones stale.
        feed = offers.with_columns(
            fetched_at=pl.when(pl.col("fetched_at") < NOW - timedelta(minutes=30))
            .then(pl.lit(datetime.now(UTC) - timedelta(hours=12)))
            .otherwise(pl.col("fetched_at") + (datetime.now(UTC) - NOW))
            .dt.cast_time_unit("us")
        )
        write_cached_offers(warehouse, supplier, feed, batches)
        del offers, feed


def sensor_plan(partitions: StaticPartitionsDefinition, sweep_minutes: int) -> list[RunRequest]:
    """The run requests of one full cycle of the real price_sweep sensor, from a fresh cursor."""
    job = build_sweep_job(AssetSelection.assets("best_offers"))
    ticks = iter(range(0, 10**9, 3600))  # each evaluation an hour later: every tick is due
    sensor = build_price_sweep_sensor(job, partitions, clock=lambda: float(next(ticks)))
    config = ServiceConfigResource(override_json=json.dumps({"sweep_minutes": sweep_minutes}))
    cursor: str | None = None
    requests: list[RunRequest] = []
    for _ in range(len(partitions.get_partition_keys())):
        result = sensor(build_sensor_context(cursor=cursor, resources={"service_config": config}))
        requests += result.run_requests
        cursor = result.cursor
        if SweepCursor.parse(cursor).cycle == 1:
            break
    return requests


def backfill_plan(partitions: StaticPartitionsDefinition, per_run: int) -> list[RunRequest]:
    """The ranged runs a backfill of every batch launches under BackfillPolicy.multi_run(per_run)."""
    keys = partitions.get_partition_keys()
    chunks = [keys[i : i + per_run] for i in range(0, len(keys), per_run)]
    return [
        RunRequest(
            run_key=f"backfill-{chunk[0]}-{chunk[-1]}",
            tags={RANGE_START_TAG: chunk[0], RANGE_END_TAG: chunk[-1]},
        )
        for chunk in chunks
    ]


def ranges_of(plan: list[RunRequest], keys: list[str]) -> list[list[str]]:
    """The batch keys each run request covers."""
    return [keys[keys.index(r.tags[RANGE_START_TAG]) : keys.index(r.tags[RANGE_END_TAG]) + 1] for r in plan]


def direct_sweep(
    warehouse: Warehouse, registry: Registry, config: ServiceConfig, ranges: list[list[str]]
) -> None:
    """The baseline: the sweep's functions and writes called directly, one batch range at a time."""
    catalog = warehouse.read(["catalog"])
    enabled = [s for s in registry.order if config.enabled(s)]
    approvals = ApprovalLog(base_dir=warehouse.base_dir).read()
    push_state = PushState(base_dir=warehouse.base_dir)
    for batches in ranges:
        batch_catalog = active_batch_skus(catalog.lazy(), batches)
        skus = batch_catalog.get_column("sku")
        for supplier in registry.order:
            offers = read_cached_offers(
                warehouse, supplier, skus, batches=batches, catalog_batches=registry.catalog_batches
            ).join(batch_catalog, on="sku", how="inner")
            for batch in batches:
                warehouse.write(offers.filter(pl.col("batch") == batch), ["supplier_offers", supplier], batch)
        in_range = read_run_catalog(catalog.lazy(), batches)
        best = select_best_offers(
            in_range,
            read_supplier_offers(warehouse, registry.order, batches, in_range),
            supplier_order=registry.order,
            enabled=enabled,
            fx=registry.fx_rates(),
            now=datetime.now(UTC),
            staleness_ttl=config.staleness_ttl,
        ).join(in_range.select("sku", "batch"), on="sku", how="left")
        guarded = price_offers(
            best,
            markup=config.markup,
            guard=config.guard,
            store_currency=registry.store_currency,
            last_pushed=push_state.acknowledged(batches),
            approvals=approvals,
        ).prices
        margin = config.markup.min_margin
        passed = check_no_nonpositive_price(guarded)[0] and check_not_below_floor(guarded, margin)[0]
        if not passed or split_pushable(guarded, margin)[1].height:
            raise AssertionError("the baseline produced prices that fail the blocking checks")
        for batch in batches:
            warehouse.write(best.filter(pl.col("batch") == batch), ["best_offers"], batch)
            warehouse.write(guarded.filter(pl.col("batch") == batch), ["storefront_prices"], batch)


@contextmanager
def dagster_home() -> Iterator[Path]:
    """A temp DAGSTER_HOME with the deployment's instance config (SQLite storage)."""
    home = Path(tempfile.mkdtemp(prefix="bench-sweep-home-"))
    try:
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def env_var(name: str, value: str) -> Iterator[None]:
    """Set one environment variable in this process for the duration of the block."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def poll_rss(pid: int, samples: list[tuple[float, int]], stop: threading.Event, every: float) -> None:
    """Append (unix time, RSS bytes) of `pid` from /proc until `stop` is set or the process is gone."""
    page = os.sysconf("SC_PAGE_SIZE")
    statm = Path(f"/proc/{pid}/statm")
    while not stop.is_set():
        try:
            resident = int(statm.read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            return
        if resident:  # a zombie reads 0
            samples.append((time.time(), resident))
        stop.wait(every)


def launch(request: RunRequest, job: str, env: dict[str, str], poll_seconds: float = 0.0) -> Launched:
    """Launch one run as the run launcher would (a fresh process) and wait for it.

    Peak RSS is the kernel's accounting of the exited process (wait4), so it misses nothing between
    polls; with poll_seconds > 0, RSS is also sampled while it runs, to attribute memory to steps.
    """
    started = time.perf_counter()
    tags = json.dumps({**request.tags, "bench/run_key": request.run_key or ""})
    command = [sys.executable, "-m", "dagster", "job", "execute", "-m", "bench._sweep_location", "-a", "defs"]
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(
            [*command, "-j", job, "--tags", tags], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        samples: list[tuple[float, int]] = []
        stop = threading.Event()
        poller = threading.Thread(target=poll_rss, args=(process.pid, samples, stop, poll_seconds))
        if poll_seconds > 0:
            poller.start()
        watchdog = threading.Timer(1800, process.kill)  # a hung run fails the benchmark, not the machine
        watchdog.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            watchdog.cancel()
            stop.set()
            if poller.is_alive():
                poller.join()
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            out.seek(0)
            output = out.read().decode(errors="replace")
            raise RuntimeError(f"run {request.run_key} failed ({process.returncode}):\n{output[-6000:]}")
    return Launched(time.perf_counter() - started, usage.ru_maxrss * 1024, samples)  # ru_maxrss: KiB


def run_timings(instance: DagsterInstance, walls: dict[str, tuple[float, Launched]]) -> list[RunTiming]:
    """Start-up and in-step time of each run from its event log (walls: run key -> (spawned at, process))."""
    timings = []
    for record in instance.get_run_records():
        key = record.dagster_run.tags.get("bench/run_key", "")
        if key not in walls:
            continue
        spawned, launched = walls[key]
        events = instance.all_logs(record.dagster_run.run_id)
        run_start = next(e.timestamp for e in events if e.dagster_event_type == DagsterEventType.RUN_START)
        starts = {
            e.step_key: e.timestamp for e in events if e.dagster_event_type == DagsterEventType.STEP_START
        }
        ends = {
            e.step_key: e.timestamp for e in events if e.dagster_event_type == DagsterEventType.STEP_SUCCESS
        }
        steps = {k: ends[k] - starts[k] for k in ends if k in starts}
        peaks = {
            k: max((rss for at, rss in launched.rss if starts[k] <= at <= ends[k]), default=0) for k in steps
        }
        timings.append(
            RunTiming(
                wall=launched.wall,
                startup=run_start - spawned,
                in_steps=sum(steps.values()),
                run_creation=run_start - events[0].timestamp,
                events=len(events),
                peak_rss=launched.peak_rss,
                steps=steps,
                step_peaks=peaks,
            )
        )
    return timings


def project_sweep(
    home: Path, env: dict[str, str], plan: list[RunRequest], job: str, poll_seconds: float = 0.0
) -> SweepTiming:
    """Launch every run of the plan, one after another; return their timings."""
    walls: dict[str, tuple[float, Launched]] = {}
    for request in plan:
        spawned = time.time()
        walls[request.run_key or ""] = (spawned, launch(request, job, env, poll_seconds))
    # The instance config reads its storage folder from DAGSTER_HOME.
    with env_var("DAGSTER_HOME", str(home)), DagsterInstance.from_config(str(home)) as instance:
        timings = run_timings(instance, walls)
        for record in instance.get_run_records():
            instance.delete_run(record.dagster_run.run_id)  # the next repetition reuses the run keys
    return SweepTiming(timings)


@dataclass
class Deployment:
    """The benchmark's deployment in temp folders: instance home, registry, warehouse with data, env."""

    home: Path
    registry: Registry
    warehouse: Warehouse
    env: dict[str, str]


@contextmanager
def deployment(n: int, batches: int = BATCHES) -> Iterator[Deployment]:
    """Four file suppliers and an n-SKU catalog in `batches` batches, seeded; removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as folder, dagster_home() as home:
        registry_path = Path(folder) / "registry.yaml"
        write_registry(registry_path, batches)
        warehouse = Warehouse(base_dir=str(Path(folder) / "warehouse"))
        write_data(warehouse, n, batches)
        env = deployment_env(
            home=home, warehouse=warehouse.root(), registry=registry_path, service_config=SERVICE_CONFIG
        )
        yield Deployment(home, load_registry(registry_path), warehouse, env)


def measure(
    n: int, sweep_minutes: int, job: str, repeats: int, per_run: int | None = None
) -> tuple[list[SweepTiming], list[float], list[RunRequest], dict[str, list[float]]]:
    """Alternate direct and Dagster sweeps over the same data; return both sides' timings, the plan and
    the CPU seconds the host took from this VM during each repetition of each side."""
    partitions = catalog_batch_partitions(BATCHES)
    plan = backfill_plan(partitions, per_run) if per_run else sensor_plan(partitions, sweep_minutes)
    ranges = ranges_of(plan, partitions.get_partition_keys())
    with deployment(n) as deployed:
        config = ServiceConfigResource(override_json=json.dumps(SERVICE_CONFIG)).load()
        project: list[SweepTiming] = []
        baseline: list[float] = []
        stolen: dict[str, list[float]] = {"direct": [], "dagster": []}
        # Warm-up: file cache and lazy imports.
        direct_sweep(deployed.warehouse, deployed.registry, config, ranges)
        for _ in range(repeats):
            started, steal = time.perf_counter(), stolen_seconds()
            direct_sweep(deployed.warehouse, deployed.registry, config, ranges)
            baseline.append(time.perf_counter() - started)
            stolen["direct"].append(stolen_seconds() - steal)
            steal = stolen_seconds()
            project.append(project_sweep(deployed.home, deployed.env, plan, job))
            stolen["dagster"].append(stolen_seconds() - steal)
    return project, baseline, plan, stolen


def run() -> str:
    """Time a sensor-launched Dagster sweep against direct calls; return the docs/architecture.md §10 line."""
    n = scaled(SKUS, minimum=2000)
    sweep_minutes = int(os.environ.get("BENCH_SWEEP_MINUTES") or ServiceConfig().sweep_minutes)
    executor = os.environ.get("BENCH_SWEEP_EXECUTOR", "deployment")
    job = {"in_process": IN_PROCESS_JOB, "forkserver": FORKSERVER_JOB}.get(executor, DEPLOYED_JOB)
    repeats = int(os.environ.get("BENCH_SWEEP_REPEATS", "3"))
    per_run = int(os.environ.get("BENCH_SWEEP_BATCHES_PER_RUN") or 0) or None
    project, baseline, plan, stolen = measure(n, sweep_minutes, job, repeats, per_run)
    grouping = f"backfill of {per_run}/run" if per_run else f"sensor, sweep_minutes={sweep_minutes}"
    typical = sorted(project, key=lambda timing: timing.wall)[len(project) // 2]
    baseline_median = statistics.median(baseline)
    startup = sum(r.startup for r in typical.runs)
    creation = sum(r.run_creation for r in typical.runs)
    events = sum(r.events for r in typical.runs)
    in_steps = sum(r.in_steps for r in typical.runs)
    batches_per_run = len(ranges_of(plan, catalog_batch_partitions(BATCHES).get_partition_keys())[0])
    detail = (
        f"dagster {typical.wall:.1f} s, direct {baseline_median:.1f} s (median of {repeats}; {n:,} SKUs x "
        f"{len(SUPPLIERS)} file suppliers, {len(plan)} run(s) of {batches_per_run} batches ({grouping}), "
        f"job {job}); dagster time: start-up {startup:.1f} s (process and imports "
        f"{startup - creation:.1f} s, run creation {creation:.1f} s), in steps {in_steps:.1f} s, "
        f"spawns+orchestration {typical.wall - startup - in_steps:.1f} s; {events} events stored; "
        f"CPU stolen by the host (s, each): direct {', '.join(f'{s:.1f}' for s in stolen['direct'])}, "
        f"dagster {', '.join(f'{s:.1f}' for s in stolen['dagster'])}"
    )
    return line(NAME, typical.wall / baseline_median, target_for(n), detail)


if __name__ == "__main__":
    print(run())
