"""Fixtures of the reliability tests: the tiny model of the service tests, and their media helpers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SERVICE_TESTS = Path(__file__).resolve().parents[1] / "service"
# service_media (tracklet frames, encoded images, archives) lives beside the service tests.
if str(SERVICE_TESTS) not in sys.path:
    sys.path.insert(0, str(SERVICE_TESTS))


def _load_service_conftest():
    # Imported under its own name: pytest already knows that file as "conftest" when both folders run.
    spec = importlib.util.spec_from_file_location("service_tests_conftest", SERVICE_TESTS / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_service_conftest = _load_service_conftest()
tiny_model = _service_conftest.tiny_model
tiny_card = _service_conftest.tiny_card
