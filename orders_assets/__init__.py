"""Code location "orders": orders, rejects, allocations, sales report and summary (DESIGN §3)."""

from orders_assets.definitions import defs

__all__ = ["defs"]
