"""An archive of many members, each under the per-file cap, that would fill the disk:
extraction stops at ``data.ingest.max_archive_bytes`` (or when the disk is full) with one
line naming the archive and the cap, removes what it extracted, keeps the previous store,
and the next run (with the cap raised) works. Sizes are tiny: the caps are set to match."""

import errno
import io
import tarfile
import tempfile
import zipfile

import pytest

from ctx_core.cli.main import main
from ctx_core.fsutil import dvc_dir_hash
from tests.ingest.conftest import ingest_settings, jpeg_bytes, noise

MEMBERS = 16


def members() -> dict[str, bytes]:
    return {f"photos/im{k:02d}.jpg": jpeg_bytes(noise(90, 80, k)) for k in range(MEMBERS)}


def write_archive(path, files: dict[str, bytes]):
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in files.items():
                zf.writestr(name, data)
    else:
        with tarfile.open(path, "w:gz") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """The temporary folder archives are extracted into, watched by the test."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def extracted(scratch) -> list:
    """Ingestion's temporary folders left in ``scratch`` (other libraries keep caches there too)."""
    return [p for p in scratch.iterdir() if p.name.startswith("ctx-ingest-")]


def ingest(tmp_path, archive, capsys, *overrides) -> tuple[int, str]:
    files = members()
    settings = ingest_settings(tmp_path, archive, max_file_bytes=max(map(len, files.values())))
    capsys.readouterr()
    code = main(["ingest", "--params", str(settings.source), "--force", *[a for o in overrides for a in ("--set", o)]])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_archive_past_the_total_budget_stops_and_keeps_the_store(tmp_path, scratch, capsys, suffix):
    files = members()
    archive = write_archive(tmp_path / f"photos{suffix}", files)
    store = tmp_path / "store-p"
    code, err = ingest(tmp_path, archive, capsys)  # the default budget (3 GiB) takes it
    assert code == 0, err
    before = dvc_dir_hash(store)

    cap = 5 * max(map(len, files.values()))  # room for about five of the sixteen members
    code, err = ingest(tmp_path, archive, capsys, f"data.ingest.max_archive_bytes={cap}")
    assert code == 2 and err.startswith("ctx: error: ") and err.count("\n") == 1, err
    assert str(archive) in err and f"data.ingest.max_archive_bytes = {cap} bytes" in err and "Traceback" not in err
    assert extracted(scratch) == []  # what was extracted is gone
    assert dvc_dir_hash(store) == before and len(list((store / "images").iterdir())) == MEMBERS
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name or ".old-" in p.name]

    code, err = ingest(tmp_path, archive, capsys, f"data.ingest.max_archive_bytes={sum(map(len, files.values()))}")
    assert code == 0, err  # a cap that holds the archive: the next run works
    assert dvc_dir_hash(store) == before


def test_disk_full_while_extracting_stops_instead_of_quarantining(tmp_path, scratch, capsys, monkeypatch):
    archive = write_archive(tmp_path / "photos.tar.gz", members())
    extract = tarfile.TarFile.extract
    calls = []

    def fill_disk_after_three(self, member, *args, **kwargs):
        calls.append(member.name)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return extract(self, member, *args, **kwargs)

    monkeypatch.setattr(tarfile.TarFile, "extract", fill_disk_after_three)
    code, err = ingest(tmp_path, archive, capsys)
    assert code == 2 and err.count("\n") == 1 and str(archive) in err and "disk filled up" in err, err
    assert len(calls) == 4  # stopped at the first full write, not one failure per remaining member
    assert extracted(scratch) == [] and not (tmp_path / "store-p").exists()
