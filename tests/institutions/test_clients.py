"""Machine clients: registration rules, secrets stored hashed and shown once, revocation, the platform's signing
keys, and the `cellcommons institutions` client commands."""

import asyncio
import base64
import json
import os
import re
import subprocess

import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import select

from cellcommons.audit.models import AuditEvent
from cellcommons.auth import platform_keys
from cellcommons.auth.principal import Role
from cellcommons.catalogue import service as catalogue
from cellcommons.catalogue.schemas import InstitutionIn
from cellcommons.db import Database
from cellcommons.demo.consortium import INSTITUTIONS
from cellcommons.errors import Conflict, InvalidInput, NotFound, Unavailable
from cellcommons.institutions import clients
from cellcommons.institutions.models import MachineClient, PlatformSigningKey

LEIDEN = INSTITUTIONS[0]


@pytest.fixture
async def leiden(session):
    return await catalogue.save_institution(session, InstitutionIn(**LEIDEN), origin="test")


async def test_a_secret_client_gets_a_secret_once_and_only_its_hash_is_stored(session, leiden):
    added = await clients.add_client(session, institution_slug=LEIDEN["slug"], roles=["steward"])
    stored = await session.scalar(select(MachineClient).where(MachineClient.client_id == added.client.client_id))
    assert added.secret and len(added.secret) >= 43
    assert stored.secret_hash != added.secret and added.secret not in stored.secret_hash
    assert stored.secret_hash.startswith("$argon2id$") and PasswordHasher().verify(stored.secret_hash, added.secret)
    assert stored.roles == ["reader", "steward"] and stored.auth_method == "client_secret_basic"
    registration = await clients.registration(session, added.client.client_id)
    assert registration.institution_id == leiden.id and registration.roles == {Role.reader, Role.steward}
    event = await session.scalar(select(AuditEvent).where(AuditEvent.action == "client.register"))
    assert event.target == added.client.client_id and added.secret not in json.dumps(event.details)


async def test_rotating_a_secret_retires_the_old_one(session, leiden):
    added = await clients.add_client(session, institution_slug=LEIDEN["slug"])
    new = await clients.rotate_secret(session, added.client.client_id)
    registration = await clients.registration(session, added.client.client_id)
    assert clients._verify_secret(registration.secret_hash, new)
    assert not clients._verify_secret(registration.secret_hash, added.secret)


async def test_a_revoked_client_has_no_registration_and_its_id_is_not_reused(session, leiden):
    added = await clients.add_client(session, institution_slug=LEIDEN["slug"], client_id="leiden-harvester")
    await clients.revoke_client(session, "leiden-harvester")
    assert await clients.registration(session, "leiden-harvester") is None
    with pytest.raises(NotFound):
        await clients.rotate_secret(session, "leiden-harvester")
    with pytest.raises(Conflict):
        await clients.add_client(session, institution_slug=LEIDEN["slug"], client_id=added.client.client_id)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"roles": ["platform_admin"]}, "roles"),
        ({"roles": ["superuser"]}, "roles"),
        ({"client_id": "Has Spaces"}, "client_id"),
        ({"public_jwk": {"kty": "oct", "k": "c2VjcmV0"}}, "public_key"),
        ({"public_jwk": {"kty": "RSA"}}, "public_key"),
    ],
)
async def test_registration_refusals_name_the_field(session, leiden, kwargs, field):
    with pytest.raises(InvalidInput) as caught:
        await clients.add_client(session, institution_slug=LEIDEN["slug"], **kwargs)
    assert caught.value.field == field


async def test_a_private_key_is_never_registered_and_an_unknown_institution_is_named(session, leiden):
    private = ECKey.generate_key("P-256")
    with pytest.raises(InvalidInput, match="private key"):
        await clients.add_client(session, institution_slug=LEIDEN["slug"], public_jwk=private.as_dict(private=True))
    with pytest.raises(InvalidInput, match="private key"):
        clients.read_public_key(private.as_pem(private=True).decode())
    with pytest.raises(NotFound) as caught:
        await clients.add_client(session, institution_slug="nowhere")
    assert caught.value.field == "institution"
    added = await clients.add_client(
        session, institution_slug=LEIDEN["slug"], public_jwk=clients.read_public_key(private.as_pem().decode())
    )
    assert added.secret is None and added.client.public_jwk["kid"] == private.thumbprint()
    assert "d" not in added.client.public_jwk


# A 512-bit RSA public key (`openssl genrsa 512`): what a weak key looks like when it arrives as PEM.
RSA_512_PEM = """-----BEGIN PUBLIC KEY-----
MFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAL1Sf8tIgQY6cBvB6yQwqi5TtaKGQTPb
ItG+sJJNdFO6sJ4z+//DDqNwP7DfZbCa1d27+7WK3qoNNxjvv6+UDXMCAwEAAQ==
-----END PUBLIC KEY-----"""


@pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")  # joserfc warns when it reads a weak key
async def test_an_rsa_key_under_2048_bits_is_refused_naming_the_field(session, leiden):
    short = rsa.generate_private_key(public_exponent=65537, key_size=2047).public_key()
    weak_keys = [clients.read_public_key(RSA_512_PEM), RSAKey.import_key(short).as_dict(private=False)]
    for public_jwk in weak_keys:
        with pytest.raises(InvalidInput, match="2048 bits") as caught:
            await clients.add_client(session, institution_slug=LEIDEN["slug"], public_jwk=public_jwk)
        assert caught.value.field == "public_key"
    assert await session.scalar(select(MachineClient.id)) is None  # nothing registered
    huge = {"kty": "RSA", "e": "AQAB", "n": base64.urlsafe_b64encode(b"\xc5" * 2051).rstrip(b"=").decode()}
    with pytest.raises(InvalidInput, match="more than 16384 bits cannot be verified"):  # a 16 408-bit modulus
        await clients.add_client(session, institution_slug=LEIDEN["slug"], public_jwk=huge)
    strong = RSAKey.generate_key(2048).as_dict(private=False)
    added = await clients.add_client(session, institution_slug=LEIDEN["slug"], public_jwk=strong)
    assert added.client.auth_method == "private_key_jwt"


async def test_signing_keys_are_sealed_and_rotation_keeps_the_old_key_published(session, settings):
    key = await platform_keys.current_signing_key(session, settings)
    assert await platform_keys.current_signing_key(session, settings) == key  # created once
    row = await session.get(PlatformSigningKey, key.kid)
    assert key.as_dict(private=True)["d"] not in row.sealed_private_jwk and "d" not in row.public_jwk
    new_kid, retired = await platform_keys.rotate_signing_key(session, settings)
    assert [kid for kid, _ in retired] == [key.kid]
    assert (await platform_keys.current_signing_key(session, settings)).kid == new_kid
    published = await platform_keys.published_jwks(session)
    assert [k["kid"] for k in published["keys"]] == [new_kid, key.kid]
    other = settings.model_copy(update={"signing_key_secret": type(settings.signing_key_secret)("x" * 40)})
    platform_keys._unseal.cache_clear()
    with pytest.raises(Unavailable, match="CELLCOMMONS_SIGNING_KEY_SECRET"):
        await platform_keys.current_signing_key(session, other)


def test_production_refuses_the_development_signing_secret_and_a_plain_http_issuer():
    from cellcommons.settings import SettingsError, load_settings

    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, environment="production", public_url="http://cellcommons.example.org")
    problems = "\n".join(caught.value.problems)
    assert "CELLCOMMONS_SIGNING_KEY_SECRET is the development secret" in problems
    assert "CELLCOMMONS_PUBLIC_URL must be the platform's https:// origin in production" in problems
    with pytest.raises(SettingsError, match="CELLCOMMONS_PUBLIC_URL"):
        load_settings(_env_file=None, public_url="https://cellcommons.example.org/some/path")


def test_the_cli_shows_a_secret_once_and_stores_only_its_hash(fresh_settings, tmp_path):
    async def add_institution():
        database = Database(fresh_settings)
        async with database.unit_of_work() as session:
            await catalogue.save_institution(session, InstitutionIn(**LEIDEN), origin="test")
        await database.dispose()

    asyncio.run(add_institution())
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLCOMMONS_")}
    env |= {"CELLCOMMONS_ENVIRONMENT": "test", "CELLCOMMONS_DATABASE_URL": fresh_settings.database_url}
    env["COLUMNS"] = "250"  # tables unwrapped

    def cli(*args):
        result = subprocess.run(
            ["cellcommons", "institutions", *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert "Traceback" not in result.stderr
        return result

    added = cli("add-client", LEIDEN["slug"], "--role", "submitter", "--name", "nightly sync")
    assert added.returncode == 0, added.stderr
    client_id = re.search(r"client_id: (\S+)", added.stdout)[1]
    secret = re.search(r"client_secret: (\S+)", added.stdout)[1]
    assert "shown once" in added.stdout

    listed = cli("clients")
    assert listed.returncode == 0 and client_id in listed.stdout and secret not in listed.stdout

    async def stored_hash():
        database = Database(fresh_settings)
        async with database.unit_of_work() as session:
            value = await session.scalar(select(MachineClient.secret_hash).where(MachineClient.client_id == client_id))
        await database.dispose()
        return value

    first_hash = asyncio.run(stored_hash())
    assert first_hash != secret and secret not in first_hash and PasswordHasher().verify(first_hash, secret)

    rotated = cli("rotate-secret", client_id)
    new_secret = re.search(r"client_secret: (\S+)", rotated.stdout)[1]
    assert rotated.returncode == 0 and new_secret != secret
    assert PasswordHasher().verify(asyncio.run(stored_hash()), new_secret)

    key_file = tmp_path / "client.pub.pem"
    key_file.write_bytes(RSAKey.generate_key(2048).as_pem(private=False))
    keyed = cli("add-client", LEIDEN["slug"], "--client-id", "leiden-keyed", "--public-key", str(key_file))
    assert keyed.returncode == 0 and "private_key_jwt" in keyed.stdout and "client_secret" not in keyed.stdout

    assert cli("revoke-client", client_id).returncode == 0
    assert "revoked" in cli("clients", "--institution", LEIDEN["slug"]).stdout
    again = cli("revoke-client", client_id)
    assert again.returncode == 1 and again.stderr.startswith("error: no active client")
    refused = cli("add-client", LEIDEN["slug"], "--role", "platform_admin")
    assert refused.returncode == 1 and "platform_admin" in refused.stderr

    rotation = cli("rotate-signing-key")
    assert rotation.returncode == 0 and rotation.stdout.startswith("signing with ")
