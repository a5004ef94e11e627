"""Embedding tracklets with an exported ONNX model (any precision), for the offline evaluation.

The exported graph is the inference contract (models/README.md): uint8 RGB clips (B, T, H, W, 3) in, the
embedding out. Each tracklet is cut into the clips of the test-time mode by the contract's own rule
(:func:`models.sample_clip_indices`, as :mod:`training.test_time` and the service do), every frame read
and resized as the service does (:func:`training.data.transforms.load_frame`), and the clip embeddings are
averaged, exactly as the PyTorch path averages them. So an fp32 export scores what its checkpoint scores,
and an fp16 or int8 export can be compared with it through the same evaluation.

onnxruntime's CPU provider runs fp16 graphs too (the service refuses them on a CPU because they are slow
there, not wrong), so every precision can be evaluated on a CPU-only machine.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models import DEFAULT_TEST_MODE, MAX_TEST_CLIPS, ModelCard, card_path_for
from training.data.sampling import canonical_test_mode, test_clips
from training.data.transforms import load_frame

log = logging.getLogger(__name__)


@dataclass
class OnnxModel:
    """An onnxruntime CPU session over an exported graph and its model card."""

    path: Path
    card: ModelCard
    session: object

    @classmethod
    def load(cls, path: str | Path, threads: int = 0) -> OnnxModel:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model {path} not found")
        card = ModelCard.read(card_path_for(path))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return cls(path, card, session)

    def embed(self, clips: np.ndarray) -> np.ndarray:
        """(B, T, H, W, 3) uint8 RGB -> (B, dim) float32."""
        (embedding,) = self.session.run([self.card.embedding_name], {self.card.input_name: clips})
        return np.asarray(embedding, dtype=np.float32)


def extract_onnx_features(
    model: OnnxModel,
    tracklets: Sequence,
    mode: str = DEFAULT_TEST_MODE,
    batch_size: int = 32,
    max_clips: int | None = MAX_TEST_CLIPS,
    progress: bool = True,
    description: str = "features",
) -> np.ndarray:
    """Embed ``tracklets`` (objects with ``frames``, paths) in one test-time mode: (len(tracklets), dim)
    float32, the mean of each tracklet's clip embeddings. ``batch_size`` counts clips per onnxruntime run
    (clips of several tracklets share a run; ``all`` mode runs one tracklet at a time, its clip being the
    whole tracklet)."""
    mode = canonical_test_mode(mode)
    card = model.card
    features = np.zeros((len(tracklets), card.dim), dtype=np.float32)
    sums = np.zeros((len(tracklets), card.dim), dtype=np.float64)
    counts = np.zeros(len(tracklets), dtype=np.int64)
    pending: list[np.ndarray] = []
    owners: list[int] = []

    def flush() -> None:
        if not pending:
            return
        embeddings = model.embed(np.stack(pending))
        np.add.at(sums, np.asarray(owners), embeddings.astype(np.float64))
        np.add.at(counts, np.asarray(owners), 1)
        pending.clear()
        owners.clear()

    bar = tqdm(total=len(tracklets), desc=description, disable=None if progress else True, leave=False,
               unit="tracklet")  # fmt: skip
    for index, tracklet in enumerate(tracklets):
        clips = test_clips(len(tracklet.frames), card.num_frames, mode, max_clips)
        needed = np.unique(np.concatenate(clips))
        loaded = {int(i): load_frame(tracklet.frames[int(i)], card.height, card.width) for i in needed}
        for clip in clips:
            if len(pending) and len(clip) != len(pending[0]):
                flush()  # `all` mode: clips of different lengths cannot share a run
            pending.append(np.stack([loaded[int(i)] for i in clip]))
            owners.append(index)
            if len(pending) >= batch_size:
                flush()
        bar.update(1)
    flush()
    bar.close()
    features[:] = sums / counts[:, None]
    return features
