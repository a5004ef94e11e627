"""Build-time check of an image's Python environment; the Dockerfiles run it, a failure stops the build.

    python verify_image.py cpu|gpu|train

It checks what the images promise and what pip alone does not guarantee:
* cpu / gpu: the service's packages import, torch is absent, and the CPU and GPU builds of onnxruntime
  and faiss are never installed together (they ship the same import packages and overwrite each other);
* gpu: onnxruntime-gpu is a CUDA 12 build, and every CUDA library that onnxruntime's CUDA provider and
  faiss link against resolves through the dynamic loader's configuration, so both load on a GPU host
  (what needs a driver and a GPU, cudaSetDevice, cannot be checked at build time);
* train: torch and torchvision import and torch is a CUDA build.

Standard library only apart from the packages it checks.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

#: Distributions each variant must have, and must not have.
REQUIRED = {
    "cpu": ["fastapi", "uvicorn", "pydantic-settings", "python-multipart", "prometheus-client",
            "opencv-python-headless", "onnxruntime", "faiss-cpu"],
    "gpu": ["fastapi", "uvicorn", "pydantic-settings", "python-multipart", "prometheus-client",
            "opencv-python-headless", "onnxruntime-gpu", "faiss-gpu", "nvidia-cuda-runtime-cu12", "nvidia-cublas-cu12",
            "nvidia-cudnn-cu12", "nvidia-cufft-cu12", "nvidia-curand-cu12"],
    "train": ["torch", "torchvision", "onnx", "onnxruntime", "opencv-python-headless"],
}
FORBIDDEN = {
    "cpu": ["torch", "torchvision", "onnxruntime-gpu", "faiss-gpu"],
    "gpu": ["torch", "torchvision", "onnxruntime", "faiss-cpu"],
    "train": ["onnxruntime-gpu"],
}
IMPORTS = {
    "cpu": ["cv2", "faiss", "fastapi", "numpy", "onnxruntime", "prometheus_client", "pydantic_settings", "uvicorn"],
    "gpu": ["cv2", "faiss", "fastapi", "numpy", "onnxruntime", "prometheus_client", "pydantic_settings", "uvicorn"],
    "train": ["cv2", "onnx", "onnxruntime", "pydantic", "torch", "torchvision"],
}
#: The CUDA major version onnxruntime-gpu must be built for: the one faiss-gpu's wheels are built for.
GPU_CUDA_MAJOR = 12


def canonical_name(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_distributions() -> dict[str, str]:
    """Canonical name -> version of every distribution importlib.metadata sees."""
    return {canonical_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}


def distribution_problems(installed: dict[str, str], required: list[str], forbidden: list[str]) -> list[str]:
    """Sentences naming each required distribution that is missing and each forbidden one present."""
    problems = [f"{name} is not installed" for name in required if canonical_name(name) not in installed]
    problems += [
        f"{name} {installed[canonical_name(name)]} is installed but must not be"
        for name in forbidden
        if canonical_name(name) in installed
    ]
    return problems


def unresolved_libraries(ldd_output: str) -> list[str]:
    """Sonames that ``ldd`` reports as ``not found``."""
    return re.findall(r"^\s*(\S+)\s+=>\s+not found", ldd_output, flags=re.MULTILINE)


def cuda_linked_libraries() -> list[Path]:
    """The shared objects of onnxruntime's CUDA provider and of faiss that link against CUDA."""
    import faiss  # only in the gpu image
    import onnxruntime

    capi = Path(onnxruntime.__file__).parent / "capi"
    return [capi / "libonnxruntime_providers_cuda.so", Path(faiss.__file__).parent / "libfaiss.so"]


def gpu_problems() -> list[str]:
    """What would stop onnxruntime's CUDA provider or faiss-gpu from loading on a GPU host."""
    import faiss
    import onnxruntime
    from onnxruntime.capi import build_and_package_info

    problems = []
    cuda_version = getattr(build_and_package_info, "cuda_version", "")
    if not cuda_version.startswith(f"{GPU_CUDA_MAJOR}."):
        problems.append(f"onnxruntime {onnxruntime.__version__} is built for CUDA {cuda_version or '?'}, "
                        f"faiss-gpu for CUDA {GPU_CUDA_MAJOR}: pin an onnxruntime-gpu built for CUDA "
                        f"{GPU_CUDA_MAJOR} (docker/constraints-gpu.txt)")
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        problems.append("onnxruntime has no CUDAExecutionProvider (is this the CPU build?)")
    if not hasattr(faiss, "StandardGpuResources"):
        problems.append("faiss has no GPU support (is this faiss-cpu?)")
    for library in cuda_linked_libraries():
        if not library.is_file():
            problems.append(f"{library} is missing")
            continue
        ldd = subprocess.run(["ldd", str(library)], capture_output=True, text=True, check=False)
        for soname in unresolved_libraries(ldd.stdout):
            problems.append(f"{library.name} needs {soname}, which the dynamic loader does not find "
                            "(is /etc/ld.so.conf.d/nvidia-pip-wheels.conf in place and ldconfig run?)")
    return problems


def verify(variant: str) -> list[str]:
    """Every problem of the current environment for ``variant`` (an empty list: all good)."""
    installed = installed_distributions()
    problems = distribution_problems(installed, REQUIRED[variant], FORBIDDEN[variant])
    for module in IMPORTS[variant]:
        try:
            importlib.import_module(module)
        except Exception as error:  # any import failure is a broken image
            problems.append(f"import {module} failed: {error}")
    if variant == "gpu" and not problems:
        problems += gpu_problems()
    if variant == "train" and not problems:
        import torch

        if torch.version.cuda is None:
            problems.append(f"torch {torch.__version__} is a CPU-only build; the training image needs CUDA")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check an image's Python environment.")
    parser.add_argument("variant", choices=sorted(REQUIRED))
    args = parser.parse_args(argv)
    problems = verify(args.variant)
    if problems:
        print(f"image check ({args.variant}) FAILED:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    installed = installed_distributions()
    names = sorted(set(REQUIRED[args.variant]))
    print(f"image check ({args.variant}) passed: " + ", ".join(f"{n} {installed[canonical_name(n)]}" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
