"""examples/dpo.yaml on the quickstart's run (the session's `quickstart_run` fixture, shared with
test_quickstart.py): DPO continues a real SFT run's adapter on the bundled SmolLM2-135M-Instruct.

Slow (about a minute on 2 cores); ordered last in the suite (tests/conftest.py), so the run it starts from is
trained by then.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import run_cli

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_dpo_from_the_quickstart_run_prefers_chosen_answers_and_keeps_the_task(quickstart_run, tmp_path, monkeypatch):
    """examples/dpo.yaml on the quickstart's run (its LoRA adapter trained further, a frozen copy as reference):
    held-out reward accuracy above 0.8 and the count accuracy does not fall. Shortened for the suite: 2 steps (a
    warm-up step, then one at the peak learning rate: the first two steps of the example's own schedule, after
    which its held-out accuracy was already 1.0 with a margin of 0.19; 0.48 and 0.58 at steps 4 and 6), the first 20
    of the 40 validation pairs as the held-out pairs, no validation pass, 5 test prompts generated.
    Ordered last, when the other worker has finished, so it takes every core."""
    out, _ = quickstart_run
    held_out = tmp_path / "held-out.jsonl"  # scoring a pair runs the policy and the reference on both answers
    lines = (REPO / "examples" / "data" / "count_list_preference" / "val.jsonl").read_text().splitlines()[:20]
    held_out.write_text("\n".join(lines) + "\n")
    dpo_out = tmp_path / "dpo"
    for threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # (MKL's fp32 GEMMs read their own variable)
        monkeypatch.setenv(threads, str(os.cpu_count() or 1))
    proc = run_cli("train", REPO / "examples" / "dpo.yaml", f"model.name_or_path={out}", f"output.dir={dpo_out}",
                   "train.max_steps=2", f"data.test={held_out}", "data.val=[]", "eval.max_samples=5",
                   timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((dpo_out / "metrics.json").read_text())
    held, test = metrics["preference"], metrics["test"]
    print(f"DPO: held-out reward accuracy {held['reward_accuracy']:.3f} margin {held['reward_margin']:.3f}; "
          f"count_list {test['base']['count_list']:.3f} -> {test['tuned']['count_list']:.3f}; "
          f"train {metrics['train']['runtime_s']} s")
    assert held["pairs"] == 20 and held["reward_accuracy"] > 0.8
    assert test["tuned"]["count_list"] >= test["base"]["count_list"]
    assert metrics["start"]["adapter"] == str(out / "adapter")
