"""The one configuration object. Built once at the edge (CLI, app factory, test fixture) and passed in."""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url

DEV_S3_ACCESS_KEY = "cellcommons-dev"
DEV_S3_SECRET_KEY = "cellcommons-dev-secret-not-for-production"
DEV_SIGNING_KEY_SECRET = "cellcommons-dev-signing-key-secret-not-for-production"
DEV_PUBLIC_URL = "http://127.0.0.1:8000"
DEV_SECRET_KEY = "cellcommons-development-secret-key-not-for-production"


class Environment(StrEnum):
    production = "production"
    demo = "demo"
    test = "test"


class SettingsError(ValueError):
    """Configuration that must not be used; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"- {p}" for p in problems))


def _async_driver(url: str) -> URL:
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"must be a postgresql:// URL, got {parsed.drivername!r}")
    return parsed.set(drivername="postgresql+psycopg")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CELLCOMMONS_", extra="ignore")

    environment: Environment = Environment.demo

    # Owner role: runs migrations, owns the tables.
    database_url: str | None = None
    # Application role: what the API, workers and scheduler use. Derived from the owner URL in demo/test.
    app_database_url: str | None = None
    app_role: str = "cellcommons_app"

    # This node's name: every record created here names it as its origin (federation tells copies apart).
    node_id: str = "local"

    # Where the demo keeps its embedded PostgreSQL and S3 data between runs.
    data_dir: Path = Path("~/.cellcommons").expanduser()

    # Keys the platform's opaque identifiers (GraphQL ids, cursors); at least 32 characters.
    secret_key: SecretStr = SecretStr(DEV_SECRET_KEY)

    s3_endpoint: str | None = None  # host:port
    s3_access_key: str = DEV_S3_ACCESS_KEY
    s3_secret_key: SecretStr = SecretStr(DEV_S3_SECRET_KEY)
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    bucket_prefix: str = "cellcommons"

    # The platform's own OAuth authorization server (machine clients, client-credentials grant).
    # Its public base URL is its issuer identifier (`iss` of its tokens) and the base of /oauth/token.
    public_url: str | None = None
    token_audience: str = "cellcommons"  # `aud` of the platform's access tokens
    access_token_lifetime: int = Field(default=300, ge=30, le=3600)  # seconds
    client_assertion_max_lifetime: int = Field(default=300, ge=30, le=3600)  # private_key_jwt `exp` horizon
    # The private signing keys are stored encrypted in the database with a key derived from this secret.
    signing_key_secret: SecretStr = SecretStr(DEV_SIGNING_KEY_SECRET)

    # The proxies (IP addresses or networks, comma-separated; empty: none) whose X-Forwarded-For and
    # X-Forwarded-Proto `serve` believes: the ingress in front of the API. Behind one that is not listed, every
    # caller seems to come from the ingress (one anonymous budget for all); never `*`, which would let any
    # caller name its own address.
    trusted_proxies: str = "127.0.0.1"

    @field_validator("database_url", "app_database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None:
            _async_driver(value)
        return value

    @field_validator("secret_key")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value

    @field_validator("public_url")
    @classmethod
    def _origin_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname or parts.path not in {"", "/"}:
            raise ValueError("must be an http(s) origin such as https://cellcommons.example.org (no path)")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("must be an http(s) origin without query, fragment or credentials")
        return value.rstrip("/")

    @field_validator("signing_key_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        items = [item.strip() for item in value.split(",") if item.strip()]
        for item in items:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network (such as 10.0.0.0/8)") from None
        return ",".join(items)

    @field_validator("app_role", "bucket_prefix", "node_id")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not value.replace("_", "").replace("-", "").isalnum() or not value[0].isalpha():
            raise ValueError("must start with a letter and hold only letters, digits, '-' or '_'")
        return value.lower()

    @model_validator(mode="after")
    def _refuse_development_defaults_in_production(self) -> Settings:
        if self.environment is not Environment.production:
            return self
        problems = []
        if not self.database_url:
            problems.append("CELLCOMMONS_DATABASE_URL is required in production (the owner role's URL)")
        if not self.app_database_url:
            problems.append("CELLCOMMONS_APP_DATABASE_URL is required in production (the application role's URL)")
        if not self.s3_endpoint:
            problems.append("CELLCOMMONS_S3_ENDPOINT is required in production")
        if self.secret_key.get_secret_value() == DEV_SECRET_KEY:
            problems.append("CELLCOMMONS_SECRET_KEY is the development key")
        if self.s3_access_key == DEV_S3_ACCESS_KEY:
            problems.append("CELLCOMMONS_S3_ACCESS_KEY is the development key")
        if self.s3_secret_key.get_secret_value() == DEV_S3_SECRET_KEY:
            problems.append("CELLCOMMONS_S3_SECRET_KEY is the development secret")
        if not self.s3_secure:
            problems.append("CELLCOMMONS_S3_SECURE must be true in production (object storage over TLS)")
        if not self.public_url or not self.public_url.startswith("https://"):
            problems.append("CELLCOMMONS_PUBLIC_URL must be the platform's https:// origin in production")
        if self.signing_key_secret.get_secret_value() == DEV_SIGNING_KEY_SECRET:
            problems.append("CELLCOMMONS_SIGNING_KEY_SECRET is the development secret")
        if problems:
            raise SettingsError(problems)
        return self

    @property
    def owner_url(self) -> URL:
        if not self.database_url:
            raise SettingsError(["CELLCOMMONS_DATABASE_URL is not set"])
        return _async_driver(self.database_url)

    @property
    def app_url(self) -> URL:
        if self.app_database_url:
            return _async_driver(self.app_database_url)
        # demo/test: same server and database, the application role (trust or peer auth there)
        return self.owner_url._replace(username=self.app_role, password=None)

    @property
    def issuer_url(self) -> str:
        """The platform's OAuth issuer identifier (demo/test default: the `serve` command's address)."""
        return self.public_url or DEV_PUBLIC_URL

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer_url}/oauth/token"

    def bucket(self, name: str) -> str:
        return f"{self.bucket_prefix}-{name}"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides; raises SettingsError with every problem."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems: list[str] = []
        for error in exc.errors():
            cause = error.get("ctx", {}).get("error")
            if isinstance(cause, SettingsError):
                problems.extend(cause.problems)
            else:
                field = "_".join(map(str, error["loc"])).upper()
                problems.append(f"CELLCOMMONS_{field}: {error['msg']}")
        raise SettingsError(problems) from None
