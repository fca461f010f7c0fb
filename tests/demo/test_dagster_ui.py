"""The demo's GraphQL client against a fake webserver: which runs' pool slots it frees (the real
webserver answers the same queries in tests/demo/test_browser.py)."""

from __future__ import annotations

import json

import httpx

from sandbox.dagster_ui import DagsterUi


def fake_webserver(pools: list[dict], in_progress: dict[str, str], freed: list[str]) -> httpx.MockTransport:
    """Answers the concurrency, runs and free-slots requests; records which runs were freed."""

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        query = body["query"]
        if "concurrencyLimits" in query:
            data = {"instance": {"concurrencyLimits": pools}}
        elif "runsOrError" in query:
            statuses = set(body["variables"]["statuses"])
            results = [{"runId": r, "status": s} for r, s in in_progress.items() if s in statuses]
            data = {"runsOrError": {"__typename": "Runs", "results": results}}
        elif "freeConcurrencySlotsForRun" in query:
            freed.append(body["variables"]["runId"])
            data = {"freeConcurrencySlotsForRun": True}
        else:
            return httpx.Response(400, json={"errors": [{"message": f"unexpected {query[:40]}"}]})
        return httpx.Response(200, json={"data": data})

    return httpx.MockTransport(handle)


def test_frees_the_slots_of_ended_runs_only():
    pools = [
        {"concurrencyKey": "supplier_delta", "activeRunIds": ["cancelled-mid-step"], "pendingStepRunIds": []},
        {
            "concurrencyKey": "supplier_alpha",
            "activeRunIds": ["running"],
            "pendingStepRunIds": ["queued-step"],
        },
        {"concurrencyKey": "storefront", "activeRunIds": [], "pendingStepRunIds": ["marked-cancelled"]},
    ]
    in_progress = {"running": "STARTED", "queued-step": "STARTED"}
    freed: list[str] = []
    ui = DagsterUi("http://ui.test", transport=fake_webserver(pools, in_progress, freed))

    assert ui.free_slots_of_finished_runs() == ["cancelled-mid-step", "marked-cancelled"]
    assert freed == ["cancelled-mid-step", "marked-cancelled"]


def test_nothing_to_free_asks_nothing_more():
    freed: list[str] = []
    ui = DagsterUi("http://ui.test", transport=fake_webserver([], {}, freed))
    assert ui.free_slots_of_finished_runs() == []
    assert freed == []
