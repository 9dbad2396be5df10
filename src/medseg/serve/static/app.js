// The medseg page: token once (sessionStorage), model list, upload with progress, status polling,
// niivue multiplanar + 3D render of the image with the mask (and uncertainty) overlays.
const API = "/api/v1";
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("medseg-token") || "";
let models = [];
let nv = null;
let current = null;  // {id, model, stats}

const hint = $("niivue-missing").dataset.hint;
$("niivue-missing").textContent = hint;

function headers() { return { Authorization: `Bearer ${token}` }; }

async function api(path, options = {}) {
  const response = await fetch(API + path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (response.status === 401) { askToken("The token was not accepted."); throw new Error("401"); }
  return response;
}

function askToken(message) {
  sessionStorage.removeItem("medseg-token");
  $("token-form").hidden = false;
  $("upload-form").hidden = true;
  if (message) $("state").textContent = message;
}

function setState(text, error = false) {
  $("state").textContent = text;
  $("state").classList.toggle("error", error);
}

async function loadModels() {
  const response = await api("/models");
  models = await response.json();
  $("model").replaceChildren(...models.map((m) => {
    const o = document.createElement("option");
    o.value = m.name;
    o.textContent = `${m.name} (${m.dimensions}D: ${m.classes.slice(1).map((c) => c.name).join(", ")})`;
    return o;
  }));
  $("token-form").hidden = true;
  $("upload-form").hidden = false;
}

$("token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem("medseg-token", token);
  try { await loadModels(); } catch (e) { /* askToken already said so */ }
});

function upload(file, model) {
  // XMLHttpRequest: fetch has no upload progress
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("model", model);
    form.append("file", file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `${API}/jobs`);
    xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) { $("progress").value = 0.5 * e.loaded / e.total; } };
    xhr.onload = () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status === 202) resolve(body);
      else if (xhr.status === 401) { askToken("The token was not accepted."); reject(new Error("401")); }
      else reject(new Error(body.detail || `HTTP ${xhr.status}`));
    };
    xhr.onerror = () => reject(new Error("the upload did not reach the server"));
    setState(`uploading ${file.name}`);
    xhr.send(form);
  });
}

async function waitFor(id) {
  for (;;) {
    const job = await (await api(`/jobs/${id}`)).json();
    $("progress").value = 0.5 + 0.5 * (job.progress || 0);
    setState(`${job.status}: ${job.stage || ""}`);
    if (job.status === "done") return job;
    if (job.status === "failed") throw new Error(job.error);
    await new Promise((r) => setTimeout(r, 500));
  }
}

function labelColormap(model) {
  const cm = { R: [], G: [], B: [], A: [], I: [], labels: [] };
  model.classes.forEach((c) => {
    const rgb = c.colour || [0, 0, 0];
    cm.R.push(rgb[0]); cm.G.push(rgb[1]); cm.B.push(rgb[2]); cm.A.push(c.index ? 255 : 0);
    cm.I.push(c.index); cm.labels.push(c.name);
  });
  return cm;
}

async function show(job, model, stats) {
  if (!window.niivue) { setState("done (install niivue to see it: see the note above)"); return; }
  const { Niivue, SLICE_TYPE } = window.niivue;
  if (!nv) {
    nv = new Niivue({ backColor: [0, 0, 0, 1], show3Dcrosshair: true, isColorbar: false, dragAndDropEnabled: false });
    await nv.attachTo("gl");
  }
  const volumes = [
    { url: `${API}/jobs/${job.id}/image`, name: "image.nii.gz", headers: headers() },
    { url: `${API}/jobs/${job.id}/overlay`, name: "mask.nii.gz", headers: headers(), opacity: Number($("opacity").value) },
  ];
  const uncertain = job.results.includes("uncertainty");
  if (uncertain) volumes.push({ url: `${API}/jobs/${job.id}/uncertainty`, name: "uncertainty.nii.gz",
    headers: headers(), colormap: "hot", opacity: 0 });
  await nv.loadVolumes(volumes);
  nv.volumes[1].setColormapLabel(labelColormap(model));
  nv.setInterpolation(true);  // nearest neighbour: class borders stay voxel-sharp, colours exact
  nv.updateGLVolume();
  nv.setSliceType(model.dimensions === 2 ? SLICE_TYPE.AXIAL : SLICE_TYPE.MULTIPLANAR);
  if (model.dimensions === 3) nv.opts.multiplanarShowRender = 1;  // always: 3D render in the fourth tile
  nv.drawScene();
  $("uncertainty-row").hidden = !uncertain;
  $("show-uncertainty").checked = false;
  legend(model, stats);
  $("result").hidden = false;
}

function legend(model, stats) {
  const rows = stats.structures || [];
  $("legend").tBodies[0].replaceChildren(...model.classes.slice(1).map((c) => {
    const row = rows.find((r) => r.class_index === c.index) || {};
    const size = row.volume_ml != null ? `${row.volume_ml.toFixed(2)} ml`
      : row.area_mm2 != null ? `${row.area_mm2.toFixed(1)} mm²`
      : row.voxels != null ? `${row.voxels} voxels` : `${row.pixels ?? 0} pixels`;
    const tr = document.createElement("tr");
    tr.innerHTML = `<td><span class="swatch" style="background: rgb(${c.colour.join(",")})"></span></td><td></td><td>${size}</td>`;
    tr.children[1].textContent = c.name;
    return tr;
  }));
  const u = stats.uncertainty;
  $("score").textContent = u ? `uncertainty score ${u.score.toFixed(3)} nats${u.flagged ? " (flagged for review)" : ""}` : "";
}

$("upload-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) { setState("choose a file first", true); return; }
  const model = models.find((m) => m.name === $("model").value);
  $("result").hidden = true;
  $("progress").value = 0;
  try {
    const { id } = await upload(file, model.name);
    const job = await waitFor(id);
    const stats = await (await api(`/jobs/${id}/statistics`)).json();
    current = { id, model, stats, name: file.name };
    await show(job, model, stats);
    setState(`done: ${file.name}`);
    document.body.dataset.job = id;  // for scripts and tests: the job on screen
  } catch (e) {
    if (e.message !== "401") setState(e.message, true);
  }
});

$("opacity").addEventListener("input", () => { if (nv && nv.volumes[1]) nv.setOpacity(1, Number($("opacity").value)); });
$("show-uncertainty").addEventListener("change", () => {
  if (nv && nv.volumes[2]) nv.setOpacity(2, $("show-uncertainty").checked ? 0.7 : 0);
});
$("download").addEventListener("click", async () => {
  const response = await api(`/jobs/${current.id}/mask`);
  const blob = await response.blob();
  const match = /filename="?([^";]+)"?/.exec(response.headers.get("content-disposition") || "");
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = match ? match[1] : "mask";
  a.click();
  URL.revokeObjectURL(a.href);
});

try { window.niivue = await import("/niivue.js"); } catch (e) { window.niivue = null; }
window.medsegViewer = () => nv;
if (token) { loadModels().catch(() => askToken()); } else { askToken(); }
