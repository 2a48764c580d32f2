"""An HDF5 weights file is read only from itself: nothing it points at elsewhere is ever opened.

HDF5 can take a dataset's values from another file (external raw storage, a
virtual dataset), link to objects in another file (external links), or load a
filter plugin from disk.  A hostile ``.h5`` used any of these to make
``encode`` copy ``/etc/passwd`` into its output.  Each is refused with an error
that names the file, the object and the reason, and no output is written.
"""

import h5py
import numpy as np
import pytest
from common import run_cli

from cmpstore import api
from cmpstore.caffe import hdf5
from cmpstore.errors import ModelError

SECRET = b"root:x:0:0:the secret the hostile file wants copied\n" * 4


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_bytes(SECRET)
    return path


def caffe_h5(path, build_blob):
    """A Caffe-shaped HDF5 file with layer 'conv1' whose blob 0 is made by ``build_blob(group)``."""
    with h5py.File(path, "w") as h5:
        layer = h5.create_group("data").create_group("conv1")
        build_blob(layer)
        layer.create_dataset("1", data=np.zeros(4, dtype="<f4"))
    return path


def stored_in(secret):
    """A blob builder whose dataset keeps its raw values in the file ``secret``."""
    count = len(SECRET) // 4
    return lambda layer: layer.create_dataset("0", shape=(count,), dtype="<f4", external=[(str(secret), 0, count * 4)])


def assert_refused(path, reason: str, where: str) -> None:
    with pytest.raises(ModelError) as caught:
        api.load_model(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: object '{where}': "), message
    assert reason in message, message
    out = path.with_suffix(".cmps")
    status, stdout, stderr = run_cli("encode", path, "-o", out)
    assert status == 2 and reason in stderr and "Traceback" not in stderr
    assert not out.exists()


def test_external_raw_storage_is_refused(tmp_path, secret):
    path = caffe_h5(
        tmp_path / "external.h5",
        lambda layer: layer.create_dataset(
            "0", shape=(len(SECRET) // 4,), dtype="<f4", external=[(str(secret), 0, len(SECRET))]
        ),
    )
    assert_refused(path, f"keeps its values in an external file ('{secret}')", "/data/conv1/0")


def test_external_link_on_a_blob_is_refused(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as other:
        other.create_dataset("stolen", data=np.arange(4, dtype="<f4"))
    path = caffe_h5(
        tmp_path / "blob_link.h5", lambda layer: layer.__setitem__("0", h5py.ExternalLink("other.h5", "/stolen"))
    )
    assert_refused(path, "is an external link to '/stolen' in 'other.h5'", "/data/conv1/0")


def test_external_link_on_a_layer_is_refused(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as other:
        other.create_group("layer").create_dataset("0", data=np.arange(4, dtype="<f4"))
    path = tmp_path / "layer_link.h5"
    with h5py.File(path, "w") as h5:
        h5.create_group("data")["conv1"] = h5py.ExternalLink("other.h5", "/layer")
    assert_refused(path, "is an external link to '/layer'", "/data/conv1")


def test_external_link_on_the_data_group_is_refused(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as other:
        other.create_group("data").create_group("conv1").create_dataset("0", data=np.arange(4, dtype="<f4"))
    path = tmp_path / "data_link.h5"
    with h5py.File(path, "w") as h5:
        h5["data"] = h5py.ExternalLink("other.h5", "/data")
    assert_refused(path, "is an external link to '/data'", "/data")


def test_external_link_on_a_diff_is_refused(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as other:
        other.create_dataset("stolen", data=np.arange(4, dtype="<f4"))
    path = caffe_h5(tmp_path / "diff_link.h5", lambda layer: layer.create_dataset("0", data=np.ones(4, "<f4")))
    with h5py.File(path, "a") as h5:
        h5.create_group("diff").create_group("conv1")["0"] = h5py.ExternalLink("other.h5", "/stolen")
    assert_refused(path, "is an external link", "/diff/conv1/0")


def test_soft_link_is_refused(tmp_path):
    def soft(layer):
        layer.create_dataset("hidden", data=np.ones(4, "<f4"))
        layer["0"] = h5py.SoftLink("/data/conv1/hidden")

    path = caffe_h5(tmp_path / "soft.h5", soft)
    assert_refused(path, "is a soft link", "/data/conv1/0")


def test_virtual_dataset_is_refused(tmp_path):
    with h5py.File(tmp_path / "source.h5", "w") as source:
        source.create_dataset("values", data=np.arange(4, dtype="<f4"))

    def virtual(layer):
        layout = h5py.VirtualLayout(shape=(4,), dtype="<f4")
        layout[:] = h5py.VirtualSource(str(tmp_path / "source.h5"), "values", shape=(4,))
        layer.create_virtual_dataset("0", layout)

    path = caffe_h5(tmp_path / "virtual.h5", virtual)
    assert_refused(path, "is a virtual dataset", "/data/conv1/0")


def test_filter_plugin_is_refused(tmp_path):
    def plugin(layer):
        layer.create_dataset("0", data=np.ones(16, "<f4"), chunks=(16,), compression=32001, allow_unknown_filter=True)

    path = caffe_h5(tmp_path / "plugin.h5", plugin)
    assert_refused(path, "HDF5 filter 32001, which would be loaded as a plugin", "/data/conv1/0")


def test_builtin_compression_still_reads(tmp_path):
    values = np.linspace(-1, 1, 64, dtype="<f4")
    path = caffe_h5(
        tmp_path / "gzip.h5",
        lambda layer: layer.create_dataset("0", data=values, compression="gzip", shuffle=True, fletcher32=True),
    )
    np.testing.assert_array_equal(api.load_weights(path)["conv1"][0], values)


def test_user_block_is_refused(tmp_path):
    path = tmp_path / "userblock.h5"
    with h5py.File(path, "w", userblock_size=512) as h5:
        h5.create_group("data").create_group("conv1").create_dataset("0", data=np.ones(4, "<f4"))
    with pytest.raises(ModelError, match=r"userblock.h5: HDF5 file starts with a 512-byte user block"):
        hdf5.read_hdf5(path)


def test_a_decoded_external_dataset_never_carries_the_secret(tmp_path, secret):
    """The original attack end to end: encode must fail, so there is nothing to decode the secret from."""
    path = caffe_h5(
        tmp_path / "attack.h5",
        lambda layer: layer.create_dataset(
            "0", shape=(len(SECRET) // 4,), dtype="<f4", external=[(str(secret), 0, len(SECRET))]
        ),
    )
    status, _, stderr = run_cli("encode", path, "-o", tmp_path / "attack.cmps")
    assert status == 2, stderr
    assert not (tmp_path / "attack.cmps").exists()
    assert SECRET.decode()[:20] not in stderr


def test_a_layer_name_that_is_not_utf8_is_shown_escaped_and_refused_for_hdf5(tmp_path):
    from cmpstore.caffe.caffemodel import caffemodel_bytes
    from cmpstore.synthetic import build_model

    source = tmp_path / "badname.caffemodel"
    source.write_bytes(caffemodel_bytes(build_model()).replace(b"conv1", b"co\xffv1", 1))
    report = api.report(source)
    assert report.layers[0].name == "co\\xffv1"
    assert '"co\\\\xffv1"' in report.to_json()
    with pytest.raises(ModelError, match=r"layer 'co\\xffv1': a name that is not valid UTF-8 cannot name an HDF5"):
        api.save_model(api.load_model(source), tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


def test_a_diff_that_does_not_fill_its_blob_is_refused_for_hdf5(tmp_path):
    from cmpstore.caffe._proto import caffe_pb2
    from cmpstore.caffe.caffemodel import split_caffemodel

    net = caffe_pb2.NetParameter(name="d")
    layer = net.layer.add(name="fc", type="InnerProduct")
    blob = layer.blobs.add(data=[1.0] * 6, diff=[0.5] * 4)
    blob.shape.dim.extend([2, 3])
    model = split_caffemodel(net.SerializeToString())
    message = r"out.h5: layer 'fc' blob 0: holds 4 diff values for a blob of shape \[2, 3\]"
    with pytest.raises(ModelError, match=message):
        api.save_model(model, tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


def test_hard_links_to_one_dataset_are_bounded_in_total(tmp_path):
    """Each name passes the per-dataset bound; together they would declare far more than is stored."""
    path = tmp_path / "aliased.caffemodel.h5"
    with h5py.File(path, "w") as h5:
        first = h5.create_group("data").create_group("l0")
        first.create_dataset("0", data=np.zeros((256, 1024), np.float32), compression="gzip", compression_opts=9)
        for index in range(1, 2000):
            h5["data"].create_group(f"l{index}")["0"] = first["0"]  # a hard link, not a copy
    assert path.stat().st_size < 4 << 20  # 2,000 names of one 1 MiB dataset: 2 GiB declared
    with pytest.raises(ModelError, match=r"declare [\d,]+ bytes of values in all but store [\d,]+ bytes \(1 distinct"):
        api.load_model(path)
