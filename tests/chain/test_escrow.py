"""RLC amounts as the operator types and reads them (unit tests: no chain)."""

from __future__ import annotations

import pytest

from worker.chain import parse_rlc, rlc


@pytest.mark.parametrize(
    ("text", "nrlc", "shown"),
    [
        ("2", 2 * 10**9, "2"),
        ("2.5", 2_500_000_000, "2.5"),
        (".6", 600_000_000, "0.6"),
        ("0.000000001", 1, "0.000000001"),
    ],
)
def test_amounts_in_rlc_to_nrlc_and_back(text: str, nrlc: int, shown: str) -> None:
    assert parse_rlc(text) == nrlc
    assert rlc(nrlc) == shown


@pytest.mark.parametrize("text", ["", "abc", "1.2.3", "-1", "0.0000000001", "1e9"])
def test_what_is_not_an_amount_says_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError, match=r"write e\.g\. 2 or 2\.5"):
        parse_rlc(text)
