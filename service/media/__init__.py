"""Every picture the service keeps of a tracklet, and the footage it spools, behind one media store.

Layout (keys; with REID_MEDIA_BACKEND=local, paths under REID_DATA_DIR, byte for byte as before; with s3,
object keys in REID_S3_BUCKET), every id percent-encoded so that no id can name a key elsewhere:

    thumbnails/<id>.jpg       one small JPEG (REID_STORE_THUMBNAILS)
    frames/<id>/<i>.jpg       the T frames the model embedded, at the model's input size (REID_STORE_FRAMES)
    attention/<id>/<g>.png    granularity g's attention over those frames, rendered on first request (a cache)
    footage/<job>/video       an uploaded video while its footage job waits or runs (and other job files)

These are pictures of people: REID_STORE_THUMBNAILS=false and REID_STORE_FRAMES=false keep none of them.

Order of writes, so that a record never lacks its media and media never outlives its record for long:
- enroll: the frames, then the thumbnail, are written (each durable when its write returns: fsync'd and
  renamed on disk, a completed PUT on S3) BEFORE the record commits in one gallery transaction. The record
  is what every search, listing and media route starts from, so until it commits nothing can point at the
  media; once it commits the media is already whole. A failure at any step before the commit (the media
  store or the gallery refusing, 503/507) removes the media written for that id unless a record of that id
  exists; a crash, or a store that is gone, leaves media without a record, which nothing can reach.
- delete: the record is deleted first (from then on no route serves the media), then its media. A failure
  or crash between leaves media without a record, as above.
- media without a record is swept at start-up (`MediaStore.remove_orphans`, in the background): only media
  written before this process started, and on a shared store (S3, written by every replica, or a data
  directory shared by replicas and workers under REID_JOB_QUEUE=redis) an hour before,
  so that no enroll still in progress here or on another replica loses its media.
- a replace writes the new pictures over the old keys before it clears anything, so one that fails leaves the
  old record a whole set of pictures, some perhaps already the new ones (a rare, harmless mismatch), never
  none.

Attention overlays are rendered from the stored frames on request rather than at enroll time: an enroll
then costs one JPEG per frame and nothing more, and an overlay is computed once per tracklet and
granularity, when someone looks (bench/ui_media.md measures both).
"""

from service.media.backends import LocalMediaBackend, MediaBackend, S3MediaBackend, media_write_error, open_backend
from service.media.store import (
    MAX_HEIGHT,
    MediaStore,
    add_with_media,
    encode_png,
    encode_thumbnail,
)

__all__ = [
    "MAX_HEIGHT",
    "LocalMediaBackend",
    "MediaBackend",
    "MediaStore",
    "S3MediaBackend",
    "add_with_media",
    "encode_png",
    "encode_thumbnail",
    "media_write_error",
    "open_backend",
]
