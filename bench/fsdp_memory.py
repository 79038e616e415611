"""Peak memory of one process under FSDP on this CPU, next to the estimate, and the fit of the estimate's FSDP term.

    python bench/fsdp_memory.py [--processes 2] [--steps 5] [--write] [--readme]

Each setting is one `weitiao train examples/fsdp.yaml --nproc N` (SmolLM2-135M-Instruct on the demo data, FSDP2
full_shard, bf16 autocast where the CPU has native bf16), for `--steps` steps, without the base comparison. From
its metrics.json come rank 0's training-phase peak RSS and the estimate's breakdown. The estimate without the
FSDP term (`memory.estimate.fsdp_retained_bytes`) counts the live tensors: 1/N of the weights, gradients and
optimizer states, and the process's own activations. What the measurement holds beyond that is fitted, by
non-negative least squares weighted by 1 / measured, as a multiple of the unsharded weights plus a multiple of
the unsharded gradients: the buffers FSDP gathers and frees layer after layer, which glibc keeps resident.
Full fine-tuning and LoRA tell the two apart (LoRA gathers every weight but reduce-scatters almost no gradient).
With --write the two constants go into src/weitiao/memory/constants.json (cpu.fsdp_retained), with --readme the
table into docs/guides/distributed.md between the `fsdp-memory` markers. Results: bench/results/fsdp-cpu.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from weitiao.memory.estimate import CONSTANTS_FILE, TrainSettings, distributed_estimate  # noqa: E402

SETTINGS = [  # (method, rows per process): full and LoRA, at two batch sizes
    ("full", 4), ("full", 8), ("lora", 4), ("lora", 8),
]
START, END = "<!-- fsdp-memory:start -->", "<!-- fsdp-memory:end -->"
GIB = 2**30


def measure(method: str, batch: int, processes: int, steps: int, work: Path) -> dict:
    out = work / f"{method}-{batch}"
    overrides = [f"output.dir={out}", f"method.name={method}", f"train.batch_size={batch}",
                 f"train.max_steps={steps}", "eval.compare_base=false", "eval.max_samples=2",
                 "eval.forgetting=false", "eval.rephrase=false"]
    if method == "lora":
        overrides.append("train.learning_rate=1e-3")
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "weitiao", "train", str(REPO / "examples" / "fsdp.yaml"),
                           *overrides, "--overwrite", "--nproc", str(processes)],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    if proc.returncode != 0:
        raise SystemExit(f"{method} x {batch} failed:\n{proc.stderr[-3000:]}")
    m = json.loads((out / "metrics.json").read_text())
    parts = {k: v for k, v in m["memory"]["estimate"].items() if k not in ("per_process", "this_machine")}
    return {"method": method, "batch": batch, "processes": processes, "steps": m["train"]["steps"],
            "precision": m["train"]["precision"], "measured": m["memory"]["train_peak_rss_bytes"],
            "train_start": m["memory"]["train_start_rss_bytes"], "parts": parts,
            "step_seconds": m["train"]["step_seconds"], "wall_s": round(time.time() - t0, 1)}


def live_estimate(row: dict) -> int:
    """The per-process estimate without the FSDP term."""
    return distributed_estimate(row["parts"], TrainSettings(device="cpu"), row["processes"], "fsdp", constants={})


def fit(rows: list[dict]) -> dict:
    from scipy.optimize import nnls

    x = np.array([[r["parts"]["weights"] + r["parts"]["trainable_weights"], r["parts"]["gradients"]] for r in rows],
                 dtype=float)
    y = np.array([r["measured"] - live_estimate(r) for r in rows], dtype=float)
    w = 1.0 / np.array([r["measured"] for r in rows], dtype=float)
    (a, b), _ = nnls(x * w[:, None], y * w)
    return {"weights": round(float(a), 3), "gradients": round(float(b), 3)}


def errors(rows: list[dict], constants: dict) -> list[tuple[dict, int, float]]:
    """(row, estimate with the fitted term, its error in percent) for each row."""
    out = []
    for r in rows:
        est = distributed_estimate(r["parts"], TrainSettings(device="cpu"), r["processes"], "fsdp",
                                   constants={"fsdp_retained": constants})
        out.append((r, est, 100 * (est - r["measured"]) / r["measured"]))
    return out


def table(rows: list[dict], constants: dict, where: str) -> str:
    lines = [f"Measured by `python bench/fsdp_memory.py` on {where}: rank 0's training-phase peak RSS, FSDP2 "
             f"full_shard over {rows[0]['processes']} processes, {rows[0]['steps']} steps, {rows[0]['precision']}; "
             f"fitted `fsdp_retained`: {constants['weights']} x the unsharded weights + {constants['gradients']} x "
             "the unsharded gradients.",
             "", "| method | rows per process | measured | estimate without the FSDP term | estimate | error |",
             "|---|---:|---:|---:|---:|---:|"]
    for r, est, err in errors(rows, constants):
        lines.append(f"| {r['method']} | {r['batch']} | {r['measured'] / GIB:.2f} GiB | "
                     f"{live_estimate(r) / GIB:.2f} GiB | {est / GIB:.2f} GiB | {err:+.1f}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--work", default="runs/bench-fsdp")
    parser.add_argument("--refit", action="store_true", help="fit the saved results again, running nothing")
    parser.add_argument("--write", action="store_true", help="put the fitted constants into constants.json")
    parser.add_argument("--readme", action="store_true", help="replace the fsdp-memory table in docs/guides/distributed.md")
    args = parser.parse_args(argv)
    results = REPO / "bench" / "results" / "fsdp-cpu.json"
    if args.refit:
        saved = json.loads(results.read_text())
        rows, where = saved["rows"], saved["machine"]
    else:
        sys.path.insert(0, str(REPO))
        from bench.methods import machine

        where, work = machine(), Path(args.work).resolve()
        rows = []
        for method, batch in SETTINGS:
            rows.append(measure(method, batch, args.processes, args.steps, work))
            print(f"{method:5s} x {batch}: measured {rows[-1]['measured'] / GIB:.2f} GiB, estimate without the "
                  f"FSDP term {live_estimate(rows[-1]) / GIB:.2f} GiB", flush=True)
        results.write_text(json.dumps({"machine": where, "date": time.strftime("%Y-%m-%d"), "rows": rows},
                                      indent=2) + "\n")
    constants = fit(rows)
    text = table(rows, constants, where)
    print(f"fsdp_retained: {constants}\n\n{text}")
    if args.write:
        data = json.loads(CONSTANTS_FILE.read_text())
        worst = max(abs(err) for _, _, err in errors(rows, constants))
        data["cpu"]["fsdp_retained"] = {**constants, "fit": f"bench/fsdp_memory.py, {time.strftime('%Y-%m-%d')}: "
                                        f"{len(rows)} settings, worst error {worst:.1f}%"}
        CONSTANTS_FILE.write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {CONSTANTS_FILE}")
    if args.readme:
        readme = REPO / "docs" / "guides" / "distributed.md"
        content = readme.read_text()
        if START not in content:
            raise SystemExit(f"docs/guides/distributed.md has no {START} marker")
        readme.write_text(re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: f"{START}\n{text}\n{END}",
                                 content, flags=re.S))
        print("docs/guides/distributed.md fsdp-memory table updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
