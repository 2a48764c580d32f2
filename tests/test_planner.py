"""The planner's choices from measured sensitivities: settings, exact sizes, schedules the driver runs."""

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


def sensitivity() -> planner.Sensitivity:
    """conv1 tolerates little pruning, fc1 much; both tolerate 16 clusters, only fc1 tolerates 4."""
    return planner.Sensitivity(
        baseline=0.99,
        pruning={
            "conv1": {1.0: 0.99, 0.5: 0.985, 0.25: 0.95, 0.1: 0.6},
            "fc1": {1.0: 0.99, 0.5: 0.99, 0.25: 0.988, 0.1: 0.98, 0.05: 0.96},
        },
        sharing={"conv1": {64: 0.99, 16: 0.985, 4: 0.9}, "fc1": {64: 0.99, 16: 0.99, 4: 0.985}},
        held_out="synthetic",
    )


def test_an_accuracy_floor_picks_each_layers_smallest_setting_within_it(weights):
    plan = planner.propose(sensitivity(), str(weights), max_drop=0.005)
    assert plan.settings == {"conv1": (0.5, 16), "fc1": (0.75, 4)}
    assert plan.tolerance == 0.005


def test_the_predicted_size_is_what_encode_gives_for_those_settings(weights):
    plan = planner.propose(sensitivity(), str(weights), max_drop=0.01)
    ratios = {layer: ratio for layer, (ratio, _) in plan.settings.items()}
    clusters = {layer: k for layer, (_, k) in plan.settings.items()}
    compressed, _ = api.compress_weights(api.load_model(weights), ratios, clusters)
    assert plan.predicted_bytes == len(api.encode(compressed))


def test_a_size_target_takes_the_smallest_tolerance_that_meets_it(weights):
    loose = planner.propose(sensitivity(), str(weights), max_drop=0.05)
    plan = planner.propose(sensitivity(), str(weights), target_bytes=loose.predicted_bytes)
    assert plan.predicted_bytes <= loose.predicted_bytes
    assert plan.tolerance <= 0.05
    tighter = planner.propose(sensitivity(), str(weights), max_drop=0.0)
    assert tighter.predicted_bytes > plan.predicted_bytes or tighter.tolerance == plan.tolerance


def test_the_schedule_runs_in_the_driver_unchanged(weights):
    plan = planner.propose(sensitivity(), str(weights), max_drop=0.05, iterations=5000)
    schedule = schedule_from_json(plan.schedule)
    assert schedule.stages[-1].kind == "quantize" and set(schedule.stages[-1].layers) == {"conv1", "fc1"}
    assert schedule.pruned_after(len(schedule.stages) - 1) == {"conv1": 0.75, "fc1": 0.95}
    assert sum(stage.iterations for stage in schedule.stages) == pytest.approx(5000, rel=0.1)
    assert "synthetic" in plan.schedule["description"]


def test_an_unreachable_target_says_the_best_found(weights):
    with pytest.raises(UsageError, match=r"no plan reaches 10 bytes .* the smallest found is [\d,]+ bytes"):
        planner.propose(sensitivity(), str(weights), target_bytes=10)


def test_exactly_one_target():
    with pytest.raises(UsageError, match="exactly one"):
        planner.propose(sensitivity(), "x", target_bytes=1, max_drop=0.1)
