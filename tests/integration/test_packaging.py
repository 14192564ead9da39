"""`pip install .` (not editable) gives a working service and command: data files ship."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The project built as a wheel and installed on its own, away from the source tree."""
    tmp = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools writes build/ and *.egg-info beside the sources, and
    # the checkout is someone's work tree (make test leaves it clean).
    source = tmp / "source"
    shutil.copytree(
        REPO,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "node_modules", "build", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
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
            str(source),
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
        "app/examples/policies/datasets.yaml",
        "app/examples/policies/qualifications.yaml",
        "app/gunicorn_config.py",
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


def test_gatekeeper_serve_runs_the_installed_service_without_a_checkout(installed, tmp_path):
    """`gatekeeper serve` is gunicorn with the packaged configuration and example policies."""
    import socket
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(
        os.environ,
        PYTHONPATH=str(installed),
        SECRET_KEY="x" * 32,
        ORCID_CLIENT_ID="APP-ABCDEFGHIJKLMNOP",
        ORCID_CLIENT_SECRET="s",
        POLICY_PATH=str(installed / "app/examples/policies"),
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS="1",
    )
    serve = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from app.cli import run; import sys; sys.argv[1:] = ['serve']; run()",
        ],
        cwd=tmp_path,  # no checkout here: no gunicorn.conf.py, no policies/
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline, answer = time.monotonic() + 30, None
        while time.monotonic() < deadline and answer is None and serve.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    answer = json.load(r)
            except OSError:
                time.sleep(0.2)
    finally:
        serve.terminate()
        log = serve.communicate(timeout=20)[0].decode()
    assert answer is not None, log
    assert answer["status"] == "ready" and answer["policy"]["ok"]
    # gunicorn ran with the packaged configuration: its lines are JSON (app.logs).
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(line.get("logger") == "gunicorn.error" for line in lines), log
