"""Hostile archives: bombs refused by their compression ratio (declared and real bytes), and entry
names the filesystem cannot hold reported as ``DataError`` naming the entry, never the server's path."""

import io
import tarfile
import zipfile

import pytest

from edgetune.errors import DataError
from edgetune.trainers.data.archives import MAX_RATIO, RATIO_FLOOR_BYTES, extract_archive

CHUNK = b"\0" * (1 << 20)


class _Zeros(io.RawIOBase):
    """``n`` zero bytes, read in chunks: a bomb's payload is never held in memory."""

    def __init__(self, n: int):
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        k = min(len(b), self.left)
        b[:k] = bytes(k)
        self.left -= k
        return k


def _zip_bomb(path, mib: int):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a/ok.png", b"x")
        with zf.open("a/zeros.png", "w") as f:
            for _ in range(mib):
                f.write(CHUNK)
    return path


def _tar_gz(path, members: list[tuple[tarfile.TarInfo, int]]):
    with tarfile.open(path, "w:gz") as tf:
        for info, n in members:
            info.size = n
            tf.addfile(info, _Zeros(n))
    return path


def _files(root) -> list:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_a_zip_bomb_is_refused_from_its_headers_before_anything_is_written(tmp_path):
    bomb = _zip_bomb(tmp_path / "bomb.zip", 80)  # 80 MiB of zeros in about 80 KB
    assert bomb.stat().st_size * MAX_RATIO < 80 << 20 and 80 << 20 > RATIO_FLOOR_BYTES
    with pytest.raises(DataError, match=f"compression ratio exceeds {MAX_RATIO}:1") as e:
        extract_archive(bomb, tmp_path / "out")
    assert not _files(tmp_path / "out") and str(tmp_path / "out") not in e.value.message


def test_the_ratio_applies_only_above_its_floor(tmp_path):
    small = _zip_bomb(tmp_path / "small.zip", 2)  # ratio about 1000:1, but only 2 MiB
    assert len(_files(extract_archive(small, tmp_path / "out"))) == 2
    with pytest.raises(DataError, match="compression ratio exceeds 200:1"):
        extract_archive(small, tmp_path / "out2", max_ratio=200, ratio_floor_bytes=1 << 20)
    assert len(_files(extract_archive(small, tmp_path / "out3", max_ratio=5000, ratio_floor_bytes=1 << 20))) == 2


def test_a_tar_gz_bomb_stops_decompressing_at_the_ratio(tmp_path):
    bomb = _tar_gz(tmp_path / "bomb.tar.gz", [(tarfile.TarInfo("a/zeros.png"), 16 << 20)])
    with pytest.raises(DataError, match="compression ratio exceeds 50:1"):
        extract_archive(bomb, tmp_path / "out", max_ratio=50, ratio_floor_bytes=1 << 20)
    assert not _files(tmp_path / "out")


def test_a_tar_gz_pax_header_bomb_is_counted(tmp_path):
    """Member sizes do not count a pax header's bytes; tarfile reads one whole into memory."""
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type = tarfile.XHDTYPE
    bomb = _tar_gz(tmp_path / "pax.tar.gz", [(pax, 1 << 20), (tarfile.TarInfo("a/ok.png"), 10),
                                              (tarfile.TarInfo("b/ok.png"), 10)])
    with pytest.raises(DataError, match="compression ratio exceeds 50:1"):
        extract_archive(bomb, tmp_path / "out", max_ratio=50, ratio_floor_bytes=1 << 18)
    assert not _files(tmp_path / "out")


def test_a_pax_header_too_large_to_read_whole_is_refused_within_the_ratio(tmp_path):
    """With a generous ratio (a large archive) a forged pax header could still ask tarfile to read
    gigabytes into memory in one call: one read is bounded on its own."""
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type = tarfile.XHDTYPE
    bomb = _tar_gz(tmp_path / "pax.tar.gz", [(pax, 16 << 20), (tarfile.TarInfo("a/ok.png"), 10)])
    with pytest.raises(DataError, match="a forged header"):
        extract_archive(bomb, tmp_path / "out", max_ratio=None)
    assert not _files(tmp_path / "out")


def test_a_tar_gz_with_total_member_sizes_over_the_ratio_is_refused_before_extraction(tmp_path):
    members = [(tarfile.TarInfo(f"a/{i}.png"), 1 << 20) for i in range(4)]
    archive = _tar_gz(tmp_path / "many.tar.gz", members)
    with pytest.raises(DataError, match="compression ratio exceeds 20:1"):
        extract_archive(archive, tmp_path / "out", max_ratio=20, ratio_floor_bytes=1 << 19)
    assert not _files(tmp_path / "out")
    with pytest.raises(DataError, match="uncompressed size exceeds"):
        extract_archive(archive, tmp_path / "out", max_total_bytes=3 << 20)
    assert len(_files(extract_archive(archive, tmp_path / "out"))) == 4


def test_a_nul_in_a_tar_member_name_is_a_data_error_naming_the_entry(tmp_path):
    info = tarfile.TarInfo("a/b.png")
    info.pax_headers = {"path": "a/b\0c.png"}
    archive = _tar_gz(tmp_path / "nul.tar.gz", [(info, 3)])
    with pytest.raises(DataError) as e:
        extract_archive(archive, tmp_path / "out")
    assert "'a/b\\x00c.png'" in e.value.message and str(tmp_path) not in e.value.message


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_a_name_too_long_for_the_filesystem_names_the_entry_not_the_server_path(tmp_path, fmt):
    name = "cls/" + "x" * 300 + ".png"
    archive = tmp_path / f"long.{fmt}"
    if fmt == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr(name, b"x")
    else:
        _tar_gz(archive, [(tarfile.TarInfo(name), 1)])
    with pytest.raises(DataError) as e:
        extract_archive(archive, tmp_path / "out")
    msg = e.value.message
    assert "'cls/xxxx" in msg and "File name too long" in msg and str(tmp_path) not in msg and len(msg) < 200
