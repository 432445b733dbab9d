"""SMS: the Secret Management Service of TEE tasks (properties, sessions, secrets) and the TDX agent."""

from worker.sms.agent import fetch_tdx_session, read_session_file, session_file_name
from worker.sms.client import SmsClient
from worker.sms.errors import SecretProvisioningFailed, SmsError, SmsSessionRefused

__all__ = [
    "SecretProvisioningFailed",
    "SmsClient",
    "SmsError",
    "SmsSessionRefused",
    "fetch_tdx_session",
    "read_session_file",
    "session_file_name",
]
