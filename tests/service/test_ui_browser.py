"""The web page in a real browser: Debian's Chromium, headless, driven by Playwright, against a live service
process (with an API key, so the page's key dialog is exercised too).

One browser for the session. Every test fails on any JavaScript error or console error the page logs (the
only console messages allowed are Chromium's lines about the 401 through which the page learns that it
needs a key, and about the 422 a test provokes on purpose). Without /usr/bin/chromium or the playwright
package the tests are skipped saying why, unless REID_BROWSER_TESTS=required (`make test` as root, so CI)
makes that a failure.

REID_UI_SCREENSHOTS=DIR also writes a screenshot of each view there (how docs/ui-*.png are made).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from live_server import API_KEY, live_server

from training.data.pedestrian import random_appearance
from training.data.synthetic import render_tracklet
from training.data.synthetic_scene import random_camera

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
TIMEOUT_MS = 30_000
SCREENSHOTS = os.environ.get("REID_UI_SCREENSHOTS")
KEY_DISCOVERY = re.compile(r"Failed to load resource: the server responded with a status of 401")


def _unavailable() -> str | None:
    if not Path(CHROMIUM).is_file():
        return f"{CHROMIUM} is missing (install Debian's chromium: apt-get install -y chromium, as root)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="session")
def browser():
    reason = _unavailable()
    if reason:
        if os.environ.get("REID_BROWSER_TESTS") == "required":
            pytest.fail(f"browser tests required but {reason}")
        pytest.skip(f"browser tests skipped: {reason}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


def person_frames(seed: int, count: int = 8) -> list[np.ndarray]:
    """RGB frames of one rendered pedestrian (training's synthetic renderer), 128x64."""
    rng = np.random.default_rng(seed)
    return render_tracklet(random_appearance(rng), random_camera(rng), count, 128, 64, rng)


def write_frames(folder: Path, frames: list[np.ndarray]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, frame in enumerate(frames):
        path = folder / f"frame{index:02d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


PEOPLE = [("anna", "cam1", 11), ("ben", "cam2", 12), ("carl", "cam1", 13), ("dora", "cam3", 14)]


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ui-server")
    with live_server(tiny_model, folder / "data", folder / "server.log", REID_MAX_UPLOAD_BYTES="20000000") as live:
        with live.client() as client:
            for index, (person, camera, seed) in enumerate(PEOPLE):
                files = [("frames", (path.name, path.read_bytes(), "image/png"))
                         for path in write_frames(folder / person, person_frames(seed))]  # fmt: skip
                response = client.post("/tracklets", files=files, data={
                    "tracklet_id": f"{person}-1", "person_id": person, "camera_id": camera,
                    "start_time": f"2026-05-01T14:0{index}:00Z", "end_time": f"2026-05-01T14:0{index}:05Z",
                    "metadata": '{"site": "gate 3"}'})  # fmt: skip
                assert response.status_code == 201, response.text
        live.folder = folder
        yield live


@pytest.fixture
def allowed_console() -> list[re.Pattern]:
    """Console errors a test provokes on purpose (Chromium logs every 4xx answer as one)."""
    return [KEY_DISCOVERY]


@pytest.fixture
def page(browser, server, allowed_console):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda message: message.type == "error"
            and not any(allowed.search(message.text) for allowed in allowed_console)
            and problems.append(f"console error: {message.text}"))  # fmt: skip
    page.goto(f"{server.url}/")
    # The service needs a key: the page asks for it once and keeps it for the tab.
    page.get_by_label("Key", exact=True).fill(API_KEY)
    page.get_by_role("button", name="Use this key").click()
    page.wait_for_selector("#service:not(:empty)")
    yield page
    context.close()
    assert not problems, problems


def location_hash(page) -> str:
    return page.evaluate("() => location.hash")


def wait_for_images(page, selector: str, count: int) -> None:
    """Waits until ``count`` images of ``selector`` have loaded their blob (decoded, non-zero size)."""
    page.wait_for_function(
        """([selector, count]) => {
            const images = [...document.querySelectorAll(selector)];
            return images.length === count && images.every((img) => img.src.startsWith("blob:")
                && img.complete && img.naturalWidth > 0);
        }""",
        arg=[selector, count],
    )


def shoot(page, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"ui-{name}.png"), full_page=False)


def test_upload_a_query_and_the_right_person_ranks_first(page, server):
    assert page.url.endswith("/ui/") or "/ui/#" in page.url
    assert page.evaluate("() => sessionStorage.getItem('reid-api-key')") == API_KEY
    # The same rendered frames as ben's enrolled tracklet: ben is certainly first, at distance 0.
    paths = sorted((server.folder / "ben").glob("*.png"))
    page.get_by_label("Query: a video, frames or an archive").set_input_files([str(path) for path in paths])
    page.get_by_label("Top k").fill("4")
    page.get_by_role("button", name="Search", exact=True).click()
    wait_for_images(page, ".results .tile img", len(PEOPLE))
    tiles = page.locator(".results .tile")
    first = tiles.nth(0).inner_text()
    assert "ben" in first and "cam2" in first and re.search(r"distance\s+0\.0000", first), first
    ranks = [int(re.search(r"rank\s+(\d+)", tiles.nth(i).inner_text()).group(1)) for i in range(tiles.count())]
    assert ranks == [1, 2, 3, 4]
    shoot(page, "search")
    # A match opens its tracklet: frames, metadata and each granularity's attention overlay.
    tiles.nth(0).locator("a").click()
    page.wait_for_selector("h2:has-text('Tracklet ben-1')")
    card = httpx.get(f"{server.url}/model", headers={"X-API-Key": API_KEY}).json()
    wait_for_images(page, ".strip img", card["num_frames"])
    wait_for_images(page, ".attention img", len(card["attention_outputs"]))
    facts = page.locator(".facts").inner_text()
    assert "ben" in facts and "gate 3" in facts and "2026-05-01 14:01:00 UTC" in facts
    assert page.locator(".attention figcaption").first.inner_text().startswith("G-1st")
    shoot(page, "tracklet")


def test_search_with_an_enrolled_tracklet_and_a_filter(page, server, allowed_console):
    page.goto(f"{server.url}/ui/#/tracklet/anna-1")
    page.get_by_role("link", name="Search with this").click()
    # The query tracklet itself is left out; cameras narrows the gallery to cam1 and cam2.
    page.get_by_label("Cameras", exact=True).fill("cam1,cam2")
    page.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_function("() => document.querySelectorAll('.results .tile').length === 2")
    texts = page.locator(".results .tile").all_inner_texts()
    assert not any("anna" in text for text in texts) and not any("cam3" in text for text in texts)
    assert {"ben", "carl"} == {re.search(r"person\s+(\w+)", text).group(1) for text in texts}
    # An API error is shown as the API worded it.
    allowed_console.append(re.compile(r"Failed to load resource: the server responded with a status of 422"))
    page.get_by_label("After").fill("not a time")
    page.get_by_role("button", name="Search", exact=True).click()
    error = page.locator("#error")
    error.wait_for(state="visible")
    assert "after" in error.inner_text() and "ISO 8601" in error.inner_text()


def test_gallery_pages_filter_and_delete(page, server):
    page.get_by_role("link", name="Gallery").click()
    wait_for_images(page, ".results .tile img", len(PEOPLE))
    shoot(page, "gallery")
    page.get_by_label("Cameras", exact=True).fill("cam1")
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_function("() => document.querySelector('.summary').textContent.includes('of 2')")
    texts = page.locator(".results .tile").all_inner_texts()
    assert sorted(re.search(r"person\s+(\w+)", text).group(1) for text in texts) == ["anna", "carl"]
    # Keyboard: the first tile is reachable by Tab and opens with Enter.
    page.locator(".results .tile a").first.focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("h2:has-text('Tracklet anna-1')")
    wait_for_images(page, ".attention img", len(httpx.get(f"{server.url}/model", headers={"X-API-Key": API_KEY})
                                                .json()["attention_outputs"]))  # fmt: skip
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete").click()
    page.wait_for_function("() => location.hash.startsWith('#/gallery')")
    page.wait_for_function(f"() => document.querySelectorAll('.results .tile').length === {len(PEOPLE) - 1}")
    assert httpx.get(f"{server.url}/tracklets/anna-1", headers={"X-API-Key": API_KEY}).status_code == 404


def test_footage_job_progress_and_its_tracklets(page, server, tmp_path):
    from training.data.synthetic_footage import PRESETS, generate_footage

    footage = generate_footage(tmp_path / "footage", PRESETS["small"])
    video = next(footage.rglob("video.mp4"))
    page.get_by_role("link", name="Footage").click()
    # The footage form must be on screen first: while the search view is still shown, its query input (whose
    # label also says "video") would take the file, and the upload would go without one.
    page.get_by_label("Camera id").wait_for()
    page.get_by_label("Video", exact=True).set_input_files(str(video))
    page.get_by_label("Camera id").fill("cam-street")
    page.get_by_role("button", name="Upload").click()
    # The job's page, or the API's refusal (shown in #error): either ends the wait, and a refusal is reported.
    page.wait_for_function("() => location.hash.startsWith('#/footage/') || !document.getElementById('error').hidden")
    assert location_hash(page).startswith("#/footage/"), page.locator("#error").inner_text()
    page.wait_for_function("() => document.querySelector('.summary') && "
                           "document.querySelector('.summary').textContent.startsWith('done')", timeout=120_000)
    count = int(re.search(r"Tracklets enrolled \((\d+)\)", page.locator(".results h3").inner_text()).group(1))
    assert count >= 1
    wait_for_images(page, ".results .tile img", count)
    assert page.locator("#job-progress").evaluate("(bar) => bar.value === bar.max")
    shoot(page, "footage")
    # Query mode: the same footage searched against the gallery; each tracklet finds its own enrolled twin.
    page.get_by_role("link", name="Footage").click()
    page.get_by_role("link", name="video.mp4").first.wait_for()
    page.get_by_label("Video", exact=True).set_input_files(str(video))
    page.get_by_label("Camera id").fill("cam-street")
    page.get_by_label("Mode").select_option("query")
    page.get_by_label("Matches per tracklet").fill("3")
    page.get_by_role("button", name="Upload").click()
    page.wait_for_function("() => document.querySelector('.summary') && "
                           "document.querySelector('.summary').textContent.startsWith('done')", timeout=120_000)
    queries = page.locator(".footage-query")
    assert queries.count() == count
    wait_for_images(page, ".footage-query .tile img", 3 * count)
    first_matches = queries.nth(0).locator(".tile").all_inner_texts()
    assert re.search(r"rank\s+1", first_matches[0]) and "cam-street" in first_matches[0]


def test_phone_sized_screen_and_labels(browser, server):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{server.url}/ui/#/gallery")
    page.get_by_label("Key", exact=True).fill(API_KEY)
    page.get_by_role("button", name="Use this key").click()
    page.wait_for_selector(".results .tile img")
    # Nothing wider than the screen, and every control has a label.
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
        .filter((control) => control.type !== 'hidden' && !(control.labels && control.labels.length))
        .map((control) => control.name || control.id)""")
    assert unlabelled == []
    shoot(page, "phone")
    context.close()
    assert not errors, errors

