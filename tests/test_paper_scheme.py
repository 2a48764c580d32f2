"""With --index-bits conv=8,fc=5 the index streams are the paper's, computed here independently."""

import heapq

import numpy as np
import pytest
from common import shared_model
from nets import lenet_like_bytes

from cmpstore import api
from cmpstore.caffe.caffemodel import split_caffemodel
from cmpstore.cmps.reader import open_cmps


def huffman_total_bits(frequencies) -> int:
    """Total bits of an optimal prefix code: the sum of all merged weights (textbook Huffman)."""
    heap = [int(f) for f in frequencies if f]
    if len(heap) == 1:
        return 0
    heapq.heapify(heap)
    total = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        total += merged
        heapq.heappush(heap, merged)
    return total


def paper_index_stream(weights: np.ndarray, bits: int) -> tuple[int, int]:
    """Filler count and Huffman-coded bits of the paper's relative index stream, by a plain loop."""
    span = 2**bits - 1
    symbols = []
    fillers = 0
    previous = -1
    for position in np.flatnonzero(weights.view(np.uint32)):
        gap = position - previous
        while gap > span:
            symbols.append(span)
            fillers += 1
            gap -= span
        symbols.append(gap)
        previous = position
    return fillers, huffman_total_bits(np.bincount(symbols))


@pytest.mark.parametrize("source", ["shared", "generated"])
def test_fixed_index_bits_match_the_paper(source):
    data = shared_model("lenet_pq_seed_schedule.caffemodel").read_bytes() if source == "shared" else lenet_like_bytes()
    model = split_caffemodel(data)
    # smallest: the paper's canonical Huffman streams, not the DEFLATE ones fc1 keeps by default for speed.
    encoded = api.encode(model, index_bits={"conv": 8, "fc": 5}, smallest=True)
    cmps = open_cmps(encoded)
    weights = {p.address: p.values for p in model.payloads}
    checked = 0
    for blob in cmps.entries:
        if blob.address.blob_index != 0 or not blob.layer.kind:
            continue
        bits = 8 if blob.layer.kind == "conv" else 5
        fillers, total_bits = paper_index_stream(weights[blob.address], bits)
        stats = cmps.describe(blob)
        assert stats.index_bits == bits
        assert stats.fillers == fillers
        assert stats.index_stream_bits == total_bits
        checked += 1
    assert checked == 4
