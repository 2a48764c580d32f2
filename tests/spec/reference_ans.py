"""Independent reference implementation of cmpstore's range-ANS streams.

Written from docs/FORMAT.md ("rANS streams") alone; it does not import or
call constriction, and tests/test_spec_ans.py holds it against cmpstore's
streams, so the spec stays complete enough for a second implementation.  It reproduces, bit for bit, what
``constriction.stream.stack.AnsCoder`` (constriction 0.5.0) does with a
``constriction.stream.model.Categorical(counts / counts.sum(), perfect=False)``
model, as used by ``cmpstore.ans``.

Parameters: 32-bit words, 64-bit state, 24-bit probability precision.

Public functions:

* ``quantized_frequencies(counts) -> list[int]``   integer frequencies, sum 2**24
* ``cumulative(counts) -> list[int]``               left cumulative frequencies
* ``encode(symbols, counts) -> np.ndarray[uint32]`` the words as get_compressed() returns them
* ``decode_words(words, counts, count) -> np.ndarray`` dense symbol indices
* ``decode_words_with_state(words, counts, count)`` -> (symbols, final_state, words_left)
* ``is_exhausted(final_state) -> bool``             the is_empty() end check
"""

from __future__ import annotations

import numpy as np

WORD_BITS = 32
STATE_BITS = 64
PRECISION = 24

WORD_MASK = (1 << WORD_BITS) - 1
TOTAL = 1 << PRECISION  # sum of all frequencies
PRECISION_MASK = TOTAL - 1
LOWER_BOUND = 1 << (STATE_BITS - WORD_BITS)  # 2**32: decoder refill threshold
FLUSH_SHIFT = STATE_BITS - PRECISION  # 40: encoder flush test shift


class AnsError(ValueError):
    """Malformed model or coded words."""


def _probabilities(counts) -> list[float]:
    """p_i = float64(c_i) / float64(N), N the exact integer sum (numpy's counts / counts.sum())."""
    counts = [int(c) for c in counts]
    if any(c < 1 for c in counts):
        raise AnsError("every count must be >= 1")
    total = sum(counts)
    if total >= 1 << 53:
        raise AnsError("counts too large to be exact in float64")
    # int -> float is exact below 2**53; '/' on two floats is IEEE 754
    # round-to-nearest-even division, as numpy's true_divide.
    return [float(c) / float(total) for c in counts]


def cumulative(counts) -> list[int]:
    """Left cumulative frequencies cdf[0..U] (cdf[0] == 0, cdf[U] == 2**24).

    constriction's "fast" quantization (perfect=False).
    """
    probabilities = _probabilities(counts)
    size = len(probabilities)
    if size < 2 or size >= TOTAL - 1:
        raise AnsError("a rANS model needs 2 .. 2**24 - 2 symbols")
    # Sequential left-to-right float64 sum (not numpy's pairwise sum).
    normalization = 0.0
    for p in probabilities:
        normalization += p
    free_weight = float(TOTAL - size)
    scale = free_weight / normalization
    cdf = []
    running = 0.0
    for index, p in enumerate(probabilities):
        # product rounded to float64, then truncated toward zero (it is >= 0)
        cdf.append(int(running * scale) + index)
        running += p
    cdf.append(TOTAL)
    for left, right in zip(cdf, cdf[1:], strict=False):
        if right <= left:  # cannot happen for counts >= 1; kept as a guard
            raise AnsError("quantization produced a zero frequency")
    return cdf


def quantized_frequencies(counts) -> list[int]:
    """Integer frequency of each symbol; every one >= 1, summing to exactly 2**24."""
    cdf = cumulative(counts)
    return [right - left for left, right in zip(cdf, cdf[1:], strict=False)]


def encode(symbols, counts) -> np.ndarray:
    """Encode dense symbols (indices into counts) exactly as
    ``AnsCoder().encode_reverse(symbols, model); get_compressed()`` does."""
    cdf = cumulative(counts)
    size = len(cdf) - 1
    state = 0  # the fresh coder's state
    words: list[int] = []  # a stack: appended at the end
    for symbol in reversed([int(s) for s in symbols]):  # last symbol first
        if not 0 <= symbol < size:
            raise AnsError(f"symbol {symbol} outside the model")
        start = cdf[symbol]
        freq = cdf[symbol + 1] - start
        if (state >> FLUSH_SHIFT) >= freq:  # flush the low word
            words.append(state & WORD_MASK)
            state >>= WORD_BITS
        state = ((state // freq) << PRECISION) | (start + state % freq)
    # get_compressed(): append the final state as 32-bit chunks, least
    # significant first, leaving out the all-zero high chunks (so the last word
    # is the most significant non-zero chunk; state 0 appends nothing).
    while state:
        words.append(state & WORD_MASK)
        state >>= WORD_BITS
    return np.array(words, dtype=np.uint32)


def _initial_state(stack: list[int]) -> int:
    """Pop the initial state off the end of the word stack."""
    if not stack:
        return 0
    first = stack.pop()
    if first == 0:
        raise AnsError("rANS words must not end in a zero word")
    state = first
    while stack:
        state = (state << WORD_BITS) | stack.pop()
        if state >= LOWER_BOUND:
            break
    return state


def _symbol_for_slot(cdf: list[int], slot: int) -> int:
    """The s with cdf[s] <= slot < cdf[s+1] (binary search)."""
    low, high = 0, len(cdf) - 2
    while low < high:
        middle = (low + high + 1) // 2
        if cdf[middle] <= slot:
            low = middle
        else:
            high = middle - 1
    return low


def decode_words_with_state(words, counts, count: int):
    """Decode ``count`` symbols; return (dense symbols, final state, words not read)."""
    cdf = cumulative(counts)
    stack = [int(w) for w in np.asarray(words, dtype=np.uint32).reshape(-1)]
    state = _initial_state(stack)
    out = np.empty(count, dtype=np.int32)
    for position in range(count):
        slot = state & PRECISION_MASK
        symbol = _symbol_for_slot(cdf, slot)
        start = cdf[symbol]
        freq = cdf[symbol + 1] - start
        state = (state >> PRECISION) * freq + (slot - start)
        if state < LOWER_BOUND and stack:  # refill from the end of the array
            state = (state << WORD_BITS) | stack.pop()
        out[position] = symbol
    return out, state, len(stack)


def is_exhausted(final_state: int, words_left: int = 0) -> bool:
    """Mirror of AnsCoder.is_empty(): the state is exactly 0.

    (state == 0 implies no words are left; words_left is accepted so callers
    can assert both, as the specification states them.)
    """
    return final_state == 0 and words_left == 0


def decode_words(words, counts, count: int) -> np.ndarray:
    """Dense symbol indices (indices into the used-symbol list); raises AnsError
    unless the stream ends exactly (final state 0, every word read)."""
    symbols, state, left = decode_words_with_state(words, counts, count)
    if not is_exhausted(state, left):
        raise AnsError(f"coded words left over after {count} symbols")
    return symbols
