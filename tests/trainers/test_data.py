import csv
import io
import os
import shutil
import tarfile
import zipfile

import numpy as np
import pytest

from edgetune.errors import DataError
from edgetune.trainers.data.archives import extract_archive
from edgetune.trainers.data.images import load_image_data
from tests.conftest import write_pattern_folder


def _load(path, **kw):
    args = dict(val_path=None, image_size=16, val_fraction=0.25, skip_corrupt=False, seed=0)
    args.update(kw)
    return load_image_data(str(path), **args)


def test_stratified_split_keeps_every_class_on_both_sides(pattern_folder):
    train, val, report = _load(pattern_folder)
    assert report.classes == ["a", "b", "c"] and report.split == "stratified"
    assert report.train_per_class == {"a": 9, "b": 9, "c": 9}
    assert report.val_per_class == {"a": 3, "b": 3, "c": 3}
    pixels = train.read(range(len(train)))
    assert pixels.shape == (27, 16, 16, 3) and pixels.dtype == np.uint8
    assert not set(train.paths) & set(val.paths)
    assert not report.leakage and not report.duplicate_groups and not report.invalid


def test_split_is_deterministic_per_seed(pattern_folder):
    assert _load(pattern_folder)[1].paths == _load(pattern_folder)[1].paths
    assert _load(pattern_folder)[1].paths != _load(pattern_folder, seed=1)[1].paths


def test_corrupt_images_are_named_and_fail_the_run(pattern_folder):
    (pattern_folder / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    good = (pattern_folder / "b" / "b_0.png").read_bytes()
    (pattern_folder / "b" / "truncated.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError) as e:
        _load(pattern_folder)
    assert sorted(os.path.basename(f) for f in e.value.files) == ["broken.png", "truncated.png"]
    assert "broken.png" in e.value.message and "--skip-corrupt" in e.value.message

    train, val, report = _load(pattern_folder, skip_corrupt=True)
    assert len(report.invalid) == 2 and report.skipped_invalid
    assert len(train.paths) + len(val.paths) == 36


def test_empty_class_folder_and_single_class_are_errors(tmp_path):
    root = write_pattern_folder(tmp_path / "d", classes=("a", "b"))
    (root / "empty").mkdir()
    with pytest.raises(DataError) as e:
        _load(root)
    assert e.value.subject.endswith("empty")
    one = write_pattern_folder(tmp_path / "one", classes=("only",))
    with pytest.raises(DataError) as e:
        _load(one)
    assert "at least 2 classes" in e.value.message


@pytest.mark.parametrize("seed", range(6))
def test_duplicates_stay_together_and_leakage_is_reported(tmp_path, seed):
    root = write_pattern_folder(tmp_path / "d")
    for i in range(4):  # four copies of one image: a duplicate group
        shutil.copy(root / "a" / "a_0.png", root / "a" / f"copy_{i}.png")
    for c in ("b", "c"):  # the same image filed under all three labels
        shutil.copy(root / "a" / "a_5.png", root / c / "cross_label.png")
    shutil.copy(root / "b" / "b_1.png", root / "c" / "mislabelled.png")
    train, val, report = _load(root, seed=seed)
    assert not report.leakage  # the automatic split never separates identical files
    groups = [sorted(os.path.basename(p) for p in g) for g in report.duplicate_groups]
    assert ["a_0.png", "copy_0.png", "copy_1.png", "copy_2.png", "copy_3.png"] in groups
    assert any("mislabelled.png" in " ".join(g) for g in report.conflicting_labels)

    # With an explicit validation set, shared files are leakage.
    val_root = tmp_path / "val"
    for c in ("a", "b", "c"):
        (val_root / c).mkdir(parents=True)
        shutil.copy(root / c / f"{c}_2.png", val_root / c / "v.png")
    _, _, report = _load(root, val_path=str(val_root), seed=seed)
    assert report.split == "given" and len(report.leakage) == 3
    assert any("also occur in the training data" in w for w in report.warnings)


def test_train_val_folders_are_used_as_given(tmp_path):
    write_pattern_folder(tmp_path / "ds" / "train", per_class=6)
    write_pattern_folder(tmp_path / "ds" / "val", per_class=2, seed=1)
    train, val, report = _load(tmp_path / "ds")
    assert report.split == "given" and len(train.paths) == 18 and len(val.paths) == 6


def test_csv_manifest_with_relative_paths(pattern_folder):
    manifest = pattern_folder / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        for p in sorted(pattern_folder.glob("*/*.png")):
            w.writerow([p.relative_to(pattern_folder), "cat" if p.parent.name == "a" else "dog"])
    _, _, report = _load(manifest)
    assert report.classes == ["cat", "dog"]
    assert report.train_per_class["cat"] + report.val_per_class["cat"] == 12


@pytest.mark.parametrize("fmt", ["zip", "gztar"])
def test_archives_of_an_image_folder(pattern_folder, tmp_path, fmt):
    archive = shutil.make_archive(str(tmp_path / "ds"), fmt, root_dir=pattern_folder.parent, base_dir="patterns")
    _, _, report = _load(archive)
    assert report.classes == ["a", "b", "c"]


def test_archive_entries_escaping_the_target_are_refused(tmp_path):
    evil_zip = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil_zip, "w") as z:
        z.writestr("a/ok.png", b"x")
        z.writestr("../escape.png", b"x")
    with pytest.raises(DataError) as e:
        extract_archive(evil_zip, tmp_path / "out")
    assert "unsafe entry" in e.value.message and not (tmp_path / "escape.png").exists()

    evil_tar = tmp_path / "evil.tar.gz"
    with tarfile.open(evil_tar, "w:gz") as t:
        info = tarfile.TarInfo("a/link.png")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        t.addfile(info)
    with pytest.raises(DataError) as e:
        extract_archive(evil_tar, tmp_path / "out2")
    assert "link" in e.value.message

    abs_tar = tmp_path / "abs.tar"
    with tarfile.open(abs_tar, "w") as t:
        info = tarfile.TarInfo("/tmp/abs.png")
        info.size = 1
        t.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(DataError):
        extract_archive(abs_tar, tmp_path / "out3")


def test_archive_size_and_count_bounds(tmp_path):
    z = tmp_path / "many.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for i in range(5):
            zf.writestr(f"a/{i}.png", b"0" * 100)
    with pytest.raises(DataError, match="more than 3 entries"):
        extract_archive(z, tmp_path / "o1", max_entries=3)
    with pytest.raises(DataError, match="uncompressed size"):
        extract_archive(z, tmp_path / "o2", max_total_bytes=200)


def test_missing_dataset_path():
    with pytest.raises(DataError) as e:
        _load("/nonexistent/data")
    assert e.value.subject == "/nonexistent/data"
