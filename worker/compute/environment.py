"""What a standard app container sees: its name, labels, arguments and IEXEC_* environment."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from worker.compute.model import IEXEC_IN, IEXEC_OUT
from worker.protocol.errors import WorkerError

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"

WORKER_LABEL = "iexec-worker"
"""Label holding the worker name on every container this worker creates; cleanup at start selects on it."""
TASK_LABEL = "iexec-task-id"


class ArgsError(WorkerError, ValueError):
    """``iexec_args`` cannot be split into arguments (unbalanced quotes)."""


def container_name(worker_name: str, chain_task_id: str) -> str:
    return f"{worker_name}-{chain_task_id}"


def task_labels(worker_name: str, chain_task_id: str) -> dict[str, str]:
    return {WORKER_LABEL: worker_name, TASK_LABEL: chain_task_id}


def split_args(args: str) -> list[str]:
    """Split ``iexec_args`` into arguments the way every worker of the pool must, so results agree.

    The reference splitter is not a POSIX shell: only the space character separates arguments (a tab or a
    newline stays inside one), single and double quotes group text literally, a backslash is an ordinary
    character, quoted and unquoted parts next to each other join into one argument, and ``''`` is an empty
    argument. ``shlex.split`` differs on backslashes and on whitespace, which would change what the app
    receives and so its result digest.
    """
    out: list[str] = []
    current: list[str] = []
    quote: str | None = None
    quoted = False  # an empty pair of quotes still makes an argument
    for char in args:
        if quote is not None:
            if char == quote:
                quote = None
                quoted = True
            else:
                current.append(char)
        elif char in "'\"":
            quote = char
        elif char == " ":
            if current or quoted:
                out.append("".join(current))
                current = []
            quoted = False
        else:
            current.append(char)
    if quote is not None:
        raise ArgsError(f"iexec_args has an unbalanced {quote} quote: {args!r}")
    if current or quoted:
        out.append("".join(current))
    return out


def input_file_name(url: str) -> str:
    """Local name of a downloaded input file: ``0x`` + sha256 of its URL."""
    return "0x" + hashlib.sha256(url.encode()).hexdigest()


def app_environment(
    *,
    deal_id: str,
    chain_task_id: str,
    task_index: int,
    bot_size: int,
    bot_first_index: int,
    dataset_address: str | None = None,
    input_file_urls: Sequence[str] = (),
) -> dict[str, str]:
    """IEXEC_* variables of a standard (non-TEE) app container.

    Without a dataset both dataset variables hold the zero address. The input-file folder and names are set
    only when the deal has input files; names are numbered from 1.
    """
    dataset = dataset_address or ZERO_ADDRESS
    env = {
        "IEXEC_DEAL_ID": deal_id,
        "IEXEC_TASK_INDEX": str(task_index),
        "IEXEC_TASK_ID": chain_task_id,
        "IEXEC_IN": IEXEC_IN,
        "IEXEC_OUT": IEXEC_OUT,
        "IEXEC_BOT_SIZE": str(bot_size),
        "IEXEC_BOT_FIRST_INDEX": str(bot_first_index),
        "IEXEC_BOT_TASK_INDEX": str(task_index),
        "IEXEC_DATASET_ADDRESS": dataset,
        "IEXEC_DATASET_FILENAME": dataset,
        "IEXEC_INPUT_FILES_NUMBER": str(len(input_file_urls)),
    }
    if input_file_urls:
        env["IEXEC_INPUT_FILES_FOLDER"] = IEXEC_IN
        for number, url in enumerate(input_file_urls, start=1):
            env[f"IEXEC_INPUT_FILE_NAME_{number}"] = input_file_name(url)
    return env
