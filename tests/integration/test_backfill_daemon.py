"""A backfill launched the way the UI launches it, run by the real daemon: one range fails, then
"re-execute from failure" re-runs only that range.

The pricing code location (pricing_assets.definitions, unchanged) is served by dagster-webserver and
dagster-daemon on a SQLite instance in a temp DAGSTER_HOME. Its suppliers are file suppliers whose cached
feeds are already in the warehouse, so no network is involved. 48 catalog batches make three ranged runs
of 16 under the assets' BackfillPolicy. The fault is on disk: a directory sits where
best_offers/batch-020.parquet must be written, so the run of batch-016..batch-031 fails at best_offers.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import yaml
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, RunsFilter

from bench._harness import deployment_env
from bench.best_offers import make_data
from pricing_assets.logic.batching import assign_batches, batch_keys
from pricing_assets.supplier_files import cache_key
from pricing_assets.sweep import RANGE_END_TAG, RANGE_START_TAG
from resources.schemas import OFFERS_SCHEMA
from resources.warehouse import Warehouse
from sandbox.server import free_port
from tests.pricing.wiring import materialized_partitions

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BATCHES = 48
SUPPLIERS = ("alpha", "beta")
FAULTY = "batch-020"
SWEPT = [["supplier_offers", "alpha"], ["supplier_offers", "beta"], ["best_offers"], ["storefront_prices"]]
TERMINAL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
# The backfill daemon works every 30 s; each wait below is bounded well above that.
WAIT_SECONDS = 240

LAUNCH = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""
RETRY = """
mutation($params: ReexecutionParams!) {
  reexecutePartitionBackfill(reexecutionParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""
STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status }
    ... on PythonError { message }
  }
}"""


def write_location_inputs(folder: Path) -> dict[str, str]:
    """Instance, workspace, registry, catalog and cached supplier feeds; returns the processes' env."""
    home = folder / "home"
    home.mkdir()
    instance = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    # The queue daemon's default 5 s poll only slows the test; everything else is the local instance.
    instance["run_coordinator"]["config"] = {"dequeue_interval_seconds": 1}
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance))
    workspace = folder / "workspace.yaml"
    entry = {"module_name": "pricing_assets.definitions", "working_directory": str(ROOT)}
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": entry}]}))
    registry = folder / "registry.yaml"
    suppliers = [
        {
            "id": supplier,
            "kind": "cdn_file",
            "base_url": "http://127.0.0.1:9/cdn",
            "priority": 10 * (index + 1),
            "currency": "EUR",
            "cdn": {"path": f"/{supplier}.csv.enc", "passphrase_env": "BACKFILL_TEST_UNUSED_PASSPHRASE"},
        }
        for index, supplier in enumerate(SUPPLIERS)
    ]
    registry.write_text(
        yaml.safe_dump({"store_currency": "EUR", "catalog_batches": BATCHES, "suppliers": suppliers})
    )
    warehouse = Warehouse(base_dir=str(folder / "warehouse"))
    catalog, offers = make_data(4_000)
    warehouse.write(assign_batches(catalog, BATCHES), ["catalog"])
    fresh = offers.with_columns(
        fetched_at=pl.lit(datetime.now(UTC)).dt.cast_time_unit("us"), currency=pl.lit("EUR")
    )
    for supplier in SUPPLIERS:
        feed = fresh.filter(pl.col("supplier") == supplier).select(list(OFFERS_SCHEMA))
        warehouse.write(feed, cache_key(supplier))
    return deployment_env(
        home=home, warehouse=warehouse.root(), registry=registry, service_config={"staleness_ttl": "PT6H"}
    )


def spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A Dagster process with the test's environment, its output kept in `log` for failures."""
    binary = Path(sys.executable).parent / command[0]
    with log.open("wb") as sink:
        return subprocess.Popen([str(binary), *command[1:]], cwd=ROOT, env=env, stdout=sink, stderr=sink)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate, then kill after 20 s."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


class Ui:
    """The webserver's GraphQL API, which the UI's backfill dialogs call."""

    def __init__(self, url: str, process: subprocess.Popen[bytes]) -> None:
        self.url = url
        self.process = process

    def wait_ready(self) -> None:
        """Until /server_info answers (bounded)."""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "dagster-webserver exited"
            try:
                if httpx.get(f"{self.url}/server_info", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError("dagster-webserver did not answer within 90 s")

    def graphql(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        """One GraphQL request; GraphQL-level errors fail the test with their message."""
        response = httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=60
        )
        response.raise_for_status()
        body = response.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def launched(self, data: dict[str, Any]) -> str:
        """The backfill id of a launch or re-execution result."""
        result = next(iter(data.values()))
        assert result["__typename"] == "LaunchBackfillSuccess", result
        return result["backfillId"]

    def wait_terminal(self, backfill_id: str) -> str:
        """Poll the backfill until the daemon marks it finished; return its status."""
        deadline = time.monotonic() + WAIT_SECONDS
        status = ""
        while time.monotonic() < deadline:
            result = self.graphql(STATUS, {"id": backfill_id})["partitionBackfillOrError"]
            assert result["__typename"] == "PartitionBackfill", result
            status = result["status"]
            if status in TERMINAL:
                return status
            time.sleep(1)
        raise AssertionError(f"backfill {backfill_id} still {status} after {WAIT_SECONDS} s")


@pytest.fixture
def location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Ui, dict[str, str], Path]]:
    """Webserver and daemon serving the pricing location; the daemon is started by the test."""
    env = write_location_inputs(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    port = free_port()
    workspace = str(tmp_path / "workspace.yaml")
    webserver = spawn(
        ["dagster-webserver", "-w", workspace, "-h", "127.0.0.1", "-p", str(port)], env, tmp_path / "web.log"
    )
    ui = Ui(f"http://127.0.0.1:{port}", webserver)
    try:
        ui.wait_ready()
        yield ui, env, tmp_path
    finally:
        stop(webserver)


def backfill_runs(instance: DagsterInstance, backfill_id: str) -> list[tuple[str, str, str]]:
    """(range start, range end, status) of every run a backfill launched, in range order."""
    runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))
    return sorted((r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG], r.status.value) for r in runs)


def test_ui_backfill_of_every_batch_then_reexecute_from_failure(location):
    ui, env, folder = location
    keys = batch_keys(BATCHES)
    blocker = folder / "warehouse" / "best_offers" / f"{FAULTY}.parquet"
    (blocker / "in-the-way").mkdir(parents=True)  # a non-empty directory: the rename onto it fails

    params = {"assetSelection": [{"path": path} for path in SWEPT], "partitionNames": keys}
    first = ui.launched(ui.graphql(LAUNCH, {"params": params}))
    workspace = str(folder / "workspace.yaml")
    daemon = spawn(["dagster-daemon", "run", "-w", workspace], env, folder / "daemon.log")
    try:
        assert ui.wait_terminal(first) == "COMPLETED_FAILED", (folder / "daemon.log").read_text()[-3000:]
        with DagsterInstance.get() as instance:
            # BackfillPolicy.multi_run(16): three ranged runs, not 48 single-partition ones.
            assert backfill_runs(instance, first) == [
                ("batch-000", "batch-015", "SUCCESS"),
                ("batch-016", "batch-031", "FAILURE"),
                ("batch-032", "batch-047", "SUCCESS"),
            ]
            failed_range = set(keys[16:32])
            assert materialized_partitions(instance, "storefront_prices") == set(keys) - failed_range
            assert materialized_partitions(instance, "best_offers") == set(keys) - failed_range
            # The supplier steps of the failed run succeeded before best_offers failed.
            alpha = AssetRecordsFilter(asset_key=AssetKey(["supplier_offers", "alpha"]))
            records = instance.fetch_materializations(alpha, limit=1000).records
            assert {record.partition_key for record in records} == set(keys)
        shutil.rmtree(blocker)  # the fault is repaired

        retry = ui.launched(ui.graphql(RETRY, {"params": {"parentRunId": first, "strategy": "FROM_FAILURE"}}))
        assert ui.wait_terminal(retry) == "COMPLETED_SUCCESS", (folder / "daemon.log").read_text()[-3000:]
        with DagsterInstance.get() as instance:
            assert backfill_runs(instance, retry) == [("batch-016", "batch-031", "SUCCESS")]
            assert materialized_partitions(instance, "storefront_prices") == set(keys)
    finally:
        stop(daemon)
    for key in keys:
        assert (folder / "warehouse" / "storefront_prices" / f"{key}.parquet").is_file()
