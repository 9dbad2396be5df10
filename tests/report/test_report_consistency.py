"""One report that agrees with itself (medseg.report.run_report, plan_table, sections, boxplots and
medseg.training.finish): validation metrics and pictures after the postprocessing `medseg predict`
applies, with the before/after per class in a line; the plan the run trained with as a table whose
estimate agrees with the Model section or says it is an estimate; distance plots from 0; one colour
per class with a legend. The sections are read back from the report's HTML."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import medseg
import medseg.api
from medseg.data.synthetic import write_phantom_dataset
from medseg.inference.postprocess import largest_component
from medseg.io import read_mask, write_mask
from medseg.report.boxplots import case_box_figure
from medseg.report.overlay import class_colour
from medseg.report.run_report import read_metrics_csv
from medseg.training import finish

CLASSES = ("background", "organ", "lesion")


def sections_of(html: str) -> dict[str, str]:
    """The report's sections: heading -> the HTML up to the next heading."""
    parts = re.split(r"<h2>(.*?)</h2>", html)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny planned run whose finishing keeps the organ's largest component: the choice is forced
    (the evidence, Dice before and after, is the real function's), so the test does not depend on
    what a few training steps learn."""
    root = tmp_path_factory.mktemp("consistency")
    data = write_phantom_dataset(root / "data", 8, (48, 48), seed=3)
    real_choice = finish.choose_postprocessing

    def keep_organ(cases, num_classes, class_names=None):
        # two stray organ islands in one predicted mask: keeping the largest component must change it
        first = sorted((root / "run" / "validation").glob("*.png"))[0]
        mask = np.array(read_mask(first))
        mask[0:3, 0:3], mask[-4:-1, -4:-1] = 1, 1
        write_mask(first, mask)
        spec = real_choice(cases, num_classes, class_names)
        spec["largest_component_classes"] = [1]
        for entry in spec["evidence"]:
            entry["applied"] = entry["class"] == 1
        return spec

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(finish, "choose_postprocessing", keep_organ)
        return medseg.train(data, root / "run", epochs=2, iterations_per_epoch=2, features=(4, 8, 16), batch_size=2,
                            val_fraction=0.4, seed=0, device="cpu", cache=False, compile=False, class_names=CLASSES)


def test_validation_is_what_predict_gives(run: Path):
    val = run / "validation"
    spec = json.loads((run / "postprocessing.json").read_text())
    assert json.loads((val / "validation.json").read_text())["postprocessing"] == [1]
    assert list((val / finish.RAW_DIR).glob("*.png"))  # the changed masks, kept as predicted
    for mask in sorted(val.glob("*.png")):  # each mask is its as-predicted self after postprocessing
        raw_file = val / finish.RAW_DIR / mask.name
        raw = read_mask(raw_file if raw_file.is_file() else mask)
        assert np.array_equal(read_mask(mask), largest_component(raw, 1))
    # the metrics were scored again after it: they are the evidence's "after" for the organ and "before" for the lesion
    summary = json.loads((val / "summary.json").read_text())["summary"]
    organ, lesion = (next(e for e in spec["evidence"] if e["class"] == k) for k in (1, 2))
    assert summary["1"]["dice"]["mean"] == pytest.approx(organ["dice_after"], abs=1e-4)
    assert summary["2"]["dice"]["mean"] == pytest.approx(lesion["dice_before"], abs=1e-4)


def test_report_says_metrics_are_after_postprocessing(run: Path):
    html = medseg.api.report(run, device="cpu").read_text()  # `medseg report RUN`
    metrics = sections_of(html)["Validation metrics"]
    spec = json.loads((run / "postprocessing.json").read_text())
    organ = next(e for e in spec["evidence"] if e["class"] == 1)
    assert "<b>After postprocessing:</b>" in metrics
    assert f"organ: largest component kept, Dice {organ['dice_before']:.3f} before, {organ['dice_after']:.3f} after" \
        in metrics
    assert "lesion: not used (Dice" in metrics
    rows = read_metrics_csv(run / "validation" / "metrics.csv")
    organ_mean = np.mean([r["dice"] for r in rows if r["class"] == 1])
    assert f"{organ_mean:.3f} ±" in metrics  # the table shows the postprocessed masks' scores


def test_plan_is_a_readable_table_that_agrees_with_the_model(run: Path):
    html = (run / "report.html").read_text()
    parts = sections_of(html)
    plan = parts["Plan"]
    assert '<table class="plan">' in plan and "<pre" not in plan
    values = re.findall(r"</th><td>(.*?)</td>", plan)
    assert len(values) >= 15 and not any(c in v for v in values for c in "[]{}")  # values in words, not raw JSON
    trained = json.loads((run / "run.json").read_text())["plan"]
    patch = " × ".join(map(str, trained["patch_size"]))
    assert f"<th>patch</th><td>{patch}</td>" in plan
    assert "<th>channels per level</th><td>4, 8, 16</td><td class=\"why\">set by the user</td>" in plan  # as trained
    assert "<th>epochs</th><td>2</td>" in plan and "<th>steps per epoch</th><td>2</td>" in plan
    built = int(re.search(r"<th>parameters</th><td>([\d,]+)</td>", parts["Model"]).group(1).replace(",", ""))
    estimate = trained["estimate"]
    assert "an estimate, made before training" in plan
    if estimate["parameters"] == built:
        assert "its parameters agree with the model built" in plan
    else:  # the estimate leaves out what the planner does not count (e.g. deep supervision heads)
        assert f"the model built has {built:,} parameters" in plan
    assert f"{estimate['parameters']:,} parameters" in plan


def test_one_outline_colour_per_class_with_a_legend(run: Path):
    html = (run / "report.html").read_text()
    pictures = sections_of(html)["Best, median and worst validation cases"]
    legend = re.findall(r'<span class="legend-class"><span class="swatch contour" style="border-color: '
                        r'rgb\((\d+), (\d+), (\d+)\);[^"]*"></span>([^<]+)</span>', pictures)
    assert [(tuple(map(int, c[:3])), c[3]) for c in legend] == [(class_colour(1), "organ"), (class_colour(2), "lesion")]
    assert "fill: prediction · outline: reference (ground truth)" in pictures


def test_distance_axes_start_at_zero():
    """Distances are never negative: the axes start at 0 even on a symmetric log scale (the issue
    saw them run to -10^0)."""
    rows = [{"case": f"c{i}", "class": k, "dice": 0.5 + 0.05 * i, "nsd": 0.6, "hd95": hd, "assd": hd / 3}
            for i, hd in enumerate((0.0, 0.5, 2.0, 350.0)) for k in (1, 2)]
    fig = case_box_figure(rows, list(CLASSES))
    titles = [ax.get_title() for ax in fig.axes]
    limits = dict(zip(titles, (ax.get_ylim() for ax in fig.axes)))
    assert limits["HD95 (mm)"][0] == 0 and limits["ASSD (mm)"][0] == 0
    assert fig.axes[titles.index("HD95 (mm)")].get_yscale() == "symlog"  # the wide span keeps its log scale
    assert limits["Dice"] == (0.0, 1.02)
    perfect = [{**r, "hd95": 0.0, "assd": 0.0} for r in rows]
    assert case_box_figure(perfect, list(CLASSES)).axes[2].get_ylim() == (0.0, 1.0)


def test_choices_are_made_on_the_masks_as_predicted(run: Path):
    """Postprocessing for a cross-validation folder is chosen on its folds' masks as predicted: the
    ones postprocessing changed come from before_postprocessing/, the others from validation/."""
    _, cases = finish._validation_cases(run)
    val = run / "validation"
    assert cases
    for case_id, load in cases:
        raw_file = val / finish.RAW_DIR / f"{case_id}.png"
        pred, _ = load(case_id)
        assert np.array_equal(pred, read_mask(raw_file if raw_file.is_file() else val / f"{case_id}.png"))
