"""The emulator as a FastAPI application (usable in-process by tests, or served by uvicorn).

Routes live in the ``routes`` package, one module per area of the PI Web API; authentication, fault injection
and the server profile (missing routes, refused channels, the virtual-clock ``Date``) are ASGI middleware installed
here. Every error body has PI's shape: ``{"Errors": ["..."]}``.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from piflow.emulator import auth, faults, profile
from piflow.emulator.responses import error_response
from piflow.emulator.routes import admin as routes_admin
from piflow.emulator.routes import af as routes_af
from piflow.emulator.routes import batch as routes_batch
from piflow.emulator.routes import discovery as routes_discovery
from piflow.emulator.routes import streaming as routes_streaming
from piflow.emulator.routes import values as routes_values
from piflow.emulator.settings import EmulatorSettings
from piflow.emulator.state import EmulatorState

BASE = "/piwebapi"


def create_app(settings: EmulatorSettings | None = None) -> FastAPI:
    state = EmulatorState(settings or EmulatorSettings())
    app = FastAPI(title="piflow PI Web API emulator", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.emulator = state

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, list) else [str(exc.detail)]
        return error_response(exc.status_code, *detail, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        msgs = [f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        return error_response(400, *msgs)

    # Streaming first: its fixed paths (streams/updates/{marker}) must win over streams/{webId}/{action}.
    for module in (routes_streaming, routes_discovery, routes_values, routes_batch, routes_af):
        app.include_router(module.router, prefix=BASE)
    app.include_router(routes_admin.router)  # /_emulator, outside the API prefix
    faults.install(app, state)
    auth.install(app, state)
    profile.install(app, state)  # after both: its Date middleware outermost, its route switches innermost
    return app


def state_of(app: FastAPI) -> EmulatorState:
    st: EmulatorState = app.state.emulator
    return st
