"""Every method on its bundled demo task, on this machine: one `weitiao train` per example config, then
`weitiao eval` of the saved output, and one table of what each costs and what it achieves.

    python bench/methods.py [--only full,lora,...] [--workdir DIR] [--readme]

For each example config (examples/<name>.yaml) it records: trainable parameters, the base weights' memory as
stored (quantized for QLoRA), the process's peak RSS, training throughput (all tokens and answer tokens per
second), training and total wall time, the task metric of the base and the tuned model, and the metric after
reloading the saved output with `weitiao eval` (it must equal the tuned one). Runs go one after another, never
in parallel (two trainings on this 2-core CPU slow each other down about tenfold). Results are written to
bench/results/methods-<machine>.json; with --readme the table between the `methods-table` markers of
docs/guides/methods.md is replaced by this run's.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = ["quickstart", "full", "freeze", "qlora", "qlora-8bit", "prefix", "ptuning-v2", "prompt", "ptuning",
            "classify"]
START, END = "<!-- methods-table:start -->", "<!-- methods-table:end -->"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, {platform.system()}"


def run_example(name: str, workdir: Path) -> dict:
    config = REPO / "examples" / f"{name}.yaml"
    run_dir = workdir / name
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "weitiao", "train", str(config), f"output.dir={run_dir}",
                           "--overwrite"], capture_output=True, text=True, env=env)
    wall = time.time() - t0
    (workdir / f"{name}.train.log").write_text(proc.stdout + proc.stderr)
    row: dict = {"example": name, "returncode": proc.returncode, "wall_s": round(wall, 1)}
    if proc.returncode != 0:
        row["error"] = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
        return row
    m = json.loads((run_dir / "metrics.json").read_text())
    metric = "accuracy" if m.get("task") == "classify" else "count_list"
    eval_out = workdir / f"{name}.eval.json"
    proc = subprocess.run([sys.executable, "-m", "weitiao", "eval", str(run_dir), "--out", str(eval_out)],
                          capture_output=True, text=True, env=env)
    reloaded = json.loads(eval_out.read_text())["metrics"].get(metric) if proc.returncode == 0 else None
    row.update(
        method=m["method"], metric=metric, precision=m["train"].get("precision"),
        trainable=m["params"]["trainable"], total=m["params"]["total"],
        base_weights_mib=round(m["base_weights"]["stored_bytes"] / 2**20, 1),
        peak_rss_gib=round(m["memory"]["peak_rss_bytes"] / 2**30, 2),
        tokens_per_s=m["train"]["tokens_per_s"], trained_tokens_per_s=m["train"].get("trained_tokens_per_s"),
        steps=m["train"]["steps"], train_s=m["train"]["runtime_s"],
        base=m["test"]["base"][metric] if m["test"]["base"] else None, tuned=m["test"]["tuned"][metric],
        reloaded=reloaded,
    )
    return row


def table(rows: list[dict], where: str) -> str:
    machines = list(dict.fromkeys(r.get("machine", where) for r in rows))  # in order of first use
    mark = {m: chr(ord("a") + i) for i, m in enumerate(machines)}
    on = "; ".join(f"({mark[m]}) {m}" for m in machines)
    lines = [f"Measured by `python bench/methods.py --readme`, on: {on}. One `weitiao train examples/<name>.yaml` "
             "per row, then `weitiao eval` of the saved output. Precision is the run's (`auto`: bf16 autocast where "
             "the CPU has native bf16, else fp32).", "",
             "| example | on | precision | method | trainable params | base weights (stored) | peak RSS | tokens/s (all "
             "/ answer) | train | total wall | metric | base | tuned | reloaded |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        if r["returncode"] != 0:
            lines.append(f"| {r['example']} | {mark[r.get('machine', where)]} | | failed: {r.get('error', '')} | | | | | | "
                         f"{r['wall_s']:.0f} s | | | | |")
            continue
        share = 100 * r["trainable"] / r["total"]
        answer = f" / {r['trained_tokens_per_s']:.0f}" if r.get("trained_tokens_per_s") else ""
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(
            f"| {r['example']} | {mark[r.get('machine', where)]} | {r.get('precision') or '?'} | {r['method']} | "
            f"{r['trainable'] / 1e6:.2f}M ({share:.2f}%) | "
            f"{r['base_weights_mib']:.0f} MiB | {r['peak_rss_gib']:.2f} GiB | {r['tokens_per_s']:.0f}{answer} | "
            f"{r['train_s']:.0f} s ({r['steps']} steps) | {r['wall_s']:.0f} s | {r['metric']} | {fmt(r['base'])} | "
            f"{fmt(r['tuned'])} | {fmt(r['reloaded'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated example names (default: all)")
    parser.add_argument("--workdir", default="runs/bench-methods")
    parser.add_argument("--readme", action="store_true", help="replace the methods table in docs/guides/methods.md")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else EXAMPLES
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    where = machine()
    rows = []
    for name in names:
        print(f"== {name}", flush=True)
        row = dict(run_example(name, workdir), machine=where)
        print(json.dumps(row), flush=True)
        rows.append(row)
    out = REPO / "bench" / "results" / "methods-cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.only and out.is_file():  # re-measured rows replace their old ones; the others are kept
        saved = json.loads(out.read_text())
        # rows from before per-row machines were recorded were measured on the file's machine
        old = {r["example"]: dict({"machine": saved["machine"]}, **r) for r in saved["rows"]}
        old.update({r["example"]: dict(r, date=time.strftime("%Y-%m-%d")) for r in rows})
        rows = [old[name] for name in EXAMPLES if name in old]
    out.write_text(json.dumps({"machine": where, "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2) + "\n")
    text = table(rows, where)
    print(text)
    if args.readme:
        readme = REPO / "docs" / "guides" / "methods.md"
        content = readme.read_text()
        if START not in content:
            raise SystemExit(f"docs/guides/methods.md has no {START} marker")
        content = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: f"{START}\n{text}\n{END}", content,
                         flags=re.S)
        readme.write_text(content)
        print("docs/guides/methods.md methods table updated")
    return 0 if all(r["returncode"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
