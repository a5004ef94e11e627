"""Archives of frame files (.zip, .tar, .tar.gz/.bz2/.xz): their members, bounded and checked for safety.

The kind of archive comes from its leading magic bytes only (a zip's local header, gzip, bzip2 or xz
magic, or a tar header), never from searching for a zip end record, so a tar holding a zip is a tar whose
member is not a frame: nested archives are never expanded.

Every byte read out of an archive counts against ``max_archive_bytes`` as it streams, headers included:
a .tar is decompressed through a reader that raises at the limit, so a GNU long-name or PAX header that
declares a gigabyte is refused before Python's tarfile can allocate it (tarfile reads such headers whole).
A .zip's central directory is walked before zipfile parses it, so an end record that understates the
entries (1 declared, a million present) is refused after at most ``max_archive_entries`` + 1 steps.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re
import stat
import struct
import tarfile
import zipfile
import zlib
from pathlib import PurePosixPath

from service.decoding.common import DecodeLimits, NamedMedia
from service.errors import InvalidMediaError, LimitExceededError, UnsafeArchiveError

_DIGITS = re.compile(r"(\d+)")


def natural_sort_key(name: str) -> tuple:
    """Sort key that orders embedded numbers by value: frame2 < frame10."""
    parts = _DIGITS.split(name)
    # split() alternates text and digit runs starting with text, so positions always compare alike.
    return tuple(int(part) if index % 2 else part.lower() for index, part in enumerate(parts)), name


def _is_ignored_entry(path: PurePosixPath) -> bool:
    """Operating-system clutter in archives (macOS resource forks, hidden files) that is not a frame."""
    return path.parts[0] == "__MACOSX" or path.name.startswith(".") or path.name == "Thumbs.db"


def safe_entry_path(name: str) -> PurePosixPath:
    """The entry's relative path; raises UnsafeArchiveError for absolute paths or ones that climb out."""
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or re.match(r"^[A-Za-z]:", normalised):
        raise UnsafeArchiveError(f"Archive entry '{name}' has an absolute path.")
    path = PurePosixPath(normalised)
    if ".." in path.parts:
        raise UnsafeArchiveError(f"Archive entry '{name}' climbs out of the archive with '..'.")
    if not path.parts:
        raise UnsafeArchiveError(f"Archive entry '{name}' has an empty path.")
    return path



_ZIP_LOCAL_HEADER = b"PK\x03\x04"
_ZIP_END_OF_CENTRAL_DIRECTORY = b"PK\x05\x06"
_ZIP_CENTRAL_HEADER = b"PK\x01\x02"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_END_OF_CENTRAL_DIRECTORY = b"PK\x06\x06"
_NOT_AN_ARCHIVE = "The archive is neither a readable .zip nor a .tar file (optionally .gz, .bz2 or .xz compressed)."


def _too_large(limits: DecodeLimits, where: str = "") -> LimitExceededError:
    return LimitExceededError(
        f"The archive expands to more than {limits.max_archive_bytes} bytes{where}.", code="archive_too_large"
    )


def _too_many_entries(count: int | str, limits: DecodeLimits) -> LimitExceededError:
    return LimitExceededError(
        f"The archive has {count} entries; at most {limits.max_archive_entries} are allowed.",
        code="archive_too_many_entries",
    )


def _looks_like_tar(block: bytes) -> bool:
    """A tar header block: the POSIX/GNU magic, or (old V7 tars) a header whose checksum adds up."""
    if len(block) < 512:
        return False
    if block[257:262] == b"ustar":
        return True
    try:
        return tarfile.nti(block[148:156]) in tarfile.calc_chksums(block[:512])
    except (tarfile.HeaderError, ValueError):
        return False


def archive_kind(data: bytes) -> str:
    """'zip', 'tar', 'tar.gz', 'tar.bz2' or 'tar.xz', from the leading magic bytes; InvalidMediaError else."""
    if data[:4] in (_ZIP_LOCAL_HEADER, _ZIP_END_OF_CENTRAL_DIRECTORY):
        return "zip"
    if data[:2] == b"\x1f\x8b":
        return "tar.gz"
    if data[:3] == b"BZh":
        return "tar.bz2"
    if data[:6] == b"\xfd7zXZ\x00":
        return "tar.xz"
    if _looks_like_tar(data):
        return "tar"
    raise InvalidMediaError(_NOT_AN_ARCHIVE)


# ------------------------------------------------------------------------------------------------- zip
def _zip_directory(data: bytes) -> tuple[int, int, int]:
    """(declared entries, central directory start, end) from the end record (zip64 where it says so)."""
    # The record is 22 bytes plus a comment of at most 65535 bytes, at the very end of the file.
    position = data.rfind(_ZIP_END_OF_CENTRAL_DIRECTORY, max(0, len(data) - 22 - 65535))
    if position < 0 or position + 22 > len(data):
        raise InvalidMediaError(f"{_NOT_AN_ARCHIVE} Its zip end record is missing.")
    total_entries, directory_size = struct.unpack("<HI", data[position + 10 : position + 16])
    directory_end = position
    locator = position - 20
    if locator >= 0 and data[locator : locator + 4] == _ZIP64_LOCATOR:
        (record,) = struct.unpack("<Q", data[locator + 8 : locator + 16])
        if record + 56 > len(data) or data[record : record + 4] != _ZIP64_END_OF_CENTRAL_DIRECTORY:
            raise InvalidMediaError(f"{_NOT_AN_ARCHIVE} Its zip64 end record is missing.")
        total_entries, directory_size = struct.unpack("<QQ", data[record + 32 : record + 48])
        directory_end = record
    start = directory_end - directory_size
    if start < 0:
        raise InvalidMediaError(f"{_NOT_AN_ARCHIVE} Its central directory lies outside the file.")
    return total_entries, start, directory_end


def declared_zip_entry_count(data: bytes) -> int | None:
    """Entries a .zip declares in its end-of-central-directory record; None when it has none."""
    try:
        return _zip_directory(data)[0]
    except InvalidMediaError:
        return None


def check_zip_directory(data: bytes, limits: DecodeLimits) -> int:
    """Walks the central directory (building nothing) and refuses a zip with too many entries, or whose end
    record and central directory disagree; returns the directory's size in bytes."""
    declared, position, end = _zip_directory(data)
    if declared > limits.max_archive_entries:
        raise _too_many_entries(declared, limits)
    start, count = position, 0
    while position < end:
        if data[position : position + 4] != _ZIP_CENTRAL_HEADER or position + 46 > end:
            raise InvalidMediaError(f"{_NOT_AN_ARCHIVE} Its central directory is corrupt.")
        name_length, extra_length, comment_length = struct.unpack("<HHH", data[position + 28 : position + 34])
        position += 46 + name_length + extra_length + comment_length
        count += 1
        if count > limits.max_archive_entries:
            raise _too_many_entries(f"more than {limits.max_archive_entries}", limits)
    if count != declared:
        raise InvalidMediaError(
            f"The zip's end record declares {declared} entries but its central directory holds {count}: "
            "the archive is corrupt or crafted."
        )
    return end - start


def _read_capped(stream: io.BufferedIOBase, remaining_budget: int, name: str, limits: DecodeLimits) -> bytes:
    data = stream.read(remaining_budget + 1)
    if len(data) > remaining_budget:
        raise _too_large(limits, f" (at entry '{name}')")
    return data


def _zip_members(data: bytes, limits: DecodeLimits) -> list[NamedMedia]:
    directory_size = check_zip_directory(data, limits)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise InvalidMediaError(f"The archive is not a readable .zip file ({error}).") from error
    with archive:
        entries = archive.infolist()
        if len(entries) > limits.max_archive_entries:
            raise _too_many_entries(len(entries), limits)
        declared = sum(entry.file_size for entry in entries)
        if declared > limits.max_archive_bytes:
            raise LimitExceededError(
                f"The archive expands to {declared} bytes; at most {limits.max_archive_bytes} are allowed.",
                code="archive_too_large",
            )
        members = []
        # The directory (every entry's header) counts against the budget, as a tar's headers do.
        budget = limits.max_archive_bytes - directory_size
        for entry in entries:
            path = safe_entry_path(entry.filename)
            # Unix zips keep st_mode in the high half of external_attr; many writers set permissions only.
            file_type = stat.S_IFMT(entry.external_attr >> 16)
            if file_type == stat.S_IFLNK:
                raise UnsafeArchiveError(f"Archive entry '{entry.filename}' is a symbolic link.")
            if file_type and file_type not in (stat.S_IFREG, stat.S_IFDIR):
                raise UnsafeArchiveError(f"Archive entry '{entry.filename}' is not a regular file.")
            if entry.is_dir() or _is_ignored_entry(path):
                continue
            if entry.flag_bits & 0x1:
                raise InvalidMediaError(f"Archive entry '{entry.filename}' is encrypted.")
            try:
                # The declared size can lie; reading is capped by the remaining budget all the same.
                with archive.open(entry) as stream:
                    content = _read_capped(stream, budget, entry.filename, limits)
            except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError, NotImplementedError) as error:
                raise InvalidMediaError(f"Archive entry '{entry.filename}' cannot be read ({error}).") from error
            budget -= len(content)
            members.append(NamedMedia(str(path), content))
    return members


# ------------------------------------------------------------------------------------------------- tar
class BudgetReader(io.RawIOBase):
    """A read-only stream over another that raises LimitExceededError once more than the archive limit has
    been read through it. Each read asks the source for at most the bytes left plus one, so however much a
    caller requests (tarfile asks for a whole long-name header at once), no more than the limit is ever
    produced or held."""

    def __init__(self, source: io.BufferedIOBase, limits: DecodeLimits):
        self.source = source
        self.limits = limits
        self.consumed = 0

    @property
    def remaining(self) -> int:
        return self.limits.max_archive_bytes - self.consumed

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        wanted = self.remaining + 1 if size is None or size < 0 else min(size, self.remaining + 1)
        chunk = self.source.read(wanted)
        self.consumed += len(chunk)
        if self.consumed > self.limits.max_archive_bytes:
            raise _too_large(self.limits)
        return chunk

    def readinto(self, buffer: bytearray | memoryview) -> int:
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


_EXTENDED_HEADER_TYPES = frozenset(
    {tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE}
)


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses a long-name or PAX header larger than what is left of the budget before tarfile reads it
    (the BudgetReader would stop it anyway, after reading up to the limit; this answers at once)."""

    budget_reader: BudgetReader | None = None  # set on a subclass per archive (tarfile builds the instances)

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        reader = self.budget_reader
        if reader is not None and self.type in _EXTENDED_HEADER_TYPES and self.size > reader.remaining:
            raise _too_large(reader.limits, f" (at a {self.size}-byte extended header)")
        return super()._proc_member(tarfile_)


def _decompressed(data: bytes, kind: str) -> io.BufferedIOBase:
    raw = io.BytesIO(data)
    if kind == "tar.gz":
        return gzip.GzipFile(fileobj=raw)
    if kind == "tar.bz2":
        return bz2.BZ2File(raw)
    if kind == "tar.xz":
        return lzma.LZMAFile(raw)
    return raw


def _tar_members(data: bytes, kind: str, limits: DecodeLimits) -> list[NamedMedia]:
    reader = BudgetReader(_decompressed(data, kind), limits)
    members = []
    entry_count = 0
    try:
        # Stream mode ("r|"): tarfile reads forward only, through the budget reader, one header at a time.
        # The reader is bound before opening: tarfile reads the first header inside open().
        tarinfo = type("BoundedTarInfo", (_BoundedTarInfo,), {"budget_reader": reader})
        archive = tarfile.open(fileobj=reader, mode="r|", tarinfo=tarinfo)
        with archive:
            for member in archive:
                entry_count += 1
                if entry_count > limits.max_archive_entries:
                    raise _too_many_entries(f"more than {limits.max_archive_entries}", limits)
                path = safe_entry_path(member.name)
                if member.issym() or member.islnk():
                    raise UnsafeArchiveError(f"Archive entry '{member.name}' is a link.")
                if member.isdir():
                    continue
                if not member.isreg():
                    raise UnsafeArchiveError(f"Archive entry '{member.name}' is a device, pipe or special file.")
                if member.issparse():
                    # Its holes would be produced as zeros without being read (and counted): not a frame.
                    raise UnsafeArchiveError(f"Archive entry '{member.name}' is a sparse file.")
                if member.size > reader.remaining:
                    raise _too_large(limits, f" (at entry '{member.name}')")
                if _is_ignored_entry(path):
                    continue
                stream = archive.extractfile(member)
                if stream is None:
                    raise UnsafeArchiveError(f"Archive entry '{member.name}' is not a regular file.")
                members.append(NamedMedia(str(path), stream.read()))
    except (tarfile.TarError, zlib.error, OSError, EOFError, ValueError, lzma.LZMAError) as error:
        raise InvalidMediaError(f"The .tar archive is truncated or corrupt ({error}).") from error
    if entry_count == 0:
        raise InvalidMediaError(_NOT_AN_ARCHIVE)
    return members


def read_archive(data: bytes, limits: DecodeLimits) -> list[NamedMedia]:
    """The frame files of a .zip or .tar (optionally compressed) upload, in natural file-name order."""
    if not data:
        raise InvalidMediaError("The archive is empty.")
    kind = archive_kind(data)
    members = _zip_members(data, limits) if kind == "zip" else _tar_members(data, kind, limits)
    members.sort(key=lambda member: natural_sort_key(member.name))
    return members
