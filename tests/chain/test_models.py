"""Unit tests of the chain models: deal params, TEE tags, multiaddr URIs, the shipped ABI (no chain)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.chain import task_description
from worker.chain import abi
from worker.chain.models import DealParams
from worker.chain.multiaddr import ipfs_multiaddr, multiaddr_to_uri
from worker.protocol.tee import TeeFramework, is_tee_tag, tee_framework

POCO_ABIS = Path(__file__).resolve().parents[2] / "devnet/npm/node_modules/@iexec/poco/abis/contracts"
CID_V0 = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"


def test_deal_params_full_json() -> None:
    text = json.dumps(
        {
            "iexec_args": "--n 3",
            "iexec_input_files": ["https://a/b.txt", "https://c/d.bin"],
            "iexec_result_encryption": True,
            "iexec_result_storage_provider": "ipfs",
            "iexec_result_storage_proxy": "http://127.0.0.1:13200",
            "iexec_secrets": {"1": "key-one"},
            "bulk_cid": "bafy",
        }
    )
    assert DealParams.parse(text) == DealParams(
        iexec_args="--n 3",
        iexec_input_files=("https://a/b.txt", "https://c/d.bin"),
        iexec_result_encryption=True,
        iexec_result_storage_provider="ipfs",
        iexec_result_storage_proxy="http://127.0.0.1:13200",
        iexec_secrets={"1": "key-one"},
        bulk_cid="bafy",
    )


def test_deal_params_partial_json_leaves_the_rest_unset() -> None:
    assert DealParams.parse('{"iexec_args":"hello"}') == DealParams(iexec_args="hello")


@pytest.mark.parametrize("text", ["hello world", "", "[1,2]", '"quoted"', "42", '{"iexec_input_files": "x"}'])
def test_deal_params_not_a_params_object_are_plain_args(text: str) -> None:
    assert DealParams.parse(text) == DealParams(iexec_args=text)


def test_deal_params_boolean_given_as_text() -> None:
    assert DealParams.parse('{"iexec_result_encryption":"true"}').iexec_result_encryption is True


@pytest.mark.parametrize(
    "text",
    [
        # Java workers refuse an unknown key, so the whole string becomes the app's arguments.
        '{"iexec_args":"hello","iexec_developer_logger":true}',
        '{"wrong_field1":"wrong arg value","iexec_input_files":["http://file1"]}',
        '{"iexec_args":["a","b"]}',
        '{"iexec_input_files":["http://a",null]}',
        '{"iexec_result_encryption":"yes"}',
        '{"iexec_result_encryption":1.5}',
        '{"iexec_args":NaN}',
    ],
)
def test_deal_params_of_the_wrong_shape_are_plain_args_as_for_java_workers(text: str) -> None:
    assert DealParams.parse(text) == DealParams(iexec_args=text)


def test_deal_params_coercions_and_trailing_text_as_jackson_does() -> None:
    parsed = DealParams.parse(
        ' \n{"iexec_args":1.50,"iexec_input_files":[7],"iexec_secrets":{"1":true},'
        '"iexec_result_encryption":1,"bulk_cid":null} trailing text'
    )
    assert parsed == DealParams(
        iexec_args="1.50",
        iexec_input_files=("7",),
        iexec_secrets={"1": "true"},
        iexec_result_encryption=True,
    )
    assert type(parsed.iexec_args) is str
    assert DealParams.parse('{"iexec_result_encryption":0}').iexec_result_encryption is False
    assert DealParams.parse('{"iexec_result_encryption":null}').iexec_result_encryption is False


@pytest.mark.parametrize(
    ("tag", "framework"),
    [
        ("0x" + "00" * 32, None),
        ("0x" + "00" * 31 + "03", TeeFramework.SCONE),
        ("0x" + "00" * 31 + "05", TeeFramework.GRAMINE),
        ("0x" + "00" * 31 + "09", TeeFramework.TDX),
        ("0x" + "00" * 31 + "01", None),
        ("0x" + "00" * 31 + "f3", TeeFramework.SCONE),
    ],
)
def test_tee_framework_from_the_tag_low_nibble(tag: str, framework: TeeFramework | None) -> None:
    assert tee_framework(tag) is framework
    assert is_tee_tag(tag) is (int(tag[-1], 16) & 1 == 1)


def test_binary_ipfs_multiaddr_becomes_an_ipfs_path() -> None:
    raw = ipfs_multiaddr(CID_V0)
    assert raw[:2] == bytes.fromhex("a503")  # varint 421 = /ipfs
    assert multiaddr_to_uri(raw) == f"/ipfs/{CID_V0}"


@pytest.mark.parametrize("text", ["https://example.org/data.zip", f"/ipfs/{CID_V0}", "docker.io/x/y:1"])
def test_text_multiaddr_is_read_as_text(text: str) -> None:
    assert multiaddr_to_uri(text.encode()) == text


def test_task_description_helpers() -> None:
    plain = task_description()
    assert not plain.contains_callback()
    assert not plain.contains_dataset()
    assert not plain.is_tee_task
    assert not plain.is_eligible_to_contribute_and_finalize()
    assert task_description(callback="0x" + "99" * 20).contains_callback()
    with_dataset = task_description(
        dataset_address="0x" + "98" * 20, dataset_uri="/ipfs/x", dataset_checksum="0x01"
    )
    assert with_dataset.contains_dataset()
    assert not replace(with_dataset, dataset_checksum=" ").contains_dataset()
    tee = task_description(tag="0x" + "00" * 31 + "03", tee_framework=TeeFramework.SCONE)
    assert tee.is_tee_task
    assert tee.is_eligible_to_contribute_and_finalize()
    assert not replace(tee, trust=2).is_eligible_to_contribute_and_finalize()


def _strip(entry: object) -> object:
    if isinstance(entry, dict):
        return {k: _strip(v) for k, v in entry.items() if k != "internalType"}
    if isinstance(entry, list):
        return [_strip(v) for v in entry]
    return entry


def test_shipped_abi_matches_the_poco_artifacts() -> None:
    hub = _strip(json.loads((POCO_ABIS / "IexecInterfaceToken.json").read_text()))
    pool = _strip(json.loads((POCO_ABIS / "registries/workerpools/Workerpool.json").read_text()))
    assert isinstance(hub, list)
    assert isinstance(pool, list)
    for fragment in abi.HUB_ABI:
        assert fragment in hub, fragment["name"]
    for fragment in abi.WORKERPOOL_ABI:
        assert fragment in pool, fragment["name"]


@pytest.mark.parametrize(
    ("function", "selector"),
    [
        ("contribute", "0x34623484"),
        ("reveal", "0xfc334e8c"),
        ("contributeAndFinalize", "0x5facd761"),
        ("viewTaskABILegacy", "0x248ad6a0"),
        ("viewTask", "0xadccf0d5"),
        ("viewContribution", "0xe741363b"),
        ("viewAccount", "0x6b55f4a5"),
        ("viewDeal", "0xb74861b2"),
        ("viewCategory", "0x4f5f44ec"),
        ("viewApp", "0xe1523fb4"),
        ("viewDataset", "0x1e143ef7"),
        ("callbackgas", "0xe63ec07d"),
    ],
)
def test_selectors_are_those_of_the_protocol(function: str, selector: str) -> None:
    assert abi.selector(function) == selector


def test_event_topics_are_those_of_the_protocol() -> None:
    assert abi.TASK_CONTRIBUTE_TOPIC == "0x3fdb8d7797562d49a81078dbf7fa1771958ea452f8b13d1148383bd9506aecfb"
    assert abi.TASK_REVEAL_TOPIC == "0x4b1763d473ac8fa80b4432ba90047e1b92444d8fabc55e6a002d9b1a316d7959"
    assert abi.TASK_FINALIZE_TOPIC == "0x78ce8a8bc0fcb704e8ba3b3dbb36aa88002df8038128b4af2f27ef65db665044"
    assert (
        abi.event_topic("TaskConsensus")
        == "0xf6d49bf3e05d33a4bc497d3c793fb5756388bb96b947cf51bb60aaecb0e022e3"
    )
