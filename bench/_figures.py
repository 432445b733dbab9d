"""The headline figures a benchmark returns, printed at the end of ``make bench`` as ``name value unit``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple


class Figure(NamedTuple):
    name: str
    value: float
    unit: str = ""


def summary_lines(figures: Iterable[Figure]) -> list[str]:
    lines = []
    for figure in figures:
        value = f"{figure.value:g}" if isinstance(figure.value, float) else str(figure.value)
        lines.append(f"{figure.name} {value} {figure.unit}".rstrip())
    return lines
