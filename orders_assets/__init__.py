"""Code location "orders": orders, rejects, allocations, sales report, summary (docs/architecture.md §3)."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # Lazy, so importing a pure module (orders_assets.allocation...) does not build the whole location.
    if name == "defs":
        from orders_assets.definitions import defs

        return defs()
    raise AttributeError(name)
