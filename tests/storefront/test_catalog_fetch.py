"""Storefront.fetch_catalog: every page read, bounded by max_pages, exactly max_pages is fine."""

import math

import pytest

from resources.storefront import Storefront
from tests.storefront.conftest import SECRET


def test_catalog_of_exactly_max_pages_is_read_whole_and_one_more_page_is_refused(sandbox):
    whole = Storefront(url=f"{sandbox.url}/storefront", webhook_secret=SECRET).fetch_catalog()
    page_size = 97  # not a divisor of the sandbox catalog: the last page is partial
    paged = Storefront(url=f"{sandbox.url}/storefront", webhook_secret=SECRET, catalog_page_size=page_size)
    pages = math.ceil(whole.height / page_size)
    assert pages > 2
    exact = paged.fetch_catalog(max_pages=pages)
    assert exact.equals(whole)
    assert exact.get_column("sku").n_unique() == whole.height
    with pytest.raises(RuntimeError, match=f"more than {pages - 1} pages"):
        paged.fetch_catalog(max_pages=pages - 1)
