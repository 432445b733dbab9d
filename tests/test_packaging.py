"""What a production install of the worker contains: a wheel built from this checkout, inspected.

No service is started; the wheel is built with the venv's own setuptools (no network).
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("iexec_worker-*.whl")
    return zipfile.ZipFile(path)


def test_the_worker_wheel_holds_the_worker_and_no_devnet(wheel: zipfile.ZipFile) -> None:
    modules = [name for name in wheel.namelist() if name.endswith(".py")]
    assert "worker/app.py" in modules
    assert [m for m in modules if not m.startswith("worker/")] == []


def test_the_worker_wheel_ships_its_status_page(wheel: zipfile.ZipFile) -> None:
    """The page is served from the package: nothing to build, nothing fetched from elsewhere."""
    names = set(wheel.namelist())
    assert {"worker/static/status.html", "worker/static/status.js", "worker/static/status.css"} <= names
    page = wheel.read("worker/static/status.html").decode() + wheel.read("worker/static/status.js").decode()
    assert "http://" not in page
    assert "https://" not in page  # no CDN, no external font or script


def test_the_worker_wheel_does_not_depend_on_the_devnet_or_its_libraries(wheel: zipfile.ZipFile) -> None:
    (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    required = [
        line.split(":", 1)[1].strip()
        for line in wheel.read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    names = {r.split("=")[0].split("<")[0].split(">")[0].strip().lower() for r in required}
    assert "pyjwt" not in names
    assert not {n for n in names if "devnet" in n}
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    scripts = wheel.read(entry_points).decode()
    assert "iexec-worker = worker.cli:main" in scripts
    assert "devnet" not in scripts


def test_the_devnet_distribution_lists_every_devnet_package() -> None:
    import tomllib

    declared = set(
        tomllib.loads((ROOT / "devnet" / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    on_disk = {
        ".".join(("devnet", *init.parent.relative_to(ROOT / "devnet").parts))
        for init in (ROOT / "devnet").rglob("__init__.py")
        if "node_modules" not in init.parts
    }
    assert declared == on_disk


def test_the_operator_command_has_no_devnet_subcommand() -> None:
    from worker.cli import build_parser

    parser = build_parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    assert commands.choices is not None
    assert "devnet" not in commands.choices
    assert {"run", "wallet"} <= set(commands.choices)
