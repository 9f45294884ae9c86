"""Bounds on labels (count and length) for text and image datasets, and folders named like archives."""

import json

import pytest

from edgetune.errors import DataError
from edgetune.trainers.data.images import load_image_data
from edgetune.trainers.data.limits import MAX_CLASSES, MAX_LABEL_CHARS
from edgetune.trainers.data.texts import load_text_data
from tests.conftest import write_pattern_folder

CLS = "text_classification"


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _images(path, **kw):
    return load_image_data(str(path), None, 16, 0.25, skip_corrupt=False, seed=0, cache="off", **kw)


def test_text_labels_longer_than_the_limit_are_refused(tmp_path):
    assert MAX_LABEL_CHARS == 128
    long = "L" * 1000
    rows = [{"text": f"message {i}", "label": long if i == 7 else "ab"[i % 2]} for i in range(20)]
    with pytest.raises(DataError) as e:
        load_text_data(_jsonl(tmp_path / "d.jsonl", rows), None, CLS, 0.2, False, 0)
    assert e.value.subject == "data.path"
    assert e.value.message == f"d.jsonl row 8: label {'L' * 40!r}... is longer than 128 characters"
    rows[7]["label"] = "L" * 128
    load_text_data(_jsonl(tmp_path / "ok.jsonl", rows), None, CLS, 0.2, False, 0)
    gen = [{"prompt": f"p{i}", "response": long} for i in range(10)]
    load_text_data(_jsonl(tmp_path / "g.jsonl", gen), None, "text_generation", 0.2, False, 0)


def test_text_classes_beyond_the_limit_are_refused(tmp_path):
    assert MAX_CLASSES == 10_000
    rows = [{"text": f"message {i}", "label": f"c{i}"} for i in range(MAX_CLASSES + 1)]
    with pytest.raises(DataError, match="10001 distinct labels, more than 10000"):
        load_text_data(_jsonl(tmp_path / "d.jsonl", rows), None, CLS, 0.2, False, 0)
    rows = [{"text": f"message {i}", "label": f"c{i % 4}"} for i in range(20)]
    with pytest.raises(DataError, match="4 distinct labels, more than 3"):
        load_text_data(_jsonl(tmp_path / "s.jsonl", rows), None, CLS, 0.2, False, 0, max_classes=3)
    with pytest.raises(DataError, match="longer than 1 characters"):
        load_text_data(_jsonl(tmp_path / "s.jsonl", rows), None, CLS, 0.2, False, 0, max_label_chars=1)


def test_image_class_folders_are_bounded(tmp_path):
    long = "c" * 200
    root = write_pattern_folder(tmp_path / "long", classes=("a", long), per_class=4, size=8)
    with pytest.raises(DataError) as e:
        _images(root)
    assert e.value.subject == "data.path"
    assert e.value.message == f"class folder {'c' * 40!r}... is longer than 128 characters"
    root = write_pattern_folder(tmp_path / "many", classes=("a", "b", "c"), per_class=4, size=8)
    with pytest.raises(DataError, match="3 class folders, more than 2"):
        _images(root, max_classes=2)
    manifest = root / "m.csv"
    manifest.write_text("path,label\n" + "".join(f"{c}/{c}_{i}.png,{c * 130}\n" for c in "abc" for i in range(4)))
    with pytest.raises(DataError, match=r"m.csv line 2: label 'a+'\.\.\. is longer than 128"):
        _images(manifest)


@pytest.mark.parametrize("name", ["d.zip", "d.tar.gz", "d.tgz"])
def test_a_folder_named_like_an_archive_is_a_folder(tmp_path, name):
    root = write_pattern_folder(tmp_path / name, classes=("a", "b"), per_class=4, size=8)
    _, _, report = _images(root)
    assert report.classes == ["a", "b"]
