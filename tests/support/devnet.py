"""Where the devnet keeps its deployed chain states between runs."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DEVNET_CACHE = Path(__file__).resolve().parents[2] / ".devnet" / "cache"


def devnet_cache_dir() -> Path:
    """Where deployed states are cached: ``IEXEC_DEVNET_CACHE`` if set, else ``.devnet/cache`` in the repo."""
    return Path(os.environ.get("IEXEC_DEVNET_CACHE") or DEFAULT_DEVNET_CACHE)
