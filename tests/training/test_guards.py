"""Non-finite gradients are skipped and counted, then stop the run; Ctrl-C saves a checkpoint and exits."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import torch
from transformers import TrainerControl, TrainerState

from conftest import copy_model_files, run_cli, write_config
from weitiao.testing import build_model
from weitiao.training.callbacks import NonFiniteGuard


def test_guard_skips_nonfinite_steps_and_stops_after_k():
    model = build_model(50)
    guard = NonFiniteGuard(max_consecutive=2, log=lambda _: None)
    state, control = TrainerState(), TrainerControl()
    params = list(model.parameters())

    def step(bad: bool):
        for p in params:
            p.grad = torch.ones_like(p)
        if bad:
            params[3].grad[0] = float("nan")
        guard.on_pre_optimizer_step(None, state, control, model=model)
        state.global_step += 1

    step(bad=True)
    assert all(p.grad is None for p in params) and guard.skipped == 1 and not control.should_training_stop
    step(bad=False)
    assert all(p.grad is not None for p in params) and guard.consecutive == 0
    step(bad=True)
    step(bad=True)
    assert guard.skipped == 3 and control.should_training_stop and guard.stopped_at == 4


def test_nonfinite_run_stops_with_message_and_keeps_good_checkpoint(tmp_path, tiny_model_dir, demo_data_dir):
    from transformers import AutoModelForCausalLM

    broken = tmp_path / "broken-model"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.model.norm.weight[0] = float("inf")  # every forward now gives NaN logits
    model.save_pretrained(broken)
    copy_model_files(tiny_model_dir, broken)
    cfg = write_config(tmp_path / "c.yaml", broken, demo_data_dir, tmp_path / "run",
                       train={"max_steps": 10, "eval_steps": 2, "max_nonfinite_steps": 3},
                       eval={"metrics": [], "compare_base": False})
    proc = run_cli("train", cfg)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "training stopped at step 3: 3 non-finite gradients in a row" in proc.stderr
    assert "step 1: non-finite gradient, update skipped" in proc.stdout
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "failed"
    from safetensors.torch import load_file

    ckpt = tmp_path / "run" / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors"
    assert ckpt.is_file() and all(torch.isfinite(t).all() for t in load_file(ckpt).values())


def test_ctrl_c_saves_a_checkpoint_and_the_run_resumes(tmp_path, tiny_model_dir, demo_data_dir):
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, tmp_path / "run",
                       train={"max_steps": 400, "eval_steps": 400, "logging_steps": 10, "save_total_limit": 1},
                       eval={"metrics": [], "compare_base": False})
    proc = subprocess.Popen([sys.executable, "-m", "weitiao", "train", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "run" / "run.json").is_file() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(3.0)  # well into training
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    assert "interrupt: saving a checkpoint after this step" in out
    assert "Traceback" not in err and "interrupted at step" in err
    status = json.loads((tmp_path / "run" / "run.json").read_text())
    assert status["status"] == "interrupted" and 0 < status["step"] < 400
    assert (tmp_path / "run" / "checkpoints" / f"checkpoint-{status['step']}" / "trainer_state.json").is_file()
    resumed = run_cli("train", cfg)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"checkpoint-{status['step']}" in resumed.stdout
    assert json.loads((tmp_path / "run" / "trainer_state.json").read_text())["global_step"] == 400


def test_disk_full_while_saving_fails_clearly_and_keeps_the_last_checkpoint(tmp_path, tiny_model_dir,
                                                                            demo_data_dir):
    import shutil

    import pytest

    from weitiao.training.checkpoints import is_complete

    def config(out):
        return write_config(tmp_path / f"{out.name}.yaml", tiny_model_dir, demo_data_dir, out,
                            train={"max_steps": 6, "eval_steps": 2, "save_total_limit": 5},
                            eval={"metrics": [], "compare_base": False})

    # measure one checkpoint, then give the run a disk with room for the first one only
    probe = tmp_path / "probe"
    assert run_cli("train", config(probe)).returncode == 0
    ckpt = sum(f.stat().st_size for f in (probe / "checkpoints" / "checkpoint-2").rglob("*") if f.is_file())
    others = sum(f.stat().st_size for f in probe.iterdir() if f.is_file() and f.suffix in (".json", ".yaml",
                                                                                          ".jinja"))
    mount = tmp_path / "small-disk"
    mount.mkdir()
    size_kb = (ckpt + others) * 3 // 2 // 1024 + 8
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        out = mount / "run"
        proc = run_cli("train", config(out))
        assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and "is full" in proc.stderr
        assert "checkpoint-2" in proc.stderr
        assert is_complete(out / "checkpoints" / "checkpoint-2")
        assert json.loads((out / "run.json").read_text())["status"] == "running"  # resumable once space is freed
        shutil.copytree(out, tmp_path / "moved")
    finally:
        subprocess.run(["umount", str(mount)])
    resumed = run_cli("train", config(tmp_path / "moved"))  # the run, moved to a disk with room, resumes
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout and "checkpoint-2" in resumed.stdout
