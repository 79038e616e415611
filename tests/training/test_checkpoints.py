"""Which checkpoint a resume may start from, and why a newer one is not it (issue 42's DDP resume)."""
from __future__ import annotations

import json

import torch

from weitiao.training.checkpoints import SEAL, last_complete, why_incomplete


def write_checkpoint(folder, ranks: int, seal: int | None, cut: str | None = None):
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 3}))
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    for name in ["optimizer.pt", "scheduler.pt"] + [f"rng_state_{r}.pth" for r in range(ranks)]:
        torch.save({"x": 1}, folder / name)
    if cut:
        (folder / cut).write_bytes(b"")  # a file created, and the process killed before it was written
    if seal is not None:
        (folder / SEAL).write_text(json.dumps({"step": 3, "world_size": seal}))


def test_a_multi_process_checkpoint_counts_only_when_sealed_with_every_ranks_file(tmp_path):
    write_checkpoint(tmp_path / "a", ranks=2, seal=2)
    assert why_incomplete(tmp_path / "a") is None
    # the case a clean clone hit: rank 1 had not created its file when the folder was judged, then was killed
    write_checkpoint(tmp_path / "b", ranks=0, seal=None)
    torch.save({"x": 1}, tmp_path / "b" / "rng_state.pth")
    assert why_incomplete(tmp_path / "b") is None  # one process's folder (rng_state.pth): no seal needed
    write_checkpoint(tmp_path / "c", ranks=2, seal=None)
    assert why_incomplete(tmp_path / "c") == f"{SEAL} is missing: not every process had finished writing its part"
    write_checkpoint(tmp_path / "d", ranks=1, seal=2)
    (tmp_path / "d" / "rng_state_0.pth").rename(tmp_path / "d" / "rng_state_1.pth")
    assert why_incomplete(tmp_path / "d") == "rng_state.pth or rng_state_0.pth is missing"
    write_checkpoint(tmp_path / "e", ranks=2, seal=2, cut="rng_state_1.pth")
    assert why_incomplete(tmp_path / "e") == "rng_state_1.pth is cut short (not a whole torch archive)"


def test_the_rerun_says_which_file_a_dropped_checkpoint_lacked(tmp_path):
    root = tmp_path / "checkpoints"
    write_checkpoint(root / "checkpoint-3", ranks=2, seal=2)
    write_checkpoint(root / "checkpoint-6", ranks=2, seal=None)
    said: list[str] = []
    assert last_complete(root, said.append) == root / "checkpoint-3"
    assert said == [f"removing {root / 'checkpoint-6'}: an incomplete checkpoint, {SEAL} is missing: not every "
                    "process had finished writing its part (the run was stopped while writing it)"]
    assert not (root / "checkpoint-6").exists()
