"""Load lvsd's status page in headless Chromium (Debian's, driven by selenium through Debian's chromedriver)
and report what a person would see: run inside the lab namespace where the page is served,

    ip netns exec NS python -m tests.integration.browser_probe URL SCREENSHOT.png

It reads the page twice, PAUSE seconds apart, saves a full-page screenshot and prints one JSON object:
{"reads": [read, read], "console": [severe console messages]}.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

PAUSE = 3.0
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1440,900")

READ = """
const text = (e) => (e ? e.textContent.trim() : null);
return {
  live: text(document.getElementById('live-text')),
  pills: [...document.querySelectorAll('#pills .pill')].map(text),
  total_conns: document.querySelector('[data-kpi="cps"]')?.dataset.total ?? null,
  kpis: Object.fromEntries([...document.querySelectorAll('[data-kpi]')].map((e) => [e.dataset.kpi, text(e)])),
  services: [...document.querySelectorAll('.svc')].map((card) => ({
    service: card.dataset.service,
    headers: [...card.querySelectorAll('thead th')].map(text),
    rows: [...card.querySelectorAll('tbody tr.dest')].map((tr) => ({
      dest: tr.dataset.dest,
      cls: tr.className,
      cells: [...tr.children].map(text),
    })),
  })),
  drops: text(document.getElementById('drops')),
  sync: text(document.getElementById('sync')),
  datapath: text(document.getElementById('datapath')),
};
"""


def main(url: str, screenshot: str) -> int:
    profile = tempfile.mkdtemp(prefix="pylvs-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.set_page_load_timeout(20)
        driver.get(url)
        WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "tr.dest"))
        time.sleep(1.5)  # a second snapshot: rates and charts have two points
        reads = [driver.execute_script(READ)]
        time.sleep(PAUSE)
        reads.append(driver.execute_script(READ))
        height, chrome = driver.execute_script(
            "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]")
        width = driver.get_window_size()["width"]
        driver.set_window_size(width, min(max(height + chrome, 600), 4000))  # the whole page in one picture
        time.sleep(0.3)
        driver.save_screenshot(screenshot)
        console = [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    print(json.dumps({"reads": reads, "console": console}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
