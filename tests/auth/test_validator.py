"""Bearer-token validation against issuers served over real HTTP on loopback (the dev identity provider)."""

import base64
import hashlib
import hmac
import json
import time

import pytest

from cellcommons.auth.principal import Role
from cellcommons.auth.validator import TokenRejected, TokenValidator

LEIDEN, LOWLANDS, MAPLE, STROMA = "leiden-scgt", "lowlands-regmed", "maple-ccrm", "stroma-bio"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def _rejected(validator, token) -> str:
    with pytest.raises(TokenRejected) as caught:
        await validator.validate(token)
    assert caught.value.status == 401 and caught.value.code == "invalid_token"
    return caught.value.message


@pytest.mark.parametrize("slug", [LEIDEN, LOWLANDS, MAPLE, STROMA])
async def test_each_issuer_vouches_for_its_own_institution_with_mapped_roles(dev_idp, trusted, validator, slug):
    principal = await validator.validate(dev_idp.issue_access_token(slug, "sam"))
    assert principal.institution_slug == slug
    assert principal.institution_id == trusted[dev_idp.issuer(slug)].institution_id
    assert principal.roles == {Role.reader, Role.submitter}
    assert principal.issuer == dev_idp.issuer(slug)
    assert principal.token_id and principal.subject


async def test_unmapped_claim_values_give_no_role_beyond_reader(dev_idp, validator):
    for slug in (LEIDEN, LOWLANDS):
        principal = await validator.validate(dev_idp.issue_access_token(slug, "gus"))
        assert principal.roles == {Role.reader}


async def test_the_institution_comes_from_the_registry_never_from_a_claim(dev_idp, validator):
    token = dev_idp.issue_access_token(LEIDEN, "stella", institution=MAPLE, tenant=MAPLE)
    principal = await validator.validate(token)
    assert principal.institution_slug == LEIDEN


async def test_an_unknown_issuer_is_rejected_without_any_outbound_request(clean_dev_idp, validator):
    idp = clean_dev_idp
    token = idp.issue_access_token(LEIDEN, "alice", iss="http://127.0.0.1:1/realms/nobody")
    before = sum(idp.requests.values())
    assert await _rejected(validator, token) == "unknown issuer"
    assert sum(idp.requests.values()) == before


async def test_one_institutions_key_cannot_sign_for_another_issuer(dev_idp, validator):
    claims = {**dev_idp.access_token_claims(LEIDEN, "stella"), "iss": dev_idp.issuer(MAPLE)}
    token = dev_idp.sign(LEIDEN, dev_idp.header(LEIDEN), claims)
    assert await _rejected(validator, token) in {"unknown signing key", "bad signature"}
    # Even with the victim's kid in the header, the signature does not verify.
    forged = dev_idp.sign(LEIDEN, dev_idp.header(LEIDEN, kid=dev_idp.kid(MAPLE)), claims)
    assert await _rejected(validator, forged) == "bad signature"


async def test_alg_none_and_hs256_keyed_with_the_public_key_are_refused(dev_idp, validator):
    claims = dev_idp.access_token_claims(LEIDEN, "ian")
    unsigned = dev_idp.sign(LEIDEN, {"alg": "none", "typ": "at+jwt"}, claims)
    assert await _rejected(validator, unsigned) == "algorithm not allowed"
    # The classic confusion: HMAC keyed with the issuer's public key, which anyone can download.
    public_pem = dev_idp.private_key(LEIDEN).as_pem(private=False)
    header = {"alg": "HS256", "typ": "at+jwt", "kid": dev_idp.kid(LEIDEN)}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    confused = f"{signing_input}.{_b64(mac)}"
    assert await _rejected(validator, confused) == "algorithm not allowed"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"aud": "another-service"}, "wrong audience"),
        ({"aud": None}, "wrong audience"),
        ({"aud": ["another-service", "yet-another"]}, "wrong audience"),
        ({"exp": None}, "exp missing"),
        ({"exp": "tomorrow"}, "exp missing"),
        ({"exp": int(time.time()) - 120}, "token expired"),
        ({"nbf": int(time.time()) + 600}, "token not yet valid"),
        ({"iat": int(time.time()) + 600}, "token issued in the future"),
        ({"sub": None}, "sub missing"),
    ],
)
async def test_claims_are_checked(dev_idp, validator, overrides, reason):
    assert await _rejected(validator, dev_idp.issue_access_token(LEIDEN, "alice", **overrides)) == reason


async def test_iss_as_a_list_is_refused(dev_idp, validator):
    token = dev_idp.issue_access_token(LEIDEN, "alice", iss=[dev_idp.issuer(LEIDEN)])
    assert await _rejected(validator, token) == "iss must be a single string"


async def test_clock_skew_within_the_leeway_is_accepted(dev_idp, validator):
    token = dev_idp.issue_access_token(LEIDEN, "alice", exp=int(time.time()) - 10, nbf=int(time.time()) + 10)
    assert (await validator.validate(token)).institution_slug == LEIDEN


async def test_an_audience_list_containing_ours_is_accepted(dev_idp, validator):
    token = dev_idp.issue_access_token(LEIDEN, "alice", aud=["account", "cellcommons"])
    assert (await validator.validate(token)).institution_slug == LEIDEN


@pytest.mark.parametrize("name", ["jku", "x5u", "jwk", "x5c"])
async def test_key_location_headers_are_never_followed(clean_dev_idp, validator, name):
    idp = clean_dev_idp
    url = idp.base_url + "/attacker/keys"
    header = idp.header(LEIDEN, **{name: url if name in {"jku", "x5u"} else ["x"]})
    token = idp.sign(LEIDEN, header, idp.access_token_claims(LEIDEN, "alice"))
    assert await _rejected(validator, token) == f"header {name} is not accepted"
    assert idp.requests["/attacker/keys"] == 0


async def test_an_unknown_critical_header_is_refused(dev_idp, validator):
    header = dev_idp.header(LEIDEN, crit=["exp-ext"], **{"exp-ext": 1})
    token = dev_idp.sign(LEIDEN, header, dev_idp.access_token_claims(LEIDEN, "alice"))
    assert await _rejected(validator, token) == "unknown critical header"


async def test_oversized_and_malformed_tokens_are_refused(dev_idp, validator):
    huge = dev_idp.issue_access_token(LEIDEN, "alice", padding="x" * 9000)
    assert await _rejected(validator, huge) == "token too large"
    assert await _rejected(validator, "not.a.jwt") == "malformed token"
    assert await _rejected(validator, "garbage") == "malformed token"


def _deep(depth: int = 1500) -> str:
    return "[" * depth + "]" * depth  # about 3 KB, within the size limit, past the JSON parser's recursion limit


@pytest.mark.parametrize("part", ["header", "payload"])
async def test_json_nested_too_deeply_is_a_malformed_token(dev_idp, validator, part):
    header = '{"alg":"RS256","typ":"at+jwt"' + (f',"x":{_deep()}' if part == "header" else "") + "}"
    payload = '{"iss":' + json.dumps(dev_idp.issuer(LEIDEN)) + (f',"x":{_deep()}' if part == "payload" else "") + "}"
    token = f"{_b64(header.encode())}.{_b64(payload.encode())}.{_b64(b'sig')}"
    assert await _rejected(validator, token) == "malformed token"


async def test_a_tampered_payload_fails_the_signature(dev_idp, validator):
    token = dev_idp.issue_access_token(LEIDEN, "alice")
    other = dev_idp.issue_access_token(LEIDEN, "ian")
    head, _, signature = token.split(".")
    assert await _rejected(validator, f"{head}.{other.split('.')[1]}.{signature}") == "bad signature"


async def test_an_id_token_is_not_an_access_token(dev_idp, validator):
    token = dev_idp.issue_id_token(LEIDEN, "alice", client_id="cellcommons")
    assert await _rejected(validator, token) == "not an access token"


async def test_an_issuer_without_typ_is_told_apart_by_its_claim_rule(dev_idp, trusted, http):
    from dataclasses import replace

    issuer = replace(trusted[dev_idp.issuer(MAPLE)], access_token_claim="token_use", access_token_value="access")

    async def lookup(url):
        return issuer if url == issuer.issuer_url else None

    validator = TokenValidator(lookup, http)
    for token_use, accepted in (("access", True), ("id", False)):
        claims = {**dev_idp.access_token_claims(MAPLE, "alice"), "token_use": token_use}
        token = dev_idp.sign(MAPLE, dev_idp.header(MAPLE, typ="JWT"), claims)
        if accepted:
            assert (await validator.validate(token)).institution_slug == MAPLE
        else:
            assert await _rejected(validator, token) == "not an access token"


async def test_key_rotation_costs_one_refetch_and_old_keys_work_until_retired(clean_dev_idp, validator):
    idp = clean_dev_idp
    jwks = idp.jwks_path(LEIDEN)
    old_token = idp.issue_access_token(LEIDEN, "alice")
    await validator.validate(old_token)
    assert idp.requests[jwks] == 1
    idp.rotate_key(LEIDEN)
    validator.refetch_interval = 0  # rotation happened long after the last fetch
    new_token = idp.issue_access_token(LEIDEN, "alice")
    await validator.validate(new_token)
    await validator.validate(new_token)
    await validator.validate(old_token)
    assert idp.requests[jwks] == 2


async def test_unknown_kids_refetch_at_most_once_per_interval(clean_dev_idp, validator):
    idp = clean_dev_idp
    jwks = idp.jwks_path(LEIDEN)
    await validator.validate(idp.issue_access_token(LEIDEN, "alice"))
    claims = idp.access_token_claims(LEIDEN, "alice")
    for n in range(5):
        token = idp.sign(LEIDEN, idp.header(LEIDEN, kid=f"made-up-{n}"), claims)
        assert await _rejected(validator, token) == "unknown signing key"
    assert idp.requests[jwks] <= 2


async def test_a_jwks_outage_leaves_cached_keys_working(clean_dev_idp, validator):
    idp = clean_dev_idp
    await validator.validate(idp.issue_access_token(LEIDEN, "alice"))
    issuer = idp.issuer(LEIDEN)
    assert validator.key_status() == {issuer: "ok: 1 keys"}
    idp.set_jwks_down(LEIDEN, True)
    validator.refetch_interval = 0
    assert (await validator.validate(idp.issue_access_token(LEIDEN, "stella"))).roles >= {Role.steward}
    idp.rotate_key(LEIDEN)
    assert await _rejected(validator, idp.issue_access_token(LEIDEN, "alice")) == "unknown signing key"
    assert validator.key_status()[issuer].startswith("refresh failing (HTTPStatusError")
    assert validator.key_status()[issuer].endswith("its 1 cached keys still verify tokens")
    idp.set_jwks_down(LEIDEN, False)
    assert (await validator.validate(idp.issue_access_token(LEIDEN, "alice"))).institution_slug == LEIDEN
    assert validator.key_status()[issuer].startswith("ok: ")
