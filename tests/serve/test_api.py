"""The HTTP contract of `medseg serve` against a real uvicorn process (tests/serve/conftest.py):
auth, models, 2D and 3D jobs whose masks are `medseg predict`'s, refused uploads (4xx with the
reason, never 5xx), harmless file names and zip members, the queue bound, delete and expiry."""
from __future__ import annotations

import concurrent.futures
import io
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import SimpleITK as sitk

from serve_helpers import Server
from helpers import hippocampus_dicom_series, real_dataset

KVASIR_IMAGE = "cju0tl3uz8blh0993wxvn7ly3.jpg"
HIPPO_CASE = "hippocampus_017.nii.gz"


def _cli_mask(run: Path, image: Path, out: Path) -> Path:
    import medseg

    [mask] = medseg.predict(run, image, out, device="cpu", overlays=False)
    return mask


def test_token_is_required_on_the_api_but_not_on_health(server):
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"
    assert httpx.get(server.url + "/api/v1/models").status_code == 401
    wrong = httpx.get(server.url + "/api/v1/models", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert httpx.post(server.url + "/api/v1/jobs", files={"file": ("a.png", b"x")}).status_code == 401
    assert httpx.get(server.url + "/docs").status_code == 200  # the OpenAPI page
    assert "/api/v1/jobs" in httpx.get(server.url + "/openapi.json").json()["paths"]


def test_models_list_names_classes_and_plan(server):
    models = {m["name"]: m for m in server.client.get("/api/v1/models").json()}
    assert set(models) == {"polyp", "hippocampus"}
    hippo = models["hippocampus"]
    assert [c["name"] for c in hippo["classes"]] == ["background", "Anterior", "Posterior"]
    assert hippo["dimensions"] == 3 and models["polyp"]["dimensions"] == 2
    assert hippo["plan"]["network"] == "unet" and hippo["plan"]["patch_size"] == [16, 16, 16]


@pytest.mark.parametrize("model, dataset, sub, name", [("hippocampus", "msd-hippocampus", "imagesTr", HIPPO_CASE),
                                                       ("polyp", "kvasir-seg", "images", KVASIR_IMAGE)])
def test_a_job_gives_the_mask_medseg_predict_gives(server, served_runs, tmp_path, model, dataset, sub, name):
    image = real_dataset(dataset) / sub / name
    accepted = server.submit(image, model)
    assert accepted.status_code == 202, accepted.text
    job = server.wait(accepted.json()["id"])
    assert job["status"] == "done" and job["progress"] == 1.0 and job["error"] is None, job
    got = server.client.get(f"/api/v1/jobs/{job['id']}/mask")
    reference = _cli_mask(served_runs[model], image, tmp_path / "cli")
    assert got.headers["content-disposition"].endswith(f'_mask{"".join(reference.suffixes)}"')
    served = tmp_path / f"served{''.join(reference.suffixes)}"
    served.write_bytes(got.content)
    a, b = sitk.ReadImage(str(served)), sitk.ReadImage(str(reference))
    assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    assert a.GetSpacing() == b.GetSpacing() and a.GetOrigin() == b.GetOrigin() and a.GetDirection() == b.GetDirection()
    stats = server.client.get(f"/api/v1/jobs/{job['id']}/statistics").json()
    assert [r["class"] for r in stats["structures"]] == stats["classes"][1:]
    counts = np.bincount(sitk.GetArrayFromImage(b).ravel(), minlength=len(stats["classes"]))
    size = "voxels" if model == "hippocampus" else "pixels"
    assert [r[size] for r in stats["structures"]] == counts[1:].tolist()
    if model == "hippocampus":  # 1 mm voxels: ml = voxels / 1000
        assert stats["structures"][0]["volume_ml"] == pytest.approx(counts[1] / 1000)
    for key in ("image", "overlay", "uncertainty"):  # the viewer's NIfTI files
        assert server.client.get(f"/api/v1/jobs/{job['id']}/{key}").content[:2] == b"\x1f\x8b"


def test_bad_uploads_get_4xx_with_the_reason(server, tmp_path):
    hippo = real_dataset("msd-hippocampus") / "imagesTr" / HIPPO_CASE
    cases = [
        (("scan.png", b"not a png at all"), "polyp", 422, "scan.png: cannot read"),
        (("scan.nii.gz", hippo.read_bytes()), "polyp", 422, "scan.nii.gz: is a 3D volume"),
        (("notes.txt", b"hello"), "polyp", 415, "not a supported file type"),
        (("empty.nii.gz", b""), "hippocampus", 422, "empty"),
        (("big.nii.gz", b"\0" * (2 << 20)), "hippocampus", 413, "limit of 1 MB"),
        (("scan.nii.gz", hippo.read_bytes()), "nosuchmodel", 404, "no model named"),
        (("broken.zip", b"PK\x03\x04 broken"), "hippocampus", 422, "not a readable zip"),
    ]
    for (name, content), model, status, words in cases:
        r = server.client.post("/api/v1/jobs", files={"file": (name, content)}, data={"model": model})
        assert r.status_code == status, (name, r.status_code, r.text)
        assert words in r.json()["detail"], r.text
        assert str(server.work) not in r.text  # the server's folders are not shown
    assert server.client.post("/api/v1/jobs", content=b"raw", headers={"content-type": "text/plain"}).status_code == 415
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"


def test_file_names_and_zip_members_are_never_paths(server, tmp_path):
    """A traversal name is only a display name; a zip whose members climb out (zip slip) is
    unpacked under the job's folder with new names, and its DICOM series is segmented."""
    hippo = real_dataset("msd-hippocampus") / "imagesTr" / HIPPO_CASE
    r = server.submit(hippo, "hippocampus", name="../../../../tmp/evil.nii.gz")
    assert r.status_code == 202 and server.wait(r.json()["id"])["status"] == "done"
    assert not Path("/tmp/evil.nii.gz").exists()
    assert 'filename="evil_mask.nii.gz"' in server.client.get(f"/api/v1/jobs/{r.json()['id']}/mask").headers[
        "content-disposition"]
    series, _ = hippocampus_dicom_series(tmp_path / "dicom")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for i, f in enumerate(sorted(series.iterdir())):
            zf.write(f, f"../../escape/{i:03d}.dcm")
    archive = tmp_path / "series.zip"
    archive.write_bytes(buffer.getvalue())
    r = server.submit(archive, "hippocampus")
    assert r.status_code == 202, r.text
    job = server.wait(r.json()["id"])
    assert job["status"] == "done", job
    assert not (server.work.parent / "escape").exists() and not (server.work / "escape").exists()
    assert server.client.get(f"/api/v1/jobs/{job['id']}/mask").content[:2] == b"\x1f\x8b"  # .nii.gz, as predict


def test_a_full_queue_answers_429_with_retry_after(server):
    hippo = real_dataset("msd-hippocampus") / "imagesTr" / HIPPO_CASE
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: server.submit(hippo, "hippocampus"), range(8)))
    codes = [a.status_code for a in answers]
    assert set(codes) <= {202, 429} and 429 in codes, codes
    assert all(int(a.headers["retry-after"]) >= 1 for a in answers if a.status_code == 429)
    for a in answers:
        if a.status_code == 202:
            assert server.wait(a.json()["id"])["status"] == "done"


def test_delete_removes_the_job_and_its_files(server):
    hippo = real_dataset("msd-hippocampus") / "imagesTr" / HIPPO_CASE
    job_id = server.submit(hippo, "hippocampus").json()["id"]
    server.wait(job_id)
    assert (server.work / "jobs" / job_id / "result").is_dir()
    assert server.client.delete(f"/api/v1/jobs/{job_id}").status_code == 204
    assert server.client.get(f"/api/v1/jobs/{job_id}").status_code == 404
    assert server.client.get(f"/api/v1/jobs/{job_id}/mask").status_code == 404
    assert not (server.work / "jobs" / job_id).exists()


@pytest.mark.slow  # a second server: about 40 s
def test_results_expire_and_a_restart_fails_interrupted_jobs(served_runs, tmp_path):
    hippo = real_dataset("msd-hippocampus") / "imagesTr" / HIPPO_CASE
    work = tmp_path / "work"
    srv = Server([served_runs["hippocampus"]], work, "--keep-minutes", "0.03")
    try:
        job_id = srv.submit(hippo, "hippocampus").json()["id"]
        assert srv.wait(job_id)["status"] == "done"
        time.sleep(3.5)  # 1.8 s to keep, checked every 0.5 s
        assert srv.client.get(f"/api/v1/jobs/{job_id}").status_code == 404
        assert not (work / "jobs" / job_id).exists()
        running = srv.submit(hippo, "hippocampus").json()["id"]
    finally:
        assert srv.stop() in (0, -15)  # SIGTERM: uvicorn shuts down, then re-raises the signal
    assert "Traceback" not in Path(srv.log.name).read_text()
    record = (work / "jobs" / running / "job.json").read_text()
    assert '"status": "done"' in record or '"status": "failed"' in record  # finished or said so
    assert not list(work.glob("jobs/*/.result.partial"))
