// The zhangcolor page: upload a photo, compare before and after, move T, download.
// A T change asks the server to re-decode the network output it cached for this upload
// (GET /api/colorize/{id}); only if the server has forgotten it is the photo sent again.
"use strict";

// The page shows (and re-decodes at each T) a preview as wide as its box in device pixels; the
// download is full size.
const previewSide = () =>
  Math.min(1280, Math.max(256, Math.round(document.querySelector("main").clientWidth * devicePixelRatio)));
const $ = (id) => document.getElementById(id);

const state = {
  file: null, // the File being worked on
  uploadId: null, // the server's name for its cached network output
  generation: 0, // counts the photos chosen, so a late answer for an old one is dropped
  shown: null, // "generation:T" of the image on screen
  wantedT: 0.38, // T of the slider, at first the paper's (constants.TEMPERATURE, as in index.html)
  inFlight: false,
  beforeUrl: null,
  resultUrl: null,
  previous: null, // the last photo that worked, shown again if a new one fails
};

function setState(name) {
  document.body.dataset.state = name;
  $("download").disabled = name !== "ready";
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  setState(state.uploadId ? "ready" : "empty");
}

// What the page needs to show a photo that worked again: kept while a new one is tried.
function snapshot() {
  if (!state.uploadId) return null;
  return {
    file: state.file,
    uploadId: state.uploadId,
    beforeUrl: state.beforeUrl,
    beforeFilter: $("before").style.filter,
    beforeFallback: $("before").dataset.fallback,
    resultUrl: state.resultUrl,
    shownT: Number($("result").dataset.t),
  };
}

// A new photo failed: show the message, and go back to the photo before it (slider, split and
// download working on it), or to the empty page if there was none.
function failNewPhoto(message, failed) {
  const previous = state.previous;
  state.previous = null;
  state.generation += 1;
  if (state.beforeUrl && (!previous || state.beforeUrl !== previous.beforeUrl)) {
    URL.revokeObjectURL(state.beforeUrl);
  }
  if (previous) {
    state.file = previous.file;
    state.uploadId = previous.uploadId;
    state.beforeUrl = previous.beforeUrl;
    state.resultUrl = previous.resultUrl;
    const before = $("before");
    before.onerror = null;
    before.style.filter = previous.beforeFilter;
    before.dataset.fallback = previous.beforeFallback;
    before.src = previous.beforeFallback === "gray" ? previous.resultUrl : previous.beforeUrl;
    $("result").src = previous.resultUrl;
    state.shown = `${state.generation}:${previous.shownT}`;
    $("status").textContent = `Could not colorize ${failed}. Still showing ${previous.file.name}.`;
  } else {
    state.file = null;
    state.uploadId = null;
    state.beforeUrl = null;
    state.shown = null;
    $("viewer").hidden = true;
    $("status").textContent = "";
  }
  $("error").textContent = `${failed}: ${message}`;
  $("error").hidden = false;
  setState(state.uploadId ? "ready" : "empty");
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return body.detail || `${response.status} ${response.statusText}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

function serverTimings(response) {
  const timings = {};
  for (const item of (response.headers.get("Server-Timing") || "").split(",")) {
    const match = item.trim().match(/^(\w+);dur=([\d.]+)/);
    if (match) timings[match[1]] = Number(match[2]);
  }
  return timings;
}

function post(t, format, maxSide) {
  const form = new FormData();
  form.append("image", state.file, state.file.name);
  form.append("temperature", String(t));
  form.append("format", format);
  if (maxSide) form.append("max_side", String(maxSide));
  return fetch("/api/colorize", { method: "POST", body: form });
}

// The cached output at T if the server still has it, else the photo sent again.
async function fetchAt(t, format, maxSide) {
  if (state.uploadId) {
    // The photo's name travels with each request: the server keeps none.
    const query = new URLSearchParams({ temperature: String(t), format, name: state.file.name });
    if (maxSide) query.set("max_side", String(maxSide));
    const response = await fetch(`/api/colorize/${state.uploadId}?${query}`);
    if (response.status !== 404) return response;
  }
  return post(t, format, maxSide);
}

async function render(t, generation) {
  const started = performance.now();
  const side = previewSide();
  const response = state.uploadId ? await fetchAt(t, "jpg", side) : await post(t, "jpg", side);
  if (generation !== state.generation) return; // another photo was chosen meanwhile
  if (!response.ok) throw new Error(await errorMessage(response));
  const network = response.headers.get("X-Network");
  const url = URL.createObjectURL(await response.blob());
  const result = $("result");
  await new Promise((resolve, reject) => {
    result.onload = resolve;
    result.onerror = () => {
      URL.revokeObjectURL(url);
      reject(new Error("the browser could not show the result"));
    };
    result.src = url;
  });
  if (generation !== state.generation) return;
  // Only now, with the result on screen, is the upload the page's (and the old result gone).
  state.uploadId = response.headers.get("X-Upload-Id");
  const kept = state.previous && state.previous.resultUrl;
  if (state.resultUrl && state.resultUrl !== kept) URL.revokeObjectURL(state.resultUrl);
  state.resultUrl = url;
  const before = $("before");
  if (before.dataset.fallback === "gray") before.src = url; // see start()
  result.dataset.t = String(t);
  state.shown = `${generation}:${t}`;
  const took = Math.round(performance.now() - started);
  const timings = serverTimings(response);
  const status = $("status");
  status.dataset.network = network;
  status.textContent =
    network === "ran"
      ? `Colorized at T = ${t} in ${took} ms (network ${Math.round(timings.network || 0)} ms).`
      : `Re-decoded at T = ${t} in ${took} ms; the network did not run again.`;
}

// Keep at most one request in flight; when it returns, catch up with the slider and the file.
async function update() {
  if (state.inFlight) return;
  state.inFlight = true;
  setState("busy");
  try {
    while (state.shown !== `${state.generation}:${state.wantedT}`) {
      await render(state.wantedT, state.generation);
      if (state.uploadId && state.previous) {
        // The new photo worked: nothing to go back to.
        URL.revokeObjectURL(state.previous.beforeUrl);
        URL.revokeObjectURL(state.previous.resultUrl);
        state.previous = null;
      }
    }
    setState("ready");
  } catch (error) {
    if (!state.uploadId && state.file) {
      failNewPhoto(error.message, state.file.name);
    } else {
      showError(error.message);
    }
  } finally {
    state.inFlight = false;
  }
  // The slider may have moved while a failed photo was being tried.
  if (state.uploadId && state.shown !== `${state.generation}:${state.wantedT}`) update();
}

function start(file) {
  if (!file) return;
  $("error").hidden = true;
  // Keep the photo on screen until the new one works; a photo that never worked is dropped.
  const kept = snapshot() || state.previous;
  if (state.beforeUrl && (!kept || state.beforeUrl !== kept.beforeUrl)) {
    URL.revokeObjectURL(state.beforeUrl);
  }
  if (state.previous && kept !== state.previous) {
    URL.revokeObjectURL(state.previous.beforeUrl);
    URL.revokeObjectURL(state.previous.resultUrl);
  }
  state.previous = kept;
  state.file = file;
  state.uploadId = null;
  state.generation += 1;
  state.beforeUrl = URL.createObjectURL(file);
  const before = $("before");
  // Formats the browser cannot show (TIFF, say) fall back to the result in gray: its L is the
  // photo's own.
  before.style.filter = "";
  before.dataset.fallback = "";
  before.onerror = () => {
    before.onerror = null;
    before.style.filter = "grayscale(1)";
    before.dataset.fallback = "gray"; // render() shows the result here once it comes
    before.removeAttribute("src");
  };
  before.src = state.beforeUrl;
  $("viewer").hidden = false;
  $("status").textContent = `Colorizing ${file.name}…`;
  update();
}

async function download() {
  const t = state.wantedT;
  $("download").disabled = true;
  $("status").textContent = `Preparing the full-size image at T = ${t}…`;
  try {
    const response = await fetchAt(t, "png", null);
    if (!response.ok) throw new Error(await errorMessage(response));
    state.uploadId = response.headers.get("X-Upload-Id");
    const disposition = response.headers.get("Content-Disposition") || "";
    const name = (disposition.match(/filename="([^"]+)"/) || [])[1] || "colorized.png";
    const url = URL.createObjectURL(await response.blob());
    const link = document.createElement("a");
    link.href = url;
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    $("status").textContent = `Downloaded ${name}.`;
  } catch (error) {
    showError(error.message);
  } finally {
    $("download").disabled = document.body.dataset.state !== "ready";
  }
}

function wire() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => start(e.target.files[0]));
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    start(e.dataTransfer.files[0]);
  });

  $("temperature").addEventListener("input", (e) => {
    state.wantedT = Number(e.target.value);
    $("t-value").textContent = state.wantedT.toFixed(2);
    if (state.uploadId) update();
  });
  $("split").addEventListener("input", (e) => {
    $("compare").style.setProperty("--split", `${e.target.value}%`);
  });
  $("download").addEventListener("click", download);
  $("another").addEventListener("click", () => {
    $("file").value = "";
    $("file").click();
  });
  setState("empty");

  fetch("/healthz")
    .then((r) => r.json())
    .then((info) => {
      $("model").textContent =
        `model: ${info.model} (${info.head}, ${info.backend} on ${info.device}) · zhangcolor ${info.version}`;
      $("max-mb").textContent = String(info.limits.max_upload_mb);
    })
    .catch(() => {});
}

wire();
