"""examples/reward.yaml on the real bundled SmolLM2-135M-Instruct: a reward model for the demo task's pairs.

Slow (about 4 minutes on 2 cores): the shipped config, unchanged except the output folder and no validation pass.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_reward_model_ranks_held_out_demo_pairs(tmp_path):
    out = tmp_path / "reward"
    proc = run_cli("train", REPO / "examples" / "reward.yaml", f"output.dir={out}", "data.val=[]", timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    base, tuned = metrics["test"]["base"], metrics["test"]["tuned"]
    print(f"reward model: pairwise accuracy {base['accuracy']:.3f} -> {tuned['accuracy']:.3f} on "
          f"{metrics['test']['pairs']} test pairs; train {metrics['train']['runtime_s']} s")
    assert metrics["test"]["pairs"] == 80
    assert tuned["accuracy"] > 0.9
