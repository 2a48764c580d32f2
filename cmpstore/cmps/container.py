"""The ``.cmps`` container: header and checksummed sections (docs/FORMAT.md).

This module is the one place that defines the container's layout constants;
the encoder and decoder both use it.  It knows nothing of what sections
hold: it frames them, checks them, and hands back their payloads.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import FormatError
from ..format_versions import VERSIONS  # noqa: F401 - the versions this container reads, named here too
from ..limits import MAX_SECTION_BYTES
from ..streams.zlib_backend import crc32

MAGIC = b"\x89CMPS\r\n\x1a"
FILE_EXTENSION = ".cmps"

_HEADER = struct.Struct("<8sIII")  # magic, version, section count, CRC32 of the preceding 16 bytes
HEADER_SIZE = _HEADER.size
_SECTION_HEAD = struct.Struct("<4sI")  # kind, payload length
_CRC = struct.Struct("<I")
SECTION_OVERHEAD = _SECTION_HEAD.size + _CRC.size

NET = b"NETP"
BLOB = b"BLOB"
SECTION_KINDS = (NET, BLOB)


@dataclass
class Section:
    """One section as read from a file: its kind, where it starts and its payload."""

    kind: bytes
    offset: int
    payload: memoryview

    @property
    def size_on_disk(self) -> int:
        return SECTION_OVERHEAD + len(self.payload)

    def label(self, number: int) -> str:
        return f"section {number} ({self.kind.decode('ascii')} at byte {self.offset})"


def header_bytes(section_count: int, version: int = VERSIONS[0]) -> bytes:
    if version not in VERSIONS:
        raise ValueError(f"unknown format version {version}")
    head = MAGIC + struct.pack("<II", version, section_count)
    return head + _CRC.pack(crc32(head))


def section_bytes(kind: bytes, payload: bytes) -> bytes:
    if kind not in SECTION_KINDS:
        raise ValueError(f"unknown section kind {kind!r}")
    if len(payload) > MAX_SECTION_BYTES:
        raise ValueError(f"section payload of {len(payload)} bytes exceeds {MAX_SECTION_BYTES}")
    head = _SECTION_HEAD.pack(kind, len(payload))
    return head + payload + _CRC.pack(crc32(payload, crc32(head)))


def looks_like_container(head: bytes) -> bool:
    return head[: len(MAGIC)] == MAGIC


def read_version(buf) -> tuple[int, int]:
    """Check the header; return the file's format version and its section count."""
    view = memoryview(buf)
    if len(view) < HEADER_SIZE:
        if looks_like_container(bytes(view[: len(MAGIC)])):
            raise FormatError(f"truncated header: {len(view)} bytes, need {HEADER_SIZE}")
        raise FormatError("not a cmpstore file (too short for its header)")
    magic, version, section_count, header_crc = _HEADER.unpack_from(view, 0)
    if magic != MAGIC:
        raise FormatError("not a cmpstore file (wrong magic bytes)")
    if crc32(view[: HEADER_SIZE - _CRC.size]) != header_crc:
        raise FormatError("header checksum mismatch: the file is corrupted")
    if version not in VERSIONS:
        known = ", ".join(map(str, VERSIONS[:-1])) + f" and {VERSIONS[-1]}"
        raise FormatError(f"unknown format version {version}; this cmpstore reads versions {known}")
    return version, section_count


def read_sections(buf) -> list[Section]:
    """Check the header and every section's bounds and checksum; return the sections.

    Nothing is allocated from declared sizes: every length is compared with
    the bytes that remain first.
    """
    view = memoryview(buf)
    _, section_count = read_version(view)
    if section_count > (len(view) - HEADER_SIZE) // SECTION_OVERHEAD:
        raise FormatError(f"header declares {section_count} sections, more than the file can hold")
    sections = []
    pos = HEADER_SIZE
    for number in range(section_count):
        label = f"section {number} at byte {pos}"
        if len(view) - pos < SECTION_OVERHEAD:
            raise FormatError(f"{label}: truncated section header")
        kind, length = _SECTION_HEAD.unpack_from(view, pos)
        if length > MAX_SECTION_BYTES:
            raise FormatError(f"{label}: declares {length} bytes, more than the {MAX_SECTION_BYTES} a section may hold")
        if length > len(view) - pos - SECTION_OVERHEAD:
            raise FormatError(f"{label}: declares {length} bytes but only {len(view) - pos - SECTION_OVERHEAD} remain")
        payload_start = pos + _SECTION_HEAD.size
        payload_end = payload_start + length
        (crc,) = _CRC.unpack_from(view, payload_end)
        if crc32(view[pos:payload_end]) != crc:
            raise FormatError(f"{label}: checksum mismatch, the section is corrupted")
        if kind not in SECTION_KINDS:
            raise FormatError(f"{label}: unknown section kind {kind!r}")
        sections.append(Section(kind, pos, view[payload_start:payload_end]))
        pos = payload_end + _CRC.size
    if pos != len(view):
        raise FormatError(f"{len(view) - pos} trailing bytes after the last section")
    return sections
