"""`bench cycle`'s pure helpers and the bulk sandbox's answers (the benchmark itself is run by hand)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
import yaml
from dagster import DagsterEventType
from starlette.testclient import TestClient

import bench.cycle as cycle_module
from bench.cycle import (
    _SCRUBBED,
    BATCH_SIZE_ENV,
    ENV_MANIFEST,
    ROOT,
    CycleError,
    catalog_frame,
    chunked,
    delta_offers,
    due_cursor,
    production_event_batching,
    registry_document,
    step_phases,
)
from pricing_assets.sweep import SweepCursor
from resources.config import load_registry
from resources.schemas import CATALOG_SCHEMA, OFFERS_SCHEMA
from resources.storefront import key_of_body, sign
from sandbox.bulk import (
    FX,
    Bodies,
    State,
    alpha_body,
    build_app,
    chunk_key,
    cursor_of,
    make_market,
    move_market,
    moved_skus,
    offset_of,
    pregenerate,
)

N = 3000


def test_market_is_deterministic_and_offers_most_skus() -> None:
    """The same seed gives the same market; each supplier offers about 90 % of the SKUs."""
    market = make_market(N, 5)
    assert market.equals(make_market(N, 5))
    assert not market.equals(make_market(N, 6))
    share = market.get_column("alpha_cents").is_not_null().mean()
    assert 0.85 < share < 0.95  # type: ignore[operator]


def test_move_undercuts_the_best_offer_of_moved_skus_only() -> None:
    """Moved SKUs: alpha at 90 % of the previous best EUR price; every other SKU untouched."""
    market = make_market(N, 5)
    skus = moved_skus(market, 1, 0.05, 5)
    assert 0.02 * N < skus.len() < 0.08 * N
    assert set(skus.to_list()) != set(moved_skus(market, 2, 0.05, 5).to_list())
    moved = move_market(market, skus)
    sku = skus[0]
    before = market.filter(pl.col("sku") == sku).row(0, named=True)
    after = moved.filter(pl.col("sku") == sku).row(0, named=True)
    best = min(
        Decimal(before[f"{s}_cents"]) * FX[c]
        for s, c in (("alpha", "EUR"), ("beta", "USD"), ("omega", "GBP"), ("delta", "EUR"))
        if before[f"{s}_cents"] is not None
    )
    assert after["alpha_cents"] == int(best * Decimal("0.9"))
    rest = ~pl.col("sku").is_in(skus.implode())
    assert moved.filter(rest).equals(market.filter(rest))


def test_pregenerated_alpha_chunks_equal_answers_built_on_demand() -> None:
    """A pre-generated chunk is byte for byte what the on-demand path answers for the same SKUs."""
    market = make_market(N, 5)
    bodies = pregenerate(market, 500, 1000)
    active = market.filter(pl.col("active")).get_column("sku").to_list()
    asked = active[500:1000]
    pre = json.loads(bodies.alpha[chunk_key(asked)])
    built = json.loads(alpha_body(market, asked))
    assert pre["items"] == built["items"]
    assert sorted(pre["unknown_skus"]) == built["unknown_skus"]
    assert len(pre["items"]) + len(pre["unknown_skus"]) == 500


def test_cursor_round_trip() -> None:
    """A beta cursor points back at its offset."""
    assert offset_of(cursor_of(12345)) == 12345


def _client(market: pl.DataFrame) -> TestClient:
    state = State(seed=5, market=market, bodies=pregenerate(market, 500, 1000), chunk=500, page=1000)
    return TestClient(build_app(state, "key", "secret"))


def test_listings_walk_every_offer_once() -> None:
    """Beta's cursor pages and omega's numbered pages list each offered SKU exactly once."""
    market = make_market(N, 5)
    client = _client(market)
    headers = {"X-Api-Key": "key"}
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = client.get("/suppliers/beta/products", params=params, headers=headers).json()
        seen += [record["id"] for record in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == market.filter(pl.col("beta_cents").is_not_null()).get_column("sku").to_list()
    first = client.get("/suppliers/omega/items", params={"page": 1, "per_page": 1000}, headers=headers)
    pages = first.json()["total_pages"]
    codes = [record["code"] for record in first.json()["results"]]
    for number in range(2, pages + 1):
        answer = client.get(
            "/suppliers/omega/items", params={"page": number, "per_page": 1000}, headers=headers
        )
        codes += [record["code"] for record in answer.json()["results"]]
    assert codes == market.filter(pl.col("omega_cents").is_not_null()).get_column("sku").to_list()
    assert client.get("/suppliers/beta/products", headers={"X-Api-Key": "wrong"}).status_code == 401


def test_storefront_applies_signed_pushes_once_and_compares() -> None:
    """A signed push is applied, its key answered 409 the second time; mismatches count differences."""
    client = _client(make_market(100, 5))
    body = json.dumps(
        {
            "batch": "b",
            "prices": [
                {
                    "sku": "S1",
                    "price": "9.99",
                    "currency": "EUR",
                    "available": True,
                    "supplier": "alpha",
                    "version": 1,
                }
            ],
        }
    ).encode()
    now = int(datetime.now(UTC).timestamp())
    headers = {"X-Signature": sign("secret", body, now), "Idempotency-Key": key_of_body(body)}
    assert client.post("/sf/one/prices", content=body, headers=headers).status_code == 200
    assert client.post("/sf/one/prices", content=body, headers=headers).status_code == 409
    bad = {**headers, "X-Signature": sign("other", body, now)}
    assert client.post("/sf/two/prices", content=body, headers=bad).status_code == 401
    listing = client.get("/sf/one/prices", params={"page": 1, "per_page": 10}).json()
    assert listing["items"][0]["price"] == "9.99" and listing["total"] == 1
    compare = {"a": "one", "b": "two", "skus": ["S1"]}
    assert client.post("/_bench/mismatches", json=compare).json()["mismatched"] == 1
    client.post("/_bench/snapshot", json={"name": "one", "as": "two"})
    assert client.post("/_bench/mismatches", json=compare).json()["mismatched"] == 0


def test_registry_loads_and_leaves_out_the_per_sku_kind(tmp_path: Path) -> None:
    """The benchmark's registry is valid: three listing-kind REST suppliers and the file supplier."""
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(registry_document("http://127.0.0.1:1")))
    registry = load_registry(path)
    kinds = {entry.id: entry.kind for entry in registry.suppliers}
    assert kinds == {
        "alpha": "rest_batch",
        "beta": "rest_paginated",
        "omega": "rest_paginated",
        "delta": "cdn_file",
    }
    assert registry.catalog_batches == 16


def test_due_cursor_launches_a_whole_new_cycle_now() -> None:
    """The cursor starts at the first batch, was never launched (due) and carries the cycle number."""
    cursor = SweepCursor.parse(due_cursor(3))
    assert cursor == SweepCursor(next_index=0, cycle=3, launched_at=0.0)


def test_step_phases_groups_step_keys() -> None:
    """Supplier steps add up to fetch; each pricing step maps to its phase; checks count nowhere."""
    phases = step_phases(
        {
            "supplier_offers__alpha": 2.0,
            "supplier_offers__beta": 1.5,
            "best_offers": 3.0,
            "storefront_prices": 1.0,
            "storefront_sync": 4.0,
            "something_else": 9.0,
        }
    )
    assert phases == {"fetch": 3.5, "select": 3.0, "price": 1.0, "push": 4.0}


def test_chunks_stay_within_a_batch_and_size() -> None:
    """Push chunks never mix batches and hold at most `size` entries, covering every entry once."""
    entries = pl.DataFrame(
        {
            "sku": [f"S{i:03d}" for i in range(25)],
            "price": ["1.00"] * 25,
            "currency": ["EUR"] * 25,
            "available": [True] * 25,
            "supplier": ["alpha"] * 25,
            "version": [1] * 25,
            "batch": ["a" if i % 3 else "b" for i in range(25)],
        }
    )
    chunks = list(chunked(entries, 4))
    assert all(chunk.entries.height <= 4 for chunk in chunks)
    assert sorted(s for chunk in chunks for s in chunk.skus()) == entries.get_column("sku").to_list()
    for chunk in chunks:
        batches = entries.filter(pl.col("sku").is_in(chunk.skus())).get_column("batch").unique()
        assert batches.to_list() == [chunk.batch]


def test_catalog_and_delta_frames_have_the_project_schemas() -> None:
    """The seeded catalog and the file supplier's cache are what the sweep reads."""
    market = make_market(200, 5)
    catalog = catalog_frame(market)
    assert {**CATALOG_SCHEMA, "batch": pl.String()} == dict(catalog.schema)
    offers = delta_offers(market, datetime(2026, 1, 1, tzinfo=UTC))
    assert dict(offers.schema) == OFFERS_SCHEMA
    assert offers.height == market.get_column("delta_cents").is_not_null().sum()


def test_bodies_default_empty() -> None:
    """A fresh Bodies holds nothing (the on-demand path answers everything)."""
    assert Bodies().alpha == {} and Bodies().listings == {}


def _push(client: TestClient, shop: str, price: str) -> None:
    """One signed push of S1 at `price` to storefront `shop`."""
    entry = {"sku": "S1", "price": price, "currency": "EUR", "available": True, "supplier": "alpha"}
    body = json.dumps({"batch": "b", "prices": [{**entry, "version": 1}]}).encode()
    now = int(datetime.now(UTC).timestamp())
    headers = {"X-Signature": sign("secret", body, now), "Idempotency-Key": key_of_body(body)}
    assert client.post(f"/sf/{shop}/prices", content=body, headers=headers).status_code == 200


def test_watch_notes_when_the_target_storefront_shows_the_reference_prices() -> None:
    """The watch ends at the push that makes the target show the reference's price, not before."""
    client = _client(make_market(100, 5))
    assert client.get("/_bench/watch").status_code == 404
    _push(client, "one", "9.99")
    watch = {"reference": "one", "target": "two", "skus": ["S1"]}
    assert client.post("/_bench/watch", json=watch).json() == {"remaining": 1, "done_at": None}
    _push(client, "three", "9.99")  # another storefront: not the target
    _push(client, "two", "8.88")  # the target, a different price
    assert client.get("/_bench/watch").json() == {"remaining": 1, "done_at": None}
    before = datetime.now(UTC).timestamp()
    _push(client, "two", "9.99")
    answer = client.get("/_bench/watch").json()
    assert answer["remaining"] == 0 and before <= answer["done_at"] <= datetime.now(UTC).timestamp()
    # Set again once the target shows every price: done at once.
    assert client.post("/_bench/watch", json=watch).json()["remaining"] == 0


def test_a_market_of_batches_is_in_the_stored_catalog_order_so_its_chunks_are_pregenerated() -> None:
    """With batches, the market's order is the catalog's as stored (batch, SKU), so the catalog
    walked in order asks alpha for exactly the pre-generated chunks."""
    market = make_market(N, 5, 16)
    assert market.sort("sku").equals(make_market(N, 5).sort("sku"))
    catalog = catalog_frame(market)
    assert catalog.get_column("sku").equals(market.get_column("sku"))
    bodies = pregenerate(market, 500, 1000)
    active = catalog.filter(pl.col("active")).get_column("sku").to_list()
    assert all(chunk_key(active[i : i + 500]) in bodies.alpha for i in range(0, len(active), 500))


def test_only_the_postgres_instance_gets_the_configmaps_event_batching() -> None:
    """The production storage runs with the ConfigMap's batch size; the SQLite run never inherits one."""
    manifest = yaml.safe_load((ROOT / "deploy" / "k8s" / "manifests" / ENV_MANIFEST).read_text())
    assert production_event_batching() == {BATCH_SIZE_ENV: manifest["data"][BATCH_SIZE_ENV]}
    assert BATCH_SIZE_ENV in _SCRUBBED


class _LosingSensor:
    """A deployment whose first cursor set is overwritten by a tick in flight; the second one launches."""

    def __init__(self) -> None:
        self.sets: list[int] = []
        self.runs: list[object] = []

    def make_due(self, cycle: int) -> None:
        self.sets.append(cycle)
        if len(self.sets) == 2:
            self.runs.append(object())


def test_a_cursor_set_lost_to_a_running_tick_is_set_again(monkeypatch) -> None:
    monkeypatch.setattr(cycle_module, "TICK_WAIT", 0.6)
    deployment = _LosingSensor()
    monkeypatch.setattr(
        cycle_module, "new_run", lambda instance, known: deployment.runs[0] if deployment.runs else None
    )
    run = cycle_module.launched_run(deployment, None, set(), 4)  # type: ignore[arg-type]
    assert run is deployment.runs[0]
    assert deployment.sets == [4, 4]


def test_a_sensor_that_never_launches_fails_naming_the_attempts(monkeypatch) -> None:
    monkeypatch.setattr(cycle_module, "TICK_WAIT", 0.4)
    monkeypatch.setattr(cycle_module, "new_run", lambda instance, known: None)
    deployment = _LosingSensor()
    deployment.make_due = deployment.sets.append  # type: ignore[method-assign]
    with pytest.raises(CycleError, match=r"sweep sensor to launch a run \(its cursor set 2 times\)"):
        cycle_module.launched_run(deployment, None, set(), 5)  # type: ignore[arg-type]
    assert deployment.sets == [5, 5]


def test_stolen_text_lists_each_repetition_of_both_sides() -> None:
    direct = [cycle_module.DirectTiming(wall=1.0, phases={}, pushed=0, stolen=s) for s in (0.0, 2.26)]
    deployed = [
        cycle_module.DeployedTiming(tick_wait=0, wall=2, run_wall=2, startup=1, stolen=s) for s in (4.0, 0.04)
    ]
    assert cycle_module.stolen_text(direct, deployed) == (
        "CPU stolen by the host (s, each): direct 0.0, 2.3, deployment 4.0, 0.0"
    )


def _event(kind: DagsterEventType | None, at: float, step: str | None = None) -> SimpleNamespace:
    """A stored event as run_breakdown reads it."""
    return SimpleNamespace(dagster_event_type=kind, timestamp=at, step_key=step)


K = DagsterEventType
# A run as its event log holds it: planned events, queue, process start, two steps (one with a check).
RUN_EVENTS = [
    _event(K.ASSET_MATERIALIZATION_PLANNED, 100.0),
    _event(K.ASSET_MATERIALIZATION_PLANNED, 101.0),
    _event(K.RUN_ENQUEUED, 101.25),
    _event(K.RUN_STARTING, 101.75),
    _event(K.ENGINE_EVENT, 103.0),
    _event(K.RUN_START, 103.5),
    _event(K.STEP_START, 104.0, "supplier_offers__alpha"),
    _event(None, 109.0, "supplier_offers__alpha"),  # a log line
    _event(K.STEP_OUTPUT, 110.0, "supplier_offers__alpha"),
    _event(K.ASSET_MATERIALIZATION, 110.5, "supplier_offers__alpha"),
    _event(K.STEP_OUTPUT, 110.75, "supplier_offers__alpha"),  # a check's output
    _event(K.STEP_SUCCESS, 111.0, "supplier_offers__alpha"),
    _event(K.STEP_START, 111.0, "best_offers"),
    _event(K.STEP_OUTPUT, 113.0, "best_offers"),
    _event(K.STEP_SUCCESS, 113.5, "best_offers"),
    _event(K.RUN_SUCCESS, 114.0),
]


def test_run_breakdown_splits_start_up_and_times_steps_after_their_outputs() -> None:
    breakdown = cycle_module.run_breakdown(RUN_EVENTS)
    assert breakdown.startup == 3.5
    assert breakdown.startup_parts == {"run creation": 1.25, "queue": 0.5, "run process": 1.75}
    assert breakdown.steps == {"supplier_offers__alpha": 7.0, "best_offers": 2.5}
    assert breakdown.after_outputs == 1.5  # from each step's first output: 1.0 + 0.5
    assert breakdown.events == len(RUN_EVENTS)
    assert cycle_module.phases_text(breakdown.startup_parts) == (
        "run creation 1.2 s, queue 0.5 s, run process 1.8 s"
    )


def test_run_breakdown_without_a_queue_counts_creation_with_the_next_part() -> None:
    events = [e for e in RUN_EVENTS if e.dagster_event_type != K.RUN_ENQUEUED]
    breakdown = cycle_module.run_breakdown(events)
    assert breakdown.startup_parts == {"queue": 1.75, "run process": 1.75}
    assert breakdown.startup == 3.5
    # A run that ended before any step (the assertion the shared event log had dropped).
    stepless = cycle_module.run_breakdown([e for e in events if e.step_key is None])
    assert stepless.steps == {} and stepless.after_outputs == 0.0


def test_catalog_batches_reads_the_knob_and_names_a_bad_value() -> None:
    assert cycle_module.catalog_batches({}) == 16
    assert cycle_module.catalog_batches({"BENCH_CYCLE_BATCHES": "8"}) == 8
    for bad in ("0", "1001", "eight", "-4", ""):
        with pytest.raises(ValueError, match=rf"BENCH_CYCLE_BATCHES='{bad}'.*1 to 1000"):
            cycle_module.catalog_batches({"BENCH_CYCLE_BATCHES": bad})
