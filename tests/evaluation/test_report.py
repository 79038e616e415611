"""`weitiao compare`: paired bootstrap intervals, the forgetting check, the run's report, and the page in Chromium."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import assert_not_blank, run_cli, screenshot, write_config
from weitiao.evaluation.forgetting import encode_general_texts, general_text_losses, general_texts
from weitiao.evaluation.report import bootstrap_loss_delta, bootstrap_mean_delta, verdict


# ---------------------------------------------------------------- intervals


def test_paired_bootstrap_interval_agrees_with_scipy():
    from scipy.stats import bootstrap

    rng = np.random.default_rng(3)
    a = rng.integers(0, 2, 300).astype(float)  # per-row accuracy of model A
    b = np.where(rng.random(300) < 0.3, 1.0, a)  # B fixes about 30% of A's misses
    delta, low, high = bootstrap_mean_delta(a, b, samples=4000, seed=1)
    ref = bootstrap((b - a,), np.mean, n_resamples=4000, method="percentile", random_state=2).confidence_interval
    assert delta == pytest.approx((b - a).mean())
    assert low == pytest.approx(ref.low, abs=0.01) and high == pytest.approx(ref.high, abs=0.01)
    assert low < delta < high and verdict("accuracy", delta, low, high) == "better"


def test_identical_sides_and_a_constant_shift():
    a = np.linspace(0, 1, 50)
    assert bootstrap_mean_delta(a, a, 500, 0) == (0.0, 0.0, 0.0)
    assert verdict("exact_match", 0.0, 0.0, 0.0) == "no clear change"
    delta, low, high = bootstrap_mean_delta(a, a - 0.25, 500, 0)
    assert delta == low == high == pytest.approx(-0.25)
    assert verdict("rouge-l", delta, low, high) == "worse" and verdict("loss", delta, low, high) == "better"


def test_loss_delta_is_token_weighted():
    a = [(10.0, 10), (1.0, 1)]  # loss 1.0 per token on both rows
    b = [(5.0, 10), (3.0, 1)]  # a long row improves, a short one gets worse
    delta, low, high = bootstrap_loss_delta(a, b, 500, 0)
    assert delta == pytest.approx(8 / 11 - 1.0)  # token-weighted, not the mean of row means (+0.75)
    assert low <= delta <= high


# ---------------------------------------------------------------- forgetting set


def test_general_text_loss_equals_transformers_loss(tiny_model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    texts = general_texts()
    assert len(texts) == 32 and {t["lang"] for t in texts} == {"en", "zh"}
    rows = general_text_losses(model, tiny_tokenizer, batch_size=5, amp_dtype=None)
    encoded = encode_general_texts(tiny_tokenizer)
    for (total, tokens), enc in list(zip(rows, encoded))[::7]:
        ids = torch.tensor([enc.input_ids])
        with torch.no_grad():
            reference = model(input_ids=ids, labels=ids).loss.item()  # transformers' own shifted mean
        assert tokens == len(enc.input_ids) - 1
        assert total / tokens == pytest.approx(reference, rel=1e-4)


# ---------------------------------------------------------------- a trained run's report


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_model_dir, demo_data_dir):
    from weitiao.config import load_config
    from weitiao.workflows import sft

    tmp = tmp_path_factory.mktemp("compare")
    runs = []
    for name, lr in (("fast", 3e-2), ("slow", 1e-3)):
        cfg = write_config(tmp / f"{name}.yaml", tiny_model_dir, demo_data_dir, tmp / name,
                           train={"learning_rate": lr})
        runs.append(sft.run(load_config(cfg)).out_dir)
    return runs


def test_training_writes_per_row_losses_forgetting_and_a_report(two_runs):
    run = two_runs[0]
    metrics = json.loads((run / "metrics.json").read_text())
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    for side in ("base", "tuned"):  # the per-row losses recombine to the loss the run reported
        total = sum(r[f"{side}_loss"] * r[f"{side}_tokens"] for r in rows)
        tokens = sum(r[f"{side}_tokens"] for r in rows)
        assert total / tokens == pytest.approx(metrics["test"][side]["loss"], rel=1e-5)
    forgetting = metrics["forgetting"]
    assert forgetting["paragraphs"] == 32 and len(forgetting["tuned"]["rows"]) == 32
    assert forgetting["change"] == pytest.approx(forgetting["tuned_loss"] - forgetting["base_loss"], abs=1e-6)

    report = json.loads((run / "report" / "report.json").read_text())
    by_name = {m["name"]: m for m in report["metrics"]}
    assert set(by_name) == {"loss", "perplexity", "count_list", "exact_match"}
    assert by_name["loss"]["delta"] == pytest.approx(
        metrics["test"]["tuned"]["loss"] - metrics["test"]["base"]["loss"], abs=1e-4)
    assert by_name["loss"]["low"] <= by_name["loss"]["delta"] <= by_name["loss"]["high"]
    assert report["forgetting"]["b"] == pytest.approx(forgetting["tuned_loss"], abs=1e-5)
    assert sum(report["counts"].values()) == len(rows)
    page = (run / "report" / "report.html").read_text()
    assert "<script" not in page and "http://" not in page and "https://" not in page  # opens offline
    assert page.count("data:image/png;base64,") == 2  # the deltas and the loss curves, inline
    for name in ("metric_deltas.png", "loss_curves.png"):
        assert (run / "report" / name).read_bytes()[:4] == b"\x89PNG"


def test_compare_two_runs_on_the_command_line(two_runs, tmp_path):
    fast, slow = two_runs
    proc = run_cli("compare", fast, slow, "--out", tmp_path / "r", "--samples", 500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert (report["a"], report["b"]) == ("fast", "slow")
    fast_m = json.loads((fast / "metrics.json").read_text())["test"]["tuned"]
    slow_m = json.loads((slow / "metrics.json").read_text())["test"]["tuned"]
    loss = next(m for m in report["metrics"] if m["name"] == "loss")
    assert loss["delta"] == pytest.approx(slow_m["loss"] - fast_m["loss"], abs=1e-4)
    assert "slow vs fast" in proc.stdout and "general-text loss" in proc.stdout


def test_compare_errors_are_one_line(two_runs, tmp_path, tiny_model_dir, demo_data_dir):
    proc = run_cli("compare", tmp_path / "missing")
    assert proc.returncode == 2 and "no such run folder" in proc.stderr and "Traceback" not in proc.stderr
    unfinished = tmp_path / "unfinished"
    shutil.copytree(two_runs[0], unfinished)
    page = unfinished / "report" / "report.html"
    before = page.stat().st_mtime_ns
    (unfinished / "run.json").write_text(json.dumps({"status": "interrupted"}))
    proc = run_cli("compare", unfinished)
    assert proc.returncode == 2 and "has not finished" in proc.stderr
    assert page.stat().st_mtime_ns == before  # nothing written

    no_base = tmp_path / "no-base"
    shutil.copytree(two_runs[0], no_base)
    rows = [json.loads(line) for line in (no_base / "predictions.jsonl").read_text().splitlines()]
    (no_base / "predictions.jsonl").write_text("".join(
        json.dumps({k: v for k, v in r.items() if not k.startswith("base")}) + "\n" for r in rows))
    proc = run_cli("compare", no_base)
    assert proc.returncode == 2 and "eval.compare_base: false" in proc.stderr and "RUN_A RUN_B" in proc.stderr


# ---------------------------------------------------------------- the page, as a browser shows it


def test_report_renders_in_headless_chromium(two_runs, tmp_path):
    pixels = screenshot(two_runs[0] / "report" / "report.html", tmp_path / "shot.png")
    assert_not_blank(pixels)
    # the charts are drawn: some pixels carry the charts' colours (matplotlib's blue for the loss curve)
    blue = ((abs(pixels[..., 0].astype(int) - 31) < 20) & (abs(pixels[..., 1].astype(int) - 119) < 20)
            & (abs(pixels[..., 2].astype(int) - 180) < 20)).sum()
    assert blue > 200, "the loss curve is not visible"


def test_a_run_scored_on_loss_alone_is_compared_row_by_row_on_loss(tmp_path, tiny_model_dir, demo_data_dir):
    from weitiao.config import load_config
    from weitiao.workflows import sft

    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, tmp_path / "run", eval={"metrics": []})
    run = sft.run(load_config(cfg)).out_dir
    report = json.loads((run / "report" / "report.json").read_text())
    assert report["decided_by"] == "loss" and [m["name"] for m in report["metrics"]] == ["loss", "perplexity"]
    assert sum(report["counts"].values()) == report["rows"] == 8
    (run / "metrics.json").write_text("{not json")
    proc = run_cli("compare", run)
    assert proc.returncode == 2 and "metrics.json: not valid JSON" in proc.stderr


def test_rows_are_sorted_by_the_stricter_metric_and_each_side_has_its_interval():
    """count_list calls both tuned answers right; list_correct sees the repeat in row 2, so that row regressed."""
    from weitiao.evaluation.report import Side, compare_sides

    ref = "1. Oak\n2. Pine"
    answers_a = ["no list", "1. Oak\n2. Elm"]
    answers_b = ["1. Oak\n2. Elm", "1. Oak\n2. Oak"]
    from weitiao.evaluation.metrics import score

    _, scores_a = score(["count_list", "list_correct"], answers_a, [ref, ref])
    _, scores_b = score(["count_list", "list_correct"], answers_b, [ref, ref])
    a = Side("base", answers_a, scores_a, None, {})
    b = Side("tuned", answers_b, scores_b, None, {})
    result = compare_sides(a, b, [{"prompt": "List 2 trees.", "reference": ref, "where": f"t {i}"} for i in (1, 2)],
                           samples=200)
    assert result["decided_by"] == "list_correct"
    assert [r["b"] for r in result["outcomes"]["regressed"]] == ["1. Oak\n2. Oak"]
    assert [r["b"] for r in result["outcomes"]["improved"]] == ["1. Oak\n2. Elm"]
    by_name = {m["name"]: m for m in result["metrics"]}
    assert by_name["count_list"]["b"] == 1.0 and by_name["list_correct"]["b"] == 0.5
    assert by_name["count_list"]["b_interval"] == [1.0, 1.0]  # every row 1: no spread
    low, high = by_name["list_correct"]["a_interval"]
    assert 0.0 <= low <= by_name["list_correct"]["a"] <= high <= 1.0
