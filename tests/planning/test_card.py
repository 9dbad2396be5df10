"""medseg.planning.card: the plan for a GPU, decided from a card's figures alone (made-up cards, no
GPU needed): the card's throughput from its name and SM count, and the batch from the throughput
model (fixed time per step + FLOPs / throughput) within the card's memory, nnU-Net's share of
the dataset and the steps a time budget must leave. CPU plans never look at a card."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers import hippocampus_msd
from medseg.planning import Budget, apply_overrides, compute_fingerprint, format_plan, make_plan
from medseg.planning.card import (ACHIEVABLE_FRACTION, BATCH_DATA_SHARE, CUDA_STEP_OVERHEAD_S, CUDA_TRAIN_GFLOPS,
                                  STEP_MEMORY_SHARE, Card, card_throughput, choose_card_batch, modelled_step_s)
from medseg.planning.rules import MIN_STEPS
from medseg.report.plan_table import plan_section

H200 = Card("NVIDIA H200", 139.8, 132)


@pytest.fixture(scope="module")
def hippocampus_fp(tmp_path_factory):
    """The fingerprint of 6 real MSD Hippocampus cases, repeated to the size of the dataset (240
    cases): the batch rule reads the dataset's size (nnU-Net's 5 % share)."""
    fp, _, _ = compute_fingerprint(hippocampus_msd(tmp_path_factory.mktemp("hippo") / "hippo"), progress=False)
    return dataclasses.replace(fp, cases=fp.cases * 40)


# ------------------------------------------------------------------------------ the card's throughput
def test_card_throughput_from_the_name_and_the_sm_count():
    h200 = card_throughput(H200)
    assert h200["table_entry"] == "H200" and h200["train_gflops"] == pytest.approx(989e3 * ACHIEVABLE_FRACTION)
    assert "not measured" in h200["assumed"]
    # the most specific name wins, and a name is a whole word: an L40S is not an L4, a PCIe H100 not an SXM one
    assert card_throughput(Card("NVIDIA H100 PCIe", 79.6, 114))["table_entry"] == "H100 PCIe"
    assert card_throughput(Card("NVIDIA H100 80GB HBM3", 79.6, 132))["table_entry"] == "H100"
    assert card_throughput(Card("NVIDIA L40S", 44.5, 142))["table_entry"] == "L40S"
    assert card_throughput(Card("NVIDIA L4", 22.5, 58))["table_entry"] == "L4"
    assert card_throughput(Card("NVIDIA A100-SXM4-80GB", 79.2, 108))["table_entry"] == "A100"
    # a MIG slice has fewer SMs than its card: its share of the peak
    mig = card_throughput(Card("NVIDIA H100 80GB HBM3 MIG 1g.10gb", 9.8, 16))
    assert mig["train_gflops"] == pytest.approx(989e3 * 16 / 132 * ACHIEVABLE_FRACTION, rel=1e-4)
    # more SMs than the table knows: no extrapolation upwards
    assert card_throughput(Card("NVIDIA H200", 139.8, 200))["sm_scale"] == 1.0
    # an unknown card, or none: the fallback constant, said so
    for card, words in ((Card("Radeon Instinct MI300X", 192.0, 304), "not in the card table"), (None, "no card")):
        figures = card_throughput(card)
        assert figures["train_gflops"] == CUDA_TRAIN_GFLOPS and figures["table_entry"] is None
        assert words in figures["assumed"]


# ------------------------------------------------------------------------------ the batch rule alone
ROOMY = dict(patch_gb=0.01, fixed_gb=0.1, memory_gb=140.0, patch_voxels=1e5, dataset_voxels=1e10,
             train_seconds=None, min_steps=1000)


def test_batch_grows_until_the_arithmetic_dominates_the_fixed_step_time():
    small_patch = choose_card_batch(10.0, 100e3, **ROOMY)    # 0.1 ms of arithmetic per patch against 15 ms fixed
    large_patch = choose_card_batch(1000.0, 100e3, **ROOMY)  # 10 ms per patch
    assert small_patch.limited_by == large_patch.limited_by == "throughput"
    assert small_patch.batch == 450 and large_patch.batch == 5   # 3 x 15 ms of arithmetic
    # more patches per second than at batch 2, and near what the arithmetic allows (75 % of it)
    assert small_patch.patches_per_s > 50 * small_patch.patches_per_s_at_2
    assert small_patch.patches_per_s == pytest.approx(0.75 * 100e3 / 10.0, rel=0.01)
    # a card twice as fast needs twice the batch to hide the same overhead
    assert choose_card_batch(10.0, 200e3, **ROOMY).batch == 900
    assert modelled_step_s(2, 10.0, 100e3) == pytest.approx(CUDA_STEP_OVERHEAD_S + 2e-4)


def test_batch_caps_memory_data_steps_and_the_floor():
    memory = choose_card_batch(10.0, 100e3, **{**ROOMY, "memory_gb": 4.0, "patch_gb": 0.2})
    assert memory.limited_by == "memory" and memory.batch == 14
    assert 0.1 + memory.batch * 0.2 <= STEP_MEMORY_SHARE * 4.0 < 0.1 + (memory.batch + 1) * 0.2
    data = choose_card_batch(10.0, 100e3, **{**ROOMY, "dataset_voxels": 2e7})
    assert data.limited_by == "data" and data.batch == BATCH_DATA_SHARE * 2e7 / 1e5 == 10
    # 60 s must leave 1000 steps: at most 60 ms a step, 15 ms of it fixed, 0.1 ms a patch
    steps = choose_card_batch(10.0, 100e3, **{**ROOMY, "train_seconds": 60.0})
    assert steps.limited_by == "steps" and steps.batch == 449 and steps.step_seconds <= 0.060
    # caps below 2 leave nnU-Net's smallest batch (the plan shrinks the patch instead)
    floor = choose_card_batch(10.0, 100e3, **{**ROOMY, "dataset_voxels": 1e5})
    assert floor.batch == 2 and floor.limited_by == "data (floor 2)"


# ------------------------------------------------------------------------------ plans for made-up cards
def test_an_h200_trains_the_hippocampus_plan_with_a_larger_batch(hippocampus_fp):
    plan = make_plan(hippocampus_fp, Budget("cuda", minutes=3, card=H200))
    figures = plan["estimate"]["card_batch"]
    assert plan["patch_size"] == [40, 56, 40] and plan["features"][0] == 32
    assert plan["batch_size"] == figures["batch"] > 2
    assert figures["patches_per_s"] > 2 * figures["patches_per_s_at_2"]
    assert plan["estimate"]["steps_in_budget"] >= MIN_STEPS
    assert plan["estimate"]["memory_gb"] <= STEP_MEMORY_SHARE * 139.8
    # the card and every figure assumed about it are in the plan, and the reason says what limited the batch
    card = plan["budget"]["card"]
    assert card["name"] == "NVIDIA H200" and card["table_entry"] == "H200" and card["sm_count"] == 132
    assert card["step_overhead_s"] == CUDA_STEP_OVERHEAD_S and plan["budget"]["train_gflops"] == card["train_gflops"]
    reason = plan["reasons"]["batch_size"]
    assert reason.startswith(f"{plan['batch_size']} patches per step") and figures["limited_by"] in reason
    assert "not measured" in reason
    # `medseg plan` prints the card's assumed figures, and the report says which card the plan was made for
    assert "card: NVIDIA H200: 15% of the H200's 989 dense bf16 TFLOP/s" in format_plan(plan)
    assert "cuda (NVIDIA H200)" in plan_section(plan)
    # without a time budget (nnU-Net's epochs) the same batch: the steps are fixed, not the minutes
    assert make_plan(hippocampus_fp, Budget("cuda", card=H200))["batch_size"] == plan["batch_size"]


def test_a_small_card_is_limited_by_its_memory(hippocampus_fp):
    roomy = make_plan(hippocampus_fp, Budget("cuda", minutes=3, card=H200))
    small = make_plan(hippocampus_fp, Budget("cuda", minutes=3, card=Card("NVIDIA H200", 1.5, 132)))
    figures = small["estimate"]["card_batch"]
    assert figures["limited_by"] == "memory" and 2 < small["batch_size"] < roomy["batch_size"]
    assert small["estimate"]["memory_gb"] <= STEP_MEMORY_SHARE * 1.5
    assert small["patch_size"] == roomy["patch_size"]


def test_a_tight_time_budget_keeps_the_batch_small(hippocampus_fp):
    roomy = make_plan(hippocampus_fp, Budget("cuda", minutes=3, card=H200))
    tight = make_plan(hippocampus_fp, Budget("cuda", minutes=0.35, card=H200))
    assert tight["estimate"]["card_batch"]["limited_by"] == "steps"
    assert 2 <= tight["batch_size"] < roomy["batch_size"]
    assert tight["estimate"]["steps_in_budget"] >= MIN_STEPS
    # a budget whose fixed step time alone leaves too few steps: batch 2, the patch kept (shrinking cannot help)
    hopeless = make_plan(hippocampus_fp, Budget("cuda", minutes=0.2, card=H200))
    assert hopeless["batch_size"] == 2 and hopeless["patch_size"] == roomy["patch_size"]


def test_cpu_plans_do_not_look_at_a_card(hippocampus_fp):
    cpu = make_plan(hippocampus_fp, Budget("cpu", memory_gb=8.0, minutes=20, threads=2))
    with_card = make_plan(hippocampus_fp, Budget("cpu", memory_gb=8.0, minutes=20, threads=2, card=H200))
    assert cpu == with_card
    assert cpu["batch_size"] == 2 and cpu["features"][0] == 16
    assert set(cpu["budget"]) == {"device", "memory_gb", "minutes", "threads", "train_gflops"}
    assert "card_batch" not in cpu["estimate"] and "card" not in cpu["reasons"]["batch_size"]
    assert "card:" not in format_plan(cpu) and "(NVIDIA" not in plan_section(cpu)


def test_a_card_plan_keeps_its_card_through_overrides(hippocampus_fp):
    plan = make_plan(hippocampus_fp, Budget("cuda", minutes=3, card=H200))
    edited = apply_overrides(plan, {"batch_size": 2})
    assert edited["budget"]["card"]["name"] == "NVIDIA H200"
    # the estimate made again for batch 2 uses the recorded card, not the machine it is edited on
    assert edited["estimate"]["step_seconds"] < plan["estimate"]["step_seconds"]
    assert edited["estimate"]["step_seconds"] == pytest.approx(
        modelled_step_s(2, 3 * plan["estimate"]["forward_gflops_per_patch"], card_throughput(H200)["train_gflops"]),
        abs=2e-3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a card is visible: the plan reads it")
def test_without_a_visible_card_the_fallback_is_assumed(hippocampus_fp):
    plan = make_plan(hippocampus_fp, Budget("cuda", minutes=3))
    assert plan["budget"]["card"]["name"] is None and plan["budget"]["train_gflops"] == CUDA_TRAIN_GFLOPS
    assert "no card visible" in plan["reasons"]["batch_size"]



def test_the_device_check_recovers_the_overhead_and_rate_from_patches_per_second(hippocampus_fp, tmp_path):
    """benchmarks/device_plan.py fits step time = overhead + batch x per-patch time to measured
    rows: rows made by the model with known figures give those figures back, and the plan's batch
    is set against batch 2."""
    import json

    from benchmarks.device_plan import compare, fit_steps

    plan = make_plan(hippocampus_fp, Budget("cuda", minutes=3, card=H200))
    gflops, rate, overhead = plan["estimate"]["forward_gflops_per_patch"], 120e3, 0.02
    rows = [{"sampler": "batched", "batch": b, "patches_per_s": b / modelled_step_s(b, 3 * gflops, rate, overhead)}
            for b in sorted({2, 8, 32, plan["batch_size"]})]
    assert fit_steps(rows[:1]) is None
    (tmp_path / "plan.json").write_text(json.dumps({"hippocampus": {"minutes": plan}}))
    (tmp_path / "train.json").write_text(json.dumps({"patch": plan["patch_size"], "throughput": rows}))
    result = compare(tmp_path / "plan.json", tmp_path / "train.json", tmp_path / "check.json")
    assert result["fitted"]["overhead_s"] == pytest.approx(overhead, abs=1e-4)
    assert result["fitted"]["train_gflops"] == pytest.approx(rate, rel=1e-3)
    assert result["fitted"]["fraction_of_peak"] == pytest.approx(rate / 989e3, abs=1e-3)
    assert result["plan_batch"] == plan["batch_size"] and result["chosen_vs_batch_2"] > 1
    assert result["modelled_patches_per_s"][plan["batch_size"]] == plan["estimate"]["card_batch"]["patches_per_s"]
