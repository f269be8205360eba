"""Managing the issuer registry. Registering an issuer reads its discovery document once and pins its JWKS URI."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from cellcommons.auth.principal import Role
from cellcommons.catalogue.models import Institution
from cellcommons.errors import Conflict, InvalidInput, NotFound, Unavailable
from cellcommons.institutions.models import Issuer, PlatformIssuer

if TYPE_CHECKING:
    from cellcommons.institutions.clients import ClientRegistration

ASYMMETRIC = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}


class ClientDirectory(Protocol):
    """The platform's own issuer: its public keys and its machine-client registry."""

    async def signing_key(self, kid: str | None) -> Any | None: ...

    async def registration(self, client_id: str) -> ClientRegistration | None: ...


@dataclass(frozen=True)
class TrustedIssuer:
    """What the token validator needs of one registry entry."""

    issuer_url: str
    jwks_uri: str
    audience: str
    algorithms: tuple[str, ...]
    institution_id: uuid.UUID | None  # None only on the platform's own entry (see `clients`)
    institution_slug: str | None
    access_token_claim: str | None
    access_token_value: str | None
    role_claim: str | None
    role_mapping: dict[str, str]
    orcid_claim: str | None = None  # the claim path of the person's ORCID iD, for issuers that vouch for one
    # Set on the platform's own entry only: keys come from its database, and a token's institution and roles
    # from the registration of the machine client named by its client_id (revoked: refused), never from a claim.
    clients: ClientDirectory | None = None


async def discover(http: httpx.AsyncClient, issuer_url: str) -> dict:
    """The issuer's OpenID discovery document; its `issuer` must be exactly the URL registered."""
    url = issuer_url.rstrip("/") + "/.well-known/openid-configuration"
    try:
        response = await http.get(url)
        response.raise_for_status()
        document = response.json()
    except httpx.HTTPStatusError as exc:
        raise Unavailable(f"discovery at {url} answered {exc.response.status_code}") from None
    except (httpx.HTTPError, ValueError) as exc:
        raise Unavailable(f"discovery at {url} failed: {exc}") from None
    if not isinstance(document, dict) or document.get("issuer") != issuer_url:
        raise InvalidInput(f"discovery at {url} names another issuer", field="issuer_url")
    if not str(document.get("jwks_uri", "")).startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise InvalidInput("the discovery document has no usable jwks_uri", field="issuer_url")
    return document


async def register_issuer(
    session: AsyncSession,
    http: httpx.AsyncClient,
    *,
    institution_slug: str,
    issuer_url: str,
    audience: str,
    algorithms: list[str],
    role_claim: str | None = None,
    role_mapping: dict[str, str] | None = None,
    access_token_claim: str | None = None,
    access_token_value: str | None = None,
    orcid_claim: str | None = None,
) -> Issuer:
    institution = await session.scalar(select(Institution).where(Institution.slug == institution_slug))
    if institution is None:
        raise NotFound(f"no institution {institution_slug!r}", field="institution")
    bad = sorted(set(algorithms) - ASYMMETRIC)
    if bad or not algorithms:
        raise InvalidInput(
            f"only asymmetric algorithms are accepted, not {', '.join(bad) or 'none'}", field="algorithms"
        )
    roles = {value: role for value, role in (role_mapping or {}).items()}
    unknown = sorted(set(roles.values()) - set(Role))
    if unknown:
        raise InvalidInput(f"unknown platform role(s) {', '.join(unknown)}", field="role_mapping")
    if (access_token_claim is None) != (access_token_value is None):
        raise InvalidInput("give both the access-token claim and its value, or neither", field="access_token_claim")
    if await session.scalar(select(Issuer.id).where(Issuer.issuer_url == issuer_url)):
        raise Conflict(f"issuer {issuer_url} is already registered", field="issuer_url")
    document = await discover(http, issuer_url)
    issuer = Issuer(
        institution_id=institution.id,
        issuer_url=issuer_url,
        jwks_uri=document["jwks_uri"],
        audience=audience,
        algorithms=sorted(set(algorithms)),
        role_claim=role_claim,
        role_mapping=roles,
        access_token_claim=access_token_claim,
        access_token_value=access_token_value,
        orcid_claim=orcid_claim,
    )
    session.add(issuer)
    await session.flush()
    return issuer


async def remove_issuer(session: AsyncSession, issuer_url: str) -> None:
    removed = await session.execute(delete(Issuer).where(Issuer.issuer_url == issuer_url))
    if removed.rowcount == 0:
        raise NotFound(f"no issuer {issuer_url}", field="issuer_url")


async def list_issuers(session: AsyncSession) -> list[tuple[str, Issuer]]:
    rows = await session.execute(
        select(Institution.slug, Issuer)
        .join(Institution, Institution.id == Issuer.institution_id)
        .order_by(Institution.slug, Issuer.issuer_url)
    )
    return [(slug, issuer) for slug, issuer in rows]


async def trusted_issuers(session: AsyncSession, platform: ClientDirectory | None = None) -> dict[str, TrustedIssuer]:
    """The enabled partner issuers and, given its directory, the platform's own issuer."""
    rows = await session.execute(
        select(Institution.slug, Issuer)
        .join(Institution, Institution.id == Issuer.institution_id)
        .where(Issuer.enabled)
    )
    trusted = {
        issuer.issuer_url: TrustedIssuer(
            issuer_url=issuer.issuer_url,
            jwks_uri=issuer.jwks_uri,
            audience=issuer.audience,
            algorithms=tuple(issuer.algorithms),
            institution_id=issuer.institution_id,
            institution_slug=slug,
            access_token_claim=issuer.access_token_claim,
            access_token_value=issuer.access_token_value,
            role_claim=issuer.role_claim,
            role_mapping=dict(issuer.role_mapping),
            orcid_claim=issuer.orcid_claim,
        )
        for slug, issuer in rows
    }
    if platform is not None:
        for own in await session.scalars(select(PlatformIssuer)):
            trusted[own.issuer_url] = TrustedIssuer(
                issuer_url=own.issuer_url,
                jwks_uri=f"{own.issuer_url}/.well-known/jwks.json",
                audience=own.audience,
                algorithms=("ES256",),
                institution_id=None,
                institution_slug=None,
                access_token_claim=None,
                access_token_value=None,
                role_claim=None,
                role_mapping={},
                clients=platform,
            )
    return trusted
