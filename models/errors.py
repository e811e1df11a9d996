"""Domain errors: what went wrong, for whom, and which field; `api/errors.py` maps them to HTTP."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    invalid_request = "invalid_request_error"
    invalid_file = "invalid_file"
    invalid_state = "invalid_state"
    not_found = "not_found"
    unauthorized = "invalid_api_key"
    payload_too_large = "file_too_large"
    quota_exceeded = "quota_exceeded"
    service_unavailable = "service_unavailable"
    request_timeout = "request_timeout"
    internal_error = "internal_error"


class JobErrorCode(StrEnum):
    """Codes recorded on a failed job's `error.code`; each comes with a message a user can act on."""

    invalid_training_data = "invalid_training_data"
    base_model_unavailable = "base_model_unavailable"
    training_diverged = "training_diverged"
    out_of_memory = "out_of_memory"
    artifact_write_failed = "artifact_write_failed"
    storage_quota_exceeded = "storage_quota_exceeded"
    worker_crashed = "worker_crashed"
    queue_unavailable = "queue_unavailable"
    internal_error = "internal_error"


class GraftError(Exception):
    """Base of every expected failure. `param` names the request field or file line at fault."""

    status_code = 500
    code: ErrorCode = ErrorCode.internal_error
    error_type = "server_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(GraftError):
    status_code = 400
    code = ErrorCode.invalid_request
    error_type = "invalid_request_error"


class InvalidFile(GraftError):
    status_code = 400
    code = ErrorCode.invalid_file
    error_type = "invalid_request_error"


class NotFound(GraftError):
    status_code = 404
    code = ErrorCode.not_found
    error_type = "invalid_request_error"


class InvalidTransition(GraftError):
    status_code = 409
    code = ErrorCode.invalid_state
    error_type = "invalid_request_error"


class Unauthorized(GraftError):
    status_code = 401
    code = ErrorCode.unauthorized
    error_type = "invalid_request_error"


class PayloadTooLarge(GraftError):
    status_code = 413
    code = ErrorCode.payload_too_large
    error_type = "invalid_request_error"


class QuotaExceeded(GraftError):
    """A tenant is at one of its limits; `param` names the quota, `retry_after_seconds` when to try again."""

    status_code = 429
    code = ErrorCode.quota_exceeded
    error_type = "rate_limit_error"

    def __init__(self, message: str, *, param: str, retry_after_seconds: int) -> None:
        super().__init__(message, param=param)
        self.retry_after_seconds = retry_after_seconds


class ServiceUnavailable(GraftError):
    status_code = 503
    code = ErrorCode.service_unavailable
    error_type = "server_error"
