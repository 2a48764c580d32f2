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
START_GROUP = 3  # proto2 groups: nothing in caffe.proto, but unknown fields may be groups
END_GROUP = 4
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
    elif wire_type == START_GROUP:
        value_end = _group_end(buf, value_start, end, number, pos)
    elif wire_type == END_GROUP:
        raise WireError(f"end of group {number} at byte {pos} without its start")
    else:
        raise WireError(f"unsupported wire type {wire_type} at byte {pos}")
    if value_end > end:
        raise WireError(f"field {number} at byte {pos} runs past the end of its message")
    return Field(number, wire_type, pos, value_start, value_end)


#: protobuf's own limit on nested messages and groups.
MAX_GROUP_DEPTH = 100


def _group_end(buf, pos: int, end: int, number: int, start: int) -> int:
    """Where the group of field ``number`` that starts before ``pos`` ends: after its END_GROUP tag.

    A group is opaque here, as every field cmpstore does not touch: it is
    walked only to find its end, so that it is kept byte for byte.
    """
    open_groups = [number]
    while pos < end:
        key, after = read_varint(buf, pos, end)
        field_number, wire_type = key >> 3, key & 7
        if wire_type == END_GROUP:
            if field_number != open_groups[-1]:
                raise WireError(f"end of group {field_number} at byte {pos} inside group {open_groups[-1]}")
            open_groups.pop()
            if not open_groups:
                return after
            pos = after
        elif wire_type == START_GROUP:
            if len(open_groups) >= MAX_GROUP_DEPTH:
                raise WireError(f"groups nested more than {MAX_GROUP_DEPTH} deep at byte {pos}")
            open_groups.append(field_number)
            pos = after
        else:
            pos = read_field(buf, pos, end).end
    raise WireError(f"group {number} at byte {start} has no end")


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
