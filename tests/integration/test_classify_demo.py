"""examples/classify.yaml on the real bundled all-MiniLM-L6-v2 encoder: the classification acceptance run.

Slow-marked, but short (about a minute on 2 cores): it trains the shipped config unchanged, except for the
output folder, and reloads the saved adapter through `weitiao eval`.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_classify_demo_reaches_090_and_reloads(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("train", REPO / "examples" / "classify.yaml", f"output.dir={out}", timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    base, tuned = metrics["test"]["base"], metrics["test"]["tuned"]
    print(f"accuracy base {base['accuracy']:.3f} tuned {tuned['accuracy']:.3f}; macro-F1 {tuned['macro_f1']:.3f}")
    assert tuned["accuracy"] >= 0.9 and tuned["macro_f1"] >= 0.9
    assert base["accuracy"] < 0.6  # a fresh head is near chance (0.2 for 5 balanced classes)
    confusion = json.loads((out / "confusion_matrix.json").read_text())["tuned"]
    assert sum(confusion[i][i] for i in range(5)) == round(tuned["accuracy"] * 100)
    report = tmp_path / "eval.json"
    proc = run_cli("eval", out, "--out", report)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(report.read_text())["metrics"]["accuracy"] == tuned["accuracy"]
