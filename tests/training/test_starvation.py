"""A starved run is visible (medseg.training.progress, state, report.sections): a timed run
compares its steps with the plan's estimate for this machine (scaled to the run's minutes) and,
under half of them, warns in the log, records `starved` in run.json and shows it in the report.
The starvation is simulated by a slowed training step on real MSD Hippocampus volumes."""
from __future__ import annotations

import json
import time
from pathlib import Path

import medseg
from medseg.planning import Budget, apply_overrides, expected_steps, plan_dataset
from medseg.report.run_report import write_run_report
from medseg.training.progress import TrainingProgress


def test_expected_steps_scale_with_the_run_minutes():
    plan = {"budget": {"minutes": 20.0}, "estimate": {"steps_in_budget": 1500}}
    assert expected_steps(plan, 20.0) == 1500
    assert expected_steps(plan, 2.0) == 150
    assert expected_steps(plan, None) is None  # an epochs run expects no number of steps from the clock
    assert expected_steps({"budget": {"minutes": 20.0}, "estimate": {"steps_in_budget": None}}, 2.0) is None
    assert expected_steps(None, 2.0) is None


def test_overridden_network_gets_its_own_estimate(hippo_small: Path):
    """The demo's case: the plan's estimate was for the planned network, the run trained a wider one."""
    plan = plan_dataset(hippo_small, Budget("cpu", 4.0, 1.0, threads=1), progress=False)
    wider = apply_overrides(plan, {"features": [f * 2 for f in plan["features"]]})
    assert wider["estimate"]["parameters"] > 3 * plan["estimate"]["parameters"]
    assert wider["estimate"]["steps_in_budget"] < plan["estimate"]["steps_in_budget"]
    assert "overrides" in wider["estimate"]["network"]
    same = apply_overrides(plan, {"epochs": 3})  # not the network: the estimate stays as planned
    assert same["estimate"] == plan["estimate"]


def test_slowed_steps_make_a_starved_run(hippo_small: Path, tmp_path: Path, monkeypatch, capsys):
    plan = plan_dataset(hippo_small, Budget("cpu", 4.0, 1.0, threads=1), progress=False)
    plan["estimate"]["steps_in_budget"] = 300  # the plan's promise for one minute on this machine
    original = TrainingProgress.step

    def slow_step(self, losses):  # a machine busy with another job: every step takes 0.5 s longer
        time.sleep(0.5)
        original(self, losses)

    monkeypatch.setattr(TrainingProgress, "step", slow_step)
    run = medseg.train(hippo_small, tmp_path / "run", plan=plan, minutes=0.3, seed=0, device="cpu", finish=False,
                       compile=False)
    info = json.loads((run / "run.json").read_text())
    assert info["steps_expected"] == 90  # 300 steps per minute's budget, scaled to 0.3 minutes
    assert info["starved"] is True and 0 < info["iterations_done"] < 45
    err = capsys.readouterr().err
    assert "WARNING: starved:" in err and f"{info['iterations_done']} steps in 0.3 min" in err and "~90" in err

    html = write_run_report(run).read_text()
    assert '<p class="warning"><b>Training was starved:</b>' in html
    assert "steps expected</th><td>~90 in the run" in html and "starved (under half)" in html

    # the same run had it got its steps: no warning anywhere
    info.update(starved=False, iterations_done=88)
    (run / "run.json").write_text(json.dumps(info))
    html = write_run_report(run).read_text()
    assert "Training was starved" not in html and "88 done (98%)" in html


def test_epochs_run_expects_nothing_from_the_clock(hippo_small: Path, tmp_path: Path):
    run = medseg.train(hippo_small, tmp_path / "run", epochs=1, iterations_per_epoch=2, seed=0, device="cpu",
                       finish=False, compile=False)
    info = json.loads((run / "run.json").read_text())
    assert info["steps_expected"] is None and info["starved"] is None
    assert "network" not in info["plan"]["estimate"]  # no override touched the network
