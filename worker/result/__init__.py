"""Results: computed.json, the result digest, the result zip and the upload to the result proxy."""

from worker.result.archive import (
    MAX_RESULT_FILE_NAME_LENGTH,
    ZIP_NAME,
    PostComputeResult,
    check_file_names,
    copy_computed_file,
    run_standard_post_compute,
    run_standard_post_compute_async,
    zip_folder,
)
from worker.result.computed import (
    COMPUTED_FILE_NAME,
    ERROR_FILE_NAME,
    IEXEC_OUT,
    ComputedFile,
    error_result_text,
    parse_computed_file,
    read_computed_file,
    write_error_result,
)
from worker.result.digest import (
    callback_result_digest,
    compute_result_digest,
    compute_result_digest_async,
    directory_digest,
    web2_result_digest,
)
from worker.result.errors import ResultError

__all__ = [
    "COMPUTED_FILE_NAME",
    "ERROR_FILE_NAME",
    "IEXEC_OUT",
    "MAX_RESULT_FILE_NAME_LENGTH",
    "ZIP_NAME",
    "ComputedFile",
    "PostComputeResult",
    "ResultError",
    "callback_result_digest",
    "check_file_names",
    "compute_result_digest",
    "compute_result_digest_async",
    "copy_computed_file",
    "directory_digest",
    "error_result_text",
    "parse_computed_file",
    "read_computed_file",
    "run_standard_post_compute",
    "run_standard_post_compute_async",
    "web2_result_digest",
    "write_error_result",
    "zip_folder",
]
