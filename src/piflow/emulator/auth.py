"""(placeholder: middleware is being written)"""

from fastapi import FastAPI

from piflow.emulator.state import EmulatorState


def install(app: FastAPI, state: EmulatorState) -> None:
    return None
