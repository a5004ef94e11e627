"""Multipart field declarations shared by the enroll and query routes (they document the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated

from fastapi import File, Form, UploadFile

TRACKLET_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
LABEL_MAX_LENGTH = 256

VideoField = Annotated[
    UploadFile | None,
    File(description="A video file OpenCV decodes (mp4, avi, mkv, ...). Exactly one of video, frames, archive."),
]
FramesField = Annotated[
    list[UploadFile] | None,
    File(description="One or more image files (repeat the field); the tracklet's order is the upload order."),
]
ArchiveField = Annotated[
    UploadFile | None,
    File(description="A .zip or .tar (.tar.gz, ...) of image files; the order is that of the file names "
         "(natural order: frame2 before frame10)."),
]
PersonIdField = Annotated[
    str | None,
    Form(max_length=LABEL_MAX_LENGTH, description="Identity label of the person, if known (at most 256 characters, "
         "no control characters)."),
]
MetadataField = Annotated[
    str | None,
    Form(description='Any JSON object, as a string, e.g. {"site": "gate 3"}; returned with matches. At most '
         "REID_MAX_METADATA_BYTES bytes of UTF-8 (16384 by default); NaN and Infinity are not JSON."),
]
ReplaceField = Annotated[
    bool, Form(description="Overwrite an enrolled tracklet with the same tracklet_id instead of answering 409.")
]
TopKField = Annotated[int, Form(ge=1, le=1000, description="How many matches to return (1-1000).")]
ExcludeSameCameraField = Annotated[
    bool,
    Form(description="Skip gallery tracklets from the query's camera (the cross-camera reID protocol). "
         "Needs the query's camera: camera_id, or that of the enrolled tracklet_id."),
]
