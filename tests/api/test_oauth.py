"""The client-credentials token endpoint, called by Authlib's OAuth 2 client against the app served by uvicorn on
127.0.0.1 and a free port, with a database of the test's own; its tokens used against the same API."""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey
from sqlalchemy import select

from cellcommons.api.app import create_app
from cellcommons.audit.models import AuditEvent
from cellcommons.auth import platform_keys
from cellcommons.catalogue import service as catalogue
from cellcommons.catalogue.schemas import InstitutionIn
from cellcommons.db import Database
from cellcommons.demo.consortium import INSTITUTIONS
from cellcommons.institutions import clients
from cellcommons.institutions.models import ClientAssertionJti, MachineClient

LEIDEN, MAPLE = INSTITUTIONS[0]["slug"], INSTITUTIONS[2]["slug"]


class ShortLivedPrivateKeyJWT(PrivateKeyJWT):
    """Authlib's private_key_jwt with a one-minute assertion (its default is an hour; the platform takes at most
    CELLCOMMONS_CLIENT_ASSERTION_MAX_LIFETIME, five minutes by default)."""

    def sign(self, auth, token_endpoint):
        return private_key_jwt_sign(
            auth.client_secret, auth.client_id, token_endpoint, alg=self.alg, header=self.headers, expires_in=60
        )


class Served:
    """The API on 127.0.0.1 and a free port (uvicorn in a thread, lifespan on), and a Database to set things up."""

    def __init__(self, settings, port: int = 0):  # a port: serve again where a stopped instance was
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", port))
        self.base_url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self.settings = settings.model_copy(update={"public_url": self.base_url})
        self.token_endpoint = f"{self.base_url}/oauth/token"
        config = uvicorn.Config(create_app(self.settings), log_level="warning", access_log=False, lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def start(self) -> Served:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            assert self._thread.is_alive() and time.monotonic() < deadline, "the API did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._socket.close()


@pytest.fixture
async def served(fresh_settings):
    database = Database(fresh_settings)
    async with database.unit_of_work() as session:
        for institution in INSTITUTIONS[:3]:
            await catalogue.save_institution(session, InstitutionIn(**institution), origin="test")
    app = await asyncio.to_thread(Served(fresh_settings).start)
    app.database = database
    yield app
    await asyncio.to_thread(app.stop)
    await database.dispose()


async def _add(served, slug=LEIDEN, **kwargs) -> clients.NewClient:
    async with served.database.unit_of_work() as session:
        return await clients.add_client(session, institution_slug=slug, **kwargs)


async def _events(served, action):
    async with served.database.unit_of_work() as session:
        return (await session.scalars(select(AuditEvent).where(AuditEvent.action == action))).all()


def _oauth(client_id, credential, **kwargs) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(client_id, credential, timeout=10, **kwargs)


async def _fetch(served, client_id, secret, **params):
    async with _oauth(client_id, secret, token_endpoint_auth_method="client_secret_basic") as oauth:
        return await oauth.fetch_token(served.token_endpoint, grant_type="client_credentials", **params)


async def _whoami(served, access_token) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(f"{served.base_url}/whoami", headers={"Authorization": f"Bearer {access_token}"})


def _assertion_form(assertion: str) -> dict[str, str]:
    """A token request authenticated by a private_key_jwt assertion, as posted to the token endpoint."""
    return {"grant_type": "client_credentials", "client_assertion_type": clients.ASSERTION_TYPE,
            "client_assertion": assertion}  # fmt: skip


async def _refused(served, client_id, secret, **params) -> OAuthError:
    with pytest.raises(OAuthError) as caught:
        await _fetch(served, client_id, secret, **params)
    return caught.value


async def test_client_secret_basic_token_maps_to_the_registered_institution_and_roles(served):
    added = await _add(served, roles=["submitter", "steward"], name="nightly harvest")
    async with _oauth(added.client.client_id, added.secret, token_endpoint_auth_method="client_secret_basic") as oauth:
        token = await oauth.fetch_token(served.token_endpoint, grant_type="client_credentials")
        assert token["token_type"] == "Bearer" and token["expires_in"] == served.settings.access_token_lifetime
        assert token["scope"] == "reader steward submitter"
        # The OAuth client sends the token itself: the API sees the client's registration.
        me = (await oauth.get(f"{served.base_url}/whoami")).json()
    assert me == {
        "signed_in": True,
        "institution": LEIDEN,
        "subject": added.client.client_id,
        "roles": ["reader", "steward", "submitter"],
        "client_id": added.client.client_id,
        "orcid": None,  # a machine client has none
    }
    header = jwt.decode(token["access_token"], _served_keys(served)).header
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256"

    (issued,) = await _events(served, "auth.client_token_issued")
    assert issued.actor == f"client:{added.client.client_id}" and issued.institution == LEIDEN
    assert issued.details["auth_method"] == "client_secret_basic"
    audit_text = str(issued.details)
    assert added.secret not in audit_text and token["access_token"] not in audit_text
    (sign_in,) = await _events(served, "auth.sign_in")
    assert sign_in.actor == f"client:{added.client.client_id}" and sign_in.institution == LEIDEN


def _served_keys(served) -> KeySet:
    """The served JWKS: tokens are checked with what partners would download."""
    keys = httpx.get(f"{served.base_url}/.well-known/jwks.json", timeout=10).json()
    return KeySet.import_key_set(keys)


async def test_claims_cannot_move_a_client_to_another_institution_or_role(served):
    added = await _add(served, roles=["submitter"])
    token = await _fetch(served, added.client.client_id, added.secret, scope="reader")
    me = (await _whoami(served, token["access_token"])).json()
    assert me["institution"] == LEIDEN and me["roles"] == ["reader"]  # the scope narrows the registered roles
    # A token signed by anyone but the platform, naming the platform as issuer and another institution: refused.
    claims = jwt.decode(token["access_token"], _served_keys(served)).claims
    forged_key = ECKey.generate_key("P-256", auto_kid=True)
    kid = jwt.decode(token["access_token"], _served_keys(served)).header["kid"]
    forged = jwt.encode(
        {"alg": "ES256", "typ": "at+jwt", "kid": kid},
        {**claims, "scope": "reader submitter steward institution_admin", "institution": MAPLE},
        forged_key,
    )
    refused = await _whoami(served, forged)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_token"


async def test_private_key_jwt_with_authlib(served):
    private = RSAKey.generate_key(2048, auto_kid=True)
    added = await _add(served, slug=MAPLE, roles=["steward"], public_jwk=private.as_dict(private=False))
    assert added.secret is None
    auth = ShortLivedPrivateKeyJWT(served.token_endpoint)
    async with _oauth(added.client.client_id, private, token_endpoint_auth_method=auth) as oauth:
        token = await oauth.fetch_token(served.token_endpoint, grant_type="client_credentials")
        me = (await oauth.get(f"{served.base_url}/whoami")).json()
    assert me["institution"] == MAPLE and me["roles"] == ["reader", "steward"]
    assert token["scope"] == "reader steward"
    (issued,) = await _events(served, "auth.client_token_issued")
    assert issued.details["auth_method"] == "private_key_jwt" and issued.institution == MAPLE


async def test_a_weak_rsa_key_registered_before_sizes_were_checked_gets_no_token(served):
    private = RSAKey.generate_key(2048, auto_kid=True)
    added = await _add(served, public_jwk=private.as_dict(private=False))
    weak = RSAKey.import_key(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    async with served.database.unit_of_work() as session:  # as stored before registration checked the size
        stored = await session.scalar(select(MachineClient).where(MachineClient.client_id == added.client.client_id))
        stored.public_jwk = weak.as_dict(private=False) | {"kid": private.kid}
    assertion = private_key_jwt_sign(weak, added.client.client_id, served.token_endpoint, alg="RS256", expires_in=60)
    form = _assertion_form(assertion)
    async with httpx.AsyncClient(timeout=10) as http:
        refused = await http.post(served.token_endpoint, data=form)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"


async def test_a_replayed_assertion_is_refused_and_its_jti_is_kept_in_postgres(served):
    private = ECKey.generate_key("P-256", auto_kid=True)
    added = await _add(served, public_jwk=private.as_dict(private=False))
    client_id = added.client.client_id
    assertion = private_key_jwt_sign(private, client_id, served.token_endpoint, alg="ES256", expires_in=60)
    form = _assertion_form(assertion)
    async with httpx.AsyncClient(timeout=10) as http:
        first = await http.post(served.token_endpoint, data=form)
        assert first.status_code == 200, first.text
        replay = await http.post(served.token_endpoint, data=form)
        assert replay.status_code == 401 and replay.json()["error"] == "invalid_client"
        async with served.database.unit_of_work() as session:
            jtis = (await session.scalars(select(ClientAssertionJti.client_id))).all()
        assert jtis == [client_id]

        def signed(**overrides):
            claims = {"jti": f"j-{time.monotonic_ns()}", **overrides}
            return {**form, "client_assertion": private_key_jwt_sign(
                private, client_id, served.token_endpoint, alg="ES256", claims=claims, expires_in=60)}  # fmt: skip

        # aud must be the token endpoint or the issuer; exp must be near; iss = sub = client_id
        assert (await http.post(served.token_endpoint, data=signed(aud=served.base_url))).status_code == 200
        for bad in (
            {"aud": "https://elsewhere.example/token"},
            {"exp": int(time.time()) + 3600},
            {"exp": int(time.time()) - 3600},
            {"iss": "someone-else"},
        ):
            refused = await http.post(served.token_endpoint, data=signed(**bad))
            assert refused.status_code == 401 and refused.json()["error"] == "invalid_client", bad
    reasons = [e.details["reason"] for e in await _events(served, "auth.client_token_refused")]
    assert reasons[0] == "assertion replayed (jti seen before)"


async def test_a_wrong_secret_and_an_unknown_client_get_the_same_answer(served):
    added = await _add(served)
    wrong = await _refused(served, added.client.client_id, "not-the-secret")
    unknown = await _refused(served, "nobody-here", "whatever")
    assert wrong.error == unknown.error == "invalid_client"
    assert wrong.description == unknown.description
    async with httpx.AsyncClient(timeout=10) as http:
        answers = [
            await http.post(served.token_endpoint, data={"grant_type": "client_credentials"}, auth=credentials)
            for credentials in ((added.client.client_id, "not-the-secret"), ("nobody-here", "whatever"))
        ]
    assert {a.status_code for a in answers} == {401}
    assert answers[0].json() == answers[1].json()
    assert all(a.headers["www-authenticate"].startswith("Basic ") for a in answers)
    assert all(a.headers["cache-control"] == "no-store" for a in answers)
    refusals = await _events(served, "auth.client_token_refused")
    assert [e.details["reason"] for e in refusals[-2:]] == ["wrong secret", "unknown, revoked or not a secret client"]
    assert all("not-the-secret" not in str(e.details) for e in refusals)


async def test_a_revoked_client_gets_no_token_and_its_tokens_stop_working(served):
    added = await _add(served, roles=["submitter"])
    token = await _fetch(served, added.client.client_id, added.secret)
    assert (await _whoami(served, token["access_token"])).status_code == 200
    async with served.database.unit_of_work() as session:
        await clients.revoke_client(session, added.client.client_id)
    refused = await _refused(served, added.client.client_id, added.secret)
    assert refused.error == "invalid_client"
    rejected = await _whoami(served, token["access_token"])
    assert rejected.status_code == 401 and rejected.json()["error"]["code"] == "invalid_token"


async def test_key_rotation_keeps_old_tokens_valid_and_publishes_both_keys(served):
    added = await _add(served, roles=["steward"])
    old = await _fetch(served, added.client.client_id, added.secret)
    assert (await _whoami(served, old["access_token"])).status_code == 200
    async with served.database.unit_of_work() as session:
        new_kid, retired = await platform_keys.rotate_signing_key(session, served.settings)
    new = await _fetch(served, added.client.client_id, added.secret)
    old_kid = jwt.decode(old["access_token"], _served_keys(served)).header["kid"]
    assert jwt.decode(new["access_token"], _served_keys(served)).header["kid"] == new_kid != old_kid
    assert [kid for kid, _ in retired] == [old_kid]
    async with httpx.AsyncClient(timeout=10) as http:
        jwks = (await http.get(f"{served.base_url}/.well-known/jwks.json")).json()
    assert {k["kid"] for k in jwks["keys"]} == {old_kid, new_kid}
    assert all("d" not in k for k in jwks["keys"])  # public halves only
    for token in (old, new):
        me = await _whoami(served, token["access_token"])
        assert me.status_code == 200 and me.json()["roles"] == ["reader", "steward"]


async def test_invalid_scope(served):
    added = await _add(served, roles=["submitter"])
    for scope in ("steward", "platform_admin", "reader something-else"):
        refused = await _refused(served, added.client.client_id, added.secret, scope=scope)
        assert refused.error == "invalid_scope", scope
    # RFC 6749 §5.2: a malformed scope is invalid_scope too (not invalid_request): not UTF-8, empty, empty tokens.
    form = {"content-type": "application/x-www-form-urlencoded"}
    async with httpx.AsyncClient(timeout=10) as http:
        for scope in (b"%FF", b"", b"reader%20%20submitter", b"%22reader%22"):
            answer = await http.post(
                served.token_endpoint,
                content=b"grant_type=client_credentials&scope=" + scope,
                headers=form,
                auth=(added.client.client_id, added.secret),
            )
            assert answer.status_code == 400 and answer.json()["error"] == "invalid_scope", scope


async def test_unsupported_grant_type_and_malformed_requests(served):
    added = await _add(served)
    async with _oauth(added.client.client_id, added.secret, token_endpoint_auth_method="client_secret_basic") as oauth:
        with pytest.raises(OAuthError) as caught:
            await oauth.fetch_token(served.token_endpoint, grant_type="password", username="u", password="p")
    assert caught.value.error == "unsupported_grant_type"
    assert "password" not in (caught.value.description or "")
    credentials = (added.client.client_id, added.secret)
    async with httpx.AsyncClient(timeout=10) as http:
        cases = [
            ({"data": {}}, "invalid_request"),  # no grant_type
            ({"json": {"grant_type": "client_credentials"}}, "invalid_request"),  # not a form
            ({"content": b"grant_type=client_credentials&grant_type=client_credentials"}, "invalid_request"),
            ({"data": {"grant_type": "client_credentials", "client_assertion": "x"}}, "invalid_request"),  # two methods
        ]
        for kwargs, error in cases:
            headers = {"content-type": "application/x-www-form-urlencoded"} if "content" in kwargs else None
            answer = await http.post(served.token_endpoint, auth=credentials, headers=headers, **kwargs)
            assert answer.status_code == 400 and answer.json()["error"] == error, kwargs
        no_auth = await http.post(served.token_endpoint, data={"grant_type": "client_credentials"})
        assert no_auth.status_code == 401 and no_auth.json()["error"] == "invalid_client"
        # Hostile credentials are refused like wrong ones: never a 500.
        grant = {"grant_type": "client_credentials"}
        for raw in (b"\xff\xfe:x", b"a\x00b:x", b"no-colon"):
            header = {"Authorization": "Basic " + base64.b64encode(raw).decode()}
            answer = await http.post(served.token_endpoint, data=grant, headers=header)
            assert answer.status_code == 401 and answer.json()["error"] == "invalid_client", raw
        for authorization in ("Basic !!!", "Bearer abc"):
            answer = await http.post(served.token_endpoint, data=grant, headers={"Authorization": authorization})
            assert answer.status_code == 401, authorization
        assertion_type = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        for assertion in ("a.b.c", "x" * 9000, jwt.encode({"alg": "HS256"}, {"sub": "a\x00b"}, OctKey.generate_key())):
            answer = await http.post(
                served.token_endpoint,
                data={**grant, "client_assertion_type": assertion_type, "client_assertion": assertion},
            )
            assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"


async def test_authorization_server_metadata_and_jwks(served, monkeypatch):
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # loopback http in tests; production must be https
    async with httpx.AsyncClient(timeout=10) as http:
        document = (await http.get(f"{served.base_url}/.well-known/oauth-authorization-server")).json()
        jwks = (await http.get(document["jwks_uri"])).json()
    metadata = AuthorizationServerMetadata(document)
    checks = ("issuer", "token_endpoint", "jwks_uri", "scopes_supported", "grant_types_supported",
              "token_endpoint_auth_methods_supported", "token_endpoint_auth_signing_alg_values_supported")  # fmt: skip
    for check in checks:
        getattr(metadata, f"validate_{check}")()
    assert document["issuer"] == served.base_url
    assert document["token_endpoint"] == served.token_endpoint
    assert document["grant_types_supported"] == ["client_credentials"]
    assert set(document["token_endpoint_auth_methods_supported"]) == {"client_secret_basic", "private_key_jwt"}
    assert len(jwks["keys"]) == 1 and jwks["keys"][0]["alg"] == "ES256"  # created when the API started
