"""What the chain adapter tells the outside world about itself (metrics), without importing it."""

from __future__ import annotations

from typing import Protocol


class ChainObserver(Protocol):
    """Receives chain-side facts; endpoints are named by a label that never holds a secret."""

    def rpc_error(self, endpoint: str) -> None: ...

    def head(self, endpoint: str, block: int) -> None: ...

    def gas_price(self, kind: str, wei: int) -> None: ...

    def transaction(self, kind: str, outcome: str) -> None: ...

    def replaced(self, kind: str) -> None: ...


class NullObserver:
    def rpc_error(self, endpoint: str) -> None:
        pass

    def head(self, endpoint: str, block: int) -> None:
        pass

    def gas_price(self, kind: str, wei: int) -> None:
        pass

    def transaction(self, kind: str, outcome: str) -> None:
        pass

    def replaced(self, kind: str) -> None:
        pass
