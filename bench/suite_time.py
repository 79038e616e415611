"""How long the README's test command takes on a clean clone, as CI runs it (`.ci/run`): setup, then pytest.

    python bench/suite_time.py                      # clone HEAD into a temporary folder and time it there
    python bench/suite_time.py --log CI.log --total-s 900 --commit abc1234   # record a run already made

Writes bench/results/suite-time-cpu.json (machine, date, commit, setup and pytest seconds, the test counts and the
25 slowest tests as pytest printed them); scripts/docs.py puts the sentence in the README and the contributing
guide from it, so the time the docs state is the time measured. Nothing else should run on the machine meanwhile:
the suite shares its cores with whatever else does.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULT = REPO / "bench" / "results" / "suite-time-cpu.json"
LIMIT_S, TARGET_S = 15 * 60, 12 * 60  # the project's limit on any of its machines, and the margin it aims for


def parse(log: str) -> dict:
    """pytest's summary line and its slowest-durations list, from the output of `.ci/run`."""
    summary = re.findall(r"^=*\s*(.*\b(?:passed|failed)\b.*) in ([\d.]+)s", log, re.M)
    if not summary:
        raise SystemExit("no pytest summary in the log: the run did not finish")
    counts_text, seconds = summary[-1]
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|deselected|error)", counts_text)}
    slowest = re.findall(r"^([\d.]+)s (setup|call|teardown)\s+(\S+)", log, re.M)
    return {"pytest_s": round(float(seconds)), "tests": counts,
            "slowest": [{"seconds": float(s), "phase": phase, "test": test} for s, phase, test in slowest]}


def run_clean_clone() -> tuple[str, int, str]:
    """(the log of `.ci/run` on a fresh clone of HEAD, its seconds, the commit)."""
    commit = git("rev-parse", "--short", "HEAD")
    with tempfile.TemporaryDirectory(prefix="weitiao-suite-") as tmp:
        subprocess.run(["git", "clone", "-q", str(REPO), tmp], check=True)
        start = time.time()
        proc = subprocess.run(["bash", ".ci/run"], cwd=tmp, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, env=dict(os.environ, CI="true"))
        seconds = round(time.time() - start)
    print(proc.stdout[-3000:])
    return proc.stdout + proc.stderr, seconds, commit


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", help="the output of a `.ci/run` already made (with --total-s and --commit)")
    parser.add_argument("--total-s", type=int, help="its wall-clock seconds, setup included")
    parser.add_argument("--commit", help="the commit it ran")
    args = parser.parse_args(argv)
    if args.log:
        log, total, commit = Path(args.log).read_text(errors="replace"), args.total_s, args.commit
    else:
        log, total, commit = run_clean_clone()
    from bench.methods import machine

    parsed = parse(log)
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "commit": commit,
              "command": "bash scripts/setup.sh && .venv/bin/python -m pytest -q (.ci/run, on a clean clone)",
              "total_s": total, "setup_s": total - parsed["pytest_s"], **parsed,
              "limit_s": LIMIT_S, "target_s": TARGET_S}
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{total} s in all ({result['setup_s']} s setup, {parsed['pytest_s']} s pytest); {parsed['tests']}; "
          f"wrote {RESULT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
