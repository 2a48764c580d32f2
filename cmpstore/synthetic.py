"""Seeded, pruned and weight-shared example models, built without Caffe.

Used by the README's first command, the tests and the benchmarks: the same
seed always gives the same bytes.  Quantization here is one nearest-centroid
assignment to evenly spaced centroids, enough to give a realistic codebook;
it is not the trained quantization of Deep Compression.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import netproto
from .model import DATA_FIELD, LAYER_FIELD, BlobAddress, Model, Payload, SourceFormat


@dataclass(frozen=True)
class LayerSpec:
    """A weight layer: its name, type, weight shape, density after pruning and codebook size."""

    name: str
    type: str  # "Convolution", "InnerProduct", ...
    weight_shape: tuple[int, ...]
    density: float = 1.0
    clusters: int | None = None
    bias: bool = True


LENET = (
    LayerSpec("conv1", "Convolution", (20, 1, 5, 5), 0.67, 256),
    LayerSpec("conv2", "Convolution", (50, 20, 5, 5), 0.20, 256),
    LayerSpec("fc1", "InnerProduct", (500, 800), 0.10, 32),
    LayerSpec("fc2", "InnerProduct", (10, 500), 0.20, 32),
)


def pruned_quantized(shape, density: float, clusters: int | None, rng: np.random.Generator) -> np.ndarray:
    """Gaussian weights, magnitude-pruned to ``density``, snapped to ``clusters`` levels."""
    weights = rng.normal(0.0, 0.05, size=int(np.prod(shape))).astype(np.float32)
    if density < 1.0:
        keep = int(round(density * weights.size))
        threshold = np.sort(np.abs(weights))[weights.size - keep - 1] if keep < weights.size else -1.0
        weights[np.abs(weights) <= threshold] = 0.0
    if clusters:
        nonzero = weights != 0
        if nonzero.any():
            survivors = weights[nonzero]
            centroids = np.linspace(survivors.min(), survivors.max(), clusters, dtype=np.float32)
            nearest = np.abs(survivors[:, None] - centroids[None, :]).argmin(axis=1)
            weights[nonzero] = centroids[nearest]
    return weights


def build_model(specs=LENET, seed: int = 0, name: str = "example") -> Model:
    """A binary-caffemodel :class:`~cmpstore.model.Model` with these weight layers."""
    rng = np.random.default_rng(seed)
    net = netproto.NetParameter(name=name)
    payloads = []
    bottom = "data"
    input_layer = net.layer.add(name="data", type="Input", top=["data"])
    input_layer.input_param.shape.add(dim=[1, *_input_shape(specs[0])])
    for spec in specs:
        layer = net.layer.add(name=spec.name, type=spec.type, bottom=[bottom], top=[spec.name])
        if spec.type in netproto.CONV_TYPES:
            layer.convolution_param.num_output = spec.weight_shape[0]
            layer.convolution_param.kernel_size.append(spec.weight_shape[-1])
            layer.convolution_param.bias_term = spec.bias
        else:
            layer.inner_product_param.num_output = spec.weight_shape[0]
            layer.inner_product_param.bias_term = spec.bias
        shapes = [spec.weight_shape] + ([(spec.weight_shape[0],)] if spec.bias else [])
        for blob_index, shape in enumerate(shapes):
            layer.blobs.add().shape.dim.extend(shape)
            values = (
                pruned_quantized(shape, spec.density, spec.clusters, rng)
                if blob_index == 0
                else rng.normal(0.0, 0.01, size=shape).astype(np.float32)
            )
            address = BlobAddress(LAYER_FIELD, len(net.layer) - 1, blob_index, DATA_FIELD)
            payloads.append(Payload(address, values.astype("<f4").reshape(-1)))
        bottom = spec.name
    return Model(netproto.serialize(net), payloads, SourceFormat.CAFFEMODEL)


def _input_shape(first: LayerSpec) -> list[int]:
    if len(first.weight_shape) == 4:
        return [first.weight_shape[1], 28, 28]
    return [first.weight_shape[1]]
