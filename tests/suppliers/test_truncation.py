"""No silent truncation: a listing or answer that ends short either yields every row or fails visibly."""

from __future__ import annotations

import pytest

from resources.suppliers import SupplierError
from tests.suppliers.conftest import SANDBOX_WORLD

BETA_OFFERS = len(SANDBOX_WORLD.offers("beta"))
PAGE = {"pagination": "page", "page_size": 100, "page_size_param": "per_page"}
WITH_TOTAL_PAGES = {**PAGE, "total_pages_path": "total_pages"}


def every_beta_sku() -> set[str]:
    return set(SANDBOX_WORLD.offers("beta"))


def test_empty_page_mid_listing_once_is_read_again_and_yields_every_row(sandbox, entry, fetch):
    sandbox.control(faults={"beta": {"empty_page_at": 2, "empty_page_count": 1}})
    result = fetch(entry("beta", request=WITH_TOTAL_PAGES))
    assert set(result.offers["sku"]) == every_beta_sku()
    # Four pages, the empty second page fetched once more.
    assert result.stats.pages == 5


def test_empty_page_mid_listing_for_good_fails_naming_the_page(sandbox, entry, fetch):
    sandbox.control(faults={"beta": {"empty_page_at": 2}})
    with pytest.raises(SupplierError, match="page 2 of 4 came back with 0 records") as failure:
        fetch(entry("beta", request=WITH_TOTAL_PAGES))
    assert failure.value.supplier == "beta" and failure.value.endpoint == "GET /v2/products"
    # It kept reading past the empty page to the advertised last one (then re-read page 2 once).
    assert sandbox.counters()["beta.requests"] == 5


def test_empty_page_without_total_pages_fails_on_the_advertised_record_count(sandbox, entry, fetch):
    # Without total_pages the empty page looks like the end; the advertised total says it is not.
    sandbox.control(faults={"beta": {"empty_page_at": 2, "empty_last_page": True}})
    with pytest.raises(SupplierError, match=f"ended after 100 of the {BETA_OFFERS} records"):
        fetch(entry("beta", request={**PAGE, "total_path": "total"}))


def test_cursor_listing_with_an_empty_page_mid_listing_fails_on_the_total(sandbox, entry, fetch):
    sandbox.control(faults={"beta": {"empty_page_at": 3}})
    with pytest.raises(SupplierError, match=f"ended after {BETA_OFFERS - 100} of the {BETA_OFFERS}"):
        fetch(entry("beta", request={"page_size": 100}))  # the packaged registry sets total_path


def test_cursor_listing_with_a_transient_empty_page_but_no_total_configured_is_the_old_blind_spot(
    sandbox, entry, fetch
):
    # Documented limit: without total_path (and cursors cannot be re-read by number) nothing tells.
    sandbox.control(faults={"beta": {"empty_page_at": 3}})
    result = fetch(entry("beta", request={"page_size": 100, "total_path": None}))
    assert len(result.offers) == BETA_OFFERS - 100


def test_wrong_advertised_total_fails_visibly(sandbox, entry, fetch):
    sandbox.control(faults={"beta": {"wrong_total": 7}})
    with pytest.raises(SupplierError, match=f"ended after {BETA_OFFERS} of the {BETA_OFFERS + 7}"):
        fetch(entry("beta", request={"page_size": 100}))


def test_full_listing_with_totals_passes(sandbox, entry, fetch):
    result = fetch(entry("beta", request={"page_size": 100}))
    assert set(result.offers["sku"]) == every_beta_sku()


def test_batch_answer_that_leaves_skus_out_fails(sandbox, entry, fetch):
    sandbox.control(faults={"alpha": {"drop_items": 3}})
    with pytest.raises(SupplierError, match="left out 3 of 200 requested SKUs"):
        fetch(entry("alpha"))


def test_batch_answer_with_unknown_skus_listed_is_complete(sandbox, entry, fetch):
    result = fetch(entry("alpha"))
    catalog = {row["sku"] for row in SANDBOX_WORLD.catalog}
    assert set(result.offers["sku"]) == catalog & set(SANDBOX_WORLD.offers("alpha"))


def test_records_without_sku_may_account_for_missing_skus(sandbox, entry, fetch):
    # A record that lost its SKU is quarantined, not an outage: it can be the missing SKU's answer.
    sandbox.control(faults={"alpha": {"missing_fields": 2, "missing_field": "sku"}})
    result = fetch(entry("alpha"))
    assert result.quarantine.filter(result.quarantine["reason"].str.contains("missing sku")).height == 2


def test_outage_from_truncation_fails_the_reachability_check_with_the_reason(sandbox, tmp_path):
    """Through the asset: a truncated listing is an outage (failed check, last good offers kept)."""
    from tests.suppliers.test_supplier_offers_asset import BATCH, harness_for

    harness = harness_for(sandbox, tmp_path)
    assert harness.run(["beta"]).success
    before = harness.warehouse.read(["supplier_offers", "beta"], BATCH)
    sandbox.control(faults={"beta": {"wrong_total": 1}})
    result = harness.run(["beta"])
    assert result.success
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "supplier_reachable"]
    assert not check.passed and "records it advertises" in (check.description or "")
    assert harness.warehouse.read(["supplier_offers", "beta"], BATCH).equals(before)
