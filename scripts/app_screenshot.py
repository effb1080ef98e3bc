"""Runs an edit through the app's page in headless Chromium, as a person would, and saves a screenshot.

`tests/test_app.py` drives the page this way and asserts on what it sees. Run alone, this script serves
the app on the shipped models and writes the README's picture, docs/images/app.png:

    .venv/bin/python scripts/app_screenshot.py
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Chromium on a closed network: no background services (they would try to reach outside), a fresh profile.
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1500"]


def browser_paths() -> tuple[str, str] | None:
    """Debian's chromium and chromium-driver (`.ci/run` installs them), if present."""
    found = shutil.which("chromium"), shutil.which("chromedriver")
    return found if all(found) else None


def drive(url: str, screenshot: Path, steps: int = 20, instruction: str | None = None, timeout: float = 300) -> dict:
    """Open ``url``, set the instruction tab's steps (and instruction, if given), press Edit, wait for the
    result image or an error, save a screenshot; return what the page shows (the result image's address,
    the verdict, any error text)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import WebDriverWait

    chromium, chromedriver = browser_paths() or (None, None)
    if chromium is None:
        raise RuntimeError("chromium and chromedriver are needed: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    with tempfile.TemporaryDirectory() as profile:
        for flag in [*FLAGS, f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(chromedriver), options=options)
        try:
            driver.get(url)
            wait = WebDriverWait(driver, timeout)
            button = wait.until(shown.element_to_be_clickable((By.ID, "edit-button")))
            steps_box = driver.find_element(By.CSS_SELECTOR, "#edit-steps input[type=number]")
            steps_box.send_keys(Keys.CONTROL, "a")
            steps_box.send_keys(str(steps), Keys.TAB)
            if instruction is not None:
                box = driver.find_element(By.CSS_SELECTOR, "#edit-instruction textarea")
                box.send_keys(Keys.CONTROL, "a")
                box.send_keys(instruction)
            button.click()

            def errors():
                return [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".toast-body") if e.text.strip()]

            wait.until(lambda d: errors() or d.find_element(By.ID, "edit-verdict").text.strip())
            images = driver.find_elements(By.CSS_SELECTOR, "#edit-result img")
            seen = {"result_src": images[0].get_attribute("src") if images else None,
                    "verdict": driver.find_element(By.ID, "edit-verdict").text,
                    "steps": steps_box.get_attribute("value"), "errors": errors()}
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(screenshot))
            return seen
        finally:
            driver.quit()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default=str(ROOT / "docs" / "images" / "app.png"))
    parser.add_argument("--port", type=int, default=7861)
    args = parser.parse_args(argv)
    from diffusers_uip2p.app import launch

    page = launch(port=args.port, block=False)
    try:
        print(drive(f"http://127.0.0.1:{args.port}/", Path(args.output)))
    finally:
        page.close()


if __name__ == "__main__":
    main()
