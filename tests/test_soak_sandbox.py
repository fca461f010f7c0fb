"""Sandbox pieces the soak drives: the seeded price stream, ground truth, storefront wipe, alert webhook."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from sandbox.alerts import DEFAULT_TOKEN
from sandbox.app import create_app
from sandbox.world import World


def test_the_stream_moves_a_seeded_share_of_each_rest_supplier_and_logs_it():
    world = World(seed=5, catalog_size=400)
    before = {s: dict(world.offers(s)) for s in ("alpha", "beta", "gamma", "delta")}
    changes = world.stream_step(share=0.05, at=123.0)
    for supplier in ("alpha", "beta", "gamma"):
        mine = [c for c in changes if c["supplier"] == supplier]
        assert len(mine) == round(len(before[supplier]) * 0.05)
        assert {c["sku"] for c in mine} <= set(before[supplier])  # offers move, the listing stays
        for change in mine:
            offer = world.offers(supplier)[change["sku"]]
            assert (str(offer.price), offer.currency, offer.stock) == (
                change["price"],
                change["currency"],
                change["stock"],
            )
        untouched = set(before[supplier]) - {c["sku"] for c in mine}
        assert all(world.offers(supplier)[sku] == before[supplier][sku] for sku in untouched)
    assert world.offers("delta") == before["delta"]  # the CDN file supplier moves by generation only
    assert [c["seq"] for c in changes] == list(range(len(changes))) and {c["at"] for c in changes} == {123.0}
    assert world.stream_log == changes and world.stream_steps == 1


def test_the_stream_is_deterministic_per_seed_and_steps_differ():
    one, two, other = (
        World(seed=5, catalog_size=300),
        World(seed=5, catalog_size=300),
        World(seed=6, catalog_size=300),
    )
    strip = lambda changes: [{k: v for k, v in c.items() if k != "at"} for c in changes]  # noqa: E731
    first = strip(one.stream_step(at=1.0))
    assert first == strip(two.stream_step(at=2.0))
    assert first != strip(other.stream_step(at=1.0))
    assert strip(one.stream_step()) != first  # the next step moves other SKUs


def test_a_new_generation_drops_the_streams_changes_and_an_unused_stream_changes_nothing():
    plain = World(seed=5, catalog_size=200)
    assert plain.offers("alpha") is World(seed=5, catalog_size=200).offers("alpha")  # cached, untouched
    streamed = World(seed=5, catalog_size=200)
    streamed.stream_step(share=0.5)
    assert streamed.offers("alpha") != plain.offers("alpha")
    streamed.generation = 1
    plain.generation = 1
    assert streamed.offers("alpha") == plain.offers("alpha")


@pytest.mark.parametrize(
    ("share", "suppliers", "problem"),
    [(0.05, ("delta",), "REST suppliers only"), (0.0, ("alpha",), "share must be in (0, 1]")],
)
def test_bad_stream_settings_are_refused_with_the_reason(share, suppliers, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        World(catalog_size=10).stream_step(share=share, suppliers=suppliers)
    with TestClient(create_app(World(catalog_size=10))) as client:
        answer = client.post("/_control/stream/step", json={"share": share, "suppliers": list(suppliers)})
        assert answer.status_code == 400 and problem in answer.json()["error"]


def test_controls_expose_ground_truth_changes_and_the_storefront_log():
    world = World(seed=2, catalog_size=100)
    with TestClient(create_app(world)) as client:
        truth = client.get("/_control/offers").json()
        assert truth["stream_next"] == 0 and set(truth["offers"]) == {"alpha", "beta", "gamma", "delta"}
        sku, (price, currency, stock) = next(iter(truth["offers"]["alpha"].items()))
        offer = world.offers("alpha")[sku]
        assert (price, currency, stock) == (str(offer.price), offer.currency, offer.stock)
        step = client.post("/_control/stream/step", json={"share": 0.1, "suppliers": ["beta"]}).json()
        assert step["changes"] and {c["supplier"] for c in step["changes"]} == {"beta"}
        listed = client.get("/_control/stream/changes", params={"since": 1}).json()
        assert listed == {"changes": step["changes"][1:], "next": len(step["changes"])}
        assert client.get("/_control/offers", params={"suppliers": "beta"}).json()["stream_next"] == len(
            step["changes"]
        )
        world.pushes.append({"key": "k1", "batch": "batch-000", "prices": [], "received_at": 1.0})
        log = client.get("/_control/storefront", params={"since": 0}).json()
        assert log["next"] == 1 and log["duplicates"] == 0 and log["pushes"][0]["key"] == "k1"
        assert client.get("/_control/storefront", params={"since": 1}).json()["pushes"] == []


def test_the_background_stream_runs_until_stopped_and_reset_forgets_it():
    world = World(seed=2, catalog_size=100)
    with TestClient(create_app(world)) as client:
        assert client.post("/_control/stream", json={"every_s": 0.05, "share": 0.05}).json()["running"]
        deadline_steps = 0
        for _ in range(200):
            deadline_steps = client.get("/_control/stream").json()["steps"]
            if deadline_steps >= 2:
                break
            client.get("/_health")
        assert deadline_steps >= 2 and all(c["at"] > 0 for c in world.stream_log)
        assert client.post("/_control/stream", json={"every_s": 0}).json()["running"] is False
        client.post("/_control/reset")
        assert world.stream_log == [] and world.stream_steps == 0


def test_the_storefront_wipe_forgets_prices_and_keys_but_not_the_push_log():
    world = World(catalog_size=10)
    world.storefront_prices["SKU-000001"] = {"sku": "SKU-000001", "price": "1.0000", "version": 1}
    world.applied_keys["k"] = 1
    world.pushes.append({"key": "k"})
    with TestClient(create_app(world)) as client:
        assert client.post("/_control/storefront_wipe").json() == {"ok": True}
    assert world.storefront_prices == {} and world.applied_keys == {} and world.pushes == [{"key": "k"}]


def test_the_alert_webhook_records_slack_payloads_behind_its_secret_url():
    world = World(catalog_size=10)
    with TestClient(create_app(world)) as client:
        assert client.post(f"/alerts/{DEFAULT_TOKEN}", json={"text": "hello"}).text == "ok"
        assert client.post("/alerts/wrong-token", json={"text": "x"}).status_code == 404
        assert client.post(f"/alerts/{DEFAULT_TOKEN}", json={"blocks": []}).status_code == 400
        client.post("/_control/faults", json={"alerts": {"fail_next": 1}})
        assert client.post(f"/alerts/{DEFAULT_TOKEN}", json={"text": "later"}).status_code == 503
        assert client.post(f"/alerts/{DEFAULT_TOKEN}", json={"text": "later"}).status_code == 200
        listed = client.get("/alerts").json()["alerts"]
        assert [a["text"] for a in listed] == ["hello", "later"] and [a["seq"] for a in listed] == [0, 1]
        client.post("/_control/reset")
        assert client.get("/alerts").json() == {"alerts": []}
