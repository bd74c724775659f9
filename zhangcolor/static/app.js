// The zhangcolor page: upload a photo, compare before and after, move T, add colour points (for a
// model that takes them; points.js), download. A T change asks the server to re-decode the network
// output it cached for this upload (GET /api/colorize/{id}); new colour points ask it to run the
// network again on the L it cached (POST /api/colorize/{id}); only if the server has forgotten the
// upload is the photo sent again.
"use strict";

// The page shows (and re-decodes at each change) a preview as wide as its box in device pixels;
// the download is full size.
const previewSide = () =>
  Math.min(1280, Math.max(256, Math.round(document.querySelector("main").clientWidth * devicePixelRatio)));
const $ = (id) => document.getElementById(id);

const state = {
  file: null, // the File being worked on
  uploadId: null, // the server's name for its cached network output
  photoSize: null, // [width, height] of the photo, as the server read it (X-Photo-Size)
  generation: 0, // counts the photos chosen, so a late answer for an old one is dropped
  shown: null, // "generation:T:points" of the image on screen
  wantedT: null, // T of the slider: the model's own until it moves (null until the model is known)
  inFlight: false,
  beforeUrl: null,
  resultUrl: null,
  previous: null, // the last photo that worked, shown again if a new one fails
};

// What the server says of its model (GET /api/model): its own T, T's range, whether it takes
// colour points and suggests colours. Everything waits for it.
const model = fetch("/api/model")
  .then((response) => (response.ok ? response.json() : Promise.reject(new Error(response.statusText))))
  .then((info) => {
    const slider = $("temperature");
    slider.min = String(info.min_temperature);
    slider.max = String(info.max_temperature);
    slider.value = String(info.temperature);
    state.wantedT = info.temperature;
    $("t-value").textContent = formatT(info.temperature);
    $("t-own").textContent = formatT(info.temperature);
    $("t-controls").hidden = !info.uses_temperature;
    if (info.takes_hints) enablePoints(info);
    return info;
  })
  .catch(() => {
    state.wantedT = null; // the server's own T then
    return { takes_hints: false, suggests: false };
  });

// T with two decimals, or three where it has them: 1.00, 0.36, 0.355, 0.001.
function formatT(t) {
  const rounded = Number(t.toFixed(3));
  return rounded.toFixed(rounded === Number(rounded.toFixed(2)) ? 2 : 3);
}

function wanted() {
  return `${state.generation}:${state.wantedT}:${pointsKey()}`;
}

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
    photoSize: state.photoSize,
    beforeUrl: state.beforeUrl,
    beforeFilter: $("before").style.filter,
    beforeFallback: $("before").dataset.fallback,
    resultUrl: state.resultUrl,
    shown: state.shown.split(":").slice(1).join(":"),
    points: savePoints(),
  };
}

// A new photo failed: show the message once with the file's name, and go back to the photo before
// it (slider, split, points and download working on it), or to the empty page if there was none.
function failNewPhoto(message, failed) {
  const previous = state.previous;
  state.previous = null;
  state.generation += 1;
  if (state.beforeUrl && (!previous || state.beforeUrl !== previous.beforeUrl)) {
    URL.revokeObjectURL(state.beforeUrl);
  }
  if (previous) {
    Object.assign(state, {
      file: previous.file,
      uploadId: previous.uploadId,
      photoSize: previous.photoSize,
      beforeUrl: previous.beforeUrl,
      resultUrl: previous.resultUrl,
    });
    const before = $("before");
    before.onerror = null;
    before.style.filter = previous.beforeFilter;
    before.dataset.fallback = previous.beforeFallback;
    before.src = previous.beforeFallback === "gray" ? previous.resultUrl : previous.beforeUrl;
    $("result").src = previous.resultUrl;
    restorePoints(previous.points, previous.photoSize);
    state.shown = `${state.generation}:${previous.shown}`;
    $("status").textContent = `Could not colorize ${failed}. Still showing ${previous.file.name}.`;
  } else {
    Object.assign(state, { file: null, uploadId: null, beforeUrl: null, shown: null });
    resetPoints(null);
    $("viewer").hidden = true;
    $("status").textContent = "";
  }
  // The server names the file in its message already; say it once.
  $("error").textContent = message.startsWith(`${failed}:`) ? message : `${failed}: ${message}`;
  $("error").hidden = false;
  setState(state.uploadId ? "ready" : "empty");
}

async function errorOf(response) {
  let body = {};
  try {
    body = await response.json();
  } catch {
    // not JSON: the status says it
  }
  const error = new Error(body.detail || `${response.status} ${response.statusText}`);
  error.code = body.error;
  error.status = response.status;
  return error;
}

function serverTimings(response) {
  const timings = {};
  for (const item of (response.headers.get("Server-Timing") || "").split(",")) {
    const match = item.trim().match(/^(\w+);dur=([\d.]+)/);
    if (match) timings[match[1]] = Number(match[2]);
  }
  return timings;
}

function renderingQuery(t, format, maxSide) {
  // The photo's name travels with each request: the server keeps none.
  const query = new URLSearchParams({ format, name: state.file.name });
  if (t !== null) query.set("temperature", String(t));
  if (maxSide) query.set("max_side", String(maxSide));
  return query;
}

function post(t, format, maxSide, hints) {
  const form = new FormData();
  form.append("image", state.file, state.file.name);
  if (t !== null) form.append("temperature", String(t));
  form.append("format", format);
  if (maxSide) form.append("max_side", String(maxSide));
  if (hints.points.length) form.append("hints", JSON.stringify(hints));
  return fetch("/api/colorize", { method: "POST", body: form });
}

// The cached output at T (with the colour points) if the server still has it, else the photo
// sent again.
async function fetchAt(t, format, maxSide, hints) {
  if (state.uploadId) {
    const url = `/api/colorize/${state.uploadId}?${renderingQuery(t, format, maxSide)}`;
    const response = hints.points.length
      ? await fetch(url, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(hints),
        })
      : await fetch(url);
    if (response.status !== 404) return response;
  }
  return post(t, format, maxSide, hints);
}

function showImage(img, url) {
  return new Promise((resolve, reject) => {
    img.onload = resolve;
    img.onerror = () => {
      URL.revokeObjectURL(url);
      reject(new Error("the browser could not show the result"));
    };
    img.src = url;
  });
}

async function render(t, generation, key) {
  const started = performance.now();
  const hints = currentHints();
  const response = await fetchAt(t, "jpg", previewSide(), hints);
  if (generation !== state.generation) return; // another photo was chosen meanwhile
  if (!response.ok) throw await errorOf(response);
  const network = response.headers.get("X-Network");
  const url = URL.createObjectURL(await response.blob());
  await showImage($("result"), url);
  if (generation !== state.generation) return;
  // Only now, with the result on screen, is the upload the page's (and the old result gone).
  state.uploadId = response.headers.get("X-Upload-Id");
  const size = (response.headers.get("X-Photo-Size") || "").split("x").map(Number);
  if (size.length === 2 && size.every((n) => n > 0)) setPhotoSize(size);
  const kept = state.previous && state.previous.resultUrl;
  if (state.resultUrl && state.resultUrl !== kept) URL.revokeObjectURL(state.resultUrl);
  state.resultUrl = url;
  const before = $("before");
  if (before.dataset.fallback === "gray") before.src = url; // see start()
  const shownT = t === null ? Number(response.headers.get("X-Temperature")) : t;
  $("result").dataset.t = String(shownT);
  state.shown = `${generation}:${t}:${key}`;
  const took = Math.round(performance.now() - started);
  const timings = serverTimings(response);
  const points = hints.points.length;
  const withPoints = points ? ` with ${points} colour point${points > 1 ? "s" : ""}` : "";
  const status = $("status");
  status.dataset.network = network;
  status.textContent =
    network === "ran"
      ? `Colorized${withPoints} at T = ${formatT(shownT)} in ${took} ms (network ${Math.round(timings.network || 0)} ms).`
      : `Re-decoded${withPoints} at T = ${formatT(shownT)} in ${took} ms; the network did not run again.`;
}

// Keep at most one request in flight; when it returns, catch up with the slider, the points and
// the file.
async function update() {
  if (state.inFlight) return;
  state.inFlight = true;
  setState("busy");
  await model;
  try {
    while (state.shown !== wanted()) {
      await render(state.wantedT, state.generation, pointsKey());
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
      if (error.code === "bad_hints" || error.code === "hints_not_supported") undoPoints();
      showError(error.message);
    }
  } finally {
    state.inFlight = false;
  }
  // The slider or the points may have moved while a failed request was being tried.
  if (state.uploadId && state.shown !== wanted()) update();
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
  state.photoSize = null;
  state.generation += 1;
  resetPoints(null);
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

// The name the server gave the download: its UTF-8 filename* when it has one, else filename.
function downloadName(disposition) {
  const extended = disposition.match(/filename\*=UTF-8''([^;]+)/i);
  if (extended) {
    try {
      return decodeURIComponent(extended[1]);
    } catch {
      // a malformed escape: fall back to the plain name
    }
  }
  return (disposition.match(/filename="([^"]+)"/) || [])[1] || "colorized.png";
}

function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function download() {
  const t = state.wantedT;
  $("download").disabled = true;
  $("status").textContent = "Preparing the full-size image…";
  try {
    const response = await fetchAt(t, "png", null, currentHints());
    if (!response.ok) throw await errorOf(response);
    state.uploadId = response.headers.get("X-Upload-Id");
    const name = downloadName(response.headers.get("Content-Disposition") || "");
    saveBlob(await response.blob(), name);
    $("status").textContent = `Downloaded ${name}.`;
  } catch (error) {
    showError(error.message);
  } finally {
    $("download").disabled = document.body.dataset.state !== "ready";
  }
}

function setT(value) {
  state.wantedT = Number(Number(value).toFixed(3));
  $("t-value").textContent = formatT(state.wantedT);
  if (state.uploadId) update();
}

function wireTemperature() {
  const slider = $("temperature");
  slider.addEventListener("input", (e) => setT(e.target.value));
  // The slider moves by 0.001 to reach every T; its keys move by 0.01 (0.1 with Page Up/Down).
  const steps = { ArrowUp: 0.01, ArrowRight: 0.01, ArrowDown: -0.01, ArrowLeft: -0.01, PageUp: 0.1, PageDown: -0.1 };
  slider.addEventListener("keydown", (e) => {
    if (!(e.key in steps)) return;
    e.preventDefault();
    const value = Math.min(Number(slider.max), Math.max(Number(slider.min), Number(slider.value) + steps[e.key]));
    slider.value = String(Number(value.toFixed(3)));
    setT(slider.value);
  });
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
  wireTemperature();
  wirePoints();
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
