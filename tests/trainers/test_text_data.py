"""Text data: formats, the validation report, bad rows named by number, the split."""

import json

import pytest

from edgetune.errors import DataError
from edgetune.trainers.data.texts import TextFields, add_token_lengths, load_text_data

CLS = "text_classification"


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_csv_and_tsv_read_the_same_rows(tmp_path):
    rows = [{"text": f"message number {i}", "label": "ham" if i % 3 else "spam"} for i in range(30)]
    _jsonl(tmp_path / "d.jsonl", rows)
    (tmp_path / "d.csv").write_text("label,text\n" + "".join(f'{r["label"]},"{r["text"]}"\n' for r in rows))
    (tmp_path / "d.tsv").write_text("Label\tSMS\n" + "".join(f'{r["label"]}\t{r["text"]}\n' for r in rows))
    splits = []
    for name, fields in (("d.jsonl", TextFields()), ("d.csv", TextFields()), ("d.tsv", TextFields("SMS", "Label"))):
        train, val, report = load_text_data(str(tmp_path / name), None, CLS, 0.2, False, 0, fields)
        splits.append((sorted(train.inputs), sorted(val.inputs)))
        assert report.classes == ["ham", "spam"] and report.train_count + report.val_count == 30
        assert report.unit == "rows" and report.task == CLS
        assert set(val.targets) == {"ham", "spam"}  # stratified: both labels in val
    assert splits[0] == splits[1] == splits[2]


def test_invalid_rows_are_named_and_fail_unless_skipped(tmp_path):
    rows = [{"text": f"row {i}", "label": "a" if i % 2 else "b"} for i in range(20)]
    rows[3]["text"] = "   "
    del rows[7]["label"]
    path = _jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError) as e:
        load_text_data(str(path), None, CLS, 0.2, False, 0)
    assert e.value.subject == "data.path"
    assert "row 4: 'text' is empty" in e.value.message and "row 8: no 'label' field" in e.value.message
    train, val, report = load_text_data(str(path), None, CLS, 0.2, True, 0)
    assert len(train) + len(val) == 18 and len(report.invalid) == 2 and report.skipped_invalid


def test_malformed_json_and_missing_columns_name_the_problem(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok", "label": "a"}\n{not json\n')
    with pytest.raises(DataError, match="row 2: not valid JSON"):
        load_text_data(str(tmp_path / "bad.jsonl"), None, CLS, 0.2, False, 0)
    (tmp_path / "cols.csv").write_text("message,label\nhello,a\n")
    with pytest.raises(DataError, match=r"lacks column\(s\) \['text'\]"):
        load_text_data(str(tmp_path / "cols.csv"), None, CLS, 0.2, False, 0)
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DataError, match="must be one of"):
        load_text_data(str(tmp_path / "x.txt"), None, CLS, 0.2, False, 0)


def test_duplicates_conflicts_leakage_and_unknown_labels(tmp_path):
    train = [{"text": f"train text {i}", "label": "a" if i % 2 else "b"} for i in range(20)]
    train += [{"text": "Same Text", "label": "a"}, {"text": "same  text", "label": "b"}]
    val = [{"text": "train text 1", "label": "a"}, {"text": "fresh", "label": "b"}]
    t, v, report = load_text_data(str(_jsonl(tmp_path / "t.jsonl", train)), str(_jsonl(tmp_path / "v.jsonl", val)),
                                  CLS, 0.2, False, 0)
    assert report.split == "given" and report.duplicate_groups == [["t.jsonl row 21", "t.jsonl row 22"]]
    assert report.conflicting_labels == [["t.jsonl row 21 (a)", "t.jsonl row 22 (b)"]]
    assert report.leakage == [["v.jsonl row 1", "t.jsonl row 2"]] and any("also occur" in w for w in report.warnings)
    with pytest.raises(DataError) as e:
        load_text_data(str(tmp_path / "t.jsonl"), str(_jsonl(tmp_path / "v2.jsonl", [{"text": "x", "label": "zzz"}])),
                       CLS, 0.2, False, 0)
    assert e.value.subject == "data.val_path" and "zzz" in e.value.message


def test_identical_texts_stay_on_one_side_of_the_split(tmp_path):
    rows = [{"text": f"text {i % 10}", "label": "a" if i % 2 else "b"} for i in range(60)]
    train, val, report = load_text_data(str(_jsonl(tmp_path / "d.jsonl", rows)), None, CLS, 0.3, False, 0)
    assert not set(train.inputs) & set(val.inputs) and report.leakage == []
    assert len(report.duplicate_groups) == 10 and sum(len(g) - 1 for g in report.duplicate_groups) == 50


def test_generation_rows_and_token_lengths(tmp_path):
    rows = [{"prompt": f"say {i}", "response": f"ok {i}"} for i in range(10)] + [{"prompt": "x", "response": ""}]
    train, val, report = load_text_data(str(_jsonl(tmp_path / "g.jsonl", rows)), None, "text_generation", 0.2,
                                        True, 0)
    assert len(train) + len(val) == 10 and report.classes == [] and report.split == "random"
    assert report.invalid == ["g.jsonl row 11: 'response' is empty"]
    add_token_lengths(report, [5, 10, 200, 300], 128)
    assert report.token_lengths["truncated"] == 2 and report.token_lengths["max"] == 300
    assert any("exceed max_length 128" in w for w in report.warnings)


def test_line_breaks_inside_fields_are_kept(tmp_path):
    rows = [{"text": f"line one\nline two {i}", "label": "a" if i % 2 else "b"} for i in range(10)]
    rows.append({"text": "para\u2028sep", "label": "a"})
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    (tmp_path / "d.csv").write_text("text,label\n" + "".join(f'"{r["text"]}",{r["label"]}\n' for r in rows))
    for name in ("d.jsonl", "d.csv"):
        train, val, _ = load_text_data(str(tmp_path / name), None, CLS, 0.2, False, 0)
        assert sorted(train.inputs + val.inputs) == sorted(r["text"] for r in rows), name
    # TSV has no quoting: a text that starts with a quote mark is one row, kept as written (the SMS
    # Spam Collection has such rows; read as CSV-style quoting they swallowed the lines after them).
    texts = ['"Happy valentines day" I know its early', '"Pete can you please ring me', "plain"] * 4
    (tmp_path / "q.tsv").write_text("label\ttext\n" + "".join(f"{'ab'[i % 2]}\t{t}\n" for i, t in enumerate(texts)))
    train, val, _ = load_text_data(str(tmp_path / "q.tsv"), None, CLS, 0.2, False, 0)
    assert sorted(train.inputs + val.inputs) == sorted(texts)
    (tmp_path / "big.csv").write_text("text,label\n" + "x" * 200_000 + ",a\n")
    with pytest.raises(DataError, match="row 1: malformed CSV"):
        load_text_data(str(tmp_path / "big.csv"), None, CLS, 0.2, False, 0)
