"""OAuth 2 client-credentials tokens for connectors (a peer Cell Commons node, Castor EDC).

A token is fetched on first use and reused until shortly before it expires. A source may still refuse it
earlier (revoked keys, a restarted server, clock skew): an API answer of 401 renews the token once and repeats
the request; a second 401 is a SourceError (the credentials themselves are wrong).
"""

from __future__ import annotations

import time
from typing import Any, Literal

import httpx

from cellcommons.sync.sdk import SourceError, decoded, send

EARLY = 30.0  # seconds before its expiry a token is renewed


class ClientCredentials:
    def __init__(
        self,
        http: httpx.AsyncClient,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        method: Literal["basic", "post"] = "basic",  # client_secret_basic or client_secret_post (RFC 6749 §2.3.1)
        scope: str | None = None,
    ):
        self.http, self.token_url = http, token_url
        self.client_id, self.client_secret = client_id, client_secret
        self.method, self.scope = method, scope
        self._token: str | None = None
        self._expires = 0.0

    async def token(self) -> str:
        if self._token is None or time.monotonic() >= self._expires:
            await self._fetch()
        return self._token

    async def _fetch(self) -> None:
        form = {"grant_type": "client_credentials"} | ({"scope": self.scope} if self.scope else {})
        auth = None
        if self.method == "basic":
            auth = httpx.BasicAuth(self.client_id, self.client_secret)
        else:
            form |= {"client_id": self.client_id, "client_secret": self.client_secret}
        response = await send(self.http, "POST", self.token_url, data=form, auth=auth)
        try:
            body = decoded(response)
        except SourceError as exc:
            raise SourceError(f"the token endpoint refused the client credentials ({exc})") from None
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise SourceError(f"{self.token_url}: the token answer has no access_token")
        lifetime = body.get("expires_in")
        lifetime = float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else 300.0
        self._token, self._expires = body["access_token"], time.monotonic() + max(lifetime - EARLY, lifetime / 2)

    async def request(self, method: str, url: str, *, headers: dict | None = None, **kwargs: Any) -> httpx.Response:
        """Send with the bearer token; on 401 renew the token (it expired or was revoked early) and send once more."""
        response = await self._send(method, url, headers, kwargs)
        if response.status_code == 401:
            self._token = None
            response = await self._send(method, url, headers, kwargs)
        return response

    async def _send(self, method: str, url: str, headers: dict | None, kwargs: dict) -> httpx.Response:
        bearer = {"Authorization": f"Bearer {await self.token()}"}
        return await send(self.http, method, url, headers={**(headers or {}), **bearer}, **kwargs)
