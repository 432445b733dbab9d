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


# Import name -> distribution name, where they differ.
_DISTRIBUTIONS = {
    "cid": "py-cid",
    "Crypto": "pycryptodome",
    "dotenv": "python-dotenv",
    "jwt": "pyjwt",
    "yaml": "pyyaml",
}


def _third_party_imports(folder: Path) -> set[str]:
    import ast

    own = {"worker", "devnet", "tests", "bench"}
    found: set[str] = set()
    for source in folder.rglob("*.py"):
        if "node_modules" in source.parts:
            continue
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {name for name in found - own if name not in sys.stdlib_module_names and name != "__future__"}


def _declared(pyproject: Path, *extras: str) -> set[str]:
    import re
    import tomllib

    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    return {re.split(r"[=<>!~\[ ;]", requirement, maxsplit=1)[0].lower() for requirement in requirements}


def _normal(name: str) -> str:
    return _DISTRIBUTIONS.get(name, name).replace("_", "-").lower()


@pytest.mark.parametrize(
    ("folder", "pyproject", "extras"),
    [
        ("worker", "pyproject.toml", ()),
        ("devnet", "devnet/pyproject.toml", ()),
        ("tests", "pyproject.toml", ("dev",)),
    ],
)
def test_every_imported_package_is_declared(folder: str, pyproject: str, extras: tuple[str, ...]) -> None:
    """A package imported but only installed as someone else's dependency may vanish or change under us."""
    declared = _declared(ROOT / pyproject, *extras)
    if folder == "tests":  # the tests import the worker's and the devnet's libraries too
        declared |= _declared(ROOT / "devnet/pyproject.toml")
    undeclared = {_normal(name) for name in _third_party_imports(ROOT / folder)} - declared
    assert undeclared == set(), f"{folder}/ imports packages {pyproject} does not declare"


def _locked(lock: Path) -> dict[str, list[str]]:
    """name -> hashes of each pinned requirement of a pip-compile lock."""
    import re

    pins: dict[str, list[str]] = {}
    current = ""
    for line in lock.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.-]+)==\S+", line):
            current = match[1].lower().replace("_", "-")
            pins[current] = []
        elif current and (found := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            pins[current].append(found[1])
    return pins


def test_the_locks_pin_every_package_with_hashes() -> None:
    worker, dev = _locked(ROOT / "requirements/worker.lock"), _locked(ROOT / "requirements/dev.lock")
    for lock in (worker, dev):
        assert lock
        assert all(hashes for hashes in lock.values()), "a pin without its hashes"
    assert _declared(ROOT / "pyproject.toml") <= set(worker)
    assert _declared(ROOT / "pyproject.toml", "dev") | _declared(ROOT / "devnet/pyproject.toml") - {
        "iexec-worker"
    } <= set(dev)
    devnet_in = {
        line.split("==")[0].lower()
        for line in (ROOT / "requirements/devnet.in").read_text().splitlines()
        if "==" in line
    }
    assert devnet_in == _declared(ROOT / "devnet/pyproject.toml") - {"iexec-worker"}
    # What the install scripts do with them.
    assert "--require-hashes -r requirements/dev.lock" in (ROOT / "scripts/bootstrap.sh").read_text()
    # The image's wheels: downloaded with their hashes checked.
    image = (ROOT / "scripts/image.sh").read_text()
    assert "requirements/worker.lock" in image
    assert '--require-hashes -r "$lock"' in image
