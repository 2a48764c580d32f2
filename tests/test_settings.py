"""The library checks every compression setting against one set of bounds, for the API, the CLI and schedules."""

import re

import pytest

import cmpstore
from cmpstore.errors import UsageError
from cmpstore.finetune.schedule import schedule_from_json
from cmpstore.limits import MAX_CODEBOOK_ENTRIES as MAX_CLUSTERS
from cmpstore.synthetic import build_model

MODEL = build_model(seed=0)


@pytest.mark.parametrize(
    ("ratios", "clusters", "message"),
    [
        ({}, {"fc": 0}, "clusters fc: the number of clusters must be in 1..65536, got 0"),
        ({}, {"fc": 70_000}, "clusters fc: the number of clusters must be in 1..65536, got 70000"),
        ({}, {"fc": 2.5}, "clusters fc: the number of clusters must be in 1..65536, got 2.5"),
        ({"fc": 1.5}, {}, "ratios fc: a sparse ratio must be in [0, 1), got 1.5"),
        ({"fc": -0.1}, {}, "ratios fc: a sparse ratio must be in [0, 1), got -0.1"),
        ({"fc": True}, {}, "ratios fc: a sparse ratio must be in [0, 1), got True"),
    ],
)
def test_compress_weights_raises_usage_errors_for_bad_settings(ratios, clusters, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        cmpstore.compress_weights(MODEL, ratios, clusters)


def test_the_largest_cluster_count_is_allowed_everywhere():
    _, outcomes = cmpstore.compress_weights(MODEL, {}, {"fc2": MAX_CLUSTERS})
    assert outcomes[0].clusters == MAX_CLUSTERS
    schedule_from_json(
        {"layers": {"fc2": {"class_num": MAX_CLUSTERS}}, "stages": [{"quantize": ["fc2"], "iterations": 1}]}
    )
    with pytest.raises(UsageError, match=re.escape("layer 'fc2': the number of clusters must be in 1..65536")):
        schedule_from_json(
            {"layers": {"fc2": {"class_num": MAX_CLUSTERS + 1}}, "stages": [{"quantize": ["fc2"], "iterations": 1}]}
        )


@pytest.mark.parametrize("bits", [0, 17, 4.0])
def test_encode_checks_index_bits(bits):
    with pytest.raises(UsageError, match=re.escape(f"index_bits conv: index bits must be in 1..16, got {bits}")):
        cmpstore.encode(MODEL, index_bits={"conv": bits})


def test_unknown_kmeans_options_are_usage_errors():
    with pytest.raises(UsageError, match="unknown k-means initialization 'best'"):
        cmpstore.compress_weights(MODEL, {}, {"fc": 8}, init="best")
    with pytest.raises(UsageError, match="unknown empty-cluster policy 'keep'"):
        cmpstore.compress_weights(MODEL, {}, {"fc": 8}, empty="keep")
