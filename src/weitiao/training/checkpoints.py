"""Which Trainer checkpoints are complete, and which one a resume starts from.

transformers' Trainer writes a checkpoint folder file by file: weights, optimizer, scheduler, RNG states, and last
`trainer_state.json`; only after that does it delete checkpoints beyond `save_total_limit`. So a checkpoint whose
`trainer_state.json` parses and whose other files are present is complete, and a kill at any moment leaves the
previous complete checkpoint on disk. In a multi-process run there is one exception: rank 0 writes
`trainer_state.json` without waiting for the other ranks' RNG files, so a kill can leave rank 1's file empty or cut
short under a parsed `trainer_state.json` (seen under load: a 0-byte `rng_state_1.pth`, and the resume failed).
So every torch state file (`*.pt`, `*.pth`, written by torch.save as a zip archive) must also be a whole archive.

That is still not enough: a checkpoint can look complete while rank 1 has not yet *created* its RNG file, and a
kill a moment later leaves that file empty (a 2-process DDP run under load on a clean clone, 2026-12-07: judged
complete, killed, then not resumed). So once every rank has written its part, the ranks meet (a barrier) and rank 0
writes a seal, `weitiao_checkpoint.json` with the world size (`training.callbacks.SealCheckpoint`); a checkpoint
of a multi-process run counts only with its seal and one whole RNG file per rank it names. A resume starts from
the newest complete checkpoint; newer folders are partial writes of a killed run and are removed (they hold
nothing that is not recomputed), each named with the file that was missing or cut short.
"""
from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")
# each a file that must be there, or alternatives: a multi-process run writes one RNG file per rank, and an
# FSDP-sharded run its optimizer as a torch.distributed.checkpoint folder (training.sharded_checkpoint)
STATE_FILES = (("optimizer.pt", "sharded_state/.metadata"), ("scheduler.pt",), ("rng_state.pth", "rng_state_0.pth"))


def checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoint folder, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := CHECKPOINT.match(p.name))]
    return sorted(found)


SEAL = "weitiao_checkpoint.json"
RANK_RNG = re.compile(r"^rng_state_(\d+)\.pth$")


def is_complete(folder: Path) -> bool:
    return why_incomplete(folder) is None


def why_incomplete(folder: Path) -> str | None:
    """None for a complete checkpoint, else which file is missing or cut short."""
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return "trainer_state.json is missing or cut short"
    if state.get("global_step") is None:
        return "trainer_state.json has no global_step"
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        return f"no weights ({' or '.join(WEIGHT_FILES)})"
    needed = STATE_FILES + ((("trainable_state.safetensors",),) if is_prompt_learning(folder) else ())
    missing = [" or ".join(names) for names in needed if not any((folder / n).is_file() for n in names)]
    if missing:
        return f"{missing[0]} is missing"
    # a zip archive's directory is at its end: a file cut short (or still being written) has none
    cut = [p.name for p in (*folder.glob("*.pt"), *folder.glob("*.pth")) if not zipfile.is_zipfile(p)]
    if cut:
        return f"{cut[0]} is cut short (not a whole torch archive)"
    return rank_problem(folder)


def rank_problem(folder: Path) -> str | None:
    """A multi-process checkpoint (rng_state_N.pth files) needs its seal, and an RNG file from every rank."""
    ranks = {int(m.group(1)) for p in folder.iterdir() if (m := RANK_RNG.match(p.name))}
    if not ranks:
        return None
    try:
        world = int(json.loads((folder / SEAL).read_text())["world_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"{SEAL} is missing: not every process had finished writing its part"
    lost = sorted(set(range(world)) - ranks)
    return f"rng_state_{lost[0]}.pth is missing" if lost else None


def is_prompt_learning(folder: Path) -> bool:
    """Whether the checkpoint holds a prompt-learning adapter (which also needs its trainable state to resume)."""
    try:
        config = json.loads((folder / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return False
    return config.get("peft_type") in ("PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING")


def last_complete(root: Path, log=print) -> Path | None:
    """The newest complete checkpoint; partial folders newer than it are removed."""
    for step, folder in reversed(checkpoints(root)):
        if is_complete(folder):
            return folder
        log(f"removing {folder}: an incomplete checkpoint, {why_incomplete(folder)} (the run was stopped while "
            "writing it)")
        shutil.rmtree(folder, ignore_errors=True)
    return None
