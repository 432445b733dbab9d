"""The real ``Work`` of a replicate: chain pre-checks, Docker, data, results and transactions.

This is the glue between the pipeline's port and the adapters (``worker.chain``, ``worker.compute``,
``worker.data``, ``worker.result``); each adapter's error becomes a ``StepFailed`` with the cause
the scheduler expects, and a message that names the thing and, where there is one, the fix.
Task folders follow the reference layout: ``<root>/<taskId>/input`` mounted at /iexec_in and
``<root>/<taskId>/output/iexec_out`` mounted at /iexec_out; ``<root>/<taskId>/logs`` (this worker's)
receives the app's whole logs while it runs, out of the app's reach, before they join the result.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiohttp
from eth_account.signers.local import LocalAccount

from worker.chain import (
    ChainClient,
    ReceiptTimeout,
    TaskDescription,
    TaskNotFound,
    TransactionRefused,
    TransactionSender,
    cannot_contribute_cause,
    cannot_reveal_cause,
    has_enough_gas,
)
from worker.compute import (
    STDERR_FILE,
    STDOUT_FILE,
    Bind,
    ComputeError,
    ContainerResult,
    ContainerSpec,
    DockerEngine,
    DockerUnavailableError,
    PullProgress,
    RegistryAuth,
    Sandbox,
    app_environment,
    container_name,
    registry_of,
    split_args,
    task_labels,
)
from worker.compute.model import IEXEC_IN, IEXEC_OUT
from worker.data import DEFAULT_IPFS_GATEWAYS, DatasetRef, DownloadLimits, download_task_data
from worker.protocol.crypto import ZERO_ADDRESS, ZERO_BYTES32
from worker.protocol.errors import ChainError, StepFailed, TransientError
from worker.protocol.models import ChainReceipt, WorkerpoolAuthorization
from worker.protocol.status import ChainContributionStatus, ReplicateStatus, ReplicateStatusCause
from worker.replicate.causes import DISK_FULL_CAUSE, disk_full_error, disk_full_message, failures_of
from worker.replicate.ports import ComputeOutcome, FinalizeOutcome, Stage, UploadOutcome
from worker.replicate.store import ReplicateStore
from worker.replicate.tee_work import TeeWork
from worker.result import (
    ZIP_NAME,
    ResultError,
    UnsafeResultPath,
    compute_result_digest_async,
    move_into,
    read_computed_file,
    run_standard_post_compute_async,
    write_error_result,
)
from worker.result.upload import upload_result

Cause = ReplicateStatusCause
T = TypeVar("T")
ENGINE_RETRY_FIRST = 1.0
ENGINE_RETRY_MAX = 30.0
"""Seconds between two questions to a Docker engine that went away: doubling from the first to the most."""
DISK_FULL_MARGIN = 1 << 20
"""A run that went wrong with less than this free under its task folder ran out of disk."""
LOGS_DIR = "logs"
"""``<task>/logs``: the app's whole logs land here first, outside what the app can write."""
log = logging.getLogger("iexec.worker.work")


@dataclass(frozen=True)
class WorkSettings:
    worker_name: str
    task_root: Path
    gas_price_cap: int
    limits: Sandbox
    download_limits: DownloadLimits
    result_repository_url: str
    registries: tuple[RegistryAuth, ...] = ()
    min_pull_timeout: float = 300.0
    max_pull_timeout: float = 1800.0
    max_result_bytes: int | None = None
    ipfs_gateways: tuple[str, ...] = DEFAULT_IPFS_GATEWAYS
    upload_attempts: int = 3
    upload_timeout: float = 300.0
    sidechain: bool = False
    chain_retry_window: float = 120.0
    developer_logger: bool = False


def pull_timeout(max_execution_time: int, low: float, high: float) -> float:
    """The reference's formula, in the unit it meant: round(10·log10(minutes/10)) minutes, clamped."""
    minutes = max(max_execution_time / 60, 1e-9)
    value = round(10 * math.log10(minutes / 10)) * 60.0
    if low > high:
        return high
    return min(max(value, low), high)


class TaskWork:
    def __init__(
        self,
        settings: WorkSettings,
        chain: ChainClient,
        sender: TransactionSender,
        engine: DockerEngine,
        session: aiohttp.ClientSession,
        account: LocalAccount,
        store: ReplicateStore,
        tee: TeeWork | None = None,
    ) -> None:
        """``tee`` runs the tasks whose deal names a TEE framework; without it they fail TEE_NOT_SUPPORTED."""
        self._settings = settings
        self._chain = chain
        self._sender = sender
        self._engine = engine
        self._session = session
        self._account = account
        self._store = store
        self.tee = tee
        self._worker = account.address.lower()
        self._descriptions: dict[str, TaskDescription] = {}
        self.engine_waits: set[str] = set()
        """Tasks whose stage waits for the Docker engine to answer again."""
        self.on_engine_wait: Callable[[set[str], str | None], None] = lambda _tasks, _why: None
        """Told the tasks waiting for the engine, and why, whenever that changes (health and metrics)."""

    @property
    def registries(self) -> tuple[RegistryAuth, ...]:
        return self._settings.registries

    # -- task facts -------------------------------------------------------------------------------

    async def describe(self, task_id: str) -> TaskDescription:
        cached = self._descriptions.get(task_id)
        if cached is None:
            with failures_of(Stage.START):
                cached = await self._chain_call(lambda: self._chain.task_description(task_id))
            self._descriptions[task_id] = cached
        return cached

    def final_deadline(self, task_id: str) -> float | None:
        description = self._descriptions.get(task_id)
        return float(description.final_deadline) if description else None

    async def _own_contribution(self, task_id: str) -> ChainContributionStatus:
        contribution = await self._chain_call(lambda: self._chain.contribution(task_id, self._worker))
        return contribution.status

    def task_dir(self, task_id: str) -> Path:
        return self._settings.task_root / task_id

    def _output(self, task_id: str) -> Path:
        return self.task_dir(task_id) / "output"

    async def _chain_call(self, call: Callable[[], Awaitable[T]]) -> T:
        """Retry a chain read across short node outages; CHAIN_UNREACHABLE once the window is spent."""
        deadline = time.monotonic() + self._settings.chain_retry_window
        delay = 0.5
        while True:
            try:
                return await call()
            except TaskNotFound:
                raise
            except ChainError as exc:
                if time.monotonic() + delay > deadline:
                    with failures_of(Stage.START, "blockchain node unreachable"):
                        raise
                log.warning("chain read failed (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _checked(
        self, check: Callable[[], Awaitable[ReplicateStatusCause | None]]
    ) -> ReplicateStatusCause | None:
        """A pre-check, asked again across short node outages: an unreachable node is no verdict on the task."""
        deadline = time.monotonic() + self._settings.chain_retry_window
        delay = 0.5
        while True:
            cause = await check()
            if cause is not Cause.CHAIN_UNREACHABLE or time.monotonic() + delay > deadline:
                return cause
            log.warning("chain pre-check: node unreachable; asking again in %.1f s", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    # -- Work port --------------------------------------------------------------------------------

    async def precheck(self, task_id: str, stage: Stage) -> None:
        description = await self.describe(task_id)
        encrypted = description.deal_params.iexec_result_encryption
        if stage is Stage.START and encrypted and not description.is_tee_task:
            raise StepFailed(
                Cause.TASK_DESCRIPTION_INVALID,
                "result encryption is only possible in TEE tasks (iexec_result_encryption=true)",
            )
        sending = stage in (Stage.CONTRIBUTE, Stage.CONTRIBUTE_AND_FINALIZE)
        if sending and await self._own_contribution(task_id) in _SENT_CONTRIBUTION:
            # Broadcast before a restart and mined since: the sender follows its journal to the receipt,
            # and these checks would refuse what is already done (contribution set, task REVEALING).
            return
        # contributeAndFinalize locks no stake (iexec-worker 9.0.1).
        check_stake = not description.is_eligible_to_contribute_and_finalize()
        cause = await self._checked(
            lambda: cannot_contribute_cause(self._chain, task_id, self._worker, check_stake=check_stake)
        )
        if cause is not None:
            raise StepFailed(cause, _precheck_message(cause, description))
        if stage is Stage.START and description.is_tee_task:
            if self.tee is None:
                raise StepFailed(
                    Cause.TEE_NOT_SUPPORTED, "this worker runs no TEE task (the deal asks for TEE)"
                )
            await self.tee.start(task_id, description)
        if sending and not self._settings.sidechain:
            balance = await self._chain_call(lambda: self._chain.balance(self._worker))
            if not has_enough_gas(balance, self._settings.gas_price_cap):
                raise StepFailed(
                    Cause.OUT_OF_GAS,
                    f"wallet {self._worker} holds {balance} wei, less than 1e6 x IEXEC_GAS_PRICE_CAP: refill it",
                )

    async def download_app(self, task_id: str) -> None:
        description = await self.describe(task_id)
        image = description.app_uri
        timeout = pull_timeout(
            description.max_execution_time, self._settings.min_pull_timeout, self._settings.max_pull_timeout
        )
        registry = registry_of(image)
        auth = next((r for r in self._settings.registries if r.server == registry), None)
        while True:
            progress = _PullLog(task_id, image)
            try:
                with failures_of(Stage.DOWNLOAD_APP, f"cannot pull {image}"):
                    outcome = await self._engine.pull(
                        image,
                        auth=auth,
                        pull_timeout=timeout,
                        on_progress=progress,
                        checksum=description.app_checksum,
                        local_fallback=False,  # an app's code is what its registry serves, never a local namesake
                    )
                break
            except StepFailed as failure:
                # A pull the engine dropped is started again: the engine keeps the layers it already has.
                await self._engine_back(task_id, Stage.DOWNLOAD_APP, failure, f"pull of {image}")
        log.info("%s: app image %s ready (%s)", task_id, image, outcome.value)

    async def download_data(self, task_id: str) -> None:
        description = await self.describe(task_id)
        if description.is_tee_task:
            return  # the pre-compute enclave fetches and decrypts them at COMPUTE
        folder = self.task_dir(task_id) / "input"
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        dataset = None
        if description.contains_dataset():
            dataset = DatasetRef(
                address=description.dataset_address,
                uri=description.dataset_uri,
                checksum=description.dataset_checksum,
            )
        with failures_of(Stage.DOWNLOAD_DATA):
            await download_task_data(
                self._session,
                folder,
                dataset=dataset,
                input_files=list(description.deal_params.iexec_input_files),
                limits=self._settings.download_limits,
                gateways=self._settings.ipfs_gateways,
            )

    async def write_error_result(
        self, task_id: str, status: ReplicateStatus, cause: ReplicateStatusCause
    ) -> str:
        if (await self.describe(task_id)).is_tee_task:
            # The reference has the post-compute enclave sign an error result; this worker aborts instead.
            raise StepFailed(
                Cause.POST_COMPUTE_FAILED_UNKNOWN_ISSUE,
                f"{cause.value}: a TEE task's error result is not written (it would need the enclave's signature)",
            )
        output = self._output(task_id)
        try:
            await asyncio.to_thread(_reset_output, output)
            # Java workers build this cause without a message, which their error.txt prints as empty:
            # the text must be the same byte for byte, or the error results do not reach consensus.
            computed = await asyncio.to_thread(
                write_error_result, output / "iexec_out", status, [(cause, "")]
            )
            await run_standard_post_compute_async(output, max_zip_bytes=self._settings.max_result_bytes)
            return await compute_result_digest_async(output, computed, callback=False)
        except ResultError as exc:
            raise StepFailed(
                Cause.POST_COMPUTE_FAILED_UNKNOWN_ISSUE, f"cannot write the error result: {exc}"
            ) from exc

    async def compute(self, task_id: str) -> ComputeOutcome:
        """Run the app, then the standard post-compute, as iexec-worker 9.2 ``TaskManagerService.compute``.

        Only a task whose app image is not on the engine raises (``StepFailed``, APP_NOT_FOUND_LOCALLY, as the
        reference checks before running). Otherwise the outcome carries the exit code (-1 after a timeout, or when the
        container could not be created or started) and the logs; the causes met on the way are logged and
        returned, never raised. The post-compute runs whatever the app did: an app that wrote a valid result
        before failing is contributed, like with the reference, and one that wrote none gets no digest.
        """
        description = await self.describe(task_id)
        task_dir = self.task_dir(task_id)
        output = task_dir / "output"
        await asyncio.to_thread(_prepare_folders, task_dir)
        await asyncio.to_thread(self._settings.limits.prepare_output, output / "iexec_out")
        while True:
            try:
                with failures_of(Stage.COMPUTE, f"cannot inspect {description.app_uri}"):
                    present = await self._engine.image_exists(description.app_uri)
                break
            except StepFailed as failure:
                await self._engine_back(
                    task_id, Stage.COMPUTE, failure, f"inspection of {description.app_uri}"
                )
        if not present:
            raise StepFailed(
                Cause.APP_NOT_FOUND_LOCALLY, f"app image {description.app_uri} is not on the Docker engine"
            )
        if description.is_tee_task and self.tee is not None:
            return await self._tee_compute(task_id, description)
        while True:
            try:
                outcome = await self._standard_compute(task_id, description)
                break
            except StepFailed as failure:
                # The run the engine dropped starts over from an empty /iexec_out: its container is gone, or is
                # removed by name before the next one starts, so one task never has two containers.
                await self._engine_back(task_id, Stage.COMPUTE, failure, f"run of {description.app_uri}")
                await asyncio.to_thread(_reset_output, output)
                await asyncio.to_thread(self._settings.limits.prepare_output, output / "iexec_out")
        return outcome

    async def _standard_compute(self, task_id: str, description: TaskDescription) -> ComputeOutcome:
        """One run of the app and the post-compute; raises ``StepFailed`` only when the engine went away
        (the caller waits for it and runs again) or the disk under the task folder is full."""
        output = self.task_dir(task_id) / "output"
        failures: list[ReplicateStatusCause] = []

        def failed(cause: ReplicateStatusCause, message: str) -> None:
            failures.append(cause)
            log.warning("%s: compute: %s (%s)", task_id, cause.value, message)

        result: ContainerResult | None = None
        spec: ContainerSpec | None = None
        try:
            # The reference counts a container it cannot create (arguments it cannot split included) or
            # start as an app that failed: COMPUTED with exit code -1.
            with failures_of(Stage.COMPUTE, f"cannot run {description.app_uri}"):
                spec = self._app_container(
                    task_id, description, tuple(split_args(description.deal_params.iexec_args or ""))
                )
                log.info(
                    "%s: running %s (limit %d s)",
                    task_id,
                    description.app_uri,
                    description.max_execution_time,
                )
                result = await self._engine.run(spec)
        except StepFailed as failure:
            if isinstance(failure.__cause__, DockerUnavailableError):
                raise
            failed(Cause.APP_COMPUTE_FAILED, str(failure))
        if result is not None and (result.exit_code != 0 or not result.logs_saved or result.output_exceeded):
            await self._check_disk(task_id)
        exit_code = -1
        if result is not None and result.timed_out:
            failed(
                Cause.APP_COMPUTE_TIMEOUT,
                f"app ran past the category's max execution time ({description.max_execution_time} s) "
                "and was killed",
            )
        elif result is not None:
            exit_code = result.exit_code
            if result.output_exceeded:
                failed(
                    Cause.APP_COMPUTE_FAILED,
                    f"app wrote more than {self._settings.limits.output_max_bytes} bytes to /iexec_out and was "
                    "killed (IEXEC_WORKER_CONTAINER_OUTPUT_MAX_BYTES)",
                )
            elif exit_code != 0:
                failed(Cause.APP_COMPUTE_FAILED, f"app exited with code {exit_code}")
        if spec is not None and result is not None and self._settings.developer_logger:
            await self._developer_logs(task_id, spec, result)
        # An output the sandbox cut short gets no digest: no worker of the pool would have this one.
        whole = result is None or not result.output_exceeded
        if spec is not None and result is not None and exit_code == 0:
            whole = await self._place_logs(task_id, spec, result, failed)
        digest: str | None = None
        callback_data: str | None = None
        if whole:
            try:
                with failures_of(Stage.COMPUTE):
                    await run_standard_post_compute_async(
                        output, max_zip_bytes=self._settings.max_result_bytes
                    )
                    computed = await asyncio.to_thread(read_computed_file, output / "computed.json")
                    digest = await compute_result_digest_async(
                        output, computed, callback=description.contains_callback()
                    )
                callback_data = computed.callback_data if description.contains_callback() else None
            except StepFailed as failure:
                if failure.cause is DISK_FULL_CAUSE:
                    await asyncio.to_thread(_reset_output, output)
                    raise
                failed(failure.cause, str(failure))
        return ComputeOutcome(
            exit_code=exit_code,
            stdout=result.stdout if result is not None else "",
            stderr=result.stderr if result is not None else "",
            result_digest=digest,
            callback_data=callback_data,
            app_seconds=result.duration if result is not None else None,
            failures=tuple(failures),
        )

    async def _check_disk(self, task_id: str) -> None:
        """After a run that went wrong: a task folder on a full disk is the worker's failure, not the app's.

        The app's output is dropped at once, so the space comes back for the next task."""
        task_dir = self.task_dir(task_id)
        free = await asyncio.to_thread(free_bytes, task_dir)
        if free is None or free >= DISK_FULL_MARGIN:
            return
        await asyncio.to_thread(_reset_output, task_dir / "output")
        raise StepFailed(DISK_FULL_CAUSE, f"{disk_full_message(task_dir)}; {free} bytes were left free")

    async def _engine_back(self, task_id: str, stage: Stage, failure: StepFailed, what: str) -> None:
        """Return once the Docker engine answers again after ``failure``; re-raise it when it was not the
        engine going away, or when the task's final deadline comes first (nothing more to gain by waiting)."""
        lost = failure.__cause__
        if not isinstance(lost, DockerUnavailableError):
            raise failure
        deadline = self.final_deadline(task_id)
        delay = ENGINE_RETRY_FIRST
        attempt = 0
        self.engine_waits.add(task_id)
        self.on_engine_wait(self.engine_waits, f"{what}: {lost.cause or lost}")
        try:
            while True:
                attempt += 1
                if deadline is not None and time.time() + delay >= deadline:
                    raise StepFailed(
                        failure.cause,
                        f"{what}: the Docker engine did not answer again before the task's final deadline "
                        f"({lost}); check dockerd (systemctl status docker, its log) and DOCKER_HOST",
                    ) from lost
                log.warning(
                    "%s: %s interrupted, Docker engine unavailable (%s); asking it again in %.0f s (attempt %d)",
                    task_id, what, lost.cause or lost, delay, attempt,
                )  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, ENGINE_RETRY_MAX)
                try:
                    version = await self._engine.ping()
                except DockerUnavailableError as exc:
                    lost = exc
                    continue
                log.info(
                    "%s: Docker engine %s answers again: %s starts over (%s)", task_id, version, what, stage
                )
                return
        finally:
            self.engine_waits.discard(task_id)
            self.on_engine_wait(self.engine_waits, None)

    async def _tee_compute(self, task_id: str, description: TaskDescription) -> ComputeOutcome:
        """Pre-compute, app and post-compute enclaves (``tee_work``); the app's container is the one a
        standard task gets, with the framework's environment and devices. An enclave's failure is raised
        with its cause (COMPUTE_FAILED): the scheduler sees what the enclave reported."""
        assert self.tee is not None
        with failures_of(Stage.COMPUTE, "iexec_args cannot be split"):
            spec = self._app_container(
                task_id, description, tuple(split_args(description.deal_params.iexec_args or ""))
            )

        async def place_logs(result: ContainerResult) -> None:
            def failed(cause: ReplicateStatusCause, message: str) -> None:
                raise StepFailed(cause, message)

            await self._place_logs(task_id, spec, result, failed)

        app, computed = await self.tee.compute(task_id, description, spec, place_logs)
        callback = computed.callback_data if description.contains_callback() else None
        return ComputeOutcome(
            app.exit_code, app.stdout, app.stderr, computed.result_digest, callback, app_seconds=app.duration
        )

    def _app_container(
        self, task_id: str, description: TaskDescription, args: tuple[str, ...]
    ) -> ContainerSpec:
        """The app's container; a TEE task's (``tee_work``) starts from the same one."""
        task_dir = self.task_dir(task_id)
        env = app_environment(
            deal_id=description.deal_id,
            chain_task_id=task_id,
            task_index=description.bot_index,
            bot_size=description.bot_size,
            bot_first_index=description.bot_first_index,
            dataset_address=description.dataset_address if description.contains_dataset() else None,
            input_file_urls=description.deal_params.iexec_input_files,
        )
        limits = self._settings.limits
        return ContainerSpec(
            name=container_name(self._settings.worker_name, task_id),
            image=description.app_uri,
            timeout=float(description.max_execution_time),
            cmd=args,
            env=env,
            binds=(
                Bind(task_dir / "input", IEXEC_IN, read_only=True),
                Bind(task_dir / "output" / "iexec_out", IEXEC_OUT),
            ),
            labels=task_labels(self._settings.worker_name, task_id),
            **limits.container_options(),
            log_dir=task_dir / LOGS_DIR,
            log_max_bytes=self._settings.max_result_bytes,
        )

    async def _place_logs(
        self,
        task_id: str,
        spec: ContainerSpec,
        result: ContainerResult,
        failed: Callable[[ReplicateStatusCause, str], None],
    ) -> bool:
        """Put the app's whole stdout and stderr into iexec_out, as the reference does after a success.

        False when they could not be kept whole: a result without them, or with a part of them, would not
        have the digest the Java workers of the pool compute, so no digest is computed at all.
        """
        limit = self._settings.max_result_bytes
        if not result.logs_saved:
            if limit is not None and result.logs_bytes > limit:
                failed(
                    Cause.POST_COMPUTE_OUT_FOLDER_ZIP_FAILED,
                    f"the app's logs ({result.logs_bytes} bytes) are larger than the maximum result size of "
                    f"{limit} bytes (IEXEC_WORKER_RESULT_MAX_BYTES), and belong to the result",
                )
            else:
                failed(Cause.POST_COMPUTE_FAILED_UNKNOWN_ISSUE, "the app's logs could not be read whole")
            return False
        assert spec.log_dir is not None
        log_dir = spec.log_dir
        iexec_out = self.task_dir(task_id) / "output" / "iexec_out"
        for name in (STDOUT_FILE, STDERR_FILE):
            try:
                await asyncio.to_thread(_place_log, log_dir / name, iexec_out / name)
            except (OSError, UnsafeResultPath) as exc:
                full = disk_full_error(exc)
                if full is not None:
                    await asyncio.to_thread(_reset_output, self.task_dir(task_id) / "output")
                    raise StepFailed(DISK_FULL_CAUSE, disk_full_message(iexec_out, full)) from exc
                # As the reference: a log that cannot be written is logged, the post-compute goes on.
                log.warning("%s: cannot write %s into the result: %s", task_id, name, exc)
        return True

    async def _developer_logs(self, task_id: str, spec: ContainerSpec, result: ContainerResult) -> None:
        """IEXEC_DEVELOPER_LOGGER_ENABLED: the folders and the whole logs of the run, as the reference prints them."""
        stdout, stderr = result.stdout, result.stderr
        if result.logs_saved and spec.log_dir is not None:
            stdout, stderr = await asyncio.to_thread(_read_logs, spec.log_dir)
        task_dir = self.task_dir(task_id)
        trees = await asyncio.to_thread(
            lambda: (directory_tree(task_dir / "input"), directory_tree(task_dir / "output" / "iexec_out"))
        )
        iexec_in = trees[0].replace("├── input/", "├── iexec_in/", 1)
        log.info(
            "Developer logs of docker run [chainTaskId:%s]%s",
            task_id,
            developer_block(iexec_in, trees[1], stdout, stderr),
        )

    async def contribute(
        self, task_id: str, result_digest: str, authorization: WorkerpoolAuthorization
    ) -> ChainReceipt:
        description = await self.describe(task_id)
        enclave: tuple[str, str] = (ZERO_ADDRESS, ZERO_BYTES32)
        if description.is_tee_task and self.tee is not None:
            computed = await self.tee.computed_file(task_id)
            enclave = self.tee.enclave_proof(task_id, computed, result_digest, authorization)

        async def send() -> ChainReceipt:
            receipt = await self._sender.contribute(
                task_id, result_digest, authorization.signature.value, *enclave
            )
            return ChainReceipt(block_number=receipt.block_number, tx_hash=receipt.tx_hash)

        return await self._transact("contribute", send, description.contribution_deadline)

    async def contributes_and_finalizes(self, task_id: str) -> bool:
        return (await self.describe(task_id)).is_eligible_to_contribute_and_finalize()

    async def contribute_and_finalize(
        self, task_id: str, result_digest: str, authorization: WorkerpoolAuthorization
    ) -> FinalizeOutcome:
        description = await self.describe(task_id)
        if self.tee is None:
            raise StepFailed(Cause.TEE_NOT_SUPPORTED, "this worker runs no TEE task")
        call = await self.tee.finalize_call(task_id, description, result_digest, authorization)

        async def send() -> ChainReceipt:
            receipt = await self._sender.contribute_and_finalize(
                task_id, call.result_digest, call.results, call.results_callback,
                call.enclave_challenge, call.enclave_signature, authorization.signature.value,
            )  # fmt: skip
            return ChainReceipt(block_number=receipt.block_number, tx_hash=receipt.tx_hash)

        receipt = await self._transact("contributeAndFinalize", send, description.contribution_deadline)
        log.info(
            "%s: contributed and finalized in block %d: %s", task_id, receipt.block_number, call.result_link
        )
        return FinalizeOutcome(
            receipt=receipt, result_link=call.result_link, callback_data=call.callback_data
        )

    async def reveal(self, task_id: str, result_digest: str, consensus_block: int) -> ChainReceipt:
        description = await self.describe(task_id)
        await self._wait_for_block(consensus_block)
        cause: ReplicateStatusCause | None = None
        # Revealed before a restart: no check would pass any more, the sender follows its journal.
        already = await self._own_contribution(task_id) is ChainContributionStatus.PROVED
        for attempt in range(0 if already else 3):
            cause = await self._checked(
                lambda: cannot_reveal_cause(self._chain, task_id, self._worker, result_digest)
            )
            if cause is None:
                break
            if attempt < 2:
                await asyncio.sleep(1.0)
        if cause is not None:
            raise StepFailed(cause, _precheck_message(cause, description))

        async def send() -> ChainReceipt:
            receipt = await self._sender.reveal(task_id, result_digest)
            return ChainReceipt(block_number=receipt.block_number, tx_hash=receipt.tx_hash)

        return await self._transact("reveal", send, description.final_deadline)

    async def upload(self, task_id: str, authorization: WorkerpoolAuthorization) -> UploadOutcome:
        description = await self.describe(task_id)
        record = await self._store.get(task_id)
        if record is None or not record.result_digest:
            raise StepFailed(Cause.RESULT_LINK_MISSING, "no result digest recorded for this task")
        params = description.deal_params
        callback = description.contains_callback()
        with failures_of(Stage.UPLOAD):
            link = await upload_result(
                self._session,
                task_id=task_id,
                authorization=authorization,
                account=self._account,
                zip_path=self._output(task_id) / ZIP_NAME,
                result_digest=record.result_digest,
                callback=description.callback if callback else None,
                storage_proxy=params.iexec_result_storage_proxy,
                result_repository_url=self._settings.result_repository_url,
                storage_provider=params.iexec_result_storage_provider,
                attempts=self._settings.upload_attempts,
                max_seconds=self._settings.upload_timeout,
                targets=self._settings.download_limits.targets,
            )
        return UploadOutcome(result_link=link, callback_data=record.callback_data if callback else None)

    async def purge(self, task_id: str) -> None:
        try:
            await self._engine.stop_and_remove(container_name(self._settings.worker_name, task_id))
        except ComputeError as exc:
            log.warning("%s: container not removed: %s", task_id, exc)
        if self.tee is not None:
            await self.tee.purge(task_id)
        await asyncio.to_thread(shutil.rmtree, self.task_dir(task_id), ignore_errors=True)
        self._descriptions.pop(task_id, None)

    async def purge_leftovers(self, keep: Collection[str], *, keep_path: Path | None = None) -> list[str]:
        """Delete every task folder but those of ``keep`` (iexec-worker ``cleanUnusedResultFolders`` at start).

        The reference keeps the folders of the replicates it recovers; this worker keeps those of the
        replicates it resumes from its store. Only folders go (files and links are not task folders), and
        never one holding ``keep_path``, the replicate store, wherever the operator put it. App images
        stay, as with the reference.
        """
        root = self._settings.task_root
        wanted = {task_id.lower() for task_id in keep}

        def purge() -> list[str]:
            if not root.is_dir():
                return []
            protected = keep_path.resolve() if keep_path is not None else None
            removed = []
            for entry in sorted(root.iterdir()):
                if entry.is_symlink() or not entry.is_dir() or entry.name.lower() in wanted:
                    continue
                if protected is not None and protected.is_relative_to(entry.resolve()):
                    continue
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
            return removed

        removed = await asyncio.to_thread(purge)
        if removed:
            log.info("deleted %d folder(s) of finished or unknown tasks in %s", len(removed), root)
        return removed

    # -- helpers ----------------------------------------------------------------------------------

    async def _transact(
        self, what: str, send: Callable[[], Awaitable[ChainReceipt]], deadline: int
    ) -> ChainReceipt:
        """Send once; on a node outage or a slow receipt, try again (the sender never signs twice)."""
        delay = 1.0
        while True:
            try:
                return await send()
            except TransactionRefused as exc:
                # The chain's verdict is already a cause of the protocol (causes.py passes it through).
                raise StepFailed(exc.cause, f"{what} refused before sending: {exc}") from exc
            except (ReceiptTimeout, TransientError) as exc:
                if time.time() + delay >= deadline:
                    raise StepFailed(
                        Cause.CHAIN_UNREACHABLE, f"{what} not confirmed before the deadline: {exc}"
                    ) from exc
                log.warning("%s not confirmed yet (%s); trying again in %.0f s", what, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 15.0)

    async def _wait_for_block(self, block: int, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while True:
            latest = await self._chain_call(self._chain.latest_block_number)
            if latest >= block:
                return
            if time.monotonic() > deadline:
                raise StepFailed(
                    Cause.BLOCK_NOT_REACHED, f"node at block {latest}, consensus at block {block}"
                )
            await asyncio.sleep(1.0)


_SENT_CONTRIBUTION = frozenset({ChainContributionStatus.CONTRIBUTED, ChainContributionStatus.PROVED})


class _PullLog:
    """Logs pull progress at most every 5 s, so a long pull shows it is alive."""

    def __init__(self, task_id: str, image: str) -> None:
        self._task_id = task_id
        self._image = image
        self._last = 0.0

    def __call__(self, progress: PullProgress) -> None:
        now = time.monotonic()
        if now - self._last < 5.0:
            return
        self._last = now
        log.info(
            "%s: pulling %s: %d/%d layers, %.1f/%.1f MB",
            self._task_id, self._image, progress.layers_done, progress.layers_total,
            progress.bytes_downloaded / 1e6, progress.bytes_total / 1e6,
        )  # fmt: skip


def _precheck_message(cause: ReplicateStatusCause, description: TaskDescription) -> str:
    hints = {
        Cause.STAKE_TOO_LOW: f"deposit at least {description.worker_stake} nRLC on the hub (iexec account deposit)",
        Cause.TASK_NOT_ACTIVE: "the task is not ACTIVE on chain any more",
        Cause.CONTRIBUTION_TIMEOUT: "the contribution deadline has passed",
        Cause.CONTRIBUTION_ALREADY_SET: "this wallet already contributed to the task",
        Cause.CHAIN_UNREACHABLE: "the blockchain node did not answer",
        Cause.REVEAL_TIMEOUT: "the reveal deadline has passed",
        Cause.CANNOT_REVEAL: "the task is not revealing or the contribution does not match the consensus",
    }
    return hints.get(cause, cause.value)


def _prepare_folders(task_dir: Path) -> None:
    (task_dir / "input").mkdir(parents=True, exist_ok=True)
    # Only the worker walks the task folder; the app sees its two mounts, whatever the modes above them.
    os.chmod(task_dir, 0o700)
    iexec_out = task_dir / "output" / "iexec_out"
    # A rerun after a restart starts from empty output and log folders: a digest must never mix two runs.
    for leftover in (iexec_out, task_dir / LOGS_DIR):
        if leftover.exists():
            shutil.rmtree(leftover)
    iexec_out.mkdir(parents=True)
    os.chmod(task_dir / "input", 0o755)


def free_bytes(folder: Path) -> int | None:
    """Bytes free for the worker on the file system of ``folder`` (or its nearest existing parent)."""
    for candidate in (folder, *folder.parents):
        try:
            return shutil.disk_usage(candidate).free
        except FileNotFoundError:
            continue
        except OSError:
            return None
    return None


def _reset_output(output: Path) -> None:
    iexec_out = output / "iexec_out"
    if iexec_out.exists():
        shutil.rmtree(iexec_out)
    iexec_out.mkdir(parents=True)


def _place_log(source: Path, target: Path) -> None:
    """Move a whole, non-empty log into iexec_out, replacing what the app left under that name.

    The helper renames without following a link the app may have put at ``target``, and refuses a folder.
    """
    if source.stat().st_size == 0:
        return
    move_into(target.parent, target.name, source)


def _read_logs(log_dir: Path) -> tuple[str, str]:
    return (
        (log_dir / STDOUT_FILE).read_text(encoding="utf-8"),
        (log_dir / STDERR_FILE).read_text(encoding="utf-8"),
    )


def directory_tree(folder: Path) -> str:
    """A folder drawn as iexec-common ``FileHelper.printDirectoryTree`` draws it; "" when it is missing."""
    if not folder.is_dir():
        return ""
    lines: list[str] = []

    def draw(path: Path, depth: int) -> None:
        lines.append("│   " * depth + "├── " + path.name + "/")
        for child in sorted(path.iterdir()):
            if child.is_dir() and not child.is_symlink():
                draw(child, depth + 1)
            else:
                lines.append("│   " * (depth + 1) + "├── " + child.name)

    draw(folder, 0)
    return "\n".join(lines) + "\n"


def developer_block(iexec_in_tree: str, iexec_out_tree: str, stdout: str, stderr: str) -> str:
    """The reference's developer-mode block (iexec-common ``LoggingUtils.prettifyDeveloperLogs``)."""
    banner = "#################### DEV MODE ####################\n"
    rule = "--------------------\n"
    return (
        "\n" + banner
        + "iexec_in folder\n" + rule + iexec_in_tree + "\n\n"
        + "iexec_out folder\n" + rule + iexec_out_tree + "\n\n"
        + "stdout\n" + rule + stdout + "\n\n"
        + "stderr\n" + rule + stderr + "\n"
        + banner + "\n"
    )  # fmt: skip
