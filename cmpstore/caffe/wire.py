"""Protocol-buffer wire format primitives: varints, tags and field walking.

Only what cmpstore needs to take the large packed float fields out of a
caffemodel without handing them to protobuf, and to put them back.  Real
parsing of everything else is left to protobuf (see :mod:`cmpstore.caffe.netproto`).

Invariant: every function that reads takes a ``bytes``-like buffer and an
explicit ``[start, end)`` window, and raises :class:`WireError` instead of
reading past ``end``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from ..streams.varint import VarintError, decode_varint, encode_varint

VARINT = 0
FIXED64 = 1
LENGTH_DELIMITED = 2
FIXED32 = 5



class WireError(ValueError):
    """The bytes are not a well-formed protocol-buffer message."""


class Field(NamedTuple):
    """One field occurrence inside a message.

    ``start`` is where its tag begins, ``value_start``/``end`` delimit its
    value (the payload of a length-delimited field, without the length).
    """

    number: int
    wire_type: int
    start: int
    value_start: int
    end: int


def read_varint(buf, pos: int, end: int) -> tuple[int, int]:
    """Decode the base-128 varint at ``buf[pos]``; return ``(value, next_pos)``."""
    try:
        return decode_varint(buf, pos, end)
    except VarintError as exc:
        raise WireError(str(exc)) from None


def encode_tag(number: int, wire_type: int) -> bytes:
    return encode_varint((number << 3) | wire_type)


def read_field(buf, pos: int, end: int) -> Field:
    """Decode the field whose tag starts at ``buf[pos]`` inside a message ending at ``end``."""
    key, value_start = read_varint(buf, pos, end)
    number, wire_type = key >> 3, key & 7
    if number == 0:
        raise WireError(f"field number 0 at byte {pos}")
    if wire_type == VARINT:
        _, value_end = read_varint(buf, value_start, end)
    elif wire_type == FIXED64:
        value_end = value_start + 8
    elif wire_type == LENGTH_DELIMITED:
        length, value_start = read_varint(buf, value_start, end)
        value_end = value_start + length
    elif wire_type == FIXED32:
        value_end = value_start + 4
    else:
        raise WireError(f"unsupported wire type {wire_type} at byte {pos}")
    if value_end > end:
        raise WireError(f"field {number} at byte {pos} runs past the end of its message")
    return Field(number, wire_type, pos, value_start, value_end)


def iter_fields(buf, start: int, end: int) -> Iterator[Field]:
    """Walk the fields of the message stored in ``buf[start:end]``."""
    pos = start
    while pos < end:
        field = read_field(buf, pos, end)
        yield field
        pos = field.end


def length_delimited(number: int, payload_length: int) -> bytes:
    """The tag and length prefix of a length-delimited field."""
    return encode_tag(number, LENGTH_DELIMITED) + encode_varint(payload_length)
