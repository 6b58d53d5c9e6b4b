"""The source fingerprint the new-images sensor compares: changes with any added, changed or removed file."""

import os

import pytest

from ctx_core.config import load_params
from ctx_core.errors import UserError
from ctx_core.ingest.fingerprint import source_fingerprint
from tests.conftest import write_params


def test_folder_fingerprint_follows_the_files(tmp_path):
    src = tmp_path / "photos"
    (src / "sub").mkdir(parents=True)
    (src / "a.jpg").write_bytes(b"a")
    (src / "sub" / "b.png").write_bytes(b"bb")
    settings = load_params(write_params(tmp_path, data={"ingest": {"source": str(src)}}))
    first, files = source_fingerprint(settings)
    assert files == 2 and source_fingerprint(settings)[0] == first
    (src / "c.jpg").write_bytes(b"c")
    added = source_fingerprint(settings)[0]
    assert added != first
    os.utime(src / "a.jpg", ns=(0, 123))
    assert source_fingerprint(settings)[0] != added
    (src / "c.jpg").unlink()
    assert source_fingerprint(settings)[1] == 2


def test_missing_source_is_a_user_error(tmp_path):
    settings = load_params(write_params(tmp_path, data={"ingest": {"source": str(tmp_path / "nope")}}))
    with pytest.raises(UserError, match="does not exist"):
        source_fingerprint(settings)
