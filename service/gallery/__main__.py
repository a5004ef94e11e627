"""Bulk import and export of a gallery: embeddings together with their records, for benchmarks and migrations.

    python -m service.gallery import FILE.npz [--model models/x.onnx] [--data-dir DIR]
    python -m service.gallery export FILE.npz [--model models/x.onnx] [--data-dir DIR]

FILE.npz holds two arrays: ``embeddings`` (n, dim) float32 and ``records`` (n,) strings, each a JSON
object of one tracklet record (the fields of GET /tracklets/{id}: ``id`` required; ``person_id``,
``camera_id``, ``metadata``, ``start_time``/``end_time`` as ISO 8601, ...; ``model_version`` and
``created_at`` are set by the gallery). The embeddings must come from the model whose card is beside
``--model`` (its dim and model_version are checked). The import is one transaction per chunk of
``--chunk`` tracklets; an id already enrolled stops it (nothing of that chunk stored) unless a fresh
directory is used. The service must not be running on the same REID_DATA_DIR (it holds the directory
lock). Defaults come from the service's settings (REID_MODEL_PATH, REID_DATA_DIR, REID_GALLERY_BACKEND).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from service.config import Settings
from service.embedder import load_card
from service.errors import ConflictError, StartupError
from service.gallery import TrackletRecord, open_gallery

log = logging.getLogger("service.gallery")


def read_bundle(path: Path, dim: int) -> tuple[list[TrackletRecord], np.ndarray]:
    """The records and embeddings of an import file; ValueError naming what is wrong."""
    with np.load(path, allow_pickle=False) as bundle:
        missing = {"embeddings", "records"} - set(bundle.files)
        if missing:
            raise ValueError(f"{path} lacks the array(s) {', '.join(sorted(missing))}")
        embeddings = np.ascontiguousarray(bundle["embeddings"], dtype=np.float32)
        texts = [str(text) for text in bundle["records"]]
    if embeddings.ndim != 2 or embeddings.shape[1] != dim:
        raise ValueError(f"embeddings have shape {embeddings.shape}; the model's are (n, {dim})")
    if len(texts) != len(embeddings):
        raise ValueError(f"{len(texts)} records for {len(embeddings)} embeddings")
    if not np.all(np.isfinite(embeddings)):
        raise ValueError("embeddings hold NaN or infinite values")
    records = []
    for number, text in enumerate(texts):
        try:
            fields = json.loads(text)
            fields.pop("model_version", None)
            fields.pop("created_at", None)
            records.append(TrackletRecord.model_validate(fields))
        except (ValueError, ValidationError) as error:
            raise ValueError(f"record {number} is not a tracklet record: {error}") from None
    return records, embeddings


def write_bundle(path: Path, records: list[TrackletRecord], embeddings: np.ndarray) -> None:
    """An import file of these records and embeddings (what `export` writes and `import` reads)."""
    np.savez(path, embeddings=np.asarray(embeddings, dtype=np.float32),
             records=np.array([record.model_dump_json() for record in records], dtype=str))


def run_import(settings: Settings, path: Path, chunk: int) -> int:
    card = load_card(settings.model_path.with_suffix(".json"))
    records, embeddings = read_bundle(path, card.dim)
    gallery = open_gallery(settings, card.dim, card.model_version)
    started = time.perf_counter()
    try:
        for start in range(0, len(records), chunk):
            gallery.add_many(records[start : start + chunk], embeddings[start : start + chunk])
            log.info("imported %d of %d", min(start + chunk, len(records)), len(records))
        total = gallery.count()
    finally:
        gallery.close()
    print(f"imported {len(records)} tracklets from {path} in {time.perf_counter() - started:.1f} s; "
          f"the gallery in {settings.data_dir} holds {total}")
    return 0


def run_export(settings: Settings, path: Path, chunk: int) -> int:
    card = load_card(settings.model_path.with_suffix(".json"))
    gallery = open_gallery(settings, card.dim, card.model_version)
    records: list[TrackletRecord] = []
    try:
        while True:
            page, total = gallery.list(None, len(records), chunk)
            records.extend(page)
            if not page or len(records) >= total:
                break
        embeddings = np.stack([gallery.get_embedding(record.id) for record in records]) if records else np.zeros(
            (0, card.dim), np.float32)
    finally:
        gallery.close()
    write_bundle(path, records, embeddings)
    print(f"exported {len(records)} tracklets to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.gallery", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("import", "add the tracklets of FILE.npz to the gallery"),
                       ("export", "write every tracklet of the gallery to FILE.npz")):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("file", type=Path, help="the .npz file (embeddings + records)")
        command.add_argument("--model", type=Path, help="the ONNX model (its card beside it); default REID_MODEL_PATH")
        command.add_argument("--data-dir", type=Path, help="the gallery directory; default REID_DATA_DIR")
        command.add_argument("--chunk", type=int, default=10_000, help="tracklets per transaction (default 10000)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {key: value for key, value in (("model_path", args.model), ("data_dir", args.data_dir)) if value}
    settings = Settings(**overrides)
    try:
        if args.command == "import":
            return run_import(settings, args.file, max(1, args.chunk))
        return run_export(settings, args.file, max(1, args.chunk))
    except (OSError, ValueError, StartupError, ConflictError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
