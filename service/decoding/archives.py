"""Archives of frame files (.zip, .tar, compressed .tar): their members, bounded and checked for safety."""

from __future__ import annotations

import io
import re
import stat
import struct
import tarfile
import zipfile
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


def _read_capped(stream: io.BufferedIOBase, remaining_budget: int, name: str, max_bytes: int) -> bytes:
    data = stream.read(remaining_budget + 1)
    if len(data) > remaining_budget:
        raise LimitExceededError(
            f"The archive expands to more than {max_bytes} bytes (at entry '{name}').",
            code="archive_too_large",
        )
    return data


_ZIP_END_OF_CENTRAL_DIRECTORY = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_END_OF_CENTRAL_DIRECTORY = b"PK\x06\x06"


def declared_zip_entry_count(data: bytes) -> int | None:
    """Entries a .zip declares in its end-of-central-directory record (read without parsing the
    directory, so a zip of 100,000 entries is refused at once); None when the record is not found."""
    # The record is 22 bytes plus a comment of at most 65535 bytes, at the very end of the file.
    position = data.rfind(_ZIP_END_OF_CENTRAL_DIRECTORY, max(0, len(data) - 22 - 65535))
    if position < 0 or position + 22 > len(data):
        return None
    (total_entries,) = struct.unpack("<H", data[position + 10 : position + 12])
    if total_entries != 0xFFFF:
        return total_entries
    # 0xFFFF: the count is in the zip64 record, found through the locator just before this record.
    locator = position - 20
    if locator < 0 or data[locator : locator + 4] != _ZIP64_LOCATOR:
        return None
    (record,) = struct.unpack("<Q", data[locator + 8 : locator + 16])
    if record + 40 > len(data) or data[record : record + 4] != _ZIP64_END_OF_CENTRAL_DIRECTORY:
        return None
    (total_entries,) = struct.unpack("<Q", data[record + 32 : record + 40])
    return total_entries


def _zip_members(data: bytes, limits: DecodeLimits) -> list[NamedMedia]:
    declared_entries = declared_zip_entry_count(data)
    if declared_entries is not None and declared_entries > limits.max_archive_entries:
        raise LimitExceededError(
            f"The archive has {declared_entries} entries; at most {limits.max_archive_entries} are allowed.",
            code="archive_too_many_entries",
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise InvalidMediaError(f"The archive is not a readable .zip file ({error}).") from error
    with archive:
        entries = archive.infolist()
        if len(entries) > limits.max_archive_entries:
            raise LimitExceededError(
                f"The archive has {len(entries)} entries; at most {limits.max_archive_entries} are allowed.",
                code="archive_too_many_entries",
            )
        declared = sum(entry.file_size for entry in entries)
        if declared > limits.max_archive_bytes:
            raise LimitExceededError(
                f"The archive expands to {declared} bytes; at most {limits.max_archive_bytes} are allowed.",
                code="archive_too_large",
            )
        members = []
        budget = limits.max_archive_bytes
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
                    content = _read_capped(stream, budget, entry.filename, limits.max_archive_bytes)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as error:
                raise InvalidMediaError(f"Archive entry '{entry.filename}' cannot be read ({error}).") from error
            budget -= len(content)
            members.append(NamedMedia(str(path), content))
    return members


def _tar_members(data: bytes, limits: DecodeLimits) -> list[NamedMedia]:
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except (tarfile.TarError, OSError, EOFError, ValueError) as error:
        raise InvalidMediaError("The archive is neither a readable .zip nor a .tar file.") from error
    members = []
    entry_count = 0
    budget = limits.max_archive_bytes
    with archive:
        try:
            # Iterating reads one header at a time, so a compressed bomb is stopped at its first
            # oversized header instead of being expanded to find the next one.
            for member in archive:
                entry_count += 1
                if entry_count > limits.max_archive_entries:
                    raise LimitExceededError(
                        f"The archive has more than {limits.max_archive_entries} entries.",
                        code="archive_too_many_entries",
                    )
                path = safe_entry_path(member.name)
                if member.issym() or member.islnk():
                    raise UnsafeArchiveError(f"Archive entry '{member.name}' is a link.")
                if member.isdir():
                    continue
                if not member.isreg():
                    raise UnsafeArchiveError(f"Archive entry '{member.name}' is a device, pipe or special file.")
                if member.size > budget:
                    raise LimitExceededError(
                        f"The archive expands to more than {limits.max_archive_bytes} bytes "
                        f"(at entry '{member.name}').",
                        code="archive_too_large",
                    )
                if _is_ignored_entry(path):
                    continue
                stream = archive.extractfile(member)
                if stream is None:
                    raise UnsafeArchiveError(f"Archive entry '{member.name}' is not a regular file.")
                content = _read_capped(stream, budget, member.name, limits.max_archive_bytes)
                budget -= len(content)
                members.append(NamedMedia(str(path), content))
        except (tarfile.TarError, OSError, EOFError, ValueError) as error:
            raise InvalidMediaError(f"The .tar archive is truncated or corrupt ({error}).") from error
    return members


def read_archive(data: bytes, limits: DecodeLimits) -> list[NamedMedia]:
    """The frame files of a .zip or .tar (optionally compressed) upload, in natural file-name order."""
    if not data:
        raise InvalidMediaError("The archive is empty.")
    if zipfile.is_zipfile(io.BytesIO(data)):
        members = _zip_members(data, limits)
    else:
        members = _tar_members(data, limits)
    members.sort(key=lambda member: natural_sort_key(member.name))
    return members
