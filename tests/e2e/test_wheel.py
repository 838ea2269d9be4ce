"""`pip install parcours` as a user outside the repository gets it: the built wheel,
installed in a fresh virtual environment, finds its configuration, JSON Schemas and
ClickHouse DDL (package data), writes an example configuration and runs a short demo.

The fresh environment takes the wheel itself with pip, and its dependencies from this
environment's site-packages (a .pth line) rather than from the registry again: the test
is about what the wheel holds, not about downloading faust."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import orjson
import pytest

from streams.config.settings import PROJECT_ROOT

pytestmark = pytest.mark.e2e


def run(*command: str | Path, cwd: Path, timeout: float = 600) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PARCOURS_", "PYTHON"))}
    done = subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{command}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the fresh environment's bin folder, a folder outside the repository)."""
    root = tmp_path_factory.mktemp("wheel")
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "-q",
        "-w",
        root / "dist",
        PROJECT_ROOT,
        cwd=root,
    )
    [wheel] = (root / "dist").glob("parcours-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in (
        "parcours_schemas/journeys.yaml",
        "parcours_schemas/touchpoint.schema.json",
        "parcours_schemas/openapi.yaml",
        "parcours_schemas/asyncapi.yaml",
        "parcours_schemas/clickhouse/0013_producer_contract.sql",
        "parcours_schemas/clickhouse/0001_touchpoints.sql",
    ):
        assert shipped in names, f"the wheel lacks {shipped}"
    venv = root / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=root)
    [site] = venv.glob("lib/python*/site-packages")
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        venv / "bin" / "python",
        "install",
        "--no-deps",
        "-q",
        wheel,
        cwd=root,
    )
    outside = root / "elsewhere"
    outside.mkdir()
    return venv / "bin", outside


def test_the_installed_package_is_the_wheel_not_the_checkout(installed):
    bin_dir, outside = installed
    where = run(
        bin_dir / "python",
        "-c",
        "import streams, parcours_schemas; print(streams.__file__, parcours_schemas.__file__)",
        cwd=outside,
    )
    assert str(PROJECT_ROOT) not in where and "site-packages" in where
    assert run(bin_dir / "parcours", "--version", cwd=outside).startswith("parcours, version ")
    spec = orjson.loads(run(bin_dir / "parcours", "spec", "openapi", cwd=outside))
    assert "CollectorEvent" in spec["components"]["schemas"]  # filled in from the wheel


def test_check_config_and_init_work_outside_the_repository(installed):
    bin_dir, outside = installed
    shipped = run(bin_dir / "parcours", "check-config", cwd=outside)
    assert ": OK, " in shipped and "purchase:" in shipped
    run(bin_dir / "parcours", "init", outside / "site", cwd=outside)
    copied = run(
        bin_dir / "parcours", "check-config", outside / "site" / "journeys.yaml", cwd=outside
    )
    assert copied.startswith(f"{outside / 'site' / 'journeys.yaml'}: OK")


def test_a_short_demo_runs_from_the_wheel(installed):
    bin_dir, outside = installed
    out = run(
        bin_dir / "parcours",
        "demo",
        "--customers",
        "20",
        "--data-dir",
        outside / "d",
        cwd=outside,
        timeout=900,
    )
    assert "Delivered to the local webhook, each signed and once" in out
