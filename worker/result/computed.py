"""``computed.json``: what the app declares about its result, and the error result written in its place.

Keys and their JSON spelling are those of iexec-common's ``ComputedFile``. The
file is written by the app, so it is read defensively: bounded in size, never through a symbolic
link, unknown keys ignored, and every defect reported as one ``ResultError``.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from worker.protocol.status import ReplicateStatus, ReplicateStatusCause
from worker.result.errors import ComputedFileInvalid, ResultError
from worker.result.safe_write import write_new_file

COMPUTED_FILE_NAME = "computed.json"
ERROR_FILE_NAME = "error.txt"
IEXEC_OUT = "iexec_out"
# Far above any real computed.json (callback data ends up in a transaction), far below a memory problem.
MAX_COMPUTED_FILE_BYTES = 1024 * 1024


class ComputedFile(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    deterministic_output_path: str | None = Field(default=None, alias="deterministic-output-path")
    callback_data: str | None = Field(default=None, alias="callback-data")
    task_id: str | None = Field(default=None, alias="task-id")
    result_digest: str | None = Field(default=None, alias="result-digest")
    enclave_signature: str | None = Field(default=None, alias="enclave-signature")
    error_message: str | None = Field(default=None, alias="error-message")

    def to_json(self) -> str:
        """Compact JSON with every key, nulls included, in declaration order: the Java worker's bytes."""
        return json.dumps(self.model_dump(mode="json", by_alias=True), separators=(",", ":"))


def parse_computed_file(text: str | bytes, *, source: str = COMPUTED_FILE_NAME) -> ComputedFile:
    try:
        body: Any = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ComputedFileInvalid(
            f"{source}: not valid JSON ({exc}); "
            f"the app must write a JSON object to /{IEXEC_OUT}/{COMPUTED_FILE_NAME}",
        ) from exc
    if not isinstance(body, dict):
        raise ComputedFileInvalid(
            f"{source}: expected a JSON object, got {type(body).__name__}",
        )
    try:
        return ComputedFile.model_validate(body)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in err["loc"]) for err in exc.errors())
        raise ComputedFileInvalid(
            f"{source}: keys {fields} must be strings or null",
        ) from exc


def read_bounded_regular_file(path: Path, limit: int, error: type[ResultError]) -> bytes:
    """Bytes of a regular file that is neither a symbolic link nor larger than ``limit``."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as exc:
        raise error(f"{path}: no such file") from exc
    except OSError as exc:
        # ELOOP is what O_NOFOLLOW answers for a symbolic link.
        raise error(f"{path}: cannot be opened as a regular file ({exc.strerror})") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{path}: not a regular file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise error(f"{path}: larger than {limit} bytes")
    return data


def read_computed_file(path: Path) -> ComputedFile:
    """Read ``computed.json``; raises ``ComputedFileInvalid`` on any defect."""
    data = read_bounded_regular_file(path, MAX_COMPUTED_FILE_BYTES, ComputedFileInvalid)
    return parse_computed_file(data, source=str(path))


def error_result_text(
    status: ReplicateStatus, causes: Sequence[tuple[ReplicateStatusCause, str | None]]
) -> str:
    """The text of ``error.txt``, byte-identical to Java workers so that all of them reach consensus.

    Each cause is rendered as the Java record ``WorkflowError[cause=..., message=...]`` inside a Java
    list; a missing message prints as ``null``, as Java does.
    """
    rendered = ", ".join(
        f"WorkflowError[cause={cause.value}, message={'null' if message is None else message}]"
        for cause, message in causes
    )
    return f"[IEXEC] Errors occurred while computing the task [error:{status.value}, causes:[{rendered}]]"


def write_error_result(
    iexec_out: Path, status: ReplicateStatus, causes: Sequence[tuple[ReplicateStatusCause, str | None]]
) -> ComputedFile:
    """Write ``error.txt`` and a ``computed.json`` naming it, so a failed download still yields a result.

    Run the standard post-compute afterwards: the digest is then sha256 of ``error.txt``.
    """
    computed = ComputedFile(deterministic_output_path=f"/{IEXEC_OUT}/{ERROR_FILE_NAME}")
    iexec_out.mkdir(parents=True, exist_ok=True)
    # Whatever sits under these names (possibly a link planted by an app) is replaced, never written through.
    write_new_file(iexec_out, ERROR_FILE_NAME, error_result_text(status, causes).encode())
    write_new_file(iexec_out, COMPUTED_FILE_NAME, computed.to_json().encode())
    return computed
