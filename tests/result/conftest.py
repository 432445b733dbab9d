from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
VECTORS_DIR = SHARED / "vectors"


@pytest.fixture(scope="session")
def vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS_DIR / "vectors.json").read_text())
    return data


def load_vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS_DIR / "vectors.json").read_text())
    return data
