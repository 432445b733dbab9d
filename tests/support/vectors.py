"""The known-answer vectors of ../shared/vectors, read for the result tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[2].parent / "shared"

VECTORS_DIR = SHARED / "vectors"


def load_vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS_DIR / "vectors.json").read_text())
    return data
