"""``make bench``: run every benchmark module, or those named on the command line.

A module's ``main()`` prints its own report and may return its headline figures as ``Figure`` triples;
the run ends with a summary block of them, one per line as ``name value unit``.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import sys
from collections.abc import Iterable

import bench
from bench._figures import Figure, summary_lines


def main(names: list[str]) -> int:
    modules = names or sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_")
    )
    figures: list[Figure] = []
    for name in modules:
        module = importlib.import_module(f"bench.{name}")
        print(f"\n## bench.{name}: {(module.__doc__ or '').strip().splitlines()[0]}", flush=True)
        returned: Iterable[Figure] | None = asyncio.run(module.main())
        figures.extend(returned or ())
    print("\n## summary")
    for line in summary_lines(figures):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
