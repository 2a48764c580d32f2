"""Load a ``.cmps`` file into OpenCV's dnn module, from memory.

OpenCV 3 and 4 read Caffe nets (``cv2.dnn.readNetFromCaffe``); OpenCV 5
removed that importer ("Caffe importer has been removed. Please use
ONNX-converted models"), so the ``deploy`` extra pins
``opencv-python-headless<5``.  OpenCV is imported only when this is called.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import UsageError


def read_net(source: str | os.PathLike, prototxt: str | os.PathLike, *, deploy: bool = True):
    """A ready ``cv2.dnn.Net``: the deploy ``prototxt`` with the weights of ``source``, decoded in memory.

    ``source`` is a ``.cmps`` file (or any model file cmpstore reads).  With
    ``deploy`` (the default) the fork's Cmp layers in the weights become
    stock ones, which OpenCV knows; their values are the same either way.

    Examples
    --------
    >>> net = read_net("lenet.cmps", "lenet_deploy.prototxt")  # doctest: +SKIP
    >>> net.setInput(image_blob); scores = net.forward()  # doctest: +SKIP
    """
    from .api import caffemodel_array

    try:
        import cv2
    except ImportError:
        raise UsageError("OpenCV is not installed: pip install 'cmpstore[deploy]' (opencv-python-headless<5)") from None
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        raise UsageError(
            f"OpenCV {cv2.__version__} has no Caffe importer (OpenCV 5 removed it): install "
            "'opencv-python-headless<5', or export the model to ONNX"
        )
    prototxt = os.fspath(prototxt)
    try:
        with open(prototxt, "rb") as stream:
            net_text = stream.read()
    except OSError as exc:
        raise UsageError(f"cannot read the deploy prototxt ({exc.strerror})", path=prototxt) from None
    weights = caffemodel_array(source, deploy=deploy)
    try:
        # As uint8 arrays: OpenCV's Python binding takes a bytes object for a file name.
        return cv2.dnn.readNetFromCaffe(np.frombuffer(net_text, np.uint8), weights)
    except cv2.error as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise UsageError(f"OpenCV cannot load this net: {lines[-1] if lines else exc}", path=prototxt) from None
