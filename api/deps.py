"""Dependencies named for what they give, so every route says what it needs."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.state import AppState


async def get_state(request: Request) -> AppState:
    # async: a plain ``def`` dependency would cost a threadpool hop on every request
    return request.app.state.pocketrun


State = Annotated[AppState, Depends(get_state)]
