"""Bit-for-bit comparison of two models' values: what ``cmpstore verify`` reports."""

from __future__ import annotations

import numpy as np

from .caffe.model import Model


def differences(first: Model, second: Model, first_name: str, second_name: str) -> list[str]:
    """Every way the two models' values differ, one line each (empty if every blob is bit-identical).

    Every value field is compared: a blob's ``data`` and ``double_data`` alike (a blob may hold both).
    The names say which file lacks a layer or a field.
    """
    a_fields = first.value_fields_by_layer(first_name)
    b_fields = second.value_fields_by_layer(second_name)
    problems = []
    for name in sorted(set(a_fields) | set(b_fields)):
        missing_from = second_name if name not in b_fields else first_name if name not in a_fields else None
        if missing_from is not None:
            problems.append(f"layer '{name}' is missing from {missing_from}")
        elif len(a_fields[name]) != len(b_fields[name]):
            problems.append(f"layer '{name}': {len(a_fields[name])} blobs against {len(b_fields[name])}")
        else:
            for index, (a, b) in enumerate(zip(a_fields[name], b_fields[name], strict=True)):
                named = (set(a) | set(b)) != {"data"}
                for field in sorted(set(a) | set(b)):
                    where = f"layer '{name}' blob {index}" + (f" {field}" if named else "")
                    if field not in a or field not in b:
                        problems.append(
                            f"{where}: no {field} values in {first_name if field not in a else second_name}"
                        )
                    else:
                        problem = blob_difference(a[field], b[field])
                        if problem:
                            problems.append(f"{where}: {problem}")
    return problems


def blob_difference(a: np.ndarray, b: np.ndarray) -> str:
    """How two blobs' values differ bit for bit, or "" when they do not."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"{a.dtype}{list(a.shape)} against {b.dtype}{list(b.shape)}"
    if a.tobytes() == b.tobytes():
        return ""
    differing = np.count_nonzero(a.reshape(-1).view(f"u{a.itemsize}") != b.reshape(-1).view(f"u{b.itemsize}"))
    return f"{differing} of {a.size} values differ"
