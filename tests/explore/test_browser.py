"""The explorer's page in a real browser: headless Chromium driven by selenium, against the real
server (git_scratch.explore) on tests/explore/support.py's tiny checkpoints: an image one in
transformers' layout (so the parity button shows) and a video one (for the frame select).

What the page draws is checked against what the API answers for the same request, fetched by the
test itself: the overlay's checksum of the map, its pixels' opacity patch by patch (row-major: a
transposed drawing fails), and its box (the image's, to the pixel). Skips when
selenium, chromium or chromedriver is missing (.ci/run installs the browser where apt can).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra has it)")
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)",
                allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402  (after the skip: selenium is there)
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from git_scratch.cli.explore import load_explorer  # noqa: E402
from tests.explore.support import (  # noqa: E402,F401 (app, files, one_thread: fixtures)
    Running,
    api,
    app,
    files,
    one_thread,
    refused,
    start,
    stop,
)

LAYERS, HEADS, GRID = 2, 4, (4, 4)  # tests/conftest.py's tiny_config: 32 px images, 8 px patches


@pytest.fixture(scope="module")
def driver() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # --no-sandbox: CI containers run as root, where Chromium's sandbox refuses to start.
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1300"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    yield browser
    browser.quit()


def checksum(map_: list[list[float]]) -> str:
    """app.js's checksum of a drawn map, in the same order of operations."""
    return f"{sum(v * (i + 1) for i, v in enumerate(v for row in map_ for v in row)):.6f}"


def overlay(driver: webdriver.Chrome) -> dict[str, str]:
    """What app.js says it drew: the overlay canvas's data attributes."""
    return driver.execute_script("return Object.assign({}, document.getElementById('overlay').dataset)")


def wait_drawn(driver: webdriver.Chrome, **expected: str) -> dict[str, str]:
    """Wait until the page is idle and the overlay shows `expected` (token, layer, head)."""
    def ready(d: webdriver.Chrome) -> dict[str, str] | bool:
        drawn = overlay(d)
        idle = d.execute_script("return document.body.dataset.busy") == "0"
        return drawn if idle and "checksum" in drawn and all(drawn.get(k) == v for k, v in expected.items()) else False
    return WebDriverWait(driver, 60).until(ready)


def open_page(driver: webdriver.Chrome, url: str, path: Path, layers: int = LAYERS) -> None:
    """Load the page, wait for /api/info to fill the layer select, and drop `path` on it."""
    driver.get(url + "/")
    WebDriverWait(driver, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#layer option")) == layers + 1)
    driver.find_element(By.ID, "file-input").send_keys(str(path))


def test_the_overlay_is_the_maps_the_api_gives(driver, app: Running, files: dict[str, Path], tmp_path: Path) -> None:
    open_page(driver, app.url, files["image"])
    first = wait_drawn(driver, token="0", layer=str(LAYERS - 1), head="mean")  # the greedy caption's first token
    strip = driver.find_element(By.ID, "tokens")
    sequence_id = strip.get_attribute("data-sequence-id")
    tokens = strip.find_elements(By.CSS_SELECTOR, ".token")
    assert len(tokens) >= 3, "the tiny model's greedy caption is too short to step through"

    def expected(token: int, layer: int | str, head: int | str) -> dict:
        body = {"sequence_id": sequence_id, "token": token, "layer": layer, "head": head}
        return api(app.url, "/api/attention", body)

    answer = expected(0, LAYERS - 1, "mean")
    assert first["checksum"] == checksum(answer["map"])
    assert driver.find_element(By.ID, "share").text == f"{100 * answer['image_share']:.1f} %"

    # One canvas pixel per patch, its box the image's box, its opacity the map's value (app.js: 0.15 + 0.85 v / max).
    canvas = driver.find_element(By.ID, "overlay")
    assert (canvas.get_property("width"), canvas.get_property("height")) == (GRID[1], GRID[0])
    box, image_box = canvas.rect, driver.find_element(By.ID, "preview").rect
    assert all(abs(box[k] - image_box[k]) < 0.5 for k in ("x", "y", "width", "height")), (box, image_box)
    alpha = driver.execute_script(
        "const c = document.getElementById('overlay');"
        "const rgba = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "return Array.from(rgba).filter((_, i) => i % 4 == 3);")
    values = np.array(answer["map"]).flatten()
    assert np.abs(np.array(alpha) - 255 * (0.15 + 0.85 * values / values.max())).max() <= 0.5 + 1e-9

    tokens[1].click()
    drawn = wait_drawn(driver, token="1")
    assert drawn["checksum"] == checksum(expected(1, LAYERS - 1, "mean")["map"]) != first["checksum"]
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_RIGHT)  # arrows step through the tokens
    assert wait_drawn(driver, token="2")["checksum"] == checksum(expected(2, LAYERS - 1, "mean")["map"])
    driver.find_element(By.ID, "prev").click()
    assert wait_drawn(driver, token="1")["checksum"] == drawn["checksum"]

    Select(driver.find_element(By.ID, "layer")).select_by_value("0")
    assert wait_drawn(driver, token="1", layer="0")["checksum"] == checksum(expected(1, 0, "mean")["map"])
    Select(driver.find_element(By.ID, "head")).select_by_value("2")
    assert wait_drawn(driver, layer="0", head="2")["checksum"] == checksum(expected(1, 0, 2)["map"])
    Select(driver.find_element(By.ID, "layer")).select_by_value("rollout")
    # Rollout composes head-averaged layers: the page sends head "mean" and shows the head select off.
    rolled = wait_drawn(driver, layer="rollout", head="mean")
    assert rolled["checksum"] == checksum(expected(1, "rollout", "mean")["map"])
    assert not driver.find_element(By.ID, "head").is_enabled()

    mask = driver.find_element(By.ID, "mask")
    assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", mask) > 0
    assert not driver.find_element(By.ID, "error").is_displayed()
    shot = tmp_path / "explore.png"
    assert driver.save_screenshot(str(shot)) and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_answer_and_the_parity_table(driver, app: Running, files: dict[str, Path]) -> None:
    open_page(driver, app.url, files["image"])
    wait_drawn(driver, token="0")
    driver.find_element(By.ID, "question").send_keys("what is it?")
    driver.find_element(By.CSS_SELECTOR, "[data-testid=ask]").click()
    answer = WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#answers .seq.current"))[0]
    wait_drawn(driver, sequenceId=answer.get_attribute("data-sequence-id"), token="0")
    assert answer.find_element(By.CSS_SELECTOR, ".question").text == "what is it?"

    button = driver.find_element(By.ID, "parity-button")
    assert button.is_displayed()  # the checkpoint is in transformers' layout and transformers is installed
    button.click()
    rows = WebDriverWait(driver, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#parity-result tbody tr"))
    verdict = driver.find_element(By.CSS_SELECTOR, "#parity-result .verdict").text
    assert verdict.startswith("every stage within tolerance") and all(row.text.endswith("pass") for row in rows)
    assert {row.find_element(By.TAG_NAME, "td").text for row in rows} >= {"logits", "greedy tokens"}


def test_a_video_frame_select_moves_the_map_and_the_picture(driver, files: dict[str, Path]) -> None:
    running = start(load_explorer(str(files["video_ckpt"])))
    try:
        open_page(driver, running.url, files["video"])
        first = wait_drawn(driver, token="0", frame="0")
        assert (first["layer"], first["head"]) == (str(LAYERS - 1), "mean")
        Select(driver.find_element(By.ID, "frame")).select_by_value("1")
        drawn = wait_drawn(driver, token="0", frame="1")
        expected = api(running.url, "/api/attention", {"sequence_id": first["sequenceId"], "token": 0,
                                                       "layer": LAYERS - 1, "head": "mean", "frame": 1})
        assert drawn["checksum"] == checksum(expected["map"]) != first["checksum"]
        assert driver.find_element(By.ID, "preview").get_attribute("data-path").endswith(".png?frame=1")
    finally:
        stop(running)


def test_a_bad_file_shows_the_servers_one_line_error(driver, app: Running, tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("not an image at all\n")  # a lying extension
    open_page(driver, app.url, path)
    error = WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "error").is_displayed()
                                            and d.find_element(By.ID, "error"))
    _, message = refused(app.url, "/api/upload", path.read_bytes(), {"X-Filename": "notes.png"})
    assert error.text == message and "notes.png" in message
    assert not driver.find_element(By.ID, "workspace").is_displayed()
