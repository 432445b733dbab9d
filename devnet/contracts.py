"""The real PoCo 6.1.0 contracts (token flavour) on anvil: ABIs, the deployment recipe, and a cached devnet.

Bytecode and ABIs come only from the npm package ``@iexec/poco@6.1.0``. The deployment
(docs/devnet.md) is that of PoCo's ``deploy/0_deploy.ts`` at v6.1.0, made of plain CREATE
transactions from the admin account, so a fresh chain always gets the same addresses.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.abi import function_abi_to_4byte_selector
from eth_utils.address import to_checksum_address
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.contract.async_contract import AsyncContractFunction
from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception
from web3.types import TxParams, TxReceipt

from devnet.accounts import Role, account
from devnet.anvil import ANVIL_PACKAGE, NODE_MODULES, Anvil, DevnetError
from worker.protocol.crypto import ZERO_ADDRESS

POCO_PACKAGE = NODE_MODULES / "@iexec" / "poco"

STANDARD_CATEGORIES: tuple[tuple[str, int], ...] = (
    ("XS", 300),
    ("S", 1200),
    ("M", 3600),
    ("L", 10800),
    ("XL", 36000),
)
DEVNET_CATEGORY = "DEVNET"
"""Extra category with short deadlines so tests can reach every deadline quickly."""
DEVNET_TIMEREF = 20
"""Seconds: contribution deadline 140 s, reveal window 40 s, final deadline 200 s after the deal."""

FACETS: tuple[str, ...] = (
    "IexecAccessorsABILegacyFacet",
    "IexecCategoryManagerFacet",
    "IexecConfigurationExtraFacet",
    "IexecConfigurationFacet",
    "IexecERC20Facet",
    "IexecEscrowTokenFacet",
    "IexecOrderManagementFacet",
    "IexecPoco1Facet",
    "IexecPoco2Facet",
    "IexecPocoAccessorsFacet",
    "IexecRelayFacet",
)
_ORDERS_LIBRARY = ("contracts/libs/IexecLibOrders_v5.sol", "IexecLibOrders_v5")
_RECEIVE_SELECTOR = b"\x00\x00\x00\x00"
_FALLBACK_SELECTOR = b"\xff\xff\xff\xff"
_RECEIPT_TIMEOUT = 120.0

_ABI_PATHS = {
    "IexecInterfaceToken": "abis/contracts/IexecInterfaceToken.json",
    "AppRegistry": "abis/contracts/registries/apps/AppRegistry.json",
    "DatasetRegistry": "abis/contracts/registries/datasets/DatasetRegistry.json",
    "WorkerpoolRegistry": "abis/contracts/registries/workerpools/WorkerpoolRegistry.json",
    "App": "abis/contracts/registries/apps/App.json",
    "Dataset": "abis/contracts/registries/datasets/Dataset.json",
    "Workerpool": "abis/contracts/registries/workerpools/Workerpool.json",
}
# Contracts the npm package ships without a hardhat artifact: their deployment records serve instead
# (docs/devnet.md).
_RECORDS = {
    "DiamondLoupe": "DiamondLoupeFacet",
    "DiamondCut": "DiamondCutFacet",
    "Ownership": "OwnershipFacet",
    "DiamondInit": "DiamondInit",
}
_RLC_HUMAN_ABI = "abis/human-readable-abis/rlc-faucet-contract/contracts/RLC.sol/RLC.json"
_REGISTRY_ARTIFACTS = {
    "AppRegistry": "registries/apps/AppRegistry.sol/AppRegistry.json",
    "DatasetRegistry": "registries/datasets/DatasetRegistry.sol/DatasetRegistry.json",
    "WorkerpoolRegistry": "registries/workerpools/WorkerpoolRegistry.sol/WorkerpoolRegistry.json",
}


class TransactionFailed(DevnetError):
    """A transaction reverted (at estimation or on chain)."""

    def __init__(self, message: str, *, function: str, reason: str | None) -> None:
        super().__init__(message)
        self.function = function
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# ABIs and bytecode


def checksum(address: str) -> ChecksumAddress:
    """web3 wants checksummed addresses; the public API speaks lowercase."""
    return to_checksum_address(address)


def _package_file(relative: str) -> Path:
    path = POCO_PACKAGE / relative
    if not path.is_file():
        raise DevnetError(f"{path}: missing from the @iexec/poco npm package; run `make bootstrap`")
    return path


@cache
def _load_json(relative: str) -> Any:
    return json.loads(_package_file(relative).read_text())


def _record(name: str) -> dict[str, Any]:
    return cast(dict[str, Any], _load_json(f"deployments/arbitrumSepolia/{name}.json"))


def _artifact(relative: str) -> dict[str, Any]:
    return cast(dict[str, Any], _load_json(f"artifacts/contracts/{relative}"))


_HUMAN_ENTRY = re.compile(
    r"^(function|event|constructor)\s*(\w*)\((.*?)\)\s*([\w\s]*?)(?:returns\s*\((.*)\))?$"
)


def _human_params(text: str, *, event: bool) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for raw in filter(None, (part.strip() for part in text.split(","))):
        words = raw.split()
        entry: dict[str, Any] = {"name": "", "type": words[0]}
        if event:
            entry["indexed"] = "indexed" in words[1:]
        params.append(entry)
    return params


def transcribe_human_abi(lines: Sequence[str]) -> list[dict[str, Any]]:
    """JSON ABI from an ethers human-readable ABI made of flat types (enough for the RLC token)."""
    entries: list[dict[str, Any]] = []
    for line in lines:
        match = _HUMAN_ENTRY.match(line.strip())
        if match is None or "(" in match.group(3):
            raise DevnetError(f"human-readable ABI entry not understood: {line!r}")
        kind, name, inputs, modifiers, outputs = match.groups()
        if kind == "event":
            entries.append(
                {
                    "type": "event",
                    "name": name,
                    "anonymous": False,
                    "inputs": _human_params(inputs, event=True),
                }
            )
            continue
        mutability = next((m for m in ("view", "pure", "payable") if m in modifiers.split()), "nonpayable")
        entry: dict[str, Any] = {
            "type": kind,
            "inputs": _human_params(inputs, event=False),
            "stateMutability": mutability,
        }
        if kind == "function":
            entry["name"] = name
            entry["outputs"] = _human_params(outputs or "", event=False)
        entries.append(entry)
    return entries


@cache
def _abi(name: str) -> tuple[dict[str, Any], ...]:
    if name in _ABI_PATHS:
        return tuple(_load_json(_ABI_PATHS[name]))
    if name in _RECORDS:
        return tuple(_record(_RECORDS[name])["abi"])
    if name == "RLC":
        return tuple(transcribe_human_abi(_load_json(_RLC_HUMAN_ABI)))
    known = ", ".join(sorted([*_ABI_PATHS, *_RECORDS, "RLC"]))
    raise DevnetError(f"no ABI named {name!r}; known: {known}")


def abi(name: str) -> list[dict[str, Any]]:
    """JSON ABI of a PoCo contract, by short name (``IexecInterfaceToken``, ``RLC``, ``AppRegistry``...)."""
    return list(_abi(name))


def link(artifact: Mapping[str, Any], library: str) -> str:
    """Creation bytecode with the IexecLibOrders_v5 placeholders replaced by ``library``."""
    code: str = artifact["bytecode"]
    source, lib = _ORDERS_LIBRARY
    for ref in artifact.get("linkReferences", {}).get(source, {}).get(lib, []):
        # Offsets count bytes of code; skip the 0x prefix and use two hex digits per byte.
        start = 2 + 2 * ref["start"]
        code = code[:start] + library.removeprefix("0x").lower() + code[start + 2 * ref["length"] :]
    if "__$" in code:
        raise DevnetError(f"{artifact.get('contractName')}: unresolved library placeholder after linking")
    return code


def selectors(contract_abi: Sequence[Mapping[str, Any]]) -> list[bytes]:
    """Diamond selectors of a facet: every function, plus the receive and fallback markers."""
    found: list[bytes] = []
    for entry in contract_abi:
        if entry["type"] == "function":
            found.append(bytes(function_abi_to_4byte_selector(cast(Any, entry))))
        elif entry["type"] == "receive":
            found.append(_RECEIVE_SELECTOR)
        elif entry["type"] == "fallback":
            found.append(_FALLBACK_SELECTOR)
    return found


# ---------------------------------------------------------------------------------------------
# Transactions


async def send_transaction(
    w3: AsyncWeb3[Any],
    tx: TxParams,
    sender: LocalAccount,
    *,
    label: str,
    gas: int | None = None,
    nonce: int | None = None,
) -> TxReceipt:
    """Estimate, sign with ``sender``, send and wait for the receipt; any revert raises TransactionFailed."""
    params: dict[str, Any] = {"value": 0, **tx, "from": sender.address}
    params["chainId"] = await w3.eth.chain_id
    params["nonce"] = (
        nonce if nonce is not None else await w3.eth.get_transaction_count(sender.address, "pending")
    )
    params["gasPrice"] = await w3.eth.gas_price
    if gas is None:
        try:
            params["gas"] = await w3.eth.estimate_gas(cast(TxParams, params))
        except ContractLogicError as exc:
            raise _reverted(label, sender, exc) from exc
    else:
        params["gas"] = gas
    signed = sender.sign_transaction(params)
    try:
        tx_hash = await w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = await w3.eth.wait_for_transaction_receipt(
            tx_hash, timeout=_RECEIPT_TIMEOUT, poll_latency=0.05
        )
    except TimeExhausted as exc:
        raise DevnetError(f"{label}: no receipt after {_RECEIPT_TIMEOUT:g} s; is the node mining?") from exc
    except Web3Exception as exc:
        raise DevnetError(f"{label} sent by {sender.address.lower()}: {exc}") from exc
    if receipt["status"] != 1:
        raise TransactionFailed(
            f"{label} sent by {sender.address.lower()} reverted on chain in block {receipt['blockNumber']}"
            f" (gas used {receipt['gasUsed']} of {params['gas']})",
            function=label,
            reason=None,
        )
    return receipt


def _reverted(label: str, sender: LocalAccount, exc: ContractLogicError) -> TransactionFailed:
    message = exc.message or "execution reverted"
    reason = message.removeprefix("execution reverted").lstrip(": ") or None
    detail = reason if reason else f"no reason given (a bare require; revert data {exc.data!r})"
    return TransactionFailed(
        f"{label} sent by {sender.address.lower()} reverted: {detail}", function=label, reason=reason
    )


async def send_call(
    call: AsyncContractFunction, sender: LocalAccount, *, gas: int | None = None, nonce: int | None = None
) -> TxReceipt:
    """Send a contract function call as a transaction signed by ``sender``."""
    label = f"{call.fn_name} on {str(call.address).lower()}"
    tx = cast(TxParams, {"to": call.address, "data": call._encode_transaction_data()})
    return await send_transaction(call.w3, tx, sender, label=label, gas=gas, nonce=nonce)


# ---------------------------------------------------------------------------------------------
# Deployment


@dataclass(frozen=True)
class Deployment:
    chain_id: int
    hub: str
    rlc: str
    app_registry: str
    dataset_registry: str
    workerpool_registry: str
    categories: dict[str, int] = field(default_factory=dict)
    """Category name → id; see DEVNET_CATEGORY."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Deployment:
        data = json.loads(text)
        return cls(
            chain_id=int(data["chain_id"]),
            hub=str(data["hub"]).lower(),
            rlc=str(data["rlc"]).lower(),
            app_registry=str(data["app_registry"]).lower(),
            dataset_registry=str(data["dataset_registry"]).lower(),
            workerpool_registry=str(data["workerpool_registry"]).lower(),
            categories={str(k): int(v) for k, v in data["categories"].items()},
        )


class _Deployer:
    """Sends the recipe's transactions from the admin account, counting the nonce locally."""

    def __init__(self, w3: AsyncWeb3[Any], nonce: int) -> None:
        self.w3 = w3
        self.admin = account(Role.ADMIN)
        self.nonce = nonce
        self.transactions = 0

    async def send(self, tx: TxParams, label: str) -> TxReceipt:
        receipt = await send_transaction(self.w3, tx, self.admin, label=label, nonce=self.nonce)
        self.nonce += 1
        self.transactions += 1
        return receipt

    async def create(self, bytecode: str, label: str, constructor_args: bytes = b"") -> str:
        receipt = await self.send(
            cast(TxParams, {"data": bytecode + constructor_args.hex()}), f"deploy {label}"
        )
        address = receipt["contractAddress"]
        if address is None:
            raise DevnetError(f"deploy {label}: the receipt has no contract address")
        return str(address).lower()

    async def call(self, call: AsyncContractFunction) -> TxReceipt:
        label = f"{call.fn_name} on {str(call.address).lower()}"
        receipt = await send_transaction(
            self.w3,
            cast(TxParams, {"to": call.address, "data": call._encode_transaction_data()}),
            self.admin,
            label=label,
            nonce=self.nonce,
        )
        self.nonce += 1
        self.transactions += 1
        return receipt


async def deploy(w3: AsyncWeb3[Any]) -> Deployment:
    """Deploy PoCo 6.1.0 (docs/devnet.md, 44 txs) plus the DEVNET category on a fresh chain."""
    await asyncio.to_thread(_preload)
    chain_id = await w3.eth.chain_id
    admin = account(Role.ADMIN)
    d = _Deployer(w3, await w3.eth.get_transaction_count(admin.address, "pending"))

    rlc = await d.create(_record("RLC")["bytecode"], "RLC")
    cut_facet = await d.create(_record("DiamondCutFacet")["bytecode"], "DiamondCutFacet")
    loupe_facet = await d.create(_record("DiamondLoupeFacet")["bytecode"], "DiamondLoupeFacet")
    ownership_facet = await d.create(_record("OwnershipFacet")["bytecode"], "OwnershipFacet")
    diamond_init = await d.create(_record("DiamondInit")["bytecode"], "DiamondInit")
    initial_cuts = [
        (checksum(cut_facet), 0, selectors(abi("DiamondCut"))),
        (checksum(loupe_facet), 0, selectors(abi("DiamondLoupe"))),
        (checksum(ownership_facet), 0, selectors(abi("Ownership"))),
    ]
    init_call = bytes(function_abi_to_4byte_selector({"type": "function", "name": "init", "inputs": []}))
    diamond_args = abi_encode(
        ["(address,uint8,bytes4[])[]", "(address,address,bytes)"],
        [initial_cuts, (checksum(admin.address), checksum(diamond_init), init_call)],
    )
    hub = await d.create(_artifact("Diamond.sol/Diamond.json")["bytecode"], "Diamond", diamond_args)
    library = await d.create(
        _artifact("libs/IexecLibOrders_v5.sol/IexecLibOrders_v5.json")["bytecode"], "IexecLibOrders_v5"
    )

    cutter = w3.eth.contract(address=checksum(hub), abi=abi("DiamondCut"))
    loupe = w3.eth.contract(address=checksum(hub), abi=abi("DiamondLoupe"))
    for name in FACETS:
        facet_artifact = _artifact(f"facets/{name}.sol/{name}.json")
        facet = await d.create(link(facet_artifact, library), name)
        present = {
            bytes(s) for _, facet_selectors in await loupe.functions.facets().call() for s in facet_selectors
        }
        wanted = [s for s in selectors(facet_artifact["abi"]) if s not in present]
        await d.call(cutter.functions.diamondCut([(checksum(facet), 0, wanted)], ZERO_ADDRESS, b""))

    registries: dict[str, str] = {}
    for name, kind in (
        ("AppRegistry", "app"),
        ("DatasetRegistry", "dataset"),
        ("WorkerpoolRegistry", "workerpool"),
    ):
        address = await d.create(_artifact(_REGISTRY_ARTIFACTS[name])["bytecode"], name)
        registry = w3.eth.contract(address=checksum(address), abi=abi(name))
        await d.call(registry.functions.initialize(ZERO_ADDRESS))
        await d.call(registry.functions.setBaseURI(f"https://nfts-metadata.iex.ec/{kind}/{chain_id}/"))
        registries[name] = address

    iexec = w3.eth.contract(address=checksum(hub), abi=abi("IexecInterfaceToken"))
    await d.call(
        iexec.functions.configure(
            checksum(rlc),
            "Staked RLC",
            "SRLC",
            9,
            checksum(registries["AppRegistry"]),
            checksum(registries["DatasetRegistry"]),
            checksum(registries["WorkerpoolRegistry"]),
            ZERO_ADDRESS,
        )
    )
    categories: dict[str, int] = {}
    for name, timeref in (*STANDARD_CATEGORIES, (DEVNET_CATEGORY, DEVNET_TIMEREF)):
        description = json.dumps({"name": name, "workClockTimeRef": timeref}, separators=(",", ":"))
        receipt = await d.call(iexec.functions.createCategory(name, description, timeref))
        events = iexec.events.CreateCategory().process_receipt(receipt)
        categories[name] = int(events[0]["args"]["catid"])

    return Deployment(
        chain_id=chain_id,
        hub=hub,
        rlc=rlc,
        app_registry=registries["AppRegistry"],
        dataset_registry=registries["DatasetRegistry"],
        workerpool_registry=registries["WorkerpoolRegistry"],
        categories=categories,
    )


def _preload() -> None:
    """Parse every JSON file the recipe needs, off the event loop."""
    for name in ("RLC", "DiamondCutFacet", "DiamondLoupeFacet", "OwnershipFacet", "DiamondInit"):
        _record(name)
    _artifact("Diamond.sol/Diamond.json")
    _artifact("libs/IexecLibOrders_v5.sol/IexecLibOrders_v5.json")
    for name in FACETS:
        _artifact(f"facets/{name}.sol/{name}.json")
    for relative in _REGISTRY_ARTIFACTS.values():
        _artifact(relative)
    for name in (*_ABI_PATHS, *_RECORDS, "RLC"):
        _abi(name)


# ---------------------------------------------------------------------------------------------
# Devnet: anvil + deployment, with a cached deployed state


def _package_version(package_dir: Path) -> str:
    manifest = package_dir / "package.json"
    if not manifest.is_file():
        raise DevnetError(f"{manifest}: missing; run `make bootstrap` to install the devnet npm packages")
    return str(json.loads(manifest.read_text())["version"])


def cache_key() -> str:
    """Name of the cached state: changes with the PoCo or anvil version and with this recipe."""
    recipe = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    return f"poco-{_package_version(POCO_PACKAGE)}-anvil-{_package_version(ANVIL_PACKAGE)}-{recipe}"


def new_web3(rpc_url: str) -> AsyncWeb3[Any]:
    return AsyncWeb3(AsyncHTTPProvider(rpc_url, request_kwargs={"timeout": 60}))


class Devnet:
    """anvil with PoCo deployed. Use :meth:`up`; stop with :meth:`stop` or ``async with``."""

    def __init__(
        self, anvil: Anvil, w3: AsyncWeb3[Any], deployment: Deployment, *, warm: bool, seconds: float
    ) -> None:
        self.anvil = anvil
        self.w3 = w3
        self.deployment = deployment
        self.rpc_url = anvil.rpc_url
        self.warm = warm
        """True when the state came from the cache rather than a fresh deployment."""
        self.startup_seconds = seconds

    @classmethod
    async def up(cls, *, cache_dir: Path, port: int | None = None, block_time: float | None = None) -> Devnet:
        """Start a devnet from the cached deployed state, deploying (and caching) first when there is none."""
        started = time.perf_counter()
        key = await asyncio.to_thread(cache_key)
        state = cache_dir / f"{key}.state.json"
        sidecar = cache_dir / f"{key}.deployment.json"
        if await asyncio.to_thread(sidecar.is_file):
            deployment = Deployment.from_json(await asyncio.to_thread(sidecar.read_text))
            net = await cls._start(state, deployment, port=port, block_time=block_time, started=started)
            if net is not None:
                return net
        anvil = await Anvil.start(port=port)
        w3 = new_web3(anvil.rpc_url)
        try:
            deployment = await deploy(w3)
            await _write_cache(anvil, deployment, state, sidecar)
        except BaseException:
            await _close(anvil, w3)
            raise
        if block_time is None:
            return cls(anvil, w3, deployment, warm=False, seconds=time.perf_counter() - started)
        # One tx per block would stretch the deployment to a minute: deploy automined, then restart.
        await _close(anvil, w3)
        net = await cls._start(state, deployment, port=port, block_time=block_time, started=started)
        if net is None:
            raise DevnetError(f"{state}: the state just written does not load back into anvil")
        net.warm = False
        return net

    @classmethod
    async def _start(
        cls,
        state: Path,
        deployment: Deployment,
        *,
        port: int | None,
        block_time: float | None,
        started: float,
    ) -> Devnet | None:
        try:
            anvil = await Anvil.start(port=port, load_state=state, block_time=block_time)
        except DevnetError:  # anvil refuses a truncated or incompatible state file: redeploy
            return None
        w3 = new_web3(anvil.rpc_url)
        try:
            hub_code = await w3.eth.get_code(checksum(deployment.hub))
        except BaseException:
            await _close(anvil, w3)
            raise
        if len(hub_code) == 0:  # a state without our deployment: redeploy rather than fail
            await _close(anvil, w3)
            return None
        return cls(anvil, w3, deployment, warm=True, seconds=time.perf_counter() - started)

    async def stop(self) -> None:
        await _close(self.anvil, self.w3)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


async def _write_cache(anvil: Anvil, deployment: Deployment, state: Path, sidecar: Path) -> None:
    # Several test sessions may deploy at once: write aside, then rename; the sidecar is the commit marker.
    suffix = f".{os.getpid()}.tmp"
    state_tmp = state.with_name(state.name + suffix)
    await anvil.dump_state(state_tmp)

    def commit() -> None:
        os.replace(state_tmp, state)
        sidecar_tmp = sidecar.with_name(sidecar.name + suffix)
        sidecar_tmp.write_text(deployment.to_json())
        os.replace(sidecar_tmp, sidecar)

    await asyncio.to_thread(commit)


async def _close(anvil: Anvil, w3: AsyncWeb3[Any]) -> None:
    try:
        await w3.provider.disconnect()
    finally:
        await anvil.stop()
