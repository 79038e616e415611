"""Record a finished run's base-vs-tuned results as a benchmark results file, for runs made with the CLI itself
(the Chinese quickstart: `weitiao train examples/quickstart-zh.yaml`).

    python bench/record_run.py runs/quickstart-zh --name quickstart-zh-cpu [--seconds N]

Writes bench/results/NAME.json: the machine (this one: run it where the run ran), the date the run finished, the
commit, each metric base -> tuned with the paired 95% interval of the change and each model's own interval (from
the run's report.json), and the rephrased questions' gap where the run has them. Nothing is re-run.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.methods import machine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--name", required=True)
    parser.add_argument("--seconds", type=float, default=None, help="wall time of the run, when measured")
    args = parser.parse_args()
    run = Path(args.run)
    report = json.loads((run / "report" / "report.json").read_text(encoding="utf-8"))
    finished = json.loads((run / "run.json").read_text())["finished"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    rows = [{"metric": m["name"], "base": m["a"], "tuned": m["b"], "change": m["delta"], "low": m["low"],
             "high": m["high"]} for m in report["metrics"]]
    gaps = [{"model": label, "metric": g["name"], "questions": g["questions"], "original": g["original"],
             "rephrased": g["rephrased"], "gap": g["gap"], "low": g["low"], "high": g["high"]}
            for label, found in ((report.get("rephrase") or {}).get("models") or {}).items() for g in found]
    result = {"machine": machine(), "date": finished[:10], "commit": f"{commit} (the run finished {finished})",
              "run": str(run), "test_rows": report["rows"] if isinstance(report["rows"], int) else None,
              "seconds": args.seconds, "rows": rows, "rephrased_gaps": gaps}
    path = REPO / "bench" / "results" / f"{args.name}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
