import pytest

from cellcommons.settings import DEV_S3_SECRET_KEY, Environment, Settings, SettingsError, load_settings

PRODUCTION_READY = dict(
    environment="production",
    database_url="postgresql://owner:pw@db.internal:5432/cellcommons",
    app_database_url="postgresql://app:pw@db.internal:5432/cellcommons",
    s3_endpoint="minio.internal:9000",
    s3_access_key="prod-access",
    s3_secret_key="prod-secret-0123456789",
    s3_secure=True,
    secret_key="a-production-secret-key-of-enough-length-0123456789",
    public_url="https://cellcommons.example.org",
    signing_key_secret="a-production-signing-key-secret-of-enough-length",
)


def test_production_refuses_development_defaults_with_one_message_per_problem():
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, environment="production")
    problems = caught.value.problems
    assert len(problems) == 9
    assert any("CELLCOMMONS_SECRET_KEY is the development key" in p for p in problems)
    assert any("CELLCOMMONS_DATABASE_URL" in p for p in problems)
    assert any("CELLCOMMONS_APP_DATABASE_URL" in p for p in problems)
    assert any("CELLCOMMONS_S3_SECRET_KEY is the development secret" in p for p in problems)
    assert any("CELLCOMMONS_S3_SECURE" in p for p in problems)
    assert any("CELLCOMMONS_PUBLIC_URL" in p for p in problems)
    assert any("CELLCOMMONS_SIGNING_KEY_SECRET is the development secret" in p for p in problems)


def test_production_names_only_what_is_wrong():
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, **{**PRODUCTION_READY, "s3_secret_key": DEV_S3_SECRET_KEY})
    assert caught.value.problems == ["CELLCOMMONS_S3_SECRET_KEY is the development secret"]


def test_production_settings_without_development_defaults_are_accepted():
    settings = load_settings(_env_file=None, **PRODUCTION_READY)
    assert settings.environment is Environment.production
    assert settings.app_url.username == "app"


def test_settings_come_from_the_prefixed_environment(monkeypatch):
    monkeypatch.setenv("CELLCOMMONS_ENVIRONMENT", "test")
    monkeypatch.setenv("CELLCOMMONS_DATABASE_URL", "postgresql://owner@localhost/cc")
    monkeypatch.setenv("CELLCOMMONS_BUCKET_PREFIX", "Leiden")
    settings = load_settings(_env_file=None)
    assert settings.environment is Environment.test
    assert settings.owner_url.drivername == "postgresql+psycopg"
    assert settings.bucket("exports") == "leiden-exports"


def test_demo_derives_the_application_role_url_from_the_owner_url():
    settings = Settings(_env_file=None, database_url="postgresql://owner:secret@localhost:5433/cc")
    assert settings.app_url.username == "cellcommons_app"
    assert settings.app_url.password is None
    assert (settings.app_url.host, settings.app_url.port, settings.app_url.database) == (
        "localhost",
        5433,
        "cc",
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("database_url", "mysql://localhost/cc", "CELLCOMMONS_DATABASE_URL"),
        ("environment", "staging", "CELLCOMMONS_ENVIRONMENT"),
        ("app_role", "app; DROP TABLE x", "CELLCOMMONS_APP_ROLE"),
        ("s3_secure", "perhaps", "CELLCOMMONS_S3_SECURE"),
        ("trusted_proxies", "*", "CELLCOMMONS_TRUSTED_PROXIES"),
        ("trusted_proxies", "10.0.0.0/8, ingress.internal", "CELLCOMMONS_TRUSTED_PROXIES"),
    ],
)
def test_a_bad_value_is_named(field, value, message):
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, **{field: value})
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(message)


def test_trusted_proxies_are_addresses_and_networks():
    settings = load_settings(_env_file=None, trusted_proxies=" 10.0.0.0/8 , 127.0.0.1,fd00::/8 ")
    assert settings.trusted_proxies == "10.0.0.0/8,127.0.0.1,fd00::/8"
    assert load_settings(_env_file=None, trusted_proxies="").trusted_proxies == ""


def test_missing_database_url_is_a_clear_error():
    with pytest.raises(SettingsError, match="CELLCOMMONS_DATABASE_URL is not set"):
        _ = Settings(_env_file=None).owner_url
