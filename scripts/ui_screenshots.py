"""The quickstart done in `weitiao ui`, in headless Chromium, for the README's screenshots (docs/img/ui-*.png).

    .venv/bin/python scripts/ui_screenshots.py [--root /tmp/weitiao-ui-demo] [--out docs/img]

Starts the UI, fills the New run form with the quickstart's settings (the bundled SmolLM2-135M-Instruct, LoRA r 16,
examples/data/count_list), launches it, waits for it to finish (minutes on a CPU), then opens the run, its chat
and its preference page, and saves a screenshot of each. Nothing here is a test: tests/ui drives a tiny model.
"""
from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "examples" / "data" / "count_list"


def start_ui(root: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "weitiao", "ui", "--root", str(root), "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/runs", timeout=1)
            return process, url
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the UI did not start")


def quickstart_form(page) -> None:
    for selector, value in {"#model": "smollm2-135m-instruct", "#train": str(DATA / "train.jsonl"),
                            "#val": str(DATA / "val.jsonl"), "#test": str(DATA / "test.jsonl"),
                            "#max_length": "256", "#epochs": "1", "#batch_size": "8", "#learning_rate": "1e-3",
                            "#eval_steps": "20", "#metrics": "count_list, list_correct", "#lora_r": "16",
                            "#name": "quickstart"}.items():
        page.fill(selector, value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/tmp/weitiao-ui-demo")
    parser.add_argument("--out", default=str(REPO / "docs" / "img"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    root, out = Path(args.root), Path(args.out)
    process, url = start_ui(root)
    browser_path = next(shutil.which(n) for n in ("chromium-headless-shell", "chromium") if shutil.which(n))
    try:
        with sync_playwright() as p:
            page = p.chromium.launch(executable_path=browser_path).new_page(viewport={"width": 1200, "height": 900})
            page.set_default_timeout(1_800_000)
            finished = (root / "quickstart" / "metrics.json").is_file()  # then: the screenshots again, no training
            page.goto(url + "/")
            quickstart_form(page)
            page.click("#check")
            page.wait_for_selector("#check-result p")
            page.wait_for_selector("#estimate p")
            page.click("#show-config" if finished else "#launch")
            page.wait_for_selector("#config-yaml:not([hidden])" if finished else "#launched-run")
            page.screenshot(path=out / "ui-new-run.png", full_page=True)
            page.goto(url + "/run?name=quickstart")
            page.wait_for_selector("#results table.metrics")  # the page reloads itself when the run finishes
            page.screenshot(path=out / "ui-results.png", full_page=True)
            page.goto(url + "/chat?name=quickstart")
            page.fill("#prompt", "I need exactly 4 rivers. What are they?")
            page.click("#send")
            page.wait_for_selector("#answer-tuned[data-done='1']")
            page.screenshot(path=out / "ui-chat.png")
            page.goto(url + "/preferences?name=quickstart")
            page.click("#from-test")
            page.wait_for_selector("#pair:not([hidden])")
            page.screenshot(path=out / "ui-preferences.png")
    finally:
        process.terminate()
    print(f"screenshots in {out}")


if __name__ == "__main__":
    main()
