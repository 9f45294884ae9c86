"""The README's main command: the demo drives the whole path through a real local server."""

import pytest

from edgetune.errors import InvalidArgument
from edgetune.progress import silent
from edgetune.cli.demo import run_demo


@pytest.mark.slow
def test_demo_through_the_service(tmp_path):
    out = run_demo(tmp_path / "demo", silent, epochs=1, image_size=32)
    assert out["accuracy"] > 0.5  # one epoch at 32px; chance is 0.1
    assert out["parity"]["passed"] and out["parity"]["margin"] <= 1 and out["parity"]["top1_compared"] > 0
    assert (tmp_path / "demo" / "bundles").is_dir() and out["ort_ms"] > 0


def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "precious.txt").write_text("keep")
    with pytest.raises(InvalidArgument):
        run_demo(tmp_path, silent)
    assert (tmp_path / "precious.txt").read_text() == "keep"
