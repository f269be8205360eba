"""The development identity provider: one loopback OIDC issuer per demo institution (demo and test only).

Real keys (joserfc), real discovery and JWKS over HTTP, authorization code + PKCE (S256), RFC 9068 access
tokens. It refuses to exist when settings.environment is production.

    with DevIdentityProvider(["leiden-scgt"], settings) as idp:
        token = idp.issue_access_token("leiden-scgt", "stella")
"""

from cellcommons.auth.dev_idp.provider import (
    DEFAULT_AUDIENCE,
    ES256_ISSUERS,
    PORTAL_CLIENT_ID,
    PORTAL_REDIRECT_URIS,
    Client,
    DevIdentityProvider,
)
from cellcommons.auth.dev_idp.users import (
    DEMO_USERS,
    REALM_ROLES_ISSUERS,
    DemoUser,
    RoleMapping,
    demo_user,
    role_mapping,
    subject,
)

__all__ = [
    "DEFAULT_AUDIENCE",
    "DEMO_USERS",
    "ES256_ISSUERS",
    "PORTAL_CLIENT_ID",
    "PORTAL_REDIRECT_URIS",
    "REALM_ROLES_ISSUERS",
    "Client",
    "DemoUser",
    "DevIdentityProvider",
    "RoleMapping",
    "demo_user",
    "role_mapping",
    "subject",
]
