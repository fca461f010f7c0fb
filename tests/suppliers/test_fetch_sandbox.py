"""Supplier clients against the real sandbox server: auth kinds, retries, throttling, pagination, faults."""

from __future__ import annotations

import gc
from decimal import Decimal

import polars as pl
import pytest

from resources.config import RateLimitConfig, RetryConfig
from resources.suppliers import SupplierClients, SupplierError
from sandbox.suppliers import gamma_asin
from tests.suppliers.conftest import SANDBOX_WORLD

ALL_SKUS = [row["sku"] for row in SANDBOX_WORLD.catalog]


def expected_prices(supplier_id: str) -> dict[str, Decimal]:
    return {sku: offer.price for sku, offer in SANDBOX_WORLD.offers(supplier_id).items()}


def got_prices(offers: pl.DataFrame) -> dict[str, Decimal]:
    return dict(zip(offers["sku"].to_list(), offers["price"].to_list(), strict=True))


# ---------------------------------------------------------------- auth kinds


def test_alpha_api_key_batches_every_offer_exactly(sandbox, entry, fetch):
    result = fetch(entry("alpha", request={"batch_size": 50}))
    assert got_prices(result.offers) == expected_prices("alpha")
    assert result.offers["currency"].unique().to_list() == ["EUR"]
    assert result.quarantine.height == 0
    assert result.stats.requests == 8 == sandbox.counters()["alpha.requests"]
    assert sandbox.counters()["alpha.skus_asked"] == len(ALL_SKUS)


def test_alpha_post_batches(sandbox, entry, fetch):
    result = fetch(entry("alpha", request={"method": "POST", "batch_size": 500}))
    assert got_prices(result.offers) == expected_prices("alpha")
    assert result.stats.requests == 1


def test_wrong_api_key_fails_fast_naming_supplier_endpoint_status_not_secret(
    sandbox, entry, fetch, monkeypatch
):
    monkeypatch.setenv("ALPHA_API_KEY", "wrong-secret-value-123")
    with pytest.raises(SupplierError) as caught:
        fetch(entry("alpha", request={"batch_size": 500}))
    message = str(caught.value)
    assert "'alpha'" in message and "GET /suppliers/alpha/v1/offers" in message and "401" in message
    assert "ALPHA_API_KEY" in message
    assert "wrong-secret-value-123" not in message and "wrong-secret-value-123" not in repr(caught.value.args)
    assert caught.value.status == 401
    assert sandbox.counters()["alpha.requests"] == 1  # no retry on a 4xx


def test_missing_secret_env_is_named(sandbox, entry, fetch, monkeypatch):
    monkeypatch.delenv("GAMMA_PASSWORD")
    with pytest.raises(SupplierError, match="GAMMA_PASSWORD is not set"):
        fetch(entry("gamma"), ALL_SKUS[:3])
    assert sandbox.counters().get("gamma.requests", 0) == 0


def test_beta_oauth_token_cached_across_pages_and_fetches(sandbox, entry, fetch):
    beta = entry("beta", request={"page_size": 50})
    first = fetch(beta)
    assert got_prices(first.offers) == expected_prices("beta")  # integer cents -> exact decimals
    second = fetch(beta)
    assert second.offers.height == first.offers.height
    counters = sandbox.counters()
    assert counters["beta.tokens_issued"] == 1
    assert first.stats.token_requests == 1 and second.stats.token_requests == 0
    assert counters["beta.requests"] == first.stats.pages + second.stats.pages == 14


def test_beta_token_revoked_mid_sweep_is_refreshed_on_401(sandbox, entry, fetch):
    sandbox.control(faults={"beta": {"revoke_tokens_after": 2}})
    result = fetch(entry("beta", request={"page_size": 50}))
    assert got_prices(result.offers) == expected_prices("beta")
    counters = sandbox.counters()
    assert counters["beta.tokens_issued"] == 4  # 7 pages, 2 per token
    assert counters["beta.401"] == 3
    assert result.stats.retries == 0  # the auth flow resends; it is not an error retry


def test_beta_token_refreshed_before_it_expires(sandbox, entry, fetch):
    sandbox.control(faults={"beta": {"token_ttl_s": 2, "latency_ms": 350}})
    result = fetch(entry("beta", request={"page_size": 50}))
    assert result.offers.height == len(expected_prices("beta"))
    counters = sandbox.counters()
    assert counters["beta.tokens_issued"] >= 2
    assert counters.get("beta.401", 0) == 0  # refreshed proactively, never rejected


def test_beta_bad_client_secret_fails_at_token_endpoint(sandbox, entry, fetch, monkeypatch):
    monkeypatch.setenv("BETA_CLIENT_SECRET", "not-the-secret-987")
    with pytest.raises(SupplierError) as caught:
        fetch(entry("beta"))
    message = str(caught.value)
    assert "POST /suppliers/beta/oauth/token" in message and "401" in message
    assert "not-the-secret-987" not in message


def test_gamma_basic_auth_stock_text_and_not_found(sandbox, entry, fetch):
    result = fetch(entry("gamma"))
    offers = SANDBOX_WORLD.offers("gamma")
    assert got_prices(result.offers) == expected_prices("gamma")
    assert result.stats.not_found == len(ALL_SKUS) - len(offers)
    rows = {row["sku"]: row for row in result.offers.iter_rows(named=True)}
    for sku, offer in offers.items():
        row = rows[sku]
        if offer.stock == 0:
            assert (row["stock"], row["in_stock"]) == (0, False)
        elif offer.stock is not None and offer.stock <= 5:
            assert (row["stock"], row["in_stock"]) == (offer.stock, True)  # "Only 3 left in stock"
        else:
            assert (row["stock"], row["in_stock"]) == (None, True)  # "In Stock"


def test_gamma_wrong_password_fails_fast(sandbox, entry, fetch, monkeypatch):
    monkeypatch.setenv("GAMMA_PASSWORD", "nope-nope")
    with pytest.raises(SupplierError, match=r"POST /suppliers/gamma/v1/queries: HTTP 401"):
        fetch(entry("gamma"), ALL_SKUS[:5])


def test_gamma_sku_map_sends_asins_and_skips_unmapped(sandbox, entry, fetch):
    offered = sorted(SANDBOX_WORLD.offers("gamma"))[:4]
    gamma = entry("gamma", sku_map={sku: gamma_asin(sku) for sku in offered}, request={"unmapped": "skip"})
    result = fetch(gamma, ALL_SKUS[:40] + offered)
    assert sorted(result.offers["sku"].to_list()) == offered
    assert sandbox.counters()["gamma.requests"] == 4
    assert result.stats.unmapped == len(set(ALL_SKUS[:40]) - set(offered))


def test_gamma_sku_map_file(sandbox, entry, fetch, tmp_path):
    offered = sorted(SANDBOX_WORLD.offers("gamma"))[:3]
    (tmp_path / "asins.csv").write_text("sku,asin\n" + "".join(f"{s},{gamma_asin(s)}\n" for s in offered))
    gamma = entry("gamma", request={"unmapped": "skip", "sku_map_file": str(tmp_path / "asins.csv")})
    result = fetch(gamma, offered + ALL_SKUS[:10])
    assert set(result.offers["sku"].to_list()) == set(offered)


@pytest.mark.parametrize("as_http", [False, True])
def test_gamma_per_sku_not_found(sandbox, entry, fetch, as_http):
    offered = sorted(SANDBOX_WORLD.offers("gamma"))[:6]
    sandbox.control(faults={"gamma": {"not_found": offered[:2], "not_found_as_http": as_http}})
    result = fetch(entry("gamma"), offered)
    assert sorted(result.offers["sku"].to_list()) == offered[2:]
    assert result.stats.not_found == 2
    assert result.quarantine.height == 0


# ---------------------------------------------------------------- throttling and retries


def test_429_storm_waits_retry_after_then_succeeds(sandbox, entry, fetch):
    sandbox.control(faults={"alpha": {"throttle_next": 4, "retry_after": 0.3}})
    retry = RetryConfig(max_attempts=6, backoff_initial_seconds=0.01, backoff_max_seconds=0.05)
    result = fetch(entry("alpha", retry=retry, request={"batch_size": 100}))
    assert got_prices(result.offers) == expected_prices("alpha")
    assert result.stats.throttled == 4 == sandbox.counters()["alpha.429"]
    # The whole supplier pauses for Retry-After: at least one 0.3 s wait, not 10 ms backoffs.
    assert result.stats.duration_s >= 0.3


def test_retry_after_as_http_date(sandbox, entry, fetch):
    sandbox.control(faults={"alpha": {"throttle_next": 1, "retry_after": 1, "retry_after_http_date": True}})
    result = fetch(entry("alpha", request={"batch_size": 500}))
    assert result.stats.throttled == 1 and result.stats.retries == 1
    assert result.offers.height == len(expected_prices("alpha"))


def test_retry_after_longer_than_allowed_fails_fast(sandbox, entry, fetch):
    sandbox.control(faults={"alpha": {"throttle_next": 5, "retry_after": 3600}})
    with pytest.raises(SupplierError, match=r"HTTP 429 asks to retry after 3600s"):
        fetch(entry("alpha", request={"batch_size": 500}))
    assert sandbox.counters()["alpha.requests"] == 1


def test_5xx_burst_is_retried_with_backoff(sandbox, entry, fetch):
    sandbox.control(faults={"alpha": {"fail_next": 2, "fail_status": 502}})
    result = fetch(entry("alpha", request={"batch_size": 500}))
    assert result.offers.height == len(expected_prices("alpha"))
    assert result.stats.retries == 2 and result.stats.server_errors == 2


def test_outage_fails_after_bounded_retries(sandbox, entry, fetch):
    sandbox.control(faults={"alpha": {"outage": True, "retry_after": 0}})
    with pytest.raises(SupplierError) as caught:
        fetch(entry("alpha", request={"batch_size": 500}))
    assert "failed after 3 attempts" in str(caught.value) and "HTTP 503" in str(caught.value)
    assert caught.value.attempts == 3 and caught.value.status == 503
    assert caught.value.stats.requests == 3 == sandbox.counters()["alpha.requests"]


def test_timeout_is_retried(sandbox, entry, fetch):
    sandbox.control(faults={"alpha": {"timeout_next": 1, "hang_s": 1.5}})
    result = fetch(entry("alpha", timeout_seconds=0.3, request={"batch_size": 500}))
    assert result.stats.timeouts == 1 and result.stats.retries == 1
    assert result.offers.height == len(expected_prices("alpha"))


def test_persistent_timeouts_fail(sandbox, entry, fetch):
    sandbox.control(faults={"alpha": {"timeout_next": 5, "hang_s": 1}})
    retry = RetryConfig(max_attempts=2, backoff_initial_seconds=0.01, backoff_max_seconds=0.02)
    with pytest.raises(SupplierError, match="timeout"):
        fetch(entry("alpha", retry=retry, timeout_seconds=0.2, request={"batch_size": 500}))


def test_malformed_json_is_retried(sandbox, entry, fetch):
    sandbox.control(faults={"beta": {"malformed_next": 1}})
    result = fetch(entry("beta"))
    assert result.stats.malformed == 1 and result.stats.retries == 1
    assert got_prices(result.offers) == expected_prices("beta")


def test_persistently_malformed_json_fails_naming_endpoint(sandbox, entry, fetch):
    sandbox.control(faults={"alpha": {"malformed_next": 10}})
    with pytest.raises(
        SupplierError, match=r"GET /suppliers/alpha/v1/offers: failed after 3 attempts: malformed JSON"
    ):
        fetch(entry("alpha", request={"batch_size": 500}))


def test_client_rate_limit_never_trips_sandbox_limit(sandbox, entry, fetch):
    sandbox.control(faults={"alpha": {"rate_limit_rps": 20, "rate_limit_burst": 2}})
    limit = RateLimitConfig(requests_per_second=20, burst=1, max_in_flight=4)
    result = fetch(entry("alpha", rate_limit=limit, request={"batch_size": 20}))
    assert result.stats.requests == 20 and result.stats.throttled == 0
    assert sandbox.counters().get("alpha.429", 0) == 0
    assert result.stats.duration_s >= 19 / 20 * 0.9


def test_parallelism_is_bounded_by_max_in_flight(sandbox, entry, fetch):
    sandbox.control(faults={"alpha": {"latency_ms": 80}})
    narrow = RateLimitConfig(requests_per_second=1000, burst=100, max_in_flight=2)
    fetch(entry("alpha", rate_limit=narrow, request={"batch_size": 50}))
    assert sandbox.counters()["alpha.max_in_flight"] == 2
    sandbox.control(reset=True, faults={"alpha": {"latency_ms": 80}})
    fetch(entry("alpha", request={"batch_size": 50}))
    assert sandbox.counters()["alpha.max_in_flight"] > 2


# ---------------------------------------------------------------- pagination edges


def test_cursor_empty_last_page(sandbox, entry, fetch):
    sandbox.control(faults={"beta": {"empty_last_page": True}})
    result = fetch(entry("beta", request={"page_size": 100}))
    assert got_prices(result.offers) == expected_prices("beta")
    assert result.stats.pages == 5  # 338 offers: 4 pages with data and one empty page


def test_repeated_cursor_is_a_loop_error(sandbox, entry, fetch):
    sandbox.control(faults={"beta": {"repeat_cursor": True}})
    with pytest.raises(SupplierError, match="repeated after 2 pages"):
        fetch(entry("beta", request={"page_size": 100}))
    assert sandbox.counters()["beta.requests"] == 2


def test_page_number_pagination_with_total_pages(sandbox, entry, fetch):
    request = {
        "pagination": "page",
        "page_size": 100,
        "page_size_param": "per_page",
        "total_pages_path": "total_pages",
    }
    result = fetch(entry("beta", request=request))
    assert got_prices(result.offers) == expected_prices("beta")
    assert result.stats.pages == 4


def test_page_number_pagination_empty_last_page(sandbox, entry, fetch):
    count = len(expected_prices("beta"))
    assert count % 2 == 0
    sandbox.control(faults={"beta": {"empty_last_page": True}})  # no total_pages in the answer
    request = {"pagination": "page", "page_size": count // 2, "page_size_param": "per_page"}
    result = fetch(entry("beta", request=request))
    assert got_prices(result.offers) == expected_prices("beta")
    assert result.stats.pages == 3  # two full pages, then the empty one ends the listing


def test_listing_is_filtered_to_requested_skus(sandbox, entry, fetch):
    wanted = ALL_SKUS[:50]
    result = fetch(entry("beta"), wanted)
    assert set(result.offers["sku"].to_list()) == set(wanted) & set(expected_prices("beta"))
    assert result.unrequested == len(expected_prices("beta")) - result.offers.height


def _asked(skus: list[str]) -> pl.DataFrame:
    """SKUs asked as a frame, each with its own batch and row to carry."""
    return pl.DataFrame(
        {
            "sku": skus,
            "batch": [f"batch-{index % 3:03d}" for index in range(len(skus))],
            "catalog_row": pl.Series(range(len(skus)), dtype=pl.UInt32),
        }
    )


def test_a_requested_frame_gives_every_row_its_skus_columns(sandbox, entry, fetch):
    """Asked as a frame, each offer and rejected row carries its SKU's columns; a row without one, nulls."""
    asked = _asked(ALL_SKUS)
    sandbox.control(faults={"beta": {"bad_rows": 4, "missing_fields": 2, "missing_field": "sku"}})
    result = fetch(entry("beta"), asked)
    expected = {row["sku"]: (row["batch"], row["catalog_row"]) for row in asked.iter_rows(named=True)}
    offers = result.offers.select("sku", "batch", "catalog_row").iter_rows()
    assert [(batch, row) for _, batch, row in offers] == [expected[sku] for sku in result.offers["sku"]]
    rejected = result.quarantine.select("sku", "batch", "catalog_row").iter_rows()
    with_sku = [(sku, batch, row) for sku, batch, row in rejected if sku is not None]
    assert [(batch, row) for _, batch, row in with_sku] == [expected[sku] for sku, _, _ in with_sku]
    without = result.quarantine.filter(pl.col("sku").is_null())
    assert without.height == 2 and without["batch"].null_count() == without["catalog_row"].null_count() == 2
    assert len(with_sku) == 4
    assert result.unrequested == 0


def test_a_requested_frame_fetches_what_the_list_does(sandbox, entry, fetch):
    """The same offers, in the same order, as the SKUs asked as a list; outside SKUs still unrequested."""
    wanted = ALL_SKUS[:50]
    by_list = fetch(entry("beta"), wanted)
    by_frame = fetch(entry("beta"), _asked(wanted))
    # fetched_at is each fetch's own time
    assert by_frame.offers.drop("batch", "catalog_row", "fetched_at").equals(
        by_list.offers.drop("fetched_at")
    )
    assert by_frame.unrequested == by_list.unrequested > 0


def test_a_requested_frame_must_name_its_skus_and_not_shadow_a_fetch_column(sandbox, entry, fetch):
    """Refused before any request: no `sku` column, or a column the fetch makes itself."""
    with pytest.raises(ValueError, match="no 'sku' column"):
        fetch(entry("beta"), pl.DataFrame({"id": ALL_SKUS[:5]}))
    for column in ("price", "supplier", "reason"):
        with pytest.raises(ValueError, match=rf"\['{column}'\] clash"):
            fetch(entry("beta"), pl.DataFrame({"sku": ALL_SKUS[:5], column: ["x"] * 5}))
    assert sandbox.counters().get("beta.requests", 0) == 0


# ---------------------------------------------------------------- data faults -> quarantine


@pytest.mark.parametrize(
    ("supplier_id", "faults"),
    [
        ("alpha", {"bad_rows": 10, "missing_fields": 3, "duplicate_conflicts": 2}),
        ("beta", {"bad_rows": 10, "missing_fields": 3, "duplicate_conflicts": 2}),
        ("gamma", {"bad_rows": 8, "missing_fields": 3}),
    ],
)
def test_quarantine_counts_equal_injected_bad_rows(sandbox, entry, fetch, supplier_id, faults):
    sandbox.control(faults={supplier_id: faults})
    result = fetch(entry(supplier_id))
    injected = sandbox.counters()[f"{supplier_id}.bad_rows"]
    assert injected == faults["bad_rows"] + faults["missing_fields"] + 2 * faults.get(
        "duplicate_conflicts", 0
    )
    assert result.quarantine.height == injected
    assert result.offers.height == len(expected_prices(supplier_id)) - injected + faults.get(
        "duplicate_conflicts", 0
    )
    assert result.quarantine["reason"].null_count() == 0
    assert set(result.offers["sku"]).isdisjoint(set(result.quarantine["sku"]))
    assert result.metadata()["rejected"] == injected


def test_missing_fields_are_quarantined_with_reason_and_raw_record(sandbox, entry, fetch):
    sandbox.control(faults={"alpha": {"missing_fields": 4}})
    result = fetch(entry("alpha"))
    assert result.quarantine["reason"].to_list() == ["missing price"] * 4
    raw = result.quarantine["raw"].to_list()
    assert all('"pricing":{"currency":"EUR"}' in record for record in raw)


def test_missing_sku_rows_are_kept_for_quarantine(sandbox, entry, fetch):
    sandbox.control(faults={"beta": {"missing_fields": 2, "missing_field": "sku"}})
    result = fetch(entry("beta"), ALL_SKUS[:20])
    assert result.quarantine["reason"].to_list() == ["missing sku", "missing sku"]


# ---------------------------------------------------------------- the resource


def test_supplier_clients_resource_fetches_by_id(sandbox, tmp_path, registry):
    import yaml

    from resources.suppliers import SupplierClients

    raw = registry.model_dump(mode="json", exclude={"source"})
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump(raw))
    clients = SupplierClients(registry_path=str(tmp_path / "registry.yaml"))
    result = clients.fetch_offers("alpha", ALL_SKUS[:30])
    assert set(result.offers["sku"]) == set(ALL_SKUS[:30]) & set(expected_prices("alpha"))
    assert result.metadata()["requests"] == 1
    with pytest.raises(KeyError, match=r"unknown supplier 'omega'.*alpha, beta, gamma"):
        clients.fetch_offers("omega", ALL_SKUS[:3])
    with pytest.raises(ValueError, match="not a REST supplier"):
        clients.fetch_offers("delta", ALL_SKUS[:3])


def test_a_fetch_runs_with_the_collector_paused_and_puts_it_back(monkeypatch):
    seen: list[bool] = []

    async def fake_fetch(self, supplier_id: str, skus: list[str]) -> str:
        seen.append(gc.isenabled())
        if supplier_id == "down":
            raise SupplierError("down: outage", supplier="down")
        return "fetched"

    monkeypatch.setattr(SupplierClients, "afetch_offers", fake_fetch)
    clients = SupplierClients()
    assert gc.isenabled()
    assert clients.fetch_offers("alpha", ["SKU-1"]) == "fetched"
    with pytest.raises(SupplierError):
        clients.fetch_offers("down", ["SKU-1"])
    assert seen == [False, False] and gc.isenabled()
    # A caller that had it off keeps it off.
    gc.disable()
    try:
        clients.fetch_offers("alpha", ["SKU-1"])
        assert not gc.isenabled()
    finally:
        gc.enable()
