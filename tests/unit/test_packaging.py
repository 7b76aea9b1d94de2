"""What the code imports is declared and bounded, requirements.lock pins it, and what ships
is the product.

The lock is what ./run, the Dockerfile and CI install: each declared requirement (the runtime
ones, the test extra's and the build backend) must be pinned there, at a version its bounds
allow, with hashes; and every third-party module the code imports must be declared, so that a
fresh install never takes whatever is newest on the day. The wheel and the image hold
streams, models and tables only: the local services, the bench and the tests are not shipped.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from streams import __version__
from streams.kafka.aiokafka_fixes import TESTED_AIOKAFKA

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
OURS = {"streams", "models", "tables", "devservices", "tests", "bench"}


def pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirements(group: str) -> list[Requirement]:
    """Return the requirements of ``dependencies``, an extra's, or ``build-system``."""
    data: dict = pyproject()  # type: ignore[type-arg]
    if group == "dependencies":
        raw = data["project"]["dependencies"]
    elif group == "build-system":
        raw = data["build-system"]["requires"]
    else:
        raw = data["project"]["optional-dependencies"][group]
    return [Requirement(line) for line in raw]


def locked() -> dict[str, tuple[Version, int]]:
    """Return the lock's pins: name -> (version, number of hashes)."""
    pins: dict[str, tuple[Version, int]] = {}
    name = ""
    for line in LOCK.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9._-]+)==(\S+)", line):
            name = canonicalize_name(match[1])
            pins[name] = (Version(match[2]), 0)
        elif "--hash=sha256:" in line and name:
            version, hashes = pins[name]
            pins[name] = (version, hashes + 1)
    return pins


def imported_modules(folder: str) -> set[str]:
    """Return the top-level modules imported anywhere in ``folder`` (function bodies too)."""
    modules: set[str] = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.add(node.module.split(".")[0])
    return modules


def third_party(modules: set[str]) -> dict[str, set[str]]:
    """Return the distributions (canonical names) that provide ``modules``, by module."""
    providers = packages_distributions()
    found: dict[str, set[str]] = {}
    for module in modules - OURS - set(sys.stdlib_module_names) - {"__future__"}:
        assert module in providers, f"no installed distribution provides {module!r}"
        found[module] = {canonicalize_name(name) for name in providers[module]}
    return found


def declared(*groups: str) -> set[str]:
    return {canonicalize_name(r.name) for group in groups for r in requirements(group)}


def test_every_package_the_code_imports_is_declared_with_bounds() -> None:
    runtime = declared("dependencies")
    for folder in ("streams", "models", "tables"):
        for module, names in third_party(imported_modules(folder)).items():
            assert names & runtime, (
                f"{folder}/ imports {module!r} ({', '.join(sorted(names))}), "
                "which pyproject.toml's dependencies do not declare"
            )
    # The local services and the tests run from a checkout installed with the test extra.
    for folder in ("devservices", "tests"):
        for module, names in third_party(imported_modules(folder)).items():
            assert names & declared("dependencies", "test"), (
                f"{folder}/ imports {module!r}, which neither dependencies nor the test extra "
                "declares"
            )
    for requirement in requirements("dependencies") + requirements("test"):
        specifiers = list(requirement.specifier)
        exact = any(spec.operator == "==" for spec in specifiers)
        assert exact or any(spec.operator == "<" for spec in specifiers), (
            f"{requirement} has no upper bound"
        )


def test_the_lock_pins_every_declared_requirement_within_its_bounds_with_hashes() -> None:
    pins = locked()
    for group in ("dependencies", "test", "build-system"):
        for requirement in requirements(group):
            name = canonicalize_name(requirement.name)
            assert name in pins, f"requirements.lock lacks {name} ({group}): run ./run lock"
            version, _ = pins[name]
            assert requirement.specifier.contains(version, prereleases=True), (
                f"requirements.lock pins {name}=={version} outside {requirement}: run ./run lock"
            )
    assert all(hashes for _, hashes in pins.values()), "every pin carries its hashes"


def test_the_lock_pins_the_aiokafka_its_fixes_were_written_for() -> None:
    version, _ = locked()["aiokafka"]
    assert str(version) in TESTED_AIOKAFKA


def test_the_image_installs_the_lock_and_then_only_the_project() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    header = LOCK.read_text().split("\n\n", 1)[0]
    assert "./run lock" in header
    run = (ROOT / "run").read_text()
    python = re.search(r"--python-version (\d+\.\d+)", run)
    assert python, "./run lock names the Python version the lock is for"
    assert f"FROM python:{python[1]}-" in dockerfile
    assert "pip install --no-cache-dir --require-hashes -r requirements.lock" in dockerfile
    assert "--no-deps --no-build-isolation ." in dockerfile
    cmd = re.search(r"^CMD (.+)$", dockerfile, re.MULTILINE)
    assert cmd and "-l" not in cmd[1], "the app applies LOG_LEVEL itself"


PRODUCT = ("streams", "models", "tables")
"""The packages the wheel and the image ship; devservices/, bench/ and tests/ stay in the repo."""

NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", ".cache", "build", "dist", "*.egg-info", "__pycache__", "*-data", ".*_cache"
)


def test_the_wheel_holds_the_product_packages_and_nothing_else(tmp_path: Path) -> None:
    """Build the wheel as `pip wheel .` would (the locked setuptools, no isolation) from a copy
    of the checkout, and compare its modules with the product's source files."""
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    build = (
        "import sys, setuptools.build_meta as backend; "
        "print(backend.build_wheel(sys.argv[1]), file=sys.stderr)"
    )
    subprocess.run(
        [sys.executable, "-c", build, str(tmp_path / "wheel")],
        cwd=source,
        capture_output=True,
        check=True,
        timeout=120,
    )
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == set(PRODUCT), f"the wheel ships {sorted(tops)}"
    want = {
        path.relative_to(ROOT).as_posix()
        for package in PRODUCT
        for path in (ROOT / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    missing = want - set(names)
    assert not missing, (
        f"the wheel lacks {sorted(missing)}: a folder of the product without an __init__.py, "
        "or a data file pyproject.toml's package-data does not name"
    )
    # It says what it is: typed (PEP 561), its licence (PEP 639), its version, its command.
    assert {f"{package}/py.typed" for package in PRODUCT} <= set(names)
    wheel_file = zipfile.ZipFile(wheel)
    info = next(name.split("/")[0] for name in names if name.endswith(".dist-info/METADATA"))
    metadata = wheel_file.read(f"{info}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert "License-File: LICENSE" in metadata.splitlines()
    assert f"Version: {__version__}" in metadata.splitlines()
    shipped = wheel_file.read(f"{info}/licenses/LICENSE").decode()
    assert shipped == (ROOT / "LICENSE").read_text()
    scripts = wheel_file.read(f"{info}/entry_points.txt").decode()
    assert "[console_scripts]\nentity-mirror = streams.cli.main:main" in scripts
    assert_a_user_s_code_type_checks_against_the_wheel(wheel, tmp_path)


def assert_a_user_s_code_type_checks_against_the_wheel(wheel: Path, tmp_path: Path) -> None:
    """mypy, checking a user's module against the installed wheel, sees our types (py.typed,
    PEP 561), where without the marker it would skip our packages as untyped (``Any``)."""
    installed = tmp_path / "installed"
    zipfile.ZipFile(wheel).extractall(installed)
    user = tmp_path / "user"
    user.mkdir()
    (user / "entities.py").write_text(
        "from models.planet import Planet\n"
        "from streams.settings import Settings\n"
        "from tables.cache import changelog_topic\n"
        "table: int = Planet.__tablename__\n"
        "settings: int = Settings.from_env()\n"
        "topic: int = changelog_topic('app', 'planet')\n"
    )
    mypy = [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache")]
    checked = subprocess.run(
        [*mypy, "entities.py"],
        cwd=user,
        env={**os.environ, "PYTHONPATH": str(installed)},  # a site-packages dir to mypy
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "py.typed" not in checked.stdout, checked.stdout
    errors = [line for line in checked.stdout.splitlines() if ": error: " in line]
    assert [line.split(":")[1] for line in errors] == ["4", "5", "6"], checked.stdout
    assert '(expression has type "str", variable has type "int")' in errors[0]
    assert '(expression has type "Settings", variable has type "int")' in errors[1]


def test_the_licence_is_apache_2_0_like_faust_streaming_and_aiokafka() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:5] == ["Apache", "License", "Version", "2.0,", "January"]
    assert "END OF TERMS AND CONDITIONS" in text
    assert pyproject()["project"]["license"] == "Apache-2.0"  # type: ignore[index]


def test_the_console_script_runs_the_command_line(tmp_path: Path) -> None:
    """The venv's ``entity-mirror`` (installed by ./run from pyproject's [project.scripts]) is
    ``python -m streams`` under its own name."""
    script = Path(sys.executable).parent / "entity-mirror"
    assert script.exists(), f"{script} is missing: reinstall the project (./run test)"
    done = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: entity-mirror ")
    for command in ("status", "verify", "rebuild", "dlq", "sample-events", "show"):
        assert command in done.stdout
    module = subprocess.run(
        [sys.executable, "-m", "streams", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert module.stdout.startswith("usage: python -m streams ")
    # The same commands and options below the usage line (whose wrapping follows the name).
    assert module.stdout.split("\n\n", 1)[1] == done.stdout.split("\n\n", 1)[1]


def test_the_image_copies_the_product_packages_only() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = {
        source.rstrip("/")
        for line in re.findall(r"^COPY (.+)$", dockerfile, re.MULTILINE)
        for source in line.split()[:-1]
    }
    assert copied == {"requirements.lock", "pyproject.toml", "README.md", "LICENSE", *PRODUCT}
    # The build context is the same list, so the local services' jars and data never reach it.
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    assert allowed == copied


def test_the_changelog_s_newest_release_is_the_package_s_version() -> None:
    """CHANGELOG.md's first release heading names ``streams.__version__``: a release bumps both,
    and entries after it go under "Unreleased", above it."""
    from streams import __version__

    headings = re.findall(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    releases = [heading for heading in headings if heading != "Unreleased"]
    assert releases and releases[0] == __version__, (releases[:1], __version__)
    assert headings.index("Unreleased") < headings.index(releases[0])
    assert [Version(r) for r in releases] == sorted(map(Version, releases), reverse=True)
    assert "[CHANGELOG.md](CHANGELOG.md)" in (ROOT / "README.md").read_text()
