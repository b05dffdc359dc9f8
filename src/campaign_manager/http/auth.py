"""Who may call the write endpoints: whoever sends `Authorization: Bearer <API_TOKEN>`.

- no or malformed `Authorization` header: 401 with `WWW-Authenticate: Bearer`;
- another token: 403;
- API_TOKEN unset (or empty): every write endpoint answers 403, saying so; reads stay open.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

WRITES_DISABLED = "write endpoints are disabled: API_TOKEN is not set"

# auto_error=False: a missing header is answered below, after the check that writes are enabled at all.
bearer = HTTPBearer(
    scheme_name="ApiToken",
    description="The service's API_TOKEN, as `Authorization: Bearer <API_TOKEN>`. Write endpoints only; with "
    "API_TOKEN unset they are disabled (403).",
    auto_error=False,
)


class WriteAccess:
    """A FastAPI dependency that lets a request through only with the configured token."""

    def __init__(self, api_token: SecretStr | str | None) -> None:
        secret = api_token.get_secret_value() if isinstance(api_token, SecretStr) else api_token
        self._token = secret.encode() if secret else None

    @property
    def enabled(self) -> bool:
        return self._token is not None

    async def __call__(self, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if self._token is None:
            raise HTTPException(status_code=403, detail=WRITES_DISABLED)
        if credentials is None:
            raise HTTPException(
                status_code=401,
                detail="Not authenticated: send Authorization: Bearer <API_TOKEN>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        # Constant time: how long a wrong token takes to refuse says nothing about how much of it was right.
        if not hmac.compare_digest(credentials.credentials.encode(), self._token):
            raise HTTPException(status_code=403, detail="Invalid API token")
