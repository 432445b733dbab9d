"""The TDX secret provider agent: fetches a task's session from the SMS's secret provisioning.

Run as the reference runs it (iexec-worker ``TeeTdxService``): in the task folder,
``<agent> -e <secretProvisioningUrl> -i <sessionId> -s session-<chainTaskId>.json -v nullverifier``; the
agent writes the session file there, and its ``services`` hold the environment of each container.
Unlike the reference, a non-zero exit fails the task at once, the agent's output is read while it runs
(a chatty agent cannot block on a full pipe), and it is killed after ``max_seconds``. The session
file holds secrets: it is only read, never logged, and goes with the task folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from pydantic import ValidationError

from worker.protocol.tee import TdxSession
from worker.sms.errors import SecretProvisioningFailed

log = logging.getLogger(__name__)

AGENT_TIMEOUT = 120.0
MAX_SESSION_BYTES = 1024 * 1024
NULL_VERIFIER = "nullverifier"


def session_file_name(task_id: str) -> str:
    return f"session-{task_id}.json"


def read_session_file(path: Path) -> TdxSession:
    """The TDX session the agent wrote; raises SecretProvisioningFailed when absent or unreadable."""
    try:
        data = path.read_bytes()[: MAX_SESSION_BYTES + 1]
    except OSError as exc:
        raise SecretProvisioningFailed(f"TDX session file {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_SESSION_BYTES:
        raise SecretProvisioningFailed(f"TDX session file {path} is larger than {MAX_SESSION_BYTES} bytes")
    try:
        return TdxSession.model_validate_json(data)
    except ValidationError as exc:
        raise SecretProvisioningFailed(
            f"TDX session file {path} is not a session ({exc.error_count()} errors)"
        ) from exc


async def fetch_tdx_session(
    agent: Path,
    *,
    provisioning_url: str,
    session_id: str,
    task_id: str,
    task_dir: Path,
    max_seconds: float = AGENT_TIMEOUT,
) -> TdxSession:
    """Run the agent for this task and return the session it wrote in ``task_dir``."""
    if not os.access(agent, os.X_OK):
        raise SecretProvisioningFailed(
            f"TDX secret provider agent {agent} is not an executable file: install it or set "
            "TEE_TDX_SECRET_PROVIDER_AGENT"
        )
    await asyncio.to_thread(task_dir.mkdir, parents=True, exist_ok=True)
    target = task_dir / session_file_name(task_id)
    await asyncio.to_thread(target.unlink, missing_ok=True)
    args = ["-e", provisioning_url, "-i", session_id, "-s", target.name, "-v", NULL_VERIFIER]
    try:
        process = await asyncio.create_subprocess_exec(
            str(agent), *args, cwd=task_dir, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    except OSError as exc:
        raise SecretProvisioningFailed(f"TDX secret provider agent {agent} cannot start: {exc}") from exc
    assert process.stdout is not None

    async def relay() -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            log.info("%s: secret provider agent: %s", task_id, line.decode("utf-8", "replace").rstrip()[:500])

    try:
        async with asyncio.timeout(max_seconds):
            await asyncio.gather(relay(), process.wait())
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise SecretProvisioningFailed(
            f"TDX secret provider agent gave no session within {max_seconds:g} s"
        ) from None
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        raise
    if process.returncode != 0:
        raise SecretProvisioningFailed(
            f"TDX secret provider agent exited with code {process.returncode} (session {session_id})"
        )
    return await asyncio.to_thread(read_session_file, target)
