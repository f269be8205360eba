"""The development identity provider, exercised over real HTTP on loopback as a client would."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from cellcommons.auth.dev_idp import (
    DEMO_USERS,
    PORTAL_CLIENT_ID,
    Client,
    DevIdentityProvider,
    demo_user,
    role_mapping,
)
from cellcommons.auth.principal import Role
from cellcommons.settings import Environment, Settings, SettingsError

LEIDEN = "leiden-scgt"  # groups claim, RS256
LOWLANDS = "lowlands-regmed"  # Keycloak realm_access.roles
STROMA = "stroma-bio"  # ES256
CALLBACK = "http://127.0.0.1:8123/auth/callback"


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(follow_redirects=False, timeout=10) as client:
        yield client


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, create_s256_code_challenge(verifier)


def _authorize(http: httpx.Client, idp: DevIdentityProvider, slug: str, **params: str) -> httpx.Response:
    query = {
        "response_type": "code",
        "client_id": PORTAL_CLIENT_ID,
        "redirect_uri": CALLBACK,
        "state": "st-123",
        "scope": "openid profile",
        **params,
    }
    return http.get(idp.authorization_endpoint(slug), params={k: v for k, v in query.items() if v is not None})


def _location_query(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["location"]).query).items()}


def _code(http: httpx.Client, idp: DevIdentityProvider, slug: str, username: str = "stella", **params: str):
    verifier, challenge = _pkce()
    response = _authorize(
        http, idp, slug, login_hint=username, code_challenge=challenge, code_challenge_method="S256", **params
    )
    return _location_query(response)["code"], verifier


def _redeem(http: httpx.Client, idp: DevIdentityProvider, slug: str, code: str, verifier: str, **form: str):
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CALLBACK,
        "client_id": PORTAL_CLIENT_ID,
        "code_verifier": verifier,
        **form,
    }
    return http.post(idp.token_endpoint(slug), data=data)


def _served_keys(http: httpx.Client, idp: DevIdentityProvider, slug: str) -> KeySet:
    return KeySet.import_key_set(http.get(idp.jwks_uri(slug)).raise_for_status().json())


def _mapped_roles(claims: dict, slug: str) -> set[Role]:
    """What the platform will do: follow the registered claim path, map known values, ignore the rest."""
    mapping = role_mapping(slug)
    value: object = claims
    for part in mapping.path:
        value = value[part]  # type: ignore[index]
    return {mapping.values[v] for v in value if v in mapping.values}  # type: ignore[union-attr]


def test_discovery_documents_name_the_endpoints_and_what_is_supported(http, dev_idp):
    for slug in (LEIDEN, LOWLANDS, STROMA):
        doc = http.get(dev_idp.discovery_url(slug)).raise_for_status().json()
        issuer = f"http://127.0.0.1:{dev_idp.port}/realms/{slug}"
        assert doc["issuer"] == issuer == dev_idp.issuer(slug)
        for endpoint in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            assert doc[endpoint].startswith(issuer + "/protocol/openid-connect/")
        assert doc["response_types_supported"] == ["code"]
        assert doc["grant_types_supported"] == ["authorization_code"]
        assert doc["code_challenge_methods_supported"] == ["S256"]
        assert doc["token_endpoint_auth_methods_supported"] == ["none", "client_secret_basic"]
    assert http.get(dev_idp.discovery_url(LEIDEN)).json()["id_token_signing_alg_values_supported"] == ["RS256"]
    assert http.get(dev_idp.discovery_url(STROMA)).json()["id_token_signing_alg_values_supported"] == ["ES256"]
    assert http.get(f"{dev_idp.base_url}/realms/nowhere/.well-known/openid-configuration").status_code == 404


def test_jwks_serves_public_keys_only(http, dev_idp):
    for slug in dev_idp.slugs:
        keys = http.get(dev_idp.jwks_uri(slug)).raise_for_status().json()["keys"]
        assert len(keys) == 1
        key = keys[0]
        assert key["use"] == "sig" and key["kid"] == dev_idp.kid(slug) and key["alg"] == dev_idp.algorithm(slug)
        assert not {"d", "p", "q", "dp", "dq", "qi"} & key.keys(), f"{slug} publishes private key material"
        if key["kty"] == "RSA":
            assert len(base64.urlsafe_b64decode(key["n"] + "==")) * 8 == 2048
        else:
            assert (slug, key["kty"], key["crv"]) == (STROMA, "EC", "P-256")


@pytest.mark.parametrize("slug", [LEIDEN, LOWLANDS, "maple-ccrm", STROMA])
def test_code_flow_with_login_hint_gives_tokens_that_verify_against_the_served_jwks(http, dev_idp, slug):
    verifier, challenge = _pkce()
    response = _authorize(
        http, dev_idp, slug, login_hint="stella", nonce="n-42", code_challenge=challenge, code_challenge_method="S256"
    )
    redirect = _location_query(response)
    assert response.headers["location"].startswith(CALLBACK + "?")
    assert redirect["state"] == "st-123" and redirect["iss"] == dev_idp.issuer(slug)

    tokens = _redeem(http, dev_idp, slug, redirect["code"], verifier).raise_for_status().json()
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == dev_idp.token_lifetime
    keys = _served_keys(http, dev_idp, slug)
    algorithm = dev_idp.algorithm(slug)

    access = jwt.decode(tokens["access_token"], keys, algorithms=[algorithm])
    assert access.header == {"typ": "at+jwt", "alg": algorithm, "kid": dev_idp.kid(slug)}
    claims = access.claims
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": dev_idp.issuer(slug)},
        aud={"essential": True, "value": "cellcommons"},
        exp={"essential": True},
    ).validate(claims)
    assert claims["sub"] == dev_idp.subject(slug, "stella")
    assert len({dev_idp.subject(s, "stella") for s in dev_idp.slugs}) == len(dev_idp.slugs)  # unique per issuer
    assert claims["client_id"] == PORTAL_CLIENT_ID and claims["scope"] == "openid profile"
    assert {"iat", "nbf", "jti"} <= claims.keys()
    assert _mapped_roles(claims, slug) == {Role.reader, Role.steward}
    assert ("realm_access" in claims) == (slug == LOWLANDS) and ("groups" in claims) == (slug != LOWLANDS)

    identity = jwt.decode(tokens["id_token"], keys, algorithms=[algorithm])
    assert identity.header["typ"] == "JWT"
    assert identity.claims["aud"] == PORTAL_CLIENT_ID and identity.claims["nonce"] == "n-42"
    assert identity.claims["sub"] == claims["sub"]
    assert not {"client_id", "scope"} & identity.claims.keys()


def test_every_demo_user_gets_exactly_their_roles_through_the_mapping(dev_idp):
    keys = KeySet.import_key_set(dev_idp.jwks(LOWLANDS))
    for user in DEMO_USERS:
        claims = jwt.decode(dev_idp.issue_access_token(LOWLANDS, user.username), keys).claims
        assert _mapped_roles(claims, LOWLANDS) == set(user.roles)
    # unmapped values a real directory sends are present, so the platform must ignore them rather than fail
    assert "offline_access" in claims["realm_access"]["roles"]
    assert role_mapping(LEIDEN).claim_path == "groups" and role_mapping(LOWLANDS).claim_path == "realm_access.roles"


def test_a_code_is_redeemed_once(http, dev_idp):
    code, verifier = _code(http, dev_idp, LEIDEN)
    assert _redeem(http, dev_idp, LEIDEN, code, verifier).status_code == 200
    again = _redeem(http, dev_idp, LEIDEN, code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_a_wrong_code_verifier_is_refused_and_spends_the_code(http, dev_idp):
    code, verifier = _code(http, dev_idp, LEIDEN)
    wrong = _redeem(http, dev_idp, LEIDEN, code, _pkce()[0])
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    assert "access_token" not in wrong.json()
    # no second guess: the code is gone even for the right verifier
    assert _redeem(http, dev_idp, LEIDEN, code, verifier).json()["error"] == "invalid_grant"


def test_a_code_for_another_redirect_uri_or_client_is_refused(http, dev_idp):
    code, verifier = _code(http, dev_idp, LEIDEN)
    other = _redeem(http, dev_idp, LEIDEN, code, verifier, redirect_uri="http://127.0.0.1:8123/elsewhere")
    assert other.json()["error"] == "invalid_grant"
    code, verifier = _code(http, dev_idp, LEIDEN)
    assert _redeem(http, dev_idp, LOWLANDS, code, verifier).json()["error"] == "invalid_grant"


def test_an_expired_code_is_refused(http, clean_dev_idp, monkeypatch):
    code, verifier = _code(http, clean_dev_idp, LEIDEN)
    start = clean_dev_idp.clock()
    monkeypatch.setattr(clean_dev_idp, "clock", lambda: start + 61)
    expired = _redeem(http, clean_dev_idp, LEIDEN, code, verifier)
    assert expired.status_code == 400 and expired.json() == {
        "error": "invalid_grant",
        "error_description": "the code has expired",
    }


@pytest.mark.parametrize(
    ("challenge", "method"),
    [("plain", "plain"), ("s256", None), (None, "S256"), (None, None)],
    ids=["plain-method", "method-missing-means-plain", "challenge-missing", "no-pkce"],
)
def test_authorization_without_an_s256_challenge_is_refused(http, dev_idp, challenge, method):
    # a 43-character verifier: as a `plain` challenge it would pass any length or alphabet check
    verifier = secrets.token_urlsafe(32)
    value = {"plain": verifier, "s256": create_s256_code_challenge(verifier), None: None}[challenge]
    response = _authorize(http, dev_idp, LEIDEN, login_hint="alice", code_challenge=value, code_challenge_method=method)
    redirect = _location_query(response)
    assert redirect["error"] == "invalid_request" and redirect["state"] == "st-123"
    assert "code" not in redirect


def test_unknown_clients_and_unregistered_redirect_uris_are_not_redirected_to(http, dev_idp):
    _, challenge = _pkce()
    pkce = {"code_challenge": challenge, "code_challenge_method": "S256", "login_hint": "alice"}
    for params in ({"client_id": "stranger"}, {"redirect_uri": "https://evil.example/auth/callback"}):
        response = _authorize(http, dev_idp, LEIDEN, **pkce, **params)
        assert response.status_code == 400 and "location" not in response.headers


def test_without_login_hint_a_page_lists_the_demo_users(http, dev_idp):
    _, challenge = _pkce()
    page = _authorize(http, dev_idp, LEIDEN, code_challenge=challenge, code_challenge_method="S256")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for user in DEMO_USERS:
        assert f'name="login_hint" value="{user.username}"' in page.text
    assert f'name="code_challenge" value="{challenge}"' in page.text  # the choice resubmits the same request


def test_loopback_redirect_uris_match_any_port_but_nothing_else():
    client = Client("c", ("http://127.0.0.1/auth/callback",))
    assert client.allows("http://127.0.0.1:51234/auth/callback")
    assert not client.allows("http://127.0.0.1:51234/auth/callback/../x")
    assert not client.allows("http://127.0.0.1:51234/other")
    assert not client.allows("http://evil.example:51234/auth/callback")
    assert not Client("c", ("https://portal.example/cb",)).allows("https://portal.example:8443/cb")


def test_confidential_client_authenticates_with_client_secret_basic(http, dev_idp):
    redirect = "https://portal.example/cb"
    dev_idp.register_client(LEIDEN, "notebook", [redirect], secret="s3cret")
    verifier, challenge = _pkce()
    response = _authorize(
        http, dev_idp, LEIDEN, client_id="notebook", redirect_uri=redirect, login_hint="sam",
        code_challenge=challenge, code_challenge_method="S256",
    )  # fmt: skip
    code = _location_query(response)["code"]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect, "code_verifier": verifier}
    unauthenticated = http.post(dev_idp.token_endpoint(LEIDEN), data={**form, "client_id": "notebook"})
    assert unauthenticated.status_code == 401 and unauthenticated.json()["error"] == "invalid_client"
    wrong = http.post(dev_idp.token_endpoint(LEIDEN), data=form, auth=("notebook", "guess"))
    assert wrong.status_code == 401
    # the code survives failed client authentication (the client never got to present it)
    tokens = http.post(dev_idp.token_endpoint(LEIDEN), data=form, auth=("notebook", "s3cret")).raise_for_status()
    assert jwt.decode(tokens.json()["access_token"], _served_keys(http, dev_idp, LEIDEN)).claims["client_id"] == (
        "notebook"
    )


def test_rotation_keeps_the_old_key_published_until_retired(http, clean_dev_idp):
    idp = clean_dev_idp
    old_kid = idp.kid(LEIDEN)
    old_token = idp.issue_access_token(LEIDEN, "alice")
    new_kid = idp.rotate_key(LEIDEN)
    assert new_kid != old_kid and idp.kid(LEIDEN) == new_kid

    new_token = idp.issue_access_token(LEIDEN, "alice")
    assert jwt.decode(new_token, _served_keys(http, idp, LEIDEN)).header["kid"] == new_kid
    published = _served_keys(http, idp, LEIDEN)
    assert {k.kid for k in published} == {old_kid, new_kid}
    assert jwt.decode(old_token, published).claims["preferred_username"] == "alice"

    idp.retire_old_keys(LEIDEN)
    retired = _served_keys(http, idp, LEIDEN)
    assert [k.kid for k in retired] == [new_kid]
    with pytest.raises(InvalidKeyIdError):
        jwt.decode(old_token, retired)
    assert http.get(idp.jwks_uri(LOWLANDS)).json()["keys"][0]["kid"] == idp.kid(LOWLANDS)  # other issuers untouched


def test_jwks_outage_switch_and_request_counts(http, clean_dev_idp):
    idp = clean_dev_idp
    path = idp.jwks_path(LEIDEN)
    assert idp.requests[path] == 0
    idp.set_jwks_down(LEIDEN, True)
    assert http.get(idp.jwks_uri(LEIDEN)).status_code == 503
    assert http.get(idp.discovery_url(LEIDEN)).status_code == 200
    assert http.get(idp.jwks_uri(LOWLANDS)).status_code == 200
    idp.set_jwks_down(LEIDEN, False)
    assert http.get(idp.jwks_uri(LEIDEN)).json() == idp.jwks(LEIDEN)
    assert idp.requests[path] == 2 and idp.requests[idp.jwks_path(LOWLANDS)] == 1
    # minting a token locally goes over no wire
    idp.issue_access_token(LEIDEN, "alice")
    assert sum(idp.requests.values()) == 4


def test_sign_writes_exactly_the_header_and_claims_given(dev_idp):
    header = {**dev_idp.header(LEIDEN), "crit": ["exp-policy"], "exp-policy": 1, "jku": "https://evil.example/jwks"}
    claims = {"iss": [dev_idp.issuer(LEIDEN), "https://other.example"], "sub": "x"}  # no exp on purpose
    token = dev_idp.sign(LEIDEN, header, claims)
    head, body, signature = token.split(".")
    decode = lambda part: json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # noqa: E731
    assert decode(head) == header and decode(body) == claims
    verified = JWSRegistry.algorithms["RS256"].verify(
        f"{head}.{body}".encode(), base64.urlsafe_b64decode(signature + "=="), dev_idp.private_key(LEIDEN)
    )
    assert verified


def test_claim_overrides_replace_or_drop_claims(dev_idp):
    keys = KeySet.import_key_set(dev_idp.jwks(LEIDEN))
    token = dev_idp.issue_access_token(LEIDEN, "ian", audience="elsewhere", exp=None, scope="openid", jti="fixed")
    claims = jwt.decode(token, keys).claims
    assert "exp" not in claims and claims["aud"] == "elsewhere" and claims["jti"] == "fixed"
    assert claims["scope"] == "openid" and _mapped_roles(claims, LEIDEN) == set(demo_user("ian").roles)


def _production_settings() -> Settings:
    return Settings(
        environment=Environment.production,
        database_url="postgresql://owner@db.example/cc",
        app_database_url="postgresql://app@db.example/cc",
        s3_endpoint="s3.example:443",
        s3_access_key="prod-key",
        s3_secret_key="prod-secret",
        s3_secure=True,
        secret_key="a-production-secret-key-of-enough-length-0123456789",
        public_url="https://cellcommons.example.org",
        signing_key_secret="a-production-signing-key-secret-of-enough-length",
    )


def test_refuses_to_exist_or_start_in_production():
    with pytest.raises(SettingsError, match="never runs with environment=production"):
        DevIdentityProvider(["leiden-scgt"], _production_settings())
    idp = DevIdentityProvider(["leiden-scgt"], Settings(environment=Environment.test))
    idp.settings = _production_settings()
    with pytest.raises(SettingsError), idp:
        pytest.fail("started in production")
    assert idp.port is None


def test_a_provider_of_its_own_serves_the_slugs_it_was_given_and_stops(http):
    with DevIdentityProvider(["alpha", "beta"], Settings(environment=Environment.test)) as idp:
        base = idp.base_url
        assert http.get(idp.discovery_url("beta")).json()["issuer"] == f"{base}/realms/beta"
        assert http.get(f"{base}/realms/leiden-scgt/.well-known/openid-configuration").status_code == 404
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/realms/beta/.well-known/openid-configuration", timeout=2)
