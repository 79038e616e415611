"""`weitiao ui` end to end, in a real browser: the installed headless Chromium driven through Playwright, against
the UI running as a user starts it (`python -m weitiao ui`, its own process, real HTTP), training a tiny model in
a job process of its own. Screenshots of each page are saved in the test's folder."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import chromium, free_port, run_cli
from weitiao.api import load_run
from weitiao.config import load_config
from weitiao.data.dataset import load_splits
from weitiao.serving.engine import Engine, Sampling
from weitiao.serving.loaded import load


@pytest.fixture
def ui(tmp_path):
    """The UI on a free port, its runs under tmp_path/runs; stopped (its jobs too) at the end."""
    port, root = free_port(), tmp_path / "runs"
    process = subprocess.Popen([sys.executable, "-m", "weitiao", "ui", "--root", str(root), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/runs", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail(f"the UI did not start: {process.stdout.read()}")
    yield url, root
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture
def page(tmp_path):
    browser_path = chromium()
    if browser_path is None:
        pytest.skip("headless Chromium is not installed (scripts/setup.sh installs it with apt-get when run as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1200, "height": 900})
        tab.set_default_timeout(120_000)
        yield tab
        browser.close()


def fill_new_run(page, model_dir, data_dir, name: str, **extra):
    fields = {"#model": str(model_dir), "#train": str(data_dir / "train.jsonl"), "#val": str(data_dir / "val.jsonl"),
              "#test": str(data_dir / "test.jsonl"), "#max_length": "128", "#max_steps": "4", "#batch_size": "4",
              "#learning_rate": "3e-2", "#eval_steps": "2", "#metrics": "count_list, exact_match", "#name": name,
              **extra}
    for selector, value in fields.items():
        page.fill(selector, value)


def test_a_newcomer_trains_reads_the_report_chats_and_records_preferences_in_the_browser(
        ui, page, tmp_path, tiny_model_dir, demo_data_dir):
    url, root = ui
    shots = tmp_path / "screenshots"
    shots.mkdir()

    # ---- New run: a bad form gets the CLI's messages in the page, nothing is launched
    page.goto(url + "/")
    fill_new_run(page, tiny_model_dir, demo_data_dir, "tiny", **{"#learning_rate": "fast", "#name": "bad name"})
    page.click("#launch")
    page.wait_for_selector("#error:not([hidden])")
    error = page.inner_text("#error")
    assert "train.learning_rate: 'fast' is not a number" in error and "run name: 'bad name'" in error
    assert not (root / "bad name").exists()

    # ---- the data check, then a double-clicked launch: one job
    fill_new_run(page, tiny_model_dir, demo_data_dir, "tiny")
    page.click("#check")
    page.wait_for_selector("#check-result .ok")
    assert "data check passed" in page.inner_text("#check-result")
    assert page.locator("#check-result mark").count() > 0  # the preview marks the trained tokens
    page.wait_for_selector("#estimate p")
    assert "memory: estimated peak" in page.inner_text("#estimate")
    page.click("#show-config")
    page.wait_for_selector("#config-yaml:not([hidden])")
    page.dblclick("#launch")
    page.wait_for_selector("#launched-run")
    page.screenshot(path=shots / "new-run.png", full_page=True)
    jobs = list((root / ".weitiao-ui" / "jobs").glob("*.json"))
    assert len(jobs) == 1, [j.read_text() for j in jobs]
    config = root / "configs" / "tiny.yaml"
    assert run_cli("validate", config).returncode == 0  # the YAML the UI ran is one the CLI accepts unchanged

    # ---- Runs: the run shows up and finishes
    page.goto(url + "/runs")
    page.wait_for_selector("tr[data-run='tiny'][data-status='finished']", timeout=300_000)
    page.screenshot(path=shots / "runs.png", full_page=True)

    # ---- its page: the loss curve, the base-vs-tuned results and the report
    page.click("tr[data-run='tiny'] a")
    page.wait_for_selector("#results table.metrics")
    page.wait_for_selector("#curve svg circle.train-dot")
    metrics = json.loads((root / "tiny" / "metrics.json").read_text())
    assert f"{metrics['test']['tuned']['count_list']:.4f}" in page.inner_text("#results")
    page.screenshot(path=shots / "run.png", full_page=True)
    report = page.frame_locator("#report")
    assert "base" in report.locator("body").inner_text().lower()
    page.goto(url + "/files/tiny/report/report.html")
    page.screenshot(path=shots / "report.png", full_page=True)

    # ---- Chat: base and tuned side by side, streamed; the tuned answer is the Python API's
    page.goto(url + "/chat?name=tiny")
    prompt = "I need exactly 3 fruits. What are they?"
    page.fill("#prompt", prompt)
    page.click("#send")
    page.wait_for_selector("#answer-tuned[data-done='1']")
    base, tuned = page.text_content("#answer-base"), page.text_content("#answer-tuned")
    assert tuned == load_run(root / "tiny").chat(prompt, max_tokens=128)
    engine = Engine(load(str(root / "tiny"), log=lambda _: None), serve_base=True)
    ids = engine.encode(engine.render([{"role": "user", "content": prompt}]))
    assert base == engine.complete(ids, Sampling(max_new_tokens=128), engine.base_name).text  # the adapter off
    page.screenshot(path=shots / "chat.png", full_page=True)

    # ---- Preferences. The tiny model's greedy answers are blank lines: a choice between them is refused in the
    # page (not a row DPO can train on); a tie is recorded apart
    page.goto(url + "/preferences?name=tiny")
    page.click("#from-test")
    page.wait_for_selector("#pair:not([hidden])")
    page.click("#pick-A")
    page.wait_for_selector("#error:not([hidden])")
    assert "is empty: a pair with an empty answer is not a row DPO" in page.inner_text("#error")
    page.click("#pick-tie")
    page.wait_for_selector("#pair", state="hidden")
    assert page.inner_text("#ties") == "1" and page.inner_text("#pairs") == "0"
    # three choices between two samples of the tuned model, in random A/B order, become preference rows
    page.select_option("#mode", "samples")
    shown = []
    for choice in ("A", "B", "A"):
        page.click("#from-test")
        page.wait_for_selector("#pair:not([hidden])")
        shown.append((page.input_value("#prompt"), page.text_content("#answer-A"), page.text_content("#answer-B")))
        if len(shown) == 1:
            page.screenshot(path=shots / "preferences.png", full_page=True)
        page.click(f"#pick-{choice}")
        page.wait_for_selector("#pair", state="hidden")
    assert page.inner_text("#pairs") == "3"
    rows = [json.loads(line) for line in (root / "tiny" / "preferences.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for row, choice, (prompt_shown, a, b) in zip(rows, ("A", "B", "A"), shown):
        chosen, rejected = (a, b) if choice == "A" else (b, a)
        assert (row["prompt"], row["chosen"], row["rejected"]) == (prompt_shown, chosen, rejected)
        assert row["meta"]["choice"] == choice and row["meta"]["mode"] == "samples"
        assert all(source.startswith("sample (seed ") for source in row["meta"]["sources"].values())
    tie = json.loads((root / "tiny" / "preference_ties.jsonl").read_text())
    assert sorted(tie["meta"]["sources"].values()) == ["base", "tuned"]
    data = load_config(config).data
    data.format, data.train, data.val, data.test = "preference", [str(root / "tiny" / "preferences.jsonl")], [], []
    distinct = {(r["prompt"], r["chosen"], r["rejected"]) for r in rows}
    assert len(load_splits(data, str(root)).train) == len(distinct)  # read as training pairs (copies dropped)
    # ... and "Train DPO on these" trains on them, from the run's adapter
    page.click("#train-dpo")
    page.wait_for_selector("#trained a")
    page.goto(url + "/run?name=tiny-dpo")
    page.wait_for_selector("#status.finished", timeout=300_000)
    dpo_metrics = json.loads((root / "tiny-dpo" / "metrics.json").read_text())
    assert dpo_metrics["task"] == "dpo" and dpo_metrics["data"]["train_pairs"] == len(distinct)
    assert dpo_metrics["start"]["adapter"] == str(root / "tiny" / "adapter")
    for shot in ("new-run", "runs", "run", "report", "chat", "preferences"):
        assert (shots / f"{shot}.png").stat().st_size > 10_000


def test_every_page_in_chinese_from_the_browsers_language_with_a_switch_back(ui, page, tmp_path, lora_run_dir,
                                                                             tiny_model_dir, demo_data_dir):
    """The same UI for a browser that asks for Chinese (Accept-Language zh-CN): every page's labels in Chinese,
    the data check's message from ui.js too, a CJK font installed so 微调 renders, and the header's switch to
    English remembered in a cookie. (The English pass is the test above.)"""
    import shutil

    from weitiao.ui.i18n import ZH

    url, root = ui
    shutil.copytree(lora_run_dir, root / "tiny")
    shots = tmp_path / "screenshots-zh"
    shots.mkdir()
    from pathlib import Path

    fonts = [p for folder in ("/usr/share/fonts", "/usr/local/share/fonts") for p in Path(folder).rglob("*")
             if "cjk" in p.name.lower() or p.name.lower().startswith("wqy")]
    assert fonts, "no CJK font: scripts/setup.sh installs fonts-wqy-microhei with the browser"
    page.set_extra_http_headers({"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"})
    expected = {"/": ["新建训练", "检查数据", "开始训练", "学习率"], "/runs": ["训练列表", "已完成"],
                "/run?name=tiny": ["结果", "导出与部署", "日志"], "/chat?name=tiny": ["同时发送", "基座"],
                "/preferences?name=tiny": ["哪个回答更好？", "用这些数据训练 DPO"]}
    for path, texts in expected.items():
        page.goto(url + path)
        assert page.get_attribute("html", "lang") == "zh"
        body = page.inner_text("body")
        assert all(t in body for t in texts), (path, body[:500])
        assert not [e for e in ("New run", "Check data", "Send to both", "Open the full report") if e in body]
        page.screenshot(path=shots / f"{path.strip('/').split('?')[0] or 'new'}.png", full_page=True)
    page.goto(url + "/")
    fill_new_run(page, tiny_model_dir, demo_data_dir, "tiny-zh")
    page.click("#check")
    page.wait_for_selector("#check-result .ok")
    assert ZH["data check passed"] in page.inner_text("#check-result")
    # the switch: English, and it stays English on the next page (cookie), whatever the browser asks for
    page.click("#lang-en")
    page.wait_for_selector("#lang-zh")
    assert page.get_attribute("html", "lang") == "en" and "Check data" in page.inner_text("body")
    page.goto(url + "/runs")
    assert page.get_attribute("html", "lang") == "en" and "Runs" in page.inner_text("h1")


def test_every_ui_text_has_its_chinese():
    """Every t("...") of the templates and of ui.js has a Chinese text: a label added in English only fails here."""
    import re
    from pathlib import Path

    import weitiao.ui
    from weitiao.ui.i18n import ZH
    from weitiao.ui.preferences import MODES

    folder = Path(weitiao.ui.__file__).parent
    sources = [p.read_text(encoding="utf-8") for p in (*(folder / "templates").glob("*.html"),
                                                        folder / "static" / "ui.js")]
    used = {m for s in sources for m in re.findall(r'\bt\("((?:[^"\\]|\\.)*)"\)', s)}
    used |= set(MODES.values()) | {"starting", "running", "finished", "failed", "interrupted"}
    assert len(used) > 60
    assert sorted(used - set(ZH)) == []
