"""Footage pipeline benchmark: tracking quality, cross-camera retrieval and speed on synthetic footage.

Renders two-camera footage with ground truth (training.data.synthetic_footage, 768x576 by default), runs
the footage pipeline (service.footage.pipeline.run_footage) with each detector, and reports:

- MOTA, IDF1, ID switches, precision and recall of every camera (py-motmetrics, IoU 0.5);
- with ``--model``: cross-camera retrieval from footage, camera B's tracklets searched against a gallery
  of camera A's (rank-1 and mAP; each tracklet's identity is the ground-truth person most of its boxes
  overlap at IoU 0.5; tracklets matching nobody stay in the gallery as distractors and are not queries);
- speed: milliseconds per frame of each stage (read, detect, track, cut/crop) and embedding, frames per
  second end to end with embedding included.

    PYTHONPATH=. .venv/bin/python -m bench.bench_footage --model models/demo.onnx     # writes bench/footage.md
    PYTHONPATH=. .venv/bin/python -m bench.bench_footage --seconds 8 --out /tmp/footage.md   (quick)
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench.machine import load_average, machine_description
from service.footage.detection import iou_matrix
from service.footage.pipeline import FootageSettings, format_mot, run_footage
from training.data.synthetic_footage import PRESETS, generate_footage
from training.mot import mot_scores, parse_mot, read_mot

log = logging.getLogger("bench_footage")


def identity_of(boxes: list[tuple], gt: np.ndarray) -> int:
    """The ground-truth id most of the tracklet's boxes overlap at IoU >= 0.5 (0 if none)."""
    votes: dict[int, int] = {}
    for frame, x, y, w, h, _score in boxes:
        rows = gt[gt[:, 0] == frame + 1]
        if not len(rows):
            continue
        iou = iou_matrix(np.asarray([[x, y, x + w, y + h]]), np.c_[rows[:, 2:4], rows[:, 2:4] + rows[:, 4:6]])[0]
        if iou.max() >= 0.5:
            identity = int(rows[int(np.argmax(iou)), 1])
            votes[identity] = votes.get(identity, 0) + 1
    return max(votes, key=votes.get) if votes else 0


def retrieval(queries: np.ndarray, query_ids: list[int], gallery: np.ndarray, gallery_ids: list[int]) -> dict:
    """Rank-1 and mAP (Euclidean distance, as the gallery search) of queries with a known identity."""
    ranks, precisions = [], []
    gallery_ids_arr = np.asarray(gallery_ids)
    for embedding, identity in zip(queries, query_ids, strict=True):
        if identity <= 0 or not (gallery_ids_arr == identity).any():
            continue
        order = np.argsort(((gallery - embedding) ** 2).sum(axis=1), kind="stable")
        hits = gallery_ids_arr[order] == identity
        ranks.append(bool(hits[0]))
        positions = np.flatnonzero(hits) + 1
        precisions.append(float(np.mean(np.arange(1, len(positions) + 1) / positions)))
    return {"queries": len(ranks), "rank1": float(np.mean(ranks)) if ranks else 0.0,
            "mAP": float(np.mean(precisions)) if precisions else 0.0}  # fmt: skip


def rejoin(tracks: dict[int, np.ndarray], tracklets: list, vectors: np.ndarray, fps: float, gap_s: float = 3.0) -> dict:
    """Track id -> new id after linking, by reID embedding, a track that ends to one that starts within
    ``gap_s`` seconds near where it ended (bench-only experiment: does re-joining after occlusions help?).

    The distance threshold is unsupervised: half the median distance between tracklets of tracks that
    overlap in time (certainly two people)."""
    spans = {tid: (int(b[0, 0]), int(b[-1, 0]), b[-1, 1:5], b[0, 1:5]) for tid, b in tracks.items() if len(b)}
    by_track: dict[int, list[int]] = {}
    for index, tracklet in enumerate(tracklets):
        by_track.setdefault(tracklet.track_id, []).append(index)
    mean = {tid: vectors[idx].mean(axis=0) for tid, idx in by_track.items()}
    ids = sorted(mean)
    different = [np.linalg.norm(mean[a] - mean[b]) for i, a in enumerate(ids) for b in ids[i + 1 :]
                 if spans[a][0] <= spans[b][1] and spans[b][0] <= spans[a][1]]  # fmt: skip
    if not different:
        return {}
    threshold = 0.5 * float(np.median(different))
    mapping: dict[int, int] = {}
    taken: set[int] = set()
    for a in sorted(ids, key=lambda t: spans[t][1]):
        end, last = spans[a][1], spans[a][2]
        best, best_d = None, threshold
        for b in ids:
            start, first = spans[b][0], spans[b][3]
            if b == a or b in taken or not 0 < start - end <= gap_s * fps:
                continue
            if np.hypot(*(first[:2] + first[2:] / 2 - last[:2] - last[2:] / 2)) > 3 * last[3]:
                continue
            d = float(np.linalg.norm(mean[a] - mean[b]))
            if d < best_d:
                best, best_d = b, d
        if best is not None:
            mapping[best] = mapping.get(a, a)
            taken.add(best)
    return mapping


def run(args: argparse.Namespace) -> str:
    spec = replace(PRESETS["default"], seconds=args.seconds, seed=args.seed)
    data = Path(args.data)
    if not (data / "footage_meta.json").is_file():
        log.info("rendering %.0f s of footage per camera into %s", spec.seconds, data)
        generate_footage(data, spec)
    cameras = ["cam_a", "cam_b"]
    embedder = None
    card_h, card_w = 256, 128
    if args.model:
        from service.embedder import OnnxEmbedder

        embedder = OnnxEmbedder(Path(args.model), device="cpu")
        card_h, card_w = embedder.card.height, embedder.card.width
    rows, retrieval_rows, speed_rows = [], [], []
    for detector in args.detectors:
        embedded: dict[str, tuple[np.ndarray, list[int]]] = {}
        for camera in cameras:
            video = next((data / camera).glob("video.*"))
            gt = read_mot(data / camera / "gt" / "gt.txt")
            tracklets = []
            settings = FootageSettings(detector=detector)
            summary = run_footage(video, card_height=card_h, card_width=card_w, on_tracklet=tracklets.append,
                                  settings=settings, camera_id=camera)  # fmt: skip
            scores = mot_scores(gt, parse_mot(format_mot(summary.tracks)), summary.frames_processed)
            rows.append((detector, camera, scores, len(summary.tracks), summary.tracklets))
            embed_s = embed_cpu = 0.0
            if embedder is not None and tracklets:
                clips = np.stack([t.clip(embedder.card.num_frames) for t in tracklets])
                started, cpu_started = time.perf_counter(), time.process_time()
                vectors = np.concatenate([embedder.embed(clips[i : i + 8]) for i in range(0, len(clips), 8)])
                embed_s = time.perf_counter() - started
                embed_cpu = time.process_time() - cpu_started
                embedded[camera] = (vectors, [identity_of(t.boxes, gt) for t in tracklets])
                mapping = rejoin(summary.tracks, tracklets, vectors, summary.fps)
                relabelled: dict[int, list] = {}
                for tid, boxes in summary.tracks.items():
                    relabelled.setdefault(mapping.get(tid, tid), []).append(boxes)
                merged = {tid: np.concatenate(parts) for tid, parts in relabelled.items()}
                joined = mot_scores(gt, parse_mot(format_mot(merged)), summary.frames_processed)
                rows.append((f"{detector} + reID re-join", camera, joined, len(merged), summary.tracklets))
            frames = summary.frames_processed
            seconds = summary.seconds
            speed_rows.append((detector, camera, frames, seconds, embed_s, embed_cpu))
            log.info(
                "%s %s: MOTA %.3f IDF1 %.3f, %d tracks, %d tracklets, %.1f fps", detector, camera, scores["mota"],
                scores["idf1"], len(summary.tracks), summary.tracklets, frames / seconds["total"],
            )  # fmt: skip
        if embedder is not None and len(embedded) == 2:
            (gallery, gallery_ids), (queries, query_ids) = embedded["cam_a"], embedded["cam_b"]
            retrieval_rows.append((detector, retrieval(queries, query_ids, gallery, gallery_ids), len(gallery)))
    return report(args, spec, rows, retrieval_rows, speed_rows, embedder)


def rejoin_summary(rows) -> str:
    """' Measured: IDF1 +x, MOTA +y on average over the cameras and detectors.' (empty without re-join rows)."""
    plain = {(d, c): s for d, c, s, _t, _n in rows if not d.endswith("re-join")}
    deltas = [(s["idf1"] - plain[(d.split(" + ")[0], c)]["idf1"], s["mota"] - plain[(d.split(" + ")[0], c)]["mota"])
              for d, c, s, _t, _n in rows if d.endswith("re-join")]  # fmt: skip
    if not deltas:
        return ""
    idf1, mota = np.mean(deltas, axis=0)
    return (f" Measured here: IDF1 {idf1:+.3f}, MOTA {mota:+.3f} on average over cameras and detectors, so"
            " the pipeline does not adopt it.")  # fmt: skip


def report(args, spec, rows, retrieval_rows, speed_rows, embedder) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Footage pipeline: tracking quality, cross-camera retrieval, speed (bench/bench_footage.py)",
        "",
        f"Measured {now} on {machine_description()} (load average {load_average()} at the end; the machine",
        f"is shared, so speed figures are pessimistic). OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}.",
        "",
        f"Footage: `training.data.synthetic_footage`, {spec.width}x{spec.height}, {spec.fps:g} fps, "
        f"{spec.seconds:g} s per camera, {spec.num_identities} people walking through both cameras (groups, crossings, "
        f"stops, shadows, a pole, lighting drift), seed {spec.seed}. Command:",
        "",
        "    " + args.command,
        "",
        "## Tracking (MOTChallenge metrics, IoU 0.5, every ground-truth box counts)",
        "",
        "| detector | camera | MOTA | IDF1 | ID switches | precision | recall | FP | misses | GT boxes | tracks "
        "| tracklets |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for detector, camera, s, tracks, tracklets in rows:
        lines.append(
            f"| {detector} | {camera} | {s['mota']:.3f} | {s['idf1']:.3f} | {s['id_switches']:.0f} "
            f"| {s['precision']:.3f} | {s['recall']:.3f} | {s['false_positives']:.0f} | {s['misses']:.0f} "
            f"| {s['gt_boxes']:.0f} | {tracks} | {tracklets} |"
        )
    lines += [
        "",
        "## Cross-camera retrieval from footage",
        "",
        "Camera B's tracklets against a gallery of camera A's.",
        "",
    ]
    if retrieval_rows:
        card = embedder.card
        lines += [
            f"Model `{args.model}` ({card.name}, {card.height}x{card.width}, T={card.num_frames}, dim {card.dim}). "
            + (args.model_note or ""),
            "",
            "| detector | queries | gallery tracklets | rank-1 | mAP |",
            "|---|---:|---:|---:|---:|",
        ]
        for detector, r, gallery_size in retrieval_rows:
            lines.append(f"| {detector} | {r['queries']} | {gallery_size} | {r['rank1']:.3f} | {r['mAP']:.3f} |")
    else:
        lines.append("Not measured: no `--model` given.")
    lines += [
        "",
        "## Speed (milliseconds per frame; end to end includes embedding every tracklet)",
        "",
        "Wall-clock stages on the shared machine, then the CPU time the process used per frame (all its",
        "threads, pipeline + embedding), which the other jobs on the machine do not inflate: 1000 / CPU ms is",
        "about the frame rate one dedicated core would give.",
        "",
        "| detector | camera | frames | read | detect | track | cut+crop | embed | end to end (wall) | fps (wall) "
        "| CPU ms/frame | fps per dedicated core |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for detector, camera, frames, s, embed_s, embed_cpu in speed_rows:
        n = max(frames, 1)
        per = {k: 1000 * v / n for k, v in s.items()}
        total = (s["total"] + embed_s) / n
        cpu = 1000 * (s["cpu"] + embed_cpu) / n
        lines.append(
            f"| {detector} | {camera} | {frames} | {per['read']:.1f} | {per['detect']:.1f} | {per['track']:.1f} "
            f"| {per['cut']:.1f} | {1000 * embed_s / n:.1f} | {1000 * total:.1f} | {1 / total:.1f} | {cpu:.1f} "
            f"| {1000 / cpu:.1f} |"
        )
    lines += [
        "",
        "## Notes",
        "",
        "- ONNX detectors (`REID_DETECTOR=/path/model.onnx`): not in the tables. No person-detector weights are on",
        "  this machine and none can be downloaded here; the YOLOv5/YOLOv8/end-to-end layouts, the letterbox",
        "  mapping, the class filter and NMS are tested with constant ONNX graphs (tests/footage).",
        "- Re-joining a person after an occlusion by the reID embedding: the pipeline does not do it; association",
        "  is by IoU (two stages, then buffered IoU), gaps up to 1.5 s are bridged by the Kalman prediction and",
        "  interpolated in the output. The `+ reID re-join` rows (only with `--model`) measure what linking would",
        "  bring: a track that ends is joined to one that starts within 3 s near where it ended when their mean",
        "  tracklet embeddings are closer than half the median distance between tracks seen at the same time",
        "  (`rejoin` in this script)." + rejoin_summary(rows),
        "- Speed: stages run one after the other on one thread each (OpenCV and onnxruntime use their default",
        "  thread pools); `embed` is the reID model over every tracklet's T frames, batch 8.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/footage-bench", help="footage folder (rendered if missing)")
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--detectors", nargs="+", default=["background", "background-knn"])
    parser.add_argument("--model", help="exported reID model (.onnx with its card) for the retrieval figures")
    parser.add_argument("--model-note", help="how the model was obtained (printed under the retrieval table)")
    parser.add_argument("--out", default="bench/footage.md")
    args = parser.parse_args(argv)
    args.command = "PYTHONPATH=. .venv/bin/python -m bench.bench_footage " + shlex.join(argv or sys.argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    text = run(args)
    Path(args.out).write_text(merge_section(Path(args.out), text), encoding="utf-8")
    print(text)


BEGIN, END = "<!-- footage-pipeline:begin -->", "<!-- footage-pipeline:end -->"


def merge_section(path: Path, text: str) -> str:
    """The file's text with this script's section (between its markers) replaced by ``text``, or ``text``
    put first; other sections of the file (the API benchmark's) are kept as they are."""
    section = f"{BEGIN}\n{text}{END}\n"
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        return head + section + "\n" + rest.split(END, 1)[1].lstrip("\n")
    return section + ("\n" + old if old else "")


if __name__ == "__main__":
    main()
