"""Caffe's own ImageNet nets (CaffeNet, Flickr-style CaffeNet) through ``cmpstore finetune``, from scratch on CPU.

    PYTHONPATH=/path/to/caffe/python python bench/caffe_reference_nets.py \\
        [--nets caffenet flickr] [--backends cmp stock] [--iterations 2] \\
        [--scratch DIR] [--caffe-root DIR] [--json OUT] [--keep-weights] [--delete-scratch]

Builds a small data set from the colour photographs scikit-image ships
(``skimage.data``: astronaut, chelsea, coffee, rocket, the Hubble deep field,
...), each also mirrored and cropped for training and mirrored and cropped
for val, labelled by what they show; writes them as JPEG files with image lists, makes a train and a val
LMDB with Caffe's ``convert_imageset`` and the mean with
``compute_image_mean``.  Then takes ``models/bvlc_reference_caffenet/train_val.prototxt``
(Data layers on LMDB) and ``models/finetune_flickr_style/train_val.prototxt``
(ImageData layers on image lists) from the Caffe sources, unchanged but for
the data paths and batch sizes, initialises them with Caffe's fillers, and
runs the Deep Compression paper's AlexNet schedule (conv1 0.16, conv2 0.62,
conv3 0.65, conv4 0.63, conv5 0.63, fc6 0.91, fc7 0.91, fc8 0.75 pruned; 256
shared values per conv layer, 32 per fc layer) with a few iterations per
stage, with each backend.  Afterwards it checks the final weights (each
layer's zeros are exactly what ``prune`` removes at its ratio, ``pruned_count``
of them unless magnitudes tie at the threshold; at most ``class_num`` values
per layer), that the ``.cmps`` holds them bit for bit, that the decoded
caffemodel runs in stock Caffe with the train/val net (the same TEST figure
as the driver's) and the unmodified deploy net, and that both backends gave
the same weights.

When Caffe itself cannot build a stock net (brocolli-caffe 9.0.2 aborts on
ImageData with ``mean_file`` and ``crop_size``), the failure and what
``cmpstore finetune`` says about it are reported, and the net is run again
with per-channel ``mean_value`` lines (from the same mean file) in place of
``mean_file``, the alternative the CaffeNet prototxt carries in its comments.

The data are a smoke test of the pipeline on real nets and real images, not
a measure of accuracy: the val images are variants of the training images,
and the nets start from random fillers.  Every caffemodel (about 240 MB
each, 11 per run) is deleted after a run's checks unless --keep-weights.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
from common import ROOT

from cmpstore import api
from cmpstore.compression.prune import prune, pruned_count
from cmpstore.finetune.driver import caffe_tool

#: The paper's AlexNet schedule (Han et al. 2016, table 4): fraction pruned; 256 shared values for conv, 32 for fc.
ALEXNET_RATIOS = {
    "conv1": 0.16,
    "conv2": 0.62,
    "conv3": 0.65,
    "conv4": 0.63,
    "conv5": 0.63,
    "fc6": 0.91,
    "fc7": 0.91,
    "fc8": 0.75,
}
CONV_CLUSTERS, FC_CLUSTERS = 256, 32

#: Colour photographs in skimage.data that need no download, by what they show (the label).
PHOTOGRAPHS = {
    "astronaut": 0,  # people and things
    "coffee": 0,
    "rocket": 0,
    "stereo_motorcycle": 0,  # both views
    "chelsea": 1,  # an animal
    "hubble_deep_field": 2,  # scientific imaging
    "immunohistochemistry": 2,
    "retina": 2,
}
CLASS_NAMES = ("people and things", "animal", "scientific imaging")
TRAIN_VARIANTS = ("full", "mirrored", "crop")
VAL_VARIANTS = ("mirrored-crop",)
TRAIN_BATCH = 4


def caffe_root_default() -> str | None:
    spec = importlib.util.find_spec("caffe")
    if spec is None or not spec.origin:
        return None
    return os.path.dirname(os.path.dirname(os.path.dirname(spec.origin)))


def caffe_env() -> dict:
    return dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="2")


def tool(name: str) -> str:
    path = caffe_tool(name)
    if path is None:
        raise SystemExit(f"Caffe's {name} is neither beside pycaffe (.cmpstore-tools) nor on PATH")
    return path


def run_tool(command: list[str]) -> None:
    done = subprocess.run(command, env=caffe_env(), capture_output=True, text=True, errors="replace")
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")


# --- data ---------------------------------------------------------------------------------------------------------


def photographs() -> list[tuple[str, np.ndarray, int]]:
    """Every colour photograph of skimage.data that ships with the package: (name, RGB uint8 image, label)."""
    import skimage.data

    found = []
    for name, label in PHOTOGRAPHS.items():
        loaded = getattr(skimage.data, name)()
        images = [loaded[0], loaded[1]] if name == "stereo_motorcycle" else [loaded]
        for index, image in enumerate(images):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise SystemExit(f"skimage.data.{name} is {image.dtype}{list(image.shape)}, not an RGB photograph")
            found.append((f"{name}{index if len(images) > 1 else ''}", image, label))
    return found


def variant(image: np.ndarray, kind: str) -> np.ndarray:
    height, width = image.shape[:2]
    if "crop" in kind:
        # The central 70 %: a view the full image does not give once both are resized to 256 x 256.
        top, left = int(height * 0.15), int(width * 0.15)
        image = image[top : height - top, left : width - left]
    if "mirrored" in kind:
        image = image[:, ::-1]
    return np.ascontiguousarray(image)


def make_dataset(folder: str) -> dict:
    """JPEG files, image lists (relative for convert_imageset, absolute for ImageData), LMDBs and the mean."""
    from PIL import Image

    images_dir = os.path.join(folder, "images")
    os.makedirs(images_dir)
    lists: dict[str, list[str]] = {"train": [], "val": []}
    for name, image, label in photographs():
        for split, kinds in (("train", TRAIN_VARIANTS), ("val", VAL_VARIANTS)):
            for kind in kinds:
                file_name = f"{name}-{kind}.jpg"
                Image.fromarray(variant(image, kind)).save(os.path.join(images_dir, file_name), quality=95)
                lists[split].append(f"{file_name} {label}")
    dataset = {"images_dir": images_dir, "counts": {split: len(lines) for split, lines in lists.items()}}
    for split, lines in lists.items():
        relative = os.path.join(folder, f"{split}.txt")
        absolute = os.path.join(folder, f"{split}_absolute.txt")
        with open(relative, "w", encoding="utf-8") as stream:
            stream.write("".join(line + "\n" for line in lines))
        with open(absolute, "w", encoding="utf-8") as stream:
            stream.write("".join(os.path.join(images_dir, line) + "\n" for line in lines))
        lmdb = os.path.join(folder, f"{split}_lmdb")
        run_tool(
            [tool("convert_imageset"), "--resize_height=256", "--resize_width=256", "--shuffle", "--backend=lmdb",
             images_dir + "/", relative, lmdb]
        )  # fmt: skip
        dataset[f"{split}_list"], dataset[f"{split}_lmdb"] = absolute, lmdb
    dataset["mean"] = os.path.join(folder, "mean.binaryproto")
    run_tool([tool("compute_image_mean"), "--backend=lmdb", dataset["train_lmdb"], dataset["mean"]])
    return dataset


# --- nets ---------------------------------------------------------------------------------------------------------


def test_batch(val_count: int) -> tuple[int, int]:
    """A TEST batch size near the training one that divides the val set, and the test_iter that covers it once."""
    size = max(d for d in range(1, TRAIN_BATCH + 1) if val_count % d == 0)
    return size, val_count // size


def edited_net(
    caffe_root: str, net: str, dataset: dict, folder: str, mean_values: list[float] | None = None
) -> tuple[str, list[str], str]:
    """The stock train/val prototxt with only its data paths and batch sizes replaced; (path, changed lines, kind).

    With ``mean_values`` each ``mean_file`` line becomes per-channel
    ``mean_value`` lines instead, the alternative the CaffeNet prototxt
    carries in its comments.
    """
    size, _ = test_batch(dataset["counts"]["val"])
    if net == "caffenet":
        source = os.path.join(caffe_root, "models", "bvlc_reference_caffenet", "train_val.prototxt")
        # Each (old, new) replaces the first occurrence left; the TRAIN data layer comes first in both nets.
        substitutions = [
            ("examples/imagenet/ilsvrc12_train_lmdb", dataset["train_lmdb"]),
            ("examples/imagenet/ilsvrc12_val_lmdb", dataset["val_lmdb"]),
            ("batch_size: 256", f"batch_size: {TRAIN_BATCH}"),
            ("batch_size: 50", f"batch_size: {size}"),
        ]
        kind = "Data (LMDB)"
    else:
        source = os.path.join(caffe_root, "models", "finetune_flickr_style", "train_val.prototxt")
        substitutions = [
            ("data/flickr_style/train.txt", dataset["train_list"]),
            ("data/flickr_style/test.txt", dataset["val_list"]),
            ("batch_size: 50", f"batch_size: {TRAIN_BATCH}"),
            ("batch_size: 50", f"batch_size: {size}"),
        ]
        kind = "ImageData (list)"
    if mean_values is None:
        substitutions += [("data/ilsvrc12/imagenet_mean.binaryproto", dataset["mean"])] * 2
    else:
        per_channel = "\n    ".join(f"mean_value: {value:.3f}" for value in mean_values)
        substitutions += [('mean_file: "data/ilsvrc12/imagenet_mean.binaryproto"', per_channel)] * 2
        kind += ", mean_value"
    with open(source, encoding="utf-8") as stream:
        original = stream.read()
    text = original
    for old, new in substitutions:
        if old not in text:
            raise SystemExit(f"{source} no longer holds {old!r}: the Caffe sources changed")
        text = text.replace(old, new, 1)
    path = os.path.join(folder, "train_val.prototxt")
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(text)
    diff = difflib.unified_diff(original.splitlines(), text.splitlines(), source, path, n=0, lineterm="")
    changed = [line for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    return path, changed, kind


def write_solver(folder: str, net_path: str, test_iter: int, stage_iterations: int) -> str:
    path = os.path.join(folder, "solver.prototxt")
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(
            textwrap.dedent(f"""\
                net: "{net_path}"
                test_iter: {test_iter}
                test_interval: {max(1000, 10 * stage_iterations)}
                base_lr: 0.001
                lr_policy: "fixed"
                momentum: 0.9
                weight_decay: 0.0005
                display: 1
                max_iter: {stage_iterations}
                snapshot_prefix: "{os.path.join(folder, "snapshot")}"
                solver_mode: CPU
            """)
        )
    return path


def in_caffe(script: str, *args: str) -> dict:
    """Run ``script`` with pycaffe in a child process (a Caffe CHECK aborts the whole process); its JSON answer."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args], env=caffe_env(), capture_output=True, text=True, errors="replace"
    )
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        fatal = [line for line in lines if "Check failed" in line or line.startswith("F")][:1] or lines[-1:]
        raise RuntimeError(f"pycaffe child exited {done.returncode}: {' '.join(fatal)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


INITIALISE = """
import json, sys
import caffe
caffe.set_mode_cpu()
caffe.set_random_seed(0)
net = caffe.Net(sys.argv[1], caffe.TEST)
net.save(sys.argv[2])
print(json.dumps({"parameters": int(sum(b.data.size for blobs in net.params.values() for b in blobs))}))
"""

#: Per-channel (B, G, R) means of a mean binaryproto.
CHANNEL_MEANS = """
import json, sys
import caffe
blob = caffe.proto.caffe_pb2.BlobProto()
blob.ParseFromString(open(sys.argv[1], "rb").read())
print(json.dumps(caffe.io.blobproto_to_array(blob)[0].mean(1).mean(1).tolist()))
"""

#: The decoded caffemodel in stock Caffe: the TEST phase of the train/val net over the val set,
#: and the unmodified deploy net on real images (read with PIL: pycaffe's caffe.io.load_image
#: passes skimage an ``as_grey`` argument that current scikit-image no longer takes).
RUN_DECODED = """
import json, sys
import numpy as np
from PIL import Image
import caffe
train_val, deploy, weights, test_iter, mean_file = sys.argv[1:6]
images = sys.argv[6:]
caffe.set_mode_cpu()
net = caffe.Net(train_val, weights, caffe.TEST)
totals, finite = {}, True
for _ in range(int(test_iter)):
    out = net.forward()
    for name, blob in out.items():
        finite &= bool(np.isfinite(blob).all())
        totals[name] = totals.get(name, 0.0) + float(blob.reshape(-1)[0])
del net
net = caffe.Net(deploy, weights, caffe.TEST)
blob = caffe.proto.caffe_pb2.BlobProto()
blob.ParseFromString(open(mean_file, "rb").read())
mean = caffe.io.blobproto_to_array(blob)[0].mean(1).mean(1)
shape = net.blobs["data"].data.shape
for index in range(shape[0]):
    image = Image.open(images[index % len(images)]).convert("RGB").resize((shape[3], shape[2]), Image.BILINEAR)
    bgr = np.asarray(image, dtype=np.float32)[:, :, ::-1].transpose(2, 0, 1)
    net.blobs["data"].data[index] = bgr - mean[:, None, None]
prob = net.forward()["prob"]
print(json.dumps({
    "train_val": {name: total / int(test_iter) for name, total in totals.items()},
    "train_val_finite": finite,
    "deploy_shape": list(prob.shape),
    "deploy_finite": bool(np.isfinite(prob).all()),
    "deploy_sum_error": float(np.abs(prob.sum(axis=1) - 1).max()),
    "deploy_top1": prob.argmax(axis=1).tolist(),
}))
"""


# --- one run ------------------------------------------------------------------------------------------------------


def schedule_for(net: str) -> dict[str, tuple[float, int]]:
    ratios = dict(ALEXNET_RATIOS)
    if net == "flickr":
        ratios["fc8_flickr"] = ratios.pop("fc8")
    return {name: (ratio, CONV_CLUSTERS if name.startswith("conv") else FC_CLUSTERS) for name, ratio in ratios.items()}


def deploy_net(caffe_root: str, net: str) -> str:
    folder = "bvlc_reference_caffenet" if net == "caffenet" else "finetune_flickr_style"
    return os.path.join(caffe_root, "models", folder, "deploy.prototxt")


def run(
    net: str,
    backend: str,
    caffe_root: str,
    dataset: dict,
    scratch: str,
    stage_iterations: int,
    mean_values: list[float] | None = None,
) -> dict:
    variant_name = f"{net}-{backend}" + ("-mean_value" if mean_values else "")
    folder = os.path.join(scratch, variant_name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    train_val, changed, kind = edited_net(caffe_root, net, dataset, folder, mean_values)
    print(f"\n== {variant_name}: {train_val}, changed from the Caffe sources:")
    for line in changed:
        print(f"   {line}")
    size, test_iter = test_batch(dataset["counts"]["val"])
    figures = {
        "net": net,
        "backend": backend,
        "data_layer": kind,
        "images": dict(dataset["counts"]),
        "batch": {"train": TRAIN_BATCH, "test": size, "test_iter": test_iter},
        "folder": folder,
        "changed_lines": changed,
        "problems": [],
    }
    solver = write_solver(folder, train_val, test_iter, stage_iterations)
    initial = os.path.join(folder, "init.caffemodel")
    try:
        figures["parameters"] = in_caffe(INITIALISE, train_val, initial)["parameters"]
    except RuntimeError as exc:
        figures["caffe_refused_net"] = True
        figures["problems"].append(f"Caffe cannot build the edited stock net {train_val} (TEST phase): {exc}")
        # Fillers from the deploy net (the same layers and shapes), so that the driver meets the net too.
        figures["parameters"] = in_caffe(INITIALISE, deploy_net(caffe_root, net), initial)["parameters"]
    schedule = schedule_for(net)
    iterations = [stage_iterations] * (len(schedule) + 1)
    work_dir, output = os.path.join(folder, "work"), os.path.join(folder, f"{net}.cmps")
    command = [
        sys.executable, "-m", "cmpstore", "finetune", "--net", train_val, "--solver", solver, "--weights", initial,
        *[part for name, (ratio, clusters) in schedule.items() for part in ("--layer", f"{name}:{ratio}:{clusters}")],
        "--iterations", ",".join(map(str, iterations)), "--backend", backend,
        "--work-dir", work_dir, "-o", output,
    ]  # fmt: skip
    print("   $ " + " ".join(command), flush=True)
    figures["iterations"], figures["command"], figures["output"] = iterations, command, output
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log_path = os.path.join(folder, "finetune.log")
    began = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        done = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    figures["wall_seconds"] = time.perf_counter() - began
    figures["dense_bytes"] = os.path.getsize(initial)
    if done.returncode != 0:
        with open(log_path, encoding="utf-8", errors="replace") as stream:
            tail = [line for line in stream.read().splitlines() if line.strip()][-3:]
        figures["problems"].append(f"cmpstore finetune exited {done.returncode}: " + " | ".join(tail))
        return figures
    with open(os.path.join(work_dir, "state.json"), encoding="utf-8") as stream:
        state = json.load(stream)
    stages = list(state["stages"].values())
    figures["pretrained_scores"] = state["pretrained_scores"]
    figures["stage_scores"] = {name: record["scores"] for name, record in state["stages"].items()}
    figures["train_seconds"] = sum(record["seconds"] for record in stages)
    figures["final_scores"] = stages[-1]["scores"]
    figures["encoded_bytes"] = os.path.getsize(output)
    figures["ratio"] = figures["dense_bytes"] / figures["encoded_bytes"]
    starts = [initial] + [record["weights"] for record in stages[: len(schedule) - 1]]
    figures["problems"] += check_weights(figures, schedule, starts, stages[-1]["weights"], work_dir)
    figures["problems"] += check_decoded(figures, caffe_root, stages[-1]["weights"], output, train_val, dataset)
    return figures


def check_weights(figures: dict, schedule: dict, starts: list[str], final: str, work_dir: str) -> list[str]:
    """Each layer's zeros and distinct values in the final weights against its ratio and class_num.

    The fork prunes every weight whose magnitude equals the threshold, so a
    layer may lose more than ``pruned_count`` weights when magnitudes tie; the
    exact expectation is what :func:`cmpstore.compression.prune.prune` does to
    the weights that layer's pruning stage started from.
    """
    problems = []
    expected_final = os.path.join(work_dir, f"{len(schedule) + 1:02d}-quantize", "weights.caffemodel")
    if os.path.realpath(final) != os.path.realpath(expected_final):
        problems.append(f"the last stage's weights are {final}, not {expected_final}")
    final_weights = api.load_weights(final)
    figures["layers"] = {}
    for (name, (ratio, clusters)), start in zip(schedule.items(), starts, strict=True):
        values = final_weights[name][0]
        _, kept = prune(api.load_weights(start)[name][0], ratio)
        zeros = int(np.count_nonzero(values == 0))
        distinct = int(np.unique(values[values != 0]).size)
        counted = pruned_count(values.size, ratio)
        figures["layers"][name] = {
            "size": int(values.size),
            "zeros": zeros,
            "pruned_count": counted,
            "pruned_with_ties": int(kept.size - np.count_nonzero(kept)),
            "distinct_nonzero": distinct,
            "class_num": clusters,
        }
        if not np.array_equal(values != 0, kept):
            problems.append(
                f"{name}: the zeros ({zeros:,}) are not the weights prune(..., {ratio}) removes from {start} "
                f"({kept.size - np.count_nonzero(kept):,}; pruned_count {counted:,})"
            )
        if distinct > clusters:
            problems.append(f"{name}: {distinct} distinct nonzero values, class_num {clusters}")
    return problems


def check_decoded(figures: dict, caffe_root: str, final: str, output: str, train_val: str, dataset: dict) -> list:
    """The .cmps against the final weights, and the decoded caffemodel in stock Caffe."""
    problems = []
    differences = api.verify(final, output)
    if differences:
        problems.append(f"verify({final}, {output}): " + "; ".join(differences[:5]))
    decoded = os.path.join(os.path.dirname(output), "decoded.caffemodel")
    api.decode(output, decoded, deploy=True)
    differences = api.verify(final, decoded)
    if differences:
        problems.append(f"verify({final}, {decoded}): " + "; ".join(differences[:5]))
    with open(dataset["val_list"], encoding="utf-8") as stream:
        images = [line.rsplit(" ", 1)[0] for line in stream.read().splitlines()]
    deploy = deploy_net(caffe_root, figures["net"])
    test_iter = str(figures["batch"]["test_iter"])
    try:
        ran = in_caffe(RUN_DECODED, train_val, deploy, decoded, test_iter, dataset["mean"], *images)
    except RuntimeError as exc:
        return problems + [f"the decoded {decoded} in stock Caffe: {exc}"]
    figures["decoded_in_caffe"] = ran
    if not (ran["train_val_finite"] and ran["deploy_finite"]):
        problems.append(f"the decoded {decoded} gives non-finite outputs in stock Caffe: {ran}")
    if ran["deploy_sum_error"] > 1e-4:
        problems.append(f"the deploy net's softmax rows do not sum to 1 (off by {ran['deploy_sum_error']:.2g})")
    for label, value in figures["final_scores"].items():
        top = label.split(" (")[0]
        if top not in ran["train_val"]:
            problems.append(f"the train/val net in stock Caffe has no output {top!r}")
        elif not math.isclose(ran["train_val"][top], value, abs_tol=1e-6):
            problems.append(
                f"{top}: {ran['train_val'][top]:.4f} in stock Caffe on {decoded}, {value:.4f} by the driver"
            )
    return problems


def remove_weights(folder: str) -> None:
    """The run's caffemodels (about 240 MB each for CaffeNet); the nets, logs, state and .cmps stay."""
    for root, _, files in os.walk(folder):
        for name in files:
            if name.endswith(".caffemodel"):
                os.remove(os.path.join(root, name))


# --- report -------------------------------------------------------------------------------------------------------


def print_table(runs: list[dict]) -> None:
    header = (
        f"{'net':<9} {'backend':<7} {'data layer':<28} {'images':>7} {'iters':>5} {'wall':>6} "
        f"{'dense':>13} {'.cmps':>11} {'ratio':>6}  final TEST (driver)"
    )
    print("\n" + header)
    print("-" * len(header))
    for figures in runs:
        images = f"{figures['images']['train']}/{figures['images']['val']}"
        stages = f"{len(figures['iterations'])}x{figures['iterations'][0]}"
        if "encoded_bytes" in figures:
            scores = ", ".join(f"{label} {value:.2%}" for label, value in figures["final_scores"].items())
            sizes = f"{figures['dense_bytes']:>11,} B {figures['encoded_bytes']:>9,} B {figures['ratio']:>5.1f}x"
        else:
            scores, sizes = "failed (below)", f"{figures['dense_bytes']:>11,} B {'-':>11} {'-':>6}"
        print(
            f"{figures['net']:<9} {figures['backend']:<7} {figures['data_layer']:<28} {images:>7} {stages:>5} "
            f"{figures['wall_seconds']:>5.0f}s {sizes}  {scores}"
        )
    print()
    for figures in runs:
        verdict = "all checks passed" if not figures["problems"] else f"{len(figures['problems'])} problem(s)"
        ties = [
            f"{name} {layer['pruned_with_ties'] - layer['pruned_count']}"
            for name, layer in figures.get("layers", {}).items()
            if layer["pruned_with_ties"] != layer["pruned_count"]
        ]
        tie_note = f" (magnitudes tied at the threshold, extra weights pruned: {', '.join(ties)})" if ties else ""
        print(f"{figures['net']} {figures['backend']} {figures['data_layer']}: {verdict}{tie_note}")
        for problem in figures["problems"]:
            print(f"   - {problem}")


def compare_backends(runs: list[dict]) -> list[str]:
    """The README says both backends train the same weights bit for bit on one CPU: compare their .cmps blobs."""
    finished: dict[tuple[str, str], dict[str, dict]] = {}
    for figures in runs:
        if "encoded_bytes" in figures:
            finished.setdefault((figures["net"], figures["data_layer"]), {})[figures["backend"]] = figures
    lines = []
    for (net, kind), by_backend in finished.items():
        if len(by_backend) == 2:
            differences = api.verify(by_backend["cmp"]["output"], by_backend["stock"]["output"])
            verdict = "the same weights, bit for bit" if not differences else "; ".join(differences[:5])
            lines.append(f"{net} {kind}, cmp against stock backend: {verdict}")
            for figures in by_backend.values():
                figures["backends_agree"] = not differences
                if differences:
                    figures["problems"].append(f"cmp and stock backends differ: {verdict}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", nargs="+", default=["caffenet", "flickr"], choices=("caffenet", "flickr"))
    parser.add_argument("--backends", nargs="+", default=["cmp", "stock"], choices=("cmp", "stock"))
    parser.add_argument("--iterations", type=int, default=2, help="iterations per stage (default 2)")
    parser.add_argument("--scratch", default="/tmp/cmpstore-reference-nets")
    parser.add_argument("--caffe-root", default=caffe_root_default(), help="Caffe sources (default: pycaffe's)")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--keep-weights", action="store_true", help="keep each run's caffemodels (240 MB each)")
    parser.add_argument("--delete-scratch", action="store_true", help="remove --scratch at the end")
    args = parser.parse_args()
    if args.caffe_root is None or not os.path.isdir(os.path.join(args.caffe_root, "models")):
        raise SystemExit("no Caffe sources: put pycaffe on PYTHONPATH or pass --caffe-root")
    shutil.rmtree(args.scratch, ignore_errors=True)
    os.makedirs(args.scratch)
    began = time.perf_counter()
    dataset = make_dataset(os.path.join(args.scratch, "data"))
    print(
        f"data: {dataset['counts']['train']} training and {dataset['counts']['val']} val JPEGs from skimage.data "
        f"({', '.join(PHOTOGRAPHS)}; {len(CLASS_NAMES)} classes: {', '.join(CLASS_NAMES)}), LMDBs and mean "
        f"in {time.perf_counter() - began:.1f} s"
    )
    runs = []
    for net in args.nets:
        for backend in args.backends:
            figures = run(net, backend, args.caffe_root, dataset, args.scratch, args.iterations)
            attempts = [figures]
            if figures.get("caffe_refused_net"):
                # The same net with per-channel mean_value lines instead of the mean file.
                means = in_caffe(CHANNEL_MEANS, dataset["mean"])
                attempts.append(run(net, backend, args.caffe_root, dataset, args.scratch, args.iterations, means))
            for attempt in attempts:
                runs.append(attempt)
                print(f"   {attempt['wall_seconds']:.0f} s; {len(attempt['problems'])} problem(s)", flush=True)
            if not args.keep_weights:
                for attempt in attempts:
                    remove_weights(attempt["folder"])
            if args.json:
                with open(args.json, "w", encoding="utf-8") as stream:
                    json.dump({"runs": runs}, stream, indent=2)
    comparisons = compare_backends(runs)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump({"runs": runs}, stream, indent=2)
    print_table(runs)
    for line in comparisons:
        print(line)
    if args.delete_scratch:
        shutil.rmtree(args.scratch)
    return 1 if any(figures["problems"] for figures in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
