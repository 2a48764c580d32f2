"""The planner's choices from measured sensitivities: settings, exact sizes, gradual schedules the driver runs."""

import pytest

from cmpstore import api
from cmpstore.errors import UsageError
from cmpstore.finetune import planner
from cmpstore.finetune.schedule import schedule_from_json
from cmpstore.synthetic import LayerSpec, build_model

DENSE = (
    LayerSpec("conv1", "Convolution", (20, 1, 5, 5), 1.0, None),
    LayerSpec("fc1", "InnerProduct", (100, 320), 1.0, None),
)


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "dense.caffemodel"
    api.save_model(build_model(DENSE, seed=0), path)
    return path


def sensitivity(conv1_pruning=None) -> planner.Sensitivity:
    """fc1 tolerates much pruning, conv1 little; sharing measured at kept 0.5 (conv1) and 0.1 (fc1)."""
    return planner.Sensitivity(
        baseline=0.99,
        pruning={
            "conv1": conv1_pruning or {1.0: 0.99, 0.5: 0.985, 0.25: 0.95, 0.1: 0.6},
            "fc1": {1.0: 0.99, 0.5: 0.99, 0.25: 0.988, 0.1: 0.98, 0.05: 0.96},
        },
        sharing={"conv1": {64: 0.985, 16: 0.98, 4: 0.9}, "fc1": {64: 0.98, 16: 0.98, 4: 0.975}},
        sharing_kept={"conv1": 0.5, "fc1": 0.1},
        held_out="synthetic",
    )


def test_a_drop_adds_pruning_and_sharing_measured_on_the_pruned_layer():
    measured = sensitivity()
    assert measured.drop("fc1", 0.1, 16) == pytest.approx(0.01)
    assert measured.drop("fc1", 0.1, 4) == pytest.approx(0.015)  # 0.98 - 0.975 on top of pruning's 0.01
    assert measured.drop("conv1", 1.0, 4) == pytest.approx(0.085)


def test_an_accuracy_floor_bounds_the_sum_of_the_layers_drops(weights):
    for floor in (0.0, 0.005, 0.02, 0.1):
        plan = planner.propose(sensitivity(), str(weights), max_drop=floor)
        assert plan.predicted_drop <= floor + 1e-9
        assert plan.predicted_drop == pytest.approx(
            sum(sensitivity().drop(layer, round(1 - ratio, 6), k) for layer, (ratio, k) in plan.settings.items())
        )
    free = planner.propose(sensitivity(), str(weights), max_drop=0.0)
    assert free.settings["fc1"] == (0.5, 16)  # what costs nothing is taken
    assert free.settings["conv1"] == (0.0, 64)


def test_the_large_tolerant_layer_gives_up_most(weights):
    plan = planner.propose(sensitivity(), str(weights), max_drop=0.02)
    assert plan.settings["fc1"][0] >= 0.9 > plan.settings["conv1"][0]


def test_a_layer_that_is_cheap_to_keep_stays_dense_even_when_equally_sensitive(weights):
    same = {1.0: 0.99, 0.5: 0.99, 0.25: 0.988, 0.1: 0.98, 0.05: 0.96}
    measured = sensitivity(conv1_pruning=same)
    measured.sharing["conv1"] = dict(measured.sharing["fc1"])
    measured.sharing_kept["conv1"] = 0.1
    plan = planner.propose(measured, str(weights), max_drop=0.012)
    assert plan.settings["fc1"][0] > plan.settings["conv1"][0]  # 32,000 weights against 500


def test_the_predicted_size_is_what_encode_gives_for_those_settings(weights):
    plan = planner.propose(sensitivity(), str(weights), max_drop=0.01)
    ratios = {layer: ratio for layer, (ratio, _) in plan.settings.items() if ratio > 0}
    clusters = {layer: k for layer, (_, k) in plan.settings.items()}
    compressed, _ = api.compress_weights(api.load_model(weights), ratios, clusters)
    assert plan.predicted_bytes == len(api.encode(compressed))


def test_a_size_target_is_met_and_a_tighter_one_costs_more_accuracy(weights):
    loose = planner.propose(sensitivity(), str(weights), max_drop=0.05)
    plan = planner.propose(sensitivity(), str(weights), target_bytes=loose.predicted_bytes)
    assert plan.predicted_bytes <= loose.predicted_bytes
    smallest = planner.propose(sensitivity(), str(weights), max_drop=0.99).predicted_bytes
    target = (plan.predicted_bytes + smallest) // 2
    tighter = planner.propose(sensitivity(), str(weights), target_bytes=target)
    assert tighter.predicted_bytes <= target
    assert tighter.predicted_drop >= plan.predicted_drop


def test_the_schedule_prunes_gradually_and_runs_in_the_driver_unchanged(weights):
    plan = planner.propose(sensitivity(), str(weights), max_drop=0.05, iterations=5000)
    schedule = schedule_from_json(plan.schedule)
    final = {layer: ratio for layer, (ratio, _) in plan.settings.items() if ratio > 0}
    last = len(schedule.stages) - 1
    assert schedule.stages[-1].kind == "quantize" and set(schedule.stages[-1].layers) == {"conv1", "fc1"}
    assert schedule.pruned_after(last) == final
    kept_before = {layer: 1.0 for layer in final}
    for index in range(last):
        assert schedule.stages[index].kind == "prune"
        kept = {layer: 1 - schedule.pruned_after(index).get(layer, 0.0) for layer in final}
        for layer in final:
            assert kept_before[layer] * 0.4 - 1e-6 <= kept[layer] <= kept_before[layer]
        kept_before = kept
    iterations = [stage.iterations for stage in schedule.stages]
    assert iterations[:-1] == sorted(iterations[:-1])  # harder stages get more
    assert sum(iterations) == pytest.approx(5000, rel=0.1)
    assert "synthetic" in plan.schedule["description"]


def test_an_unreachable_target_says_the_best_found(weights):
    with pytest.raises(UsageError, match=r"no plan reaches 10 bytes .* the smallest found is [\d,]+ bytes"):
        planner.propose(sensitivity(), str(weights), target_bytes=10)


def test_exactly_one_target():
    with pytest.raises(UsageError, match="exactly one"):
        planner.propose(sensitivity(), "x", target_bytes=1, max_drop=0.1)


def test_no_layer_gets_fewer_shared_values_than_the_minimum(weights):
    measured = sensitivity()
    measured.sharing = {layer: {64: by[64], 16: by[16], 4: by[16], 2: by[16]} for layer, by in measured.sharing.items()}
    free = planner.propose(measured, str(weights), max_drop=0.99)
    assert min(k for _, k in free.settings.values()) == 16  # 4 and 2 measure as free; the floor of 8 holds
    assert (
        min(k for _, k in planner.propose(measured, str(weights), max_drop=0.99, min_clusters=2).settings.values()) == 2
    )
    only_large = planner.propose(measured, str(weights), max_drop=0.99, min_clusters=1000)
    assert {k for _, k in only_large.settings.values()} == {64}  # no count meets it: the largest measured


def _plan_cli(tmp_path, net, *options):
    from common import LENET_EXAMPLE, run_cli

    return run_cli("plan", "--net", net, "--solver", LENET_EXAMPLE / "lenet_solver.prototxt", "--weights",
                   tmp_path / "w.caffemodel", "--work-dir", tmp_path / "wd", "-o", tmp_path / "plan.json",
                   "--target-ratio", "2", *options)  # fmt: skip


def test_a_net_without_compressible_layers_is_refused_in_one_line(tmp_path):
    net = tmp_path / "relu.prototxt"
    net.write_text('name: "x" layer { name: "data" type: "Input" top: "data" '
                   'input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } } '
                   'layer { name: "relu" type: "ReLU" bottom: "data" top: "data" }')  # fmt: skip
    code, out, err = _plan_cli(tmp_path, net)
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert "relu.prototxt: no compressible layer (Convolution or InnerProduct) to plan" in err
    assert not (tmp_path / "plan.json").exists()


def test_an_empty_held_out_split_is_refused_in_one_line(tmp_path):
    import numpy as np
    from common import LENET_EXAMPLE

    data = tmp_path / "empty.npz"
    np.savez(data, train_data=np.zeros((4, 1, 28, 28), np.float32), train_labels=np.zeros(4, np.int64),
             test_data=np.zeros((0, 1, 28, 28), np.float32), test_labels=np.zeros(0, np.int64))  # fmt: skip
    api.save_model(build_model(seed=0), tmp_path / "w.caffemodel")
    code, out, err = _plan_cli(tmp_path, LENET_EXAMPLE / "lenet_train_test.prototxt", "--data", data)
    assert (code, out) == (2, "") and err.count("\n") == 1, err
    assert "empty.npz: the test split is empty (no test_data)" in err
    assert not (tmp_path / "plan.json").exists()
