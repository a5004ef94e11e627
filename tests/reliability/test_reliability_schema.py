"""Machine-found hostile input: schemathesis against the service's own /openapi.json on a live server, and a
Hypothesis run over the free-text fields of an enroll.

schemathesis runs every phase (coverage, fuzzing, stateful through the schema's links) in deterministic
mode with a bounded number of examples per operation, and every check but ``positive_data_acceptance``:
a schema-valid ``format: binary`` part is usually not a decodable image, so a 422 for it is correct.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from live_server import API_KEY, live_server
from service_media import encode_image, tracklet_frames

from service.app import create_app
from service.config import Settings

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 50


def schemathesis_command() -> list[str]:
    installed = Path(sys.executable).with_name("schemathesis")
    if installed.exists():
        return [str(installed)]
    found = shutil.which("schemathesis")
    if found is None:
        pytest.fail("schemathesis is not installed (dev dependency)")
    return [found]


def test_schemathesis_finds_no_server_error_and_no_schema_violation(tiny_model, tmp_path):
    with live_server(tiny_model, tmp_path / "gallery", tmp_path / "server.log") as server:
        result = subprocess.run(
            [*schemathesis_command(), "run", f"{server.url}/openapi.json", "--header", f"X-API-Key: {API_KEY}",
             "--max-examples", str(EXAMPLES_PER_OPERATION), "--generation-deterministic", "--workers", "1",
             "--exclude-checks", "positive_data_acceptance", "--generation-with-security-parameters", "false",
             "--request-timeout", "60", "--no-color"],
            cwd=tmp_path, capture_output=True, text=True, timeout=400, check=False,
            env={**os.environ, "NO_COLOR": "1"},
        )
        output = result.stdout + result.stderr
        server_log = server.log()
    summary = output[output.rfind("SUMMARY"):] if "SUMMARY" in output else output[-3000:]
    print(summary)
    assert result.returncode == 0, output[-6000:]
    operations = re.search(r"Tested:\s+(\d+)", summary)
    cases = re.search(r"(\d+) generated, (\d+) passed", summary)
    assert operations and int(operations.group(1)) == 19, summary
    assert cases and int(cases.group(1)) == int(cases.group(2)) > 200, summary
    # Nothing the fuzzer sent made the server fail, even where schemathesis could not tell.
    statuses = re.findall(r"service\.middleware: \S+ \S+ (\d{3}|cancelled) ", server_log)
    assert len(statuses) > 200 and not [status for status in statuses if status[0] == "5"]
    assert "Traceback" not in server_log


# ---------------------------------------------------------------------------- free-text fields, fuzzed
@pytest.fixture(scope="module")
def client(tiny_model, tmp_path_factory):
    settings_ = Settings(model_path=tiny_model, data_dir=tmp_path_factory.mktemp("fuzzed"), device="cpu",
                         intra_op_threads=1, max_wait_ms=0, _env_file=None)
    with TestClient(create_app(settings_)) as test_client:
        yield test_client


FRAME = encode_image(tracklet_frames(5, 1, 16, 8)[0])
# Any Unicode a client can send in a form field (lone surrogates cannot be encoded as UTF-8 at all), and
# printable text more often, so that most examples get past the label rules to the store and back.
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)
PRINTABLE = st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=260)
LABELS = st.one_of(PRINTABLE, PRINTABLE, TEXT)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=20,
)
JSON_OBJECTS = st.dictionaries(TEXT, JSON_VALUES, max_size=5).map(json.dumps)
METADATA = st.one_of(JSON_OBJECTS, JSON_OBJECTS, JSON_OBJECTS, TEXT, JSON_VALUES.map(json.dumps))
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@settings(max_examples=80, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(person_id=LABELS, camera_id=LABELS, metadata=METADATA)
def test_any_text_in_the_fields_is_stored_exactly_or_refused_with_422(client, person_id, camera_id, metadata):
    response = client.post("/tracklets", files=[("frames", ("f.png", FRAME, "image/png"))],
                           data={"person_id": person_id, "camera_id": camera_id, "metadata": metadata})
    assert response.status_code in (201, 422), response.text
    if response.status_code == 422:
        assert response.json()["error"]["code"] == "invalid_request"
        return
    # Accepted only within the documented rules, and returned exactly as sent.
    assert len(person_id) <= 256 and len(camera_id) <= 256
    assert not CONTROL.search(person_id) and not CONTROL.search(camera_id)
    assert len(metadata.encode()) <= 16 * 1024
    record = response.json()
    # An empty form field is the same as an absent one (FastAPI reads it as None).
    assert (record["person_id"], record["camera_id"]) == (person_id or None, camera_id or None)
    assert record["metadata"] == (json.loads(metadata) if metadata else {})
    stored = client.get(f"/tracklets/{record['id']}").json()
    assert stored == record
    assert client.delete(f"/tracklets/{record['id']}").status_code == 204
