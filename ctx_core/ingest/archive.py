"""Safe extraction of ``.tar``, ``.tar.gz``/``.tgz`` (also bz2/xz) and ``.zip`` archives.

Members are checked one by one before anything is written: absolute paths,
``..`` components, links pointing outside the archive, device files and FIFOs,
and members over the size limit are refused and reported. Tar members are then
extracted with Python's ``data`` filter as a second line of defence; zip
members are streamed with a byte cap, because a zip's declared size can lie.

The whole extraction has a budget too (``data.ingest.max_archive_bytes``), so
many members each under the per-file cap cannot fill the disk: past it, or when
the disk is full, extraction stops with an :class:`ArchiveError` (the caller's
temporary folder is removed and nothing is ingested).
"""

from __future__ import annotations

import errno
import posixpath
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from ctx_core.errors import UserError
from ctx_core.ingest.quarantine import TOO_LARGE, UNREADABLE, UNSAFE_MEMBER, Rejected

_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ARCHIVE_SUFFIXES = (*_TAR_SUFFIXES, ".zip")


class ArchiveError(UserError):
    """An archive that cannot be opened at all, or is too large to extract; the message is one line."""


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class _Budget:
    """Bytes extracted so far from one archive, against ``cap`` (None: no cap)."""

    def __init__(self, label: str, dest: Path, cap: int | None):
        self.label, self.dest, self.cap = label, dest, cap
        self.total = 0
        self.members = 0

    def take(self, size: int) -> None:
        """Count ``size`` more bytes; raise before they are written if they pass the cap."""
        if self.cap is not None and self.total + size > self.cap:
            raise ArchiveError(
                f"{self.label}: extracting it needs more than data.ingest.max_archive_bytes = {self.cap} bytes "
                f"(stopped after {self.members} members, {self.total} bytes); nothing was ingested: raise "
                f"data.ingest.max_archive_bytes if the archive is genuine and the disk can hold it"
            )
        self.total += size

    def disk_full(self, exc: OSError) -> ArchiveError | None:
        """The error to stop with when ``exc`` says the disk is full, else None."""
        if exc.errno not in _DISK_FULL:
            return None
        return ArchiveError(
            f"{self.label}: the disk filled up extracting it into {self.dest.parent} (after {self.members} members, "
            f"{self.total} bytes); nothing was ingested: free space there, point TMPDIR at a larger disk, "
            f"or lower data.ingest.max_archive_bytes"
        )


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def unsafe_path_reason(name: str) -> str | None:
    """Why a member name may not be extracted, or None when it stays inside the target."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        return "absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "path leaves the archive (..)"
    return None


def _link_reason(member: tarfile.TarInfo) -> str | None:
    target = member.linkname.replace("\\", "/")
    if target.startswith("/"):
        return f"link to an absolute path ({member.linkname})"
    # a symlink's target is relative to its own folder, a hard link's to the archive root
    base = posixpath.dirname(member.name) if member.issym() else ""
    resolved = posixpath.normpath(posixpath.join(base, target))
    if resolved == ".." or resolved.startswith("../"):
        return f"link pointing outside the archive ({member.linkname})"
    return None


def _tar_member_reason(member: tarfile.TarInfo, max_bytes: int) -> tuple[str, str] | None:
    why = unsafe_path_reason(member.name)
    if why:
        return UNSAFE_MEMBER, f"unsafe archive member: {why}"
    if member.isdev() or not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        return UNSAFE_MEMBER, "unsafe archive member: device file or FIFO"
    if member.issym() or member.islnk():
        why = _link_reason(member)
        if why:
            return UNSAFE_MEMBER, f"unsafe archive member: {why}"
    if member.isreg() and member.size > max_bytes:
        return TOO_LARGE, f"archive member over the size limit ({member.size} > {max_bytes} bytes)"
    return None


def _extract_tar(archive: Path, dest: Path, label: str, max_bytes: int, budget: _Budget) -> list[Rejected]:
    rejected = []
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ArchiveError(f"{label} is not a readable tar archive ({exc})") from None
    with tar:
        count = 0
        try:
            for member in tar:
                count += 1
                src = f"{label}!/{member.name}"
                problem = _tar_member_reason(member, max_bytes)
                if problem:
                    rejected.append(Rejected(src, *problem))
                    continue
                if member.isreg():
                    budget.take(member.size)  # a tar member's declared size is what gets written
                try:
                    tar.extract(member, dest, filter="data")
                except tarfile.FilterError as exc:
                    rejected.append(Rejected(src, UNSAFE_MEMBER, f"unsafe archive member: {exc}"))
                except OSError as exc:
                    if full := budget.disk_full(exc):
                        raise full from None
                    rejected.append(Rejected(src, UNREADABLE, f"cannot extract ({exc})"))
                budget.members += 1
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            # a cut-off download: keep what came before, report the rest
            rejected.append(Rejected(label, UNREADABLE, f"archive is truncated or corrupt after {count} members ({exc})"))
    return rejected


def _zip_member_reason(info: zipfile.ZipInfo, max_bytes: int) -> tuple[str, str] | None:
    why = unsafe_path_reason(info.filename)
    if why:
        return UNSAFE_MEMBER, f"unsafe archive member: {why}"
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        return UNSAFE_MEMBER, "unsafe archive member: symbolic link (zip links are not followed)"
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        return UNSAFE_MEMBER, "unsafe archive member: device file or FIFO"
    if info.flag_bits & 0x1:
        return UNREADABLE, "encrypted archive member"
    if info.file_size > max_bytes:
        return TOO_LARGE, f"archive member over the size limit ({info.file_size} > {max_bytes} bytes)"
    return None


def _extract_zip(archive: Path, dest: Path, label: str, max_bytes: int, budget: _Budget) -> list[Rejected]:
    rejected = []
    root = dest.resolve()
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"{label} is not a readable zip archive ({exc})") from None
    with zf:
        for info in zf.infolist():
            src = f"{label}!/{info.filename}"
            problem = _zip_member_reason(info, max_bytes)
            if problem:
                rejected.append(Rejected(src, *problem))
                continue
            target = (dest / info.filename.replace("\\", "/")).resolve()
            if not target.is_relative_to(root):
                rejected.append(Rejected(src, UNSAFE_MEMBER, "unsafe archive member: path leaves the archive"))
                continue
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            try:
                with zf.open(info) as fin, open(target, "wb") as fout:
                    while block := fin.read(1 << 20):
                        written += len(block)
                        if written > max_bytes:
                            raise OverflowError
                        budget.take(len(block))  # counted as inflated: a zip's declared sizes can lie
                        fout.write(block)
            except OverflowError:
                target.unlink()
                rejected.append(Rejected(src, TOO_LARGE, f"archive member inflates past the size limit ({max_bytes} bytes)"))
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError) as exc:
                target.unlink(missing_ok=True)
                if isinstance(exc, OSError) and (full := budget.disk_full(exc)):
                    raise full from None
                rejected.append(Rejected(src, UNREADABLE, f"cannot extract ({exc})"))
            budget.members += 1
    return rejected


def extract_archive(
    archive: Path, dest: Path, label: str, max_bytes: int, max_total_bytes: int | None = None
) -> list[Rejected]:
    """Extract the safe members of ``archive`` into the existing folder ``dest``.

    Returns the refused members (source ``label!/member``). Nothing is written
    outside ``dest``; ``max_bytes`` caps each member's size, ``max_total_bytes``
    (None: no cap) all of them together. Raises :class:`ArchiveError` when the
    total would pass ``max_total_bytes`` or the disk fills up; what was already
    extracted stays in ``dest`` for the caller to remove.
    """
    dest.mkdir(parents=True, exist_ok=True)
    budget = _Budget(label, dest, max_total_bytes)
    if archive.name.lower().endswith(".zip"):
        return _extract_zip(archive, dest, label, max_bytes, budget)
    return _extract_tar(archive, dest, label, max_bytes, budget)
