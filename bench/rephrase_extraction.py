"""Rephrasing on an extraction task, end to end: augment, audit, train plain and augmented, measure the gap.

    python bench/rephrase_extraction.py [--out runs/rephrase-extraction] [--steps 60]

The data is the person-extraction demo (`weitiao data demo --task person_extraction`: 600 alpaca training rows,
an instruction, a paragraph about a person, a JSON answer; 100 test rows). SmolLM2-135M-Instruct, the bundled model,
writes the augmentation's rephrasings (`rephrase.model=base`, k=2) and LoRA r=16 trains on it.

1. Augment time, instruction only (the default: 4 distinct instructions in 600 rows) and the whole turn on a
   sample of rows, each from an empty cache; the cost of 10,000 rows extrapolated from each.
2. Audit: every accepted rephrased row still states every value of its JSON answer (name, age, city, job).
3. Train on the plain and on the augmented file (the same steps), then `weitiao eval RUN --rephrase` with
   hand-written instruction rewordings that the augmentation never used (examples/rephrase/person_extraction_eval.yaml)
   and, second, with the base model rewording the instructions under another prompt. Exact match and json_fields
   on the original and rephrased test questions, the gap with its interval, and the coverage.
Writes bench/results/rephrase-extraction-cpu.json with the machine, date and commit.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.methods import machine  # noqa: E402
from bench.rephrase_demo import weitiao  # noqa: E402
EVAL_RULES = REPO / "examples" / "rephrase" / "person_extraction_eval.yaml"
EVAL_PROMPT = ("Say this instruction another way. Keep what it asks for. Reply with the new instruction only.\n\n"
               "Instruction: {question}")


def write_config(folder: Path, steps: int) -> Path:
    import yaml

    cfg = {"model": {"name_or_path": "smollm2-135m-instruct"},
           "data": {"format": "alpaca", "train": "data/train.jsonl", "val": "data/val.jsonl",
                    "test": "data/test.jsonl", "max_length": 256},
           "method": {"name": "lora", "lora": {"r": 16, "alpha": 32, "target_modules": ["all-linear"]}},
           "train": {"max_steps": steps, "batch_size": 8, "learning_rate": 1.0e-3, "eval_steps": steps},
           "eval": {"metrics": ["exact_match", "json_fields"], "forgetting": False, "report": True,
                    "generation": {"max_new_tokens": 48, "batch_size": 20}},
           "rephrase": {"model": "base", "k": 2}}
    path = folder / "extraction.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def audit(augmented: Path, originals: int) -> dict:
    """Rephrased rows whose question no longer states a value of their JSON answer."""
    from weitiao.evaluation.rephrase import states

    rows = [json.loads(line) for line in augmented.read_text().splitlines()][originals:]
    losing = [r for r in rows if not all(states(f"{r['instruction']}\n\n{r['input']}", str(v))
                                         for v in json.loads(r["output"]).values())]
    return {"rephrased_rows": len(rows), "rows_losing_an_answer_value": len(losing),
            "examples": [r["instruction"] for r in rows[:6]]}


def augment_costs(folder: Path, cfg: Path, sample: int) -> dict:
    out = {}
    for target, extra in (("instruction", []), ("whole_turn", [f"data.train={folder / 'sample.jsonl'}"])):
        cache = folder / f"cache-{target}.jsonl"
        cache.unlink(missing_ok=True)
        stdout, seconds = weitiao("data", "augment", cfg, "--rephrase", f"rephrase.target={target}",
                                  f"rephrase.cache={cache}", *extra, "--out", folder / f"aug-{target}.jsonl",
                                  "--overwrite", cwd=folder)
        report = json.loads((folder / f"aug-{target}.augment.json").read_text())
        rows = report["original"]
        out[target] = {"rows": rows, "seconds": round(seconds, 1), "generation_seconds": report["seconds"],
                       "coverage": report["coverage"], "rephrased": report["rephrased"],
                       "audit": audit(folder / f"aug-{target}.jsonl", rows)}
    texts = out["instruction"]["coverage"]["texts"]
    out["extrapolated_10000_rows_s"] = {
        "instruction (same 4 distinct instructions)": out["instruction"]["seconds"],
        "whole_turn": round(out["whole_turn"]["generation_seconds"] / sample * 10_000, 0)}
    out["distinct_instructions"] = texts
    return out


EVALS = (("hand-written rules", [f"rephrase.templates={EVAL_RULES}", "rephrase.model=null"]),
         ("model, another prompt", [f"rephrase.prompt={EVAL_PROMPT}"]),
         ("model, default prompt", []))  # what a new user types: weitiao eval RUN --rephrase rephrase.model=base


def train_and_measure(folder: Path, cfg: Path, name: str, data: str | None) -> dict:
    from weitiao.evaluation.report import rephrased_gaps

    run = folder / name
    weitiao("train", cfg, f"output.dir={run}", "--overwrite", *([f"data.train={data}"] if data else []), cwd=folder)
    results = {}
    for how, overrides in EVALS:
        overrides = overrides + ([f"rephrase.cache={folder / f'eval-cache-{len(results)}.jsonl'}"]
                                 if "rules" not in how else [])
        out = folder / f"{name}-eval-{len(results)}.json"
        stdout, _ = weitiao("eval", run, "--rephrase", "--out", out, *overrides, cwd=folder)
        out.with_suffix(".log").write_text(stdout, encoding="utf-8")
        result = json.loads(out.read_text())
        gaps = rephrased_gaps(result["rephrased"])
        r = result["rephrased"]
        results[how] = {"original": result["metrics"], "rephrased": r["metrics"], "coverage": r["coverage"],
                        "gaps": gaps, "by_rephrasing": [{k: v for k, v in row.items() if k != "row_ids"}
                                                        for row in r.get("by_rephrasing", [])],
                        "disagreements": r.get("disagreements", [])}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/rephrase-extraction")
    parser.add_argument("--steps", type=int, default=60, help="training steps of each run (batch 8)")
    parser.add_argument("--sample", type=int, default=60, help="rows whose whole turn is reworded, for its cost")
    parser.add_argument("--plain-only", action="store_true", help="no augmentation: train the plain run and "
                        "measure its gap three ways (bench/results/rephrase-extraction-gap-cpu.json)")
    args = parser.parse_args()
    folder = (REPO / args.out).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    weitiao("data", "demo", folder / "data", "--task", "person_extraction")
    (folder / "sample.jsonl").write_text("".join((folder / "data" / "train.jsonl").read_text().splitlines(True)
                                                 [:args.sample]))
    cfg = write_config(folder, args.steps)
    started = time.strftime("%Y-%m-%d")
    costs = None if args.plain_only else augment_costs(folder, cfg, args.sample)
    runs = {"plain": train_and_measure(folder, cfg, "plain", None)}
    if not args.plain_only:
        runs["augmented"] = train_and_measure(folder, cfg, "augmented", str(folder / "aug-instruction.jsonl"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    result = {"machine": machine(), "date": started, "commit": commit, "steps": args.steps, "augment": costs,
              "runs": runs}
    path = REPO / "bench" / "results" / f"rephrase-extraction{'-gap' if args.plain_only else ''}-cpu.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1)[:3000])
    for name, run in runs.items():
        for how, r in run.items():
            for g in r["gaps"]:
                print(f"{name:<10} {how:<22} {g['name']:<12} original {g['original']:.4f} rephrased "
                      f"{g['rephrased']:.4f} gap {g['gap']:+.4f} [{g['low']:+.4f}, {g['high']:+.4f}] on "
                      f"{g['questions']} questions (coverage {r['coverage']['with_rephrasing']}/"
                      f"{r['coverage']['questions']})")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
