"""The Shopify adapter against the sandbox Admin GraphQL endpoint: grouping, pacing, THROTTLED, userErrors."""

import httpx
import polars as pl
import pytest

from resources.shopify import (
    MUTATION_COST,
    CostBucket,
    ShopifyPusher,
    ShopifyStorefront,
    VariantRef,
    bulk_update_document,
    variants_from_catalog,
)
from resources.storefront import APPLIED, IN_DOUBT, PARTIAL, REFUSED, PushChunk, PushStats, Storefront
from resources.warehouse import Warehouse
from tests.storefront.conftest import FAST, SECRET, read_ledger, sync, sync_metadata, targets, write_targets


def entries(n: int, start: int = 0) -> list[dict]:
    """Push entries for SKU-<start>..: even ones available, all routed to beta."""
    return [
        {
            "sku": f"SKU-{i:06d}",
            "price": f"{20 + i}.5000",
            "currency": "EUR",
            "available": i % 2 == 0,
            "supplier": "beta",
            "version": 1,
        }
        for i in range(start, start + n)
    ]


@pytest.fixture
def variants(sandbox) -> dict[str, VariantRef]:
    catalog = Storefront(url=f"{sandbox.url}/storefront", webhook_secret=SECRET).fetch_catalog()
    return variants_from_catalog(catalog)


def push(sandbox, variants, items, **shop):
    stats = PushStats()
    resource = ShopifyStorefront(shop_url=f"{sandbox.url}/shopify", **{**FAST, **shop})
    with resource.open_pusher(variants) as pusher:
        outcome = pusher.push_prices(PushChunk.from_entries("batch-000", items), stats=stats)
    return outcome, stats


def state(sandbox) -> dict:
    return httpx.get(f"{sandbox.url}/shopify/_state", timeout=10).json()


def test_one_mutation_per_product_several_products_per_request(sandbox, variants, shopify_token):
    # SKU-000000..8 are three products of three variants each.
    outcome, stats = push(sandbox, variants, entries(9), products_per_request=2)
    assert outcome.status == APPLIED and stats.requests == 2
    seen = state(sandbox)
    assert seen["counters"]["shopify.mutations"] == 3
    assert seen["counters"]["shopify.variant_updates"] == 9
    row = seen["variants"]["SKU-000003"]
    assert (row["price"], row["available"], row["inventory_policy"], row["supplier"]) == (
        "23.5000",
        False,
        "DENY",
        "beta",
    )
    assert seen["variants"]["SKU-000004"]["inventory_policy"] == "CONTINUE"


def test_paces_itself_on_the_cost_bucket(sandbox, variants, shopify_token):
    sandbox.control(faults={"shopify": {"bucket_max": 2 * MUTATION_COST, "restore_rate": 100}})
    outcome, stats = push(sandbox, variants, entries(18), products_per_request=2)
    assert outcome.status == APPLIED and stats.requests == 3
    # Each request empties the bucket; the client waited for it to refill instead of being throttled.
    assert stats.throttle_wait_seconds >= 0.3
    assert state(sandbox)["counters"].get("shopify.throttled", 0) == 0


def test_throttled_is_a_wait_not_a_failure(sandbox, variants, shopify_token):
    sandbox.control(faults={"shopify": {"throttle_next": 2}})
    outcome, stats = push(sandbox, variants, entries(3))
    assert outcome.status == APPLIED and outcome.error is None
    assert stats.throttled == 2 and stats.requests == 3
    assert state(sandbox)["counters"]["shopify.throttled"] == 2
    assert state(sandbox)["counters"]["shopify.variant_updates"] == 3


def test_splits_a_request_the_bucket_can_never_hold(sandbox, variants, shopify_token):
    sandbox.control(faults={"shopify": {"bucket_max": 3 * MUTATION_COST, "restore_rate": 1000}})
    outcome, stats = push(sandbox, variants, entries(15), products_per_request=5)
    assert outcome.status == APPLIED
    assert state(sandbox)["counters"]["shopify.variant_updates"] == 15
    assert stats.requests == 4  # one refused as MAX_COST_EXCEEDED, then 2 + 2 + 1 products


def test_user_errors_are_reported_per_sku(sandbox, variants, shopify_token):
    sandbox.control(faults={"shopify": {"reject_skus": ["SKU-000001"]}})
    wrong = {
        **variants,
        "SKU-000004": VariantRef(variants["SKU-000004"].product_id, "gid://shopify/ProductVariant/1"),
    }
    items = [*entries(6), {**entries(1)[0], "sku": "NOT-IN-CATALOG"}]
    outcome, _ = push(sandbox, wrong, items)
    assert outcome.status == PARTIAL
    assert outcome.sku_status("SKU-000000") == ("acknowledged", None)
    status, error = outcome.sku_status("SKU-000001")
    assert status == REFUSED and "INVALID_INPUT" in error
    assert "PRODUCT_VARIANT_DOES_NOT_EXIST" in outcome.sku_status("SKU-000004")[1]
    assert outcome.sku_status("NOT-IN-CATALOG")[0] == REFUSED
    assert set(state(sandbox)["variants"]) == {"SKU-000000", "SKU-000002", "SKU-000003", "SKU-000005"}


def test_wrong_token_is_refused_without_leaking_it(sandbox, variants, monkeypatch):
    monkeypatch.setenv("SHOPIFY_ACCESS_TOKEN", "shpat_wrong_token")
    outcome, stats = push(sandbox, variants, entries(3))
    assert outcome.status == REFUSED and outcome.http_status == 401 and stats.requests == 1
    assert "401" in outcome.error and "shpat_wrong_token" not in outcome.error


def test_lost_response_is_resent_and_the_update_stays_idempotent(sandbox, variants, shopify_token):
    sandbox.control(faults={"shopify": {"lose_response_next": 1}})
    outcome, stats = push(sandbox, variants, entries(3))
    assert outcome.status == APPLIED and stats.retries == 1
    assert state(sandbox)["variants"]["SKU-000002"]["price"] == "22.5000"


def test_internal_error_is_retried_and_5xx_exhaustion_is_in_doubt(sandbox, variants, shopify_token):
    sandbox.control(faults={"shopify": {"internal_error_next": 1}})
    outcome, stats = push(sandbox, variants, entries(3))
    assert outcome.status == APPLIED and stats.retries == 1
    sandbox.control(faults={"shopify": {"status": 502}})
    outcome, stats = push(sandbox, variants, entries(3))
    assert outcome.status == IN_DOUBT and stats.requests == FAST["max_attempts"]
    assert all(status == IN_DOUBT for status, _ in outcome.per_sku.values())


def graphql(sandbox, query: str, variables: dict | None = None) -> dict:
    response = httpx.post(
        f"{sandbox.url}/shopify/admin/api/2025-07/graphql.json",
        json={"query": query, "variables": variables or {}},
        headers={"X-Shopify-Access-Token": "sandbox-shopify-token"},
        timeout=10,
    )
    assert response.status_code == 200
    return response.json()


def test_sandbox_validates_graphql_and_reports_cost(sandbox):
    bad = graphql(sandbox, "mutation { productVariantsBulkUpdate(productId: 1) { nope } }")
    assert bad["errors"] and "data" not in bad
    cost = graphql(sandbox, "{ shop { name } }")["extensions"]["cost"]
    assert cost["requestedQueryCost"] == 1 and cost["throttleStatus"]["maximumAvailable"] == 2000


def test_sandbox_without_partial_updates_applies_nothing_on_a_user_error(sandbox):
    query = (
        "mutation($p: ID!, $v: [ProductVariantsBulkInput!]!) { productVariantsBulkUpdate(productId: $p, "
        "variants: $v) { productVariants { id } userErrors { field code } } }"
    )
    variables = {
        "p": "gid://shopify/Product/1000",
        "v": [
            {"id": "gid://shopify/ProductVariant/500000", "price": "5.00"},
            {"id": "gid://shopify/ProductVariant/500001", "price": "-1.00"},
        ],
    }
    body = graphql(sandbox, query, variables)["data"]["productVariantsBulkUpdate"]
    assert body["userErrors"] == [{"field": ["variants", "1", "price"], "code": "GREATER_THAN_OR_EQUAL_TO"}]
    assert body["productVariants"] == [] and state(sandbox)["variants"] == {}


def test_document_and_bucket_model():
    document = bulk_update_document(2)
    assert (
        "p1: productVariantsBulkUpdate(productId: $p1, variants: $v1, allowPartialUpdates: true)" in document
    )
    bucket = CostBucket()
    assert bucket.wait_for(50, now=0.0) == 0.0  # unknown until the first response
    bucket.update({"maximumAvailable": 100, "currentlyAvailable": 10, "restoreRate": 20}, now=0.0)
    assert bucket.wait_for(50, now=0.0) == pytest.approx(2.0)
    assert bucket.wait_for(50, now=1.0) == pytest.approx(1.0)
    assert bucket.estimate(now=100.0) == 100


def test_sync_asset_through_shopify(sandbox, warehouse_dir, shopify_token):
    catalog = Storefront(url=f"{sandbox.url}/storefront", webhook_secret=SECRET).fetch_catalog()
    Warehouse(base_dir=str(warehouse_dir)).write(catalog, ["catalog"])
    write_targets(warehouse_dir, targets(7))
    sandbox.control(faults={"shopify": {"reject_skus": ["SKU-000005"]}})
    first = sync(warehouse_dir, sandbox.url, adapter="shopify")
    assert not first.success
    meta = sync_metadata(first)
    assert (meta["adapter"], meta["pushed"], meta["refused"]) == ("shopify", 6, 1)
    ledger = read_ledger(warehouse_dir)
    refused = ledger.filter(pl.col("pending_status") == "refused").row(0, named=True)
    assert refused["sku"] == "SKU-000005" and "userError INVALID_INPUT" in refused["pending_error"]
    assert sandbox.counters().get("storefront.requests", 0) == 0  # nothing went to the webhook

    sandbox.control(faults={"shopify": None})
    second = sync(warehouse_dir, sandbox.url, adapter="shopify")
    assert second.success and sync_metadata(second)["pushed"] == 1
    assert state(sandbox)["variants"]["SKU-000005"]["price"] == "11.2500"


# ---------------------------------------------------------------- success only when confirmed (issue 13)

AUDIT_VARIANTS = {
    "SKU-A": VariantRef("gid://shopify/Product/1", "gid://shopify/ProductVariant/11"),
    "SKU-B": VariantRef("gid://shopify/Product/1", "gid://shopify/ProductVariant/12"),
}
AUDIT_ENTRIES = [
    {"sku": "SKU-A", "price": "10.5000", "currency": "EUR", "available": True, "supplier": "a", "version": 1},
    {
        "sku": "SKU-B",
        "price": "7.2500",
        "currency": "EUR",
        "available": False,
        "supplier": None,
        "version": 1,
    },
]
SHOWN_A = {"id": "gid://shopify/ProductVariant/11", "price": "10.50", "inventoryPolicy": "CONTINUE"}
SHOWN_B = {"id": "gid://shopify/ProductVariant/12", "price": "7.25", "inventoryPolicy": "DENY"}
COST = {
    "cost": {"requestedQueryCost": 10, "throttleStatus": {"currentlyAvailable": 1990, "restoreRate": 100}}
}


def answer(p0: object, errors: list | None = None) -> dict:
    body: dict = {"data": {"p0": p0}, "extensions": COST}
    if errors is not None:
        body["errors"] = errors
    return body


def push_answered(body: dict):
    """Push AUDIT_ENTRIES through a transport that answers `body` with HTTP 200."""
    shop = ShopifyStorefront(shop_url="https://shop.test", **FAST)
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=body))
    with httpx.Client(base_url=shop.shop_url, transport=transport) as client:
        pusher = ShopifyPusher(shop, client, AUDIT_VARIANTS, lambda seconds: None)
        return pusher.push_prices(PushChunk.from_entries("batch-000", AUDIT_ENTRIES), stats=PushStats())


@pytest.mark.parametrize(
    ("p0", "errors", "expected"),
    [
        ({"productVariants": [SHOWN_A, SHOWN_B], "userErrors": []}, None, {}),
        # No userErrors, but nothing shows the change: not success.
        ({"productVariants": [], "userErrors": []}, None, {"SKU-A": IN_DOUBT, "SKU-B": IN_DOUBT}),
        ({"productVariants": None, "userErrors": []}, None, {"SKU-A": IN_DOUBT, "SKU-B": IN_DOUBT}),
        ({"productVariants": [SHOWN_A], "userErrors": []}, None, {"SKU-B": IN_DOUBT}),
        (
            {"productVariants": [{**SHOWN_A, "price": "9.99"}, SHOWN_B], "userErrors": []},
            None,
            {"SKU-A": IN_DOUBT},
        ),
        (
            {"productVariants": [SHOWN_A, {**SHOWN_B, "inventoryPolicy": "CONTINUE"}], "userErrors": []},
            None,
            {"SKU-B": IN_DOUBT},
        ),
        # A userError refuses its variant; the other one still needs its confirmation.
        (
            {
                "productVariants": [SHOWN_B],
                "userErrors": [
                    {"field": ["variants", "0", "price"], "message": "bad", "code": "INVALID_INPUT"}
                ],
            },
            None,
            {"SKU-A": REFUSED},
        ),
        (
            None,
            [{"message": "Internal error", "extensions": {"code": "BAD"}}],
            {"SKU-A": REFUSED, "SKU-B": REFUSED},
        ),
        (None, None, {"SKU-A": IN_DOUBT, "SKU-B": IN_DOUBT}),  # a null result nobody explains
    ],
)
def test_a_mutation_is_success_only_when_the_answer_confirms_each_variant(p0, errors, expected):
    outcome = push_answered(answer(p0, errors))
    got = {sku: status for sku, (status, _) in outcome.per_sku.items()}
    assert got == expected
    if not expected:
        assert outcome.status == APPLIED
    elif len(expected) == 2:
        assert not outcome.acknowledged
    else:
        assert outcome.status == PARTIAL
    for sku, status in expected.items():
        if status == IN_DOUBT:
            assert "did not confirm" in outcome.per_sku[sku][1] or "no result" in outcome.per_sku[sku][1]
