// Colour points on the page (Zhang et al., SIGGRAPH 2017), for a model that takes them: click the
// photo to add a point and pick one of the colours the network suggests there (or any colour);
// drag a point, or move it with the arrow keys; Delete or a right-click removes it; Ctrl+Z undoes.
// Points are kept in the photo's own pixels (origin top-left), as the CLI's JSON: {"points": [...]}.
// app.js sends them with each render and calls wirePoints(); this file keeps them and their markers.
"use strict";

const editor = {
  enabled: false,
  suggests: false, // whether the model has a distribution to suggest colours from
  maxPoints: 1000,
  size: null, // [width, height] of the photo
  points: [], // {id, x, y, color}; color null: placed, no colour picked yet (not sent)
  selected: null, // id of the point the palette is for
  history: [], // earlier lists of coloured points (JSON), for undo
  nextId: 1,
  drag: null, // the point being dragged with the pointer
  lastMove: null, // {id, at} of the last arrow-key move: a run of them undoes as one
  asked: 0, // counts suggestion requests, so a late answer for another point is dropped
  markers: new Map(), // id -> its button
};

const coloured = () => editor.points.filter((p) => p.color);
const asJson = (p) => ({ x: p.x, y: p.y, color: p.color });

function currentHints() {
  return { points: editor.enabled ? coloured().map(asJson) : [] };
}

function pointsKey() {
  return JSON.stringify(currentHints().points);
}

function enablePoints(info) {
  editor.enabled = true;
  editor.suggests = Boolean(info.suggests);
  editor.maxPoints = info.max_points || 1000;
  document.body.classList.add("guided");
  $("point-tools").hidden = false;
  $("points").hidden = false;
  // Points are placed where the result shows: the split starts at the left edge, and the
  // slider under the photo shows the photo before.
  $("split").value = "0";
  $("compare").style.setProperty("--split", "0%");
}

function setPhotoSize(size) {
  state.photoSize = size;
  editor.size = size;
  drawPoints();
}

function resetPoints(size) {
  editor.points = [];
  editor.history = [];
  editor.selected = null;
  editor.size = size;
  closePalette();
  drawPoints();
}

function savePoints() {
  return { points: editor.points.filter((p) => p.color).map((p) => ({ ...p })), history: [...editor.history] };
}

function restorePoints(saved, size) {
  resetPoints(size);
  editor.points = saved.points;
  editor.history = saved.history;
  drawPoints();
}

// A change of the coloured points: remembered for undo, drawn, and rendered.
function commit(change, mergeKey = null) {
  const now = performance.now();
  const merge = mergeKey && editor.lastMove && editor.lastMove.key === mergeKey && now - editor.lastMove.at < 1500;
  const before = JSON.stringify(coloured());
  change();
  const after = JSON.stringify(coloured());
  editor.lastMove = mergeKey ? { key: mergeKey, at: now } : null;
  if (after === before) {
    drawPoints();
    return;
  }
  if (!merge) editor.history.push(before);
  $("undo").disabled = false;
  drawPoints();
  if (state.uploadId) update();
}

function undoPoints() {
  if (!editor.history.length) return false;
  const points = JSON.parse(editor.history.pop());
  editor.points = points.map((p) => ({ ...p, id: p.id || editor.nextId++ }));
  editor.selected = null;
  editor.lastMove = null;
  closePalette();
  drawPoints();
  if (state.uploadId) update();
  return true;
}

function pointById(id) {
  return editor.points.find((p) => p.id === id);
}

function label(p) {
  const n = editor.points.indexOf(p) + 1;
  return `Colour point ${n} at ${p.x}, ${p.y}: ${p.color || "no colour yet"}`;
}

function drawPoints() {
  const layer = $("points");
  const ids = new Set(editor.points.map((p) => p.id));
  for (const [id, marker] of editor.markers) {
    if (!ids.has(id)) {
      marker.remove();
      editor.markers.delete(id);
    }
  }
  if (!editor.size) return;
  const [width, height] = editor.size;
  for (const p of editor.points) {
    let marker = editor.markers.get(p.id);
    if (!marker) {
      marker = document.createElement("button");
      marker.type = "button";
      marker.className = "point";
      marker.dataset.id = String(p.id);
      layer.append(marker);
      editor.markers.set(p.id, marker);
    }
    marker.style.left = `${((p.x + 0.5) / width) * 100}%`;
    marker.style.top = `${((p.y + 0.5) / height) * 100}%`;
    marker.style.backgroundColor = p.color || "transparent";
    marker.classList.toggle("pending", !p.color);
    marker.setAttribute("aria-pressed", String(p.id === editor.selected));
    marker.setAttribute("aria-label", label(p));
  }
  $("undo").disabled = !editor.history.length;
  $("clear-points").disabled = !editor.points.length;
  $("save-points").disabled = !coloured().length;
}

// The photo's pixel under a pointer event, clamped to the photo.
function photoPixel(event) {
  const rect = $("points").getBoundingClientRect();
  const [width, height] = editor.size;
  const x = Math.floor(((event.clientX - rect.left) / rect.width) * width);
  const y = Math.floor(((event.clientY - rect.top) / rect.height) * height);
  return [Math.min(width - 1, Math.max(0, x)), Math.min(height - 1, Math.max(0, y))];
}

function addPoint(x, y) {
  if (!editor.size || editor.points.length >= editor.maxPoints) return;
  const p = { id: editor.nextId++, x, y, color: null };
  editor.points.push(p);
  select(p.id);
  editor.markers.get(p.id).focus();
}

function removePoint(id) {
  const p = pointById(id);
  if (!p) return;
  if (editor.selected === id) closePalette();
  const drop = () => {
    editor.points = editor.points.filter((q) => q.id !== id);
  };
  if (p.color) {
    commit(drop);
  } else {
    drop();
    drawPoints();
  }
}

function movePoint(id, dx, dy) {
  const p = pointById(id);
  const [width, height] = editor.size;
  const move = () => {
    p.x = Math.min(width - 1, Math.max(0, p.x + dx));
    p.y = Math.min(height - 1, Math.max(0, p.y + dy));
  };
  if (p.color) {
    commit(move, `move:${id}`);
  } else {
    move();
    drawPoints();
  }
  $("palette-title").textContent = paletteTitle(p);
}

function chooseColor(color) {
  const p = pointById(editor.selected);
  if (!p) return;
  commit(() => {
    p.color = color.toLowerCase();
  });
  $("picker").value = p.color;
  $("palette-title").textContent = paletteTitle(p);
}

function paletteTitle(p) {
  return `Colour of point ${editor.points.indexOf(p) + 1} (at ${p.x}, ${p.y})`;
}

function select(id) {
  const p = pointById(id);
  // A point placed and left without a colour goes when another is chosen.
  editor.points = editor.points.filter((q) => q.color || q.id === id);
  editor.selected = id;
  drawPoints();
  $("palette").hidden = false;
  $("palette-title").textContent = paletteTitle(p);
  $("picker").value = p.color || "#808080";
  suggest(p);
}

function closePalette() {
  const pending = editor.points.find((p) => p.id === editor.selected && !p.color);
  editor.selected = null;
  if (pending) editor.points = editor.points.filter((p) => p !== pending);
  $("palette").hidden = true;
  drawPoints();
}

// The colours the network finds likely at the point, given the other coloured points.
async function suggest(p) {
  const swatches = $("swatches");
  swatches.replaceChildren();
  if (!editor.suggests || !state.uploadId) {
    $("suggest-status").textContent = editor.suggests ? "" : "This model suggests no colours; pick one.";
    return;
  }
  const asked = ++editor.asked;
  $("suggest-status").textContent = "Asking the model for likely colours…";
  const others = { points: coloured().filter((q) => q.id !== p.id).map(asJson) };
  try {
    const query = new URLSearchParams({ x: String(p.x), y: String(p.y), k: "8" });
    const response = await fetch(`/api/colorize/${state.uploadId}/suggestions?${query}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(others),
    });
    if (asked !== editor.asked) return;
    if (!response.ok) throw await errorOf(response);
    const body = await response.json();
    for (const s of body.suggestions) {
      const swatch = document.createElement("button");
      swatch.type = "button";
      swatch.className = "swatch";
      swatch.dataset.color = s.color;
      swatch.style.backgroundColor = s.color;
      swatch.setAttribute("aria-label", `${s.color}, ${Math.round(s.probability * 100)} % likely`);
      swatch.title = `${s.color} (${Math.round(s.probability * 100)} %)`;
      swatch.addEventListener("click", () => chooseColor(s.color));
      swatches.append(swatch);
    }
    $("suggest-status").textContent = "Suggested by the model, most likely first:";
  } catch (error) {
    if (asked === editor.asked) $("suggest-status").textContent = `No suggestions: ${error.message}`;
  }
}

function savePointsFile() {
  const stem = state.file.name.replace(/\.[^.]*$/, "") || "photo";
  const text = `${JSON.stringify({ points: coloured().map(asJson) }, null, 1)}\n`;
  saveBlob(new Blob([text], { type: "application/json" }), `${stem}.json`);
  $("status").textContent = `Saved ${coloured().length} colour points as ${stem}.json.`;
}

async function loadPointsFile(file) {
  try {
    const value = JSON.parse(await file.text());
    const list = value && Array.isArray(value.points) ? value.points : null;
    if (!list) throw new Error('expected {"points": [...]}');
    if (list.length > editor.maxPoints) throw new Error(`at most ${editor.maxPoints} points`);
    list.forEach((p, i) => {
      if (typeof p !== "object" || p === null || typeof p.color !== "string") {
        throw new Error(`point ${i} has no colour`);
      }
    });
    closePalette();
    // The server checks each point against the photo; a refused set is undone (update()).
    commit(() => {
      editor.points = list.map((p) => ({ id: editor.nextId++, x: p.x, y: p.y, color: p.color }));
    });
    $("status").textContent = `Loaded ${list.length} colour points from ${file.name}.`;
  } catch (error) {
    showError(`${file.name}: ${error.message}`);
  }
}

const ARROWS = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };

function onMarkerKey(event) {
  const id = Number(event.target.dataset.id);
  if (event.key in ARROWS) {
    event.preventDefault();
    // One pixel with Shift, else about a hundredth of the photo's longer side.
    const step = event.shiftKey ? 1 : Math.max(1, Math.round(Math.max(...editor.size) / 100));
    const [dx, dy] = ARROWS[event.key];
    if (editor.selected !== id) select(id);
    movePoint(id, dx * step, dy * step);
  } else if (event.key === "Delete" || event.key === "Backspace") {
    event.preventDefault();
    removePoint(id);
    $("add-point").focus();
  } else if (event.key === "Escape") {
    closePalette();
  }
}

function wirePointer(layer) {
  layer.addEventListener("pointerdown", (event) => {
    const id = Number(event.target.dataset.id);
    if (!event.target.classList.contains("point") || event.button !== 0) return;
    const p = pointById(id);
    editor.drag = { id, x: p.x, y: p.y, before: JSON.stringify(coloured()), moved: false };
    event.target.setPointerCapture(event.pointerId);
  });
  layer.addEventListener("pointermove", (event) => {
    const drag = editor.drag;
    if (!drag) return;
    const [x, y] = photoPixel(event);
    const p = pointById(drag.id);
    drag.moved = drag.moved || x !== drag.x || y !== drag.y;
    if (drag.moved) {
      p.x = x;
      p.y = y;
      drawPoints();
    }
  });
  layer.addEventListener("pointerup", () => {
    const drag = editor.drag;
    editor.drag = null;
    if (!drag || !drag.moved) return;
    const p = pointById(drag.id);
    if (p.color) {
      // The move is one change: undo takes the point back to where the drag began.
      editor.history.push(drag.before);
      drawPoints();
      if (state.uploadId) update();
    }
    if (editor.selected === p.id) $("palette-title").textContent = paletteTitle(p);
  });
  layer.addEventListener("click", (event) => {
    if (event.target === layer && editor.size) {
      addPoint(...photoPixel(event));
    } else if (event.target.classList.contains("point")) {
      select(Number(event.target.dataset.id));
    }
  });
  layer.addEventListener("contextmenu", (event) => {
    if (!event.target.classList.contains("point")) return;
    event.preventDefault();
    removePoint(Number(event.target.dataset.id));
  });
  layer.addEventListener("keydown", (event) => {
    if (event.target.classList.contains("point")) onMarkerKey(event);
  });
}

function wirePoints() {
  wirePointer($("points"));
  $("add-point").addEventListener("click", () => {
    if (editor.size) addPoint(Math.floor(editor.size[0] / 2), Math.floor(editor.size[1] / 2));
  });
  $("undo").addEventListener("click", undoPoints);
  $("clear-points").addEventListener("click", () => {
    closePalette();
    commit(() => {
      editor.points = [];
    });
  });
  $("save-points").addEventListener("click", savePointsFile);
  $("load-points").addEventListener("change", (event) => {
    const file = event.target.files[0];
    event.target.value = "";
    if (file) loadPointsFile(file);
  });
  $("picker").addEventListener("change", (event) => chooseColor(event.target.value));
  $("point-remove").addEventListener("click", () => {
    if (editor.selected !== null) removePoint(editor.selected);
  });
  $("point-done").addEventListener("click", closePalette);
  document.addEventListener("keydown", (event) => {
    const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(event.target.tagName);
    if (editor.enabled && !typing && (event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z") {
      event.preventDefault();
      undoPoints();
    }
  });
}
