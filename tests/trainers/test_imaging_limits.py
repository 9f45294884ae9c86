"""The pixel budget and byte limit of image decoding: refused from the header, before any pixel is
decoded, for inference (``images[i]`` named) and for training's decode pass (an unusable file)."""

import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from edgetune.errors import DataError, InvalidArgument
from edgetune.runtime.image import ImagePredictor
from edgetune.runtime.imaging import MAX_IMAGE_BYTES, MAX_PIXELS, ImageTooLarge, Preprocessing, decode_rgb, load_rgb
from edgetune.trainers.data.images import load_image_data
from tests.conftest import write_pattern_folder

# Pillow warns of 13000x13000 (over its own 89M-pixel limit) before the budget refuses it.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def big_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG: ``width * height`` pixels in a few KB, written without Pillow."""
    z = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def huge() -> bytes:
    return big_png(13000, 13000)


def test_an_image_over_the_pixel_budget_is_refused_from_its_header(huge, tmp_path):
    assert MAX_PIXELS == 40_000_000 and len(huge) < 1 << 20
    with pytest.raises(ImageTooLarge, match="13000x13000 pixels exceeds the 40000000-pixel budget"):
        decode_rgb(huge)
    (tmp_path / "huge.png").write_bytes(huge)
    with pytest.raises(ValueError, match="13000x13000 pixels"):
        load_rgb(tmp_path / "huge.png")


def test_the_budget_and_byte_limit_are_keywords(tmp_path):
    data = big_png(100, 100)
    (tmp_path / "p.png").write_bytes(data)
    assert decode_rgb(data, max_pixels=10_000).size == (100, 100)
    with pytest.raises(ImageTooLarge, match="100x100 pixels exceeds the 9999-pixel budget"):
        load_rgb(tmp_path / "p.png", max_pixels=9_999)
    assert MAX_IMAGE_BYTES == 64 * 1024**2
    n = len(data)
    assert load_rgb(tmp_path / "p.png", max_bytes=n).size == (100, 100)
    with pytest.raises(ImageTooLarge, match=f"{n} bytes exceeds the {n - 1}-byte limit"):
        decode_rgb(data, max_bytes=n - 1)
    with pytest.raises(ImageTooLarge, match=f"{n} bytes exceeds the {n - 1}-byte limit"):
        load_rgb(tmp_path / "p.png", max_bytes=n - 1)


def test_pillows_own_bomb_check_neither_bypasses_nor_replaces_the_budget(huge, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(ImageTooLarge, match="13000x13000"):
        decode_rgb(huge)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageTooLarge):  # Pillow's DecompressionBombError, as the same error
        decode_rgb(big_png(100, 100))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageTooLarge):  # Pillow's DecompressionBombWarning raised as an error
            decode_rgb(big_png(40, 40))


def test_predict_encoded_names_the_image_over_budget(huge):
    predictor = ImagePredictor.__new__(ImagePredictor)  # the error comes before the model runs
    predictor.preprocessing = Preprocessing(8, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    with pytest.raises(InvalidArgument) as e:
        predictor.predict_encoded([huge])
    assert e.value.subject == "images[0]"
    assert e.value.message == "13000x13000 pixels exceeds the 40000000-pixel budget"
    with pytest.raises(InvalidArgument, match="images\\[0\\]: 100x100 pixels exceeds the 50-pixel budget"):
        predictor.predict_encoded([big_png(100, 100)], max_pixels=50)


def test_training_marks_an_image_over_budget_as_unreadable(tmp_path):
    root = write_pattern_folder(tmp_path / "ds", classes=("a", "b"), per_class=6)
    (root / "a" / "big.png").write_bytes(big_png(6400, 6400))  # 41M pixels: just over the budget
    with pytest.raises(DataError, match="1 unreadable image") as e:
        load_image_data(str(root), None, 16, 0.25, skip_corrupt=False, seed=0, cache="off")
    assert e.value.files == [str(root / "a" / "big.png")]
    train, val, report = load_image_data(str(root), None, 16, 0.25, skip_corrupt=True, seed=0, cache="off")
    assert report.invalid == [str(root / "a" / "big.png")] and len(train) + len(val) == 12
    assert train.read([0]).shape == (1, 16, 16, 3) and np.all(np.isfinite(train.read([0])))
