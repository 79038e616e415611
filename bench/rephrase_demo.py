"""The rephrasing demo, end to end: train on one phrasing, measure the rephrased gap, augment, retrain, compare.

    python bench/rephrase_demo.py [--out runs/rephrase-demo]

1. `weitiao train examples/one-phrasing.yaml`: every training question is asked one way ("List 4 trees."); after
   training (eval.rephrase) each of the 40 test questions is asked again in 3 other phrasings
   (examples/rephrase/count_list_eval.yaml) and the tuned model's count accuracy is scored on both.
2. `weitiao data augment ... --rephrase`: each training question gets 2 more phrasings
   (examples/rephrase/count_list_augment.yaml, which share no wording with the evaluation's rules).
3. The same config trained on the augmented file for the same number of epochs (54 steps x 420/140 rows = 162
   steps, so each original question is seen as often as in step 1), scored the same way. `--same-steps` keeps 54
   steps instead: then every original question is seen a third as often.
4. `weitiao compare` of the two runs: each run's gap (rephrased - original) and the change in the gap, with
   paired bootstrap intervals over the 40 questions.
About 45 minutes on a 2-core CPU (20 with --same-steps). Prints the table that docs/guides/rephrasing.md and the issue note carry.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def weitiao(*args, cwd=REPO) -> tuple[str, float]:
    """Run `weitiao ARGS` in a fresh process; (its output, seconds), or exit with its error."""
    started = time.time()
    print("$ weitiao " + " ".join(map(str, args)), flush=True)
    proc = subprocess.run([sys.executable, "-m", "weitiao", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    seconds = time.time() - started
    print(f"  ({seconds:.0f} s)", flush=True)
    return proc.stdout, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/rephrase-demo", help="folder for the two runs and the new data")
    parser.add_argument("--same-steps", action="store_true",
                        help="train the augmented run for the one-phrasing run's steps, not its epochs")
    args = parser.parse_args()
    out = (REPO / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    config = REPO / "examples" / "one-phrasing.yaml"
    one, augmented, data = out / "one-phrasing", out / "augmented", out / "augmented-train.jsonl"

    weitiao("train", config, f"output.dir={one}", "--overwrite")
    weitiao("data", "augment", config, "rephrase.templates=rephrase/count_list_augment.yaml", "--rephrase",
            "--out", data, "--overwrite")
    steps = yaml.safe_load(config.read_text())["train"]["max_steps"]
    rows = [sum(1 for line in open(f, encoding="utf-8") if line.strip())
            for f in (config.parent / "data" / "count_list_one_phrasing" / "train.jsonl", data)]
    if not args.same_steps:
        steps = steps * rows[1] // rows[0]
    weitiao("train", config, f"data.train={data}", f"output.dir={augmented}", f"train.max_steps={steps}",
            f"train.eval_steps={steps // 3}", "--overwrite")
    weitiao("compare", one, augmented, "--out", out / "compare")

    report = json.loads((out / "compare" / "report.json").read_text())
    print(f"\n{'run':<16}{'train rows':>11}{'steps':>7}{'original':>10}{'rephrased':>11}{'gap':>9}  95% interval")
    for name, run in (("one phrasing", one), ("augmented", augmented)):
        gaps = report["rephrase"]["models"][run.name]
        g = next(x for x in gaps if x["name"] == "count_list")
        metrics = json.loads((run / "metrics.json").read_text())
        print(f"{name:<16}{metrics['data']['train_rows']:>11}{metrics['train']['steps']:>7}{g['original']:>10.4f}"
              f"{g['rephrased']:>11.4f}{g['gap']:>+9.4f}  "
              f"[{g['low']:+.4f}, {g['high']:+.4f}]")
    c = next(x for x in report["rephrase"]["change"] if x["name"] == "count_list")
    print(f"gap change (augmented - one phrasing): {c['change']:+.4f} [{c['low']:+.4f}, {c['high']:+.4f}] on "
          f"{c['questions']} questions")
    print(f"report: {out / 'compare' / 'report.html'}")


if __name__ == "__main__":
    main()
