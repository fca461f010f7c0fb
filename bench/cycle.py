"""cycle: one price sweep at 1M SKUs through the running deployment, until the storefront shows every change.

What is measured. A bulk sandbox (sandbox/bulk.py, its own process) serves three REST suppliers at 1M
SKUs from pre-generated bodies, and signed storefronts. The deployment runs as deployed: a temp
DAGSTER_HOME with the repository's dagster.yaml (queued run coordinator, DefaultRunLauncher), a
`dagster-daemon run` process, the real `price_sweep` sensor turned on, `price_cycle_job` runs launched
by the daemon (fetch, best_offers, storefront_prices, storefront_sync with its reconcile read and signed
pushes). A warm-up sweep (not timed) fills the storefront; then, per repetition, alpha undercuts the
best offer of 5 % of the active SKUs and:

- baseline: the same work called directly in this process, in order: the three REST fetches through
  `fetch_supplier_offers` (same adapters, rate limits, parsing, validation), the file supplier's cached
  offers (`read_cached_offers`), `select_best_offers`, `apply_markup`, the storefront's live prices
  (the reconcile read), `apply_guard`, `split_pushable`, `compute_changes`, and the signed pushes per
  batch in chunks of push_batch_size to its own storefront (`direct`).
- deployment: the sensor's cursor is made due (`dagster sensor cursor`, set again if a tick overwrote
  it); from the moment the run is created until the storefront `dagster` shows, for every moved SKU,
  the price the baseline pushed (the sandbox notes the time of the push that completed it,
  `/_bench/watch`; not read from the project's ledger). The wait for the sensor's tick (its minimum
  interval is 30 s) is reported apart.

Where the deployment's time goes, from the median repetition's run events: its start-up split where the
event log marks it (run creation: the run and its planned events, written by the sensor's tick; queue:
until the queued run coordinator dequeues it; run process: spawned, Dagster and the code location
imported, until RUN_START), the phases' steps, and how much of the steps came after their outputs (the
Parquet writes, the materializations and the checks, which the baseline does not have).

Each repetition also reports the CPU seconds the host took from this VM while it ran (/proc/stat's
steal): on a shared machine a side that lost seconds to other guests ran on a slower machine, and the
line says so instead of leaving a reader to guess why one repetition was twice as slow.

The registry is the benchmark's own (written to a temp file, as bench/sweep.py does): alpha a batch
endpoint (5000 SKUs per POST), beta a cursor listing and omega a numbered listing (10 000 records per
page), with rate limits a high-volume supplier offers; delta the CDN file supplier whose cached offers
the sweep reads (its download and decryption run on their own 30-minute schedule, not in the sweep;
bench/cdn_feed.py times them). The shipped registry's per-SKU kind (gamma, one POST per SKU at 100 rps)
is left out: its rate limit alone is 10 000 s at 1M SKUs, far beyond any sweep.

Knobs: BENCH_SCALE (SKUs), BENCH_CYCLE_BATCHES (catalog batches, default 16), BENCH_CYCLE_REPEATS
(default 3), BENCH_CYCLE_SHARE (moved share, 0.05), BENCH_CYCLE_SERVICE_CONFIG (JSON merged into the
deployment's and the baseline's SERVICE_CONFIG),
BENCH_CYCLE_INSTANCE (`sqlite`, the default: the repository's dagster.yaml; `postgres`: the production
storage of deploy/postgres/dagster.yaml on a fresh database of BENCH_CYCLE_PG_URL, dropped afterwards,
with the ConfigMap's DAGSTER_EVENT_BATCH_SIZE; the sqlite run never gets that variable),
BENCH_CYCLE_KEEP (keep the temp folder, for the daemon's and the runs' logs), BENCH_CYCLE_PROFILE (a
file: after the timed cycles, one more cycle runs in a single `dagster job execute` process under
pyinstrument, its text report written there).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import sqlalchemy
import yaml
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from bench._harness import deployment_env, line, scaled
from bench._procfs import stolen_seconds
from pricing_assets.checks import split_pushable
from pricing_assets.logic.batching import assign_batches
from pricing_assets.logic.best_offers import select_best_offers
from pricing_assets.logic.guard import apply_guard
from pricing_assets.logic.ledger import compute_changes, entry_frame
from pricing_assets.logic.markup import apply_markup
from pricing_assets.partitions import catalog_batch_partitions
from pricing_assets.reconcile import RECONCILE_RUN_CONFIG
from pricing_assets.supplier_files import cache_key, read_cached_offers
from pricing_assets.sweep import CYCLE_JOB_NAME, RANGE_END_TAG, RANGE_START_TAG, SweepCursor
from resources.config import Registry, ServiceConfig, load_registry
from resources.schemas import MONEY, OFFERS_SCHEMA
from resources.service_config import ServiceConfigResource
from resources.storefront import PushChunk, PushStats, Storefront
from resources.suppliers import SupplierClients
from resources.warehouse import Warehouse
from sandbox.bulk import ALPHA_CHUNK, CURRENCIES, LISTING_PAGE, make_market
from sandbox.server import free_port

NAME = "cycle"
TARGET = 1.5
GOAL_SECONDS = 60.0
SKUS = 1_000_000


def catalog_batches(environ: Mapping[str, str] = os.environ) -> int:
    """BENCH_CYCLE_BATCHES (default 16, the design's): the registry's catalog_batches for the benchmark."""
    text = environ.get("BENCH_CYCLE_BATCHES", "16")
    value = int(text) if text.strip().isdigit() else 0
    # The registry's own bounds (resources/config.py), said before any process starts.
    if not 1 <= value <= 1000:
        raise ValueError(
            f"BENCH_CYCLE_BATCHES={text!r}: expected a whole number of catalog batches, 1 to 1000"
        )
    return value


# Fewer batches mean fewer planned events and materializations per run: an operator's trade against
# how finely a sweep resumes (docs/benchmarks.md measured 8 against 16).
BATCHES = catalog_batches()
SEED = 17
ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-cycle-key"
SECRET = "bench-cycle-secret"
# A day between sweeps: the sensor fires only when the benchmark makes it due, never on its own.
SERVICE_CONFIG: dict[str, Any] = {"staleness_ttl": "PT6H", "sweep_minutes": 1440, "sweep_batches_per_run": 16}
# Dagster's switch for batched event writes: the instance kind decides it (production_event_batching).
BATCH_SIZE_ENV = "DAGSTER_EVENT_BATCH_SIZE"
ENV_MANIFEST = "supplier-pricing-env.yaml"
_SCRUBBED = (
    "SERVICE_CONFIG",
    "SERVICE_CONFIG_FILE",
    "DAGSTER_JSON_LOG",
    "SUPPLIER_REGISTRY",
    "DAGSTER_HOME",
    BATCH_SIZE_ENV,
)
# Bounds of every wait (seconds).
SANDBOX_START = 180.0
WARMUP_RUN = 1800.0
TICK_WAIT = 120.0
CURSOR_ATTEMPTS = 2  # TICK_WAIT / 2 = 60 s each: the sensor's 30 s interval, one tick's run and a margin
CYCLE_WAIT = 900.0


class CycleError(RuntimeError):
    """A part of the benchmark did not start, answer or finish in time; the message says which."""


def registry_document(sandbox_url: str) -> dict[str, Any]:
    """The benchmark's registry: three REST listings at high-volume settings and the CDN file supplier."""
    auth = {"kind": "api_key", "header": "X-Api-Key", "key_env": "BULK_SANDBOX_KEY"}
    retry = {"max_attempts": 5, "backoff_initial_seconds": 0.2, "backoff_max_seconds": 10}
    base = f"{sandbox_url}/suppliers"
    suppliers = [
        {
            "id": "alpha",
            "kind": "rest_batch",
            "base_url": f"{base}/alpha",
            "priority": 10,
            "currency": CURRENCIES["alpha"],
            "auth": auth,
            "rate_limit": {"requests_per_second": 200, "burst": 20, "max_in_flight": 4},
            "retry": retry,
            "timeout_seconds": 60,
            "request": {
                "method": "POST",
                "path": "/offers",
                "sku_param": "skus",
                "batch_size": ALPHA_CHUNK,
                "records_path": "items",
                "unknown_path": "unknown_skus",
            },
            "fields": {
                "sku": "sku",
                "price": "pricing.amount",
                "currency": "pricing.currency",
                "stock": "inventory.available",
                "in_stock": "inventory.in_stock",
            },
            "parsers": {"price": "decimal", "stock": "int", "in_stock": "bool"},
        },
        {
            "id": "beta",
            "kind": "rest_paginated",
            "base_url": f"{base}/beta",
            "priority": 20,
            "currency": CURRENCIES["beta"],
            "auth": auth,
            "rate_limit": {"requests_per_second": 50, "burst": 10, "max_in_flight": 2},
            "retry": retry,
            "timeout_seconds": 60,
            "request": {
                "path": "/products",
                "pagination": "cursor",
                "page_size": LISTING_PAGE,
                "page_size_param": "limit",
                "cursor_param": "cursor",
                "next_cursor_path": "next_cursor",
                "records_path": "data",
                "total_path": "total",
                "max_pages": 1000,
            },
            "fields": {
                "sku": "id",
                "price": "pricing.amount_cents",
                "currency": "pricing.currency",
                "stock": "inventory.available",
                "in_stock": "in_stock",
            },
            "parsers": {"price": "minor_units", "stock": "int", "in_stock": "bool"},
        },
        {
            "id": "omega",
            "kind": "rest_paginated",
            "base_url": f"{base}/omega",
            "priority": 30,
            "currency": CURRENCIES["omega"],
            "auth": auth,
            "rate_limit": {"requests_per_second": 50, "burst": 10, "max_in_flight": 2},
            "retry": retry,
            "timeout_seconds": 60,
            "request": {
                "path": "/items",
                "pagination": "page",
                "page_param": "page",
                "page_size": LISTING_PAGE,
                "page_size_param": "per_page",
                "total_pages_path": "total_pages",
                "records_path": "results",
                "total_path": "total",
                "max_pages": 1000,
            },
            "fields": {"sku": "code", "price": "price", "currency": "cur", "stock": "qty"},
            "parsers": {"price": "decimal", "stock": "int"},
        },
        {
            "id": "delta",
            "kind": "cdn_file",
            # The sweep reads delta's cached file; its 30-minute download is not part of the cycle.
            "base_url": "http://127.0.0.1:9/cdn",
            "priority": 40,
            "currency": CURRENCIES["delta"],
            "cdn": {"path": "/delta.csv.enc", "passphrase_env": "BENCH_CYCLE_UNUSED_PASSPHRASE"},
        },
    ]
    return {
        "store_currency": "EUR",
        "catalog_batches": BATCHES,
        "fx": {"USD": "0.92", "GBP": "1.17"},
        "suppliers": suppliers,
    }


def catalog_frame(market: pl.DataFrame) -> pl.DataFrame:
    """The catalog the sweep prices (CATALOG_SCHEMA plus batch), from the sandbox's market."""
    catalog = market.select(
        "sku",
        title=pl.format("Item {}", "sku"),
        category=pl.lit("software"),
        active="active",
        product_id="sku",
        variant_id="sku",
    )
    # Stored as the catalog asset stores it: by batch, then SKU.
    return assign_batches(catalog, BATCHES).sort("batch", "sku")


def delta_offers(market: pl.DataFrame, fetched_at: datetime) -> pl.DataFrame:
    """The file supplier's cached offers (OFFERS_SCHEMA), as its decrypted CDN file left them."""
    return (
        market.filter(pl.col("delta_cents").is_not_null())
        .select(
            "sku",
            supplier=pl.lit("delta"),
            price=(pl.col("delta_cents").cast(MONEY) / 100).cast(MONEY),
            currency=pl.lit(CURRENCIES["delta"]),
            stock="delta_stock",
            in_stock=pl.lit(True),
            fetched_at=pl.lit(fetched_at).dt.cast_time_unit("us").dt.replace_time_zone("UTC"),
        )
        .select([pl.col(c).cast(t) for c, t in OFFERS_SCHEMA.items()])
    )


def due_cursor(cycle: int) -> str:
    """The sweep cursor that makes the next tick launch cycle `cycle` whole (launched_at 0: due now).

    Each cycle needs its own number: the sensor's run key names it, and a repeated key launches nothing.
    """
    return SweepCursor(next_index=0, cycle=cycle, launched_at=0.0).dump()


def chunked(entries: pl.DataFrame, size: int) -> Iterator[PushChunk]:
    """Push chunks per batch, as storefront_sync sends them: at most `size` entries, batch by batch."""
    for (batch,), rows in entries.sort("sku").group_by("batch", maintain_order=True):
        body = entry_frame(rows)
        for start in range(0, body.height, size):
            yield PushChunk.build(str(batch), body.slice(start, size))


def step_phases(steps: dict[str, float]) -> dict[str, float]:
    """Seconds per phase (fetch, select, price, push) from per-step seconds keyed by step key."""
    phases = {"fetch": 0.0, "select": 0.0, "price": 0.0, "push": 0.0}
    for key, seconds in steps.items():
        if key.startswith("supplier_offers"):
            phases["fetch"] += seconds
        elif key.startswith("best_offers"):
            phases["select"] += seconds
        elif key.startswith("storefront_prices"):
            phases["price"] += seconds
        elif key.startswith("storefront_sync"):
            phases["push"] += seconds
    return phases


def supplier_text(steps: dict[str, float], direct: list[DirectTiming]) -> str:
    """`alpha 4.1/3.2 s, ...`: each supplier step's seconds against the median direct fetch."""
    parts = []
    for supplier in direct[0].suppliers:
        step = next((v for k, v in steps.items() if k == f"supplier_offers__{supplier}"), 0.0)
        fetched = statistics.median(t.suppliers[supplier] for t in direct)
        parts.append(f"{supplier} {step:.1f}/{fetched:.1f} s")
    return ", ".join(parts)


def phases_text(phases: dict[str, float]) -> str:
    """`fetch 1.0 s, select 2.0 s, ...` in a fixed order."""
    return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases.items())


@dataclass
class DirectTiming:
    """One baseline cycle: wall time, its phases and the prices it pushed."""

    wall: float
    phases: dict[str, float]
    pushed: int
    suppliers: dict[str, float] = field(default_factory=dict)
    stolen: float = 0.0  # CPU seconds the host took from this VM meanwhile (stolen_seconds)


@dataclass
class DeployedTiming:
    """One deployment cycle: tick wait, end-to-end wall, the run's start-up and steps."""

    tick_wait: float
    wall: float
    run_wall: float
    startup: float
    steps: dict[str, float] = field(default_factory=dict)
    events: int = 0
    stolen: float = 0.0  # CPU seconds the host took from this VM meanwhile, tick wait included
    startup_parts: dict[str, float] = field(default_factory=dict)
    after_outputs: float = 0.0  # in steps, after their outputs: writes, materializations, checks


def stolen_text(direct: list[DirectTiming], deployed: list[DeployedTiming]) -> str:
    """CPU seconds the host took from this VM during each repetition of both sides."""

    def each(timings: list[DirectTiming] | list[DeployedTiming]) -> str:
        return ", ".join(f"{t.stolen:.1f}" for t in timings)

    return f"CPU stolen by the host (s, each): direct {each(direct)}, deployment {each(deployed)}"


def direct_cycle(
    warehouse: Warehouse, registry: Registry, config: ServiceConfig, storefront: Storefront
) -> DirectTiming:
    """The baseline: fetch, select, price, diff against the storefront and push, all in this process."""
    phases: dict[str, float] = {}
    started = clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        phases[name] = phases.get(name, 0.0) + now - clock
        clock = now

    catalog = warehouse.read(["catalog"])
    active = catalog.filter(pl.col("active"))
    skus = active.get_column("sku")
    clients = SupplierClients(registry_path=registry.source)
    frames = []
    suppliers: dict[str, float] = {}
    for supplier in registry.order:
        fetch_started = time.perf_counter()
        if registry.by_id[supplier].kind == "cdn_file":
            frames.append(read_cached_offers(warehouse, supplier, skus))
        else:
            frames.append(clients.fetch_offers(supplier, active.select("sku")).offers)
        suppliers[supplier] = time.perf_counter() - fetch_started
    offers = pl.concat(frames)
    lap("fetch")
    best = select_best_offers(
        catalog,
        offers,
        supplier_order=registry.order,
        enabled=[s for s in registry.order if config.enabled(s)],
        fx=registry.fx_rates(),
        now=datetime.now(UTC),
        staleness_ttl=config.staleness_ttl,
    ).join(catalog.select("sku", "batch"), on="sku", how="left")
    lap("select")
    priced = apply_markup(best, config.markup).with_columns(pl.lit(registry.store_currency).alias("currency"))
    lap("price")
    live = storefront.fetch_live_prices()
    guarded = apply_guard(priced, live.select("sku", "price", "available", "supplier"), config.guard)
    pushable, _ = split_pushable(guarded, config.markup.min_margin)
    changes = compute_changes(pushable, live).join(pushable.select("sku", "batch"), on="sku")
    stats = PushStats()
    with storefront.open_pusher() as pusher:
        for chunk in chunked(changes, config.push_batch_size):
            outcome = pusher.push_prices(chunk, stats=stats)
            if not outcome.acknowledged:
                raise CycleError(f"baseline push not acknowledged: {outcome.status} {outcome.error}")
    lap("push")
    return DirectTiming(time.perf_counter() - started, phases, changes.height, suppliers)


class Sandbox:
    """The bulk sandbox process and its control API."""

    def __init__(self, skus: int, folder: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.folder = folder
        self.skus = skus
        self.process: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=self.url, timeout=120)

    def start(self, env: dict[str, str]) -> None:
        """Start it and wait (bounded) until its answers are generated."""
        command = [sys.executable, "-m", "sandbox.bulk", "--port", str(self.port), "--skus", str(self.skus)]
        command += ["--batches", str(BATCHES)]
        with (self.folder / "sandbox.log").open("wb") as log:
            self.process = subprocess.Popen(
                [*command, "--seed", str(SEED)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        wait_for(lambda: self._healthy(), SANDBOX_START, "the bulk sandbox to answer")

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise CycleError(f"bulk sandbox exited: {(self.folder / 'sandbox.log').read_text()[-2000:]}")
        try:
            return self.client.get("/_health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One control call."""
        response = self.client.post(path, json=body)
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        """Terminate its process group (it started it in its own session)."""
        self.client.close()
        if self.process is not None:
            stop_group(self.process)


def stop_group(process: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM the process group this benchmark started, SIGKILL after `grace` seconds."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    # Children (code server, run workers) share the group: make sure none outlives it.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def wait_for(ready: Callable[[], Any], seconds: float, what: str, every: float = 0.2) -> Any:
    """Poll `ready` until it returns something truthy; CycleError after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = ready()
        if value:
            return value
        time.sleep(every)
    raise CycleError(f"timed out after {seconds:.0f} s waiting for {what}")


def production_event_batching() -> dict[str, str]:
    """DAGSTER_EVENT_BATCH_SIZE as the Kubernetes ConfigMap gives it to run pods (batched PG writes)."""
    manifest = yaml.safe_load((ROOT / "deploy" / "k8s" / "manifests" / ENV_MANIFEST).read_text())
    return {BATCH_SIZE_ENV: str(manifest["data"][BATCH_SIZE_ENV])}


@contextlib.contextmanager
def instance_config(kind: str) -> Iterator[tuple[Path, dict[str, str]]]:
    """(instance config to copy, extra environment) for BENCH_CYCLE_INSTANCE.

    `sqlite` (default): the repository's dagster.yaml, the embedded default. `postgres`: the production
    storage, deploy/postgres/dagster.yaml, on a fresh database of the machine's PostgreSQL
    (BENCH_CYCLE_PG_URL, default postgresql+psycopg2://postgres@127.0.0.1:5432/test), dropped afterwards,
    with the production's batched event writes (DAGSTER_EVENT_BATCH_SIZE of the ConfigMap).
    """
    if kind == "sqlite":
        yield ROOT / "dagster.yaml", {}
        return
    if kind != "postgres":
        raise CycleError(f"BENCH_CYCLE_INSTANCE={kind!r}: expected 'sqlite' or 'postgres'")
    admin_url = os.environ.get("BENCH_CYCLE_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
    name = f"bench_cycle_{os.getpid()}_{int(time.time())}"
    admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        url = sqlalchemy.engine.make_url(admin_url).set(database=name)
        yield (
            ROOT / "deploy" / "postgres" / "dagster.yaml",
            {"DAGSTER_PG_URL": url.render_as_string(hide_password=False), **production_event_batching()},
        )
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class Deployment:
    """DAGSTER_HOME, workspace and the daemon; the sensor's switch and cursor through the dagster CLI."""

    def __init__(self, folder: Path, env: dict[str, str], config: Path = ROOT / "dagster.yaml") -> None:
        self.home = folder / "dagster_home"
        self.home.mkdir()
        shutil.copy(config, self.home / "dagster.yaml")
        # Run logs as JSON lines to a file whichever config is used (the PostgreSQL one writes stdout).
        env = {**env, "DAGSTER_JSON_LOG": str(self.home / "logs" / "runs.jsonl")}
        self.workspace = folder / "workspace.yaml"
        location = {
            "module_name": "pricing_assets.definitions",
            "attribute": "defs",
            "location_name": "pricing",
            "working_directory": str(ROOT),
        }
        self.workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": location}]}))
        self.folder = folder
        self.env = {**env, "DAGSTER_HOME": str(self.home)}
        self.daemon: subprocess.Popen[bytes] | None = None
        self.binaries = Path(sys.executable).parent

    def cli(self, *args: str) -> str:
        """Run `dagster <args> -w workspace` (bounded); its stdout."""
        command = [str(self.binaries / "dagster"), *args, "-w", str(self.workspace)]
        done = subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise CycleError(f"dagster {' '.join(args)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def start(self) -> None:
        """Turn the sweep sensor on, then start the daemon in its own session."""
        self.cli("sensor", "start", "price_sweep")
        with (self.folder / "daemon.log").open("wb") as log:
            self.daemon = subprocess.Popen(
                [str(self.binaries / "dagster-daemon"), "run", "-w", str(self.workspace)],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def make_due(self, cycle: int) -> None:
        """Set the sweep's cursor so its next tick launches cycle `cycle`."""
        self.cli("sensor", "cursor", "price_sweep", "--set", due_cursor(cycle))

    def profile(self, output: Path) -> None:
        """Run one price_cycle_job over every batch in a single process under pyinstrument (text report).

        The same job, run config and tags the sensor sends, executed by `dagster job execute` in this
        DAGSTER_HOME: its steps and start-up are profiled as a run worker runs them.
        """
        config = self.folder / "reconcile.yaml"
        config.write_text(yaml.safe_dump(RECONCILE_RUN_CONFIG))
        keys = catalog_batch_partitions(BATCHES).get_partition_keys()
        tags = json.dumps({RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]})
        command = [sys.executable, "-m", "pyinstrument", "-r", "text", "-o", str(output), "--show-all"]
        job = ["-m", "dagster", "job", "execute", "-m", "pricing_assets.definitions", "-a", "defs"]
        done = subprocess.run(
            [*command, *job, "-j", CYCLE_JOB_NAME, "-c", str(config), "--tags", tags],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=CYCLE_WAIT,
        )
        if done.returncode != 0:
            raise CycleError(f"profiled run failed: {done.stderr[-2000:]}")

    def instance(self) -> DagsterInstance:
        """The deployment's instance, read from this process."""
        # The instance config reads its storage from the environment (DAGSTER_PG_URL for PostgreSQL).
        os.environ.update({k: v for k, v in self.env.items() if k in ("DAGSTER_HOME", "DAGSTER_PG_URL")})
        return DagsterInstance.from_config(str(self.home))

    def stop(self) -> None:
        """Stop the daemon's process group (daemon, code server, run workers)."""
        if self.daemon is not None:
            stop_group(self.daemon)


def cycle_runs(instance: DagsterInstance) -> list[Any]:
    """Every price_cycle_job run record, newest first."""
    return list(instance.get_run_records(filters=RunsFilter(job_name=CYCLE_JOB_NAME)))


def finished(instance: DagsterInstance, run_id: str) -> Any:
    """The run's record once it has finished; CycleError if it failed."""
    record = instance.get_run_records(filters=RunsFilter(run_ids=[run_id]))[0]
    status = record.dagster_run.status
    if status in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED):
        raise CycleError(f"run {run_id} ended {status.value}; see the daemon log and the run's events")
    return record if status == DagsterRunStatus.SUCCESS else None


# The run's start-up, split where its event log marks it: the run and its planned events created (by
# the sensor's tick), the queue's dequeue, the run process spawned and its code location loaded.
STARTUP_MARKS = (
    ("run creation", DagsterEventType.RUN_ENQUEUED),
    ("queue", DagsterEventType.RUN_STARTING),
    ("run process", DagsterEventType.RUN_START),
)


@dataclass
class RunBreakdown:
    """Where one run's time went, from its event log."""

    startup: float  # run creation -> RUN_START
    startup_parts: dict[str, float]
    steps: dict[str, float]
    after_outputs: float  # from each step's first output to its success: writes, events, checks
    events: int


def run_breakdown(events: Sequence[Any]) -> RunBreakdown:
    """Start-up (and its parts), seconds per step and after their outputs, from a run's stored events."""
    first = events[0].timestamp
    marks = {e.dagster_event_type: e.timestamp for e in reversed(events) if e.dagster_event_type}
    parts: dict[str, float] = {}
    last = first
    for name, kind in STARTUP_MARKS:
        if kind in marks:  # no RUN_ENQUEUED without a queue: that part then counts with the next
            parts[name] = marks[kind] - last
            last = marks[kind]
    starts, ends, outputs = {}, {}, {}
    for e in events:
        if e.dagster_event_type == DagsterEventType.STEP_START:
            starts[e.step_key] = e.timestamp
        elif e.dagster_event_type == DagsterEventType.STEP_SUCCESS:
            ends[e.step_key] = e.timestamp
        elif e.dagster_event_type == DagsterEventType.STEP_OUTPUT:
            outputs.setdefault(e.step_key, e.timestamp)
    steps = {key: ends[key] - starts[key] for key in ends if key in starts}
    after = sum(ends[key] - outputs[key] for key in ends if key in outputs)
    run_start = marks[DagsterEventType.RUN_START]
    return RunBreakdown(run_start - first, parts, steps, after, len(events))


def new_run(instance: DagsterInstance, known: set[str]) -> Any:
    """The first price_cycle_job run not in `known`, or None."""
    fresh = [r for r in cycle_runs(instance) if r.dagster_run.run_id not in known]
    return fresh[-1] if fresh else None


def launched_run(deployment: Deployment, instance: DagsterInstance, known: set[str], cycle: int) -> Any:
    """Make cycle `cycle` due and return the run the sweep sensor launches for it.

    A tick already running when the cursor is set ends by storing the cursor it started from, so the
    set is lost and no run comes (the benchmark once timed out so): the cursor is set again after a
    tick interval and a margin. The cycle's number is the run key, so a second set never launches twice.
    """
    for _ in range(CURSOR_ATTEMPTS):
        deployment.make_due(cycle)
        with contextlib.suppress(CycleError):
            return wait_for(lambda: new_run(instance, known), TICK_WAIT / CURSOR_ATTEMPTS, "a run")
    raise CycleError(
        f"timed out after {TICK_WAIT:.0f} s waiting for the sweep sensor to launch a run "
        f"(its cursor set {CURSOR_ATTEMPTS} times)"
    )


def deployed_cycle(deployment: Deployment, sandbox: Sandbox, moved: list[str], cycle: int) -> DeployedTiming:
    """Make the sweep due, then time from run creation until the storefront shows every moved price."""
    with deployment.instance() as instance:
        known = {r.dagster_run.run_id for r in cycle_runs(instance)}
        # The sandbox notes when the push that made `dagster` show the last moved price landed: the
        # end time, without a comparison polled during the cycle taking CPU from it (it did, measured).
        watch = {"reference": "direct", "target": "dagster", "skus": moved}
        if sandbox.post("/_bench/watch", watch)["remaining"] == 0:
            raise CycleError("the deployment's storefront already shows every moved price before the sweep")
        due_at = time.time()  # the tick wait includes setting the cursor (a CLI loading the location)
        record = launched_run(deployment, instance, known, cycle)
        created = record.create_timestamp.timestamp()

        def acknowledged() -> float | None:
            return sandbox.client.get("/_bench/watch").json()["done_at"]

        run_id = record.dagster_run.run_id
        done_at = wait_for(acknowledged, CYCLE_WAIT, "the storefront to show every moved price", every=0.5)
        record = wait_for(lambda: finished(instance, run_id), CYCLE_WAIT, f"run {run_id} to finish")
        breakdown = run_breakdown(instance.all_logs(run_id))
    return DeployedTiming(
        tick_wait=created - due_at,
        wall=done_at - created,
        run_wall=(record.end_time or done_at) - created,
        startup=breakdown.startup,
        steps=breakdown.steps,
        events=breakdown.events,
        startup_parts=breakdown.startup_parts,
        after_outputs=breakdown.after_outputs,
    )


def setup_data(folder: Path, market: pl.DataFrame) -> Warehouse:
    """Catalog and the file supplier's cache in a fresh warehouse."""
    warehouse = Warehouse(base_dir=str(folder / "warehouse"))
    warehouse.write(catalog_frame(market), ["catalog"])
    warehouse.write(delta_offers(market, datetime.now(UTC) - timedelta(minutes=1)), cache_key("delta"))
    return warehouse


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM (a `timeout` around the benchmark) unwinds like Ctrl-C, so every process is stopped."""
    raise SystemExit(128 + signum)


def measure(n: int, repeats: int, share: float, extra_config: dict[str, Any]) -> dict[str, Any]:
    """Start everything, warm up both sides, then alternate timed baseline and deployment cycles."""
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return _measure(n, repeats, share, extra_config)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _measure(n: int, repeats: int, share: float, extra_config: dict[str, Any]) -> dict[str, Any]:
    """measure() without the signal handling."""
    service_config = {**SERVICE_CONFIG, **extra_config}
    keep = bool(os.environ.get("BENCH_CYCLE_KEEP"))
    folder = Path(tempfile.mkdtemp(prefix="bench-cycle-"))
    try:
        with instance_config(os.environ.get("BENCH_CYCLE_INSTANCE", "sqlite")) as (config, instance_env):
            sandbox = Sandbox(n, folder)
            return _measure_with(folder, sandbox, n, repeats, share, service_config, config, instance_env)
    finally:
        if keep:
            print(f"bench cycle: kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)


def _measure_with(
    folder: Path,
    sandbox: Sandbox,
    n: int,
    repeats: int,
    share: float,
    service_config: dict[str, Any],
    config_file: Path,
    instance_env: dict[str, str],
) -> dict[str, Any]:
    """The measurement inside its temp folder and instance storage."""
    base_env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    deployment: Deployment | None = None
    results: dict[str, Any] = {"direct": [], "deployed": [], "moved": []}
    try:
        env = {**base_env, "BULK_SANDBOX_KEY": API_KEY, "STOREFRONT_WEBHOOK_SECRET": SECRET}
        sandbox.start(env)
        registry_path = folder / "registry.yaml"
        registry_path.write_text(yaml.safe_dump(registry_document(sandbox.url), sort_keys=False))
        warehouse = setup_data(folder, make_market(n, SEED, BATCHES))
        # DAGSTER_HOME (scrubbed) is the Deployment's own.
        env = deployment_env(
            home=None,
            warehouse=warehouse.root(),
            registry=registry_path,
            service_config=service_config,
            storefront_url=f"{sandbox.url}/sf/dagster",
            storefront_secret=SECRET,
            environ=env,
        )
        # The baseline reads the same settings in this process.
        os.environ["BULK_SANDBOX_KEY"] = API_KEY
        registry = load_registry(registry_path)
        config = ServiceConfigResource(override_json=json.dumps(service_config)).load()
        direct = Storefront(url=f"{sandbox.url}/sf/direct", webhook_secret=SECRET)
        deployment = Deployment(folder, {**env, **instance_env}, config_file)
        deployment.start()
        with deployment.instance() as instance:
            first = wait_for(lambda: new_run(instance, set()), TICK_WAIT, "the warm-up sweep run")
            run_id = first.dagster_run.run_id
            wait_for(lambda: finished(instance, run_id), WARMUP_RUN, "the warm-up sweep", every=1.0)
        direct_cycle(warehouse, registry, config, direct)  # warm-up: fills its storefront
        for repeat in range(1, repeats + 1):
            moved = sandbox.post("/_bench/move", {"share": share})["skus"]
            sandbox.post("/_bench/snapshot", {"name": "direct", "as": "direct@before"})
            stolen = stolen_seconds()
            results["direct"].append(direct_cycle(warehouse, registry, config, direct))
            results["direct"][-1].stolen = stolen_seconds() - stolen
            changed = sandbox.post("/_bench/mismatches", {"a": "direct", "b": "direct@before", "skus": moved})
            results["moved"].append((len(moved), changed["mismatched"]))
            stolen = stolen_seconds()
            results["deployed"].append(deployed_cycle(deployment, sandbox, moved, repeat))
            results["deployed"][-1].stolen = stolen_seconds() - stolen
        profile = os.environ.get("BENCH_CYCLE_PROFILE")
        if profile:
            sandbox.post("/_bench/move", {"share": share})
            deployment.profile(Path(profile).resolve())
        results["stats"] = sandbox.client.get("/_bench/stats").json()
    finally:
        if deployment is not None:
            deployment.stop()
        sandbox.stop()
    return results


def run() -> str:
    """Time one sweep cycle through the deployment against direct calls; return the result line."""
    n = scaled(SKUS, minimum=5000)
    repeats = int(os.environ.get("BENCH_CYCLE_REPEATS", "3"))
    share = float(os.environ.get("BENCH_CYCLE_SHARE", "0.05"))
    extra = json.loads(os.environ.get("BENCH_CYCLE_SERVICE_CONFIG") or "{}")
    results = measure(n, repeats, share, extra)
    direct: list[DirectTiming] = results["direct"]
    deployed: list[DeployedTiming] = results["deployed"]
    # Both sides by the same statistic; the breakdown is the median run's (the lower middle one
    # for an even count).
    wall = statistics.median(t.wall for t in deployed)
    typical = sorted(deployed, key=lambda t: t.wall)[(len(deployed) - 1) // 2]
    baseline = statistics.median(t.wall for t in direct)
    base_phases = {k: statistics.median(t.phases[k] for t in direct) for k in direct[0].phases}
    phases = step_phases(typical.steps)
    in_steps = sum(typical.steps.values())
    between = typical.run_wall - typical.startup - in_steps
    moved, changed = results["moved"][-1]
    detail = (
        f"instance storage {os.environ.get('BENCH_CYCLE_INSTANCE', 'sqlite')}; "
        f"deployment {wall:.1f} s (each: {', '.join(f'{t.wall:.1f}' for t in deployed)}), direct "
        f"{baseline:.1f} s (each: {', '.join(f'{t.wall:.1f}' for t in direct)}; median of {repeats}; "
        f"{n:,} SKUs in {BATCHES} batches, "
        f"{moved:,} moved, {changed:,} storefront prices changed, {direct[-1].pushed:,} pushed); "
        f"deployment: run start-up {typical.startup:.1f} s ({phases_text(typical.startup_parts)}), "
        f"{phases_text(phases)} (of the steps, {typical.after_outputs:.1f} s after their outputs: "
        f"writes, materializations, checks), between steps "
        f"{between:.1f} s, run ended {typical.run_wall - typical.wall:+.1f} s after the last "
        f"acknowledgement, {typical.events} events; "
        f"direct: {phases_text(base_phases)}; per supplier, deployment step / direct fetch: "
        f"{supplier_text(typical.steps, direct)}; sensor tick wait {typical.tick_wait:.1f} s (not counted); "
        f"{stolen_text(direct, deployed)}; end-to-end {wall:.1f} s"
    )
    return line(NAME, wall / baseline, TARGET, detail)


if __name__ == "__main__":
    print(run())
