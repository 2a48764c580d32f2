"""Seeded, pruned and weight-shared example models, built without Caffe.

Used by the README's first command, the tests and the benchmarks: the same
seed always gives the same bytes.  Quantization here is one nearest-centroid
assignment to evenly spaced centroids, enough to give a realistic codebook;
it is not the trained quantization of Deep Compression.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .caffe import netproto
from .caffe.model import DATA_FIELD, LAYER_FIELD, BlobAddress, Model, Payload, SourceFormat
from .compression.settings import checked_seed
from .errors import option


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


# The paper's pruned densities (Han et al. 2016, Tables 4 and 5); 256 clusters for conv, 32 for fc.
ALEXNET = (
    LayerSpec("conv1", "Convolution", (96, 3, 11, 11), 0.84, 256),
    LayerSpec("conv2", "Convolution", (256, 48, 5, 5), 0.38, 256),  # group 2
    LayerSpec("conv3", "Convolution", (384, 256, 3, 3), 0.35, 256),
    LayerSpec("conv4", "Convolution", (384, 192, 3, 3), 0.37, 256),  # group 2
    LayerSpec("conv5", "Convolution", (256, 192, 3, 3), 0.37, 256),  # group 2
    LayerSpec("fc6", "InnerProduct", (4096, 9216), 0.09, 32),
    LayerSpec("fc7", "InnerProduct", (4096, 4096), 0.09, 32),
    LayerSpec("fc8", "InnerProduct", (1000, 4096), 0.25, 32),
)

VGG16 = tuple(
    LayerSpec(name, "Convolution", shape, density, 256)
    for name, shape, density in (
        ("conv1_1", (64, 3, 3, 3), 0.58),
        ("conv1_2", (64, 64, 3, 3), 0.22),
        ("conv2_1", (128, 64, 3, 3), 0.34),
        ("conv2_2", (128, 128, 3, 3), 0.36),
        ("conv3_1", (256, 128, 3, 3), 0.53),
        ("conv3_2", (256, 256, 3, 3), 0.24),
        ("conv3_3", (256, 256, 3, 3), 0.42),
        ("conv4_1", (512, 256, 3, 3), 0.32),
        ("conv4_2", (512, 512, 3, 3), 0.27),
        ("conv4_3", (512, 512, 3, 3), 0.34),
        ("conv5_1", (512, 512, 3, 3), 0.35),
        ("conv5_2", (512, 512, 3, 3), 0.29),
        ("conv5_3", (512, 512, 3, 3), 0.36),
    )
) + (
    LayerSpec("fc6", "InnerProduct", (4096, 25088), 0.04, 32),
    LayerSpec("fc7", "InnerProduct", (4096, 4096), 0.04, 32),
    LayerSpec("fc8", "InnerProduct", (1000, 4096), 0.23, 32),
)


def pruned_quantized(shape, density: float, clusters: int | None, rng: np.random.Generator) -> np.ndarray:
    """Gaussian weights, magnitude-pruned to ``density``, snapped to ``clusters`` levels."""
    weights = rng.standard_normal(size=math.prod(shape), dtype=np.float32) * np.float32(0.05)
    if density < 1.0:
        keep = int(round(density * weights.size))
        if keep < weights.size:
            magnitudes = np.abs(weights)
            threshold = np.partition(magnitudes, weights.size - keep - 1)[weights.size - keep - 1]
            weights[magnitudes <= threshold] = 0.0
    if clusters:
        nonzero = np.flatnonzero(weights)
        if nonzero.size:
            survivors = weights[nonzero]
            centroids = np.linspace(survivors.min(), survivors.max(), clusters, dtype=np.float32)
            nearest = np.searchsorted((centroids[:-1] + centroids[1:]) / 2, survivors)
            weights[nonzero] = centroids[nearest]
    return weights


def build_model(specs=LENET, seed: int = 0, name: str = "example") -> Model:
    """A binary-caffemodel :class:`~cmpstore.caffe.model.Model` with these weight layers."""
    rng = np.random.default_rng(checked_seed(seed, option("seed")))
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
