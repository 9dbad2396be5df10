"""medseg.manifest: the record of what medseg wrote in an output folder, and the rules that
follow from it (nothing else is written over or beside; only recorded paths are removed)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers import real_dataset
from medseg.errors import MedsegInputError
from medseg.manifest import (MANIFEST_NAME, check_output_folder, foreign_entries, is_recorded, new_folder_name,
                             read_outputs, record_outputs, remove_recorded)


def test_record_and_what_it_covers(tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    record_outputs(out, ["a.png", "overlays/"], "medseg predict")
    stamp = (out / MANIFEST_NAME).stat().st_mtime_ns
    record_outputs(out, ["a.png"], "medseg predict")  # nothing new: the record is not rewritten
    assert (out / MANIFEST_NAME).stat().st_mtime_ns == stamp
    assert read_outputs(out) == {"a.png": "medseg predict", "overlays/": "medseg predict"}
    assert is_recorded(out, "a.png") and is_recorded(out, "overlays/deep/x.png") and not is_recorded(out, "b.png")
    with pytest.raises(ValueError):
        record_outputs(out, ["../elsewhere.png"], "medseg predict")


def test_foreign_files_are_found_and_refused(tmp_path: Path):
    out = tmp_path / "labels"
    (out / "overlays").mkdir(parents=True)
    label = real_dataset("isbi2012-membrane") / "labels" / "3.png"
    record_outputs(out, ["0.png", "overlays/"], "medseg predict")
    (out / "overlays" / "0.png").write_bytes(b"x")
    (out / ".medseg.lock").write_text("{}")  # dot files (locks, temporaries) are not the user's data
    assert foreign_entries(out) == []
    (out / "sub").mkdir()
    shutil.copy(label, out / "sub" / "3.png")
    assert foreign_entries(out) == [out / "sub" / "3.png"]
    with pytest.raises(MedsegInputError, match=r"holds files medseg did not write \(sub/3.png\)"):
        check_output_folder(out, [out / "0.png"], overwrite=True, what="masks", tag="predictions")
    (out / "labels-predictions").mkdir()
    assert new_folder_name(out, "predictions") == tmp_path / "labels-predictions"
    assert new_folder_name(out / "labels-predictions", "x").name == "labels-predictions-x"


def test_remove_recorded_touches_nothing_else(tmp_path: Path):
    out = tmp_path / "demo"
    (out / "run" / "checkpoints").mkdir(parents=True)
    (out / "run" / "checkpoints" / "best.pt").write_bytes(b"w")
    (out / "report.html").write_text("r")
    record_outputs(out, ["run/", "report.html", "never_written.csv"], "medseg demo")
    (out / "notes.txt").write_text("mine")
    remove_recorded(out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
