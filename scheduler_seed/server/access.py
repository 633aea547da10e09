"""FastAPI dependencies that answer "who asks, and may they": 401 without a valid token, 403 for a viewer's write.

The API reads `Authorization: Bearer <token>`; the Admin UI's login sets the same token as a cookie. With no tokens
configured every request is the `local` operator (the server then only listens on loopback).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from scheduler_seed.server.auth import COOKIE, LOCAL, Principal, Role, Tokens

_bearer = HTTPBearer(auto_error=False, description="a token of CONTROL_API_TOKENS (name:role:token)")


def tokens_of(request: Request) -> Tokens:
    tokens: Tokens = request.app.state.tokens
    return tokens


def require(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency giving the principal of the request, refusing it when it may not do `role`'s actions."""

    async def dependency(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Principal:
        tokens = tokens_of(request)
        if not tokens.enabled:
            return LOCAL
        presented = credentials.credentials if credentials is not None else request.cookies.get(COOKIE)
        principal = tokens.identify(presented)
        if principal is None:
            raise HTTPException(
                401, "a valid token is required: Authorization: Bearer <token>", headers={"WWW-Authenticate": "Bearer"}
            )
        if not principal.may(role):
            raise HTTPException(403, f"token {principal.name!r} is a {principal.role.value}: this needs an operator")
        return principal

    return dependency


viewer = require(Role.VIEWER)
operator = require(Role.OPERATOR)


def cross_site(method: str, origin: str | None, host: str | None) -> bool:
    """A state-changing request a browser sent from another site (its `Origin` names another host): refused, so
    a page elsewhere cannot pause a job through a logged-in (or loopback, tokenless) Admin UI."""
    if method in ("GET", "HEAD", "OPTIONS") or not origin:
        return False
    return origin.split("://", 1)[-1].rstrip("/") != (host or "")
