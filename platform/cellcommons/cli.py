"""The `cellcommons` command. Thin: parse, call a service, render."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cellcommons.errors import CellCommonsError
from cellcommons.settings import SettingsError, load_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Cell Commons data-sharing platform.")
console = Console()
errors = Console(stderr=True, soft_wrap=True)


def _reported(command):
    """One clear line per problem and a non-zero exit instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SettingsError as exc:
            for problem in exc.problems:
                errors.print(f"error: {problem}", highlight=False)
            raise typer.Exit(2) from None
        except CellCommonsError as exc:
            errors.print(f"error: {exc.message}", highlight=False)
            raise typer.Exit(1) from None

    return wrapper


@app.command("migrate")
@_reported
def migrate_command(
    revision: Annotated[str, typer.Option(help="target revision")] = "heads",
) -> None:
    """Bring the database schema up to date (idempotent; runs as the owner role)."""
    from cellcommons.migrations import describe, migrate

    settings = load_settings()
    migrate(settings, revision)
    console.print(f"database {describe(settings.owner_url)} is at revision {revision}", highlight=False)


@app.command("demo")
@_reported
def demo_command(
    data_dir: Annotated[
        Path | None, typer.Option(help="folder for the demo's data (default: CELLCOMMONS_DATA_DIR/demo)")
    ] = None,
    reset: Annotated[bool, typer.Option(help="delete the demo's data and start over")] = False,
    port: Annotated[int, typer.Option(help="the API's port on 127.0.0.1 (0: any free port)")] = 8000,
) -> None:
    """Run the platform on the embedded default stack until Ctrl-C."""
    from cellcommons.demo.launcher import run_demo

    settings = load_settings()
    run_demo(settings, _demo_dir(settings, data_dir), reset, port, console)


def _demo_dir(settings, data_dir: Path | None) -> Path:
    return (data_dir or settings.data_dir / "demo").resolve()


@app.command("demo-token")
@_reported
def demo_token_command(
    institution: Annotated[str, typer.Argument(help="a demo institution's slug, e.g. leiden-scgt")],
    user: Annotated[str, typer.Argument(help="a demo user: alice, sam, stella, ian or gus")] = "alice",
    data_dir: Annotated[Path | None, typer.Option(help="the running demo's data folder")] = None,
) -> None:
    """Sign a demo user in at a running demo's identity provider (authorization code + PKCE); print the token."""
    import asyncio

    import httpx

    from cellcommons.demo.identity import fetch_demo_token
    from cellcommons.demo.launcher import read_state
    from cellcommons.errors import NotFound

    state = read_state(_demo_dir(load_settings(), data_dir))
    if institution not in state.issuers:
        raise NotFound(f"no demo institution {institution!r}; known: {', '.join(state.issuers)}", field="institution")

    async def fetch() -> str:
        async with httpx.AsyncClient(timeout=10) as http:
            return await fetch_demo_token(http, state.issuers[institution], user)

    typer.echo(asyncio.run(fetch()))


audit_app = typer.Typer(no_args_is_help=True, help="The append-only, hash-chained audit log.")
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
@_reported
def audit_verify_command(
    checkpoint: Annotated[
        bool, typer.Option(help="when intact, store {count, head hash, time} in the object store's audit bucket")
    ] = False,
) -> None:
    """Recompute the whole hash chain; exit 1 naming the first broken event."""
    import asyncio

    from cellcommons.audit.verify import verify_database, write_checkpoint
    from cellcommons.storage import ObjectStore

    settings = load_settings()
    verified = asyncio.run(verify_database(settings))
    line = verified.summary()
    if verified.intact and checkpoint:
        bucket = settings.bucket("audit")
        line += f"; checkpoint {bucket}/{write_checkpoint(ObjectStore.from_settings(settings), bucket, verified)}"
    console.print(line, highlight=False, soft_wrap=True)
    if not verified.intact:
        raise typer.Exit(1)


storage_app = typer.Typer(no_args_is_help=True, help="Object storage for dataset files.")
app.add_typer(storage_app, name="storage")


@storage_app.command("clean-staging")
@_reported
def storage_clean_staging_command(
    older_than: Annotated[
        float,
        typer.Option(
            min=1,
            help="hours after its last URL expired that a pending upload counts as abandoned, and the age an "
            "object no record names must reach before it is deleted",
        ),
    ] = 24,
) -> None:
    """Expire abandoned uploads and delete what they staged (multipart parts too), orphaned staging objects, and
    dataset files and export results no record names. The scheduler does this every hour."""
    from datetime import timedelta

    from cellcommons.storage.cleanup import clean_storage_now

    cleaned = clean_storage_now(load_settings(), timedelta(hours=older_than))
    console.print(cleaned.summary(), highlight=False, soft_wrap=True)


@app.command("seed")
@_reported
def seed_command(
    scale: Annotated[
        str, typer.Option(help="tiny (tests), demo (tens of datasets) or bench (100 000 batches)")
    ] = "demo",
    seed: Annotated[int, typer.Option(help="random seed; the same seed gives the same consortium")] = 2026,
) -> None:
    """Load the synthetic consortium into the catalogue, with a progress bar."""
    import asyncio

    from cellcommons.demo.seed import run_seed

    counts = asyncio.run(run_seed(load_settings(), scale, seed, console))
    console.print(", ".join(f"{n:,} {table}" for table, n in counts.items()), highlight=False)


institutions_app = typer.Typer(no_args_is_help=True, help="Partner institutions, their issuers and machine clients.")
app.add_typer(institutions_app, name="institutions")


def _in_unit_of_work(work):
    """Run `work(session, http)` in one transaction with an HTTP client; commit when it returns."""
    import httpx

    from cellcommons.db import with_database

    async def run(database):
        async with httpx.AsyncClient(timeout=10) as http, database.unit_of_work() as session:
            return await work(session, http)

    return with_database(load_settings(), run)


def _pair(text: str, option: str) -> tuple[str, str]:
    value, sep, role = text.partition("=")
    if not sep or not value or not role:
        raise typer.BadParameter(f"expected VALUE=ROLE, got {text!r}", param_hint=option)
    return value, role


@institutions_app.command("add-issuer")
@_reported
def add_issuer_command(
    institution: Annotated[str, typer.Argument(help="the institution's slug")],
    issuer_url: Annotated[str, typer.Argument(help="exactly the `iss` its tokens carry")],
    audience: Annotated[str, typer.Option(help="the `aud` its access tokens must carry")] = "cellcommons",
    alg: Annotated[list[str] | None, typer.Option(help="allowed signing algorithm (repeat)")] = None,
    role_claim: Annotated[str | None, typer.Option(help="claim path holding roles, e.g. realm_access.roles")] = None,
    role: Annotated[list[str] | None, typer.Option(help="CLAIM_VALUE=ROLE (repeat)")] = None,
    access_token_claim: Annotated[
        str | None, typer.Option(help="CLAIM=VALUE that marks access tokens, for issuers without typ at+jwt")
    ] = None,
    orcid_claim: Annotated[
        str | None, typer.Option(help="claim path of the person's ORCID iD, if the issuer vouches for one")
    ] = None,
) -> None:
    """Trust an identity provider for one institution (reads its discovery document, pins its JWKS URI)."""
    from cellcommons.institutions.service import register_issuer

    mapping = dict(_pair(r, "--role") for r in role or [])
    claim, value = _pair(access_token_claim, "--access-token-claim") if access_token_claim else (None, None)

    async def work(session, http):
        return await register_issuer(
            session, http, institution_slug=institution, issuer_url=issuer_url, audience=audience,
            algorithms=alg or ["RS256"], role_claim=role_claim, role_mapping=mapping,
            access_token_claim=claim, access_token_value=value, orcid_claim=orcid_claim,
        )  # fmt: skip

    issuer = _in_unit_of_work(work)
    console.print(f"trusting {issuer.issuer_url} for {institution}; keys from {issuer.jwks_uri}", highlight=False)


@institutions_app.command("remove-issuer")
@_reported
def remove_issuer_command(issuer_url: Annotated[str, typer.Argument()]) -> None:
    """Stop trusting an identity provider."""
    from cellcommons.institutions.service import remove_issuer

    _in_unit_of_work(lambda session, http: remove_issuer(session, issuer_url))
    console.print(f"no longer trusting {issuer_url}", highlight=False)


@institutions_app.command("issuers")
@_reported
def list_issuers_command() -> None:
    """The trusted identity providers, per institution."""
    from rich.table import Table

    from cellcommons.institutions.service import list_issuers

    table = Table("institution", "issuer", "audience", "algorithms", "roles (and ORCID) from")
    for slug, issuer in _in_unit_of_work(lambda session, http: list_issuers(session)):
        mapping = ", ".join(f"{k}→{v}" for k, v in issuer.role_mapping.items())
        orcid = f"\nORCID: {issuer.orcid_claim}" if issuer.orcid_claim else ""
        table.add_row(slug, issuer.issuer_url, issuer.audience, " ".join(issuer.algorithms),
                      f"{issuer.role_claim or '—'}: {mapping}{orcid}")  # fmt: skip
    console.print(table)


@institutions_app.command("add-client")
@_reported
def add_client_command(
    institution: Annotated[str, typer.Argument(help="the institution's slug")],
    role: Annotated[
        list[str] | None, typer.Option(help="platform role (repeat): reader, submitter, steward, institution_admin")
    ] = None,
    name: Annotated[str | None, typer.Option(help="what the client is, for people reading the list")] = None,
    client_id: Annotated[str | None, typer.Option(help="the client_id (default: generated)")] = None,
    public_key: Annotated[
        Path | None, typer.Option(help="its public key (JWK or PEM file): private_key_jwt instead of a secret")
    ] = None,
) -> None:
    """Register a machine client (client-credentials grant); a secret is printed once and never stored."""
    from cellcommons.institutions.clients import add_client, read_public_key

    jwk = read_public_key(public_key.read_text()) if public_key is not None else None

    async def work(session, http):
        return await add_client(
            session, institution_slug=institution, roles=role, name=name, client_id=client_id, public_jwk=jwk
        )

    added = _in_unit_of_work(work)
    client = added.client
    console.print(f"client_id: {client.client_id}", highlight=False)
    console.print(f"institution: {added.institution_slug}; roles: {' '.join(client.roles)}", highlight=False)
    console.print(f"token_endpoint_auth_method: {client.auth_method}", highlight=False)
    if added.secret is not None:
        console.print(f"client_secret: {added.secret}", highlight=False, soft_wrap=True)
        console.print("(shown once: only its hash is stored)", highlight=False)


@institutions_app.command("rotate-secret")
@_reported
def rotate_secret_command(client_id: Annotated[str, typer.Argument()]) -> None:
    """Replace a client's secret (the old one stops working now); the new one is printed once."""
    from cellcommons.institutions.clients import rotate_secret

    secret = _in_unit_of_work(lambda session, http: rotate_secret(session, client_id))
    console.print(f"client_secret: {secret}", highlight=False, soft_wrap=True)
    console.print("(shown once: only its hash is stored)", highlight=False)


@institutions_app.command("revoke-client")
@_reported
def revoke_client_command(client_id: Annotated[str, typer.Argument()]) -> None:
    """Revoke a machine client: no more tokens, and the tokens it holds stop working."""
    from cellcommons.institutions.clients import revoke_client

    _in_unit_of_work(lambda session, http: revoke_client(session, client_id))
    console.print(f"revoked {client_id}", highlight=False)


@institutions_app.command("clients")
@_reported
def list_clients_command(
    institution: Annotated[str | None, typer.Option(help="only this institution's clients")] = None,
) -> None:
    """The machine clients, per institution (never their secrets)."""
    from rich.table import Table

    from cellcommons.institutions.clients import list_clients

    table = Table("institution", "client_id", "name", "authentication", "roles", "status")
    for slug, client in _in_unit_of_work(lambda session, http: list_clients(session, institution)):
        status = f"revoked {client.revoked_at:%Y-%m-%d %H:%M}" if client.revoked_at else "active"
        table.add_row(slug, client.client_id, client.name, client.auth_method, " ".join(client.roles), status)
    console.print(table)


@institutions_app.command("rotate-signing-key")
@_reported
def rotate_signing_key_command() -> None:
    """A new key signs the platform's access tokens; old keys stay in the JWKS until their tokens expire."""
    from cellcommons.auth.platform_keys import rotate_signing_key

    settings = load_settings()
    kid, retired = _in_unit_of_work(lambda session, http: rotate_signing_key(session, settings))
    console.print(f"signing with {kid}", highlight=False)
    for old, until in retired:
        console.print(f"still published: {old} until {until:%Y-%m-%d %H:%M:%S %Z}", highlight=False)


@app.command("serve")
@_reported
def serve_command(
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to bind")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="worker processes (each builds its own app)")] = 1,
    graceful_timeout: Annotated[
        int, typer.Option(min=1, help="seconds requests in flight may take to finish after SIGTERM/Ctrl-C")
    ] = 30,
) -> None:
    """Serve the API (uvicorn). On SIGTERM it stops accepting connections and lets requests in flight finish."""
    import uvicorn

    settings = load_settings()  # refuse bad configuration here, with one line per problem, before any worker starts
    # An import string and factory, because uvicorn starts the workers as processes that build their own app.
    uvicorn.run(
        "cellcommons.api.app:from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        timeout_graceful_shutdown=graceful_timeout,
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=settings.trusted_proxies or None,
    )


schema_app = typer.Typer(no_args_is_help=True, help="The GraphQL contract partners code against.")
app.add_typer(schema_app, name="schema")


@schema_app.command("export")
@_reported
def schema_export_command(
    output: Annotated[Path | None, typer.Option(help="file to write (default: standard output)")] = None,
) -> None:
    """Print (or write) the GraphQL schema in SDL, as committed in graphql_schema/schema.graphql."""
    from cellcommons.graphql.schema import schema_sdl

    sdl = schema_sdl()
    if output is None:
        typer.echo(sdl, nl=False)
    else:
        output.write_text(sdl)


sync_app = typer.Typer(no_args_is_help=True, help="Scheduled sync connectors: sources, runs, quarantine.")
app.add_typer(sync_app, name="sync")


def _assignments(pairs: list[str] | None, option: str) -> dict[str, str]:
    values = {}
    for text in pairs or []:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {key!r}…", param_hint=option)  # never echo a value
        values[key] = value
    return values


@sync_app.command("add-source")
@_reported
def sync_add_source_command(
    name: Annotated[str, typer.Argument(help="the source's name, e.g. leiden-lims")],
    connector: Annotated[str, typer.Argument(help="an installed connector, e.g. filedrop")],
    institution: Annotated[str, typer.Argument(help="the owning institution's slug")],
    schedule: Annotated[str, typer.Option(help="five-field cron expression, UTC")] = "0 * * * *",
    config: Annotated[list[str] | None, typer.Option(help="KEY=VALUE (repeat)")] = None,
    secret: Annotated[
        list[str] | None, typer.Option(help="KEY=ENV_VAR (repeat): the secret is read from that variable, sealed")
    ] = None,
) -> None:
    """Register a sync source; secrets are taken from environment variables and stored encrypted."""
    import os

    from cellcommons.errors import InvalidInput
    from cellcommons.sync.console import add_source

    secrets = {}
    for key, variable in _assignments(secret, "--secret").items():
        if variable not in os.environ:
            raise InvalidInput(f"environment variable {variable} (for secret {key}) is not set", field="secret")
        secrets[key] = os.environ[variable]
    line = add_source(load_settings(), name=name, connector=connector, institution_slug=institution,
                      schedule=schedule, config=_assignments(config, "--config"), secrets=secrets)  # fmt: skip
    console.print(line, highlight=False)


@sync_app.command("sources")
@_reported
def sync_sources_command() -> None:
    """The sync sources, their schedules and breakers (secret names only, never values)."""
    from cellcommons.sync.console import sources_table

    console.print(sources_table(load_settings()))


@sync_app.command("run")
@_reported
def sync_run_command(source: Annotated[str, typer.Argument(help="the source's name")]) -> None:
    """Run a source now, showing the records read as they land; exit 1 if the run failed."""
    from cellcommons.sync.console import run_line, run_now

    run = run_now(load_settings(), source, console)
    console.print(run_line(source, run), highlight=False, soft_wrap=True)
    if run.status.value == "failed":
        raise typer.Exit(1)


@sync_app.command("runs")
@_reported
def sync_runs_command(
    source: Annotated[str | None, typer.Argument(help="only this source's runs")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
) -> None:
    """Run history, newest first: status ok/partial/failed and the counts."""
    from cellcommons.sync.console import runs_table

    console.print(runs_table(load_settings(), source, limit))


@sync_app.command("quarantine")
@_reported
def sync_quarantine_command(
    source: Annotated[str, typer.Argument(help="the source's name")],
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    replay: Annotated[bool, typer.Option(help="validate the held records again; those that pass now land")] = False,
) -> None:
    """The records a source's runs could not land, with the reasons; --replay retries them."""
    from cellcommons.sync.console import quarantine_table, replay_quarantine, run_line

    settings = load_settings()
    if replay:
        console.print(run_line(source, replay_quarantine(settings, source)), highlight=False, soft_wrap=True)
    console.print(quarantine_table(settings, source, limit))


@sync_app.command("replay")
@_reported
def sync_replay_command(
    source: Annotated[str, typer.Argument(help="the source's name")],
    run: Annotated[str, typer.Argument(help="the run's id (see `sync runs`)")],
) -> None:
    """Read a source again from where one of its runs began (idempotent: unchanged records write nothing)."""
    from cellcommons.sync.console import run_line, run_now

    replayed = run_now(load_settings(), source, console, replay_of=run)
    console.print(run_line(source, replayed), highlight=False, soft_wrap=True)


export_app = typer.Typer(no_args_is_help=True, help="Parquet exports under data-use agreements.")
app.add_typer(export_app, name="export")


@export_app.command("run")
@_reported
def export_run_command(export: Annotated[str, typer.Argument(help="the export's id (see `export status`)")]) -> None:
    """Run one queued export here, in the foreground, with a progress bar; exit 1 if it failed."""
    from cellcommons.exports.console import job_line, parse_id, run_one

    job = run_one(load_settings(), parse_id(export), console)
    console.print(job_line(job), highlight=False, soft_wrap=True)
    if job.status.value != "succeeded":
        raise typer.Exit(1)


@export_app.command("status")
@_reported
def export_status_command(
    export: Annotated[str | None, typer.Argument(help="one export's id (default: the latest)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
) -> None:
    """Export jobs, newest first: status, rows, bytes, and the SHA-256 or the error (one export: one line)."""
    from cellcommons.exports.console import job_status, parse_id, status_table

    if export:
        console.print(job_status(load_settings(), parse_id(export)), highlight=False, soft_wrap=True)
    else:
        console.print(status_table(load_settings(), limit))


# The worker and the scheduler have no HTTP API of their own; these serve their Prometheus metrics.
MetricsPort = Annotated[int | None, typer.Option(min=1, max=65535, help="serve Prometheus metrics on this port")]
MetricsHost = Annotated[str, typer.Option(help="address for the metrics port (0.0.0.0 in a container)")]


@app.command("worker")
@_reported
def worker_command(
    interval: Annotated[float, typer.Option(min=0.1, help="seconds between checks for queued exports")] = 2,
    metrics_port: MetricsPort = None,
    metrics_host: MetricsHost = "127.0.0.1",
) -> None:
    """Run queued export jobs until stopped (several workers may run at once)."""
    from cellcommons.exports.console import run_worker

    run_worker(load_settings(), interval, console, (metrics_host, metrics_port))


@app.command("scheduler")
@_reported
def scheduler_command(
    interval: Annotated[float, typer.Option(min=1, help="seconds between checks for due sources")] = 30,
    metrics_port: MetricsPort = None,
    metrics_host: MetricsHost = "127.0.0.1",
) -> None:
    """Run due sync sources on their schedules until stopped (several schedulers may run at once)."""
    from cellcommons.sync.console import run_scheduler

    run_scheduler(load_settings(), interval, console, (metrics_host, metrics_port))
