"""What users install: the wheel carries the whole service, migrations included."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    """The file names in a wheel built from a copy of this checkout (the
    build writes beside the sources, which the checkout keeps clean of)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(
        ROOT,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".ledger"),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp / "dist"), str(source)],
        check=True,
    )
    [wheel] = (tmp / "dist").glob("ledger-*.whl")
    return set(zipfile.ZipFile(wheel).namelist())


def test_the_wheel_carries_every_migration(wheel_names):
    migrations = sorted((ROOT / "alembic" / "versions").glob("*.py"))
    assert migrations
    for migration in migrations:
        assert f"ledger/alembic/versions/{migration.name}" in wheel_names
    assert {"ledger/alembic/env.py", "ledger/alembic/script.py.mako"} <= wheel_names


def test_the_wheel_carries_every_module_of_the_service(wheel_names):
    modules = [p.relative_to(ROOT).as_posix() for p in (ROOT / "ledger").rglob("*.py")]
    assert "ledger/serving.py" in modules
    assert set(modules) <= wheel_names
