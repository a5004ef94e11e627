"""The train/serve contract: torch-free code both training/ and service/ import.

models.contract: the model card, test-time frame sampling, preprocessing and the file hash (re-exported
here); models.rerank: k-reciprocal re-ranking. The folder also keeps exported models (NAME.onnx +
NAME.json), which are git-ignored.
"""

from models.contract import (
    EMBEDDING_NAME,
    IMAGENET_MEAN,
    IMAGENET_STD,
    INPUT_COLOR,
    INPUT_DTYPE,
    INPUT_LAYOUT,
    INPUT_NAME,
    MODEL_VERSION_DIGITS,
    RESIZE_INTERPOLATION,
    SCHEMA_VERSION,
    CardArchitecture,
    CardEmbedding,
    CardError,
    CardExport,
    CardInput,
    CardTraining,
    ModelCard,
    Precision,
    card_path_for,
    describe_errors,
    file_sha256,
    model_frame_from_bgr,
    model_version_of,
    resize_frame,
    sample_frame_indices,
)

__all__ = [
    "EMBEDDING_NAME",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INPUT_COLOR",
    "INPUT_DTYPE",
    "INPUT_LAYOUT",
    "INPUT_NAME",
    "MODEL_VERSION_DIGITS",
    "RESIZE_INTERPOLATION",
    "SCHEMA_VERSION",
    "CardArchitecture",
    "CardEmbedding",
    "CardError",
    "CardExport",
    "CardInput",
    "CardTraining",
    "ModelCard",
    "Precision",
    "card_path_for",
    "describe_errors",
    "file_sha256",
    "model_frame_from_bgr",
    "model_version_of",
    "resize_frame",
    "sample_frame_indices",
]
