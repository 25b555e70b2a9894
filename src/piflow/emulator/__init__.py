"""A PI Web API emulator: deterministic data, PI's limits and error shapes, auth modes and fault injection."""

from piflow.emulator.app import create_app, state_of
from piflow.emulator.settings import PROFILES, AuthSettings, EmulatorSettings, FaultSettings, ProfileSettings

__all__ = ["PROFILES", "AuthSettings", "EmulatorSettings", "FaultSettings", "ProfileSettings", "create_app",
           "state_of"]
