"""Kill a training run with SIGKILL at random moments, resume it, and check it ends where an unkilled run ends.

    python bench/kill_resume.py [--kills 10] [--seed 0] [--workdir DIR]
    python bench/kill_resume.py --nproc 2 --after-complete --load --kills 20   # the DDP case of issue 42
    python bench/kill_resume.py --nproc 2 --strategy fsdp --method full --after-complete --load --kills 20

Trains LoRA (dropout 0.1, so the RNG state matters) on the tiny Llama and a demo-data slice, saving a checkpoint
every 3 steps. First one uninterrupted reference run; then, for each trial, a run killed with SIGKILL (half of the
kills at a random moment, half the instant a new checkpoint folder appears, i.e. while it is being written) and
resumed by running the same command again. Each resumed run's final adapter must equal the reference within 1e-5,
and its logged losses after the resume point must equal the reference's. Prints one line per trial and a total.

`--after-complete` kills instead the moment a chosen checkpoint counts as complete (what
tests/training/test_distributed.py does), and then also requires that the resume starts from the newest checkpoint
that was complete right after the kill; `--nproc 2` trains on 2 processes (DDP over gloo); `--load` keeps both
cores busy with two spinning processes meanwhile; `--strategy fsdp` shards it with FSDP instead of DDP, and
`--method full` trains every weight instead of LoRA (no dropout then). With those three it writes
bench/results/kill-resume-ddp-cpu.json (DDP, LoRA) or kill-resume-STRATEGY-METHOD-cpu.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

TOLERANCE = 1e-5
MAX_STEPS = 24


def write_config(folder: Path, model_dir: Path, data_dir: Path, out: Path) -> Path:
    cfg = {
        "model": {"name_or_path": str(model_dir)},
        "data": {"format": "messages", "train": str(data_dir / "train.jsonl"), "val": str(data_dir / "val.jsonl"),
                 "max_length": 128},
        "method": {"name": METHOD, "lora": {"r": 4, "alpha": 8, "dropout": 0.1}},
        "train": {"max_steps": MAX_STEPS, "batch_size": 4, "learning_rate": 1e-3, "eval_steps": 3,
                  "logging_steps": 1, "precision": "fp32", "save_total_limit": 2, "load_best_at_end": False},
        "eval": {"metrics": [], "compare_base": False},
        "output": {"dir": str(out)},
        "distributed": {"strategy": STRATEGY},
    }
    path = folder / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


NPROC, STRATEGY, METHOD = 1, "ddp", "lora"


def train_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "weitiao", "train", str(config)] + (["--nproc", str(NPROC)] if NPROC > 1 else [])


def kill_when_complete(config: Path, out: Path, checkpoint: int) -> tuple[str, str | None]:
    """SIGKILL the run the moment its checkpoint number `checkpoint` (step 3 x checkpoint) counts as complete;
    (where, the newest complete checkpoint's name right after the kill)."""
    from weitiao.training.checkpoints import checkpoints, is_complete

    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(train_command(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    target = out / "checkpoints" / f"checkpoint-{3 * checkpoint}"  # saved every 3 steps; older ones are rotated
    while proc.poll() is None:
        if is_complete(target):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            time.sleep(1.0)  # the workers die with the launcher
            done = [p.name for _, p in checkpoints(out / "checkpoints") if is_complete(p)]
            return f"when checkpoint {checkpoint} was complete", (done[-1] if done else None)
        time.sleep(0.002)
    return "too late (the run had finished)", None


def trained_weights(run: Path) -> dict:
    from safetensors.torch import load_file

    adapter = run / "adapter" / "adapter_model.safetensors"
    return load_file(adapter if adapter.is_file() else run / "model" / "model.safetensors")


def logged_losses(run: Path) -> dict[int, float]:
    state = json.loads((run / "trainer_state.json").read_text())
    return {h["step"]: h["loss"] for h in state["log_history"] if "loss" in h}


def finished(run: Path) -> bool:
    try:
        return json.loads((run / "run.json").read_text()).get("status") == "finished"
    except (OSError, ValueError):
        return False


def kill_during(config: Path, out: Path, at_checkpoint: int | None, delay: float) -> str:
    """Start training and SIGKILL it: the instant checkpoint number `at_checkpoint` appears (while it is being
    written), or `delay` seconds after the run folder appears. Returns where the kill landed."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(train_command(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    ckpts = out / "checkpoints"
    seen: set[str] = set()
    start = None
    while proc.poll() is None:
        if at_checkpoint is not None:
            new = {p.name for p in ckpts.iterdir() if p.name.startswith("checkpoint-")} - seen if ckpts.is_dir() \
                else set()
            seen |= new
            if new and len(seen) >= at_checkpoint:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                name = max(new, key=lambda n: int(n.split("-")[1]))
                complete = (ckpts / name / "trainer_state.json").is_file()
                return f"at {name} ({'complete' if complete else 'mid-write'})"
        elif (out / "run.json").is_file():
            if start is None:
                start = time.time()  # the run folder exists: training is being set up or running
            elif time.time() - start >= delay:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return f"{delay:.2f}s after the run folder appeared"
        time.sleep(0.0005)
    return "too late (the run had finished)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=24, help="steps per run (a checkpoint every 3)")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--nproc", type=int, default=1, help="processes per run (2: DDP over gloo)")
    parser.add_argument("--strategy", choices=("ddp", "fsdp"), default="ddp", help="with --nproc 2 or more")
    parser.add_argument("--method", choices=("lora", "full"), default="lora")
    parser.add_argument("--after-complete", action="store_true",
                        help="kill when a checkpoint counts as complete; the resume must start from it")
    parser.add_argument("--load", action="store_true", help="two spinning processes keep both cores busy")
    args = parser.parse_args(argv)
    global NPROC, STRATEGY, METHOD, MAX_STEPS
    NPROC, STRATEGY, METHOD, MAX_STEPS = args.nproc, args.strategy, args.method, args.steps
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2 if args.load else 0)]
    try:
        return run_trials(args)
    finally:
        for p in spinners:
            p.kill()


def run_trials(args) -> int:
    random.seed(args.seed)
    from weitiao.testing import save_tiny_model, write_demo_slice

    work = Path(args.workdir or tempfile.mkdtemp(prefix="kill-resume-"))
    model_dir = save_tiny_model(work / "model")
    data_dir = write_demo_slice(work / "data", train=96, val=8, test=8)

    ref_out = work / "reference"
    proc = subprocess.Popen(train_command(write_config(work, model_dir, data_dir, ref_out)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not (ref_out / "run.json").is_file():
        time.sleep(0.001)
    t0 = time.time()
    if proc.wait() != 0:
        raise SystemExit("the reference run failed")
    window = time.time() - t0  # from the run folder appearing to the end of the process
    ref_w, ref_losses = trained_weights(ref_out), logged_losses(ref_out)
    print(f"reference run: {MAX_STEPS} steps; {window:.1f}s from run folder to exit")

    matched, trials = 0, []
    for trial in range(args.kills):
        out = work / f"trial-{trial}"
        config = write_config(work, model_dir, data_dir, out)
        at_checkpoint = random.randint(1, MAX_STEPS // 3 - 1) if trial % 2 == 1 else None
        delay = random.uniform(0.0, 0.8 * window)
        newest = None
        if args.after_complete:
            where, newest = kill_when_complete(config, out, random.randint(1, MAX_STEPS // 3 - 2))
        for _ in range(0 if args.after_complete else 5):
            where = kill_during(config, out, at_checkpoint, delay)
            if not finished(out):
                break
            shutil.rmtree(out)  # the run ended before the kill: try again, earlier
            delay /= 2
        resumed = subprocess.run(train_command(config), capture_output=True, text=True)
        if resumed.returncode != 0:
            print(f"trial {trial}: killed {where}; resume FAILED: {resumed.stderr.strip()[-300:]}")
            continue
        resume_line = next((line for line in resumed.stdout.splitlines() if line.startswith(("resuming from",
                            "no complete checkpoint"))), "fresh run (killed before the run folder existed)")
        w = trained_weights(out)
        diff = max(float((w[k] - ref_w[k]).abs().max()) for k in ref_w)
        losses = logged_losses(out)
        same_losses = all(abs(losses.get(s, float("nan")) - v) <= 1e-6 for s, v in ref_losses.items())
        from_newest = newest is None or resume_line.endswith(f"/{newest}")
        ok = diff <= TOLERANCE and same_losses and from_newest
        matched += ok
        line = (f"trial {trial}: killed {where}; {resume_line}; max |dW| {diff:.2e}; losses "
                f"{'equal' if same_losses else 'DIFFER'}" + (f"; newest complete {newest}" if newest else "")
                + f" -> {'match' if ok else 'MISMATCH'}")
        print(line, flush=True)
        trials.append({"trial": trial, "killed": where, "newest_complete": newest, "resume": resume_line,
                       "max_abs_dw": diff, "losses_equal": same_losses, "ok": ok})
    print(f"{matched}/{args.kills} resumed runs matched the uninterrupted run (tolerance {TOLERANCE})")
    if args.after_complete and args.nproc > 1 and args.load:
        write_results(args, matched, trials)
    return 0 if matched == args.kills else 1


def write_results(args, matched: int, trials: list[dict]) -> None:
    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo))
    from bench.methods import machine

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True,
                            text=True).stdout.strip()
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "commit": commit,
              "setting": f"{args.method} on {args.nproc} processes ({args.strategy.upper()}, gloo), both cores kept "
                         "busy by two spinning processes, "
                         "SIGKILL the moment a checkpoint counts as complete, then the same command again",
              "resumed_from_newest_complete_and_matched": f"{matched}/{args.kills}", "rows": trials}
    name = "ddp" if (args.strategy, args.method) == ("ddp", "lora") else f"{args.strategy}-{args.method}"
    path = repo / "bench" / "results" / f"kill-resume-{name}-cpu.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
