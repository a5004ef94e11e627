"""Uploaded media -> the model's T frames: RGB uint8 (T, H, W, 3) at the model card's size.

Three kinds of upload are accepted: a video file (decoded with cv2.VideoCapture from memory where OpenCV
allows it, else from a temporary file), a list of image files (order = upload order), and a .zip/.tar of
image files (order = file names, natural order so that ``2.jpg`` comes before ``10.jpg``). Every frame
must decode; only the T sampled frames are converted and resized (the exported graph normalises, so
frames stay uint8). Limits are checked as early as the format allows: image sizes from the file header
before decoding, video sizes from the container before the first frame, archive sizes from the entry
headers before any entry is read.

Modules: ``common`` (limits, uploaded file, decoded tracklet), ``images`` (image headers, image -> model
frame), ``archives`` (.zip/.tar members), ``video`` (FFmpeg through OpenCV), ``decoder`` (`TrackletDecoder`,
which dispatches on the media kind).
"""

from service.decoding.archives import declared_zip_entry_count, natural_sort_key, read_archive, safe_entry_path
from service.decoding.common import DecodedTracklet, DecodeLimits, NamedMedia
from service.decoding.decoder import TrackletDecoder
from service.decoding.images import image_header_size, to_model_frame
from service.decoding.video import quiet_opencv_logging

__all__ = [
    "DecodeLimits",
    "DecodedTracklet",
    "NamedMedia",
    "TrackletDecoder",
    "declared_zip_entry_count",
    "image_header_size",
    "natural_sort_key",
    "quiet_opencv_logging",
    "read_archive",
    "safe_entry_path",
    "to_model_frame",
]
