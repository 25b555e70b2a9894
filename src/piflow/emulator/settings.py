"""Emulator settings: the data model, the clock, authentication and fault injection.

Everything that changes what the emulator serves is here, so that a test or a benchmark states its whole
setup in one object and two emulators built from equal settings behave identically.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from piflow.emulator.model import ModelConfig

AuthMode = Literal["anonymous", "basic", "bearer", "oidc", "kerberos"]


class AuthSettings(BaseModel):
    mode: AuthMode = "anonymous"
    # basic: user name (``DOMAIN\\user`` or ``user``) -> password
    users: dict[str, str] = Field(default_factory=lambda: {"PIDEMO\\piuser": "pipass"})
    # bearer: the one static token accepted
    bearer_token: str = "emulator-static-token"
    # oidc: client-credentials clients (client_id -> secret) and token lifetime
    oidc_clients: dict[str, str] = Field(default_factory=lambda: {"piflow": "piflow-secret"})
    token_ttl_s: float = 3600.0
    # kerberos: SPNEGO tokens are checked with GSSAPI (the optional extra piflow[kerberos]) against the service
    # keytab named by KRB5_KTNAME, as for any GSSAPI service; any principal the KDC vouches for is let in.


class FaultSettings(BaseModel):
    """Fault injection; each decision is a hash of (seed, request number), so a run is reproducible."""

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    error_rate: float = 0.0  # share of requests answered 500/502/503
    rate_limit_rps: float = 0.0  # 0 = unlimited; over it: 429 with Retry-After
    drop_rate: float = 0.0  # share of responses whose connection is dropped mid-body
    slow_body_ms: float = 0.0  # delay between body chunks
    channel_close_every_s: float = 0.0  # 0 = never; close channel sockets after this long
    exempt_paths: tuple[str, ...] = ("/_emulator",)


class EmulatorSettings(BaseModel):
    seed: int = 7
    points: int = 1000
    data_servers: int = 1
    now: datetime = Field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    frozen: bool = False
    origin: datetime = Field(default_factory=lambda: datetime(2020, 1, 1, tzinfo=UTC))
    late_share: float = 0.02
    late_max_minutes: int = 30
    edit_share: float = 0.01
    edit_min_minutes: int = 10
    edit_max_minutes: int = 120
    max_returned_items: int = 150_000
    max_count_default: int = 1000
    # AF and event frames scale with the number of points unless set
    af_elements: int | None = None
    event_frames_per_day: float | None = None
    auth: AuthSettings = Field(default_factory=AuthSettings)
    faults: FaultSettings = Field(default_factory=FaultSettings)

    def model_config_(self) -> ModelConfig:
        return ModelConfig(
            seed=self.seed, points=self.points, data_servers=self.data_servers, origin=self.origin,
            late_share=self.late_share, late_max_minutes=self.late_max_minutes, edit_share=self.edit_share,
            edit_min_minutes=self.edit_min_minutes, edit_max_minutes=self.edit_max_minutes,
        )
