import pytest

from cmpstore.caffe import netproto
from cmpstore.errors import ModelError

LENET_TRAIN_TEST = """
name: "LeNet"
layer {
  name: "mnist" type: "Data" top: "data" top: "label"
  include { phase: TRAIN }
  transform_param { scale: 0.00390625 }
  data_param { source: "examples/mnist/mnist_train_lmdb" batch_size: 64 backend: LMDB }
}
layer {
  name: "conv1" type: "CmpConvolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param {
    num_output: 20 kernel_size: 5 stride: 1
    weight_filler { type: "xavier" } bias_filler { type: "constant" }
    sparse_ratio: 0.33 class_num: 256 quantize_term: true
  }
}
layer {
  name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 }
}
layer {
  name: "fc1" type: "CmpInnerProduct" bottom: "pool1" top: "fc1"
  inner_product_param { num_output: 500 weight_filler { type: "xavier" } sparse_ratio: 0.9 }
}
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc1" bottom: "label" top: "loss" }
"""


def test_reads_a_train_test_prototxt(tmp_path):
    path = tmp_path / "lenet.prototxt"
    path.write_text(LENET_TRAIN_TEST)
    net = netproto.read_prototxt(path)
    assert [layer.name for layer in net.layer] == ["mnist", "conv1", "pool1", "fc1", "loss"]
    conv = net.layer[1].convolution_param
    assert (conv.sparse_ratio, conv.class_num, conv.quantize_term) == (pytest.approx(0.33), 256, True)
    fc = net.layer[3].inner_product_param
    assert (fc.class_num, fc.quantize_term) == (32, False)  # the fork's defaults
    kinds = {info.name: info.kind for info in netproto.layer_infos(net)}
    assert kinds == {"mnist": "", "conv1": "conv", "pool1": "", "fc1": "fc", "loss": ""}


def test_deploy_rewrites_cmp_layers(tmp_path):
    path = tmp_path / "lenet.prototxt"
    path.write_text(LENET_TRAIN_TEST)
    net = netproto.read_prototxt(path)
    assert netproto.to_deploy(net) == ["conv1", "fc1"]
    assert [layer.type for layer in net.layer][1:4] == ["Convolution", "Pooling", "InnerProduct"]
    assert not net.layer[1].convolution_param.HasField("sparse_ratio")
    assert net.layer[1].convolution_param.num_output == 20


def test_bad_prototxt_names_the_file(tmp_path):
    path = tmp_path / "broken.prototxt"
    path.write_text("layer { name: 'x' bogus_field: 3 }")
    with pytest.raises(ModelError, match="broken.prototxt: not a valid net prototxt"):
        netproto.read_prototxt(path)
    with pytest.raises(ModelError, match="no such file"):
        netproto.read_prototxt(tmp_path / "missing.prototxt")
