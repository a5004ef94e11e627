"""The scripts the images run: docker/pyproject_requirements.py, docker/verify_image.py, docker/healthcheck.py."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PYPROJECT = """
[project]
name = "x"
version = "0"

[project.optional-dependencies]
service = ["fastapi>=0.110", "onnxruntime>=1.17", "Faiss_CPU>=1.8", "numpy>=1.26"]
gpu = ["onnxruntime-gpu>=1.20", "faiss-gpu>=1.8", "numpy>=1.26"]
"""


@pytest.fixture
def pyproject(tmp_path) -> Path:
    path = tmp_path / "pyproject.toml"
    path.write_text(PYPROJECT)
    return path


# pyproject_requirements.py ---------------------------------------------------------------------------------


def test_groups_are_merged_in_order_without_duplicates(requirements_script, pyproject):
    lines = requirements_script.group_requirements(pyproject, ["service", "gpu"])
    assert lines == ["fastapi>=0.110", "onnxruntime>=1.17", "Faiss_CPU>=1.8", "numpy>=1.26",
                     "onnxruntime-gpu>=1.20", "faiss-gpu>=1.8"]


def test_drop_matches_normalised_names_and_extras_are_added(requirements_script, pyproject):
    lines = requirements_script.group_requirements(
        pyproject, ["service", "gpu"], drop=["onnxruntime", "faiss-cpu"], extras={"onnxruntime-gpu": ["cuda", "cudnn"]}
    )
    assert lines == ["fastapi>=0.110", "numpy>=1.26", "onnxruntime-gpu[cuda,cudnn]>=1.20", "faiss-gpu>=1.8"]


def test_with_extras_keeps_existing_extras_and_markers(requirements_script):
    assert (requirements_script.with_extras('pkg[a]>=1; python_version >= "3.11"', ["b", "a"])
            == 'pkg[a,b]>=1; python_version >= "3.11"')


@pytest.mark.parametrize(
    ("groups", "drop", "error"),
    [(["service", "nope"], [], KeyError), (["service"], ["onnxruntime-gpu"], ValueError)],
    ids=["unknown-group", "drop-not-required"],
)
def test_typos_fail_instead_of_keeping_a_clash(requirements_script, pyproject, groups, drop, error):
    with pytest.raises(error):
        requirements_script.group_requirements(pyproject, groups, drop=drop)


def test_command_line_on_the_real_pyproject():
    result = subprocess.run(
        [sys.executable, "docker/pyproject_requirements.py", "pyproject.toml", "service", "gpu",
         "--drop", "onnxruntime", "faiss-cpu", "--extras", "onnxruntime-gpu=cuda,cudnn"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )
    lines = result.stdout.splitlines()
    assert any(line.startswith("onnxruntime-gpu[cuda,cudnn]") for line in lines)
    assert not [line for line in lines if line.startswith(("onnxruntime>", "onnxruntime=", "faiss-cpu"))]
    bad = subprocess.run([sys.executable, "docker/pyproject_requirements.py", "pyproject.toml", "servce"],
                         cwd=REPO, capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "servce" in bad.stderr


# verify_image.py -------------------------------------------------------------------------------------------


def test_distribution_problems_name_missing_and_forbidden(verify_script):
    installed = {"onnxruntime": "1.32.0", "faiss-cpu": "1.15.1", "torch": "2.14.1"}
    problems = verify_script.distribution_problems(installed, ["onnxruntime", "faiss-gpu"], ["torch", "Faiss_CPU"])
    assert problems == ["faiss-gpu is not installed", "torch 2.14.1 is installed but must not be",
                        "Faiss_CPU 1.15.1 is installed but must not be"]


def test_unresolved_libraries_from_ldd_output(verify_script):
    ldd = (
        "\tlinux-vdso.so.1 (0x00007ffc)\n"
        "\tlibcublasLt.so.12 => not found\n"
        "\tlibcudart.so.12 => /opt/venv/lib/python3.11/site-packages/nvidia/cuda_runtime/lib/libcudart.so.12 (0x7f)\n"
        "\tlibcudnn.so.9 => not found\n"
    )
    assert verify_script.unresolved_libraries(ldd) == ["libcublasLt.so.12", "libcudnn.so.9"]


def test_every_variant_keeps_cpu_and_gpu_builds_apart(verify_script):
    assert {"onnxruntime", "faiss-cpu", "torch"} <= set(verify_script.FORBIDDEN["gpu"])
    assert {"onnxruntime-gpu", "faiss-gpu", "torch"} <= set(verify_script.FORBIDDEN["cpu"])
    for variant in ("cpu", "gpu"):
        assert not set(verify_script.REQUIRED[variant]) & set(verify_script.FORBIDDEN[variant])


def test_service_check_rejects_this_environment_because_it_has_torch():
    """This virtualenv holds torch (training), so as a service image it must fail, naming torch."""
    result = subprocess.run([sys.executable, "docker/verify_image.py", "cpu"], cwd=REPO, capture_output=True,
                            text=True, check=False, timeout=120)
    assert result.returncode == 1
    assert "torch" in result.stderr and "must not be" in result.stderr


# healthcheck.py --------------------------------------------------------------------------------------------


class FakeService(http.server.BaseHTTPRequestHandler):
    """/healthz 200; /readyz 200 with the right X-API-Key, else 401; anything else 503."""

    def do_GET(self):  # http.server's naming
        if self.path == "/healthz":
            status = 200
        elif self.path == "/readyz":
            status = 200 if self.headers.get("X-API-Key") == "first" else 401
        else:
            status = 503
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_service_port():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeService)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_probe_reports_status(healthcheck_script, fake_service_port, monkeypatch):
    monkeypatch.delenv("REID_API_KEY", raising=False)
    monkeypatch.setenv("REID_PORT", str(fake_service_port))
    assert healthcheck_script.probe("/healthz")[0] is True
    healthy, reason = healthcheck_script.probe("/broken")
    assert healthy is False and "503" in reason
    assert healthcheck_script.probe("/readyz")[0] is False  # no key sent


def test_probe_sends_the_first_api_key_for_readiness(healthcheck_script, fake_service_port, monkeypatch):
    monkeypatch.setenv("REID_API_KEY", " first , second")
    assert healthcheck_script.probe("/readyz", port=fake_service_port)[0] is True


def test_probe_of_a_closed_port_is_unhealthy(healthcheck_script, fake_service_port):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    healthy, _ = healthcheck_script.probe("/healthz", port=closed_port, timeout=1.0)
    assert healthy is False


def test_healthcheck_exit_codes(fake_service_port):
    def run(path):
        return subprocess.run([sys.executable, "docker/healthcheck.py", path], cwd=REPO, capture_output=True,
                              text=True, check=False, timeout=30,
                              env={"REID_PORT": str(fake_service_port), "PATH": "/usr/bin:/bin"}).returncode

    assert run("/healthz") == 0
    assert run("/broken") == 1
