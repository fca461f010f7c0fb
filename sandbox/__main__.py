"""Run the sandbox: `python -m sandbox --port 8700 --seed 7 --skus 2000`."""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from sandbox import storefront_state
from sandbox.app import create_app
from sandbox.world import World


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve the sandbox on 127.0.0.1 until stopped."""
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--port", type=int, default=8700)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skus", type=int, default=2000, help="catalog size")
    parser.add_argument("--orders-db", default=None, help="also generate the orders SQLite DB here")
    parser.add_argument("--live-orders-per-minute", type=int, default=0, help="keep placing orders now")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument(
        "--state-file", default=None, help="keep the storefront's prices and pushes here across restarts"
    )
    args = parser.parse_args(argv)
    world = World(seed=args.seed, catalog_size=args.skus)
    state_file = Path(args.state_file) if args.state_file else None
    if state_file is not None:
        storefront_state.load(world, state_file)
    background = []
    if args.orders_db:
        from sandbox.bootstrap import make_orders_db
        from sandbox.live_orders import run_live_orders

        make_orders_db(world, args.orders_db)
        if args.live_orders_per_minute:
            url = f"sqlite:///{Path(args.orders_db).resolve()}"
            background.append(lambda: run_live_orders(url, world, args.live_orders_per_minute))
    if state_file is not None:
        background.append(lambda: storefront_state.keep(world, state_file))
    app = create_app(world, background=background)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
