"""Caffemodels the tests build themselves: current and legacy nets, every BlobProto variant."""

from __future__ import annotations

import numpy as np

from cmpstore.caffe import wire
from cmpstore.caffe._proto import caffe_pb2
from cmpstore.caffe.caffemodel import caffemodel_bytes
from cmpstore.synthetic import LENET, build_model, pruned_quantized


def lenet_like_bytes(seed: int = 0) -> bytes:
    return caffemodel_bytes(build_model(LENET, seed))


def layer_net_bytes(seed: int = 1) -> bytes:
    """A V2 net with grouped/bias-less convolution, deconvolution, BatchNorm, Scale, PReLU, transposed IP."""
    rng = np.random.default_rng(seed)
    net = caffe_pb2.NetParameter(name="zoo")
    net.layer.add(name="data", type="Input", top=["data"]).input_param.shape.add(dim=[1, 4, 8, 8])

    def add(name, type_, shapes, values=None):
        layer = net.layer.add(name=name, type=type_, bottom=["data"], top=[name])
        for index, shape in enumerate(shapes):
            blob = layer.blobs.add()
            blob.shape.dim.extend(shape)
            data = values[index] if values else rng.normal(size=int(np.prod(shape))).astype(np.float32)
            blob.data.extend(data.tolist())
        return layer

    conv = add(
        "grouped",
        "Convolution",
        [(8, 2, 3, 3), (8,)],
        [pruned_quantized((8, 2, 3, 3), 0.4, 16, rng), rng.normal(size=8).astype(np.float32)],
    )
    conv.convolution_param.num_output = 8
    conv.convolution_param.group = 2
    conv.convolution_param.kernel_size.append(3)
    nobias = add("nobias", "Convolution", [(4, 4, 1, 1)], [pruned_quantized((4, 4, 1, 1), 0.5, 4, rng)])
    nobias.convolution_param.bias_term = False
    add("deconv", "Deconvolution", [(4, 4, 2, 2), (4,)])
    add("bn", "BatchNorm", [(4,), (4,), (1,)])
    add("scale", "Scale", [(4,), (4,)])
    add("prelu", "PReLU", [(4,)])
    ip = add(
        "ip_t",
        "CmpInnerProduct",
        [(256, 10), (10,)],
        [pruned_quantized((256, 10), 0.1, 32, rng), rng.normal(size=10).astype(np.float32)],
    )
    ip.inner_product_param.num_output = 10
    ip.inner_product_param.transpose = True
    ip.inner_product_param.sparse_ratio = 0.9
    ip.inner_product_param.class_num = 32
    ip.inner_product_param.quantize_term = True
    return net.SerializeToString()


def legacy_net_bytes(seed: int = 2, *, unpacked: bool = False, double: bool = False) -> bytes:
    """A V1 ``layers`` net with num/channels/height/width blob shapes."""
    rng = np.random.default_rng(seed)
    net = caffe_pb2.NetParameter(name="legacy")
    conv = net.layers.add(name="conv1", type=caffe_pb2.V1LayerParameter.CONVOLUTION, bottom=["data"], top=["conv1"])
    conv.convolution_param.num_output = 6
    ip = net.layers.add(name="ip1", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT, bottom=["conv1"], top=["ip1"])
    net.layers.add(name="relu", type=caffe_pb2.V1LayerParameter.RELU, bottom=["ip1"], top=["ip1"])
    for layer, shape in ((conv, (6, 3, 3, 3)), (ip, (1, 1, 10, 54))):
        blob = layer.blobs.add(num=shape[0], channels=shape[1], height=shape[2], width=shape[3])
        weights = pruned_quantized(shape, 0.3, 8, rng)
        (blob.double_data if double else blob.data).extend(weights.tolist())
        bias = layer.blobs.add(num=1, channels=1, height=1, width=shape[0] if layer is conv else 10)
        bias.data.extend(rng.normal(size=bias.width).astype(np.float32).tolist())
    data = net.SerializeToString()
    return unpack_floats(data) if unpacked else data


def unpack_floats(data: bytes) -> bytes:
    """Rewrite every packed BlobProto.data / double_data field as unpacked elements (as old writers did)."""

    def message(buf, start, end, depth):
        out = bytearray()
        for field in wire.iter_fields(buf, start, end):
            nested = (depth == 0 and field.number in (100, 2)) or (depth == 1 and field.number in (7, 6))
            if field.wire_type == wire.LENGTH_DELIMITED and nested:
                content = message(buf, field.value_start, field.end, depth + 1)
                out += wire.length_delimited(field.number, len(content)) + content
            elif depth == 2 and field.wire_type == wire.LENGTH_DELIMITED and field.number in (5, 8):
                size, wire_type = (4, wire.FIXED32) if field.number == 5 else (8, wire.FIXED64)
                tag = wire.encode_tag(field.number, wire_type)
                for pos in range(field.value_start, field.end, size):
                    out += tag + buf[pos : pos + size]
            else:
                out += buf[field.start : field.end]
        return bytes(out)

    return message(data, 0, len(data), 0)


def float16_net_bytes(seed: int = 3, float_raw_data: bool = True) -> bytes:
    """A net as OpenCV-era tools wrote them (hyperlpr's): FLOAT16 ``raw_data`` blobs beside float32 ``data`` ones.

    Also, unless ``float_raw_data`` is false, a ``raw_data`` blob of type FLOAT (NVIDIA Caffe's float32
    storage, which needs format version 4).
    """
    rng = np.random.default_rng(seed)
    net = caffe_pb2.NetParameter(name="fp16")
    net.layer.add(name="data", type="Input", top=["data"]).input_param.shape.add(dim=[1, 3, 8, 8])

    def float16_blob(layer, shape, values):
        blob = layer.blobs.add()
        blob.shape.dim.extend(shape)
        blob.raw_data_type = caffe_pb2.FLOAT16
        blob.raw_data = values.astype("<f2").tobytes()

    conv = net.layer.add(name="conv", type="Convolution", bottom=["data"], top=["conv"])
    conv.convolution_param.num_output = 8
    float16_blob(conv, (8, 3, 3, 3), pruned_quantized((8, 3, 3, 3), 0.5, 16, rng))
    float16_blob(conv, (8,), rng.normal(size=8))
    bn = net.layer.add(name="bn", type="BatchNorm", bottom=["conv"], top=["conv"])
    for shape in ((8,), (8,), (1,)):
        bn.blobs.add(data=rng.normal(size=shape).astype(np.float32).tolist()).shape.dim.extend(shape)
    ip = net.layer.add(name="ip", type="InnerProduct", bottom=["conv"], top=["ip"])
    ip.inner_product_param.num_output = 10
    float16_blob(ip, (10, 288), pruned_quantized((10, 288), 0.2, 8, rng))
    float_values = rng.normal(size=10).astype("<f4").tobytes()
    if float_raw_data:
        ip.blobs.add(raw_data_type=caffe_pb2.FLOAT, raw_data=float_values).shape.dim.append(10)
    return net.SerializeToString()
