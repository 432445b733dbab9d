"""The part of the PoCo ABI the worker uses, shipped with the package (no node_modules at run time).

Fragments of ``IexecInterfaceToken`` and ``Workerpool`` from @iexec/poco 6.1.0, without ``internalType``
(tooling metadata the codec ignores): the worker's transactions and views (PoCo ``IexecPoco2``,
``IexecPocoAccessors``, ``IexecAccessorsABILegacy``) and the task events (iexec-commons-poco
``LogTopic``). tests/chain/test_abi.py checks them against the npm artifacts.
"""

from __future__ import annotations

from typing import Any, Final

from eth_utils.abi import event_abi_to_log_topic, function_abi_to_4byte_selector

HUB_ABI: Final[list[dict[str, Any]]] = [
    {
        "inputs": [
            {"name": "taskId", "type": "bytes32"},
            {"name": "resultHash", "type": "bytes32"},
            {"name": "resultSeal", "type": "bytes32"},
            {"name": "enclaveChallenge", "type": "address"},
            {"name": "enclaveSign", "type": "bytes"},
            {"name": "authorizationSign", "type": "bytes"},
        ],
        "name": "contribute",
        "outputs": [],
        "stateMutability": "nonpayable",
        "type": "function",
    },
    {
        "inputs": [{"name": "taskId", "type": "bytes32"}, {"name": "resultDigest", "type": "bytes32"}],
        "name": "reveal",
        "outputs": [],
        "stateMutability": "nonpayable",
        "type": "function",
    },
    {
        "inputs": [
            {"name": "taskId", "type": "bytes32"},
            {"name": "resultDigest", "type": "bytes32"},
            {"name": "results", "type": "bytes"},
            {"name": "resultsCallback", "type": "bytes"},
            {"name": "enclaveChallenge", "type": "address"},
            {"name": "enclaveSign", "type": "bytes"},
            {"name": "authorizationSign", "type": "bytes"},
        ],
        "name": "contributeAndFinalize",
        "outputs": [],
        "stateMutability": "nonpayable",
        "type": "function",
    },
    {
        "inputs": [{"name": "_taskid", "type": "bytes32"}],
        "name": "viewTaskABILegacy",
        "outputs": [
            {"name": "", "type": "uint8"},
            {"name": "", "type": "bytes32"},
            {"name": "", "type": "uint256"},
            {"name": "", "type": "uint256"},
            {"name": "", "type": "uint256"},
            {"name": "", "type": "uint256"},
            {"name": "", "type": "uint256"},
            {"name": "", "type": "bytes32"},
            {"name": "", "type": "uint256"},
            {"name": "", "type": "uint256"},
            {"name": "", "type": "address[]"},
            {"name": "", "type": "bytes"},
        ],
        "stateMutability": "view",
        "type": "function",
    },
    {
        "inputs": [{"name": "id", "type": "bytes32"}],
        "name": "viewTask",
        "outputs": [
            {
                "components": [
                    {"name": "status", "type": "uint8"},
                    {"name": "dealid", "type": "bytes32"},
                    {"name": "idx", "type": "uint256"},
                    {"name": "timeref", "type": "uint256"},
                    {"name": "contributionDeadline", "type": "uint256"},
                    {"name": "revealDeadline", "type": "uint256"},
                    {"name": "finalDeadline", "type": "uint256"},
                    {"name": "consensusValue", "type": "bytes32"},
                    {"name": "revealCounter", "type": "uint256"},
                    {"name": "winnerCounter", "type": "uint256"},
                    {"name": "contributors", "type": "address[]"},
                    {"name": "resultDigest", "type": "bytes32"},
                    {"name": "results", "type": "bytes"},
                    {"name": "resultsTimestamp", "type": "uint256"},
                    {"name": "resultsCallback", "type": "bytes"},
                ],
                "name": "",
                "type": "tuple",
            }
        ],
        "stateMutability": "view",
        "type": "function",
    },
    {
        "inputs": [{"name": "_taskid", "type": "bytes32"}, {"name": "_worker", "type": "address"}],
        "name": "viewContribution",
        "outputs": [
            {
                "components": [
                    {"name": "status", "type": "uint8"},
                    {"name": "resultHash", "type": "bytes32"},
                    {"name": "resultSeal", "type": "bytes32"},
                    {"name": "enclaveChallenge", "type": "address"},
                    {"name": "weight", "type": "uint256"},
                ],
                "name": "",
                "type": "tuple",
            }
        ],
        "stateMutability": "view",
        "type": "function",
    },
    {
        "inputs": [{"name": "account", "type": "address"}],
        "name": "viewAccount",
        "outputs": [
            {
                "components": [{"name": "stake", "type": "uint256"}, {"name": "locked", "type": "uint256"}],
                "name": "",
                "type": "tuple",
            }
        ],
        "stateMutability": "view",
        "type": "function",
    },
    {
        "inputs": [{"name": "id", "type": "bytes32"}],
        "name": "viewDeal",
        "outputs": [
            {
                "components": [
                    {
                        "components": [
                            {"name": "pointer", "type": "address"},
                            {"name": "owner", "type": "address"},
                            {"name": "price", "type": "uint256"},
                        ],
                        "name": "app",
                        "type": "tuple",
                    },
                    {
                        "components": [
                            {"name": "pointer", "type": "address"},
                            {"name": "owner", "type": "address"},
                            {"name": "price", "type": "uint256"},
                        ],
                        "name": "dataset",
                        "type": "tuple",
                    },
                    {
                        "components": [
                            {"name": "pointer", "type": "address"},
                            {"name": "owner", "type": "address"},
                            {"name": "price", "type": "uint256"},
                        ],
                        "name": "workerpool",
                        "type": "tuple",
                    },
                    {"name": "trust", "type": "uint256"},
                    {"name": "category", "type": "uint256"},
                    {"name": "tag", "type": "bytes32"},
                    {"name": "requester", "type": "address"},
                    {"name": "beneficiary", "type": "address"},
                    {"name": "callback", "type": "address"},
                    {"name": "params", "type": "string"},
                    {"name": "startTime", "type": "uint256"},
                    {"name": "botFirst", "type": "uint256"},
                    {"name": "botSize", "type": "uint256"},
                    {"name": "workerStake", "type": "uint256"},
                    {"name": "schedulerRewardRatio", "type": "uint256"},
                    {"name": "sponsor", "type": "address"},
                ],
                "name": "",
                "type": "tuple",
            }
        ],
        "stateMutability": "view",
        "type": "function",
    },
    {
        "inputs": [{"name": "_catid", "type": "uint256"}],
        "name": "viewCategory",
        "outputs": [
            {
                "components": [
                    {"name": "name", "type": "string"},
                    {"name": "description", "type": "string"},
                    {"name": "workClockTimeRef", "type": "uint256"},
                ],
                "name": "",
                "type": "tuple",
            }
        ],
        "stateMutability": "view",
        "type": "function",
    },
    {
        "inputs": [{"name": "_id", "type": "bytes32"}],
        "name": "viewConfigABILegacy",
        "outputs": [
            {"name": "", "type": "uint256"},
            {"name": "", "type": "uint256"},
            {"name": "", "type": "uint256"},
            {"name": "", "type": "uint256"},
            {"name": "", "type": "uint256"},
            {"name": "", "type": "uint256"},
        ],
        "stateMutability": "view",
        "type": "function",
    },
    {
        "inputs": [{"name": "app", "type": "address"}],
        "name": "viewApp",
        "outputs": [
            {
                "components": [
                    {"name": "owner", "type": "address"},
                    {"name": "m_appName", "type": "string"},
                    {"name": "m_appType", "type": "string"},
                    {"name": "m_appMultiaddr", "type": "bytes"},
                    {"name": "m_appChecksum", "type": "bytes32"},
                    {"name": "m_appMREnclave", "type": "bytes"},
                ],
                "name": "",
                "type": "tuple",
            }
        ],
        "stateMutability": "view",
        "type": "function",
    },
    {
        "inputs": [{"name": "dataset", "type": "address"}],
        "name": "viewDataset",
        "outputs": [
            {
                "components": [
                    {"name": "owner", "type": "address"},
                    {"name": "m_datasetName", "type": "string"},
                    {"name": "m_datasetMultiaddr", "type": "bytes"},
                    {"name": "m_datasetChecksum", "type": "bytes32"},
                ],
                "name": "",
                "type": "tuple",
            }
        ],
        "stateMutability": "view",
        "type": "function",
    },
    {
        "inputs": [{"name": "_worker", "type": "address"}],
        "name": "viewScore",
        "outputs": [{"name": "", "type": "uint256"}],
        "stateMutability": "view",
        "type": "function",
    },
    {
        "inputs": [],
        "name": "callbackgas",
        "outputs": [{"name": "", "type": "uint256"}],
        "stateMutability": "view",
        "type": "function",
    },
    {
        "inputs": [],
        "name": "contribution_deadline_ratio",
        "outputs": [{"name": "", "type": "uint256"}],
        "stateMutability": "view",
        "type": "function",
    },
    {
        "inputs": [],
        "name": "reveal_deadline_ratio",
        "outputs": [{"name": "", "type": "uint256"}],
        "stateMutability": "view",
        "type": "function",
    },
    {
        "inputs": [],
        "name": "final_deadline_ratio",
        "outputs": [{"name": "", "type": "uint256"}],
        "stateMutability": "view",
        "type": "function",
    },
    {
        "inputs": [],
        "name": "teebroker",
        "outputs": [{"name": "", "type": "address"}],
        "stateMutability": "view",
        "type": "function",
    },
    {
        "inputs": [{"name": "id", "type": "bytes32"}],
        "name": "resultFor",
        "outputs": [{"name": "", "type": "bytes"}],
        "stateMutability": "view",
        "type": "function",
    },
    {
        "anonymous": False,
        "inputs": [
            {"indexed": True, "name": "taskid", "type": "bytes32"},
            {"indexed": True, "name": "workerpool", "type": "address"},
        ],
        "name": "TaskInitialize",
        "type": "event",
    },
    {
        "anonymous": False,
        "inputs": [
            {"indexed": True, "name": "taskid", "type": "bytes32"},
            {"indexed": True, "name": "worker", "type": "address"},
            {"indexed": False, "name": "hash", "type": "bytes32"},
        ],
        "name": "TaskContribute",
        "type": "event",
    },
    {
        "anonymous": False,
        "inputs": [
            {"indexed": True, "name": "taskid", "type": "bytes32"},
            {"indexed": False, "name": "consensus", "type": "bytes32"},
        ],
        "name": "TaskConsensus",
        "type": "event",
    },
    {
        "anonymous": False,
        "inputs": [
            {"indexed": True, "name": "taskid", "type": "bytes32"},
            {"indexed": True, "name": "worker", "type": "address"},
            {"indexed": False, "name": "digest", "type": "bytes32"},
        ],
        "name": "TaskReveal",
        "type": "event",
    },
    {
        "anonymous": False,
        "inputs": [{"indexed": True, "name": "taskid", "type": "bytes32"}],
        "name": "TaskReopen",
        "type": "event",
    },
    {
        "anonymous": False,
        "inputs": [
            {"indexed": True, "name": "taskid", "type": "bytes32"},
            {"indexed": False, "name": "results", "type": "bytes"},
        ],
        "name": "TaskFinalize",
        "type": "event",
    },
    {
        "anonymous": False,
        "inputs": [{"indexed": True, "name": "taskid", "type": "bytes32"}],
        "name": "TaskClaimed",
        "type": "event",
    },
    {
        "anonymous": False,
        "inputs": [
            {"indexed": True, "name": "workerpool", "type": "address"},
            {"indexed": False, "name": "dealid", "type": "bytes32"},
        ],
        "name": "SchedulerNotice",
        "type": "event",
    },
]

# The hub's escrow (PoCo ``IexecEscrowTokenFacet``, token flavour) and the RLC token it holds: what
# ``iexec-worker account`` uses to show, deposit and withdraw the worker's stake.
ESCROW_ABI: Final[list[dict[str, Any]]] = [
    {
        "inputs": [],
        "name": "token",
        "outputs": [{"name": "", "type": "address"}],
        "stateMutability": "view",
        "type": "function",
    },
    {
        "inputs": [{"name": "amount", "type": "uint256"}],
        "name": "withdraw",
        "outputs": [{"name": "", "type": "bool"}],
        "stateMutability": "nonpayable",
        "type": "function",
    },
]

RLC_ABI: Final[list[dict[str, Any]]] = [
    {
        "inputs": [{"name": "", "type": "address"}],
        "name": "balanceOf",
        "outputs": [{"name": "", "type": "uint256"}],
        "stateMutability": "view",
        "type": "function",
    },
    {
        "inputs": [
            {"name": "_spender", "type": "address"},
            {"name": "_value", "type": "uint256"},
            {"name": "_extraData", "type": "bytes"},
        ],
        "name": "approveAndCall",
        "outputs": [{"name": "", "type": "bool"}],
        "stateMutability": "nonpayable",
        "type": "function",
    },
]

WORKERPOOL_ABI: Final[list[dict[str, Any]]] = [
    {
        "inputs": [],
        "name": "owner",
        "outputs": [{"name": "", "type": "address"}],
        "stateMutability": "view",
        "type": "function",
    },
    {
        "inputs": [],
        "name": "m_workerStakeRatioPolicy",
        "outputs": [{"name": "", "type": "uint256"}],
        "stateMutability": "view",
        "type": "function",
    },
]


def _fragment(abi: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(e for e in abi if e["type"] == kind and e["name"] == name)


def event_topic(name: str) -> str:
    """topic0 of a hub event, ``0x``-prefixed lowercase hex."""
    return "0x" + event_abi_to_log_topic(_fragment(HUB_ABI, "event", name)).hex()  # type: ignore[arg-type]


def selector(name: str) -> str:
    """4-byte selector of a hub function, ``0x``-prefixed lowercase hex."""
    return "0x" + function_abi_to_4byte_selector(_fragment(HUB_ABI, "function", name)).hex()  # type: ignore[arg-type]


TASK_CONTRIBUTE_TOPIC: Final = event_topic("TaskContribute")
TASK_REVEAL_TOPIC: Final = event_topic("TaskReveal")
TASK_FINALIZE_TOPIC: Final = event_topic("TaskFinalize")
TASK_CONSENSUS_TOPIC: Final = event_topic("TaskConsensus")
SCHEDULER_NOTICE_TOPIC: Final = event_topic("SchedulerNotice")
