#!/usr/bin/env python3
"""Fuzz the binary caffemodel reader (atheris).

    pip install atheris
    python tests/fuzz/fuzz_caffemodel.py -max_total_time=300 [CORPUS_DIR]

Every input must load (split, parse, shape-check) or raise a ModelError that
is not an internal error, within 2 s and 2 GB.  Crashes are kept in
tests/fixtures/crashers/ as caffemodel-<name> once fixed.
"""

import atheris
import fuzz_common  # sets up sys.path

with atheris.instrument_imports(include=["cmpstore"]):
    from nets import layer_net_bytes, legacy_net_bytes, lenet_like_bytes, unpack_floats

    from cmpstore import api
    from cmpstore.caffe.caffemodel import caffemodel_bytes, split_caffemodel
    from cmpstore.errors import CmpstoreError


def test_one_input(data: bytes) -> None:
    try:
        model = split_caffemodel(data)
        api.check_shapes(model)
    except CmpstoreError as error:
        fuzz_common.clean(error)
        return
    # What loads must also write back without loss of any value.
    again = split_caffemodel(caffemodel_bytes(model))
    assert [p.values.tobytes() for p in again.payloads] == [p.values.tobytes() for p in model.payloads]


def seeds() -> dict[str, bytes]:
    return {
        "zoo.caffemodel": layer_net_bytes(),
        "legacy.caffemodel": legacy_net_bytes(),
        "unpacked.caffemodel": unpack_floats(legacy_net_bytes(double=True)),
        "lenet.caffemodel": lenet_like_bytes()[:20_000],
    }


if __name__ == "__main__":
    fuzz_common.run(test_one_input, seeds())
