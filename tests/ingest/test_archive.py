"""Archives: unsafe members are refused and reported, nothing lands outside the target."""

import io
import tarfile
import uuid
import zipfile
from pathlib import Path

import pandas as pd

from ctx_core.ingest.archive import extract_archive
from ctx_core.ingest.run import run_ingest
from tests.ingest.conftest import ingest_settings, jpeg_bytes, noise, tree_digest


def add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def add_special(tar: tarfile.TarFile, name: str, kind: bytes, linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    tar.addfile(info)


def make_evil_tar(path: Path, absolute: str) -> Path:
    good = jpeg_bytes(noise(90, 80, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        add_file(tar, "photos/good.jpg", good)
        add_file(tar, "photos/sub/also-good.jpg", jpeg_bytes(noise(90, 80, 2)))
        add_file(tar, "../evil.jpg", good)
        add_file(tar, "photos/../../evil2.jpg", good)
        add_file(tar, absolute, good)
        add_special(tar, "photos/passwd.jpg", tarfile.SYMTYPE, "/etc/passwd")
        add_special(tar, "photos/up.jpg", tarfile.SYMTYPE, "../../outside.jpg")
        add_special(tar, "photos/hard.jpg", tarfile.LNKTYPE, "../evil.jpg")
        add_special(tar, "photos/inner.jpg", tarfile.SYMTYPE, "good.jpg")  # stays inside: allowed
        add_special(tar, "photos/tty.jpg", tarfile.CHRTYPE)
        add_special(tar, "photos/pipe.jpg", tarfile.FIFOTYPE)
        add_file(tar, "photos/huge.png", b"\0" * 70_000)
    return path


def test_tar_with_unsafe_members_writes_only_inside_the_target(tmp_path):
    absolute = f"/tmp/ctx-ingest-test-{uuid.uuid4().hex}.jpg"
    archive = make_evil_tar(tmp_path / "in" / "evil.tar.gz", absolute)
    target = tmp_path / "work" / "target"
    target.mkdir(parents=True)
    refused = extract_archive(archive, target, "evil.tar.gz", max_bytes=60_000)

    assert not Path(absolute).exists()
    outside = {k for k in tree_digest(tmp_path) if not k.startswith("work/target")}
    assert outside == {"in", "in/evil.tar.gz", "work"}
    assert sorted(tree_digest(target)) == ["photos", "photos/good.jpg", "photos/inner.jpg", "photos/sub",
                                           "photos/sub/also-good.jpg"]
    reasons = {r.source: r.reason for r in refused}
    assert reasons == {
        "evil.tar.gz!/../evil.jpg": "unsafe archive member: path leaves the archive (..)",
        "evil.tar.gz!/photos/../../evil2.jpg": "unsafe archive member: path leaves the archive (..)",
        f"evil.tar.gz!/{absolute}": "unsafe archive member: absolute path",
        "evil.tar.gz!/photos/passwd.jpg": "unsafe archive member: link to an absolute path (/etc/passwd)",
        "evil.tar.gz!/photos/up.jpg": "unsafe archive member: link pointing outside the archive (../../outside.jpg)",
        "evil.tar.gz!/photos/hard.jpg": "unsafe archive member: link pointing outside the archive (../evil.jpg)",
        "evil.tar.gz!/photos/tty.jpg": "unsafe archive member: device file or FIFO",
        "evil.tar.gz!/photos/pipe.jpg": "unsafe archive member: device file or FIFO",
        "evil.tar.gz!/photos/huge.png": "archive member over the size limit (70000 > 60000 bytes)",
    }


def test_zip_with_unsafe_members(tmp_path):
    archive = tmp_path / "evil.zip"
    good = jpeg_bytes(noise(90, 80, 3))
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("pics/good.jpg", good)
        zf.writestr("../evil.jpg", good)
        zf.writestr("/abs/evil.jpg", good)
        zf.writestr("..\\win-evil.jpg", good)
        link = zipfile.ZipInfo("pics/link.jpg")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
        zf.writestr("pics/big.png", b"\0" * 70_000)
    target = tmp_path / "t"
    refused = extract_archive(archive, target, "evil.zip", max_bytes=60_000)
    assert sorted(tree_digest(tmp_path)) == ["evil.zip", "t", "t/pics", "t/pics/good.jpg"]
    kinds = {r.source: r.kind for r in refused}
    assert kinds == {
        "evil.zip!/../evil.jpg": "unsafe archive member",
        "evil.zip!//abs/evil.jpg": "unsafe archive member",
        "evil.zip!/..\\win-evil.jpg": "unsafe archive member",
        "evil.zip!/pics/link.jpg": "unsafe archive member",
        "evil.zip!/pics/big.png": "file over the size limit",
    }


def test_ingest_from_archive_reports_members_and_leaves_the_archive_alone(tmp_path):
    absolute = f"/tmp/ctx-ingest-test-{uuid.uuid4().hex}.jpg"
    archive = make_evil_tar(tmp_path / "in" / "evil.tgz", absolute)
    before = archive.read_bytes()
    result = run_ingest(ingest_settings(tmp_path, archive, max_file_bytes=60_000), progress=False)
    label = f"{archive}!/"
    assert sorted(result.ingested) == [label + "photos/good.jpg", label + "photos/sub/also-good.jpg"]
    kinds = {r.source[len(label):]: r.kind for r in result.quarantined}
    assert kinds["photos/inner.jpg"] == "duplicate"  # an inner link reads its target's bytes
    assert kinds["../evil.jpg"] == kinds[absolute] == "unsafe archive member"
    assert len(kinds) == 10
    assert archive.read_bytes() == before and not Path(absolute).exists()
    assert not (tmp_path / "in" / "evil.jpg").exists() and not (tmp_path / "evil.jpg").exists()


def test_truncated_archive_keeps_what_came_before_the_cut(tmp_path):
    full = tmp_path / "full.tar"
    with tarfile.open(full, "w") as tar:
        for k in range(4):
            add_file(tar, f"im{k}.png", _png(k))
    cut = tmp_path / "cut.tar"
    data = full.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    result = run_ingest(ingest_settings(tmp_path, cut), progress=False)
    assert 1 <= len(result.ingested) < 4
    assert any(r.source == str(cut) and "truncated or corrupt" in r.reason for r in result.quarantined)
    assert len(pd.read_parquet(result.store / "manifest.parquet")) == len(result.ingested)


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    noise(90, 80, seed).save(buf, "PNG")
    return buf.getvalue()
