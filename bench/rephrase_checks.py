"""The rephrasing checks measured on planted sets: how many faithful rewordings they accept, how many unfaithful
ones they reject, in English and Chinese.

    python bench/rephrase_checks.py

The sets are tests/evaluation/data/rephrase_planted_{en,zh}_{dev,heldout,heldout2}.jsonl: pairs of a question and a
rewording, each marked faithful or not with the kind of change (a number changed, a field dropped, a key renamed,
the task changed, a synonym, a reorder ...), written for this purpose apart from the checks. The dev sets were read
while the rules were written; the held-out sets were read only to measure (and once more after measuring, to fix
the English number words "one hundred", 一个半 and a few more, said in docs/guides/rephrasing.md). The second
held-out sets (heldout2, 2026-12-08) were written afterwards, by a writer who never saw the checks' code, and are
first measured as they came (faithful accepted en 22/30, zh 25/30; unfaithful rejected 33/35, 32/35), then read
to fix five bugs they showed (docs/guides/rephrasing.md). Writes
bench/results/rephrase-checks.json with every misjudged pair.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))
from bench.methods import machine  # noqa: E402

DATA = REPO / "tests" / "evaluation" / "data"
# each held-out set's first measurement, before anything was fixed after reading it (the estimate for unseen text)
FIRST_MEASURED = {
    "en_heldout": {"date": "2026-12-07", "faithful accepted": "18/28"},
    "zh_heldout": {"date": "2026-12-07", "faithful accepted": "18/28"},
    "en_heldout2": {"date": "2026-12-08", "faithful accepted": "22/30", "unfaithful rejected": "33/35"},
    "zh_heldout2": {"date": "2026-12-08", "faithful accepted": "25/30", "unfaithful rejected": "32/35"},
}


def measure(path: Path) -> dict:
    from weitiao.evaluation.faithful import problems, values_to_keep

    rows = [json.loads(line) for line in path.open(encoding="utf-8")]
    wrong, counts = [], {"faithful": 0, "faithful_accepted": 0, "unfaithful": 0, "unfaithful_rejected": 0}
    for r in rows:
        keep = values_to_keep(r["question"], [r["answer"]]) if r.get("answer") else []
        why = problems(r["question"], r["candidate"], [], keep=keep)
        kind = "faithful" if r["faithful"] else "unfaithful"
        counts[kind] += 1
        right = (not why) if r["faithful"] else bool(why)
        counts[kind + ("_accepted" if r["faithful"] else "_rejected")] += right
        if not right:
            wrong.append({"question": r["question"], "candidate": r["candidate"], "faithful": r["faithful"],
                          "kind": r["kind"], "problems": why})
    return {"pairs": len(rows), **counts,
            "faithful_accepted_rate": round(counts["faithful_accepted"] / counts["faithful"], 4),
            "unfaithful_rejected_rate": round(counts["unfaithful_rejected"] / counts["unfaithful"], 4),
            "misjudged": wrong}


def main() -> None:
    sets = {f"{lang}_{split}": measure(DATA / f"rephrase_planted_{lang}_{split}.jsonl")
            for lang in ("en", "zh") for split in ("dev", "heldout", "heldout2")}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    rows = [{"set": name, "pairs": s["pairs"], "faithful accepted": s["faithful_accepted_rate"],
             "unfaithful rejected": s["unfaithful_rejected_rate"]} for name, s in sets.items()]
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "commit": commit, "rows": rows,
              "first_measured": FIRST_MEASURED, "sets": sets}
    path = REPO / "bench" / "results" / "rephrase-checks.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for name, s in sets.items():
        print(f"{name:<11} faithful accepted {s['faithful_accepted']}/{s['faithful']} "
              f"({s['faithful_accepted_rate']:.3f}), unfaithful rejected {s['unfaithful_rejected']}/"
              f"{s['unfaithful']} ({s['unfaithful_rejected_rate']:.3f})")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
