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
    """`rest_batch`: ask for up to `batch_size` SKUs per request, requests in parallel."""
    entry = http.entry
    request = entry.request
    method = str(request.get("method", "GET")).upper()
    path = str(request.get("path", ""))
    sku_param = str(request.get("sku_param", "skus"))
    batch_size = int(request.get("batch_size", 100))
    records_path = compile_path(str(request.get("records_path", "")))
    extra_params = dict(request.get("params", {}))
    extra_body = dict(request.get("body", {}))
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
        return _records_at(payload, records_path, supplier=entry.id, endpoint=f"{method} {path}")

    chunks = [skus[start : start + batch_size] for start in range(0, len(skus), batch_size)]
    pages = await _gather([lambda chunk=chunk: one(chunk) for chunk in chunks])
    http.stats.pages += len(pages)
    return Collected(records=[record for page in pages for record in page])


async def fetch_rest_paginated(http: SupplierHttp, skus: Sequence[str]) -> Collected:
    """`rest_paginated`: walk a full listing by cursor or page number (bounded, loop-guarded)."""
    entry = http.entry
    request = entry.request
    style = str(request.get("pagination", "cursor"))
    path = str(request.get("path", ""))
    page_size = int(request.get("page_size", 500))
    max_pages = int(request.get("max_pages", 10_000))
    records_path = compile_path(str(request.get("records_path", "")))
    params: dict[str, Any] = {
        **request.get("params", {}),
        str(request.get("page_size_param", "limit")): page_size,
    }
    endpoint = f"GET {path}"
    records: list[Any] = []

    def loop_error(message: str) -> SupplierError:
        return SupplierError(
            f"supplier {entry.id!r}: {endpoint}: {message}", supplier=entry.id, endpoint=endpoint
        )

    if style == "cursor":
        cursor_param = str(request.get("cursor_param", "cursor"))
        next_path = compile_path(str(request.get("next_cursor_path", "next_cursor")))
        seen: set[str] = set()
        cursor: str | None = None
        for _ in range(max_pages):
            page_params = dict(params) if cursor is None else {**params, cursor_param: cursor}
            payload = await http.request_json("GET", path, params=page_params)
            http.stats.pages += 1
            records.extend(_records_at(payload, records_path, supplier=entry.id, endpoint=endpoint))
            following = get_path(payload, next_path)
            if following in (None, ""):
                return Collected(records=records)
            following = str(following)
            if following in seen or following == cursor:
                raise loop_error(f"cursor {following[:40]!r} repeated after {http.stats.pages} pages (loop)")
            seen.add(following)
            cursor = following
        raise loop_error(f"listing did not end within max_pages={max_pages}")
    if style == "page":
        page_param = str(request.get("page_param", "page"))
        page = int(request.get("first_page", 1))
        total_path = request.get("total_pages_path")
        total_steps = compile_path(str(total_path)) if total_path else None
        for _ in range(max_pages):
            payload = await http.request_json("GET", path, params={**params, page_param: page})
            http.stats.pages += 1
            items = _records_at(payload, records_path, supplier=entry.id, endpoint=endpoint)
            records.extend(items)
            total = get_path(payload, total_steps) if total_steps else None
            if not items or (total is None and len(items) < page_size):
                return Collected(records=records)
            if isinstance(total, int) and page >= total:
                return Collected(records=records)
            page += 1
        raise loop_error(f"listing did not end within max_pages={max_pages}")
    raise SupplierError(f"supplier {entry.id!r}: unknown request.pagination {style!r}", supplier=entry.id)


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
