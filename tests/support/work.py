"""A ``TaskWork`` that can run the compute stage of a task whose description is given, on the real Docker engine.

The chain, the transaction sender, the store and the HTTP session are not used by ``compute``: the
description is put in the work's cache, as ``describe`` would have after reading the chain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from eth_account import Account

from tests.support.chain import task_description
from worker.chain import DealParams
from worker.compute import DockerEngine
from worker.compute.sandbox import Sandbox
from worker.data import DownloadLimits
from worker.replicate.work import TaskWork, WorkSettings

TASK_ID = "0x" + "5e" * 32


def compute_work(
    engine: DockerEngine, root: Path, worker_name: str, limits: Sandbox | None = None, **settings: Any
) -> TaskWork:
    work_settings = WorkSettings(
        worker_name=worker_name,
        task_root=root,
        gas_price_cap=1,
        limits=limits or Sandbox(network="none"),
        download_limits=DownloadLimits(),
        result_repository_url="http://127.0.0.1:1",
        **settings,
    )
    unused = cast(Any, None)
    return TaskWork(work_settings, unused, unused, engine, unused, Account.create(), unused)


def describe_app(work: TaskWork, image: str, args: str, *, task_id: str = TASK_ID, **changes: Any) -> str:
    """Give ``work`` the description of a task running ``image`` with ``args``; returns the task id."""
    description = task_description(
        task_id=task_id, app_uri=image, deal_params=DealParams(iexec_args=args), **changes
    )
    work._descriptions[task_id] = description
    return task_id
