"""The page in headless Chromium (Debian's, driven by Playwright; WebGL2 through SwiftShader):
token, upload of a real scan, the result drawn by niivue; the screenshot's pixels must show each
class's colour where the mask has that class and no class colour where it has none.

Which mask voxel lies under a screen pixel is niivue's own answer (`screenXY2mm`, the inverse of
the transform it draws the slices with), taken to the mask's voxels by the mask file's affine:
a misregistered, flipped or shifted overlay fails. The screenshots are kept in
tests/serve/artifacts/ (docs/serve.md says how its picture was taken)."""
from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

from helpers import real_dataset
from serve_helpers import TOKEN

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
GL_FLAGS = ["--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]
HIPPO_CASE = "hippocampus_017.nii.gz"
KVASIR_IMAGE = "cju0tl3uz8blh0993wxvn7ly3.jpg"  # not among the polyp run's training images
TOLERANCE = 30  # per channel: at opacity 1 a class pixel is its colour, whatever the image below

# For each screenshot pixel of the canvas, the world point (mm) niivue shows there and its tile in
# nv.screenSlices, as float32 (x, y, z, tile) in base64: NaN outside the 2D slices, tile -2 in a 3D
# render tile.
SCREEN_MM_JS = """() => {
  const nv = window.medsegViewer();
  const rect = nv.canvas.getBoundingClientRect();
  const sx = nv.canvas.width / rect.width, sy = nv.canvas.height / rect.height;
  const x0 = Math.ceil(rect.left), y0 = Math.ceil(rect.top);
  const w = Math.floor(rect.right) - x0, h = Math.floor(rect.bottom) - y0;
  const out = new Float32Array(w * h * 4);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const cx = (x0 + x + 0.5 - rect.left) * sx, cy = (y0 + y + 0.5 - rect.top) * sy;
      const mm = nv.screenXY2mm(cx, cy);
      if (isNaN(mm[3]) && nv.screenSlices.some((s) => s.axCorSag > 2 && cx >= s.leftTopWidthHeight[0]
          && cy >= s.leftTopWidthHeight[1] && cx <= s.leftTopWidthHeight[0] + s.leftTopWidthHeight[2]
          && cy <= s.leftTopWidthHeight[1] + s.leftTopWidthHeight[3])) mm[3] = -2;
      out.set(mm, (y * w + x) * 4);
    }
  }
  const bytes = new Uint8Array(out.buffer);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return { x0, y0, w, h, data: btoa(text) };
}"""


def _browser(p):
    from medseg.report.browser import FLAGS, find_chromium

    exe = find_chromium()
    if exe is None:
        pytest.skip("no chromium (apt-get install chromium) for the browser test")
    flags = [f for f in FLAGS if f not in ("--headless", "--disable-gpu")] + GL_FLAGS
    return p.chromium.launch(executable_path=exe, args=flags, headless=True)


def _needs_playwright_and_niivue():
    playwright = pytest.importorskip("playwright.sync_api")
    from medseg.serve.page import niivue_bundle

    if niivue_bundle() is None:
        pytest.skip("niivue is not installed (make niivue)")
    return playwright


def _segment_in_page(page, server, image: Path, model: str) -> str:
    """Token, model, upload, wait: the job id once the page shows its result."""
    page.goto(server.url + "/")
    page.fill("#token", TOKEN)
    page.click("#token-form button")
    page.wait_for_selector("#upload-form:not([hidden])")
    page.select_option("#model", model)
    page.set_input_files("#file", str(image))
    page.click("#upload-form button")
    page.wait_for_function("document.body.dataset.job", timeout=240_000)
    assert "done" in page.text_content("#state"), page.text_content("#state")
    return page.evaluate("document.body.dataset.job")


def _viewer_file(server, job: str, what: str, tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A NIfTI the viewer was given (/image or /overlay): voxels (x, y, z[, RGB]) and affine."""
    import nibabel as nib

    path = tmp_path / f"{what}.nii.gz"
    path.write_bytes(server.client.get(f"/api/v1/jobs/{job}/{what}").content)
    image = nib.load(str(path))
    data = np.asarray(image.dataobj)
    if data.dtype.names:  # RGB24
        data = np.stack([data[name] for name in data.dtype.names], axis=-1)
    return data.astype(int), image.affine


def _opaque_view(page) -> None:
    """Mask fully opaque (a class pixel is exactly its colour), no crosshair lines or letters."""
    page.evaluate("""() => { const nv = window.medsegViewer(); nv.setOpacity(1, 1); nv.setCrosshairWidth(0);
                             nv.setIsOrientationTextVisible(false); nv.drawScene(); }""")
    page.wait_for_timeout(500)


def _voxels_on_screen(geometry: dict, shape: tuple, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per screenshot pixel of the canvas: the voxel (i, j, k) niivue shows there and its 2D tile;
    tile -1: no volume there (background of the canvas), -2: a 3D render tile."""
    raw = np.frombuffer(base64.b64decode(geometry["data"]), dtype=np.float32)
    screen = raw.reshape(geometry["h"], geometry["w"], 4).astype(float)
    mm = np.concatenate([np.nan_to_num(screen[..., :3], nan=-1e9), np.ones(screen.shape[:2] + (1,))], axis=-1)
    ijk = np.rint(mm @ np.linalg.inv(affine).T)[..., :3].astype(int)
    shown = np.isfinite(screen[..., 3]) & (screen[..., 3] >= 0)
    shown &= (ijk >= 0).all(axis=-1) & (ijk < np.array(shape[:3])).all(axis=-1)
    tiles = np.where(shown, np.nan_to_num(screen[..., 3]), np.where(screen[..., 3] == -2, -2, -1)).astype(int)
    return np.where(shown[..., None], ijk, 0), tiles


def _agreement(pixels: np.ndarray, on_screen: np.ndarray, tiles: np.ndarray, colours: dict) -> dict:
    """Per 2D tile: for each class, (its pixels that show its colour, its pixels); for the
    background (0), (its pixels that show any class colour, its pixels). Tile -1, the canvas
    around the slices: (pixels in any class colour, pixels). Pixels within 1 pixel of a class
    border or a tile edge are left out: sampling may put a border pixel either side."""
    inner = tiles != -2
    for axis in (0, 1):
        for step in (1, -1):
            inner &= np.roll(on_screen, step, axis) == on_screen
            inner &= np.roll(tiles, step, axis) == tiles
    inner[[0, -1], :] = inner[:, [0, -1]] = False
    near = {c: (np.abs(pixels - np.array(rgb)).max(axis=-1) <= TOLERANCE) for c, rgb in colours.items()}
    any_colour = np.logical_or.reduce(list(near.values()))
    result = {}
    for tile in sorted(set(np.unique(tiles[inner]).tolist()) - {-1}):
        here = inner & (tiles == tile)
        row = {c: (int((here & (on_screen == c) & near[c]).sum()), int((here & (on_screen == c)).sum()))
               for c in colours}
        row[0] = (int((here & (on_screen == 0) & any_colour).sum()), int((here & (on_screen == 0)).sum()))
        result[tile] = row
    off = inner & (tiles == -1)
    result[-1] = (int((off & any_colour).sum()), int(off.sum()))
    return result


def _assert_drawn_where_the_mask_is(agreement: dict, classes: list[int], tiles: int, background: int) -> None:
    """Each class's colour on >= 90 % of its pixels in every tile; a class colour on <= 3 % of the
    background's pixels and on (almost) none of the canvas around the slices. `background`: the
    fewest background pixels each tile must have (0 where the mask may cover everything).
    Measured on the hippocampus case: 100 % and 0 % in place; the same mask shifted by one voxel
    along any axis: 5-25 % for the small class and 50-70 % of background pixels coloured."""
    slices = {t: row for t, row in agreement.items() if t >= 0}
    assert len(slices) == tiles, agreement
    for tile, row in slices.items():
        assert row[0][1] >= background, ("too little background on this slice to see a leak", tile, row)
        assert row[0][0] <= 0.03 * row[0][1], (tile, row)  # no class colour where the mask has none
        for c in classes:
            hit, n = row[c]
            assert hit >= 0.9 * n, (tile, c, row)  # the class colour where the mask has it
    for c in classes:
        assert sum(row[c][1] for row in slices.values()) >= 100, (c, agreement)  # each class checked
    leaked, around = agreement[-1]
    assert around >= 1000 and leaked <= 0.001 * around, agreement  # nothing drawn beside the volume


def _screen(page, shot: Path) -> tuple[dict, np.ndarray]:
    """niivue's screen geometry and the screenshot's pixels over the canvas."""
    from PIL import Image

    geometry = page.evaluate(SCREEN_MM_JS)
    page.screenshot(path=str(shot))
    whole = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    return geometry, whole[geometry["y0"]:geometry["y0"] + geometry["h"], geometry["x0"]:geometry["x0"] + geometry["w"]]


def _check_mask(page, server, model: str, labels: np.ndarray, affine: np.ndarray, shot: Path, tiles: int,
                background: int) -> None:
    """Screenshot `shot` of the canvas as it is, checked against the mask `labels` (x, y, z)."""
    info = next(m for m in server.client.get("/api/v1/models").json() if m["name"] == model)
    colours = {c["index"]: c["colour"] for c in info["classes"] if c["index"]}
    geometry, pixels = _screen(page, shot)
    ijk, tile_of = _voxels_on_screen(geometry, labels.shape, affine)
    on_screen = np.where(tile_of >= 0, labels[ijk[..., 0], ijk[..., 1], ijk[..., 2]], -1)
    present = [c for c in colours if (labels == c).any()]
    assert present, f"the {model} mask has no class to draw"
    _assert_drawn_where_the_mask_is(_agreement(pixels, on_screen, tile_of, colours), present, tiles, background)


@pytest.mark.slow  # about 2 minutes: a browser with software WebGL, two trained runs
def test_the_page_draws_the_mask_over_the_volume(server, tmp_path):
    playwright = _needs_playwright_and_niivue()
    image = real_dataset("msd-hippocampus") / "imagesTr" / HIPPO_CASE
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        job = _segment_in_page(page, server, image, "hippocampus")
        labels, affine = _viewer_file(server, job, "overlay", tmp_path)
        # the crosshair on the rarest class's voxel nearest its centre: all three slices cross it
        counts = {c: int((labels == c).sum()) for c in np.unique(labels) if c}
        rare = min(counts, key=counts.get)
        voxels = np.argwhere(labels == rare)
        centre = voxels[np.argmin(((voxels - voxels.mean(axis=0)) ** 2).sum(axis=1))]
        mm = (affine @ np.append(centre, 1.0))[:3].tolist()
        page.evaluate(f"() => {{ const nv = window.medsegViewer(); nv.scene.crosshairPos = nv.mm2frac({mm}); "
                      "nv.drawScene(); }")
        _opaque_view(page)
        _check_mask(page, server, "hippocampus", labels, affine, ARTIFACTS / "serve_page.png", tiles=3, background=100)
        page.evaluate("""() => { const nv = window.medsegViewer(); nv.setOpacity(1, 0.6); nv.setCrosshairWidth(1);
                                 nv.setIsOrientationTextVisible(true); nv.drawScene(); }""")
        page.wait_for_timeout(800)
        page.screenshot(path=str(ARTIFACTS / "serve_page_multiplanar.png"))
        browser.close()


@pytest.mark.slow  # a browser with software WebGL, two trained runs
def test_the_page_draws_the_mask_over_the_picture(server, tmp_path):
    playwright = _needs_playwright_and_niivue()
    image = real_dataset("kvasir-seg") / "images" / KVASIR_IMAGE
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        job = _segment_in_page(page, server, image, "polyp")
        picture, affine = _viewer_file(server, job, "image", tmp_path)
        labels, mask_affine = _viewer_file(server, job, "overlay", tmp_path)
        assert np.allclose(affine, mask_affine) and labels.shape == picture.shape[:3]
        # the picture alone (mask hidden): upright and in place, in its own colours
        _opaque_view(page)
        page.evaluate("() => { const nv = window.medsegViewer(); nv.setOpacity(1, 0); nv.drawScene(); }")
        page.wait_for_timeout(500)
        geometry, pixels = _screen(page, ARTIFACTS / "serve_page_2d_picture.png")
        ijk, tiles = _voxels_on_screen(geometry, picture.shape, affine)
        shown = tiles == 0
        assert shown.sum() >= 0.5 * picture.shape[0] * picture.shape[1], "the picture is not drawn in full"
        expected = picture[ijk[..., 0], ijk[..., 1], ijk[..., 2]]
        exact = np.abs(pixels - expected).max(axis=-1)[shown] <= 2
        # the right place gives ~93 % (the rest: pixels on a voxel border); a shift by one
        # picture pixel ~53 %, a flip ~10 %
        assert exact.mean() >= 0.8, f"{exact.mean():.1%} of the screen pixels show the picture's colour there"
        # then the mask, opaque: the class colour exactly where the mask has it (the untrained run
        # may mark the whole picture, so the canvas around it is the place where it must be absent)
        _opaque_view(page)
        _check_mask(page, server, "polyp", labels, affine, ARTIFACTS / "serve_page_2d.png", tiles=1, background=0)
        browser.close()
