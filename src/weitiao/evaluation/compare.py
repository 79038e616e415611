"""Compare base and tuned (one run), or two runs, on the same test rows: read runs -> pair rows -> deltas with
bootstrap intervals -> charts -> report.html.

Everything comes from what the runs wrote (predictions.jsonl, metrics.json, trainer_state.json, config.yaml), so
no model is loaded and a report takes seconds; `weitiao train` writes one into the run folder at the end
(`eval.report`). With two runs, each run's tuned model is compared on the test rows both scored (matched by
prompt and reference), and their own base results are left aside.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from weitiao.console import log
from weitiao.errors import WeitiaoError
from weitiao.evaluation.rephrase import rejected_summary
from weitiao.evaluation.report import Side, compare_sides, delta_chart, loss_chart, render_html, signed
from weitiao.runs import RUN_FILE, write_json


def run(first: str | Path, second: str | Path | None = None, out: str | Path | None = None, samples: int = 2000,
        seed: int = 0) -> dict:
    # ---- the runs: finished, with scored test rows
    if samples < 100:
        raise WeitiaoError(f"--samples: {samples} bootstrap resamples are too few for the ends of a 95% interval; "
                           "use at least 100 (the default is 2000)")
    first = Path(first)
    runs = [read_run(first)] + ([read_run(Path(second))] if second else [])

    # ---- the two sides, on the same rows
    if second is None:
        rows, a, b = base_and_tuned(runs[0])
        title = f"weitiao: base vs tuned, {first.name}"
        default_out = first / "report"
    else:
        rows, a, b = two_runs(runs[0], runs[1])
        title = f"weitiao: {a.label} vs {b.label}"
        default_out = Path(second) / f"compare-{first.name}"
    out_dir = Path(out) if out else default_out
    if out_dir.exists() and not out_dir.is_dir():
        raise WeitiaoError(f"--out: {out_dir} is a file; give a folder for the report")

    # ---- deltas with intervals, row outcomes, forgetting; rephrased questions where `eval --rephrase` ran
    result = compare_sides(a, b, rows, samples, seed)
    result["rephrase"] = rephrase_section(runs, [a.label, b.label] if second else ["tuned"], samples, seed)

    # ---- charts and the page
    charts = {"deltas": delta_chart(result)} if result["metrics"] else {}
    losses = loss_chart(dict(zip([a.label, b.label] if second else [first.name], [r["history"] for r in runs])))
    if losses:
        charts["losses"] = losses
    facts = [("made", time.strftime("%Y-%m-%d %H:%M")), *run_facts(runs)]
    page = render_html(result, title, facts, charts)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.html").write_text(page, encoding="utf-8")
    for name, png in (("metric_deltas.png", charts.get("deltas")), ("loss_curves.png", charts.get("losses"))):
        if png:
            (out_dir / name).write_bytes(png)
    write_json(out_dir / "report.json", {"title": title, "runs": [str(r["dir"]) for r in runs], **result})

    log(summary_table(result))
    log(f"report: {out_dir / 'report.html'}")
    return {**result, "out_dir": str(out_dir)}


def read_run(run_dir: Path) -> dict:
    """A finished run's predictions, metrics, history and config, or one clear error."""
    if not run_dir.is_dir():
        raise WeitiaoError(f"{run_dir}: no such run folder")
    status_file = run_dir / RUN_FILE
    if not status_file.is_file():
        raise WeitiaoError(f"{run_dir}: not a weitiao run folder (no {RUN_FILE})")
    status = read_json(status_file).get("status")
    if status != "finished":
        raise WeitiaoError(f"{run_dir}: the run has not finished (status {status!r}); nothing to compare yet")
    predictions = run_dir / "predictions.jsonl"
    if not predictions.is_file():
        raise WeitiaoError(f"{run_dir}: no predictions.jsonl: the run had no test split to score "
                           "(set data.test or data.test_ratio)")
    rows = []
    for i, line in enumerate(predictions.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise WeitiaoError(f"{predictions} line {i}: not valid JSON ({err.msg})") from None
    if not rows:
        raise WeitiaoError(f"{predictions}: no scored test rows")
    state = run_dir / "trainer_state.json"
    metrics = read_json(run_dir / "metrics.json")
    import yaml

    config_file = run_dir / "config.yaml"  # only described in the report: a run without it still compares
    config = (yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}) if config_file.is_file() else {}
    rephrased = read_json(run_dir / "rephrased.json") if (run_dir / "rephrased.json").is_file() else None
    return {"dir": run_dir, "name": run_dir.name, "rows": rows, "metrics": metrics, "config": config,
            "rephrased": rephrased_by_question(rephrased) if rephrased else None,
            "rephrase_coverage": (rephrased.get("rephrased") or {}).get("coverage") if rephrased else None,
            "rephrase_table": {k: (rephrased.get("rephrased") or {}).get(k) or [] for k in
                               ("by_rephrasing", "disagreements")} if rephrased else None,
            "history": read_json(state).get("log_history", []) if state.is_file() else []}


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeitiaoError(f"{path}: missing from the run folder") from None
    except json.JSONDecodeError as err:
        raise WeitiaoError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None


def side(run: dict, which: str, rows: list[dict], label: str) -> Side:
    """One model's per-row outputs, scores and losses from predictions.jsonl rows (`which`: base or tuned)."""
    test = run["metrics"].get("test") or {}
    forgetting = run["metrics"].get("forgetting") or {}
    losses = None
    if all(f"{which}_loss" in r for r in rows):
        losses = [(r[f"{which}_loss"] * r[f"{which}_tokens"], r[f"{which}_tokens"]) for r in rows]
    return Side(label=label, outputs=[r.get(which) for r in rows], scores=[row_scores(r, which) for r in rows],
                losses=losses, means=test.get(which) or {},
                general_text=[tuple(x) for x in forgetting.get(which, {}).get("rows", [])] or None,
                history=run["history"] if which == "tuned" else [])


def row_scores(row: dict, which: str) -> dict:
    """The row's metric values; a classification row (it has a text `label`) scores accuracy, a regression row
    (a number) its squared and absolute error."""
    if isinstance(row.get("label"), (int, float)) and row.get(which) is not None:
        error = float(row[which]) - float(row["label"])
        return {"squared_error": error * error, "absolute_error": abs(error)}
    if "label" in row:
        return {"accuracy": float(row.get(which) == row["label"])}
    return dict(row.get(f"{which}_scores") or {})


def pair_rows(rows: list[dict]) -> list[dict]:
    """What the report shows of a test row: where it is, the prompt (or text) and the reference (or label)."""
    return [{"where": r.get("where"), "prompt": r.get("prompt", r.get("text")),
             "reference": r.get("reference", r.get("label"))} for r in rows]


def base_and_tuned(run: dict) -> tuple[list[dict], Side, Side]:
    rows = run["rows"]
    if not all("base" in r or "base_loss" in r for r in rows):
        raise WeitiaoError(f"{run['dir']}: the base model was not scored in this run (eval.compare_base: false); "
                           "compare two runs instead: weitiao compare RUN_A RUN_B")
    return pair_rows(rows), side(run, "base", rows, "base"), side(run, "tuned", rows, "tuned")


def two_runs(first: dict, second: dict) -> tuple[list[dict], Side, Side]:
    """The test rows both runs scored, matched by (prompt, reference), in the first run's order."""
    def key(r):
        return json.dumps([r.get("prompt", r.get("text")), r.get("reference", r.get("label"))], ensure_ascii=False)

    theirs = {key(r): r for r in second["rows"]}
    mine = [r for r in first["rows"] if key(r) in theirs]
    if not mine:
        raise WeitiaoError(f"{first['dir']} and {second['dir']} scored no test row in common (rows are matched by "
                           "prompt and reference); compare runs evaluated on the same test data")
    if len(mine) < max(len(first["rows"]), len(second["rows"])):
        log(f"comparing the {len(mine)} test rows both runs scored ({len(first['rows'])} and "
            f"{len(second['rows'])} in all)")
    other = [theirs[key(r)] for r in mine]
    a = side(first, "tuned", mine, first["name"])
    b = side(second, "tuned", other, second["name"])
    if a.label == b.label:
        a.label, b.label = f"{a.label} (A)", f"{b.label} (B)"
    return pair_rows(mine), a, b


def rephrased_by_question(result: dict) -> dict[str, tuple[dict, list[dict]]]:
    """question -> (its scores, the scores of each of its rephrasings), from `weitiao eval --rephrase` output."""
    r = result.get("rephrased") or {}
    original = r.get("original") or []
    out = {o["question"]: (o["scores"], []) for o in original}
    for p in r.get("predictions", []):
        if p["row"] < len(original):
            out[original[p["row"]]["question"]][1].append(p["scores"])
    return out


def rephrase_section(runs: list[dict], labels: list[str], samples: int, seed: int) -> dict | None:
    """Each run's gap between original and rephrased questions, and with two runs, the change in the gap on the
    questions both were asked."""
    from weitiao.evaluation.report import gap_change, rephrase_gaps

    found = [(label, r["rephrased"]) for label, r in zip(labels, runs) if r.get("rephrased")]
    if not found:
        return None
    models = {label: rephrase_gaps([v[0] for v in by_q.values()], [v[1] for v in by_q.values()], samples, seed)
              for label, by_q in found}
    coverage = {label: r.get("rephrase_coverage") for label, r in zip(labels, runs) if r.get("rephrased")}
    change = []
    if len(found) == 2:
        first, second = found[0][1], found[1][1]
        common = [q for q in first if q in second]
        change = gap_change(([first[q][0] for q in common], [first[q][1] for q in common]),
                            ([second[q][0] for q in common], [second[q][1] for q in common]), samples, seed)
    tables = {label: r.get("rephrase_table") for label, r in zip(labels, runs) if r.get("rephrase_table")}
    return {"models": models, "change": change, "coverage": coverage, "per_rephrasing": tables}


def run_facts(runs: list[dict]) -> list[tuple[str, str]]:
    facts = []
    for r in runs:
        cfg, m = r["config"], r["metrics"]
        train = m.get("train") or {}
        facts.append((f"run {r['name']}", f"{r['dir']}: {cfg.get('task', 'sft')}, {m.get('method', '?')} on "
                      f"{(cfg.get('model') or {}).get('name_or_path', '?')}, {train.get('steps', '?')} steps in "
                      f"{train.get('runtime_s', '?')} s; test data {test_files(cfg)}"))
    return facts


def test_files(cfg: dict) -> str:
    test = (cfg.get("data") or {}).get("test")
    if not test:
        return "split from the training data" if (cfg.get("data") or {}).get("test_ratio") else "-"
    return ", ".join(map(str, test)) if isinstance(test, list) else str(test)


def span(interval: list[float]) -> str:
    return f"[{interval[0]:.4f}, {interval[1]:.4f}]"


def summary_table(result: dict) -> str:
    lines = [f"{result['b']} vs {result['a']} on {result['rows']} test rows "
             f"({result['counts']['improved']} improved, {result['counts']['regressed']} regressed, "
             f"{result['counts']['unchanged']} unchanged by {result['decided_by']})"]
    width = max([len(m["name"]) for m in result["metrics"]] + [len("general-text loss")]) + 2
    for m in result["metrics"] + ([{**result["forgetting"], "name": "general-text loss"}]
                                  if result["forgetting"] else []):
        interval = f"[{signed(m['low'])}, {signed(m['high'])}]" if m["low"] == m["low"] else ""
        sides = (f"  ({result['a']} {span(m['a_interval'])}, {result['b']} {span(m['b_interval'])})"
                 if m.get("a_interval") else "")  # each side's own 95% interval
        lines.append(f"  {m['name']:<{width}}{m['a']:>10.4f}{m['b']:>10.4f}{signed(m['delta']):>10}  "
                     f"{interval:<26}{m['verdict']:<16}{sides}".rstrip())
    rephrase = result.get("rephrase")
    if rephrase:
        for label, gaps in rephrase["models"].items():
            for g in gaps:
                gap = (f"gap {signed(g['gap'])} [{signed(g['low'])}, {signed(g['high'])}]" if g.get("measured", True)
                       else "gap not measured (too few questions)")
                lines.append(f"  rephrased questions, {label}: {g['name']} {g['original']:.4f} original, "
                             f"{g['rephrased']:.4f} rephrased, {gap} on {g['questions']} questions")
            c = (rephrase.get("coverage") or {}).get(label)
            if c:
                lines.append(f"  rephrased questions, {label}: {c['with_rephrasing']} of {c['questions']} questions "
                             f"got a faithful rephrasing; rejected candidates: {rejected_summary(c['rejected'])}")
        for c in rephrase["change"]:
            lines.append(f"  gap change ({result['b']} - {result['a']}): {c['name']} {signed(c['change'])} "
                         f"[{signed(c['low'])}, {signed(c['high'])}]")
    return "\n".join(lines)


def write_report(out_dir: Path) -> None:
    """The base-vs-tuned report of a finished run (eval.report). The run is saved before this: a failure here is
    reported and leaves the run as it is, and `weitiao compare RUN` makes the report again."""
    log("")
    try:
        run(out_dir)
    except Exception as err:  # noqa: BLE001 - the run itself is complete; the report can be made again
        log(f"warning: the report could not be written ({type(err).__name__}: {err}); the run is complete; "
            f"make the report with: weitiao compare {out_dir}")
