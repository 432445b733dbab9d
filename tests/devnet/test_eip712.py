"""Unit tests (no chain): EIP-712 typehashes, domain separator and order digests against the values
of docs/devnet.md (PoCo's ``IexecLibOrders_v5`` constants) and eth_account's independent
``encode_typed_data``."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from devnet.accounts import Role, account
from devnet.toolkit import (
    EIP712_DOMAIN_TYPE,
    AppOrder,
    DatasetOrder,
    RequestOrder,
    WorkerpoolOrder,
    domain_separator,
    order_hash,
    sign_order,
    typehash,
)
from worker.protocol.crypto import ZERO_ADDRESS, ZERO_BYTES32, to_hex

DEVNET_HUB = "0x5fc8d32690cc91d4c39d9d3abcbd16989f875707"
DEVNET_DOMAIN_SEPARATOR = "0x3a381c2b61f95eecc30cd1fa149a885c63820b699953cdfa94c38e311235e58f"


@pytest.mark.parametrize(
    ("type_string", "expected"),
    [
        (AppOrder.TYPE, "0x60815a0eeec47dddf1615fe53b31d016c31444e01b9d796db365443a6445d008"),
        (DatasetOrder.TYPE, "0x6cfc932a5a3d22c4359295b9f433edff52b60703fa47690a04a83e40933dd47c"),
        (WorkerpoolOrder.TYPE, "0xaa3429fb281b34691803133d3d978a75bb77c617ed6bc9aa162b9b30920022bb"),
        (RequestOrder.TYPE, "0xf24e853034a3a450aba845a82914fbb564ad85accca6cf62be112a154520fae0"),
        (EIP712_DOMAIN_TYPE, "0x8b73c3c69bb8fe3d512ecc4cf759cc79239f7b179b0ffacaa9a75d522b39400f"),
    ],
)
def test_typehashes_match_the_poco_constants(type_string: str, expected: str) -> None:
    assert typehash(type_string) == expected


def test_domain_separator_of_the_devnet_hub() -> None:
    assert domain_separator(31337, DEVNET_HUB) == DEVNET_DOMAIN_SEPARATOR


def _typed_data(order: RequestOrder) -> dict[str, Any]:
    members = [
        {"name": name, "type": kind}
        for kind, name in (part.split(" ") for part in order.TYPE[order.TYPE.index("(") + 1 : -1].split(","))
    ]
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "RequestOrder": members,
        },
        "primaryType": "RequestOrder",
        "domain": {"name": "iExecODB", "version": "5.0.0", "chainId": 31337, "verifyingContract": DEVNET_HUB},
        "message": {m["name"]: getattr(order, m["name"]) for m in members},
    }


def test_request_order_digest_and_signature_agree_with_eth_account() -> None:
    requester = account(Role.REQUESTER)
    order = RequestOrder(
        app="0x1111111111111111111111111111111111111111",
        appmaxprice=1_000_000_000,
        dataset=ZERO_ADDRESS,
        datasetmaxprice=0,
        workerpool="0x2222222222222222222222222222222222222222",
        workerpoolmaxprice=2_000_000_000,
        requester=requester.address.lower(),
        volume=1,
        tag=ZERO_BYTES32,
        category=5,
        trust=1,
        beneficiary=requester.address.lower(),
        callback=ZERO_ADDRESS,
        params='{"iexec_args":"hello"}',
        salt="0x" + "ab" * 32,
    )
    expected = Account.sign_message(encode_typed_data(full_message=_typed_data(order)), requester.key)
    domain = domain_separator(31337, DEVNET_HUB)

    assert order_hash(order, domain) == to_hex(bytes(expected.message_hash))
    assert sign_order(order, domain, requester) == to_hex(bytes(expected.signature))
