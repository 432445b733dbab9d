"""The TEE path of a replicate: SCONE and Gramine (SGX) and TDX tasks, from START to contributeAndFinalize.

``TaskWork`` hands a task whose deal tag names a TEE framework to this module; everything TEE lives here.

- START (iexec-worker ``TaskManagerService.start``, ``TeeService``): the framework must be one this
  worker runs; the SMS is the one the scheduler named; for SGX the app's enclave configuration must be
  valid and within the heap limit, the SMS must serve this framework and version, and the pre/post-compute
  images must be pullable; SCONE starts its LAS. Then the worker's result-proxy token is pushed to the SMS
  and the session is created; TDX runs the secret provider agent for the session's environments.
  Unlike the reference, a token that cannot be obtained or pushed fails START with the real reason.
- COMPUTE (``ComputeManagerService``, ``PreComputeService``, ``AppComputeService``, ``PostComputeService``):
  pre-compute (dataset, input files) when needed, the app, post-compute, each with the SGX devices or
  the TDX session's environment. Pre and post run on the enclaves' network, where the ``worker`` host
  name is this worker's enclave endpoint; the app runs where standard apps run. The enclaves' exit codes
  and reported causes become the reference's causes, reported as COMPUTE_FAILED so the scheduler sees them.
- contributeAndFinalize: the computed file the post-compute enclave sent is checked against the task's
  enclave challenge (signature over this worker's resultHash and resultSeal) before anything is sent.

The session and properties of a task are kept in memory; after a restart they are made again from the
SMS URL kept in the store (the scheduler does not send it twice).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from eth_account.signers.local import LocalAccount

from worker.chain import TaskDescription
from worker.compute import (
    Bind,
    ComputeError,
    ContainerResult,
    ContainerSpec,
    DockerEngine,
    LasService,
    PullProgress,
    RegistryAuth,
    registry_of,
    task_labels,
)
from worker.compute.model import IEXEC_IN, IEXEC_OUT
from worker.protocol.errors import StepFailed
from worker.protocol.models import WorkerpoolAuthorization
from worker.protocol.status import ReplicateStatusCause
from worker.protocol.tee import (
    APP,
    POST_COMPUTE,
    PRE_COMPUTE,
    RESULT_IPFS_TOKEN,
    ComputeStage,
    TdxSession,
    TeeEnclaveConfiguration,
    TeeFramework,
    TeeServicesProperties,
    TeeSession,
    WorkflowError,
    enclave_signature_problem,
)
from worker.replicate.enclave_callbacks import COMPUTED_FILE, EnclaveCallbacks
from worker.replicate.store import ReplicateStore
from worker.result import ComputedFile, ResultError, read_computed_file
from worker.result.upload import (
    ETHEREUM_STORAGE,
    IPFS_STORAGE,
    ResultProxyError,
    get_ipfs_hash,
    get_token,
    result_link,
    result_proxy_url,
)
from worker.sms import SecretProvisioningFailed, SmsClient, SmsError, SmsSessionRefused, fetch_tdx_session

Cause = ReplicateStatusCause
log = logging.getLogger("iexec.worker.tee")

AESM_SOCKET = "/var/run/aesmd/aesm.socket"
DROPBOX_STORAGE = "dropbox"
IMAGE_PULL_TIMEOUT = 600.0


@dataclass(frozen=True)
class TeeWorkSettings:
    worker_name: str
    task_root: Path
    result_repository_url: str
    sgx_devices: tuple[str, ...] = ()
    """The SGX device nodes given to enclaves; empty when this worker has no SGX."""
    tdx_enabled: bool = False
    tdx_agent: Path = Path("/usr/local/bin/secret_provider_agent")
    max_heap_bytes: int = 8 * 1024**3
    scone_log_level: str = "debug"
    scone_show_version: bool = True
    las_port: int = 18766
    enclave_network: str = "iexec-worker-enclaves"
    worker_host: str | None = None
    """Address the pre/post-compute enclaves reach this worker's enclave endpoint at (host name
    ``worker``); None when ``worker`` resolves on the enclave network by other means."""
    tdx_extra_hosts: tuple[str, ...] = ()
    registries: tuple[RegistryAuth, ...] = ()

    @property
    def sgx_enabled(self) -> bool:
        return bool(self.sgx_devices)

    def runs(self, framework: TeeFramework) -> bool:
        return self.sgx_enabled if framework.needs_sgx else self.tdx_enabled


@dataclass(frozen=True)
class FinalizeCall:
    """What ``contributeAndFinalize`` sends, checked: the enclave's proof and the result link."""

    result_digest: str
    results: bytes
    results_callback: bytes
    enclave_challenge: str
    enclave_signature: str
    result_link: str
    callback_data: str | None


@dataclass
class _Prepared:
    framework: TeeFramework
    session: TeeSession
    properties: TeeServicesProperties | None = None
    enclave: TeeEnclaveConfiguration | None = None
    tdx: TdxSession | None = None


class TeeWork:
    def __init__(
        self,
        settings: TeeWorkSettings,
        *,
        engine: DockerEngine,
        session: aiohttp.ClientSession,
        account: LocalAccount,
        store: ReplicateStore,
        callbacks: EnclaveCallbacks,
        las: LasService | None = None,
        on_enclave: Callable[[ComputeStage, str, float], None] | None = None,
    ) -> None:
        """``on_enclave(stage, task_id, seconds)`` is told how long each pre/post-compute enclave ran."""
        self._settings = settings
        self._engine = engine
        self._session = session
        self._account = account
        self._worker = account.address.lower()
        self._store = store
        self.callbacks = callbacks
        self._las = las
        self._on_enclave = on_enclave
        self._prepared: dict[str, _Prepared] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # -- START ----------------------------------------------------------------------------------

    async def start(self, task_id: str, description: TaskDescription) -> None:
        async with self._locks.setdefault(task_id, asyncio.Lock()):
            self._prepared[task_id] = await self._prepare(task_id, description)

    async def _prepared_for(self, task_id: str, description: TaskDescription) -> _Prepared:
        async with self._locks.setdefault(task_id, asyncio.Lock()):
            prepared = self._prepared.get(task_id)
            if prepared is None:
                log.info("%s: no TEE session in memory (worker restarted): creating it again", task_id)
                prepared = self._prepared[task_id] = await self._prepare(task_id, description)
            return prepared

    async def _prepare(self, task_id: str, description: TaskDescription) -> _Prepared:
        framework = description.tee_framework
        if framework is None:
            raise StepFailed(
                Cause.TEE_NOT_SUPPORTED,
                f"the deal's tag {description.tag} asks for TEE but names no framework",
            )
        if not self._settings.runs(framework):
            what = (
                "SGX (IEXEC_WORKER_SGX_DRIVER_MODE)"
                if framework.needs_sgx
                else "TDX (IEXEC_WORKER_TDX_ENABLED)"
            )
            raise StepFailed(
                Cause.TEE_NOT_SUPPORTED, f"{framework.value} task, and this worker has no {what}"
            )
        record = await self._store.get(task_id)
        if record is None or not record.sms_url:
            raise StepFailed(Cause.UNKNOWN_SMS, "the scheduler gave no SMS URL with this TEE task")
        sms = SmsClient(self._session, record.sms_url, self._account)
        authorization = WorkerpoolAuthorization.model_validate(record.authorization)
        enclave: TeeEnclaveConfiguration | None = None
        properties: TeeServicesProperties | None = None
        try:
            served = await sms.framework()
        except SmsError as exc:
            raise StepFailed(Cause.GET_TEE_SERVICES_CONFIGURATION_FAILED, str(exc)) from exc
        if served is not framework:
            raise StepFailed(
                Cause.GET_TEE_SERVICES_CONFIGURATION_FAILED,
                f"SMS is configured for another TEE framework ({served.value}, task needs {framework.value})",
            )
        if framework.needs_sgx:
            enclave = self._enclave_of(description)
            properties = await self._properties(sms, framework, enclave)
            for stage, image in (
                ("preComputeImage", properties.pre_compute_properties.image),
                ("postComputeImage", properties.post_compute_properties.image),
            ):
                await self._pull(image, Cause.GET_TEE_SERVICES_CONFIGURATION_FAILED, stage)
            if framework is TeeFramework.SCONE:
                await self._las_of(properties)
        await self._push_result_token(sms, description, authorization)
        try:
            session = await sms.create_session(authorization)
        except SmsSessionRefused as exc:
            raise StepFailed(Cause(f"TEE_SESSION_GENERATION_{exc.error.value}"), str(exc)) from exc
        except SmsError as exc:
            raise StepFailed(Cause.TEE_SESSION_GENERATION_UNKNOWN_ISSUE, str(exc)) from exc
        log.info("%s: %s session %s created on %s", task_id, framework.value, session.session_id, sms.url)
        prepared = _Prepared(framework, session, properties, enclave)
        if framework is TeeFramework.TDX:
            prepared.tdx = await self._tdx_session(task_id, session)
        return prepared

    def _enclave_of(self, description: TaskDescription) -> TeeEnclaveConfiguration:
        enclave = TeeEnclaveConfiguration.parse(description.app_mrenclave)
        if enclave is None:
            raise StepFailed(
                Cause.PRE_COMPUTE_MISSING_ENCLAVE_CONFIGURATION,
                f"app {description.app_address} has no enclave configuration (mrenclave) for an SGX task",
            )
        if problems := enclave.problems():
            raise StepFailed(
                Cause.PRE_COMPUTE_INVALID_ENCLAVE_CONFIGURATION,
                f"app {description.app_address}: enclave configuration invalid ({'; '.join(problems)})",
            )
        if enclave.heap_size > self._settings.max_heap_bytes:
            raise StepFailed(
                Cause.PRE_COMPUTE_INVALID_ENCLAVE_HEAP_CONFIGURATION,
                f"app enclave heap {enclave.heap_size} bytes exceeds IEXEC_WORKER_TEE_COMPUTE_MAX_HEAP_SIZE_GB "
                f"({self._settings.max_heap_bytes} bytes)",
            )
        return enclave

    async def _properties(
        self, sms: SmsClient, framework: TeeFramework, enclave: TeeEnclaveConfiguration
    ) -> TeeServicesProperties:
        try:
            properties = await sms.properties(framework, enclave.version)
        except SmsError as exc:
            raise StepFailed(Cause.GET_TEE_SERVICES_CONFIGURATION_FAILED, str(exc)) from exc
        if properties is None:
            raise StepFailed(
                Cause.GET_TEE_SERVICES_CONFIGURATION_FAILED,
                f"SMS {sms.url} has no {framework.value} pipeline for enclave version {enclave.version!r}",
            )
        return properties

    async def _pull(self, image: str, cause: ReplicateStatusCause, what: str) -> None:
        if not image:
            raise StepFailed(cause, f"no {what} given by the SMS")
        auth = next((r for r in self._settings.registries if r.server == registry_of(image)), None)
        last = 0.0

        def progress(p: PullProgress) -> None:  # a long pull shows it is alive, every 5 s at most
            nonlocal last
            if time.monotonic() - last >= 5.0:
                last = time.monotonic()
                log.info("pulling %s (%s): %d/%d layers, %.1f MB", image, what, p.layers_done, p.layers_total,
                         p.bytes_downloaded / 1e6)  # fmt: skip

        try:
            await self._engine.pull(image, auth=auth, pull_timeout=IMAGE_PULL_TIMEOUT, on_progress=progress)
        except ComputeError as exc:
            raise StepFailed(cause, f"Failed to download image {image} ({what}): {exc}") from exc

    async def _las_of(self, properties: TeeServicesProperties) -> str:
        if self._las is None or not properties.las_image:
            raise StepFailed(Cause.TEE_PREPARATION_FAILED, "no SCONE LAS image given by the SMS")
        try:
            return await self._las.ensure(properties.las_image)
        except ComputeError as exc:
            raise StepFailed(Cause.TEE_PREPARATION_FAILED, str(exc)) from exc

    async def _push_result_token(
        self, sms: SmsClient, description: TaskDescription, authorization: WorkerpoolAuthorization
    ) -> None:
        """The worker's result-proxy token, as a web2 secret of the worker: post-compute uploads with it."""
        if description.contains_callback():
            return  # the result goes on chain, not to a proxy
        cause = Cause.TEE_SESSION_GENERATION_POST_COMPUTE_GET_STORAGE_TOKENS_FAILED
        try:
            proxy = result_proxy_url(
                description.deal_params.iexec_result_storage_proxy, self._settings.result_repository_url
            )
            token = await get_token(self._session, proxy, authorization, self._account)
        except (ResultError, ResultProxyError) as exc:
            raise StepFailed(cause, f"no result proxy token for the post-compute enclave: {exc}") from exc
        try:
            await sms.push_web2_secret(RESULT_IPFS_TOKEN, token)
        except SmsError as exc:
            raise StepFailed(cause, f"the result proxy token cannot be given to the SMS: {exc}") from exc

    async def _tdx_session(self, task_id: str, session: TeeSession) -> TdxSession:
        try:
            tdx = await fetch_tdx_session(
                self._settings.tdx_agent,
                provisioning_url=session.secret_provisioning_url,
                session_id=session.session_id,
                task_id=task_id,
                task_dir=self._settings.task_root / task_id,
            )
        except SecretProvisioningFailed as exc:
            raise StepFailed(
                Cause.TEE_SESSION_GENERATION_SECURE_SESSION_STORAGE_CALL_FAILED, str(exc)
            ) from exc
        post = tdx.service(POST_COMPUTE)
        if post is None:
            raise StepFailed(
                Cause.TEE_SESSION_GENERATION_SECURE_SESSION_STORAGE_CALL_FAILED,
                "the TDX session has no post-compute service",
            )
        pre = tdx.service(PRE_COMPUTE)
        await self._pull(post.image_name, Cause.GET_TEE_SERVICES_CONFIGURATION_FAILED, "postComputeImage")
        if pre is not None:
            await self._pull(pre.image_name, Cause.GET_TEE_SERVICES_CONFIGURATION_FAILED, "preComputeImage")
        return tdx

    # -- COMPUTE --------------------------------------------------------------------------------

    async def compute(
        self,
        task_id: str,
        description: TaskDescription,
        app_spec: ContainerSpec,
        place_logs: Callable[[ContainerResult], Awaitable[None]],
    ) -> tuple[ContainerResult, ComputedFile]:
        """Pre-compute, app and post-compute; returns the app's run and the computed file the enclave sent."""
        prepared = await self._prepared_for(task_id, description)
        task_dir = self._settings.task_root / task_id
        output = task_dir / "output"
        await asyncio.to_thread(_fresh_folders, task_dir)
        las = (
            await self._las_of(prepared.properties)
            if prepared.framework is TeeFramework.SCONE and prepared.properties
            else None
        )
        self.callbacks.forget(task_id)
        timeout = float(description.max_execution_time)
        labels = task_labels(self._settings.worker_name, task_id)

        if description.requires_pre_compute():
            pre = self._stage_spec(prepared, PRE_COMPUTE, task_id, timeout, labels, las)
            pre = dataclasses.replace(pre, binds=(Bind(task_dir / "input", IEXEC_IN),))
            await self._run_enclave(ComputeStage.PRE, task_id, pre)

        app = dataclasses.replace(
            app_spec,
            env=self._env(prepared, APP, las, heap=prepared.enclave.heap_size if prepared.enclave else 0),
            devices=self._devices(prepared),
            binds=(*app_spec.binds, *self._aesm_binds(prepared)),
        )
        log.info(
            "%s: running TEE app %s (%s, limit %d s)",
            task_id,
            app.image,
            prepared.framework.value,
            int(timeout),
        )
        try:
            result = await self._engine.run(app)
        except ComputeError as exc:
            raise StepFailed(Cause.APP_NOT_FOUND_LOCALLY, f"cannot run {app.image}: {exc}") from exc
        if result.timed_out:
            raise StepFailed(
                Cause.APP_COMPUTE_TIMEOUT,
                f"app ran past the category's max execution time ({description.max_execution_time} s) and was killed",
            )
        if result.exit_code != 0:
            tail = result.stderr.strip().splitlines()[-1:] or [""]
            raise StepFailed(
                Cause.APP_COMPUTE_FAILED, f"app exited with code {result.exit_code}: {tail[0][:300]}"
            )
        await place_logs(result)  # the app's logs join the result, as after a standard run

        post = self._stage_spec(prepared, POST_COMPUTE, task_id, timeout, labels, las)
        post = dataclasses.replace(
            post, binds=(Bind(output / "iexec_out", IEXEC_OUT), *self._aesm_binds(prepared))
        )
        await self._run_enclave(ComputeStage.POST, task_id, post)
        try:
            computed = await asyncio.to_thread(read_computed_file, output / COMPUTED_FILE)
        except ResultError as exc:
            raise StepFailed(
                Cause.POST_COMPUTE_COMPUTED_FILE_NOT_FOUND,
                f"the post-compute enclave ended without sending its computed file ({exc})",
            ) from exc
        if not computed.result_digest:
            raise StepFailed(
                Cause.POST_COMPUTE_RESULT_DIGEST_COMPUTATION_FAILED, "the computed file has no digest"
            )
        return result, computed

    def _devices(self, prepared: _Prepared) -> tuple[str, ...]:
        return self._settings.sgx_devices if prepared.framework.needs_sgx else ()

    def _aesm_binds(self, prepared: _Prepared) -> tuple[Bind, ...]:
        if prepared.framework is not TeeFramework.GRAMINE:
            return ()
        if not os.path.exists(AESM_SOCKET):
            log.warning(
                "Gramine enclaves need the aesmd socket %s, which this host does not have", AESM_SOCKET
            )
            return ()
        return (Bind(Path(AESM_SOCKET), AESM_SOCKET),)

    def _env(self, prepared: _Prepared, service: str, las: str | None, *, heap: int) -> dict[str, str]:
        session = prepared.session
        if prepared.framework is TeeFramework.SCONE:
            return {
                "SCONE_CAS_ADDR": session.secret_provisioning_url,
                "SCONE_LAS_ADDR": f"{las}:{self._settings.las_port}",
                "SCONE_CONFIG_ID": f"{session.session_id}/{service}",
                "SCONE_HEAP": str(heap),
                "SCONE_LOG": self._settings.scone_log_level,
                "SCONE_VERSION": "1" if self._settings.scone_show_version else "0",
            }
        if prepared.framework is TeeFramework.GRAMINE:
            return {"sps": session.secret_provisioning_url, "session": session.session_id}
        found = prepared.tdx.service(service) if prepared.tdx else None
        return dict(found.environment) if found else {}

    def _stage_spec(
        self,
        prepared: _Prepared,
        service: str,
        task_id: str,
        timeout: float,
        labels: dict[str, str],
        las: str | None,
    ) -> ContainerSpec:
        properties = prepared.properties
        entrypoint: str | None = None
        heap = 0
        if properties is not None:
            stage = (
                properties.pre_compute_properties
                if service == PRE_COMPUTE
                else properties.post_compute_properties
            )
            image, entrypoint, heap = stage.image, stage.entrypoint, stage.heap_size_in_bytes
        else:
            found = prepared.tdx.service(service) if prepared.tdx else None
            image = found.image_name if found else ""
        extra_hosts: list[str] = []
        if self._settings.worker_host:
            extra_hosts.append(f"worker:{self._settings.worker_host}")
        if prepared.framework is TeeFramework.TDX:
            extra_hosts += [h for h in self._settings.tdx_extra_hosts if not h.startswith("worker:")]
        return ContainerSpec(
            name=f"{self._settings.worker_name}-{task_id}-tee-{service}",
            image=image or f"missing-{service}-image",
            timeout=timeout,
            entrypoint=(entrypoint,) if entrypoint else None,
            env=self._env(prepared, service, las, heap=heap),
            labels=labels,
            devices=self._devices(prepared),
            network=self._settings.enclave_network,
            extra_hosts=tuple(extra_hosts),
        )

    async def _run_enclave(self, stage: ComputeStage, task_id: str, spec: ContainerSpec) -> None:
        prefix = "PRE" if stage is ComputeStage.PRE else "POST"
        if not await self._image_present(spec.image):
            raise StepFailed(
                Cause(f"{prefix}_COMPUTE_IMAGE_MISSING"),
                f"{stage.value}-compute image {spec.image} is not on this host",
            )
        log.info("%s: running %s-compute enclave %s", task_id, stage.value, spec.image)
        try:
            result = await self._engine.run(spec)
        except ComputeError as exc:
            raise StepFailed(
                Cause(f"{prefix}_COMPUTE_FAILED_UNKNOWN_ISSUE"), f"{stage.value}-compute cannot run: {exc}"
            ) from exc
        if self._on_enclave is not None:
            self._on_enclave(stage, task_id, result.duration)
        reported = self.callbacks.take_causes(stage, task_id)
        failure = stage_failure(stage, result, reported)
        if failure is not None:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            log.warning(
                "%s: %s-compute failed: %s; last output: %s", task_id, stage.value, failure, " | ".join(tail)
            )
            raise failure

    async def _image_present(self, image: str) -> bool:
        try:
            return await self._engine.image_exists(image)
        except ComputeError:
            return False

    # -- contributeAndFinalize ------------------------------------------------------------------

    async def finalize_call(
        self,
        task_id: str,
        description: TaskDescription,
        result_digest: str,
        authorization: WorkerpoolAuthorization,
    ) -> FinalizeCall:
        """The checked arguments of ``contributeAndFinalize``; nothing is sent when a check fails."""
        computed = await self.computed_file(task_id)
        challenge, signature = self.enclave_proof(task_id, computed, result_digest, authorization)
        link = await self._result_link(task_id, description)
        callback_data = computed.callback_data if description.contains_callback() else None
        callback = bytes.fromhex((callback_data or "").removeprefix("0x")) if callback_data else b""
        return FinalizeCall(
            result_digest=result_digest,
            results=link.encode(),
            results_callback=callback,
            enclave_challenge=challenge,
            enclave_signature=signature,
            result_link=link,
            callback_data=callback_data,
        )

    async def computed_file(self, task_id: str) -> ComputedFile:
        path = self._settings.task_root / task_id / "output" / COMPUTED_FILE
        try:
            return await asyncio.to_thread(read_computed_file, path)
        except ResultError as exc:
            raise StepFailed(
                Cause.DETERMINISM_HASH_NOT_FOUND, f"no computed file from the enclave: {exc}"
            ) from exc

    def enclave_proof(
        self, task_id: str, computed: ComputedFile, result_digest: str, authorization: WorkerpoolAuthorization
    ) -> tuple[str, str]:
        """The enclave challenge and signature to send, after checking the signature is the enclave's."""
        if (computed.result_digest or "").lower() != result_digest.lower():
            raise StepFailed(
                Cause.ENCLAVE_SIGNATURE_NOT_FOUND, "the computed file's digest is not the one computed"
            )
        problem = enclave_signature_problem(
            task_id, self._worker, result_digest, computed.enclave_signature, authorization.enclave_challenge
        )
        if problem is not None:
            log.error("%s: enclave signature refused, nothing sent on chain: %s", task_id, problem)
            raise StepFailed(Cause.ENCLAVE_SIGNATURE_NOT_FOUND, problem)
        return authorization.enclave_challenge, str(computed.enclave_signature)

    async def _result_link(self, task_id: str, description: TaskDescription) -> str:
        """The link iexec-worker ``ResultService`` writes for a result the post-compute enclave uploaded."""
        if description.contains_callback():
            return result_link(ETHEREUM_STORAGE, description.callback.lower())
        provider = (description.deal_params.iexec_result_storage_provider or IPFS_STORAGE).strip()
        if provider == DROPBOX_STORAGE:
            return result_link(DROPBOX_STORAGE, f"/results/{task_id}")
        if provider != IPFS_STORAGE:
            return ""
        try:
            proxy = result_proxy_url(
                description.deal_params.iexec_result_storage_proxy, self._settings.result_repository_url
            )
            ipfs_hash = await get_ipfs_hash(self._session, proxy, task_id)
        except (ResultError, ResultProxyError) as exc:
            raise StepFailed(Cause.RESULT_LINK_MISSING, f"the result link cannot be read: {exc}") from exc
        if ipfs_hash is None:
            raise StepFailed(
                Cause.RESULT_LINK_MISSING,
                "the result proxy has no result of this task: the post-compute upload failed",
            )
        return result_link(IPFS_STORAGE, f"/ipfs/{ipfs_hash}")

    # -- COMPLETE / ABORT -----------------------------------------------------------------------

    async def purge(self, task_id: str) -> None:
        for service in (PRE_COMPUTE, POST_COMPUTE):
            try:
                await self._engine.stop_and_remove(f"{self._settings.worker_name}-{task_id}-tee-{service}")
            except ComputeError as exc:
                log.warning("%s: %s container not removed: %s", task_id, service, exc)
        self._prepared.pop(task_id, None)
        self._locks.pop(task_id, None)
        self.callbacks.forget(task_id)


def stage_failure(
    stage: ComputeStage, result: ContainerResult, reported: list[WorkflowError]
) -> StepFailed | None:
    """The cause of a pre/post-compute run, from its exit code and the causes its enclave reported."""
    prefix = "PRE" if stage is ComputeStage.PRE else "POST"
    unknown = Cause(f"{prefix}_COMPUTE_FAILED_UNKNOWN_ISSUE")
    if result.timed_out:
        return StepFailed(
            Cause(f"{prefix}_COMPUTE_TIMEOUT"), f"{stage.value}-compute ran past the max execution time"
        )
    if result.exit_code == 0:
        return None
    if result.exit_code == 1 and reported:
        first = reported[0].cause
        cause = Cause(first) if first in Cause.__members__ else unknown
        text = "; ".join(f"{e.cause}: {e.message}" if e.message else e.cause for e in reported)
        return StepFailed(cause, f"{stage.value}-compute enclave reported {text}")
    if result.exit_code == 2:
        return StepFailed(
            Cause(f"{prefix}_COMPUTE_EXIT_REPORTING_FAILED"),
            f"{stage.value}-compute could not report its failure",
        )
    if result.exit_code == 3:
        return StepFailed(Cause(f"{prefix}_COMPUTE_TASK_ID_MISSING"), f"{stage.value}-compute got no task id")
    return StepFailed(unknown, f"{stage.value}-compute exited with code {result.exit_code}")


def _fresh_folders(task_dir: Path) -> None:
    input_dir = task_dir / "input"
    if input_dir.exists():  # a rerun after a restart: pre-compute fills it again
        shutil.rmtree(input_dir)
    input_dir.mkdir(parents=True)
    os.chmod(input_dir, 0o777)  # the pre-compute enclave writes here, as whatever user its image runs
    output = task_dir / "output"
    iexec_out = output / "iexec_out"
    if iexec_out.exists():
        shutil.rmtree(iexec_out)
    iexec_out.mkdir(parents=True)
    os.chmod(iexec_out, 0o777)
    (output / COMPUTED_FILE).unlink(missing_ok=True)
