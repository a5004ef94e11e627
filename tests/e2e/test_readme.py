"""Every command in README.md is run here, or checked as far as this machine allows.

- the `python -m service` line starts the real service (on a tiny exported model and a free port), and
  every `curl` example runs against it, in order, and must answer 2xx;
- every `python -m training ...` / `torchrun ... -m training ...` line is parsed by the real CLI parser,
  and the configs it names exist and load; the `--random-init` export line runs for real;
- `make` targets are run by CI (`make test`) and tests/e2e/test_demo.py (`training.demo`); docker lines
  name services that docker-compose.yml defines (tests/deploy validates that file with Docker Compose).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def readme_commands() -> list[str]:
    """Shell commands of the README's bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for command in block.replace("\\\n", " ").splitlines():
            command = command.split("  #")[0].strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


COMMANDS = readme_commands()


def test_readme_opens_with_the_two_commands():
    first_block = re.search(r"```bash\n(.*?)```", README, flags=re.S).group(1)
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def training_argv(command: str) -> list[str] | None:
    words = shlex.split(command)
    if "-m" not in words:
        return None
    module = words[words.index("-m") + 1]
    if module != "training":
        return None
    return words[words.index("-m") + 2:]


def test_training_commands_parse_and_name_real_configs():
    from training.cli import FORWARDED, build_parser
    from training.config import load_config

    parser = build_parser()
    checked = 0
    for command in COMMANDS:
        argv = training_argv(command)
        if argv is None or argv[0] in FORWARDED:  # forwarded commands have their own parsers (tests below)
            continue
        args = parser.parse_args(argv)
        config = getattr(args, "config", None)
        if config:
            assert (ROOT / config).is_file(), command
            load_config(ROOT / config)
        checked += 1
    assert checked >= 5


def test_attention_command_renders_figure_3(tmp_path):
    """The README's `python -m training attention` line, run for real on a tiny checkpoint and tracklet."""
    import torch

    from training.checkpoint import Checkpoint
    from training.cli import main
    from training.config import TrainConfig
    from training.model import build_model

    (line,) = [c for c in COMMANDS if training_argv(c) and training_argv(c)[0] == "attention"]
    argv = training_argv(line)
    torch.manual_seed(0)
    model = build_model(backbone="resnet18", head="mg-rafa", granularities=2, height=64, width=32).eval()
    checkpoint = tmp_path / "final.pt"
    Checkpoint(epoch=1, model=model.state_dict(), model_config=model.config.to_dict(),
               config=TrainConfig().to_dict(), dataset="synthetic", split_id=0, num_train_pids=2).save(checkpoint)
    tracklet = tmp_path / "tracklet"
    tracklet.mkdir()
    for index in range(5):
        cv2.imwrite(str(tracklet / f"{index:03d}.jpg"), np.full((64, 32, 3), 30 * index, np.uint8))
    for option, value in (("--checkpoint", checkpoint), ("--tracklet", tracklet), ("--out", tmp_path / "out")):
        argv[argv.index(option) + 1] = str(value)
    assert main(argv) == 0
    assert cv2.imread(str(tmp_path / "out" / "attention.png")) is not None
    assert (tmp_path / "out" / "G-1st.png").is_file() and (tmp_path / "out" / "G-2nd.png").is_file()


def test_export_commands(tmp_path):
    from training.export import main as export_main
    from training.export import parse_args

    lines = [c for c in COMMANDS if "-m training.export" in c]
    assert len(lines) == 2
    for command in lines:
        words = shlex.split(command)
        argv = words[words.index("training.export") + 1:]
        parse_args(argv)
        if "--random-init" in argv:
            argv[argv.index("--out") + 1] = str(tmp_path / "tiny.onnx")
            assert export_main(argv) == 0
            assert (tmp_path / "tiny.json").is_file()


def test_docker_lines_name_compose_services():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    docker_lines = [c for c in COMMANDS if c.startswith("docker compose")]
    assert docker_lines
    for command in docker_lines:
        words = shlex.split(command)
        verb = next(w for w in words if w in ("up", "run", "build"))
        service = [w for w in words[words.index(verb) + 1:] if not w.startswith("-")][0]
        assert service in compose["services"], command
    assert (ROOT / "docker" / "env.example").is_file()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """The files the curl examples upload, made with OpenCV."""
    folder = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(folder / "walk.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 128))
    for _ in range(10):
        writer.write(rng.integers(0, 256, (128, 64, 3), dtype=np.uint8))
    writer.release()
    for index in (1, 2, 3):
        cv2.imwrite(str(folder / f"f{index:03d}.jpg"), rng.integers(0, 256, (128, 64, 3), dtype=np.uint8))
    with zipfile.ZipFile(folder / "frames.zip", "w") as archive:
        for index in range(5):
            ok, data = cv2.imencode(".png", rng.integers(0, 256, (128, 64, 3), dtype=np.uint8))
            archive.writestr(f"{index:04d}.png", data.tobytes())
    # The footage examples' street.mp4: two people walking across a still background (mp4v).
    sys.path.insert(0, str(ROOT / "tests" / "service"))
    from footage_media import street_frames, video_bytes

    (folder / "street.mp4").write_bytes(video_bytes(street_frames(), "mp4v", ".mp4"))
    return folder


@pytest.fixture(scope="module")
def readme_service(tmp_path_factory, media, tiny_model):
    """The service started exactly as the README's line does, on a tiny model and a free port."""
    (line,) = [c for c in COMMANDS if c.startswith("REID_MODEL_PATH") and c.split(" -m ")[1].startswith("service ")]
    words = shlex.split(line)
    env_words = [w for w in words if re.match(r"^REID_[A-Z_]+=", w)]
    argv = words[len(env_words):]
    assert argv[0] == ".venv/bin/python" and argv[1:3] == ["-m", "service"]
    overrides = {"REID_MODEL_PATH": str(tiny_model), "REID_DATA_DIR": str(tmp_path_factory.mktemp("gallery"))}
    env = {**os.environ, **dict(w.split("=", 1) for w in env_words), **overrides, "PYTHONPATH": str(ROOT)}
    env.pop("REID_API_KEY", None)
    port = free_port()
    args = [sys.executable, *argv[1:]]
    args[args.index("--port") + 1] = str(port)
    process = subprocess.Popen(args, cwd=media, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        process.kill()
        pytest.fail("the README's service command did not come up: " + process.stdout.read().decode()[-2000:])
    yield url
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def is_footage_example(command: str) -> bool:
    return any(word in command for word in ("service.footage", "/footage", "/jobs", "JOB_ID", "TRACKLET_ID"))


def test_curl_examples_run_against_the_service(readme_service, media):
    curls = [c for c in COMMANDS if c.startswith("curl") and not is_footage_example(c)]
    assert len(curls) >= 9
    for command in curls:
        command = command.replace("http://localhost:8000", readme_service)
        result = subprocess.run(f"{command} -w '\\n%{{http_code}}'", shell=True, cwd=media, capture_output=True,
                                text=True, timeout=60)
        status = result.stdout.rsplit("\n", 1)[-1]
        assert status.startswith("2"), f"{command} -> {result.stdout[-500:]}"
    # What the examples did: bob-1 deleted, alice and carol enrolled.
    page = httpx.get(f"{readme_service}/tracklets").json()
    assert sorted(item["person_id"] for item in page["items"]) == ["alice", "carol"]


def test_bulk_import_command_runs(tmp_path, tiny_model):
    from service.gallery import TrackletRecord
    from service.gallery.__main__ import write_bundle

    (line,) = [c for c in COMMANDS if "-m service.gallery import" in c]
    words = shlex.split(line)
    env_words = [w for w in words if re.match(r"^REID_[A-Z_]+=", w)]
    argv = words[len(env_words):]
    assert argv[0] == ".venv/bin/python" and argv[1:4] == ["-m", "service.gallery", "import"]
    dim = int(__import__("json").loads(tiny_model.with_suffix(".json").read_text())["embedding"]["dim"])
    write_bundle(tmp_path / argv[4], [TrackletRecord(id=f"imported-{n}", camera_id="cam1") for n in range(3)],
                 np.random.default_rng(0).normal(size=(3, dim)).astype(np.float32))
    env = {**os.environ, **dict(w.split("=", 1) for w in env_words), "PYTHONPATH": str(ROOT),
           "REID_MODEL_PATH": str(tiny_model), "REID_DATA_DIR": str(tmp_path / "gallery-data")}
    result = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "imported 3 tracklets" in result.stdout


@pytest.mark.milvus
def test_migrate_command_runs(tmp_path, tiny_model):
    """The README's migration line, on a SQLite gallery of the tiny model, into a Milvus Lite server."""
    sys.path.insert(0, str(ROOT / "tests" / "service"))
    from milvus_server import MilvusLiteServer

    from service.gallery import SqliteGallery, TrackletRecord
    from service.gallery.milvus import MilvusGallery

    (line,) = [c for c in COMMANDS if "-m service.gallery migrate" in c]
    words = shlex.split(line)
    env_words = [w for w in words if re.match(r"^REID_[A-Z_]+=", w)]
    argv = words[len(env_words):]
    assert argv[0] == ".venv/bin/python" and argv[1:] == ["-m", "service.gallery", "migrate", "--to", "milvus"]
    card = __import__("json").loads(tiny_model.with_suffix(".json").read_text())
    dim, version = int(card["embedding"]["dim"]), card["model_version"]
    gallery = SqliteGallery(tmp_path / "gallery-data", dim, version)
    gallery.add_many([TrackletRecord(id=f"sqlite-{n}", camera_id="cam1") for n in range(3)],
                     np.random.default_rng(0).normal(size=(3, dim)).astype(np.float32))
    gallery.close()
    server = MilvusLiteServer(tmp_path / "milvus", tmp_path / "milvus.log").start()
    try:
        env = {**os.environ, **dict(w.split("=", 1) for w in env_words), "PYTHONPATH": str(ROOT),
               "REID_MODEL_PATH": str(tiny_model), "REID_DATA_DIR": str(tmp_path / "gallery-data"),
               "REID_MILVUS_URI": server.uri}
        result = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "3 copied, 0 already there; the collection holds 3" in result.stdout
        migrated = MilvusGallery(server.uri, "reid_gallery", dim, version)
        assert [record.id for record in migrated.list()[0]] == ["sqlite-0", "sqlite-1", "sqlite-2"]
        migrated.close()
    finally:
        server.stop()


@pytest.mark.milvus
@pytest.mark.redis
def test_worker_command_runs(tmp_path, tiny_model):
    """The README's worker line against a redis-server and a Milvus Lite server started here: with --burst it
    loads the model and the gallery, finds the queue empty and exits 0."""
    sys.path.insert(0, str(ROOT / "tests" / "service"))
    from milvus_server import MilvusLiteServer
    from redis_server import RedisServer, redis_server_or_skip

    (line,) = [c for c in COMMANDS if "-m service.worker" in c]
    words = shlex.split(line)
    env_words = [w for w in words if re.match(r"^REID_[A-Z_]+=", w)]
    argv = words[len(env_words):]
    assert argv[0] == ".venv/bin/python" and argv[1:] == ["-m", "service.worker", "--burst"]
    redis_server = RedisServer(redis_server_or_skip(), tmp_path / "redis").start()
    milvus = MilvusLiteServer(tmp_path / "milvus", tmp_path / "milvus.log").start()
    try:
        env = {**os.environ, **dict(w.split("=", 1) for w in env_words), "PYTHONPATH": str(ROOT),
               "REID_MODEL_PATH": str(tiny_model), "REID_DATA_DIR": str(tmp_path / "data"),
               "REID_DEVICE": "cpu", "REID_MILVUS_URI": milvus.uri}  # fmt: skip
        assert env["REID_REDIS_URL"] == "redis://localhost:6379/0"
        env["REID_REDIS_URL"] = redis_server.url
        result = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=300)  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        assert "worker stopped" in result.stderr
    finally:
        milvus.stop()
        redis_server.stop()


def test_footage_examples_run_in_one_shell(readme_service, media):
    """The footage section's lines in order, in one bash (its variables carry over), each curl with -f so an
    error answer fails the script; the CLI runs with this interpreter."""
    lines = [c for c in COMMANDS if is_footage_example(c)]
    assert sum("service.footage" in line for line in lines) == 2 and sum("/jobs" in line for line in lines) >= 3
    script = ["set -euo pipefail"]
    for line in lines:
        line = line.replace("http://localhost:8000", readme_service).replace(".venv/bin/python", sys.executable)
        script.append(re.sub(r"\bcurl -s\b", "curl -sf", line))
    result = subprocess.run(["bash", "-c", "\n".join(script)], cwd=media, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "2 tracklets enrolled" in result.stdout
    thumbnail = cv2.imread(str(media / "thumbnail.jpg"))
    assert thumbnail is not None and thumbnail.shape[0] > 16
    jobs = httpx.get(f"{readme_service}/jobs").json()
    assert jobs["total"] == 3 and {job["camera_id"] for job in jobs["items"]} == {"gate-3", "gate-4", "gate-5"}


def test_configuration_table_lists_every_setting():
    from service.config import Settings

    documented = set(re.findall(r"`(REID_[A-Z0-9_]+)`", README))
    expected = {f"REID_{name.upper()}" for name in Settings.model_fields}
    assert expected <= documented, sorted(expected - documented)
