"""The GRPO demo beside the SFT quickstart, on the bundled model: count accuracy before and after, for each.

    python bench/grpo_demo.py [--out runs/grpo-demo] [--runs grpo,sft,...]

1. `weitiao train examples/grpo.yaml`: GRPO from the base SmolLM2-135M-Instruct, rewarded by the demo's checker
   (count_list, with count_close as partial credit), 24 steps of 4 questions x 4 sampled answers; the 80 test
   questions scored before and after, as asked and asked another way (eval.rephrase, one rephrasing each).
2. `weitiao train examples/quickstart.yaml` with the same rephrased evaluation: SFT on the 480 reference answers
   (60 steps of 8), the run GRPO is set beside.
3. GRPO from the finished SFT run (model.name_or_path=the SFT run): does RL add to SFT? At the demo's learning
   rate, and (`sft-grpo-lr1e-4`) at a tenth of it.
4. GRPO from the base model with `list_correct` (distinct members of the category) rewarded too: does a reward
   that checks the content buy content in the same 24 steps?

Each run is timed from the command's start to its end (loading, scoring before and after, training). Writes
bench/results/grpo-demo-cpu.json (machine, date, commit; one row per run) and prints the table that
docs/guides/grpo.md quotes. About 45 minutes on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.methods import machine  # noqa: E402
from bench.rephrase_demo import weitiao  # noqa: E402  (runs `weitiao ARGS`: (output, seconds), or exits)

REPHRASED = ["eval.rephrase=true", "rephrase.templates=rephrase/count_list_any_eval.yaml", "rephrase.k=1"]


def row(name: str, run_dir: Path, seconds: float) -> dict:
    """One results row from a finished run's metrics.json: before/after on the test questions as asked and as
    rephrased, the reward curve's ends (GRPO), and the times."""
    m = json.loads((run_dir / "metrics.json").read_text())
    before, after = m["test"]["base"], m["test"]["tuned"]
    rephrased = m.get("rephrased") or {}
    curve = (m.get("rewards") or {}).get("curve") or []
    out = {"run": name, "steps": m["train"]["steps"], "train_s": m["train"]["runtime_s"], "total_s": round(seconds),
           "precision": m["train"]["precision"]}
    for metric in ("count_list", "list_correct"):
        out[f"{metric} before"] = before[metric]
        out[f"{metric} after"] = after[metric]
    if rephrased:
        base_rephrased = rephrased.get("base") or json.loads((run_dir / "eval_base.json").read_text()).get(
            "rephrased", {}).get("metrics")
        for metric in ("count_list", "list_correct"):
            out[f"rephrased {metric} before"] = base_rephrased[metric] if base_rephrased else None
            out[f"rephrased {metric} after"] = rephrased["metrics"][metric]
    if curve:
        out["mean reward, first step"] = curve[0]["reward"]
        out["mean reward, last step"] = curve[-1]["reward"]
    return out


def machine_and_isa() -> str:
    """bench.methods.machine(), and whether bf16 runs natively here (what `precision: auto` decides on)."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    isa = "AMX" if "amx_tile" in flags else "avx512_bf16, no AMX" if "avx512_bf16" in flags else "no avx512_bf16"
    return f"{machine()}; {isa}"


def runs(out: Path) -> dict:
    """Each run of the demo: its folder name -> (its row's label, `weitiao train` arguments). In this order."""
    grpo, sft = "examples/grpo.yaml", str(out / "sft")
    return {
        "grpo": ("grpo from the base model", [grpo]),
        "sft": ("sft (quickstart)", ["examples/quickstart.yaml", *REPHRASED]),
        "sft-grpo": ("grpo from the sft run", [grpo, f"model.name_or_path={sft}"]),
        "sft-grpo-lr1e-4": ("grpo from the sft run, learning rate 1e-4", [grpo, f"model.name_or_path={sft}",
                                                                          "train.learning_rate=1e-4"]),
        "grpo-content": ("grpo from the base model, list_correct rewarded too",
                         [grpo, "grpo.rewards=[count_list, count_close, list_correct]",
                          "grpo.reward_weights=[1.0, 0.5, 1.0]"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/grpo-demo", help="folder for the runs")
    parser.add_argument("--runs", default=None,
                        help="comma-separated run names to (re)run (default: all); the results file holds every "
                             "finished run in --out, each with the time its own command took")
    args = parser.parse_args()
    out = (REPO / args.out).resolve()
    plan = runs(out)
    for name in (args.runs.split(",") if args.runs else plan):
        _, seconds = weitiao("train", *plan[name][1], f"output.dir={out / name}", "--overwrite")
        (out / name / "bench_seconds.txt").write_text(f"{seconds:.1f}\n")
    rows = [row(label, out / name, float((out / name / "bench_seconds.txt").read_text()))
            for name, (label, _) in plan.items() if (out / name / "bench_seconds.txt").is_file()]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                           text=True).stdout.strip()
    result = {"machine": machine_and_isa(), "date": datetime.date.today().isoformat(),
              "commit": commit + (" (with uncommitted changes)" if dirty else ""),
              "note": "80 test questions of the demo task, greedy decoding, 96 new tokens; rephrased: each asked "
                      "once more in other words (examples/rephrase/count_list_any_eval.yaml). total_s: the whole "
                      "command, loading and scoring before and after included.",
              "rows": rows}
    path = REPO / "bench" / "results" / "grpo-demo-cpu.json"
    path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    for r in rows:
        print(json.dumps(r))
    print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
