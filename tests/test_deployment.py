"""Deployment: caffemodel bytes from memory, OpenCV's dnn module as a consumer, sparse matrices for the user."""

import numpy as np
import pytest
from common import CAFFE_DIR, run_cli, shared_model
from nets import float16_net_bytes

from cmpstore import api
from cmpstore.cmps.reader import open_cmps
from cmpstore.codecs.sparse import SparseCodec
from cmpstore.errors import UsageError
from cmpstore.synthetic import LENET, build_model

LENET_DEPLOY = CAFFE_DIR / "lenet_deploy.prototxt"


@pytest.fixture
def lenet(tmp_path):
    """A pruned, shared LeNet (the synthetic example) as a caffemodel and as a .cmps file."""
    source = tmp_path / "lenet.caffemodel"
    api.save_model(build_model(LENET, seed=0), source)
    encoded = tmp_path / "lenet.cmps"
    api.encode(source, encoded)
    return source, encoded


def test_caffemodel_bytes_are_what_decode_writes(lenet, tmp_path):
    source, encoded = lenet
    api.decode(encoded, tmp_path / "decoded.caffemodel")
    assert api.caffemodel_bytes(encoded) == (tmp_path / "decoded.caffemodel").read_bytes() == source.read_bytes()
    assert api.caffemodel_bytes(api.load_model(source)) == source.read_bytes()


def test_sparse_weights_hold_exactly_the_nonzeros(lenet):
    source, encoded = lenet
    dense = api.load_weights(source)
    for layer in ("conv1", "conv2", "fc1", "fc2"):
        matrix = api.sparse_weights(encoded, layer)
        weights = dense[layer][0]
        assert matrix.shape == (weights.shape[0], weights[0].size)
        assert matrix.nnz == np.count_nonzero(weights)
        assert matrix.dtype == weights.dtype
        assert np.array_equal(matrix.toarray().view(np.uint32), weights.reshape(matrix.shape).view(np.uint32))
    bias = api.sparse_weights(encoded, "fc1", blob=1)
    assert bias.shape == (1, 500) and np.array_equal(bias.toarray()[0], dense["fc1"][1])


def test_a_sparse_coded_blob_is_never_made_dense(lenet, monkeypatch):
    _, encoded = lenet
    cmps = open_cmps(encoded)
    fc1 = next(entry for entry in cmps.entries if entry.layer.name == "fc1" and entry.address.blob_index == 0)
    assert isinstance(fc1.codec, SparseCodec)

    def no_dense_decode(*args, **kwargs):
        raise AssertionError("decoded densely")

    monkeypatch.setattr(SparseCodec, "decode", no_dense_decode)
    monkeypatch.setattr(SparseCodec, "windows", no_dense_decode)
    assert api.sparse_weights(encoded, "fc1").nnz == 40000


def test_sparse_weights_name_a_missing_layer(lenet):
    _, encoded = lenet
    with pytest.raises(UsageError, match="lenet.cmps: no values for layer 'fc9' blob 0 .*conv1, conv2, fc1, fc2"):
        api.sparse_weights(encoded, "fc9")


def _assert_sparse_npz_holds(npz_path, dense: dict[str, list[np.ndarray]]) -> None:
    blobs = api.read_npz(npz_path)
    assert sorted(blobs) == sorted(
        f"{layer}/{index}" for layer, arrays in dense.items() for index in range(len(arrays))
    )
    for layer, arrays in dense.items():
        for index, wanted in enumerate(arrays):
            got = blobs[f"{layer}/{index}"]
            if wanted.ndim >= 2:
                assert got.nnz == np.count_nonzero(wanted)
                assert np.array_equal(got.toarray(), wanted.reshape(got.shape).astype(got.dtype))
                assert got.dtype == (np.float32 if wanted.dtype == np.float16 else wanted.dtype)
            else:
                assert got.dtype == wanted.dtype and got.tobytes() == wanted.tobytes()


def test_sparse_npz_holds_every_blob_and_scipy_reads_its_layout(lenet, tmp_path):
    source, encoded = lenet
    output = tmp_path / "lenet.npz"
    code, out, err = run_cli("decode", encoded, "-o", output, "--sparse")
    assert code == 0 and err == "" and "npz, sparse" in out
    _assert_sparse_npz_holds(output, api.load_weights(source))
    from scipy import sparse

    with np.load(output) as arrays:
        assert arrays["conv2/0/blob_shape"].tolist() == [50, 20, 5, 5]
        fc1 = sparse.csr_array(
            (arrays["fc1/0/data"], arrays["fc1/0/indices"], arrays["fc1/0/indptr"]), shape=tuple(arrays["fc1/0/shape"])
        )
    assert fc1.nnz == 40000 and np.array_equal(fc1.toarray(), api.load_weights(source)["fc1"][0])


def test_sparse_npz_is_built_without_decoding_a_sparse_blob_densely(lenet, tmp_path, monkeypatch):
    _, encoded = lenet

    def no_dense_decode(*args, **kwargs):
        raise AssertionError("decoded densely")

    monkeypatch.setattr(SparseCodec, "decode", no_dense_decode)
    monkeypatch.setattr(SparseCodec, "windows", no_dense_decode)
    api.decode(encoded, tmp_path / "lenet.npz", sparse=True)
    assert api.read_npz(tmp_path / "lenet.npz")["fc1/0"].nnz == 40000


def test_sparse_npz_of_float16_and_raw_float_blobs(tmp_path):
    source = tmp_path / "fp16.caffemodel"
    source.write_bytes(float16_net_bytes())
    api.encode(source, tmp_path / "fp16.cmps")
    api.decode(tmp_path / "fp16.cmps", tmp_path / "fp16.npz", sparse=True)
    _assert_sparse_npz_holds(tmp_path / "fp16.npz", api.load_weights(source))


def test_sparse_needs_an_npz_output(lenet, tmp_path):
    _, encoded = lenet
    code, out, err = run_cli("decode", encoded, "-o", tmp_path / "x.caffemodel", "--sparse")
    assert (code, out) == (2, "") and err.count("\n") == 1 and "--sparse needs an .npz output" in err
    assert not (tmp_path / "x.caffemodel").exists()
    with pytest.raises(UsageError, match="sparse=True needs an .npz output"):
        api.decode(encoded, tmp_path / "x.h5", sparse=True)


def _forward(net, inputs: dict[str, np.ndarray]) -> np.ndarray:
    for name, value in inputs.items():
        net.setInput(value, name)
    return net.forward()


def test_opencv_reads_a_cmps_file_with_outputs_bit_identical_to_the_original(lenet):
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip(f"OpenCV {cv2.__version__} has no Caffe importer; the deploy extra pins opencv-python-headless<5")
    from cmpstore import opencv

    source, encoded = lenet
    image = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    original = _forward(cv2.dnn.readNetFromCaffe(str(LENET_DEPLOY), str(source)), {"data": image})
    decoded = _forward(opencv.read_net(encoded, LENET_DEPLOY), {"data": image})
    assert decoded.tobytes() == original.tobytes()


def test_opencv_reads_the_shared_pruned_lenet(tmp_path):
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip(f"OpenCV {cv2.__version__} has no Caffe importer")
    from cmpstore import opencv

    pruned = shared_model("lenet_pq_seed_schedule.caffemodel")
    api.encode(pruned, tmp_path / "pq.cmps")
    image = np.random.default_rng(1).random((2, 1, 28, 28), dtype=np.float32)
    original = _forward(cv2.dnn.readNetFromCaffe(str(LENET_DEPLOY), str(pruned)), {"data": image})
    assert (
        _forward(opencv.read_net(tmp_path / "pq.cmps", LENET_DEPLOY), {"data": image}).tobytes() == original.tobytes()
    )


def test_opencv_missing_prototxt_is_one_error(lenet, tmp_path):
    pytest.importorskip("cv2")
    from cmpstore import opencv

    _, encoded = lenet
    with pytest.raises(UsageError, match="absent.prototxt: cannot read the deploy prototxt"):
        opencv.read_net(encoded, tmp_path / "absent.prototxt")


def test_caffemodel_bytes_of_a_model_are_checked():
    model = build_model(LENET, seed=0)
    model.payloads[0].values = model.payloads[0].values.astype(">f4")
    with pytest.raises(UsageError, match="big-endian"):
        api.caffemodel_bytes(model)


def test_export_from_a_cmps_file_runs_in_onnx_runtime_as_opencv_runs_the_caffemodel(lenet, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    cv2 = pytest.importorskip("cv2")
    source, encoded = lenet
    code, out, err = run_cli("export", encoded, "--prototxt", LENET_DEPLOY, "-o", tmp_path / "lenet.onnx")
    assert code == 0, err
    assert "ONNX" in out
    image = np.random.default_rng(2).random((8, 1, 28, 28), dtype=np.float32)
    ours = ort.InferenceSession(str(tmp_path / "lenet.onnx")).run(None, {"data": image})[0]
    theirs = _forward(cv2.dnn.readNetFromCaffe(str(LENET_DEPLOY), str(source)), {"data": image})
    assert np.max(np.abs(ours - theirs)) <= 1e-4


@pytest.mark.parametrize(
    "option, message",
    [
        (["--input-shape", "data=1,x"], "--input-shape 'data=1,x': expected NAME=D0,D1,... with whole numbers"),
        (["--input-shape", "data=0,1"], "expected NAME=D0,D1,... with positive dimensions"),
    ],
)
def test_export_refuses_bad_shapes_in_one_line(lenet, tmp_path, option, message):
    _, encoded = lenet
    code, _, err = run_cli("export", encoded, "--prototxt", LENET_DEPLOY, "-o", tmp_path / "x.onnx", *option)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "x.onnx").exists()


def test_export_names_an_unknown_layer(lenet, tmp_path):
    pytest.importorskip("onnx")
    _, encoded = lenet
    odd = tmp_path / "odd.prototxt"
    odd.write_text(LENET_DEPLOY.read_text() + 'layer { name: "odd" type: "Frobnicate" bottom: "prob" top: "odd" }\n')
    code, _, err = run_cli("export", encoded, "--prototxt", odd, "-o", tmp_path / "x.onnx")
    assert code == 2 and "layer 'odd'" in err and "Frobnicate" in err, err
    assert not (tmp_path / "x.onnx").exists()
