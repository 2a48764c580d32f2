"""The compression math: magnitude pruning, k-means weight sharing, shared gradients."""
