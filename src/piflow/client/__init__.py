"""The PI Web API client: HTTP with auth, retries, pacing and error translation, and typed calls on top."""

from piflow.client.api import BatchItem, PiClient
from piflow.client.auth import Auth, BasicAuth, BearerAuth, KerberosAuth, NoAuth, OidcClientCredentials
from piflow.client.http import PiHttp
from piflow.client.retry import RetryPolicy

__all__ = [
    "Auth",
    "BasicAuth",
    "BatchItem",
    "BearerAuth",
    "KerberosAuth",
    "NoAuth",
    "OidcClientCredentials",
    "PiClient",
    "PiHttp",
    "RetryPolicy",
]
