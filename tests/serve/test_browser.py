"""The page in headless Chromium (Debian's, driven by Playwright; WebGL2 through SwiftShader):
token, upload of a real hippocampus volume, the result drawn by niivue; the screenshot's pixels
must show the class colour where the mask is and not where it is not. The screenshot is kept
(tests/serve/artifacts/serve_page.png; docs/serve.png is a copy)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import real_dataset

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
GL_FLAGS = ["--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]
HIPPO_CASE = "hippocampus_017.nii.gz"


def _browser(p):
    from medseg.report.browser import FLAGS, find_chromium

    exe = find_chromium()
    if exe is None:
        pytest.skip("no chromium (apt-get install chromium) for the browser test")
    flags = [f for f in FLAGS if f not in ("--headless", "--disable-gpu")] + GL_FLAGS
    return p.chromium.launch(executable_path=exe, args=flags, headless=True)


@pytest.mark.slow  # about 2 minutes: a browser with software WebGL, two trained runs
def test_the_page_draws_the_mask_over_the_image(server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    from medseg.serve.page import niivue_bundle

    if niivue_bundle() is None:
        pytest.skip("niivue is not installed (make niivue)")
    from PIL import Image
    import SimpleITK as sitk

    image = real_dataset("msd-hippocampus") / "imagesTr" / HIPPO_CASE
    with playwright.sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.goto(server.url + "/")
        page.fill("#token", "test-token-0123456789")
        page.click("#token-form button")
        page.wait_for_selector("#upload-form:not([hidden])")
        page.select_option("#model", "hippocampus")
        page.set_input_files("#file", str(image))
        page.click("#upload-form button")
        page.wait_for_function("document.body.dataset.job", timeout=240_000)
        assert "done" in page.text_content("#state"), page.text_content("#state")
        # one axial slice through the mask's middle, fully opaque, so its pixels are the class colours
        page.evaluate("""() => { const nv = window.medsegViewer(); nv.setSliceType(0); nv.setOpacity(1, 1); nv.setCrosshairWidth(0);
                                  nv.drawScene(); }""")
        job = page.evaluate("document.body.dataset.job")
        mask_bytes = server.client.get(f"/api/v1/jobs/{job}/overlay").content
        mask_file = tmp_path / "mask.nii.gz"
        mask_file.write_bytes(mask_bytes)
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_file)))  # (z, y, x)
        share = (mask > 0).mean(axis=(1, 2))
        z = int(np.argmin(np.abs(share - 0.5)))  # the slice most evenly split between mask and not
        import nibabel as nib

        affine = nib.load(str(mask_file)).affine  # axis-aligned here: signs say which way each axis runs
        flip = np.sign(np.diag(affine)[:3])
        nz = mask.shape[0]
        frac_z = (z + 0.5) / nz if flip[2] > 0 else 1 - (z + 0.5) / nz
        page.evaluate(f"() => {{ const nv = window.medsegViewer(); nv.scene.crosshairPos = [0.5, 0.5, {frac_z}]; "
                      "nv.drawScene(); }")
        page.wait_for_timeout(500)
        tile = page.evaluate("""() => { const nv = window.medsegViewer(); const r = nv.canvas.getBoundingClientRect();
            return {ltwh: nv.screenSlices[0].leftTopWidthHeight, left: r.left, top: r.top, dpr: window.devicePixelRatio}; }""")
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "serve_page.png"
        page.screenshot(path=str(shot))
        page.evaluate("() => { const nv = window.medsegViewer(); nv.setSliceType(3); nv.setOpacity(1, 0.6); nv.setCrosshairWidth(1); nv.drawScene(); }")
        page.wait_for_timeout(800)
        page.screenshot(path=str(ARTIFACTS / "serve_page_multiplanar.png"))
        browser.close()
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    left, top, width, height = tile["ltwh"]
    sl = mask[z]  # (y, x)
    colours = {1: (60, 180, 75), 2: (230, 25, 75)}
    ny, nx = sl.shape
    hits = {"inside": 0, "inside_n": 0, "outside": 0, "outside_n": 0}
    for y in range(ny):
        for x in range(nx):
            near = sl[max(0, y - 1):y + 2, max(0, x - 1):x + 2]
            if near.min() != near.max():
                continue  # edges: blending and rounding
            fx = (x + 0.5) / nx if flip[0] > 0 else 1 - (x + 0.5) / nx  # world +x (R) to the right
            fy = (y + 0.5) / ny if flip[1] > 0 else 1 - (y + 0.5) / ny  # world +y (A) upwards
            sx = tile["left"] + (left + fx * width) / tile["dpr"]
            sy = tile["top"] + (top + height - fy * height) / tile["dpr"]
            rgb = pixels[int(sy), int(sx)]
            label = int(sl[y, x])
            is_colour = any(np.abs(rgb - c).max() < 40 for c in colours.values())
            if label:
                hits["inside_n"] += 1
                hits["inside"] += int(np.abs(rgb - colours[label]).max() < 40)
            else:
                hits["outside_n"] += 1
                hits["outside"] += int(is_colour)
    assert hits["inside_n"] > 20 and hits["outside_n"] > 20, hits
    assert hits["inside"] / hits["inside_n"] > 0.9, hits   # the class colour where the mask is
    assert hits["outside"] / hits["outside_n"] < 0.05, hits  # and not elsewhere
    docs = Path(__file__).resolve().parents[2] / "docs" / "serve.png"
    shutil.copy(ARTIFACTS / "serve_page_multiplanar.png", docs)
