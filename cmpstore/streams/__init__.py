"""Byte-level streams: varints, relative indices, codebooks, Huffman and rANS coding."""
