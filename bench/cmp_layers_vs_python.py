"""cmpstore's C++ Cmp layers against its Python prune and k-means, on the real LeNet weights.

    PYTHONPATH="$(tools/install_pycaffe.sh | tail -n 1)" python bench/cmp_layers_vs_python.py [--schedule S.json ...]

For each schedule's final settings (default: the fork's seed schedule),
loads ../shared/models/lenet_iter_10000.caffemodel into a deploy LeNet whose
pruned layers are CmpConvolution/CmpInnerProduct, lets Caffe save what the
layers made of the weights (no forward pass), and compares each layer with
:func:`cmpstore.compression.transform.prune_and_share` on the same weights: masks
(identical or not), centroids (largest difference), and whether every
weight is the same float32 bits.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
from common import ROOT, SHARED_MODELS

from cmpstore import api
from cmpstore.compression.transform import prune_and_share
from cmpstore.finetune.schedule import load_schedule

DEPLOY = ROOT / "tests" / "caffe" / "lenet_deploy.prototxt"
KINDS = {"Convolution": "convolution_param", "InnerProduct": "inner_product_param"}


def cmp_net(settings: dict[str, tuple[float, int | None]]) -> str:
    text = DEPLOY.read_text()
    for name, (ratio, clusters) in settings.items():
        for kind, field in KINDS.items():
            head = f'name: "{name}" type: "{kind}"'
            if head in text:
                fields = f"sparse_ratio: {ratio}" + (f" quantize_term: true class_num: {clusters}" if clusters else "")
                text = text.replace(head, f'name: "{name}" type: "Cmp{kind}"')
                text = text.replace(f'top: "{name}" {field} {{ ', f'top: "{name}" {field} {{ {fields} ')
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schedule", nargs="+", default=[str(ROOT / "tools/examples/lenet/seed_schedule.json")])
    args = parser.parse_args()
    pretrained = SHARED_MODELS / "lenet_iter_10000.caffemodel"
    original = api.load_weights(pretrained)
    print(f"{'schedule':<24} {'layer':<6} {'kept':>7} {'values':>6}  mask       centroids max |C++ - Python|  bits")
    for schedule_path in args.schedule:
        schedule = load_schedule(schedule_path)
        last = len(schedule.stages) - 1
        pruned, quantized = schedule.pruned_after(last), schedule.quantized_after(last)
        settings = {name: (pruned.get(name, 0.0), quantized.get(name)) for name in {**pruned, **quantized}}
        with tempfile.TemporaryDirectory() as folder:
            net = os.path.join(folder, "cmp.prototxt")
            saved = os.path.join(folder, "saved.caffemodel")
            with open(net, "w", encoding="utf-8") as stream:
                stream.write(cmp_net(settings))
            script = (
                "import caffe, sys; caffe.set_mode_cpu(); "
                "caffe.Net(sys.argv[1], caffe.TEST, weights=sys.argv[2]).save(sys.argv[3])"
            )
            env = dict(os.environ, GLOG_minloglevel="2")
            subprocess.run([sys.executable, "-c", script, net, str(pretrained), saved], check=True, env=env)
            loaded = api.load_weights(saved)
        for name, (ratio, clusters) in settings.items():
            shared = prune_and_share(original[name][0].copy(), ratio, clusters)
            weights = loaded[name][0]
            same_mask = np.array_equal(weights != 0, shared.mask)
            difference = "-"
            if shared.clustering is not None:
                found = np.unique(weights[weights != 0]).astype(np.float64)
                expected = np.unique(shared.clustering.centroids.astype(weights.dtype)).astype(np.float64)
                difference = (
                    f"{np.max(np.abs(found - expected)):.3g}" if found.shape == expected.shape else "count differs"
                )
            same_bits = np.array_equal(weights.view(np.uint32), shared.weights.view(np.uint32))
            print(
                f"{os.path.basename(schedule_path):<24} {name:<6} {shared.mask.mean():>7.2%} "
                f"{np.unique(weights[weights != 0]).size:>6}  {'identical' if same_mask else 'DIFFERS':<10} "
                f"{difference:>30}  {'identical' if same_bits else 'differ'}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
