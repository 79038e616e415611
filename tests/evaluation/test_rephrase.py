"""Rephrased questions: the checks, the rules file, `weitiao eval --rephrase` and `weitiao data augment`."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import run_cli, write_config
from weitiao.data.formats import Example
from weitiao.errors import WeitiaoError
from weitiao.evaluation.rephrase import (
    ModelRephraser, clean_answer, load_rules, problems, rephrased_examples, rule_rephrasings,
)

RULES = """
- match: '^List (?P<n>\\d+) (?P<what>.+)\\.$'
  rephrasings:
    - 'Can you list {n} {what} for me?'
    - 'List {n} {what}.'
    - 'Write a numbered list of {what}.'
    - 'I need exactly {n} {what}. What are they?'
"""


def test_checks_name_what_is_wrong_with_a_candidate():
    q = "List 4 trees."
    assert problems(q, "Can you list 4 trees for me?", []) == []
    assert problems(q, "  ", []) == ["empty"]
    assert problems(q, "list 4 TREES", []) == ["the question itself"]
    assert problems(q, "Name some trees.", []) == ["loses the number(s) 4"]
    assert "a repeat" in problems(q, "Give me 4 trees!", ["give me 4 trees"])
    assert "more than one line" in problems(q, "Give me 4 trees.\nThanks", [])
    assert any(p.startswith("length") for p in problems(q, "4 " + "very " * 30 + "long trees", []))
    assert clean_answer('Rewritten request: "Could you name 4 trees?"\nSure!') == "Could you name 4 trees?"
    assert problems(q, "Can you list four trees for me?", []) == []  # a number may be written out
    assert problems("Name 42 birds.", "Name forty-two birds, please.", []) == []
    assert problems(q, "Can you list five trees for me?", []) == ["loses the number(s) 4"]


def test_a_rule_can_write_a_number_out(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("- {match: '^List (?P<n>\\d+) (?P<what>.+)\\.$', rephrasings: ['Name {n:words} {what}.']}\n")
    assert rule_rephrasings(load_rules(rules), "List 7 trees.") == ["Name seven trees."]
    assert rule_rephrasings(load_rules(rules), "List 21 trees.") == ["Name twenty-one trees."]


def test_rules_fill_named_groups_and_bad_rules_are_reported_together(tmp_path):
    good = tmp_path / "rules.yaml"
    good.write_text(RULES)
    rules = load_rules(good)
    assert rule_rephrasings(rules, "List 4 trees.")[0] == "Can you list 4 trees for me?"
    assert rule_rephrasings(rules, "Name 4 trees.") == []
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {match: '(unclosed', rephrasings: [x]}\n- {match: 'a(?P<n>b)', rephrasings: ['{m}']}\n"
                   "- {match: x}\n")
    with pytest.raises(WeitiaoError) as err:
        load_rules(bad)
    text = str(err.value)
    assert "rule 1: match is not a valid regular expression" in text
    assert "rule 2: '{m}' uses m, not a named group" in text and "rule 3: needs exactly the keys" in text
    with pytest.raises(WeitiaoError, match="does not exist"):
        load_rules(tmp_path / "missing.yaml")


def test_rephrased_examples_change_only_the_last_question():
    ex = Example(messages=(("system", "Be brief."), ("user", "List 4 trees."), ("assistant", "1. Oak")), text=None,
                 where="t.jsonl line 1")
    out = rephrased_examples([ex], {"List 4 trees.": ["Can you list 4 trees for me?", "Give me 4 trees."]}, k=1)
    assert len(out) == 1
    assert out[0].messages == (("system", "Be brief."), ("user", "Can you list 4 trees for me?"),
                               ("assistant", "1. Oak"))
    assert out[0].where == "t.jsonl line 1 (rephrasing 1)"


def test_eval_rephrase_reports_original_and_rephrased_and_the_report_shows_the_gap(lora_run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(lora_run_dir, run)  # eval --rephrase on a run folder writes rephrased.json into it
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    report = tmp_path / "eval.json"
    proc = run_cli("eval", run, f"rephrase.templates={rules}", "rephrase.k=2", "--rephrase", "--out", report)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(report.read_text())
    rephrased = result["rephrased"]
    questions = [json.loads(line)["prompt"] for line in (run / "predictions.jsonl").read_text().splitlines()]
    listing = [q for q in questions if q.startswith("List ")]
    # "List N X." rows get 2 valid rephrasings each ("List {n} {what}." is the question itself and "Write a
    # numbered list of {what}." loses the number: both rejected); the slice's other phrasings match no rule
    assert listing and rephrased["rows"] == 2 * len(listing) and rephrased["questions"] == len(questions)
    assert {p["question"] for p in rephrased["predictions"]} == {
        f"Can you list {q[5:-1]} for me?" for q in listing} | {f"I need exactly {q[5:-1]}. What are they?"
                                                              for q in listing}
    assert all(questions[p["row"]].startswith("List ") for p in rephrased["predictions"])
    assert set(rephrased["metrics"]) == set(result["metrics"])
    assert "original" in proc.stdout and "rephrased" in proc.stdout

    # the run's report now has the robustness section, computed from the same rows
    assert json.loads((run / "rephrased.json").read_text())["rephrased"] == rephrased
    section = json.loads((run / "report" / "report.json").read_text())["rephrase"]
    gaps = {g["name"]: g for g in section["models"]["tuned"]}
    assert set(gaps) == {"count_list", "exact_match"} and gaps["count_list"]["questions"] == len(listing)
    for name, g in gaps.items():
        by_row = {}
        for p in rephrased["predictions"]:
            by_row.setdefault(p["row"], []).append(p["scores"][name])
        expected = sum(sum(v) / len(v) - result["per_row"][i][name] for i, v in by_row.items()) / len(by_row)
        assert g["gap"] == pytest.approx(expected) and g["low"] <= g["gap"] <= g["high"]
    assert "id='rephrased'" in (run / "report" / "report.html").read_text()

    # two runs: the change in the gap, here of a run against its own copy: exactly zero
    twin = tmp_path / "twin"
    shutil.copytree(run, twin)
    proc = run_cli("compare", run, twin, "--out", tmp_path / "both")
    assert proc.returncode == 0, proc.stderr[-3000:]
    change = json.loads((tmp_path / "both" / "report.json").read_text())["rephrase"]["change"]
    assert {c["name"] for c in change} == {"count_list", "exact_match"}
    assert all(c["change"] == c["low"] == c["high"] == 0.0 for c in change)


def test_augment_writes_originals_then_rephrasings_and_never_overwrites(tiny_model_dir, demo_data_dir, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, tmp_path / "run",
                       rephrase={"templates": str(rules), "k": 1})
    out = tmp_path / "augmented.jsonl"
    proc = run_cli("data", "augment", cfg, "--rephrase", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    train = [json.loads(line) for line in (Path(demo_data_dir) / "train.jsonl").read_text().splitlines()]
    listing = [r for r in train if r["messages"][0]["content"].startswith("List ")]
    assert len(rows) == len(train) + len(listing)
    extra = rows[len(train):]
    assert [r["messages"][-1] for r in extra] == [r["messages"][-1] for r in listing]  # answers copied
    assert all(r["messages"][0]["content"].startswith("Can you list ") for r in extra)

    before = out.read_text()
    proc = run_cli("data", "augment", cfg, "--rephrase", "--out", out)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr and out.read_text() == before
    proc = run_cli("data", "augment", cfg, "--out", out)  # --rephrase is the augmentation: it must be asked for
    assert proc.returncode == 2


def test_model_rephraser_rejects_bad_candidates_and_caches_good_ones(tiny_model_dir, tiny_tokenizer, tmp_path):
    """The tiny random model writes gibberish: every candidate fails the checks and nothing is cached; a cached
    answer is used without asking the model again."""
    import torch
    from transformers import AutoModelForCausalLM

    from weitiao.data.templates import resolve_template

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    template = resolve_template(tiny_tokenizer, "auto")
    cache = tmp_path / "cache.jsonl"
    logged = []
    rephraser = ModelRephraser(model, tiny_tokenizer, template, "tiny", "Rephrase: {question}", cache,
                               max_new_tokens=8, tries=2)
    out = rephraser.rephrase_all(["List 4 trees.", "List 7 birds."], k=2, log=logged.append)
    assert all(len(v) <= 2 for v in out.values())
    for q, kept in out.items():  # whatever was kept passed every check
        assert all(problems(q, c, kept[:i]) == [] for i, c in enumerate(kept))
    assert any("rejected by the checks" in line for line in logged)
    cache.write_text(json.dumps({"key": rephraser.key("List 4 trees."), "rephrasings": ["Name 4 trees.",
                                                                                         "Give me 4 trees."]}) + "\n")
    again = ModelRephraser(model, tiny_tokenizer, template, "tiny", "Rephrase: {question}", cache, max_new_tokens=8)
    logged.clear()
    assert again.rephrase_all(["List 4 trees."], k=2, log=logged.append) == {
        "List 4 trees.": ["Name 4 trees.", "Give me 4 trees."]}
    assert not any("asking" in line for line in logged)  # answered from the cache


def test_rephrase_config_problems_are_reported(tiny_model_dir, demo_data_dir, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, tmp_path / "run",
                       rephrase={"templates": "x.yaml", "model": "base", "k": 0, "prompt": "no slot"})
    proc = run_cli("validate", cfg)
    assert proc.returncode == 2
    for text in ("rephrase: set templates or model, not both", "rephrase.k: must be at least 1",
                 "rephrase.prompt: must contain {question}"):
        assert text in proc.stderr


def test_training_with_eval_rephrase_writes_rephrased_results_into_the_run_and_report(tiny_model_dir, demo_data_dir,
                                                                                     tmp_path):
    from weitiao.config import load_config
    from weitiao.workflows import sft

    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, tmp_path / "run",
                       eval={"metrics": ["count_list"], "rephrase": True, "generation": {"max_new_tokens": 8}},
                       rephrase={"templates": str(rules), "k": 2})
    out = sft.run(load_config(cfg)).out_dir
    rephrasings = json.loads((out / "rephrasings.json").read_text())
    listing = [q for q in rephrasings if q.startswith("List ")]
    assert listing and all(len(rephrasings[q]) == 2 for q in listing)
    assert all(rephrasings[q] == [] for q in rephrasings if not q.startswith("List "))
    rephrased = json.loads((out / "rephrased.json").read_text())["rephrased"]
    assert rephrased["rows"] == 2 * len(listing)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rephrased"]["metrics"] == rephrased["metrics"]
    section = json.loads((out / "report" / "report.json").read_text())["rephrase"]
    assert [g["name"] for g in section["models"]["tuned"]] == ["count_list"]


def test_a_missing_rules_file_stops_training_before_anything_is_written(tiny_model_dir, demo_data_dir, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, tmp_path / "run",
                       eval={"rephrase": True}, rephrase={"templates": str(tmp_path / "nope.yaml")})
    proc = run_cli("train", cfg)
    assert proc.returncode == 2 and "nope.yaml does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()
