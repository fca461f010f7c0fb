"""`python -m bench [NAME ...]`: run benchmarks (all when no name is given), one result line each."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    """Benchmark module names in this package (modules not starting with an underscore)."""
    folder = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(folder)]) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    """Run the named benchmarks (or all) and print each one's result line."""
    names = argv or available()
    unknown = [name for name in names if name not in available()]
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available())}",
            file=sys.stderr,
        )
        return 2
    status = 0
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        try:
            print(module.run(), flush=True)
        except SystemExit as exc:
            # A benchmark that checks invariants (soak) exits non-zero after printing its line: the
            # others still run, and the exit status says one failed.
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
            if exc.code not in (None, 0):
                status = status or (exc.code if isinstance(exc.code, int) else 1)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
