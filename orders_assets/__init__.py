"""Code location "orders": orders, rejects, allocations, sales report, summary (docs/architecture.md §3)."""

from orders_assets.definitions import defs

__all__ = ["defs"]
