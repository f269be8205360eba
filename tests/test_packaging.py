import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_standard_library_platform_module_is_not_shadowed_from_the_repository_root():
    out = subprocess.run(
        [sys.executable, "-c", "import platform; print(platform.system()); print(platform.__file__)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out[0] == "Linux"
    assert not out[1].startswith(str(ROOT))


@pytest.mark.slow
def test_the_wheel_carries_code_package_data_and_entry_points(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("cellcommons-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    for expected in [
        "cellcommons/cli.py",
        "cellcommons/data/mondo_subset.tsv",
        "cellcommons/data/duo_terms.tsv",
        "cellcommons/data/tissue_cell_terms.tsv",
        "cellcommons/migrations/env.py",
        "cellcommons/migrations/script.py.mako",
        "cellcommons/migrations/versions/0001_application_role.py",
        "cellcommons_connectors/__init__.py",
        "cellcommons/portal/templates/base.html",
        "cellcommons/portal/templates/dataset.html",
        "cellcommons/portal/static/portal.css",
    ]:
        assert expected in names, expected
    assert not any(n.startswith(("platform/", "connectors/", "tests/")) for n in names)
    assert "cellcommons = cellcommons.cli:app" in entry_points


def test_the_connector_entry_point_group_is_declared():
    # An empty group cannot be written into a wheel's entry_points.txt; it is declared in pyproject.toml and
    # gains entries as connectors are added.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "cellcommons.connectors" in pyproject["project"]["entry-points"]
