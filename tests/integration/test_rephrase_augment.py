"""`weitiao data augment --rephrase` with the real bundled SmolLM2 writing the rephrasings: killed half-way and run
again, it continues from its cache to the uninterrupted result, byte for byte.

Slow-marked (about a minute on 2 cores): three augment runs over 8 demo questions, k=2, 8 rows generated at a
time (two batches of 4 questions).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import run_cli

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def augment_config(folder: Path, cache: Path) -> Path:
    train = (REPO / "examples" / "data" / "count_list" / "train.jsonl").read_text().splitlines()[:8]
    (folder / "train.jsonl").write_text("\n".join(train) + "\n")
    cfg = folder / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"name_or_path": "smollm2-135m-instruct"},
        "data": {"format": "messages", "train": str(folder / "train.jsonl"), "max_length": 256},
        "rephrase": {"model": "base", "k": 2, "batch_size": 8, "cache": str(cache)},
    }))
    return cfg


def test_a_killed_augment_resumes_to_the_uninterrupted_result(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir()
    killed.mkdir()

    # ---- the uninterrupted run
    proc = run_cli("data", "augment", augment_config(whole, whole / "cache.jsonl"), "--rephrase", "--out",
                   whole / "out.jsonl", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (whole / "out.jsonl").read_text().splitlines()
    assert len(lines) > 8, "the model's rephrasings were all rejected: nothing to resume"

    # ---- the same run, killed once the first batch is in its cache
    cfg, cache = augment_config(killed, killed / "cache.jsonl"), killed / "cache.jsonl"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    child = subprocess.Popen([sys.executable, "-m", "weitiao", "data", "augment", str(cfg), "--rephrase", "--out",
                              str(killed / "out.jsonl")], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and child.poll() is None and not (cache.is_file() and cache.read_text().strip()):
        time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the augment finished before it could be killed"
    assert not (killed / "out.jsonl").exists()  # nothing half written
    cached = cache.read_text().splitlines()
    assert 0 < len(cached) < 8  # one batch of 4 distinct questions, not all 8

    # ---- run again: the cached batch is not asked again, and the result is the uninterrupted one
    proc = run_cli("data", "augment", cfg, "--rephrase", "--out", killed / "out.jsonl", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"rephrasings of {8 - len(cached)} distinct text(s) ({len(cached)} cached)" in proc.stdout
    assert (killed / "out.jsonl").read_bytes() == (whole / "out.jsonl").read_bytes()
    reports = [json.loads((d / "out.augment.json").read_text()) for d in (whole, killed)]
    assert reports[0]["coverage"] == reports[1]["coverage"]  # the same rejections, counted the same way
    assert reports[0]["dropped_by_the_audit"] == 0
