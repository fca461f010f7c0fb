"""Adapter kinds: batch REST endpoint, paginated full listing, per-SKU POST (Oxylabs amazon_product style)."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resources.config import SupplierEntry, expand_env
from resources.suppliers.errors import SupplierError
from resources.suppliers.http import NOT_FOUND, SupplierHttp
from resources.suppliers.parsing import compile_path, get_path


@dataclass
class Collected:
    """Records a supplier returned, and for per-SKU kinds the SKU each record answers."""

    records: list[Any]
    skus: list[str | None] | None = None


def _records_at(payload: Any, path: tuple[str | int, ...], *, supplier: str, endpoint: str) -> list[Any]:
    records = get_path(payload, path)
    if records is None and path and isinstance(payload, dict):
        records = []  # a page without the list key is an empty page, e.g. the last one
    if not isinstance(records, list):
        where = ".".join(str(step) for step in path) or "the top level"
        raise SupplierError(
            f"supplier {supplier!r}: {endpoint}: response has no list of records at {where}",
            supplier=supplier,
            endpoint=endpoint,
        )
    return records


async def _gather(calls: Sequence[Callable[[], Awaitable[Any]]]) -> list[Any]:
    # A TaskGroup cancels the siblings when one request fails for good, so nothing keeps running.
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call()) for call in calls]
    except BaseExceptionGroup as failures:
        # Callers expect the supplier's error, not a group: the first failure is the cause.
        first: BaseException = failures
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    return [task.result() for task in tasks]


async def fetch_rest_batch(http: SupplierHttp, skus: Sequence[str]) -> Collected:
    """`rest_batch`: ask for up to `batch_size` SKUs per request, requests in parallel.

    With `unknown_path` set (where the answer lists the SKUs it does not offer), every requested SKU
    must come back as a record or as unknown: an answer that silently leaves SKUs out is an error.
    """
    entry = http.entry
    request = entry.request
    method = str(request.get("method", "GET")).upper()
    path = str(request.get("path", ""))
    sku_param = str(request.get("sku_param", "skus"))
    batch_size = int(request.get("batch_size", 100))
    records_path = compile_path(str(request.get("records_path", "")))
    unknown_setting = request.get("unknown_path")
    unknown_path = compile_path(str(unknown_setting)) if unknown_setting else None
    sku_path = compile_path(str(entry.fields.get("sku", "sku")))
    extra_params = dict(request.get("params", {}))
    extra_body = dict(request.get("body", {}))
    endpoint = f"{method} {path}"
    if batch_size < 1:
        raise SupplierError(f"supplier {entry.id!r}: request.batch_size must be >= 1", supplier=entry.id)

    async def one(chunk: Sequence[str]) -> list[Any]:
        if method == "GET":
            payload = await http.request_json(
                method, path, params={**extra_params, sku_param: ",".join(chunk)}
            )
        else:
            payload = await http.request_json(
                method, path, params=extra_params or None, json_body={**extra_body, sku_param: list(chunk)}
            )
        records = _records_at(payload, records_path, supplier=entry.id, endpoint=endpoint)
        if unknown_path is not None:
            _check_answered(chunk, records, get_path(payload, unknown_path), sku_path, entry.id, endpoint)
        return records

    chunks = [skus[start : start + batch_size] for start in range(0, len(skus), batch_size)]
    pages = await _gather([lambda chunk=chunk: one(chunk) for chunk in chunks])
    http.stats.pages += len(pages)
    return Collected(records=[record for page in pages for record in page])


def _check_answered(
    asked: Sequence[str],
    records: list[Any],
    unknown: Any,
    sku_path: tuple[str | int, ...],
    supplier: str,
    endpoint: str,
) -> None:
    """Raise when an answer neither offers nor lists as unknown some of the SKUs it was asked for.

    Records without a SKU may be the answer for any SKU (validation quarantines them), so they are
    allowed to account for that many missing SKUs.
    """
    answered = {str(sku) for sku in (get_path(record, sku_path) for record in records) if sku}
    listed = {str(sku) for sku in unknown} if isinstance(unknown, list) else set()
    missing = [sku for sku in dict.fromkeys(asked) if sku not in answered and sku not in listed]
    without_sku = sum(1 for record in records if not get_path(record, sku_path))
    if len(missing) > without_sku:
        raise SupplierError(
            f"supplier {supplier!r}: {endpoint}: the answer left out {len(missing)} of {len(asked)} "
            f"requested SKUs (neither offered nor listed as unknown), e.g. {missing[0]!r}: "
            "a partial answer is not taken as complete",
            supplier=supplier,
            endpoint=endpoint,
        )


def _advertised(payload: Any, path: tuple[str | int, ...] | None) -> int | None:
    """An integer the answer advertises at `path` (a total), None when absent or not an integer."""
    if path is None:
        return None
    value = get_path(payload, path)
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        return int(value)
    except ValueError:
        return None


async def fetch_rest_paginated(http: SupplierHttp, skus: Sequence[str]) -> Collected:
    """`rest_paginated`: walk a full listing by cursor or page number (bounded, loop-guarded).

    A listing is only taken as complete when nothing says otherwise: with `total_path` (the number
    of records the supplier advertises) fewer records than advertised is an error; in page style a
    page that comes back shorter than the others before the last one is fetched once more, and an
    error if it is still short; an empty page before the advertised `total_pages` does not end it.
    """
    entry = http.entry
    request = entry.request
    style = str(request.get("pagination", "cursor"))
    path = str(request.get("path", ""))
    page_size = int(request.get("page_size", 500))
    max_pages = int(request.get("max_pages", 10_000))
    records_path = compile_path(str(request.get("records_path", "")))
    total_setting = request.get("total_path")
    total_path = compile_path(str(total_setting)) if total_setting else None
    params: dict[str, Any] = {
        **request.get("params", {}),
        str(request.get("page_size_param", "limit")): page_size,
    }
    endpoint = f"GET {path}"

    def listing_error(message: str) -> SupplierError:
        return SupplierError(
            f"supplier {entry.id!r}: {endpoint}: {message}", supplier=entry.id, endpoint=endpoint
        )

    if style == "cursor":
        records, advertised = await _walk_cursor(
            http, params, records_path, total_path, max_pages, listing_error
        )
    elif style == "page":
        records, advertised = await _walk_pages(
            http, params, page_size, records_path, total_path, max_pages, listing_error
        )
    else:
        raise SupplierError(f"supplier {entry.id!r}: unknown request.pagination {style!r}", supplier=entry.id)
    if advertised is not None and len(records) < advertised:
        raise listing_error(
            f"the listing ended after {len(records)} of the {advertised} records it advertises "
            f"({http.stats.pages} pages): a partial listing is not taken as complete"
        )
    return Collected(records=records)


async def _walk_cursor(
    http: SupplierHttp,
    params: dict[str, Any],
    records_path: tuple[str | int, ...],
    total_path: tuple[str | int, ...] | None,
    max_pages: int,
    listing_error: Callable[[str], SupplierError],
) -> tuple[list[Any], int | None]:
    """Follow next cursors until there is none; (records, advertised total of the last page)."""
    entry = http.entry
    request = entry.request
    path = str(request.get("path", ""))
    cursor_param = str(request.get("cursor_param", "cursor"))
    next_path = compile_path(str(request.get("next_cursor_path", "next_cursor")))
    seen: set[str] = set()
    cursor: str | None = None
    records: list[Any] = []
    for _ in range(max_pages):
        page_params = dict(params) if cursor is None else {**params, cursor_param: cursor}
        payload = await http.request_json("GET", path, params=page_params)
        http.stats.pages += 1
        # An empty page with a next cursor is not the end: the cursor decides.
        records.extend(_records_at(payload, records_path, supplier=entry.id, endpoint=f"GET {path}"))
        following = get_path(payload, next_path)
        if following in (None, ""):
            return records, _advertised(payload, total_path)
        following = str(following)
        if following in seen or following == cursor:
            raise listing_error(f"cursor {following[:40]!r} repeated after {http.stats.pages} pages (loop)")
        seen.add(following)
        cursor = following
    raise listing_error(f"listing did not end within max_pages={max_pages}")


async def _walk_pages(
    http: SupplierHttp,
    params: dict[str, Any],
    page_size: int,
    records_path: tuple[str | int, ...],
    total_path: tuple[str | int, ...] | None,
    max_pages: int,
    listing_error: Callable[[str], SupplierError],
) -> tuple[list[Any], int | None]:
    """Read numbered pages up to the advertised total_pages (else to an empty or short page).

    Every request, re-fetches included, counts against max_pages.
    """
    entry = http.entry
    request = entry.request
    path = str(request.get("path", ""))
    page_param = str(request.get("page_param", "page"))
    first = int(request.get("first_page", 1))
    total_pages_setting = request.get("total_pages_path")
    total_pages_path = compile_path(str(total_pages_setting)) if total_pages_setting else None
    requests = 0

    async def get(page: int) -> tuple[list[Any], Any]:
        nonlocal requests
        if requests >= max_pages:
            raise listing_error(f"listing did not end within max_pages={max_pages}")
        requests += 1
        payload = await http.request_json("GET", path, params={**params, page_param: page})
        http.stats.pages += 1
        return _records_at(payload, records_path, supplier=entry.id, endpoint=f"GET {path}"), payload

    pages: dict[int, list[Any]] = {}
    advertised: int | None = None
    page = first
    while True:
        items, payload = await get(page)
        pages[page] = items
        advertised = _advertised(payload, total_path)
        total_pages = _advertised(payload, total_pages_path)
        if total_pages is not None:
            # The advertised page count decides; an empty page before it is a gap, not the end.
            if page - first + 1 >= total_pages:
                break
        elif not items or len(items) < page_size:
            break
        page += 1
    # Every page but the last must be as full as the fullest: a shorter one lost rows (a transient
    # empty page, or rows shifting while we read). Fetch it once more; still short is an error.
    fullest = max(len(items) for items in pages.values())
    last = max(pages)
    for number in [p for p in sorted(pages) if p != last and len(pages[p]) < fullest]:
        items, _ = await get(number)
        pages[number] = items
        if len(items) < fullest:
            raise listing_error(
                f"page {number} of {last - first + 1} came back with {len(items)} records where the "
                f"other pages have {fullest}, twice: rows of the listing would be missing"
            )
    return [record for number in sorted(pages) for record in pages[number]], advertised


def load_sku_map(entry: SupplierEntry, *, registry_dir: Path | None) -> dict[str, str]:
    """SKU -> supplier id (ASIN): the registry's sku_map plus an optional CSV (sku,asin) it names."""
    mapping: dict[str, str] = {}
    file = entry.request.get("sku_map_file")
    if file:
        path = Path(expand_env(str(file), where=f"supplier {entry.id!r} request.sku_map_file"))
        if not path.is_absolute() and registry_dir is not None:
            path = registry_dir / path
        try:
            with path.open(newline="") as handle:
                for row in csv.DictReader(handle):
                    mapping[row["sku"].strip()] = row["asin"].strip()
        except (OSError, KeyError) as exc:
            raise SupplierError(
                f"supplier {entry.id!r}: cannot read sku_map_file {path} (needs columns sku,asin): {exc}",
                supplier=entry.id,
            ) from exc
    mapping.update(entry.sku_map)
    return mapping


async def fetch_per_sku_post(
    http: SupplierHttp, skus: Sequence[str], *, sku_map: dict[str, str]
) -> Collected:
    """`per_sku_post`: one POST per SKU, e.g. {"source": "amazon_product", "query": <ASIN>, "parse": true}."""
    entry = http.entry
    request = entry.request
    path = str(request.get("path", ""))
    query_key = str(request.get("query_key", "query"))
    body = dict(request.get("body", {"source": "amazon_product", "parse": True}))
    record_path = compile_path(str(request.get("record_path", "results[0].content")))
    status_path = compile_path(str(request.get("status_path", "results[0].status_code")))
    unmapped = str(request.get("unmapped", "skip"))

    queries: list[tuple[str, str]] = []
    for sku in skus:
        query = sku_map.get(sku) or (sku if unmapped == "use_sku" else None)
        if query is None:
            http.stats.unmapped += 1
        else:
            queries.append((sku, query))

    async def one(query: str) -> Any:
        payload = await http.request_json(
            "POST", path, json_body={**body, query_key: query}, allow_not_found=True
        )
        if payload is NOT_FOUND or get_path(payload, status_path) == 404:
            return NOT_FOUND
        record = get_path(payload, record_path)
        # A 200 without content still answers for this SKU: validation quarantines it as missing data.
        return record if record is not None else {}

    answers = await _gather([lambda query=query: one(query) for _, query in queries])
    found = [
        (sku, answer) for (sku, _), answer in zip(queries, answers, strict=True) if answer is not NOT_FOUND
    ]
    http.stats.not_found += len(queries) - len(found)
    return Collected(records=[record for _, record in found], skus=[sku for sku, _ in found])
