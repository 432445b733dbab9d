"""Data: datasets and input files downloaded for a task."""

from worker.data.dataset import DEFAULT_IPFS_GATEWAYS, DatasetRef, download_dataset, is_ipfs_multiaddr
from worker.data.downloads import Downloaded, DownloadError, DownloadLimits, download
from worker.data.errors import DataError, DatasetChecksumMismatch, DatasetUnavailable, InputFileUnavailable
from worker.data.input_files import download_input_file, input_file_name
from worker.data.targets import GuardedResolver, check_target, guarded_session
from worker.data.task import TaskProgress, download_task_data

__all__ = [
    "DEFAULT_IPFS_GATEWAYS",
    "DataError",
    "DatasetChecksumMismatch",
    "DatasetRef",
    "DatasetUnavailable",
    "DownloadError",
    "DownloadLimits",
    "Downloaded",
    "GuardedResolver",
    "InputFileUnavailable",
    "TaskProgress",
    "check_target",
    "download",
    "download_dataset",
    "download_input_file",
    "download_task_data",
    "guarded_session",
    "input_file_name",
    "is_ipfs_multiaddr",
]
