"""A real `medseg serve` process on 127.0.0.1 (a free port), over two tiny runs trained once per
session: a 2D colour run (Kvasir-SEG polyps, a small working grid) and a 3D run (MSD hippocampus)."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import hippocampus_msd, link_subset, real_dataset
from serve_helpers import Server

@pytest.fixture(scope="session")
def served_runs(tmp_path_factory) -> dict[str, Path]:
    import medseg

    root = tmp_path_factory.mktemp("serve_runs")
    src = real_dataset("kvasir-seg")
    stems = sorted(p.stem for p in (src / "images").iterdir())[:6]
    kvasir = link_subset(src, root / "kvasir_data", stems, "images", "masks")
    tiny = dict(batch_size=2, iterations_per_epoch=2, plan=False, epochs=1, finish=False, device="cpu")
    run2d = medseg.train(kvasir, root / "polyp", features=(8, 16, 32), patch_size=(64, 64), image_size=128,
                         val_fraction=0.34, **tiny)
    hippo = hippocampus_msd(root / "hippo_data", ["hippocampus_001", "hippocampus_003", "hippocampus_004",
                                                  "hippocampus_006"])
    run3d = medseg.train(hippo, root / "hippocampus", features=(8, 16), patch_size=(16, 16, 16), val_fraction=0.25,
                         **{**tiny, "batch_size": 1})
    return {"polyp": Path(run2d), "hippocampus": Path(run3d)}


@pytest.fixture(scope="session")
def server(served_runs, tmp_path_factory):
    work = tmp_path_factory.mktemp("serve") / "work"
    srv = Server([served_runs["polyp"], served_runs["hippocampus"]], work, "--max-upload-mb", "1",
                 "--queue-size", "2")
    yield srv
    srv.stop()
