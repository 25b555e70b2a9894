"""piflow: AVEVA PI System (PI Web API) into Delta Lake tables."""

from piflow.errors import (
    AuthError,
    BadRequestError,
    BadResponseError,
    ConfigError,
    ConflictError,
    DecodeError,
    NetworkError,
    NotFoundError,
    PiApiError,
    PiflowError,
    RateLimitedError,
    ServerBusyError,
    SinkError,
    StateError,
    TooManyItemsError,
    TransientError,
)

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "BadRequestError",
    "BadResponseError",
    "ConfigError",
    "ConflictError",
    "DecodeError",
    "NetworkError",
    "NotFoundError",
    "PiApiError",
    "PiflowError",
    "RateLimitedError",
    "ServerBusyError",
    "SinkError",
    "StateError",
    "TooManyItemsError",
    "TransientError",
    "__version__",
]
