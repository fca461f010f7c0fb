"""The `alerts` sensor: one alert per incident and one recovery, delivered to the sandbox's webhook."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetKey,
    DagsterInstance,
    Failure,
    StaticPartitionsDefinition,
    asset,
    build_sensor_context,
    materialize,
)

from pricing_assets.alerts import (
    AlertState,
    AlertWebhook,
    build_alert_sensor,
    observe_check,
    observe_run,
    record_failure,
    record_success,
)
from pricing_assets.definitions import build_defs
from pricing_assets.partitions import catalog_batch_partitions, offers_key
from pricing_assets.supplier_offers import build_supplier_offer_assets
from resources.config import load_registry
from resources.service_config import ServiceConfigResource
from resources.suppliers import SupplierClients
from resources.warehouse import Warehouse, WarehouseIOManager
from sandbox.alerts import DEFAULT_TOKEN
from tests.suppliers.conftest import world_catalog, write_registry_file

BATCHES = 4
PARTITIONS = catalog_batch_partitions(BATCHES)
RANGE = {
    "dagster/asset_partition_range_start": "batch-000",
    "dagster/asset_partition_range_end": "batch-003",
}


# ------------------------------------------------------------------ incident bookkeeping (pure)


def test_one_alert_per_incident_and_a_recovery_when_every_failed_range_succeeded():
    state = AlertState()
    first = record_failure(state, "run:j", "job j", ("b-1", "b-1"), run_id="r1", at=100.0, detail="boom")
    assert first is not None and "ALERT job j failed [b-1]: boom" in first
    assert record_failure(state, "run:j", "job j", ("b-2", "b-2"), run_id="r2", at=110.0, detail="x") is None
    assert record_failure(state, "run:j", "job j", ("b-1", "b-1"), run_id="r3", at=120.0, detail="x") is None
    # b-1 recovered, b-2 still failing: still one open incident, no message.
    assert record_success(state, "run:j", ("b-1", "b-1"), run_id="r4", at=130.0) is None
    assert state.incidents["run:j"].failing == [["b-2", "b-2"]]
    recovered = record_success(state, "run:j", ("b-0", "b-3"), run_id="r5", at=200.0)
    assert recovered is not None and "RECOVERED job j is fine again after 1m40s" in recovered
    assert state.incidents == {} and state.outbox == [first, recovered]
    # A success with nothing open says nothing; a new failure is a new incident.
    assert record_success(state, "run:j", ("b-1", "b-1"), run_id="r6", at=210.0) is None
    assert record_failure(state, "run:j", "job j", ("", ""), run_id="r7", at=220.0, detail="y") is not None


def test_an_unpartitioned_success_does_not_clear_a_partition_and_vice_versa():
    state = AlertState()
    record_failure(state, "run:j", "job j", ("b-1", "b-1"), run_id="r1", at=1.0, detail="d")
    assert record_success(state, "run:j", ("", ""), run_id="r2", at=2.0) is None
    record_failure(state, "run:k", "job k", ("", ""), run_id="r3", at=3.0, detail="d")
    assert record_success(state, "run:k", ("b-0", "b-9"), run_id="r4", at=4.0) is None
    assert record_success(state, "run:k", ("", ""), run_id="r5", at=5.0) is not None


def test_check_and_run_observers_key_incidents_by_check_and_by_job():
    state = AlertState()
    failed = AssetCheckEvaluation(
        asset_key=AssetKey(["supplier_offers", "beta"]),
        check_name="supplier_reachable",
        passed=False,
        severity=AssetCheckSeverity.ERROR,
        description="HTTP 503 after 3 attempts\nmore",
    )
    text = observe_check(state, failed, run_id="r1", at=1.0)
    assert text is not None
    assert (
        "ALERT check supplier_reachable on supplier_offers/beta failed: ERROR: HTTP 503 after 3 attempts"
        in text
    )
    assert observe_check(state, failed, run_id="r2", at=2.0) is None
    assert observe_run(state, job="price_sweep_job", tags=RANGE, succeeded=True, run_id="r2", at=2.0) is None
    passed = AssetCheckEvaluation(
        asset_key=AssetKey(["supplier_offers", "beta"]), check_name="supplier_reachable", passed=True
    )
    assert "RECOVERED check supplier_reachable on supplier_offers/beta" in (
        observe_check(state, passed, run_id="r3", at=3.0) or ""
    )
    assert json.loads(AlertState.parse(state.dump()).dump()) == json.loads(state.dump())


def test_a_failed_warn_check_alerts_only_when_warn_is_asked_for():
    warned = AssetCheckEvaluation(
        asset_key=AssetKey("orders"),
        check_name="no_order_without_lines",
        passed=False,
        severity=AssetCheckSeverity.WARN,
    )
    state = AlertState()
    assert observe_check(state, warned, run_id="r1", at=1.0) is None and state.incidents == {}
    text = observe_check(state, warned, run_id="r1", at=1.0, severity="WARN")
    assert text is not None and "failed: WARN: no description" in text


def test_the_outbox_is_bounded_and_counts_what_it_dropped():
    state = AlertState()
    for number in range(205):
        state.queue(f"m{number}")
    assert len(state.outbox) == 200 and state.outbox[0] == "m5" and state.dropped == 5


# ------------------------------------------------------------------ the sensor on a real instance


@asset(name="catalog")
def catalog_stub() -> pl.DataFrame:
    """The sandbox world's catalog, standing in for the catalog asset."""
    return world_catalog(BATCHES)


@pytest.fixture
def registry_file(tmp_path: Path) -> Path:
    """The packaged registry's REST suppliers with fast retries."""
    return write_registry_file(tmp_path, BATCHES)


class Deployment:
    """An instance, the real supplier_offers assets against the sandbox, and the alerts sensor."""

    def __init__(
        self, sandbox: Any, registry_file: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        self.sandbox = sandbox
        self.instance = DagsterInstance.ephemeral()
        self.url = f"{sandbox.url}/alerts/{DEFAULT_TOKEN}"
        monkeypatch.setenv("ALERT_WEBHOOK_URL", self.url)
        warehouse_dir = str(folder / "warehouse")
        self.resources = {
            "io_manager": WarehouseIOManager(base_dir=warehouse_dir),
            "warehouse": Warehouse(base_dir=warehouse_dir),
            "service_config": ServiceConfigResource(override_json="{}"),
            "suppliers": SupplierClients(registry_path=str(registry_file)),
        }
        self.feeds = build_supplier_offer_assets(load_registry(registry_file), PARTITIONS)
        materialize([catalog_stub], resources=self.resources, instance=self.instance)
        self.sensor = build_alert_sensor()
        self.cursor: str | None = None
        self.logs: list[str] = []

    def sweep(self, supplier: str = "beta") -> bool:
        """A ranged run of one supplier's offers over every batch, as the price sweep launches it."""
        result = materialize(
            [catalog_stub, *self.feeds],
            selection=[offers_key(supplier)],
            resources=self.resources,
            instance=self.instance,
            tags=RANGE,
            raise_on_error=False,
        )
        return result.success

    def tick(self) -> str:
        """One sensor evaluation; keeps the cursor, returns the skip summary."""
        context = build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources={"alert_webhook": AlertWebhook()}
        )
        result = self.sensor.evaluate_tick(context)
        self.cursor = result.cursor
        self.logs += [str(result.skip_message)]
        return str(result.skip_message)

    def alerts(self) -> list[str]:
        """Texts the sandbox webhook received."""
        body = httpx.get(f"{self.sandbox.url}/alerts", timeout=10).json()
        return [alert["text"] for alert in body["alerts"]]


@pytest.fixture
def deployment(sandbox, registry_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Deployment:
    """A reset sandbox and a fresh instance whose alerts go to the sandbox webhook."""
    return Deployment(sandbox, registry_file, tmp_path, monkeypatch)


def test_a_supplier_outage_raises_exactly_one_alert_and_one_recovery(deployment, sandbox):
    assert deployment.tick().startswith("started")
    assert deployment.sweep()
    deployment.tick()
    assert deployment.alerts() == []

    sandbox.control(faults={"beta": {"outage": True, "retry_after": 0}})
    for _ in range(3):  # three sweeps during the outage, a tick after each, and an idle tick
        assert deployment.sweep()  # an outage is a failed check, not a failed run
        deployment.tick()
    deployment.tick()
    alerts = deployment.alerts()
    assert len(alerts) == 1, alerts
    assert "ALERT check supplier_reachable on supplier_offers/beta failed" in alerts[0]

    sandbox.control(faults={"beta": None})
    assert deployment.sweep()
    deployment.tick()
    assert deployment.sweep()
    deployment.tick()
    alerts = deployment.alerts()
    assert len(alerts) == 2, alerts
    assert "RECOVERED check supplier_reachable on supplier_offers/beta is fine again" in alerts[1]
    # The webhook URL is a secret: not in the cursor, not in anything the sensor logged.
    assert DEFAULT_TOKEN not in (deployment.cursor or "") and deployment.url not in (deployment.cursor or "")
    assert not any(DEFAULT_TOKEN in line for line in deployment.logs)


failing_partitions: set[str] = set()


@asset(partitions_def=StaticPartitionsDefinition(["p-1", "p-2"]))
def flaky(context) -> int:
    """Fails for the partitions listed in failing_partitions."""
    if context.partition_key in failing_partitions:
        raise Failure(description=f"{context.partition_key} is broken")
    return 1


def test_run_failures_alert_once_per_job_and_recover_when_every_partition_succeeded(deployment):
    deployment.tick()
    failing_partitions.update({"p-1", "p-2"})
    for key in ("p-1", "p-2", "p-1"):
        materialize([flaky], partition_key=key, instance=deployment.instance, raise_on_error=False)
    deployment.tick()
    alerts = deployment.alerts()
    assert len(alerts) == 1 and "ALERT job __ephemeral_asset_job__ failed [p-1]" in alerts[0], alerts
    failing_partitions.clear()
    materialize([flaky], partition_key="p-1", instance=deployment.instance)
    deployment.tick()
    assert len(deployment.alerts()) == 1  # p-2 has not succeeded since it failed
    materialize([flaky], partition_key="p-2", instance=deployment.instance)
    deployment.tick()
    alerts = deployment.alerts()
    assert len(alerts) == 2 and "RECOVERED job __ephemeral_asset_job__" in alerts[1], alerts


def test_a_webhook_that_is_down_gets_the_alert_later_exactly_once(deployment, sandbox):
    deployment.tick()
    failing_partitions.add("p-1")
    try:
        sandbox.control(faults={"alerts": {"fail_next": 2}})
        materialize([flaky], partition_key="p-1", instance=deployment.instance, raise_on_error=False)
        assert "1 queued: webhook answered HTTP 503" in deployment.tick()
        assert deployment.alerts() == []
        deployment.tick()  # the second 503
        deployment.tick()
        deployment.tick()
        assert len(deployment.alerts()) == 1
        assert DEFAULT_TOKEN not in " ".join(deployment.logs)
    finally:
        failing_partitions.clear()


def test_without_a_webhook_url_the_sensor_only_follows_the_runs(deployment, monkeypatch):
    monkeypatch.delenv("ALERT_WEBHOOK_URL")
    failing_partitions.add("p-1")
    try:
        materialize([flaky], partition_key="p-1", instance=deployment.instance, raise_on_error=False)
        assert deployment.tick() == "alerts off: $ALERT_WEBHOOK_URL is not set"
        assert deployment.alerts() == []
        assert AlertState.parse(deployment.cursor).after_failure
    finally:
        failing_partitions.clear()


def test_the_pricing_location_runs_the_alerts_sensor_with_its_webhook_resource():
    defs = build_defs()
    sensor = defs.resolve_sensor_def("alerts")
    assert sensor.default_status.value == "RUNNING"
    assert isinstance(defs.resources["alert_webhook"], AlertWebhook)
