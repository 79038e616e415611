"""`weitiao data check`: each bad-row kind with its line, duplicates, leakage; `--skip-bad-rows` in training."""
from __future__ import annotations

import json

from conftest import run_cli, write_config

GOOD = {"messages": [{"role": "user", "content": "List 2 fruits."},
                     {"role": "assistant", "content": "1. Apple\n2. Pear"}]}


def msgs(*turns):
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


BAD_LINES = {  # line number in the file -> (raw line, expected kind)
    2: ('{"messages": [{"role": "user", "content": "x"}', "unparsable"),
    3: (json.dumps({"messages": "hello"}), "wrong-type"),
    4: (json.dumps({"conversation": []}), "missing-field"),
    5: (json.dumps({"messages": []}), "wrong-type"),
    6: (json.dumps(msgs(("user", "Hi"), ("robot", "x"))), "unknown-role"),
    7: (json.dumps(msgs(("assistant", "x"), ("user", "Hi"))), "turn-order"),
    8: (json.dumps(msgs(("user", "Hi"), ("assistant", "  "))), "empty-turn"),
    9: (json.dumps(msgs(("user", "Hi"), ("assistant", " ".join(["word"] * 300)))), "over-long"),
    10: (b'{"messages": "\xff\xfe"}', "not-utf8"),
    11: (json.dumps({"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]}),
         "wrong-type"),
}


def write_bad_file(path):
    lines = [json.dumps(GOOD).encode()]
    for n in sorted(BAD_LINES):
        raw = BAD_LINES[n][0]
        lines.append(raw if isinstance(raw, bytes) else raw.encode())
    for i in range(12):
        lines.append(json.dumps(msgs(("user", f"List {i % 9 + 1} colors, batch {i}."),
                                     ("assistant", "1. Red"))).encode())
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_every_bad_row_kind_is_reported_with_its_line(tmp_path, tiny_model_dir, demo_data_dir):
    train = tmp_path / "train.jsonl"
    write_bad_file(train)
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, tmp_path / "run",
                       data={"train": str(train), "max_length": 128, "overlong": "drop"})
    report = tmp_path / "report.json"
    proc = run_cli("data", "check", cfg, "--out", report)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    saved = json.loads(report.read_text())
    found = {(b["where"], b["kind"]) for b in saved["bad_rows"]}
    # an over-long row is not a bad row: the configured policy (data.overlong: drop) drops it, and it is listed
    expected = {(f"{train} line {n}", kind) for n, (_, kind) in BAD_LINES.items() if kind != "over-long"}
    assert found == expected
    assert [b["where"] for b in saved["dropped_over_long"]] == [f"{train} line 9"]
    for n, (_, kind) in BAD_LINES.items():
        if kind != "over-long":
            assert f"{train} line {n}: [{kind}]" in proc.stdout
    assert f"{train} line 9: dropped by data.overlong (drop)" in proc.stdout
    assert "preview 1 (trained tokens in ⟦ ⟧)" in proc.stdout and "⟦1. Apple\n2. Pear<|im_end|>⟧" in proc.stdout
    assert not (tmp_path / "run").exists()


def test_skip_bad_rows_trains_on_the_rest_and_lists_them(tmp_path, tiny_model_dir, demo_data_dir):
    train = tmp_path / "train.jsonl"
    write_bad_file(train)
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, tmp_path / "run",
                       data={"train": str(train), "max_length": 128, "overlong": "drop"},
                       train={"max_steps": 2, "eval_steps": 2}, eval={"metrics": [], "compare_base": False})
    refused = run_cli("train", cfg)
    assert refused.returncode == 2 and f"{train} line 2" in refused.stderr and not (tmp_path / "run").exists()
    proc = run_cli("train", cfg, "--skip-bad-rows")
    assert proc.returncode == 0, proc.stderr[-2000:]
    skipped = [json.loads(line) for line in (tmp_path / "run" / "skipped_rows.jsonl").read_text().splitlines()]
    assert {(s["where"], s["kind"]) for s in skipped} == {(f"{train} line {n}", k) for n, (_, k) in BAD_LINES.items()}
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data"]["train_rows"] == 13  # the good row and the 12 filler rows


def test_planted_leak_and_duplicates_are_reported_with_rows(tmp_path, tiny_model_dir, demo_data_dir):
    train_rows = [json.loads(line) for line in (demo_data_dir / "train.jsonl").read_text().splitlines()]
    test_rows = [json.loads(line) for line in (demo_data_dir / "test.jsonl").read_text().splitlines()]
    planted, near_expected = [], 0
    for i, row in enumerate(test_rows[:8] + test_rows[:2]):  # 10 copies of test rows
        row = json.loads(json.dumps(row))
        if i % 2:  # small edits: case, punctuation and spacing of the question
            row["messages"][0]["content"] = row["messages"][0]["content"].upper().replace(".", " !")
        # a word more makes a row no longer equal after normalisation, only near; it is a small edit only in a
        # row of some length (a near-duplicate is >= 0.8 Jaccard similarity of character 5-grams)
        long_enough = sum(len(m["content"]) for m in row["messages"]) > 80
        if i % 2 and i < 8 and long_enough:
            row["messages"][0]["content"] += " please"
            near_expected += 1
        planted.append(row)
    rows = train_rows + planted
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, tmp_path / "run",
                       data={"train": str(train)})
    out = tmp_path / "report.json"
    proc = run_cli("data", "check", cfg, "--out", out)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    leaked_test_lines = {p["b"] for p in report["leakage"]["test"]["exact"] + report["leakage"]["test"]["near"]}
    assert leaked_test_lines == {f"{demo_data_dir / 'test.jsonl'} line {n}" for n in range(1, 9)}
    leak_train_lines = {p["a"] for p in report["leakage"]["test"]["exact"] + report["leakage"]["test"]["near"]}
    assert leak_train_lines <= {f"{train} line {n}" for n in range(len(train_rows) + 1, len(rows) + 1)}
    assert near_expected >= 1 and len(report["leakage"]["test"]["near"]) >= near_expected
    # planted row 9 repeats planted row 1 exactly: dropped as a duplicate
    dropped = {d["row"] for d in report["duplicates"]["dropped"]}
    assert dropped == {f"{train} line {len(train_rows) + 9}"}
    assert "leakage train -> test" in proc.stdout


def test_preference_rows_are_checked_as_pairs(tmp_path, tiny_model_dir, demo_data_dir):
    """For a preference task a rejected answer that is too long (or the same as the chosen one) is a bad row with
    its line, the lengths count the longer answer, and the preview shows the rejected answer."""
    rows = [{"prompt": "List 2 fruits.", "chosen": "1. Apple\n2. Pear", "rejected": "Apple"},
            {"prompt": "List 1 fruit.", "chosen": "1. Fig", "rejected": " ".join(["word"] * 300)},
            {"prompt": "List 1 tree.", "chosen": "1. Oak", "rejected": "1. Oak"}]
    train = tmp_path / "pairs.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, tmp_path / "run",
                       data={"format": "preference", "train": str(train), "val": [], "test": [], "max_length": 128,
                             "overlong": "drop"})
    cfg.write_text(cfg.read_text() + "task: dpo\n")
    report = tmp_path / "report.json"
    proc = run_cli("data", "check", cfg, "--out", report, "--preview", "1")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    found = {(b["where"], b["kind"]) for b in json.loads(report.read_text())["bad_rows"]}
    assert found == {(f"{train} line 3", "invalid")}
    assert [b["where"] for b in json.loads(report.read_text())["dropped_over_long"]] == [f"{train} line 2"]
    assert json.loads(report.read_text())["tokens"]["train"]["max"] > 128  # the rejected answer's length
    assert "⟦1. Apple\n2. Pear<|im_end|>⟧" in proc.stdout and "rejected answer: ⟦Apple<|im_end|>⟧" in proc.stdout


def test_data_check_and_validate_agree_on_every_row(tmp_path, tiny_model_dir, demo_data_dir):
    """One verdict and one message per row from both commands: a CSV without the `output` column is a bad row at
    each line, named the same way by both (data check used to say only "no usable training rows"); a row longer
    than max_length under the default policy (truncate) is counted by both and an error for neither."""
    csv_file = tmp_path / "no_output.csv"
    csv_file.write_text("instruction,answer\nList 2 fruits.,1. Apple\nList 1 tree.,1. Oak\n")
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, tmp_path / "run",
                       data={"format": "alpaca", "train": str(csv_file), "val": [], "test": []})
    checked, validated = run_cli("data", "check", cfg), run_cli("validate", cfg)
    for proc in (checked, validated):
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
    for line in (2, 3):
        message = f"{csv_file} line {line}: missing field 'output'"
        assert message in validated.stderr
        assert f"{csv_file} line {line}: [missing-field] missing field 'output'" in checked.stdout

    long_file = tmp_path / "long.jsonl"
    rows = [GOOD, msgs(("user", "List 1 color."), ("assistant", " ".join(["red"] * 300)))]
    long_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = write_config(tmp_path / "c2.yaml", tiny_model_dir, demo_data_dir, tmp_path / "run",
                       data={"train": str(long_file), "val": [], "test": [], "max_length": 64})
    checked, validated = run_cli("data", "check", cfg), run_cli("validate", cfg)
    assert checked.returncode == 0 and validated.returncode == 0, checked.stdout + validated.stderr
    assert "no bad rows" in checked.stdout and "valid: nothing was trained or written" in validated.stdout
    assert "1 over data.max_length 64 (truncate)" in checked.stdout and "truncated 1" in validated.stdout


def test_planted_chinese_leaks_are_flagged_and_unrelated_rows_are_not():
    """Chinese shingles are bigrams: a 2-character edit (由来 -> 来历) of a 20-character question with the same
    answer, and a row that differs only by a suffix such as （第7题）, are near-duplicates; a question on another
    festival with its own answer is not."""
    from weitiao.data.check import find_overlaps
    from weitiao.data.formats import Example

    def row(q, a, where):
        return Example(messages=(("user", q), ("assistant", a)), text=None, where=where)

    train = [row("请简要介绍一下端午节的由来和主要的传统习俗。", "端午节源于纪念屈原，习俗有赛龙舟、吃粽子。", "train.jsonl line 1"),
             row("请写出三种常见的水果并说明它们的营养价值。", "1. 苹果\n2. 香蕉\n3. 橙子", "train.jsonl line 2"),
             row("北京是中国的首都吗？", "是的。", "train.jsonl line 3")]
    test = [row("请简要介绍一下端午节的来历和主要的传统习俗。", "端午节源于纪念屈原，习俗有赛龙舟、吃粽子。", "test.jsonl line 1"),
            row("请写出三种常见的水果并说明它们的营养价值。（第7题）", "1. 苹果\n2. 香蕉\n3. 橙子", "test.jsonl line 2"),
            row("上海有多少人口？", "约两千四百万。", "test.jsonl line 3"),
            row("请简要介绍一下春节的由来和主要的传统习俗。", "春节源于年兽传说，习俗有贴春联、放鞭炮。", "test.jsonl line 4")]
    leaks = find_overlaps(train, test, 0.8)
    assert [(p.a, p.b) for p in leaks.near] == [("train.jsonl line 1", "test.jsonl line 1"),
                                                ("train.jsonl line 2", "test.jsonl line 2")]
    assert not leaks.exact
    duplicates = find_overlaps(train + test[1:2], None, 0.8)  # the suffixed copy inside one file
    assert [(p.a, p.b) for p in duplicates.near] == [("train.jsonl line 2", "test.jsonl line 2")]
