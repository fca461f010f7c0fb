"""The sandbox storefront's memory across restarts, as a real storefront has (`--state-file`).

Without it a restarted sandbox would hold no prices while the pipeline's ledger says they were
acknowledged, so nothing would be pushed again and the storefront page would stay empty.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from sandbox.world import World

COUNTER_PREFIX = "storefront."
SAVE_EVERY_SECONDS = 5.0


def snapshot(world: World) -> dict[str, Any]:
    """What the storefront holds: live prices, applied Idempotency-Keys, pushes and its counters."""
    return {
        "storefront_prices": world.storefront_prices,
        "applied_keys": world.applied_keys,
        "pushes": world.pushes,
        "counters": {k: v for k, v in world.counters.items() if k.startswith(COUNTER_PREFIX)},
    }


def save(world: World, path: Path) -> None:
    """Write the storefront's state to `path` atomically (write a temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(snapshot(world), file)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def load(world: World, path: Path) -> bool:
    """Restore the storefront's state from `path` if it exists; True if restored."""
    if not path.exists():
        return False
    try:
        state = json.loads(path.read_text())
        prices, keys, pushes, counters = (
            state["storefront_prices"],
            state["applied_keys"],
            state["pushes"],
            state["counters"],
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a storefront state file ({exc}); delete it to start empty") from exc
    world.storefront_prices.update(prices)
    world.applied_keys.update(keys)
    world.pushes.extend(pushes)
    world.counters.update({k: int(v) for k, v in counters.items() if k.startswith(COUNTER_PREFIX)})
    return True


async def keep(world: World, path: Path, every: float = SAVE_EVERY_SECONDS) -> None:
    """While the sandbox serves: save the state every `every` seconds when it changed, and on shutdown."""
    saved = None
    try:
        while True:
            await asyncio.sleep(every)
            # Only pushes change the state, and each one moves one of these.
            current = (
                len(world.pushes),
                len(world.applied_keys),
                sorted(snapshot(world)["counters"].items()),
            )
            if current != saved:
                await asyncio.to_thread(save, world, path)
                saved = current
    finally:
        # Cancelled by the app's shutdown (SIGTERM, Ctrl-C): the last state is written before exit.
        save(world, path)
