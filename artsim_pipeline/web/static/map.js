// The collection map: every painting at its place (GET /api/map), drawn with WebGL (map_gl.js: one sprite
// per painting from ONE atlas image, as PixPlot does); zoomed in, the paintings in view load their own
// thumbnails (drawn on the 2-D overlay with the region labels, the lasso and the marks), and the sprites
// snap to a grid so that no two overlap. Layouts (similarity, date, grid) switch without a reload, by an
// animation on the GPU. The panels (find, colours, regions, selection) are map_ui.js.
// Test hooks: window.artsimMap (state(), zoomBy(), zoomStep(), firstPaintMs).
"use strict";
const canvas = $("map"), over = $("over"), octx = over.getContext("2d");
const tip = $("tip"), msg = $("msg"), info = $("info");
let data = null, n = 0, gl = null, base = 1, tile = 0.02, dirty = true;
let view = {s: 1, ox: 0, oy: 0};
const st = {layout: "similarity", colour: "thumbnails", highlight: new Set(), selected: new Set(), query: null, focus: null,
  tool: "pan", snapped: false, labels: [], drawn: 0};
const layouts = {};  // name -> Float32Array [x0, y0, x1, y1, ...] (world units, [0, 1]²)
let from = null, to = null, anim = null;  // the drawn positions move from -> to (u_t)
let atlas = null;  // {img, cell, cols, ready}
const images = new Map(), queue = [], MAX_LOADS = 8; let loading = 0, frameNo = 0;
const SNAP_PX = 36, OWN_MIN = 48;
// Above DIRECT_MAX paintings a software-rendered WebGL frame can take longer than a frame: while the view
// moves, the last WebGL frame is moved and scaled by a CSS transform (the compositor's work), and the
// sprites are drawn again once the view has rested IDLE_MS (or when what they show changes).
const DIRECT_MAX = 20000, IDLE_MS = 120;
let glView = null, glStale = true, lastMove = 0;
function glChanged() { glStale = true; dirty = true; }
function viewMoved() { lastMove = performance.now(); dirty = true; }
const api = window.artsimMap = {firstPaintMs: null, atlasPaintMs: null};

function resize() {
  const r = canvas.getBoundingClientRect(), d = devicePixelRatio || 1;
  for (const c of [canvas, over]) { c.width = Math.round(r.width * d); c.height = Math.round(r.height * d); }
  octx.setTransform(d, 0, 0, d, 0, 0); base = Math.min(r.width, r.height) * 0.94 / (1 + tile); glChanged();
}
function fit() { const r = canvas.getBoundingClientRect(); view = {s: 1, ox: (r.width - base) / 2, oy: (r.height - base) / 2}; viewMoved(); update(); }
function toScreen(i) { return [to[2 * i] * base * view.s + view.ox, to[2 * i + 1] * base * view.s + view.oy]; }
function px() { return Math.max(2, tile * base * view.s); }
function zoomAt(f, mx, my) {
  const s = Math.min(2000, Math.max(0.3, view.s * f)); f = s / view.s;
  view.ox = mx - (mx - view.ox) * f; view.oy = my - (my - view.oy) * f; view.s = s; viewMoved(); update();
}
function centreZoom(f) { const r = canvas.getBoundingClientRect(); zoomAt(f, r.width / 2, r.height / 2); }
// fly to a box of the map (world units), e.g. a painting, an artist's paintings, a region
function flyTo(x0, y0, x1, y1, minTile) {
  const r = canvas.getBoundingClientRect(), pad = tile * 2;
  const w = Math.max(x1 - x0 + pad * 2, 1e-6), h = Math.max(y1 - y0 + pad * 2, 1e-6);
  let s = Math.min(r.width / (w * base), r.height / (h * base));
  if (minTile) s = Math.max(s, minTile / (tile * base));
  view.s = Math.min(2000, Math.max(0.3, s));
  view.ox = r.width / 2 - (x0 + x1) / 2 * base * view.s; view.oy = r.height / 2 - (y0 + y1) / 2 * base * view.s;
  viewMoved(); update();
}
function boundsOf(indices) {
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const i of indices) { const x = to[2 * i], y = to[2 * i + 1]; x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y); }
  return [x0, y0, x1, y1];
}

// ------------------------------------------------------------------ layouts and the grid snap
function interleave(xs, ys) { const a = new Float32Array(2 * xs.length); for (let i = 0; i < xs.length; i++) { a[2 * i] = xs[i]; a[2 * i + 1] = ys[i]; } return a; }
// The grid snap (map_snap.js, a Web Worker): each painting into the nearest free cell, no two overlap.
let snapper = null; const snapping = new Set();
function snapped(name) {
  const key = name + ":snap"; if (layouts[key]) return layouts[key];
  if (!snapping.has(name) && typeof Worker !== "undefined") {
    snapping.add(name);
    if (!snapper) {
      snapper = new Worker("/static/map_snap.js");
      snapper.onmessage = (e) => { layouts[e.data.name + ":snap"] = e.data.positions; api.snapMs = e.data.ms;
        if (e.data.name === "similarity") api.snapReady = true; update(); };
    }
    snapper.postMessage({name, positions: layouts[name].slice(), cell: tile * 1.1});
  }
  return null;
}
function target() {
  const want = st.layout !== "grid" && px() >= SNAP_PX, grid = want ? snapped(st.layout) : null;
  st.snapped = !!grid; return grid || layouts[st.layout];
}
function moveTo(next, ms) {
  if (next === to) return;
  const t = anim ? Math.min(1, (performance.now() - anim.start) / anim.ms) : 1;
  const now = new Float32Array(to.length); for (let k = 0; k < to.length; k++) now[k] = from[k] + (to[k] - from[k]) * t;
  from = now; to = next; gl && gl.setPositions(from, to); anim = {start: performance.now(), ms}; glChanged();
}
function update() { if (data) moveTo(target(), 350); }
function setLayout(name) {
  if (!layouts[name]) return; st.layout = name; update(); if (window.MapUI) MapUI.layoutChanged();
  const axis = name === "date" && data.layouts.date.axis;
  if (axis && !data.year.some((y) => y != null)) MapUI.status("The catalog gives no year for these paintings: all of them stand in the undated strip.");
}

// ------------------------------------------------------------------ marks (highlight, selection, query)
function flags() {
  const f = new Uint8Array(n), idx = MapUI.indexOf;
  for (const o of st.highlight) { const i = idx(o); if (i >= 0) f[i] = 1; }
  for (const o of st.selected) { const i = idx(o); if (i >= 0) f[i] = 2; }
  for (const o of [st.query, st.focus]) { const i = o == null ? -1 : idx(o); if (i >= 0) f[i] = 2; }
  if (gl) gl.setFlags(f); glChanged();
}

// ------------------------------------------------------------------ own thumbnails when zoomed in
function want(id, size) {
  const key = id + ":" + size; let img = images.get(key);
  if (!img) { img = new Image(); img.decoding = "async"; img.ready = false; images.set(key, img); queue.push([img, `/thumbs/${id}.jpg?size=${size}`, key]); }
  img.wanted = frameNo; return img;
}
function pump() {
  while (loading < MAX_LOADS && queue.length) {
    const [img, url, key] = queue.pop();
    if (img.wanted < frameNo - 1) { images.delete(key); continue; }  // panned or zoomed away before it started
    loading++;
    img.onload = () => { img.ready = true; loading--; dirty = true; pump(); }; img.onerror = () => { loading--; pump(); }; img.src = url;
  }
}
function fitted(w, h, p) { const k = Math.min(p / w, p / h); return [w * k, h * k]; }

// ------------------------------------------------------------------ drawing
function drawOverlay(r, t) {
  octx.clearRect(0, 0, r.width, r.height);
  const p = px(), own = atlas ? p > Math.max(OWN_MIN, atlas.cell * 1.5) : p >= OWN_MIN, size = p > 120 ? 256 : 64;
  let shown = 0; frameNo++;
  const visible = [];
  for (let i = 0; i < n; i++) {
    const x = (from[2 * i] + (to[2 * i] - from[2 * i]) * t) * base * view.s + view.ox, y = (from[2 * i + 1] + (to[2 * i + 1] - from[2 * i + 1]) * t) * base * view.s + view.oy;
    if (x < -p || y < -p || x > r.width + p || y > r.height + p) continue;
    shown++; if (own && visible.length < 600) visible.push([i, x, y]);
  }
  if (own && st.colour === "thumbnails") for (const [i, x, y] of visible) {
    const img = want(data.objectid[i], size);
    if (img.ready) { const [w, h] = fitted(img.naturalWidth, img.naturalHeight, p * 0.96); octx.drawImage(img, x - w / 2, y - h / 2, w, h); }
  }
  if (own) for (const [i, x, y] of visible) {  // the marks on top of the thumbnails
    const o = data.objectid[i], mark = o === st.query || o === st.focus || st.selected.has(o) ? "#33d9ff" : st.highlight.has(o) ? "#ffcc1a" : null;
    if (mark) { octx.strokeStyle = mark; octx.lineWidth = 3; octx.strokeRect(x - p / 2, y - p / 2, p, p); }
  }
  for (const o of [st.query, st.focus]) {  // the query painting: a ring, at any zoom
    const i = o == null ? -1 : MapUI.indexOf(o); if (i < 0) continue;
    const [x, y] = toScreen(i); octx.strokeStyle = "#33d9ff"; octx.lineWidth = 2.5;
    octx.beginPath(); octx.arc(x, y, Math.max(12, p * 0.8), 0, 2 * Math.PI); octx.stroke();
  }
  pump();
  MapUI.drawLabels(octx, r);
  MapUI.drawLasso(octx);
  return shown;
}
function drawGL(t, finish) {
  gl.draw({scale: base * view.s, ox: view.ox, oy: view.oy}, px(), t, {dpr: devicePixelRatio || 1, finish,
    thumbnails: st.colour === "thumbnails" && atlas && atlas.ready, dimOthers: st.highlight.size > 0 || st.selected.size > 0});
  glView = {...view}; glStale = false; canvas.style.transform = "";
}
function transformGL() {
  const k = view.s / glView.s;
  canvas.style.transform = `translate(${view.ox - glView.ox * k}px, ${view.oy - glView.oy * k}px) scale(${k})`;
}
function draw() {
  requestAnimationFrame(draw);
  if (!data || !(dirty || anim)) return;
  dirty = false;
  const r = canvas.getBoundingClientRect();
  let t = 1;
  if (anim) { t = Math.min(1, (performance.now() - anim.start) / anim.ms); t = t * t * (3 - 2 * t); if (t >= 1) anim = null; }
  if (!gl) return;
  if (n < DIRECT_MAX || glStale || anim || !glView || performance.now() - lastMove >= IDLE_MS) drawGL(t, false);
  else { transformGL(); dirty = true; }  // drawn in full once the view rests
  const shown = drawOverlay(r, t);
  st.drawn++;
  // times since the navigation started (performance.now()'s origin)
  if (api.firstPaintMs === null) { api.firstPaintMs = performance.now(); canvas.dataset.painted = "1"; }
  if (api.atlasPaintMs === null && atlas && atlas.ready) { api.atlasPaintMs = performance.now(); canvas.dataset.atlasPainted = "1"; }
  info.textContent = `${n} paintings · ${shown} in view · zoom ${view.s.toFixed(1)}×` + (data.source ? ` · ${data.source}` : "");
}

// ------------------------------------------------------------------ pointers: mouse, pen and touch
function hit(mx, my) {
  const p = px() / 2; let best = -1, bd = Infinity;
  for (let i = 0; i < n; i++) {
    const dx = Math.abs(to[2 * i] * base * view.s + view.ox - mx), dy = Math.abs(to[2 * i + 1] * base * view.s + view.oy - my);
    if (dx <= p && dy <= p && dx + dy < bd) { bd = dx + dy; best = i; }
  }
  return best;
}
const pointers = new Map(); let drag = null, pinch = null;
function local(e) { const r = over.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; }
function pinchState() { const [a, b] = [...pointers.values()]; return {d: Math.hypot(a[0] - b[0], a[1] - b[1]), m: [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2]}; }
over.addEventListener("pointerdown", (e) => {
  try { over.setPointerCapture(e.pointerId); } catch (err) { /* a synthetic pointer */ }
  pointers.set(e.pointerId, local(e));
  if (pointers.size === 2) { pinch = pinchState(); drag = null; MapUI.cancelLasso(); return; }
  const [mx, my] = local(e), tool = e.shiftKey && st.tool === "pan" ? "box" : st.tool;
  drag = {x: mx, y: my, ox: view.ox, oy: view.oy, moved: false, at: performance.now(), type: e.pointerType, tool};
  if (tool !== "pan") MapUI.startLasso(tool, mx, my);
  over.classList.add("dragging");
});
over.addEventListener("pointermove", (e) => {
  const [mx, my] = local(e);
  if (pointers.has(e.pointerId)) pointers.set(e.pointerId, [mx, my]);
  if (pinch && pointers.size === 2) {
    const now = pinchState(); zoomAt(now.d / Math.max(1, pinch.d), now.m[0], now.m[1]);
    view.ox += now.m[0] - pinch.m[0]; view.oy += now.m[1] - pinch.m[1]; pinch = now; return;
  }
  if (drag) {
    const dx = mx - drag.x, dy = my - drag.y; if (Math.abs(dx) + Math.abs(dy) > 4) drag.moved = true;
    if (drag.tool === "pan") { view.ox = drag.ox + dx; view.oy = drag.oy + dy; viewMoved(); } else MapUI.extendLasso(mx, my);
    tip.classList.add("hidden"); return;
  }
  if (!data || e.pointerType === "touch") return;
  const i = hit(mx, my); if (i < 0) { tip.classList.add("hidden"); return; }
  MapUI.showTip(i, mx, my, false);
});
function endPointer(e) {
  pointers.delete(e.pointerId);
  if (pinch) { if (pointers.size < 2) pinch = null; drag = null; return; }
  over.classList.remove("dragging"); const d = drag; drag = null;
  if (!d || !data) return;
  if (d.tool !== "pan") { MapUI.finishLasso(); return; }
  if (d.moved || e.type === "pointercancel") return;
  const [mx, my] = local(e), i = hit(mx, my);
  if (d.type === "touch") { if (i >= 0) MapUI.showTip(i, mx, my, true); else tip.classList.add("hidden"); return; }  // a tap: the card
  if (i >= 0) location.href = "/painting/" + data.objectid[i];
}
over.addEventListener("pointerup", endPointer); over.addEventListener("pointercancel", endPointer);
over.addEventListener("wheel", (e) => { e.preventDefault(); const [mx, my] = local(e); zoomAt(Math.exp(-e.deltaY * 0.0015), mx, my); }, {passive: false});
$("zin").onclick = () => centreZoom(1.6); $("zout").onclick = () => centreZoom(1 / 1.6); $("zfit").onclick = fit;

// ------------------------------------------------------------------ loading
async function load() {
  const r = await fetch("/api/map?wait=5"); const j = await r.json().catch(() => ({}));
  if (r.status === 202) { msg.textContent = "Computing the map of the collection… (about a minute for 10,000 paintings)"; setTimeout(load, 1500); return; }
  if (!r.ok) { msg.innerHTML = esc(j.detail || "The map is not available.") + (r.status === 503 ? " Run <code>artsim run</code> first." : ""); return; }
  data = j; n = j.count; msg.classList.add("hidden");
  layouts.similarity = interleave(j.x, j.y);
  for (const name of ["date", "grid"]) if (j.layouts && j.layouts[name]) layouts[name] = interleave(j.layouts[name].x, j.layouts[name].y);
  from = to = layouts.similarity;
  tile = Math.min(0.12, 0.9 / Math.sqrt(Math.max(1, n)));  // about the mean spacing: all visible, little overlap
  try { gl = MapGL.create(canvas); } catch (err) { console.warn("WebGL:", err); gl = null; }
  if (!gl) { msg.textContent = "This browser cannot draw the map (WebGL is off or unavailable)."; msg.classList.remove("hidden"); return; }
  gl.setCount(n); gl.setPositions(from, to);
  MapUI.init(j);  // colours, legend, regions, find, selection; URL parameters (focus, highlight, query)
  if (j.atlas) {
    atlas = {img: new Image(), cell: j.atlas.cell, cols: j.atlas.cols, ready: false};
    atlas.img.onload = () => { gl.setAtlas(atlas.img, atlas.cell, atlas.cols); atlas.ready = true; glChanged(); canvas.dataset.atlas = "1"; };
    atlas.img.onerror = () => { atlas = null; dirty = true; };
    atlas.img.src = j.atlas.url;
  }
  resize(); fit(); MapUI.applyParams(); canvas.dataset.ready = "1"; canvas.dataset.count = String(n);
  snapped("similarity");  // the grid snap, computed off the page's thread before the first deep zoom
}
addEventListener("resize", () => { resize(); });
Object.assign(api, {
  state: () => ({layout: st.layout, colour: st.colour, snapped: st.snapped, highlighted: [...st.highlight].sort((a, b) => a - b),
    selected: [...st.selected].sort((a, b) => a - b), query: st.query, focus: st.focus, zoom: view.s, tilePx: px(),
    labels: st.labels.slice(), frames: st.drawn, count: n, legend: MapUI.legendEntries()}),
  zoomBy: (f) => centreZoom(f), setLayout, screenOf: (objectid) => { const i = MapUI.indexOf(objectid); return i < 0 ? null : toScreen(i); },
  // the sprites drawn again in full for a zoomed view, timed to the last pixel (bench; finish = readPixels)
  zoomStep(f) {
    const t0 = performance.now(); centreZoom(f || 1.25); anim = null; from = to; gl.setPositions(from, to);
    drawGL(1, true); drawOverlay(canvas.getBoundingClientRect(), 1); dirty = false; return performance.now() - t0;
  },
});
requestAnimationFrame(draw); load();
