"""Pure pricing transformations over polars frames: batching, best offers, markup, guard, history."""
