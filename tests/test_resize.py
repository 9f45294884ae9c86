"""The resize written down in docs/bundle-format.md: each pass is Pillow's antialiased bilinear
filter bit for bit, the order of the passes is fixed, and equal sizes copy."""

import numpy as np
import pytest
from PIL import Image

from edgetune.runtime.imaging import _resample_axis, resize_hwc, resize_uint8


@pytest.mark.parametrize("seed", range(4))
def test_each_pass_is_pillows_bilinear_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    for _ in range(25):
        n, out, other = int(rng.integers(1, 300)), int(rng.integers(1, 300)), int(rng.integers(1, 12))
        wide = rng.integers(0, 256, (other, n, 3), dtype=np.uint8)
        pillow = np.asarray(Image.fromarray(wide).resize((out, other), Image.Resampling.BILINEAR, reducing_gap=None))
        assert np.array_equal(_resample_axis(wide, out, 1), pillow), (n, out)
        tall = np.ascontiguousarray(wide.transpose(1, 0, 2))
        pillow = np.asarray(Image.fromarray(tall).resize((other, out), Image.Resampling.BILINEAR, reducing_gap=None))
        assert np.array_equal(_resample_axis(tall, out, 0), pillow), (n, out)


def test_horizontal_then_vertical_and_equal_sizes_copy():
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (45, 71, 3), dtype=np.uint8)
    assert np.array_equal(resize_hwc(img, 32), _resample_axis(_resample_axis(img, 32, 1), 32, 0))
    assert not np.array_equal(resize_hwc(img, 32), _resample_axis(_resample_axis(img, 32, 0), 32, 1))
    square = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    assert np.array_equal(resize_hwc(square, 24), square)
    assert np.array_equal(resize_uint8(Image.fromarray(img), 32), resize_hwc(img, 32))
    assert resize_hwc(img, 32).dtype == np.uint8 and resize_hwc(img, 1).shape == (1, 1, 3)
