// The collection map: every painting at its place (GET /api/map). Far out, each painting is drawn from ONE
// atlas image (all thumbnails in a grid, GET /api/map/atlas.jpg, as PixPlot does); zoomed in, the
// paintings in view load their own thumbnails, the nearest first.
"use strict";
const canvas = $("map"), ctx = canvas.getContext("2d");
const tip = $("tip"), msg = $("msg"), info = $("info");
let data = null, n = 0, view = {s: 1, ox: 0, oy: 0}, base = 1, tile = 0.02, dirty = true;
let atlas = null;  // {img, cell, cols, ready}
const images = new Map(), queue = [], MAX_LOADS = 8; let loading = 0;
function hue(s) { let h = 0; for (const c of s || "") h = (h * 31 + c.charCodeAt(0)) >>> 0; return h % 360; }
function resize() { const r = canvas.getBoundingClientRect(), d = devicePixelRatio || 1;
  canvas.width = r.width * d; canvas.height = r.height * d; ctx.setTransform(d, 0, 0, d, 0, 0); base = Math.min(r.width, r.height) * 0.94 / (1 + tile); dirty = true; }
function fit() { const r = canvas.getBoundingClientRect(); view = {s: 1, ox: (r.width - base) / 2, oy: (r.height - base) / 2}; dirty = true; }
function toScreen(i) { return [data.x[i] * base * view.s + view.ox, data.y[i] * base * view.s + view.oy]; }
function px() { return Math.max(3, tile * base * view.s); }
let frame = 0;
function want(id, size) {
  const key = id + ":" + size; let img = images.get(key);
  if (!img) { img = new Image(); img.decoding = "async"; img.ready = false; images.set(key, img);
    queue.push([img, `/thumbs/${id}.jpg?size=${size}`, key]); }
  img.wanted = frame; return img;
}
function pump() { while (loading < MAX_LOADS && queue.length) { const [img, url, key] = queue.pop();
  if (img.wanted < frame - 1) { images.delete(key); continue; }  // panned or zoomed away before it started
  loading++;
  img.onload = () => { img.ready = true; loading--; dirty = true; pump(); }; img.onerror = () => { loading--; pump(); }; img.src = url; } }
function fitted(w, h, p) { const k = Math.min(p / w, p / h); return [w * k, h * k]; }
function draw() {
  requestAnimationFrame(draw); if (!dirty || !data) return; dirty = false;
  const r = canvas.getBoundingClientRect(); ctx.clearRect(0, 0, r.width, r.height);
  const p = px(), half = p / 2, own = atlas ? p > atlas.cell * 1.5 : p >= 10, size = p > 120 ? 256 : 64; let shown = 0;
  frame++;
  for (let i = 0; i < n; i++) {
    const [x, y] = toScreen(i); if (x < -p || y < -p || x > r.width + p || y > r.height + p) continue; shown++;
    const img = own ? want(data.objectid[i], size) : null;
    if (img && img.ready) { const [w, h] = fitted(img.naturalWidth, img.naturalHeight, p); ctx.drawImage(img, x - w / 2, y - h / 2, w, h); continue; }
    if (atlas && atlas.ready) {
      const c = atlas.cell, sx = (i % atlas.cols) * c, sy = Math.floor(i / atlas.cols) * c;
      ctx.drawImage(atlas.img, sx, sy, c, c, x - half, y - half, p, p); continue;
    }
    ctx.fillStyle = data.style[i] ? `hsl(${hue(data.style[i])},40%,55%)` : "#77777c"; ctx.fillRect(x - half * 0.8, y - half * 0.8, p * 0.8, p * 0.8);
  }
  pump();
  info.textContent = `${n} paintings · ${shown} in view · zoom ${view.s.toFixed(1)}×` + (data.source ? ` · ${data.source}` : "");
}
function hit(mx, my) { const p = px() / 2; let best = -1, bd = Infinity;
  for (let i = 0; i < n; i++) { const [x, y] = toScreen(i), dx = Math.abs(x - mx), dy = Math.abs(y - my);
    if (dx <= p && dy <= p && dx + dy < bd) { bd = dx + dy; best = i; } } return best; }
function zoomAt(f, mx, my) { const s = Math.min(400, Math.max(0.3, view.s * f)); f = s / view.s;
  view.ox = mx - (mx - view.ox) * f; view.oy = my - (my - view.oy) * f; view.s = s; dirty = true; }
let drag = null;
canvas.addEventListener("pointerdown", (e) => { drag = {x: e.clientX, y: e.clientY, ox: view.ox, oy: view.oy, moved: false}; canvas.setPointerCapture(e.pointerId); canvas.classList.add("dragging"); });
canvas.addEventListener("pointermove", (e) => {
  const r = canvas.getBoundingClientRect(), mx = e.clientX - r.left, my = e.clientY - r.top;
  if (drag) { const dx = e.clientX - drag.x, dy = e.clientY - drag.y; if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
    view.ox = drag.ox + dx; view.oy = drag.oy + dy; dirty = true; tip.classList.add("hidden"); return; }
  if (!data) return; const i = hit(mx, my);
  if (i < 0) { tip.classList.add("hidden"); return; }
  tip.innerHTML = `<b>${esc(data.title[i])}</b><br>${esc(data.artist[i])}<br><span class="sub">${esc(data.style[i])} · objectid ${data.objectid[i]}</span>`;
  tip.style.left = (mx + 14) + "px"; tip.style.top = (my + 14) + "px"; tip.classList.remove("hidden");
});
canvas.addEventListener("pointerup", (e) => { canvas.classList.remove("dragging"); const d = drag; drag = null;
  if (!d || d.moved || !data) return; const r = canvas.getBoundingClientRect(), i = hit(e.clientX - r.left, e.clientY - r.top);
  if (i >= 0) location.href = "/painting/" + data.objectid[i]; });
canvas.addEventListener("wheel", (e) => { e.preventDefault(); const r = canvas.getBoundingClientRect();
  zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top); }, {passive: false});
function centreZoom(f) { const r = canvas.getBoundingClientRect(); zoomAt(f, r.width / 2, r.height / 2); }
$("zin").onclick = () => centreZoom(1.6); $("zout").onclick = () => centreZoom(1 / 1.6); $("zfit").onclick = fit;
async function load() {
  const r = await fetch("/api/map?wait=5"); const j = await r.json().catch(() => ({}));
  if (r.status === 202) { msg.textContent = "Computing the map of the collection… (about a minute for 10,000 paintings)"; setTimeout(load, 1500); return; }
  if (!r.ok) { msg.innerHTML = esc(j.detail || "The map is not available.") + (r.status === 503 ? " Run <code>artsim run</code> first." : ""); return; }
  data = j; n = j.count; msg.classList.add("hidden");
  if (j.atlas) {
    atlas = {img: new Image(), cell: j.atlas.cell, cols: j.atlas.cols, ready: false};
    atlas.img.onload = () => { atlas.ready = true; dirty = true; canvas.dataset.atlas = "1"; };
    atlas.img.onerror = () => { atlas = null; dirty = true; };
    atlas.img.src = j.atlas.url;
  }
  // a tile is about the mean spacing of the paintings at zoom 1 (every painting visible, little overlap)
  tile = Math.min(0.12, 0.9 / Math.sqrt(Math.max(1, n)));
  resize(); fit(); canvas.dataset.ready = "1"; canvas.dataset.count = String(n);
}
addEventListener("resize", () => { resize(); });
requestAnimationFrame(draw); load();
