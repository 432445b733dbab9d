"""An EMULATED Secret Management Service (SMS) for one TEE framework, with its secret provisioning.

It speaks the real SMS's API, as read in iexec-sms (``TeeController``, ``SecretController``,
``AppComputeSecretController``, ``RequesterComputeSecretController``, ``AuthorizationService``,
``SecretSessionBaseService``, ``TeeChallengeService``): the framework and the TEE services properties; the
enclave challenge of a task (a fresh secp256k1 key per task, asked by the scheduler with the workerpool
owner's signature); sessions (asked by the worker with its signature of the workerpool authorization,
checked against the chain) holding each enclave's environment; web2, web3, app-developer and requester
secrets with the reference's signatures, size limit and answers.

What only an enclave platform does is emulated, and named so: the SCONE CAS, the Gramine SPS and the TDX
secret broker are three routes of this same server (``/emulated-cas``, ``/emulated-sps``,
``/emulated-tdx``) that hand the session's environment to whoever asks for the session id, without any
attestation. Secrets and keys live in memory, unencrypted. ``faults`` lets a test make the emulated
enclaves of a task misbehave (``devnet.tee.enclave``).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import string
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from eth_account import Account
from eth_account.signers.local import LocalAccount

from worker.chain import ChainClient, TaskDescription
from worker.compute import app_environment
from worker.protocol.crypto import authorization_hash, checksum, keccak_hex, recover_eip191, to_hex
from worker.protocol.errors import WorkerError
from worker.protocol.models import WorkerpoolAuthorization
from worker.protocol.status import ChainTaskStatus
from worker.protocol.tee import (
    APP,
    POST_COMPUTE,
    PRE_COMPUTE,
    RESULT_DROPBOX_TOKEN,
    RESULT_ENCRYPTION_PUBLIC_KEY,
    RESULT_IPFS_TOKEN,
    RESULT_PROXY_URL,
    SMS_DOMAIN,
    TeeEnclaveConfiguration,
    TeeFramework,
    TeeSessionGenerationError,
    challenge_request_hash,
    web2_secret_hash,
)

log = logging.getLogger(__name__)

SECRET_MAX_SIZE = 4096
_KEY = re.compile(r"^[\w-]{1,64}$")
E = TeeSessionGenerationError


@dataclass(frozen=True)
class StageImage:
    image: str
    entrypoint: str | None
    heap_size: int = 1024**3

    @property
    def fingerprint(self) -> str:
        return keccak_hex(self.image.encode().hex())[2:]


@dataclass(frozen=True)
class Pipeline:
    """``tee.worker.pipelines[]`` of the SMS's configuration: the enclaves of one framework version."""

    version: str
    pre_compute: StageImage
    post_compute: StageImage


class _Refused(Exception):
    def __init__(self, status: int, body: Any = "") -> None:
        super().__init__(str(body))
        self.status = status
        self.body = body


@dataclass
class _Session:
    task_id: str
    environments: dict[str, dict[str, str]]
    images: dict[str, tuple[str, str]] = field(default_factory=dict)  # service -> (image, fingerprint)


class EmulatedSms:
    def __init__(
        self,
        framework: TeeFramework,
        chain: ChainClient,
        pipelines: list[Pipeline],
        las_image: str | None = None,
    ) -> None:
        self.framework = framework
        self._chain = chain
        self._pipelines = pipelines
        self._las_image = las_image
        self.web2: dict[tuple[str, str], str] = {}
        self.web3: dict[str, str] = {}
        self.app_secrets: dict[str, str] = {}
        self.requester_secrets: dict[tuple[str, str], str] = {}
        self.challenges: dict[str, LocalAccount] = {}
        self.sessions: dict[str, _Session] = {}
        self.faults: dict[str, str] = {}
        """task id -> EMULATED_ENCLAVE_FAULT given to its post-compute enclave (tests)."""
        self.address = ""
        """``host:port`` once served; enclaves reach the emulated provisioning there."""

    # -- wiring -------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_answer_refusals], client_max_size=64 * 1024)
        app.add_routes([
            web.get("/tee/framework", self.get_framework),
            web.get("/tee/properties/{framework}", self.get_properties),
            web.get("/tee/properties/{framework}/{version}", self.get_properties),
            web.post("/tee/challenges/{task_id}", self.post_challenge),
            web.post("/tee/sessions", self.post_session),
            web.head("/secrets/web2", self.head_web2),
            web.post("/secrets/web2", self.put_web2),
            web.put("/secrets/web2", self.put_web2),
            web.head("/secrets/web3", self.head_web3),
            web.post("/secrets/web3", self.post_web3),
            web.head("/apps/{app}/secrets", self.head_app_secret),
            web.post("/apps/{app}/secrets", self.post_app_secret),
            web.head("/requesters/{requester}/secrets/{key}", self.head_requester_secret),
            web.post("/requesters/{requester}/secrets/{key}", self.post_requester_secret),
            web.get("/emulated-cas/sessions/{session_id}/{service}", self.emulated_cas),
            web.get("/emulated-sps/sessions/{session_id}/{service}", self.emulated_sps),
            web.get("/emulated-tdx/sessions/{session_id}", self.emulated_tdx),
        ])  # fmt: skip
        return app

    @property
    def provisioning_url(self) -> str:
        """``secretProvisioningUrl``: SCONE and Gramine give ``host:port`` (no scheme), TDX a URL."""
        if self.framework is TeeFramework.TDX:
            return f"http://{self.address}/emulated-tdx"
        return self.address

    # -- TEE configuration --------------------------------------------------------------------

    async def get_framework(self, _: web.Request) -> web.Response:
        return web.json_response(self.framework.value)

    async def get_properties(self, request: web.Request) -> web.Response:
        if request.match_info["framework"].upper() != self.framework.value:
            raise _Refused(409)
        version = request.match_info.get("version")
        pipeline = self._pipeline(version)
        if pipeline is None:
            raise _Refused(404)
        body: dict[str, Any] = {
            "teeFramework": self.framework.value,
            "teeFrameworkVersion": pipeline.version,
            "preComputeProperties": _stage(pipeline.pre_compute),
            "postComputeProperties": _stage(pipeline.post_compute),
        }
        if self.framework is TeeFramework.SCONE:
            body["lasImage"] = self._las_image
        return web.json_response(body)

    def _pipeline(self, version: str | None) -> Pipeline | None:
        if version is None or self.framework is TeeFramework.TDX:
            return self._pipelines[0]
        return next((p for p in self._pipelines if p.version == version), None)

    # -- challenges ---------------------------------------------------------------------------

    async def post_challenge(self, request: web.Request) -> web.Response:
        task_id = request.match_info["task_id"].lower()
        signature = request.headers.get("Authorization", "")
        try:
            description = await self._chain.task_description(task_id)
            task = await self._chain.task(task_id)
        except WorkerError as exc:
            raise _Refused(404, f"task {task_id}: {exc}") from exc
        if task.status is not ChainTaskStatus.ACTIVE or description.tee_framework is None:
            raise _Refused(401)
        if _signer(challenge_request_hash(task_id), signature) != description.workerpool_owner.lower():
            raise _Refused(401)
        return web.Response(text=self._challenge(task_id).address)

    def _challenge(self, task_id: str) -> LocalAccount:
        key = self.challenges.get(task_id)
        if key is None:
            key = self.challenges[task_id] = Account.create()
        return key

    # -- sessions -----------------------------------------------------------------------------

    async def post_session(self, request: web.Request) -> web.Response:
        try:
            auth = WorkerpoolAuthorization.model_validate_json(await request.read())
        except ValueError:
            raise _Refused(401, {"error": E.INVALID_AUTHORIZATION.value}) from None
        auth_hash = authorization_hash(auth.worker_wallet, auth.chain_task_id, auth.enclave_challenge)
        if _signer(auth_hash, request.headers.get("Authorization", "")) != auth.worker_wallet.lower():
            raise _Refused(401, {"error": E.INVALID_AUTHORIZATION.value})
        description = await self._authorized(auth, auth_hash)
        try:
            session_id, session = self._session(auth, description)
        except _SessionError as exc:
            log.info(
                "emulated %s SMS: session of task %s refused: %s",
                self.framework.value,
                auth.chain_task_id,
                exc,
            )
            raise _Refused(500, {"error": exc.error.value}) from exc
        self.sessions[session_id] = session
        log.info(
            "emulated %s SMS: session %s for task %s", self.framework.value, session_id, auth.chain_task_id
        )
        return web.json_response(
            {"data": {"sessionId": session_id, "secretProvisioningUrl": self.provisioning_url}}
        )

    async def _authorized(self, auth: WorkerpoolAuthorization, auth_hash: str) -> TaskDescription:
        def refuse(error: TeeSessionGenerationError) -> _Refused:
            return _Refused(401, {"error": error.value})

        if not auth.chain_task_id:
            raise refuse(E.EXECUTION_NOT_AUTHORIZED_EMPTY_PARAMS_UNAUTHORIZED)
        try:
            task = await self._chain.task(auth.chain_task_id)
        except WorkerError:
            raise refuse(E.EXECUTION_NOT_AUTHORIZED_GET_CHAIN_TASK_FAILED) from None
        if task.status is not ChainTaskStatus.ACTIVE:
            raise refuse(E.EXECUTION_NOT_AUTHORIZED_TASK_NOT_ACTIVE)
        try:
            description = await self._chain.task_description(auth.chain_task_id)
        except WorkerError:
            raise refuse(E.EXECUTION_NOT_AUTHORIZED_GET_CHAIN_DEAL_FAILED) from None
        if description.tee_framework is None:
            raise refuse(E.EXECUTION_NOT_AUTHORIZED_NO_MATCH_ONCHAIN_TYPE)
        if _signer(auth_hash, auth.signature.value) != description.workerpool_owner.lower():
            raise refuse(E.EXECUTION_NOT_AUTHORIZED_INVALID_SIGNATURE)
        return description

    def _session(self, auth: WorkerpoolAuthorization, description: TaskDescription) -> tuple[str, _Session]:
        task_id = description.task_id.lower()
        session_id = (
            "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(10))
            + "0000"
            + task_id
        )
        if description.tee_framework is not self.framework:
            raise _SessionError(E.SECURE_SESSION_NO_TEE_FRAMEWORK, "this SMS serves another framework")
        pipeline = self._pipelines[0]
        if self.framework.needs_sgx:
            enclave = TeeEnclaveConfiguration.parse(description.app_mrenclave)
            if enclave is None:
                raise _SessionError(E.APP_COMPUTE_NO_ENCLAVE_CONFIG, "the app has no enclave configuration")
            found = self._pipeline(enclave.version)
            if found is None or enclave.problems():
                raise _SessionError(E.APP_COMPUTE_INVALID_ENCLAVE_CONFIG, "TEE framework version unsupported")
            pipeline = found
        if not auth.worker_wallet:
            raise _SessionError(E.GET_SIGNATURE_TOKENS_FAILED_EMPTY_WORKER_ADDRESS, "no worker address")
        if not auth.enclave_challenge or int(auth.enclave_challenge, 16) == 0:
            raise _SessionError(
                E.GET_SIGNATURE_TOKENS_FAILED_EMPTY_PUBLIC_ENCLAVE_CHALLENGE, "no enclave challenge"
            )
        key = self._challenge(task_id)
        tokens = {
            "IEXEC_TASK_ID": task_id,
            "SIGN_WORKER_ADDRESS": checksum(auth.worker_wallet),
            "SIGN_TEE_CHALLENGE_PRIVATE_KEY": to_hex(bytes(key.key)),
        }
        session = _Session(task_id, {})
        if description.requires_pre_compute():
            session.environments[PRE_COMPUTE] = {**self._pre_compute(description), **tokens}
            session.images[PRE_COMPUTE] = (pipeline.pre_compute.image, pipeline.pre_compute.fingerprint)
        session.environments[APP] = self._app(description)
        session.images[APP] = (description.app_uri, description.app_checksum.removeprefix("0x"))
        post = {**self._post_compute(description, auth.worker_wallet), **tokens}
        if fault := self.faults.get(task_id):
            post["EMULATED_ENCLAVE_FAULT"] = fault
        session.environments[POST_COMPUTE] = post
        session.images[POST_COMPUTE] = (pipeline.post_compute.image, pipeline.post_compute.fingerprint)
        return session_id, session

    def _pre_compute(self, d: TaskDescription) -> dict[str, str]:
        env = {
            "IEXEC_PRE_COMPUTE_OUT": "/iexec_in",
            "IS_DATASET_REQUIRED": "true" if d.contains_dataset() else "false",
            "IEXEC_DEAL_ID": d.deal_id,
            "IEXEC_TASK_INDEX": str(d.bot_index),
            "IEXEC_INPUT_FILES_NUMBER": str(len(d.deal_params.iexec_input_files)),
        }
        if d.contains_dataset():
            key = self.web3.get(d.dataset_address.lower())
            if key is None:
                raise _SessionError(E.PRE_COMPUTE_GET_DATASET_SECRET_FAILED, "no key pushed for the dataset")
            env.update({
                "IEXEC_DATASET_KEY": key, "IEXEC_DATASET_URL": d.dataset_uri,
                "IEXEC_DATASET_FILENAME": d.dataset_address, "IEXEC_DATASET_CHECKSUM": d.dataset_checksum,
            })  # fmt: skip
        if d.deal_params.iexec_input_files:
            env["IEXEC_INPUT_FILES_FOLDER"] = "/iexec_in"
            for number, url in enumerate(d.deal_params.iexec_input_files, start=1):
                env[f"IEXEC_INPUT_FILE_URL_{number}"] = url
        return env

    def _app(self, d: TaskDescription) -> dict[str, str]:
        env = app_environment(
            deal_id=d.deal_id, chain_task_id=d.task_id.lower(), task_index=d.bot_index, bot_size=d.bot_size,
            bot_first_index=d.bot_first_index, dataset_address=d.dataset_address if d.contains_dataset() else None,
            input_file_urls=d.deal_params.iexec_input_files,
        )  # fmt: skip
        if developer := self.app_secrets.get(d.app_address.lower()):
            env["IEXEC_APP_DEVELOPER_SECRET"] = env["IEXEC_APP_DEVELOPER_SECRET_1"] = developer
        for index, name in d.deal_params.iexec_secrets.items():
            value = self.requester_secrets.get((d.requester.lower(), name))
            if index.isdigit() and int(index) > 0 and value is not None:
                env[f"IEXEC_REQUESTER_SECRET_{index}"] = value
        return env

    def _post_compute(self, d: TaskDescription, worker: str) -> dict[str, str]:
        params, callback = d.deal_params, d.contains_callback()
        public_key = ""
        if params.iexec_result_encryption:
            public_key = self.web2.get((d.beneficiary.lower(), RESULT_ENCRYPTION_PUBLIC_KEY), "")
            if not public_key:
                raise _SessionError(
                    E.POST_COMPUTE_GET_ENCRYPTION_TOKENS_FAILED_EMPTY_BENEFICIARY_KEY, "no beneficiary key"
                )
        provider = proxy = token = ""
        if not callback:
            provider = params.iexec_result_storage_provider or ""
            proxy = params.iexec_result_storage_proxy or self.web2.get(
                (d.workerpool_owner.lower(), RESULT_PROXY_URL), ""
            )
            if provider == "dropbox":
                token = self.web2.get((d.requester.lower(), RESULT_DROPBOX_TOKEN), "")
            else:  # the worker's token first, the requester's (legacy) else
                token = self.web2.get((worker.lower(), RESULT_IPFS_TOKEN)) or self.web2.get(
                    (d.requester.lower(), RESULT_IPFS_TOKEN), ""
                )
            if not token:
                raise _SessionError(E.POST_COMPUTE_GET_STORAGE_TOKENS_FAILED, "no storage token")
        return {
            "RESULT_ENCRYPTION": "true" if params.iexec_result_encryption else "false",
            "RESULT_ENCRYPTION_PUBLIC_KEY": public_key,
            "RESULT_STORAGE_CALLBACK": "true" if callback else "false",
            "RESULT_STORAGE_PROVIDER": provider,
            "RESULT_STORAGE_PROXY": proxy,
            "RESULT_STORAGE_TOKEN": token,
        }

    # -- emulated secret provisioning ---------------------------------------------------------

    def _environment(self, session_id: str, service: str) -> dict[str, str]:
        session = self.sessions.get(session_id)
        if session is None or service not in session.environments:
            raise _Refused(404, f"no service {service!r} in session {session_id!r}")
        return session.environments[service]

    async def emulated_cas(self, request: web.Request) -> web.Response:
        if self.framework is not TeeFramework.SCONE:
            raise _Refused(404)
        return web.json_response(
            self._environment(request.match_info["session_id"], request.match_info["service"])
        )

    async def emulated_sps(self, request: web.Request) -> web.Response:
        if self.framework is not TeeFramework.GRAMINE:
            raise _Refused(404)
        return web.json_response(
            self._environment(request.match_info["session_id"], request.match_info["service"])
        )

    async def emulated_tdx(self, request: web.Request) -> web.Response:
        if self.framework is not TeeFramework.TDX:
            raise _Refused(404)
        session_id = request.match_info["session_id"]
        session = self.sessions.get(session_id)
        if session is None:
            raise _Refused(404, f"no session {session_id!r}")
        services = [
            {"name": name, "image_name": session.images[name][0], "fingerprint": session.images[name][1],
             "environment": env}
            for name, env in session.environments.items()
        ]  # fmt: skip
        return web.json_response({"name": session_id, "version": "0.1.0", "services": services})

    # -- secrets ------------------------------------------------------------------------------

    async def head_web2(self, request: web.Request) -> web.Response:
        owner, name = _query(request, "ownerAddress").lower(), _query(request, "secretName")
        return web.Response(status=204 if (owner, name) in self.web2 else 404)

    async def put_web2(self, request: web.Request) -> web.Response:
        owner, name = _query(request, "ownerAddress").lower(), _query(request, "secretName")
        value = await _secret_value(request)
        if _signer(web2_secret_hash(owner, name, value), request.headers.get("Authorization", "")) != owner:
            raise _Refused(401)
        exists = (owner, name) in self.web2
        if request.method == "POST" and exists:
            raise _Refused(409)
        if request.method == "PUT" and not exists:
            raise _Refused(404)
        self.web2[(owner, name)] = value
        return web.Response(status=204)

    async def head_web3(self, request: web.Request) -> web.Response:
        return web.Response(status=204 if _query(request, "secretAddress").lower() in self.web3 else 404)

    async def post_web3(self, request: web.Request) -> web.Response:
        address = _query(request, "secretAddress").lower()
        value = await _secret_value(request)
        challenge = keccak_hex(_text(SMS_DOMAIN), address, _text(value))
        owner = await self._owner_of(address, dataset=True)
        if _signer(challenge, request.headers.get("Authorization", "")) != owner:
            raise _Refused(401)
        if address in self.web3:
            raise _Refused(409)
        self.web3[address] = value
        return web.Response(status=204)

    async def head_app_secret(self, request: web.Request) -> web.Response:
        return web.Response(status=204 if request.match_info["app"].lower() in self.app_secrets else 404)

    async def post_app_secret(self, request: web.Request) -> web.Response:
        app = request.match_info["app"].lower()
        value = await _secret_value(request)
        challenge = keccak_hex(_text(SMS_DOMAIN), app, _text("1"), _text(value))
        if _signer(challenge, request.headers.get("Authorization", "")) != await self._owner_of(
            app, dataset=False
        ):
            raise _Refused(401)
        if app in self.app_secrets:
            raise _Refused(409)
        self.app_secrets[app] = value
        return web.Response(status=204)

    async def head_requester_secret(self, request: web.Request) -> web.Response:
        key = (request.match_info["requester"].lower(), request.match_info["key"])
        return web.Response(status=204 if key in self.requester_secrets else 404)

    async def post_requester_secret(self, request: web.Request) -> web.Response:
        requester, name = request.match_info["requester"].lower(), request.match_info["key"]
        if not _KEY.match(name):
            raise _Refused(400, {"error": [f"secret key {name!r} must be 1 to 64 letters, digits, - or _"]})
        value = await _secret_value(request)
        if (
            _signer(web2_secret_hash(requester, name, value), request.headers.get("Authorization", ""))
            != requester
        ):
            raise _Refused(401)
        if (requester, name) in self.requester_secrets:
            raise _Refused(409)
        self.requester_secrets[(requester, name)] = value
        return web.Response(status=204)

    async def _owner_of(self, address: str, *, dataset: bool) -> str:
        try:
            asset = await (self._chain.dataset(address) if dataset else self._chain.app(address))
        except WorkerError:
            return ""
        return asset.owner.lower()


class _SessionError(Exception):
    def __init__(self, error: TeeSessionGenerationError, message: str) -> None:
        super().__init__(message)
        self.error = error


def _stage(stage: StageImage) -> dict[str, Any]:
    return {
        "image": stage.image,
        "fingerprint": stage.fingerprint,
        "entrypoint": stage.entrypoint,
        "heapSizeInBytes": stage.heap_size,
    }


def _text(value: str) -> str:
    return keccak_hex(value.encode().hex())


def _signer(message_hash: str, signature: str) -> str | None:
    try:
        return recover_eip191(message_hash, signature)
    except ValueError:
        return None


def _query(request: web.Request, name: str) -> str:
    value = request.query.get(name)
    if not value:
        raise _Refused(400, f"missing query parameter {name}")
    return value


async def _secret_value(request: web.Request) -> str:
    value = (await request.read()).decode("utf-8", "replace")
    if len(value.encode()) > SECRET_MAX_SIZE:
        raise _Refused(413)
    return value


@web.middleware
async def _answer_refusals(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except _Refused as exc:
        if isinstance(exc.body, dict):
            return web.Response(status=exc.status, text=json.dumps(exc.body), content_type="application/json")
        return web.Response(status=exc.status, text=str(exc.body or ""))
