"""Data at scale: the parallel, cached pass over image files; batches read lazily; batched
augmentation; the resumable batch order; memory that stays flat in the dataset size."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from edgetune.runtime.imaging import load_rgb, resize_uint8
from edgetune.trainers.config import load_config
from edgetune.trainers.data import images
from edgetune.trainers.data.augment import BatchAugment
from edgetune.trainers.data.images import load_image_data
from edgetune.trainers.data.sampling import EpochBatches, Share, share_of
from tests.conftest import write_pattern_folder

ROOT = Path(__file__).resolve().parents[2]


def _messy_folder(root: Path) -> Path:
    """Patterns plus a corrupt file, a duplicate with another label, and enough files for a pool."""
    write_pattern_folder(root, per_class=100, size=20)
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    shutil.copy(root / "a" / "a_0.png", root / "b" / "copy_of_a0.png")
    return root


def _report(path, cache_root, **kw):
    args = dict(val_path=None, image_size=16, val_fraction=0.25, skip_corrupt=True, seed=0, cache_root=cache_root)
    args.update(kw)
    return load_image_data(str(path), **args)


def test_the_parallel_pass_finds_what_one_process_finds_and_a_second_load_reads_the_index(tmp_path, monkeypatch):
    data = _messy_folder(tmp_path / "d")
    inline = _report(data, tmp_path / "c1", workers=1)
    monkeypatch.setattr(images, "PARALLEL_MIN_FILES", 16)
    parallel = _report(data, tmp_path / "c2", workers=2)
    assert parallel[2] == inline[2]
    assert parallel[0].hashes == inline[0].hashes and parallel[1].paths == inline[1].paths
    report = parallel[2]
    assert [Path(p).name for p in report.invalid] == ["broken.png"]
    assert any("copy_of_a0.png" in " ".join(g) for g in report.conflicting_labels + report.leakage)

    def no_pass(*a, **k):
        raise AssertionError("the files were read again")

    monkeypatch.setattr(images, "_run_pass", no_pass)
    again = _report(data, tmp_path / "c2", workers=2)
    assert again[2] == report  # from the cached index: the same report, no file read
    (data / "c" / "c_1.png").write_bytes((data / "c" / "c_2.png").read_bytes())  # content changed
    with pytest.raises(AssertionError, match="read again"):
        _report(data, tmp_path / "c2", workers=2)


def test_cached_pixels_equal_decoding_and_the_cache_can_be_off(tmp_path):
    data = write_pattern_folder(tmp_path / "d", size=30)
    cached, _, _ = _report(data, tmp_path / "c", image_size=24, cache="disk")
    off, _, _ = _report(data, tmp_path / "c", image_size=24, cache="off")
    assert cached.pixels_file and off.pixels_file is None
    idx = [5, 0, 17]
    want = np.stack([resize_uint8(load_rgb(cached.paths[i]), 24) for i in idx])
    assert np.array_equal(cached.read(idx), want) and np.array_equal(off.read(idx), want)


def test_an_archive_is_extracted_once_into_the_cache(tmp_path):
    write_pattern_folder(tmp_path / "d")
    archive = shutil.make_archive(str(tmp_path / "d"), "zip", tmp_path, "d")
    train, _, _ = _report(archive, tmp_path / "c")
    assert Path(train.paths[0]).is_relative_to(tmp_path / "c" / "extracted")
    again, _, _ = _report(archive, tmp_path / "c")
    assert again.paths == train.paths  # the same extraction: the index is reused
    assert len(list((tmp_path / "c" / "extracted").iterdir())) == 1


def test_batch_augmentation_is_seeded_and_keeps_images_in_range():
    x = torch.rand(6, 3, 20, 20)
    a = BatchAugment(torch.Generator().manual_seed(1), hflip=True)(x)
    b = BatchAugment(torch.Generator().manual_seed(1), hflip=True)(x)
    c = BatchAugment(torch.Generator().manual_seed(2), hflip=True)(x)
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    identity = BatchAugment(torch.Generator(), scale=(1.0, 1.0), ratio=(1.0, 1.0), brightness=0, contrast=0)
    torch.testing.assert_close(identity(x), x, atol=1e-5, rtol=0)


def test_epoch_batches_follow_random_sampler_order_and_resume_mid_epoch():
    g = torch.Generator().manual_seed(3)
    expected = torch.randperm(10, generator=torch.Generator().manual_seed(3)).tolist()
    batches = EpochBatches(10, 4, g)
    state = g.get_state()
    assert [i for b in batches for i in b] == expected and len(batches) == 3
    g.set_state(state)
    batches.start = 2  # a resume after two batches: the same order, only the last batch
    assert list(batches) == [expected[8:]]
    assert list(batches) != [expected[8:]]  # start applies once; the next epoch is a full new order
    assert [share_of(7, r, 2) for r in range(2)] == [Share(0, 4, 7), Share(4, 3, 7)]


def test_processes_split_every_global_batch_and_a_tiny_last_batch_is_folded():
    """Under DDP the ranks' shares of each global batch are disjoint, contiguous and cover it, in
    the order one process trains them. A last batch with fewer than two items per process joins
    the batch before it (BatchNorm cannot train on one value per channel); with fewer items than
    processes in all, a share is padded with the batch's first item, weighted zero (size 0)."""
    world, n, batch = 3, 11, 5  # a tail of 1 item: global batches of 5 and 6
    g = torch.Generator().manual_seed(4)
    state = g.get_state()
    single = list(EpochBatches(n, batch, g, 0, 1))
    assert [len(b) for b in single] == [5, 6]
    per_rank = []
    for r in range(world):
        g.set_state(state)
        per_rank.append(list(EpochBatches(n, batch, g, r, world)))
    for b, whole in enumerate(single):
        shares = [EpochBatches(n, batch, None, r, world).share(b) for r in range(world)]
        assert [i for r in range(world) for i in per_rank[r][b]] == whole
        assert sum(s.size for s in shares) == len(whole) and min(s.size for s in shares) >= 1
    assert [len(b) for b in EpochBatches(13, 5, None, 0, 1)] == [5, 5, 3]  # one process: a tail of 3 stays
    assert [len(b) for b in EpochBatches(16, 5, None, 0, 1)] == [5, 5, 6]  # a tail of 1 is folded
    tiny = [EpochBatches(2, 5, None, r, 3) for r in range(3)]
    assert [t.share(0).size for t in tiny] == [1, 1, 0] and [list(t) for t in tiny] == [[[0]], [[1]], [[0]]]



def _smooth_jpegs(root: Path, n: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / f"c{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size)).save(d / f"{i}.jpg", quality=85)


def _peak_rss_mb(tmp_path: Path, images: int, cache: str) -> float:
    """Peak RSS of a training process through its last step, on ``images`` JPEGs at 160 px (a fixed
    20-image val set)."""
    _smooth_jpegs(tmp_path / "train", images, 160)
    _smooth_jpegs(tmp_path / "val", 20, 160)
    cfg = load_config(overrides={
        "data.path": str(tmp_path / "train"), "data.val_path": str(tmp_path / "val"), "data.image_size": 160,
        "data.cache": cache, "model.arch": "mobilenetv3_large_100", "model.weights": "random",
        "method": "linear_probe", "optim.epochs": 1, "optim.batch_size": 16, "device": "cpu"})
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    out = subprocess.run([sys.executable, "-m", "tests.trainers.resume_driver", str(config), str(tmp_path / "run")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.split("peak_rss_kb")[1].split()[0]) / 1e3


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["auto", "off"])
def test_training_memory_is_flat_in_the_dataset_size(tmp_path, cache):
    """3,000 more images decode to 230 MB more pixels; the trainer's peak RSS grows by less than 100 MB
    (the peak varies by about +-50 MB from run to run; holding the pixels would add 230 MB or more)."""
    small = _peak_rss_mb(tmp_path / "small", 400, cache)
    large = _peak_rss_mb(tmp_path / "large", 3400, cache)
    assert 3000 * 160 * 160 * 3 / 1e6 > 230
    assert large - small < 100, (small, large)


def test_length_grouped_batches_pad_less_and_stay_shuffled():
    """Text batches (``lengths``): every example once per epoch, each run of 50 batches sorted longest
    first, so a batch holds rows of similar length; the order still changes every epoch."""
    from edgetune.trainers.data.sampling import MEGA_BATCHES

    rng = np.random.default_rng(0)
    lengths = rng.integers(4, 129, 2000).tolist()
    g = torch.Generator().manual_seed(0)
    grouped = EpochBatches(2000, 8, g, lengths=lengths)
    first, second = list(grouped), list(grouped)
    assert sorted(i for b in first for i in b) == list(range(2000)) and first != second
    run = [lengths[i] for b in first[:MEGA_BATCHES] for i in b]
    assert run == sorted(run, reverse=True)

    def padding(batches):  # token slots spent on padding when each batch pads to its longest row
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    plain = list(EpochBatches(2000, 8, torch.Generator().manual_seed(0)))
    assert padding(first) < padding(plain) / 10
