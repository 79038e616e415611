"""Rephrased questions: the checks, the rules file, `weitiao eval --rephrase` and `weitiao data augment`."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import yaml

from conftest import run_cli, write_config
from weitiao.data.formats import Example
from weitiao.errors import WeitiaoError
from weitiao.evaluation.rephrase import (
    Rephrasings, answer_values, load_rules, problems, rephrased_examples, rule_rephrasings, turn_parts,
    values_to_keep, with_question,
)
from weitiao.evaluation.rephraser import ModelRephraser, clean_answer

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
    assert problems(q, "Name some trees.", []) == ["loses a number: 4"]
    assert "a repeat" in problems(q, "Give me 4 trees!", ["give me 4 trees"])
    assert "more than one line" in problems(q, "Give me 4 trees.\nThanks", [])
    assert any(p.startswith("length: ") for p in problems(q, "4 " + "very " * 30 + "long trees", []))
    assert clean_answer('Rewritten request: "Could you name 4 trees?"\nSure!') == "Could you name 4 trees?"
    assert problems(q, "Can you list four trees for me?", []) == []  # a number may be written out
    assert problems("Name 42 birds.", "Name forty-two birds, please.", []) == []
    assert problems(q, "Can you list five trees for me?", []) == ["loses a number: 4", "adds a number: 5"]
    assert problems(q, "Can you list 4 trees for me?", [], seen={"can you list 4 trees for me"}) == [
        "seen in training"]


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
    found = Rephrasings("instruction", "rules", {}, {"List 4 trees.": ["Can you list 4 trees for me?", "Give me 4 trees."]})
    out = rephrased_examples([ex], found, k=1)
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


def test_model_rephraser_rejects_bad_candidates_and_caches_every_batch(tiny_model_dir, tiny_tokenizer, tmp_path):
    """The tiny random model writes gibberish: every candidate fails the checks, each batch's entries are appended
    to the cache with what was rejected, and a second rephraser answers from the cache alone, reporting the same
    rejections."""
    import torch
    from transformers import AutoModelForCausalLM

    from weitiao.data.templates import resolve_template

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    template = resolve_template(tiny_tokenizer, "auto")
    cache = tmp_path / "cache.jsonl"
    logged = []
    texts = {f"List {n} trees.": {"keep": [], "seen": frozenset()} for n in range(2, 12)}  # 10 texts: 2 batches
    rephraser = ModelRephraser(model, tiny_tokenizer, template, "tiny", "Rephrase: {question}", cache,
                               max_new_tokens=8, tries=2)
    out = rephraser.rephrase_all(texts, k=2, log=logged.append)
    assert set(out) == set(texts) and all(len(v) <= 2 for v in out.values())
    for q, kept in out.items():  # whatever was kept passed every check
        assert all(problems(q, c, kept[:i]) == [] for i, c in enumerate(kept))
    lines = [json.loads(line) for line in cache.read_text().splitlines()]
    assert len(lines) == 10 and all(line["asked"] == 2 for line in lines)
    assert sum(rephraser.rejected.values()) == sum(sum(line["rejected"].values()) for line in lines) > 0
    assert any("asking tiny for 2 rephrasings of 10 distinct text(s)" in line for line in logged)

    again = ModelRephraser(model, tiny_tokenizer, template, "tiny", "Rephrase: {question}", cache, max_new_tokens=8)
    logged.clear()
    assert again.rephrase_all(texts, k=2, log=logged.append) == out
    assert again.rejected == rephraser.rejected and not any("asking" in line for line in logged)

    # a line cut short by a kill is skipped, and the next append starts a line of its own
    cache.write_text(json.dumps({"key": again.key("List 4 trees."), "rephrasings": ["Name 4 trees.",
                                                                                  "Give me 4 trees."]}) + "\n{\"key\": ")
    third = ModelRephraser(model, tiny_tokenizer, template, "tiny", "Rephrase: {question}", cache, max_new_tokens=8,
                           tries=1)
    assert third.rephrase_all({"List 4 trees.": {}}, k=2, log=logged.append) == {
        "List 4 trees.": ["Name 4 trees.", "Give me 4 trees."]}
    third.rephrase_all({"List 9 birds.": {}}, k=1, log=logged.append)
    assert json.loads(cache.read_text().splitlines()[-1])["key"] == third.key("List 9 birds.")


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
    rephrasings = json.loads((out / "rephrasings.json").read_text())["by_text"]
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


# ---------------------------------------------------------------- faithful rephrasings (the extraction demo)

ZARA = Example(messages=(("user", "Extract the person's name, age, city and job as JSON.\n\nZara Nguyen, 21, works as "
                                  "a chef in Denver and has lived there for 3 years."),
                         ("assistant", '{"name": "Zara Nguyen", "age": 21, "city": "Denver", "job": "chef"}')),
               text=None, where="people.jsonl line 1")


def test_answer_values_are_what_the_reference_asserts():
    assert answer_values('{"name": "Zara Nguyen", "age": 21, "tags": ["a", {"x": "b"}], "ok": true}') == [
        "Zara Nguyen", "21", "a", "b"]
    assert answer_values('```json\n{"city": "Denver"}\n```') == ["Denver"]
    assert answer_values("1. Oak\n2. Pine") == ["Oak", "Pine"]
    assert answer_values("The capital is Paris, home to 2 million people.") == ["2", "Paris"]
    turn = ZARA.messages[0][1]
    assert values_to_keep(turn, [ZARA.messages[1][1]]) == ["Zara Nguyen", "21", "Denver", "chef"]
    assert values_to_keep("Extract the person's name, age, city and job as JSON.", [ZARA.messages[1][1]]) == []


def test_a_rewording_that_drops_a_name_is_rejected():
    turn, keep = ZARA.messages[0][1], ["Zara Nguyen", "21", "Denver", "chef"]
    faithful = ("Give me the JSON (name, age, city, job) for: Zara Nguyen, 21, who works as a chef in Denver and has "
                "lived there for 3 years.")
    assert problems(turn, faithful, [], keep=keep) == []
    # the corrupted rewordings: a name changed, facts dropped
    assert "loses an answer value: 'Zara Nguyen'" in problems(
        turn, 'Extract the JSON: Meet Zara A. "XA" Nguyen, 21, a chef in Denver, USA, for three years.', [], keep=keep)
    assert "loses an answer value: 'Zara Nguyen', 'Denver', 'chef'" in problems(
        turn, "Invisible: [Name], 21, a painter who'll be the surprise in 3 years.", [], keep=keep)
    # a number may change form, a name may change case and punctuation
    assert problems(turn, "JSON with name, age, city and job, please: zara nguyen (twenty-one) works as a CHEF in "
                          "denver; lived there 3 years.", [], keep=keep) == []


def test_the_instruction_is_reworded_and_the_data_kept():
    parts = turn_parts(ZARA.messages[0][1])
    assert parts.instruction == "Extract the person's name, age, city and job as JSON."
    assert parts.with_instruction("Return JSON.") == "Return JSON.\n\n" + ZARA.messages[0][1].split("\n\n", 1)[1]
    context_first = turn_parts("Zara Nguyen is a chef.\n\nShe lives in Denver.\n\nWhere does she live?")
    assert context_first.instruction == "Where does she live?"
    assert context_first.before == "Zara Nguyen is a chef.\n\nShe lives in Denver.\n\n" and context_first.after == ""
    assert turn_parts("List 4 trees.").instruction == "List 4 trees."
    assert turn_parts(ZARA.messages[0][1], "whole_turn").instruction == ZARA.messages[0][1]


def extraction_config(tmp_path, model_dir, rules_text: str, **rephrase):
    """A config over the person-extraction demo (alpaca rows), with rephrasing rules."""
    from weitiao.demo.person_extraction import build_splits
    from weitiao.demo import write_split_files

    data = tmp_path / "people"
    write_split_files(data, build_splits(0, {"train": 24, "val": 4, "test": 24}))
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text)
    cfg = write_config(tmp_path / "c.yaml", model_dir, data, tmp_path / "run", rephrase={"templates": str(rules),
                                                                                         "k": 2, **rephrase})
    text = yaml.safe_load(cfg.read_text())
    text["data"]["format"] = "alpaca"
    text["eval"]["metrics"] = ["exact_match", "json_fields"]
    cfg.write_text(yaml.safe_dump(text))
    return cfg, data


INSTRUCTION_RULES = """
- match: '^(?P<any>Extract|Read|Fill|Turn) .*$'
  rephrasings: ['Give me the JSON for this person: name, age, city, job.',
                'Describe the person in the paragraph below as JSON with name, age, city and job.']
"""
# whole turns: the first rewording keeps the paragraph, the second drops it (planted: loses every value)
WHOLE_TURN_RULES = """
- match: '^(?P<instruction>[^\\n]+)\\n\\n(?P<paragraph>.+)$'
  rephrasings: ['{paragraph} Give the name, age, city and job as JSON, please.',
                'Please produce the JSON for the person described earlier.']
"""


def test_augment_rewords_instructions_keeps_every_input_and_reports(tiny_model_dir, tmp_path):
    import yaml as _  # noqa: F401 - the config helper writes YAML

    cfg, data = extraction_config(tmp_path, tiny_model_dir, INSTRUCTION_RULES)
    out = tmp_path / "aug" / "train.jsonl"
    proc = run_cli("data", "augment", cfg, "--rephrase", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    train = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    extra = rows[len(train):]
    assert len(extra) == 2 * len(train)
    assert rows[:len(train)] == [{k: r[k] for k in ("instruction", "input", "output")} for r in train]
    for i, row in enumerate(extra):  # originals first, then k=2 copies of each, in order, still alpaca rows
        original = train[i // 2]
        assert row["input"] == original["input"] and row["instruction"] != original["instruction"]
        assert row["output"] == original["output"]
    report = json.loads((tmp_path / "aug" / "train.augment.json").read_text())
    assert report["rephrased"] == 48 and report["dropped_by_the_audit"] == 0
    assert report["coverage"]["with_all"] == 24 and report["coverage"]["texts"] <= 4  # 4 distinct instructions
    assert "rules_sha256" in report["source_id"]
    assert "24 of 24 question(s) got a faithful rephrasing" in proc.stdout


def test_whole_turn_rewordings_that_lose_the_data_are_rejected_and_counted(tiny_model_dir, tmp_path):
    cfg, data = extraction_config(tmp_path, tiny_model_dir, WHOLE_TURN_RULES, target="whole_turn")
    out = tmp_path / "aug.jsonl"
    proc = run_cli("data", "augment", cfg, "--rephrase", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "aug.augment.json").read_text())
    coverage = report["coverage"]
    # the planted one, once per row: it loses the values and the numbers (and is often too short too)
    assert coverage["rejected"]["loses an answer value"] == coverage["rejected"]["loses a number"] == 24
    assert set(coverage["rejected"]) <= {"loses an answer value", "loses a number", "length", "drops the topic",
                                         "drops a field", "loses a name"}
    assert coverage["with_rephrasing"] == 24 and coverage["with_all"] == 0 and report["rephrased"] == 24
    example = coverage["rejected_examples"][0]
    assert example["candidate"] == "Please produce the JSON for the person described earlier."
    assert any(p.startswith("loses an answer value: ") for p in example["problems"])
    assert "24 loses an answer value" in proc.stdout
    for row in [json.loads(line) for line in out.read_text().splitlines()][24:]:
        question = f"{row['instruction']}\n\n{row['input']}".lower()
        assert all(str(v).lower() in question for v in json.loads(row["output"]).values())


def test_eval_scores_faithful_rephrasings_only_and_shows_coverage(lora_run_dir, tmp_path):
    """On the count_list run: a planted rule that drops the number is rejected and counted, the gap is not
    measured over fewer than 20 questions, and the report shows the coverage and the rejected examples. The
    overrides come after --rephrase, as a user types them."""
    run = tmp_path / "run"
    shutil.copytree(lora_run_dir, run)
    rules = tmp_path / "rules.yaml"
    rules.write_text("- match: '^List (?P<n>\\d+) (?P<what>.+)\\.$'\n"
                     "  rephrasings: ['Can you list {n} {what} for me?', 'Name a few {what}.']\n")
    report = tmp_path / "eval.json"
    proc = run_cli("eval", run, "--rephrase", f"rephrase.templates={rules}", "--out", report, "rephrase.k=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rephrased = json.loads(report.read_text())["rephrased"]
    coverage = rephrased["coverage"]
    listing = sum(1 for p in json.loads(report.read_text())["predictions"]) and \
        [o for o in rephrased["original"] if o["question"].startswith("List ")]
    assert coverage["rejected"] == {"loses a number": len(listing)}
    assert coverage["with_rephrasing"] == len(listing) == rephrased["rows"] and coverage["with_all"] == 0
    assert all(p["question"].startswith("Can you list ") for p in rephrased["predictions"])
    assert f"rephrased: {len(listing)} of {coverage['questions']} questions got a faithful rephrasing" in proc.stdout
    assert "not measured" in proc.stdout  # the demo slice has fewer than 20 such questions
    page = (run / "report" / "report.html").read_text()
    assert "not measured" in page and "data-coverage='tuned'" in page and "Name a few" in page
    assert json.loads((run / "report" / "report.json").read_text())["rephrase"]["models"]["tuned"][0][
        "measured"] is False


def test_eval_refuses_the_rephraser_that_augmented_the_training_data(tiny_model_dir, tmp_path):
    cfg, _ = extraction_config(tmp_path, tiny_model_dir, INSTRUCTION_RULES)
    out = tmp_path / "aug.jsonl"
    assert run_cli("data", "augment", cfg, "--rephrase", "--out", out).returncode == 0
    proc = run_cli("eval", cfg, "--rephrase", f"data.train={out}")
    assert proc.returncode == 2, proc.stdout[-2000:]
    assert "was augmented by the same rephraser" in proc.stderr and "Traceback" not in proc.stderr


def test_augment_bad_input_gets_one_error_and_writes_nothing(tiny_model_dir, tmp_path):
    cfg, data = extraction_config(tmp_path, tiny_model_dir, INSTRUCTION_RULES)
    out = tmp_path / "aug.jsonl"
    # a row without an instruction
    rows = (data / "train.jsonl").read_text().splitlines()
    broken = json.loads(rows[3])
    del broken["instruction"]
    (data / "train.jsonl").write_text("\n".join(rows[:3] + [json.dumps(broken)] + rows[4:]) + "\n")
    proc = run_cli("data", "augment", cfg, "--rephrase", "--out", out)
    assert proc.returncode == 2 and "train.jsonl line 4: missing field 'instruction'" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists() and not out.with_suffix(".augment.json").exists()
    # a rephrasing model that cannot be loaded
    (data / "train.jsonl").write_text("\n".join(rows) + "\n")
    proc = run_cli("data", "augment", cfg, "--rephrase", "--out", out, "rephrase.templates=null",
                   f"rephrase.model={tmp_path / 'no-such-model'}")
    assert proc.returncode == 2 and "no-such-model" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() and not out.with_suffix(".augment.json").exists()


def test_a_model_right_on_every_faithful_rephrasing_gets_a_gap_interval_containing_zero(tmp_path):
    """The measurement itself, with the model replaced by an oracle that answers every question right: on the
    extraction demo, whole-turn rules that plant a fact-dropping rewording next to a faithful one. The planted ones
    are rejected, so the oracle's gap is 0 with an interval containing 0; scored as before (every candidate kept),
    the same oracle would be marked wrong wherever the question no longer states the answer."""
    from weitiao.config import load_config
    from weitiao.data.dataset import load_splits
    from weitiao.evaluation.metrics import score
    from weitiao.evaluation.rephraser import rephrasings_for
    from weitiao.evaluation.rephrase import last_question
    from weitiao.evaluation.report import rephrased_gaps

    cfg_path, _ = extraction_config(tmp_path, tmp_path / "no-model-needed", WHOLE_TURN_RULES, target="whole_turn")
    cfg = load_config(cfg_path)
    test = load_splits(cfg.data, cfg.base_dir).test
    found = rephrasings_for(cfg, test, log=lambda _: None)
    assert found.coverage(test, 2)["rejected"]["loses an answer value"] == len(test)

    def oracle(examples):  # the reference when the question states every answer value, else a wrong answer
        return [ex.messages[-1][1] if all(v.lower() in last_question(ex).lower()
                                          for v in map(str, json.loads(ex.messages[-1][1]).values())) else "{}"
                for ex in examples]

    rows = rephrased_examples(test, found, 2)
    _, original = score(["exact_match"], oracle(test), [ex.messages[-1][1] for ex in test])
    _, rephrased = score(["exact_match"], oracle(rows), [ex.messages[-1][1] for ex in rows])
    source = [i for i, ex in enumerate(test) for _ in found.turns(ex, 2)]
    result = {"original": [{"question": last_question(ex), "scores": s} for ex, s in zip(test, original)],
              "predictions": [{"row": i, "scores": s} for i, s in zip(source, rephrased)]}
    (gap,) = rephrased_gaps(result, samples=500)
    assert gap["measured"] and gap["questions"] == len(test) == 24
    assert gap["gap"] == 0.0 and gap["low"] <= 0.0 <= gap["high"]
    # the planted rewording, had it been scored, asks a question whose answer it no longer states
    planted = "Please produce the JSON for the person described earlier."
    assert oracle([with_question(test[0], planted, "planted")]) == ["{}"]
