import json

import numpy as np
import pytest
from common import run_cli, shared_model
from nets import lenet_like_bytes

from cmpstore import api
from cmpstore.synthetic import build_model

RATIOS = "conv1=0.33,conv2=0.8,fc1=0.9,fc2=0.8"

CMP_PROTOTXT = """
name: "LeNet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 28 dim: 28 } } }
layer { name: "conv1" type: "CmpConvolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 20 kernel_size: 5 sparse_ratio: 0.33 class_num: 256 quantize_term: true } }
layer { name: "conv2" type: "CmpConvolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 50 kernel_size: 5 sparse_ratio: 0.8 quantize_term: true } }
layer { name: "fc1" type: "CmpInnerProduct" bottom: "conv2" top: "fc1"
  inner_product_param { num_output: 500 sparse_ratio: 0.9 class_num: 32 quantize_term: true } }
layer { name: "fc2" type: "CmpInnerProduct" bottom: "fc1" top: "fc2"
  inner_product_param { num_output: 10 sparse_ratio: 0.8 quantize_term: true } }
"""


def test_prune_then_quantize_matches_compress(tmp_path):
    source = shared_model("lenet_iter_10000.caffemodel")
    code, out, err = run_cli("prune", source, "--ratios", RATIOS, "-o", tmp_path / "p.caffemodel")
    assert code == 0, err
    assert "fc1" in out and "10.0%" in out
    code, out, err = run_cli(
        "quantize", tmp_path / "p.caffemodel", "--clusters", "conv=256,fc=32", "-o", tmp_path / "pq.caffemodel"
    )
    assert code == 0, err
    assert "MSE" in out
    code, _, err = run_cli(
        "compress", source, "--ratios", RATIOS, "--clusters", "conv=256,fc=32", "-o", tmp_path / "pq.cmps"
    )
    assert code == 0, err
    assert api.verify(tmp_path / "pq.caffemodel", tmp_path / "pq.cmps") == []
    reference = api.load_weights(shared_model("lenet_pq_seed_schedule.caffemodel"))
    ours = api.load_weights(tmp_path / "pq.cmps")
    for name in ("conv1", "conv2", "fc1", "fc2"):
        np.testing.assert_allclose(ours[name][0], reference[name][0], rtol=0, atol=1e-5)


def test_settings_from_a_cmp_prototxt(tmp_path):
    (tmp_path / "net.prototxt").write_text(CMP_PROTOTXT)
    (tmp_path / "m.caffemodel").write_bytes(lenet_like_bytes())
    code, out, err = run_cli(
        "compress", tmp_path / "m.caffemodel", "--from-prototxt", tmp_path / "net.prototxt", "-o", tmp_path / "m.cmps"
    )
    assert code == 0, err
    _, report, _ = run_cli("report", tmp_path / "m.cmps", "--json")
    rows = {row["name"]: row for row in json.loads(report)["layers"]}
    assert rows["fc1"]["nonzero_percent"] <= 10.0
    assert rows["fc1"]["distinct_values"] <= 32 and rows["conv2"]["distinct_values"] <= 256


def test_optimal_init_has_the_least_error(tmp_path):
    (tmp_path / "m.caffemodel").write_bytes(lenet_like_bytes())
    errors = {}
    for init in ("linear", "density", "optimal"):
        code, out, err = run_cli(
            "quantize",
            tmp_path / "m.caffemodel",
            "--clusters",
            "fc2=4",
            "--init",
            init,
            "-o",
            tmp_path / f"{init}.caffemodel",
        )
        assert code == 0, err
        errors[init] = float(out.splitlines()[2].split()[-1])
    assert errors["optimal"] <= min(errors["linear"], errors["density"])


def test_bad_settings(tmp_path):
    (tmp_path / "m.caffemodel").write_bytes(lenet_like_bytes())
    for args, message in (
        (["--ratios", "conv1=1.5"], "must be in [0, 1)"),
        (["--ratios", "nolayer=0.5"], "'nolayer'"),
        (["--ratios", "conv1"], "expected NAME=VALUE"),
        ([], "nothing to do"),
    ):
        code, _, err = run_cli("prune", tmp_path / "m.caffemodel", *args, "-o", tmp_path / "out.caffemodel")
        assert code == 2 and message in err, err
        assert not (tmp_path / "out.caffemodel").exists()


def test_never_overwrites_the_input_even_with_force(tmp_path):
    model = tmp_path / "m.caffemodel"
    model.write_bytes(lenet_like_bytes())
    for command, option in (("prune", "--ratios"), ("quantize", "--clusters")):
        code, _, err = run_cli(
            command, model, option, "fc1=0.5" if option == "--ratios" else "fc1=4", "-o", model, "--force"
        )
        assert code == 2 and "refusing to overwrite an input" in err
    assert model.read_bytes() == lenet_like_bytes()


@pytest.mark.parametrize("name", ["out.caffemodel", "out.caffemodel.h5", "out.npz"])
def test_compress_refuses_an_output_named_for_another_format(tmp_path, name):
    """compress writes .cmps only: an output named as a caffemodel would hold a .cmps file."""
    source = tmp_path / "lenet.caffemodel"
    api.save_model(build_model(), source)
    code, _, err = run_cli("compress", source, "--ratios", "fc=0.9", "--clusters", "fc=16", "-o", tmp_path / name)
    assert code == 2 and f"{name}: compress writes a .cmps file, not " in err, err
    assert not (tmp_path / name).exists()
