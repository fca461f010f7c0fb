"""Code location for `bench/sweep.py`: the deployment's pricing location and an in-process twin of its sweep.

Runs launched by the benchmark load this module in a fresh process, as a run worker loads
`pricing_assets.definitions`. The registry comes from SUPPLIER_REGISTRY (the benchmark points it at four
file suppliers whose cached feeds it wrote), so the sweep reads offers from the warehouse, not HTTP.
`price_sweep_job` is the deployment's job unchanged (its executor included); `IN_PROCESS_JOB` and
`FORKSERVER_JOB` select the same assets with the in-process executor, or the multiprocess executor forking
steps from a preloaded server, for comparison.
"""

from dagster import (
    AssetKey,
    AssetSelection,
    Definitions,
    define_asset_job,
    in_process_executor,
    multiprocess_executor,
)

from pricing_assets.checks import build_storefront_price_checks
from pricing_assets.definitions import defs as deployed_defs
from resources.config import load_registry

DEPLOYED_JOB = "price_sweep_job"
IN_PROCESS_JOB = "price_sweep_job_in_process"
FORKSERVER_JOB = "price_sweep_job_forkserver"

_registry = load_registry()
_deployed = deployed_defs()  # the loader Dagster calls: its warning filter and gc.freeze() included
_selection = AssetSelection.assets(
    *[AssetKey(["supplier_offers", s]) for s in _registry.order], "best_offers", "storefront_prices"
)
_in_process = define_asset_job(
    IN_PROCESS_JOB,
    selection=_selection,
    executor_def=in_process_executor,
)
# Step processes forked from a server that imported the location once, instead of spawned fresh.
_forkserver = define_asset_job(
    FORKSERVER_JOB,
    selection=_selection,
    executor_def=multiprocess_executor.configured(
        {"start_method": {"forkserver": {"preload_modules": ["bench._sweep_location"]}}}
    ),
)
# The blocking checks belong to the sweep; add them unless the deployment's location already has them.
_checks = [] if _deployed.asset_checks else build_storefront_price_checks()

defs = Definitions.merge(_deployed, Definitions(asset_checks=_checks, jobs=[_in_process, _forkserver]))
