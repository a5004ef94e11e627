"""The retrieval service: decode uploaded tracklets, embed them with onnxruntime, search a FAISS gallery."""

import os as _os

__version__ = "0.1.0"


def _bound_opencv_image_decoders() -> None:
    """OpenCV refuses to decode an image of more pixels than OPENCV_IO_MAX_IMAGE_PIXELS, a value it reads
    once when cv2 is loaded; set it from the frame-size limit (REID_MAX_FRAME_DIMENSION squared) before
    anything imports cv2. A second line of defence: the decoders check every header before OpenCV sees it."""
    try:
        dimension = int(_os.environ.get("REID_MAX_FRAME_DIMENSION", "4096"))
    except ValueError:
        return  # Settings will refuse the value with a clear message at startup
    _os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(max(dimension, 1) ** 2))


_bound_opencv_image_decoders()
