"""On-chain actions of the requester, asset owners and scheduler on the devnet, plus the views a test checks.

Every transaction is signed client-side by the ``LocalAccount`` passed in. Orders are EIP-712 signed with the
typehashes and domain of docs/devnet.md ("EIP-712"); the worker-side hashes come from
:mod:`worker.protocol.crypto`.
Public values are lowercase ``0x`` hex (addresses, bytes32), as on the scheduler wire.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from dataclasses import astuple, dataclass, field
from typing import Any, ClassVar

from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_typing import Hash32
from eth_utils.crypto import keccak
from web3 import AsyncWeb3
from web3.contract.async_contract import AsyncContractFunction
from web3.logs import DISCARD
from web3.types import TxReceipt

from devnet.accounts import Role, account
from devnet.anvil import DevnetError
from devnet.contracts import Deployment, abi, send_call
from devnet.contracts import checksum as cs
from worker.chain import ChainContribution, ChainDeal, ChainTask, DealAsset
from worker.protocol import crypto
from worker.protocol.crypto import ZERO_ADDRESS, ZERO_BYTES32, to_bytes, to_hex
from worker.protocol.status import ChainContributionStatus, ChainTaskStatus

# ---------------------------------------------------------------------------------------------
# EIP-712: the typehashes are PoCo's ``IexecLibOrders_v5`` constants (docs/devnet.md)

EIP712_DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
DOMAIN_NAME = "iExecODB"
DOMAIN_VERSION = "5.0.0"


def typehash(type_string: str) -> str:
    return to_hex(keccak(text=type_string))


def domain_separator(chain_id: int, hub: str) -> str:
    encoded = abi_encode(
        ["bytes32", "bytes32", "bytes32", "uint256", "address"],
        [
            to_bytes(typehash(EIP712_DOMAIN_TYPE)),
            keccak(text=DOMAIN_NAME),
            keccak(text=DOMAIN_VERSION),
            chain_id,
            cs(hub),
        ],
    )
    return to_hex(keccak(encoded))


_MEMBER = re.compile(r"(\w+) (\w+)")


@dataclass(frozen=True)
class _Order:
    """An order; the dataclass fields follow the member order of ``TYPE``."""

    TYPE: ClassVar[str]

    def _members(self) -> list[tuple[str, str]]:
        return _MEMBER.findall(self.TYPE[self.TYPE.index("(") + 1 : -1])

    def struct_hash(self) -> str:
        types = ["bytes32"]
        values: list[Any] = [to_bytes(typehash(self.TYPE))]
        for (kind, _), value in zip(self._members(), astuple(self), strict=True):
            if kind == "string":  # EIP-712 hashes dynamic members
                types.append("bytes32")
                values.append(keccak(text=value))
            else:
                types.append(kind)
                values.append(_abi_value(kind, value))
        return to_hex(keccak(abi_encode(types, values)))

    def as_call_argument(self, signature: str) -> tuple[Any, ...]:
        """The ``(fields..., bytes sign)`` tuple that matchOrders takes."""
        members = [
            _abi_value(kind, value) for (kind, _), value in zip(self._members(), astuple(self), strict=True)
        ]
        return (*members, to_bytes(signature))


def _abi_value(kind: str, value: Any) -> Any:
    if kind == "address":
        return cs(value)
    if kind == "bytes32":
        return to_bytes(value)
    return value


@dataclass(frozen=True)
class AppOrder(_Order):
    TYPE: ClassVar[str] = (
        "AppOrder(address app,uint256 appprice,uint256 volume,bytes32 tag,address datasetrestrict,"
        "address workerpoolrestrict,address requesterrestrict,bytes32 salt)"
    )
    app: str
    appprice: int
    volume: int
    tag: str
    datasetrestrict: str
    workerpoolrestrict: str
    requesterrestrict: str
    salt: str


@dataclass(frozen=True)
class DatasetOrder(_Order):
    TYPE: ClassVar[str] = (
        "DatasetOrder(address dataset,uint256 datasetprice,uint256 volume,bytes32 tag,address apprestrict,"
        "address workerpoolrestrict,address requesterrestrict,bytes32 salt)"
    )
    dataset: str
    datasetprice: int
    volume: int
    tag: str
    apprestrict: str
    workerpoolrestrict: str
    requesterrestrict: str
    salt: str


@dataclass(frozen=True)
class WorkerpoolOrder(_Order):
    TYPE: ClassVar[str] = (
        "WorkerpoolOrder(address workerpool,uint256 workerpoolprice,uint256 volume,bytes32 tag,uint256 category,"
        "uint256 trust,address apprestrict,address datasetrestrict,address requesterrestrict,bytes32 salt)"
    )
    workerpool: str
    workerpoolprice: int
    volume: int
    tag: str
    category: int
    trust: int
    apprestrict: str
    datasetrestrict: str
    requesterrestrict: str
    salt: str


@dataclass(frozen=True)
class RequestOrder(_Order):
    TYPE: ClassVar[str] = (
        "RequestOrder(address app,uint256 appmaxprice,address dataset,uint256 datasetmaxprice,address workerpool,"
        "uint256 workerpoolmaxprice,address requester,uint256 volume,bytes32 tag,uint256 category,uint256 trust,"
        "address beneficiary,address callback,string params,bytes32 salt)"
    )
    app: str
    appmaxprice: int
    dataset: str
    datasetmaxprice: int
    workerpool: str
    workerpoolmaxprice: int
    requester: str
    volume: int
    tag: str
    category: int
    trust: int
    beneficiary: str
    callback: str
    params: str
    salt: str


def order_hash(order: _Order, domain: str) -> str:
    """The EIP-712 digest the owner signs and the contract consumes: ``keccak(0x1901 ‖ domain ‖ structHash)``."""
    return to_hex(keccak(b"\x19\x01" + to_bytes(domain) + to_bytes(order.struct_hash())))


def sign_order(order: _Order, domain: str, signer: LocalAccount) -> str:
    """EIP-712 signature (``r ‖ s ‖ v``, no EIP-191 prefix) of ``order`` by ``signer``."""
    return to_hex(bytes(signer.unsafe_sign_hash(Hash32(to_bytes(order_hash(order, domain)))).signature))


def fresh_salt() -> str:
    """Orders are consumed by hash, so every order needs its own salt."""
    return to_hex(os.urandom(32))


# ---------------------------------------------------------------------------------------------
# Views


@dataclass(frozen=True)
class Deal:
    deal_id: str
    task_ids: list[str]
    block_number: int
    order_hashes: dict[str, str] = field(default_factory=dict)
    """EIP-712 digests of the matched orders: keys app, dataset, workerpool, request."""


def _addr(value: Any) -> str:
    return str(value).lower()


def _b32(value: bytes) -> str:
    return to_hex(bytes(value))


def _asset(value: Any) -> DealAsset:
    pointer, owner, price = value
    return DealAsset(pointer=_addr(pointer), owner=_addr(owner), price=int(price))


# ---------------------------------------------------------------------------------------------


class Toolkit:
    """Drives PoCo from the requester, asset owner and scheduler side."""

    def __init__(self, w3: AsyncWeb3[Any], deployment: Deployment) -> None:
        self.w3 = w3
        self.deployment = deployment
        self.domain = domain_separator(deployment.chain_id, deployment.hub)
        self.iexec = w3.eth.contract(address=cs(deployment.hub), abi=abi("IexecInterfaceToken"))
        self.rlc = w3.eth.contract(address=cs(deployment.rlc), abi=abi("RLC"))
        self.app_registry = w3.eth.contract(address=cs(deployment.app_registry), abi=abi("AppRegistry"))
        self.dataset_registry = w3.eth.contract(
            address=cs(deployment.dataset_registry), abi=abi("DatasetRegistry")
        )
        self.workerpool_registry = w3.eth.contract(
            address=cs(deployment.workerpool_registry), abi=abi("WorkerpoolRegistry")
        )
        self._locks: dict[str, asyncio.Lock] = {}

    async def send(
        self, call: AsyncContractFunction, sender: LocalAccount, *, gas: int | None = None
    ) -> TxReceipt:
        """Estimate, sign, send and wait; a revert raises TransactionFailed naming the function and reason."""
        # Transactions from one account are serialized: each takes the next pending nonce.
        lock = self._locks.setdefault(sender.address.lower(), asyncio.Lock())
        async with lock:
            return await send_call(call, sender, gas=gas)

    # -- assets -------------------------------------------------------------------------------

    async def create_app(
        self, owner: LocalAccount, name: str, image: str, checksum: str, *, mrenclave: bytes = b""
    ) -> str:
        """Register a docker app, or return the existing one registered with the same arguments.

        ``mrenclave`` is the enclave configuration of an SGX app (JSON), empty otherwise."""
        args = (
            cs(owner.address),
            name,
            "DOCKER",
            image.encode(),
            _bytes32(checksum, "app checksum"),
            mrenclave,
        )
        return await self._register(self.app_registry, "App", args, owner)

    async def create_dataset(self, owner: LocalAccount, name: str, multiaddr: str, checksum: str) -> str:
        args = (cs(owner.address), name, multiaddr.encode(), _bytes32(checksum, "dataset checksum"))
        return await self._register(self.dataset_registry, "Dataset", args, owner)

    async def create_workerpool(self, owner: LocalAccount, description: str) -> str:
        args = (cs(owner.address), description)
        return await self._register(self.workerpool_registry, "Workerpool", args, owner)

    async def _register(self, registry: Any, kind: str, args: tuple[Any, ...], owner: LocalAccount) -> str:
        # Entries are CREATE2 proxies salted by their arguments: creating twice would revert.
        predicted = await registry.get_function_by_name(f"predict{kind}")(*args).call()
        if not await registry.functions.isRegistered(predicted).call():
            await self.send(registry.get_function_by_name(f"create{kind}")(*args), owner)
        return _addr(predicted)

    async def fund(self, who: LocalAccount, amount_nrlc: int) -> None:
        """Give ``who`` RLC from the admin and deposit it on their iExec account."""
        await self.send(self.rlc.functions.transfer(cs(who.address), amount_nrlc), account(Role.ADMIN))
        await self.send(self.rlc.functions.approveAndCall(self.iexec.address, amount_nrlc, b""), who)

    # -- deals --------------------------------------------------------------------------------

    async def buy(
        self,
        *,
        requester: LocalAccount,
        app: str,
        app_owner: LocalAccount,
        workerpool: str,
        workerpool_owner: LocalAccount,
        dataset: str | None = None,
        dataset_owner: LocalAccount | None = None,
        category: int,
        trust: int = 1,
        params: dict[str, Any] | str = "",
        callback: str = ZERO_ADDRESS,
        volume: int = 1,
        app_price: int = 0,
        dataset_price: int = 0,
        workerpool_price: int = 0,
        tag: str = ZERO_BYTES32,
    ) -> Deal:
        """Sign the four orders with fresh salts and match them; the requester pays."""
        params_text = params if isinstance(params, str) else json.dumps(params, separators=(",", ":"))
        app_order = AppOrder(
            app, app_price, volume, tag, ZERO_ADDRESS, ZERO_ADDRESS, ZERO_ADDRESS, fresh_salt()
        )
        if dataset is not None:
            if dataset_owner is None:
                raise ValueError("buy: dataset_owner is required with a dataset (it signs the dataset order)")
            dataset_order = DatasetOrder(
                dataset, dataset_price, volume, tag, ZERO_ADDRESS, ZERO_ADDRESS, ZERO_ADDRESS, fresh_salt()
            )
            dataset_sign = sign_order(dataset_order, self.domain, dataset_owner)
        else:
            # The contract skips an all-zero dataset order; it only needs a non-zero volume.
            dataset_order = DatasetOrder(
                ZERO_ADDRESS, 0, 1, ZERO_BYTES32, ZERO_ADDRESS, ZERO_ADDRESS, ZERO_ADDRESS, ZERO_BYTES32
            )
            dataset_sign = "0x"
        workerpool_order = WorkerpoolOrder(
            workerpool,
            workerpool_price,
            volume,
            tag,
            category,
            trust,
            ZERO_ADDRESS,
            ZERO_ADDRESS,
            ZERO_ADDRESS,
            fresh_salt(),
        )
        request_order = RequestOrder(
            app=app,
            appmaxprice=app_price,
            dataset=dataset or ZERO_ADDRESS,
            datasetmaxprice=dataset_price,
            workerpool=workerpool,
            workerpoolmaxprice=workerpool_price,
            requester=requester.address.lower(),
            volume=volume,
            tag=tag,
            category=category,
            trust=trust,
            beneficiary=requester.address.lower(),
            callback=callback,
            params=params_text,
            salt=fresh_salt(),
        )
        receipt = await self.send(
            self.iexec.functions.matchOrders(
                app_order.as_call_argument(sign_order(app_order, self.domain, app_owner)),
                dataset_order.as_call_argument(dataset_sign),
                workerpool_order.as_call_argument(
                    sign_order(workerpool_order, self.domain, workerpool_owner)
                ),
                request_order.as_call_argument(sign_order(request_order, self.domain, requester)),
            ),
            requester,
        )
        hashes = {
            "app": order_hash(app_order, self.domain),
            "dataset": order_hash(dataset_order, self.domain),
            "workerpool": order_hash(workerpool_order, self.domain),
            "request": order_hash(request_order, self.domain),
        }
        matched = self.iexec.events.OrdersMatched().process_receipt(receipt, errors=DISCARD)
        if len(matched) != 1:
            raise DevnetError(
                f"matchOrders in block {receipt['blockNumber']}: expected one OrdersMatched event"
            )
        args = matched[0]["args"]
        if _b32(args["requestHash"]) != hashes["request"] or _b32(args["appHash"]) != hashes["app"]:
            raise DevnetError(
                "matchOrders: the contract hashed the orders differently; check the EIP-712 domain"
            )
        deal_id = _b32(args["dealid"])
        deal = await self.view_deal(deal_id)
        return Deal(
            deal_id=deal_id,
            task_ids=[
                crypto.chain_task_id(deal_id, i)
                for i in range(deal.bot_first, deal.bot_first + deal.bot_size)
            ],
            block_number=int(receipt["blockNumber"]),
            order_hashes=hashes,
        )

    # -- task lifecycle -----------------------------------------------------------------------

    async def initialize(self, deal_id: str, index: int, sender: LocalAccount) -> str:
        await self.send(self.iexec.functions.initialize(to_bytes(deal_id), index), sender)
        return crypto.chain_task_id(deal_id, index)

    async def contribute(
        self,
        task_id: str,
        result_digest: str,
        worker: LocalAccount,
        authorization_signature: str,
        enclave: str = ZERO_ADDRESS,
        enclave_signature: str = "0x",
    ) -> TxReceipt:
        wallet = worker.address.lower()
        call = self.iexec.functions.contribute(
            to_bytes(task_id),
            to_bytes(crypto.result_hash(task_id, result_digest)),
            to_bytes(crypto.result_seal(wallet, task_id, result_digest)),
            cs(enclave),
            to_bytes(enclave_signature),
            to_bytes(authorization_signature),
        )
        return await self.send(call, worker)

    async def reveal(self, task_id: str, result_digest: str, worker: LocalAccount) -> TxReceipt:
        return await self.send(
            self.iexec.functions.reveal(to_bytes(task_id), to_bytes(result_digest)), worker
        )

    async def contribute_and_finalize(
        self,
        task_id: str,
        result_digest: str,
        results: bytes,
        results_callback: bytes,
        worker: LocalAccount,
        authorization_signature: str,
        enclave: str = ZERO_ADDRESS,
        enclave_signature: str = "0x" + "00" * 65,
    ) -> TxReceipt:
        call = self.iexec.functions.contributeAndFinalize(
            to_bytes(task_id),
            to_bytes(result_digest),
            results,
            results_callback,
            cs(enclave),
            to_bytes(enclave_signature),
            to_bytes(authorization_signature),
        )
        return await self.send(call, worker)

    async def finalize(
        self, task_id: str, results: bytes, results_callback: bytes, sender: LocalAccount
    ) -> TxReceipt:
        """Sent by the workerpool owner once the winners revealed."""
        return await self.send(
            self.iexec.functions.finalize(to_bytes(task_id), results, results_callback), sender
        )

    async def claim(self, task_id: str, sender: LocalAccount) -> TxReceipt:
        """Anyone may claim a task past its final deadline: stakes are unlocked, the requester refunded."""
        return await self.send(self.iexec.functions.claim(to_bytes(task_id)), sender)

    # -- views --------------------------------------------------------------------------------

    async def view_task(self, task_id: str) -> ChainTask:
        t = await self.iexec.functions.viewTask(to_bytes(task_id)).call()
        return ChainTask(
            task_id=task_id.lower(),
            status=ChainTaskStatus(t[0]),
            deal_id=_b32(t[1]),
            index=int(t[2]),
            timeref=int(t[3]),
            contribution_deadline=int(t[4]),
            reveal_deadline=int(t[5]),
            final_deadline=int(t[6]),
            consensus_value=_b32(t[7]),
            reveal_counter=int(t[8]),
            winner_counter=int(t[9]),
            contributors=tuple(_addr(a) for a in t[10]),
            result_digest=_b32(t[11]),
            results=bytes(t[12]),
            results_timestamp=int(t[13]),
            results_callback=bytes(t[14]),
        )

    async def view_deal(self, deal_id: str) -> ChainDeal:
        d = await self.iexec.functions.viewDeal(to_bytes(deal_id)).call()
        return ChainDeal(
            deal_id=deal_id.lower(),
            app=_asset(d[0]),
            dataset=_asset(d[1]),
            workerpool=_asset(d[2]),
            trust=int(d[3]),
            category=int(d[4]),
            tag=_b32(d[5]),
            requester=_addr(d[6]),
            beneficiary=_addr(d[7]),
            callback=_addr(d[8]),
            params=str(d[9]),
            start_time=int(d[10]),
            bot_first=int(d[11]),
            bot_size=int(d[12]),
            worker_stake=int(d[13]),
            scheduler_reward_ratio=int(d[14]),
            sponsor=_addr(d[15]),
        )

    async def view_contribution(self, task_id: str, worker: str) -> ChainContribution:
        c = await self.iexec.functions.viewContribution(to_bytes(task_id), cs(worker)).call()
        return ChainContribution(
            status=ChainContributionStatus(c[0]),
            result_hash=_b32(c[1]),
            result_seal=_b32(c[2]),
            enclave_challenge=_addr(c[3]),
            weight=int(c[4]),
        )

    async def view_account(self, address: str) -> tuple[int, int]:
        """``(stake, locked)`` in nRLC: the free and the frozen part of the iExec account."""
        stake, locked = await self.iexec.functions.viewAccount(cs(address)).call()
        return int(stake), int(locked)

    async def view_category(self, category_id: int) -> tuple[str, str, int]:
        name, description, timeref = await self.iexec.functions.viewCategory(category_id).call()
        return str(name), str(description), int(timeref)

    async def workerpool_owner(self, workerpool: str) -> str:
        pool = self.w3.eth.contract(address=cs(workerpool), abi=abi("Workerpool"))
        return _addr(await pool.functions.owner().call())


def _bytes32(value: str, what: str) -> bytes:
    raw = to_bytes(value)
    if len(raw) != 32:
        raise ValueError(f"{what} {value!r}: expected 32 bytes as 0x-prefixed hex")
    return raw
