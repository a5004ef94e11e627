"""Bulk import and export of a gallery: embeddings together with their records, for benchmarks and migrations.

    python -m service.gallery import FILE.npz [--model models/x.onnx] [--data-dir DIR]
    python -m service.gallery export FILE.npz [--model models/x.onnx] [--data-dir DIR]
    python -m service.gallery migrate --to milvus [--model models/x.onnx] [--data-dir DIR]
                                      [--milvus-uri URI] [--milvus-collection NAME]

FILE.npz holds two arrays: ``embeddings`` (n, dim) float32 and ``records`` (n,) strings, each a JSON
object of one tracklet record (the fields of GET /tracklets/{id}: ``id`` required; ``person_id``,
``camera_id``, ``metadata``, ``start_time``/``end_time`` as ISO 8601, ...; ``model_version`` and
``created_at`` are set by the gallery). The embeddings must come from the model whose card is beside
``--model`` (its dim and model_version are checked). The import is one transaction per chunk of
``--chunk`` tracklets; an id already enrolled stops it (nothing of that chunk stored) unless a fresh
directory is used. The service must not be running on the same REID_DATA_DIR (it holds the directory
lock). Defaults come from the service's settings (REID_MODEL_PATH, REID_DATA_DIR, REID_GALLERY_BACKEND).

``migrate --to milvus`` copies the SQLite gallery in REID_DATA_DIR (records, their enrollment order and
created_at, embeddings) into the Milvus collection of REID_MILVUS_URI / REID_MILVUS_COLLECTION, in
chunks. It is idempotent: ids the collection already holds are skipped, so an interrupted migration is
finished by running it again, and running it twice copies nothing the second time. The SQLite gallery
is only read.
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


def run_migrate(settings: Settings, chunk: int) -> int:
    """Copies the SQLite gallery of ``settings.data_dir`` into the Milvus collection of ``settings``."""
    from service.gallery import SqliteGallery
    from service.gallery.milvus import MilvusGallery

    card = load_card(settings.model_path.with_suffix(".json"))
    source = SqliteGallery(settings.data_dir, card.dim, card.model_version)
    try:
        token = settings.milvus_token.get_secret_value() if settings.milvus_token is not None else None
        target = MilvusGallery(settings.milvus_uri, settings.milvus_collection, card.dim, card.model_version,
                               token=token, timeout_s=settings.milvus_timeout_s)
    except BaseException:
        source.close()
        raise
    started = time.perf_counter()
    copied = skipped = 0
    try:
        total = source.count()
        for offset in range(0, total, chunk):
            page, _ = source.list(None, offset, chunk)
            present = target.existing_ids([record.id for record in page])
            new = [record for record in page if record.id not in present]
            skipped += len(page) - len(new)
            if new:
                vectors = source.get_embeddings([record.id for record in new])
                target.copy_in(new, np.stack([vectors[record.id] for record in new]))
                copied += len(new)
            log.info("migrated %d of %d", min(offset + chunk, total), total)
        held = target.count()
    finally:
        source.close()
        target.close()
    print(f"migrated {total} tracklets from {settings.data_dir} to Milvus collection {settings.milvus_collection!r} "
          f"at {settings.milvus_uri} in {time.perf_counter() - started:.1f} s: {copied} copied, {skipped} already "
          f"there; the collection holds {held}")
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
    text = "copy the SQLite gallery of REID_DATA_DIR into Milvus (idempotent: ids already there are skipped)"
    migrate = commands.add_parser("migrate", help=text, description=text)
    migrate.add_argument("--to", required=True, choices=["milvus"], help="the backend to move the gallery to")
    migrate.add_argument("--model", type=Path, help="the ONNX model (its card beside it); default REID_MODEL_PATH")
    migrate.add_argument("--data-dir", type=Path, help="the SQLite gallery directory; default REID_DATA_DIR")
    migrate.add_argument("--milvus-uri", help="the Milvus address; default REID_MILVUS_URI")
    migrate.add_argument("--milvus-collection", help="the target collection; default REID_MILVUS_COLLECTION")
    migrate.add_argument("--chunk", type=int, default=1000, help="tracklets per Milvus write (default 1000)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    given = (("model_path", args.model), ("data_dir", args.data_dir),
             ("milvus_uri", getattr(args, "milvus_uri", None)),
             ("milvus_collection", getattr(args, "milvus_collection", None)))
    settings = Settings(**{key: value for key, value in given if value})
    try:
        if args.command == "migrate":
            return run_migrate(settings, max(1, args.chunk))
        if args.command == "import":
            return run_import(settings, args.file, max(1, args.chunk))
        return run_export(settings, args.file, max(1, args.chunk))
    except (OSError, ValueError, StartupError, ConflictError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
