"""A PI Web API emulator: deterministic data, PI's limits and error shapes, auth modes and fault injection."""

from piflow.emulator.app import create_app, state_of
from piflow.emulator.settings import AuthSettings, EmulatorSettings, FaultSettings

__all__ = ["AuthSettings", "EmulatorSettings", "FaultSettings", "create_app", "state_of"]
