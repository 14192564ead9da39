"""`pip install .` (not editable) gives a working service and command: data files ship."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The project built as a wheel and installed on its own, away from the source tree."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp / "dist"),
            str(REPO),
        ],
        check=True,
        cwd=tmp,
        timeout=120,
    )
    [wheel] = (tmp / "dist").glob("*.whl")
    site = tmp / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        cwd=tmp,
        timeout=120,
    )
    return site


def run_python(site: Path, code: str, cwd: Path):
    env = dict(os.environ, PYTHONPATH=str(site))
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_the_wheel_carries_templates_static_files_fixtures_and_examples(installed):
    for part in (
        "app/web/templates/dataset.html",
        "app/web/static/style.css",
        "app/emulator/fixtures/personas.yaml",
        "app/emulator/templates/authorize.html",
        "app/examples/datasets/sail-cohort/README.txt",
        "app/examples/record-0000-0002-1825-0097.json",
    ):
        assert (installed / part).is_file(), part


def test_the_installed_command_explains_a_saved_record(installed, tmp_path):
    code = (
        "import sys; from app.cli import run; sys.argv = ['gatekeeper', 'explain', "
        "'--orcid', '0000-0002-1825-0097', '--dataset', 'sail-cohort', '--json', "
        f"'--policy', {str(REPO / 'policies')!r}, '--record', "
        f"{str(installed / 'app/examples/record-0000-0002-1825-0097.json')!r}]; run()"
    )
    result = run_python(installed, code, tmp_path)
    assert result.returncode == 1, result.stderr  # the example researcher is refused
    assert json.loads(result.stdout)["dataset"] == "sail-cohort"
    assert "site" in run_python(installed, "import app; print(app.__file__)", tmp_path).stdout


def test_the_installed_app_renders_its_pages(installed, tmp_path):
    code = (
        "from app import create_app; from app.settings import Settings\n"
        f"s = Settings(secret_key='x' * 32, orcid_client_id='APP-ABCDEFGHIJKLMNOP', "
        f"orcid_client_secret='s', policy_path={str(REPO / 'policies')!r})\n"
        "c = create_app(s).test_client()\n"
        "r = c.get('/'); print(r.status_code, 'SAIL cohort extract' in r.get_data(as_text=True))\n"
        "print(c.get('/static/style.css').status_code)\n"
    )
    result = run_python(installed, code, tmp_path)
    assert result.stdout.split() == ["200", "True", "200"], result.stderr
