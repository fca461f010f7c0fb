"""Code location "pricing": catalog, supplier feeds, best offers, storefront prices and sync."""

from __future__ import annotations

from typing import Any

# Who answers for the location's assets (the catalog's owners field); one team owns the whole location.
OWNERS = ["team:pricing"]


def __getattr__(name: str) -> Any:
    # Lazy, so importing a pure module (pricing_assets.logic...) does not build the whole location.
    if name == "defs":
        from pricing_assets.definitions import defs

        return defs()
    raise AttributeError(name)
