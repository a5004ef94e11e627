"""The reliability tests use the session's tiny model (tests/conftest.py) and the service tests' media helpers."""

from __future__ import annotations

import sys
from pathlib import Path

SERVICE_TESTS = Path(__file__).resolve().parents[1] / "service"
# service_media (tracklet frames, encoded images, archives) lives beside the service tests.
if str(SERVICE_TESTS) not in sys.path:
    sys.path.insert(0, str(SERVICE_TESTS))
