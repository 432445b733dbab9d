"""Unit tests of what an app container is given: argument splitting, IEXEC_* variables, names and labels."""

from __future__ import annotations

import hashlib

import pytest

from worker.compute import (
    ZERO_ADDRESS,
    ArgsError,
    app_environment,
    container_name,
    input_file_name,
    split_args,
    task_labels,
)

DEAL = "0x" + "ab" * 32
TASK = "0x" + "cd" * 32


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ("", []),
        ("   ", []),
        ("hello world", ["hello", "world"]),
        ("a  b", ["a", "b"]),
        ("'hello world' x", ["hello world", "x"]),
        ("\"a b\" 'c d'", ["a b", "c d"]),
        ("pre'quoted part'post", ["prequoted partpost"]),
        ("''", [""]),
        ("a '' b", ["a", "", "b"]),
        ('"it\'s"', ["it's"]),
        ("'say \"hi\"'", ['say "hi"']),
        # Backslashes are plain characters and only the space separates: shlex would give other arguments.
        (r"C:\data a\ b", ["C:\\data", "a\\", "b"]),
        ("tab\tstays\nin", ["tab\tstays\nin"]),
    ],
)
def test_split_args_like_the_reference_worker(args: str, expected: list[str]) -> None:
    assert split_args(args) == expected


@pytest.mark.parametrize("args", ["'open", 'a "b c', "x'"])
def test_split_args_rejects_unbalanced_quotes(args: str) -> None:
    with pytest.raises(ArgsError, match="unbalanced"):
        split_args(args)


def test_environment_without_dataset_or_input_files() -> None:
    env = app_environment(deal_id=DEAL, chain_task_id=TASK, task_index=2, bot_size=5, bot_first_index=1)
    assert env == {
        "IEXEC_DEAL_ID": DEAL,
        "IEXEC_TASK_INDEX": "2",
        "IEXEC_TASK_ID": TASK,
        "IEXEC_IN": "/iexec_in",
        "IEXEC_OUT": "/iexec_out",
        "IEXEC_BOT_SIZE": "5",
        "IEXEC_BOT_FIRST_INDEX": "1",
        "IEXEC_BOT_TASK_INDEX": "2",
        "IEXEC_DATASET_ADDRESS": ZERO_ADDRESS,
        "IEXEC_DATASET_FILENAME": ZERO_ADDRESS,
        "IEXEC_INPUT_FILES_NUMBER": "0",
    }


def test_environment_with_dataset_and_input_files() -> None:
    dataset = "0x" + "12" * 20
    urls = ["https://example.org/a.csv", "https://example.org/b.csv"]
    env = app_environment(
        deal_id=DEAL,
        chain_task_id=TASK,
        task_index=0,
        bot_size=1,
        bot_first_index=0,
        dataset_address=dataset,
        input_file_urls=urls,
    )
    assert env["IEXEC_DATASET_ADDRESS"] == dataset
    assert env["IEXEC_DATASET_FILENAME"] == dataset
    assert env["IEXEC_INPUT_FILES_NUMBER"] == "2"
    assert env["IEXEC_INPUT_FILES_FOLDER"] == "/iexec_in"
    assert env["IEXEC_INPUT_FILE_NAME_1"] == "0x" + hashlib.sha256(urls[0].encode()).hexdigest()
    assert env["IEXEC_INPUT_FILE_NAME_2"] == input_file_name(urls[1])
    assert "IEXEC_INPUT_FILE_NAME_3" not in env


def test_names_and_labels_identify_worker_and_task() -> None:
    assert container_name("worker-1", TASK) == f"worker-1-{TASK}"
    assert task_labels("worker-1", TASK) == {"iexec-worker": "worker-1", "iexec-task-id": TASK}
