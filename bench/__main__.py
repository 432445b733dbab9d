"""``make bench``: run every benchmark module, or those named on the command line."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import sys

import bench


def main(names: list[str]) -> int:
    modules = names or sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_")
    )
    for name in modules:
        module = importlib.import_module(f"bench.{name}")
        print(f"\n## bench.{name}: {(module.__doc__ or '').strip().splitlines()[0]}", flush=True)
        asyncio.run(module.main())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
