"""The screenshots of docs/explore.md: the explorer's page in headless Chromium, driven by selenium.

docs/explore_*.png were taken on the demo's model and one of its held-out images:

    .venv/bin/git-scratch demo --steps 800 --out runs/demo   # the model, and the data it was held out of
    .venv/bin/python scripts/explore_screenshots.py runs/demo/model <a held-out image of runs/demo/data> \
        --question "what color is the square?" --token 2 --layer 2 --answer-layer 1 --out docs --force

It starts the explorer's server in this process (127.0.0.1, a free port), uploads IMAGE, asks
QUESTION, selects the caption's token TOKEN in decoder layer LAYER (mean over heads), hovers the
map's brightest patch for the readout, and writes explore_page.png (the whole page); then the
answer in ANSWER_LAYER (explore_answer.png, the image panel) and the parity table
(explore_parity.png). Needs chromium, chromedriver and selenium (the test extra). Existing
pictures are replaced only with --force; each is written to a temporary name and renamed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from git_scratch.cli.explore import load_explorer
from git_scratch.explore import make_server

NAMES = ("explore_page.png", "explore_answer.png", "explore_parity.png")


def browser() -> webdriver.Chrome:
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        sys.exit("chromium and chromedriver are not installed: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1480",
                 "--force-device-scale-factor=1", "--hide-scrollbars"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(driver))


def wait_drawn(d: webdriver.Chrome, **expected: str) -> None:
    """Until the page is idle and the overlay says it drew `expected` (token, layer, head)."""
    def ready(d: webdriver.Chrome) -> bool:
        drawn = d.execute_script("return Object.assign({}, document.getElementById('overlay').dataset)")
        idle = d.execute_script("return document.body.dataset.busy") == "0"
        return idle and all(drawn.get(k) == v for k, v in expected.items())
    WebDriverWait(d, 300).until(ready)


def select(d: webdriver.Chrome, css: str) -> None:
    """Click the first `css` sequence and wait until the page has made it current and drawn it."""
    d.find_element(By.CSS_SELECTOR, css).click()
    WebDriverWait(d, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, css + ".current"))
    wait_drawn(d, token="0")


def hover_peak(d: webdriver.Chrome) -> None:
    """The mouse over the drawn map's largest patch, so the readout line names it."""
    canvas = d.find_element(By.ID, "overlay")
    gw, gh = d.execute_script("const c = document.getElementById('overlay'); return [c.width, c.height]")
    values = d.execute_script("return state.values")
    row, col = divmod(max(range(len(values)), key=values.__getitem__), gw)
    w, h = canvas.rect["width"], canvas.rect["height"]
    ActionChains(d).move_to_element_with_offset(canvas, int((col + 0.5) * w / gw - w / 2),
                                                int((row + 0.5) * h / gh - h / 2)).perform()


def shoot(take, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    take(str(tmp))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("image", type=Path)
    parser.add_argument("--question", default="what color is the square?")
    parser.add_argument("--token", type=int, default=2, help="index of the caption's token to show")
    parser.add_argument("--layer", default="2")
    parser.add_argument("--answer-layer", default="1")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--force", action="store_true", help="replace existing pictures")
    args = parser.parse_args(argv)
    if not args.image.is_file():
        sys.exit(f"{args.image}: no such image")
    existing = [str(args.out / n) for n in NAMES if (args.out / n).exists()]
    if existing and not args.force:
        sys.exit(f"{', '.join(existing)} exist; pass --force to replace them")
    server = make_server(load_explorer(args.model), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    d = browser()
    try:
        d.get(f"http://127.0.0.1:{server.server_address[1]}/")
        WebDriverWait(d, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#layer option"))
        d.find_element(By.ID, "file-input").send_keys(str(args.image.resolve()))
        wait_drawn(d, token="0")
        d.find_element(By.ID, "question").send_keys(args.question)
        d.find_element(By.CSS_SELECTOR, "[data-testid=ask]").click()
        WebDriverWait(d, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#answers .seq.current"))
        wait_drawn(d, token="0")
        select(d, "#greedy .seq")
        Select(d.find_element(By.ID, "layer")).select_by_value(args.layer)
        Select(d.find_element(By.ID, "head")).select_by_value("mean")
        d.find_elements(By.CSS_SELECTOR, "#tokens .token")[args.token].click()
        wait_drawn(d, token=str(args.token), layer=args.layer, head="mean")
        hover_peak(d)
        d.execute_script("window.scrollTo(0, 0)")
        shoot(d.save_screenshot, args.out / NAMES[0])

        select(d, "#answers .seq")
        Select(d.find_element(By.ID, "layer")).select_by_value(args.answer_layer)
        wait_drawn(d, layer=args.answer_layer)
        hover_peak(d)
        d.execute_script("window.scrollTo(0, 0)")
        shoot(d.find_element(By.ID, "view-panel").screenshot, args.out / NAMES[1])

        d.find_element(By.ID, "parity-button").click()
        WebDriverWait(d, 600).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#parity-result tbody tr"))
        d.execute_script("document.getElementById('parity-panel').scrollIntoView({block: 'start'})")
        shoot(d.find_element(By.ID, "parity-panel").screenshot, args.out / NAMES[2])
        error = d.find_element(By.ID, "error").text
    finally:
        d.quit()
        server.shutdown()
    if error:
        sys.exit(f"the page showed an error: {error}")
    print("\n".join(str(args.out / n) for n in NAMES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
