"""Bearer-token auth for ``/api/*``: when ``settings.api_key`` is set, every request must carry it."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

__all__ = ["BearerAuth"]

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="api_key",
    description="The value of TRIPWIRE_API_KEY, sent as `Authorization: Bearer <key>`.",
)


class BearerAuth:
    """A FastAPI dependency: 401 unless ``Authorization: Bearer <api_key>``; open when no key is set."""

    def __init__(self, api_key: SecretStr | None) -> None:
        self._key = api_key.get_secret_value().encode() if api_key is not None else None

    def __repr__(self) -> str:
        return f"BearerAuth(enabled={self.enabled})"

    @property
    def enabled(self) -> bool:
        return self._key is not None

    async def __call__(
        self, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> None:
        if self._key is None:
            return
        if credentials is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing API key: send the header 'Authorization: Bearer <TRIPWIRE_API_KEY>'",
                headers={"WWW-Authenticate": 'Bearer realm="tripwire"'},
            )
        # Constant time; the given value is never logged or echoed.
        if not hmac.compare_digest(credentials.credentials.encode(), self._key):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "invalid API key",
                headers={"WWW-Authenticate": 'Bearer realm="tripwire", error="invalid_token"'},
            )
