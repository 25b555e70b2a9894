"""Emulator settings: the data model, the clock, authentication, fault injection and the server profile.

Everything that changes what the emulator serves is here, so that a test or a benchmark states its whole
setup in one object and two emulators built from equal settings behave identically.

The profile (:class:`ProfileSettings`, or one of the named :data:`PROFILES`) says how far the emulated server
departs from a complete, current PI Web API: the deployments users really have are older versions, have
endpoints disabled by an administrator, or sit behind gateways that lack some routes, and a client must
detect that and degrade. The switches are applied by :mod:`piflow.emulator.profile`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator

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

    latency_ms: float = Field(default=0.0, ge=0)
    latency_jitter_ms: float = Field(default=0.0, ge=0)
    error_rate: float = Field(default=0.0, ge=0, le=1)  # share of requests answered 500/502/503
    rate_limit_rps: float = Field(default=0.0, ge=0)  # 0 = unlimited; over it: 429 with Retry-After
    drop_rate: float = Field(default=0.0, ge=0, le=1)  # share of responses whose connection is dropped mid-body
    slow_body_ms: float = Field(default=0.0, ge=0)  # delay between body chunks
    channel_close_every_s: float = Field(default=0.0, ge=0)  # 0 = never; close channel sockets after this long
    exempt_paths: tuple[str, ...] = ("/_emulator",)


class ProfileSettings(BaseModel):
    """How far this server departs from a complete, current PI Web API (all defaults = a complete server)."""

    # False: GET system/status answers 404 (as when an admin disabled it or a gateway lacks it)
    system_status: bool = True
    # off: POST batch answers 404; partial: the 207 answer omits some request ids (deterministic: every third
    # id in sorted order, always at least one when 2+ ids were sent) and answers the rest normally
    batch: Literal["full", "off", "partial"] = "full"
    # False: every streamsets/* route answers 404
    streamsets: bool = True
    # False: every WebSocket channel upgrade is refused (403 before accept)
    channels: bool = True
    # False: streams/updates and streamsets/updates answer 404
    stream_updates: bool = True
    # False: selectedFields is ignored (full answers with every field)
    selected_fields: bool = True
    # recorded/streamset recorded pages silently hold at most this many values per stream even when maxCount
    # asks for more (no error): a server with a lower cap
    max_count_cap: int | None = Field(default=None, ge=1)
    # links: list answers (data server points, points search, AF lists: asset servers, databases, elements,
    # attributes, templates, event frame lists) ignore startIndex and carry Links.Next (an absolute URL to the
    # next page, with an opaque continuation parameter) when more items remain
    list_paging: Literal["start_index", "links"] = "start_index"
    # the version reported by `system`/`system/versions` (older servers: e.g. "1.10.0.4020" for PI Web API 2017 R2)
    version: str = "1.19.1.16"
    # every HTTP answer carries a `Date` header taken from the emulator's virtual clock (not the wall clock),
    # as a real server's Date reflects its own clock; False: no Date header at all
    date_header: bool = True


OLD_VERSION = "1.10.0.4020"  # PI Web API 2017 R2

# Named profiles (``piflow emulator --profile NAME``, ``[emulator] profile = "NAME"``): one departure each, an
# old server, and everything at once.
PROFILES: dict[str, ProfileSettings] = {
    "complete": ProfileSettings(),
    "no-status": ProfileSettings(system_status=False),
    "no-batch": ProfileSettings(batch="off"),
    "partial-batch": ProfileSettings(batch="partial"),
    "no-streamsets": ProfileSettings(streamsets=False),
    "no-push": ProfileSettings(channels=False, stream_updates=False),
    "no-selected-fields": ProfileSettings(selected_fields=False),
    "low-cap": ProfileSettings(max_count_cap=250),
    "links-paging": ProfileSettings(list_paging="links"),
    "old": ProfileSettings(version=OLD_VERSION, stream_updates=False, selected_fields=False),
    "minimal": ProfileSettings(system_status=False, batch="off", streamsets=False, channels=False,
                               stream_updates=False, selected_fields=False, max_count_cap=250,
                               list_paging="links", version=OLD_VERSION),
}


def named_profile(name: str) -> ProfileSettings:
    """The profile called ``name``; ValueError naming the valid names otherwise."""
    try:
        return PROFILES[name].model_copy()
    except KeyError:
        raise ValueError(f"unknown profile {name!r} (valid: {', '.join(PROFILES)})") from None


class EmulatorSettings(BaseModel):
    seed: int = 7
    points: int = Field(default=1000, ge=1)
    data_servers: int = Field(default=1, ge=1)
    now: datetime = Field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    frozen: bool = False
    origin: datetime = Field(default_factory=lambda: datetime(2020, 1, 1, tzinfo=UTC))
    late_share: float = Field(default=0.02, ge=0, le=1)
    late_max_minutes: int = Field(default=30, ge=0)
    edit_share: float = Field(default=0.01, ge=0, le=1)
    edit_min_minutes: int = Field(default=10, ge=0)
    edit_max_minutes: int = Field(default=120, ge=0)
    max_returned_items: int = Field(default=150_000, ge=1)
    max_count_default: int = Field(default=1000, ge=1)
    # AF and event frames scale with the number of points unless set
    af_elements: int | None = None
    event_frames_per_day: float | None = None
    auth: AuthSettings = Field(default_factory=AuthSettings)
    faults: FaultSettings = Field(default_factory=FaultSettings)
    profile: ProfileSettings = Field(default_factory=ProfileSettings)

    @field_validator("profile", mode="before")
    @classmethod
    def _profile_by_name(cls, value: object) -> object:
        """A profile may be named (TOML ``profile = "minimal"``, ``--profile minimal``) or spelled out."""
        return named_profile(value) if isinstance(value, str) else value

    def model_config_(self) -> ModelConfig:
        return ModelConfig(
            seed=self.seed, point_count=self.points, data_servers=self.data_servers, origin=self.origin,
            late_share=self.late_share, late_max_minutes=self.late_max_minutes, edit_share=self.edit_share,
            edit_min_minutes=self.edit_min_minutes, edit_max_minutes=self.edit_max_minutes,
        )
