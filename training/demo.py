"""The end-to-end demo: README's first command (``make demo``).

Generates the synthetic benchmark (MARS layout), trains a small MG-RAFA on the CPU, evaluates it,
exports it to ONNX with its model card, starts the retrieval service on that model, enrolls the
gallery through ``POST /tracklets``, sends every query through ``POST /query``, and prints rank-1 and mAP
computed from the service's answers beside the offline evaluation of the same model. Then the footage
step: two cameras' synthetic footage through POST /footage (camera A enrolled, camera B searched), with
each person's rank-1 and the tracker's MOTA and IDF1 per camera. A second run reuses the data, the
checkpoint, the export and the footage it finds.

    python -m training.demo [--serve]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from models import ModelCard, card_path_for

log = logging.getLogger("demo")

#: Offline (PyTorch) and service (onnxruntime) metrics must agree within this many points.
AGREEMENT_TOLERANCE = 0.005


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_data(root: Path, seed: int, identities: int) -> None:
    from training.data.synthetic import generate_synthetic

    if (root / "info" / "query_IDX.mat").is_file():
        print(f"reusing the synthetic benchmark in {root}")
        return
    started = time.perf_counter()
    generate_synthetic(root, num_identities=identities, seed=seed)
    print(f"generated the synthetic benchmark in {root} ({time.perf_counter() - started:.0f} s)")


def ensure_trained(config_path: Path, data_root: Path, run_dir: Path, overrides: list[str]) -> Path:
    from training.config import load_config
    from training.trainer import train

    final = run_dir / "final.pt"
    if final.is_file():
        print(f"reusing the trained model {final}")
        return final
    config = load_config(config_path, [f"data.root={data_root}", *overrides])
    started = time.perf_counter()
    train(config, run_dir, resume=(run_dir / "last.pt").is_file())
    print(f"trained in {(time.perf_counter() - started) / 60:.1f} min")
    return final


def ensure_exported(checkpoint: Path, onnx_path: Path) -> ModelCard:
    from training.export import export_model, load_checkpoint_model

    card_path = card_path_for(onnx_path)
    if onnx_path.is_file() and card_path.is_file() and onnx_path.stat().st_mtime >= checkpoint.stat().st_mtime:
        print(f"reusing the export {onnx_path}")
        return ModelCard.read(card_path)
    model, info, num_frames = load_checkpoint_model(checkpoint)
    card = export_model(model, onnx_path, num_frames=num_frames, training_info=info)
    print(f"exported {onnx_path} (model_version {card.model_version}, "
          f"parity {card.export.parity_max_rel_error:.1e})")
    return card


class ServiceProcess:
    """``python -m service`` on a free loopback port, with its own gallery directory."""

    def __init__(self, model_path: Path, data_dir: Path, port: int):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "REID_MODEL_PATH": str(model_path), "REID_DATA_DIR": str(data_dir)}
        env.pop("REID_API_KEY", None)
        self.log_path = data_dir.parent / "service.log"
        self.log_file = open(self.log_path, "w")  # closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=self.log_file, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, client, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited ({self.process.returncode}); see {self.log_path}")
            try:
                response = client.get(f"{self.url}/readyz")
                if response.status_code == 200:
                    return response.json()
            except Exception:  # not listening yet
                pass
            time.sleep(0.5)
        raise TimeoutError(f"the service was not ready within {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log_file.close()


def upload_files(tracklet) -> list[tuple[str, tuple[str, bytes, str]]]:
    """The tracklet's frame files as multipart ``frames`` parts, in temporal order."""
    return [("frames", (Path(path).name, Path(path).read_bytes(), "image/jpeg")) for path in tracklet.frames]


def run_retrieval(url: str, dataset, clients: int = 4) -> tuple[np.ndarray, dict[str, float]]:
    """Enroll every gallery tracklet, query every query tracklet; return the distance matrix the service
    answered with (query x gallery) and timing figures."""
    import httpx

    gallery, queries = dataset.gallery, dataset.query
    timings: dict[str, float] = {}
    with httpx.Client(timeout=120.0) as client:

        def enroll(index: int) -> None:
            tracklet = gallery[index]
            response = client.post(
                f"{url}/tracklets",
                files=upload_files(tracklet),
                data={"tracklet_id": f"g{index:05d}", "person_id": str(tracklet.pid),
                      "camera_id": str(tracklet.camid), "metadata": json.dumps({"gallery_index": index})},
            )
            if response.status_code != 201:
                raise RuntimeError(f"enroll of gallery tracklet {index} failed: {response.status_code} {response.text}")

        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(enroll, range(len(gallery))))
        timings["enroll_s"] = time.perf_counter() - started

        distances = np.full((len(queries), len(gallery)), np.inf, dtype=np.float64)

        def query(index: int) -> None:
            response = client.post(f"{url}/query", files=upload_files(queries[index]),
                                   data={"top_k": str(len(gallery))})
            if response.status_code != 200:
                raise RuntimeError(f"query {index} failed: {response.status_code} {response.text}")
            for match in response.json()["matches"]:
                distances[index, match["metadata"]["gallery_index"]] = match["distance"]

        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(query, range(len(queries))))
        timings["query_s"] = time.perf_counter() - started
    return distances, timings


def run_footage_step(args: argparse.Namespace, service: ServiceProcess) -> dict | None:
    """Step 7: synthetic two-camera footage through POST /footage (camera A enrolled, camera B searched), on
    a second service with its own gallery, so the benchmark's tracklets do not compete with the footage's."""
    from training.data.synthetic_footage import PRESETS, generate_footage
    from training.footage_demo import print_footage_report, run_footage_demo

    step("7/7 footage: enroll camera A's video, search with camera B's (POST /footage)")
    if args.footage_seconds <= 0:
        print("skipped (--footage-seconds 0)")
        return None
    footage_dir = args.data_root.parent / f"footage-{args.footage_seconds:g}s"
    if (footage_dir / "footage_meta.json").is_file():
        print(f"reusing the synthetic footage in {footage_dir}")
    else:
        spec = replace(PRESETS["default"], width=384, height=288, seconds=args.footage_seconds, num_identities=8,
                       seed=args.seed)  # fmt: skip
        generate_footage(footage_dir, spec)
        print(f"rendered {args.footage_seconds:g} s of 384x288 footage per camera into {footage_dir}")
    gallery_dir = args.run_dir / "footage-gallery"
    shutil.rmtree(gallery_dir, ignore_errors=True)
    gallery_dir.mkdir(parents=True)
    footage_service = ServiceProcess(args.model.resolve(), gallery_dir.resolve(), free_port())
    try:
        import httpx

        with httpx.Client(timeout=10.0) as client:
            footage_service.wait_ready(client)
        result = run_footage_demo(footage_service.url, footage_dir)
    finally:
        footage_service.stop()
    print_footage_report(result)
    return {
        "rank1": result.rank1, "mAP": result.mean_ap, "queries": result.queries, "gallery": result.gallery_size,
        "per_person_rank1": {str(identity): hits / total for identity, (hits, total) in result.per_person.items()},
        "cameras": {camera.camera: {**camera.scores, "job_fps": camera.job["progress"]["fps"],
                                    "seconds": camera.seconds} for camera in (result.gallery, result.query)},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("training/configs/synthetic.yaml"))
    # The small preset, kept apart from data/synthetic (the default, larger benchmark) so the demo stays short.
    parser.add_argument("--data-root", type=Path, default=Path("data/synthetic-small"))
    parser.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    parser.add_argument("--model", type=Path, default=Path("models/demo.onnx"))
    parser.add_argument("--port", type=int, default=0, help="service port (default: a free one)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic benchmark")
    parser.add_argument("--identities", type=int, default=80, help="identities of the synthetic benchmark")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training config value, e.g. --set optim.epochs=2 (repeatable)")
    parser.add_argument("--serve", action="store_true", help="keep the service running at the end (Ctrl-C stops it)")
    parser.add_argument("--fresh", action="store_true", help="rebuild data, model and export from scratch")
    parser.add_argument("--footage-seconds", type=float, default=20.0,
                        help="length of each camera's synthetic footage in the footage step (0 skips it)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("onnx_ir", "onnxscript", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    started = time.perf_counter()
    if args.fresh:
        for path in (args.data_root, args.run_dir):
            shutil.rmtree(path, ignore_errors=True)
        args.model.unlink(missing_ok=True)

    step("1/7 synthetic benchmark (MARS layout)")
    ensure_data(args.data_root, args.seed, args.identities)

    step("2/7 training MG-RAFA on the CPU")
    checkpoint = ensure_trained(args.config, args.data_root, args.run_dir, args.overrides)

    step("3/7 offline evaluation (PyTorch)")
    # The contract's default test-time mode (consecutive clips, averaged), exactly what the service samples.
    from models import DEFAULT_TEST_MODE
    from training.data import load_dataset
    from training.evaluation import evaluate, metrics_from_cmc
    from training.run_evaluation import evaluate_checkpoint

    offline_report = evaluate_checkpoint(checkpoint, args.data_root, args.run_dir / "eval", mode=DEFAULT_TEST_MODE)

    step("4/7 export to ONNX")
    card = ensure_exported(checkpoint, args.model)

    step("5/7 retrieval service")
    import httpx

    gallery_dir = args.run_dir / "gallery"
    shutil.rmtree(gallery_dir, ignore_errors=True)  # a fresh gallery each run: enrolments are the demo
    gallery_dir.mkdir(parents=True)
    service = ServiceProcess(args.model.resolve(), gallery_dir.resolve(), args.port or free_port())
    try:
        with httpx.Client(timeout=10.0) as client:
            ready = service.wait_ready(client)
        print(f"service ready at {service.url} on {ready.get('device', '?')} (model {card.model_version})")

        step("6/7 enroll the gallery and query it over HTTP")
        dataset = load_dataset("synthetic", args.data_root)
        distances, timings = run_retrieval(service.url, dataset)
        q_pids = np.array([t.pid for t in dataset.query])
        g_pids = np.array([t.pid for t in dataset.gallery])
        q_cams = np.array([t.camid for t in dataset.query])
        g_cams = np.array([t.camid for t in dataset.gallery])
        cmc, mean_ap = evaluate(distances, q_pids, g_pids, q_cams, g_cams)
        served = metrics_from_cmc(cmc, mean_ap).as_dict()
        offline = offline_report.as_json()
        print(f"enrolled {len(dataset.gallery)} tracklets in {timings['enroll_s']:.1f} s, "
              f"answered {len(dataset.query)} queries in {timings['query_s']:.1f} s")

        print("\n| metric | offline (PyTorch) | service (HTTP, onnxruntime) |")
        print("|---|---:|---:|")
        agree = True
        for key in ("mAP", "rank1", "rank5", "rank10", "rank20"):
            offline_value, served_value = offline[key], served[key]
            agree &= abs(offline_value - served_value) <= AGREEMENT_TOLERANCE
            print(f"| {key} | {100 * offline_value:.1f}% | {100 * served_value:.1f}% |")
        report = {"offline": offline, "service": served, "timings": timings, "model": card.model.model_dump(),
                  "model_version": card.model_version, "agree": agree,
                  "total_minutes": (time.perf_counter() - started) / 60}
        (args.run_dir / "demo.json").write_text(json.dumps(report, indent=2) + "\n")
        print(f"\n{'AGREE' if agree else 'DISAGREE'}: offline and service metrics "
              f"{'match' if agree else 'differ by more than'} within {100 * AGREEMENT_TOLERANCE:.1f} points. "
              f"Total {report['total_minutes']:.1f} min. Report: {args.run_dir / 'demo.json'}")
        footage = run_footage_step(args, service)
        if footage is not None:
            report["footage"] = footage
            (args.run_dir / "demo.json").write_text(json.dumps(report, indent=2) + "\n")
        python = os.path.relpath(sys.executable)
        start_command = f"REID_MODEL_PATH={args.model} REID_DATA_DIR={gallery_dir} {python} -m service"
        if args.serve:
            print(f"\nThe service keeps running (Ctrl-C stops it); API docs at {service.url}/docs. The web page:\n"
                  f"  {service.url}/ui/", flush=True)
            try:
                service.process.wait()
            except KeyboardInterrupt:
                pass
        else:
            print(f"\nStart the service on this model and gallery again with:\n  {start_command}\n"
                  f"then open the web page (API docs at /docs):\n  http://127.0.0.1:8000/ui/")
        return 0 if agree else 1
    finally:
        service.stop()


if __name__ == "__main__":
    sys.exit(main())
