"""What routes take from the app, read straight off the request: a FastAPI dependency for
each would cost more than the lookup (see ``api.authz.Requires``)."""

from __future__ import annotations

from fastapi import Request

from api.security import SecurityState
from api.state import AppState


def app_state(request: Request) -> AppState:
    return request.app.state.pocketrun


def security_state(request: Request) -> SecurityState:
    return request.app.state.security
