"""The retrieval service: decode uploaded tracklets, embed them with onnxruntime, search a FAISS gallery."""

__version__ = "0.1.0"
