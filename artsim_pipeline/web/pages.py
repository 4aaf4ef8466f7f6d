"""The two HTML pages (plain HTML + a little JavaScript; no build step). Both talk to the JSON API."""

from __future__ import annotations

_STYLE = """
:root { --fg:#1d1d1f; --muted:#6e6e73; --line:#d9d9de; --accent:#7a3e1d; --bg:#fafaf7; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color:var(--fg); background:var(--bg); }
header { display:flex; gap:1.5em; align-items:baseline; padding:.7em 1.2em; border-bottom:1px solid var(--line); background:#fff; }
header h1 { font-size:1.2em; margin:0; color:var(--accent); }
header a { color:var(--fg); text-decoration:none; } header a.here { font-weight:600; text-decoration:underline; }
main { padding:1em 1.2em; }
.banner { padding:.6em .9em; border-radius:6px; margin:.5em 0; }
.banner.error { background:#fde8e8; border:1px solid #f1b0b0; }
.banner.info { background:#eef4fb; border:1px solid #bcd3ee; }
#choices ul { list-style:none; padding:0; margin:.3em 0 0; } #choices li { margin:.2em 0; }
.hidden { display:none !important; }
code { background:#f0f0ec; padding:0 .25em; border-radius:3px; }
"""

SEARCH_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>artsim: find similar paintings</title>
<style>""" + _STYLE + """
form { display:grid; grid-template-columns: minmax(260px, 360px) 1fr; gap:1em; align-items:start; }
#drop { border:2px dashed var(--line); border-radius:10px; padding:1.2em; text-align:center; background:#fff; cursor:pointer; }
#drop.over { border-color:var(--accent); background:#fff7f0; }
#drop small { color:var(--muted); display:block; margin-top:.4em; }
fieldset { border:1px solid var(--line); border-radius:8px; background:#fff; margin:0; }
fieldset label { display:inline-flex; flex-direction:column; font-size:.85em; color:var(--muted); margin:.2em .5em .4em 0; }
fieldset input[type=text], fieldset input[type=number] { font-size:1rem; padding:.25em .4em; border:1px solid var(--line); border-radius:4px; }
button { font-size:1rem; padding:.35em .9em; border-radius:6px; border:1px solid var(--accent); background:var(--accent); color:#fff; cursor:pointer; }
button.secondary { background:#fff; color:var(--accent); }
#query { display:flex; gap:1em; align-items:flex-start; margin:1em 0 .5em; }
#query .frame { position:relative; display:inline-block; line-height:0; }
#query img { max-width:220px; max-height:220px; border-radius:6px; border:1px solid var(--line); }
#facebox { position:absolute; border:2px solid #00d0ff; box-shadow:0 0 0 1px #004; }
#notes { color:var(--muted); margin:.2em 0; padding-left:1.2em; }
#grid { display:grid; grid-template-columns:repeat(auto-fill, minmax(210px, 1fr)); gap:1em; margin-top:.6em; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; overflow:hidden; display:flex; flex-direction:column; }
.card .thumb { height:200px; display:flex; align-items:center; justify-content:center; background:#f3f2ee; }
.card .thumb img { max-width:100%; max-height:200px; }
.card .body { padding:.5em .7em .7em; display:flex; flex-direction:column; gap:.15em; flex:1; }
.card .title { font-weight:600; } .card .meta { color:var(--muted); font-size:.88em; }
.card .scores { font-variant-numeric:tabular-nums; font-size:.85em; }
.card .actions { margin-top:auto; display:flex; justify-content:space-between; align-items:center; padding-top:.4em; }
.rank { color:var(--accent); font-weight:700; margin-right:.3em; }
#status { color:var(--muted); }
</style></head>
<body>
<header><h1>artsim</h1><a class="here" href="/">Search</a><a href="/map">Map of the collection</a><a href="/docs">API</a></header>
<main>
<div id="banner" class="banner hidden"></div>
<form id="form" autocomplete="off" onsubmit="return false">
  <div>
    <div id="drop" tabindex="0">
      <strong>Drop an image here</strong> or <u>choose a file</u>
      <small>JPEG, PNG, WebP, GIF, BMP or TIFF, up to __LIMIT_MB__ MiB; it is not stored</small>
      <input id="file" type="file" accept="image/*" class="hidden">
      <div id="filename" class="meta"></div>
    </div>
    <p style="text-align:center;color:var(--muted);margin:.5em 0">or a painting of the collection</p>
    <input id="objectid" type="text" list="picks" placeholder="objectid, title or artist"
      style="width:100%;font-size:1rem;padding:.35em .5em;border:1px solid var(--line);border-radius:6px">
    <datalist id="picks"></datalist>
  </div>
  <fieldset><legend>Options</legend>
    <label>Results (K)<input id="k" type="number" min="1" max="100" value="12" style="width:5em"></label>
    <label style="flex-direction:row;align-items:center;gap:.3em;color:var(--fg)"><input id="face" type="checkbox"> search with the face (face crop)</label><br>
    <label>Artist<input id="artist" type="text" placeholder="e.g. rembrandt"></label>
    <label>Style<input id="style" type="text" placeholder="e.g. baroque"></label>
    <label>Medium<input id="medium" type="text" placeholder="e.g. oil on panel"></label>
    <label>Years from<input id="year_from" type="number" style="width:6em"></label>
    <label>to<input id="year_to" type="number" style="width:6em"></label>
    <div><button id="go" type="button">Search</button> <button id="clear" class="secondary" type="button">Clear</button>
    <span id="status"></span></div>
  </fieldset>
</form>
<div id="error" class="banner error hidden" role="alert"></div>
<div id="choices" class="banner info hidden" aria-live="polite"></div>
<section id="query" class="hidden"><div class="frame"><img id="query-img" alt="query"><div id="facebox" class="hidden"></div></div>
  <div><div id="query-title" class="title"></div><ul id="notes"></ul></div></section>
<div id="grid" data-query=""></div>
</main>
<script>
const $ = (id) => document.getElementById(id);
let currentFile = null;
function esc(s) { return String(s ?? "").replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c])); }
function showError(msg) { const e = $("error"); e.textContent = msg; e.classList.toggle("hidden", !msg); }
function setFile(file) {
  currentFile = file; $("filename").textContent = file ? file.name : "";
  if (file) { $("objectid").value = ""; search({file}); }
}
$("drop").addEventListener("click", () => $("file").click());
$("drop").addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
$("file").addEventListener("change", () => setFile($("file").files[0] || null));
for (const ev of ["dragenter", "dragover"]) $("drop").addEventListener(ev, (e) => { e.preventDefault(); $("drop").classList.add("over"); });
for (const ev of ["dragleave", "drop"]) $("drop").addEventListener(ev, (e) => { e.preventDefault(); $("drop").classList.remove("over"); });
$("drop").addEventListener("drop", (e) => { const f = e.dataTransfer.files[0]; if (f) setFile(f); });
$("go").addEventListener("click", () => {
  const id = $("objectid").value.trim(), digits = id.match(/^(\\d+)(\\s|$)/);
  hidePicks();
  if (digits) search({objectid: digits[1]});  // an objectid, or a pick of the list ("1005 Title")
  else if (id) findByText(id);
  else if (currentFile) search({file: currentFile});
  else showError("Choose or drop an image, or type an objectid, a title or an artist.");
});
function hidePicks() { const c = $("choices"); c.replaceChildren(); c.classList.add("hidden"); }
async function findByText(text) {
  showError(""); $("status").textContent = "Looking up…";
  let r, j;
  try { r = await fetch("/api/paintings?limit=20&q=" + encodeURIComponent(text)); j = await r.json(); }
  catch (err) { $("status").textContent = ""; showError("The server did not answer: " + err); return; }
  $("status").textContent = "";
  if (!r.ok) { showError(j.detail || "the lookup failed"); return; }
  if (!j.paintings.length) { showError(`no painting matches '${text}'`); return; }
  if (j.paintings.length === 1) { search({objectid: String(j.paintings[0].objectid)}); return; }
  const box = $("choices"), head = document.createElement("p"), list = document.createElement("ul");
  head.textContent = `${j.paintings.length} paintings match '${text}'; pick one:`;
  for (const p of j.paintings) {
    const li = document.createElement("li"), b = document.createElement("button");
    b.type = "button"; b.className = "pick secondary"; b.dataset.objectid = String(p.objectid);
    b.textContent = `${p.title} — ${p.artist}${p.date ? ", " + p.date : ""} (objectid ${p.objectid})`;
    li.appendChild(b); list.appendChild(li);
  }
  box.replaceChildren(head, list); box.classList.remove("hidden");
}
$("choices").addEventListener("click", (e) => {
  const b = e.target.closest("button.pick"); if (!b) return;
  hidePicks(); $("objectid").value = b.dataset.objectid; search({objectid: b.dataset.objectid});
});
$("objectid").addEventListener("keydown", (e) => { if (e.key === "Enter") $("go").click(); });
$("clear").addEventListener("click", () => { currentFile = null; $("file").value = ""; $("filename").textContent = "";
  for (const id of ["objectid", "artist", "style", "medium", "year_from", "year_to"]) $(id).value = "";
  $("grid").innerHTML = ""; $("query").classList.add("hidden"); showError(""); hidePicks(); history.replaceState(null, "", "/"); });
let pickTimer = null;
$("objectid").addEventListener("input", () => {
  clearTimeout(pickTimer);
  const q = $("objectid").value.trim(); if (q.length < 2 || /^\\d+$/.test(q)) return;
  pickTimer = setTimeout(async () => {
    const r = await fetch("/api/paintings?limit=15&q=" + encodeURIComponent(q)); if (!r.ok) return;
    const j = await r.json();
    $("picks").replaceChildren(...j.paintings.map(p => { const o = document.createElement("option");
      o.value = `${p.objectid} ${p.title}`; o.textContent = `${p.artist} ${p.date}`; return o; }));
  }, 200);
});

async function search(q) {
  showError(""); hidePicks(); $("status").textContent = "Searching…";
  const fd = new FormData();
  if (q.file) fd.append("image", q.file, q.file.name || "upload"); else fd.append("objectid", q.objectid);
  fd.append("k", $("k").value || "12");
  if ($("face").checked) fd.append("face_crop", "true");
  for (const id of ["artist", "style", "medium", "year_from", "year_to"]) if ($(id).value.trim()) fd.append(id, $(id).value.trim());
  let r, j;
  try { r = await fetch("/api/search", {method: "POST", body: fd}); j = await r.json(); }
  catch (err) { $("status").textContent = ""; showError("The server did not answer: " + err); return; }
  $("status").textContent = "";
  if (!r.ok) { showError(j.detail + (j.hint ? " (" + j.hint + ")" : "")); return; }
  if (q.objectid) history.replaceState(null, "", "/?objectid=" + encodeURIComponent(q.objectid));
  render(j, q);
}

function render(j, q) {
  const img = $("query-img"), box = $("facebox");
  box.classList.add("hidden");
  if (q.file) { img.src = URL.createObjectURL(q.file); $("query-title").textContent = "Your image: " + (q.file.name || "upload"); }
  else { img.src = j.query_painting.thumbnail + "?size=256";
    $("query-title").innerHTML = `${esc(j.query_painting.title)} — ${esc(j.query_painting.artist)} ${esc(j.query_painting.date)} (objectid ${j.objectid})`; }
  img.onload = () => {
    if (!j.face_box) return;
    const s = img.clientWidth / img.naturalWidth, [x0, y0, x1, y1] = j.face_box;
    Object.assign(box.style, {left: (x0 * s + 1) + "px", top: (y0 * s + 1) + "px", width: ((x1 - x0) * s) + "px", height: ((y1 - y0) * s) + "px"});
    box.classList.remove("hidden");
  };
  const notes = [...j.notes];
  if (j.face_count !== null && j.face_count !== undefined) notes.unshift(j.face_count + " face(s) found" + (j.variant === "face" ? "; searched with the face" : ""));
  $("notes").innerHTML = notes.map(n => `<li>${esc(n)}</li>`).join("");
  $("query").classList.remove("hidden");
  const grid = $("grid");
  if (!j.results.length) { grid.innerHTML = `<p class="banner info">No painting matches: ${esc(j.notes.join("; ") || "try other filters")}.</p>`; }
  else grid.innerHTML = j.results.map(r => `
    <article class="card" data-objectid="${r.objectid}">
      <div class="thumb"><img loading="lazy" src="${r.thumbnail}?size=256" alt="${esc(r.title)}"></div>
      <div class="body"><div class="title"><span class="rank">${r.rank}</span>${esc(r.title)}</div>
        <div>${esc(r.artist)}</div><div class="meta">${esc(r.date)}${r.style ? " · " + esc(r.style) : ""}</div>
        <div class="meta">${esc(r.medium)}</div>
        <div class="scores">visual ${r.visual.toFixed(3)} · metadata ${r.metadata.toFixed(2)} · <b>final ${r.final.toFixed(3)}</b></div>
        <div class="actions"><button type="button" class="more secondary" data-objectid="${r.objectid}">More like this</button>
          <a class="nga" href="${r.nga_url}" target="_blank" rel="noopener">nga.gov ↗</a></div></div>
    </article>`).join("");
  grid.dataset.query = j.query;
  grid.dataset.generation = j.generation || "";
}
$("grid").addEventListener("click", (e) => {
  const b = e.target.closest("button.more"); if (!b) return;
  $("objectid").value = b.dataset.objectid; currentFile = null; $("filename").textContent = "";
  search({objectid: b.dataset.objectid}); window.scrollTo({top: 0, behavior: "smooth"});
});
(async () => {
  const r = await fetch("/healthz"); const j = await r.json().catch(() => ({}));
  if (r.status === 503) { const b = $("banner"); b.className = "banner error";
    b.innerHTML = "No search index yet: run <code>artsim run</code> first. " + esc(j.detail || ""); }
  else if (r.ok) { const b = $("banner"); b.className = "banner info";
    b.textContent = `${j.indexed} paintings indexed (models ${j.models.join(", ")}).`; }
  const id = new URLSearchParams(location.search).get("objectid");
  if (id) { $("objectid").value = id; search({objectid: id}); }
})();
</script>
</body></html>
"""

MAP_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>artsim: map of the collection</title>
<style>""" + _STYLE + """
html, body { height:100%; } body { display:flex; flex-direction:column; }
#wrap { position:relative; flex:1; overflow:hidden; background:#202022; }
canvas { display:block; width:100%; height:100%; cursor:grab; touch-action:none; }
canvas.dragging { cursor:grabbing; }
#tip { position:absolute; pointer-events:none; background:rgba(255,255,255,.95); border-radius:6px; padding:.3em .6em; font-size:.85em; max-width:280px; box-shadow:0 2px 8px rgba(0,0,0,.3); }
#info { position:absolute; left:.6em; bottom:.5em; color:#eee; font-size:.85em; background:rgba(0,0,0,.6); padding:.15em .5em; border-radius:4px; }
#msg { position:absolute; inset:0; display:flex; align-items:center; justify-content:center; color:#eee; font-size:1.1em; }
#zoom { position:absolute; right:.8em; top:.8em; display:flex; flex-direction:column; gap:.3em; }
#zoom button { width:2em; height:2em; font-size:1.1em; border:0; border-radius:6px; cursor:pointer; }
</style></head>
<body>
<header><h1>artsim</h1><a href="/">Search</a><a class="here" href="/map">Map of the collection</a><a href="/docs">API</a>
<span style="color:var(--muted)">drag to pan, scroll to zoom, click a painting for more like it</span></header>
<div id="wrap"><canvas id="map" data-ready="0"></canvas><div id="msg">Loading the map…</div>
<div id="tip" class="hidden"></div><div id="info"></div>
<div id="zoom"><button id="zin" title="zoom in">+</button><button id="zout" title="zoom out">−</button><button id="zfit" title="fit">⤢</button></div></div>
<script>
const canvas = document.getElementById("map"), ctx = canvas.getContext("2d");
const tip = document.getElementById("tip"), msg = document.getElementById("msg"), info = document.getElementById("info");
let data = null, n = 0, view = {s: 1, ox: 0, oy: 0}, base = 1, tile = 0.02, dirty = true;
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
  if (!img) { img = new Image(); img.decoding = "async"; img.ready = false; img.started = false; images.set(key, img);
    queue.push([img, `/thumbs/${id}.jpg?size=${size}`, key]); }
  img.wanted = frame; return img;
}
function pump() { while (loading < MAX_LOADS && queue.length) { const [img, url, key] = queue.pop();
  if (img.wanted < frame - 1) { images.delete(key); continue; }  // panned or zoomed away before it started
  loading++; img.started = true;
  img.onload = () => { img.ready = true; loading--; dirty = true; pump(); }; img.onerror = () => { loading--; pump(); }; img.src = url; } }
function draw() {
  requestAnimationFrame(draw); if (!dirty || !data) return; dirty = false;
  const r = canvas.getBoundingClientRect(); ctx.clearRect(0, 0, r.width, r.height);
  const p = px(), half = p / 2, size = p > 60 ? 256 : 64, thumbs = p >= 10; let shown = 0;
  frame++;
  for (let i = 0; i < n; i++) {
    const [x, y] = toScreen(i); if (x < -p || y < -p || x > r.width + p || y > r.height + p) continue; shown++;
    const img = thumbs ? want(data.objectid[i], size) : null;
    if (img && img.ready) { const k = Math.min(p / img.naturalWidth, p / img.naturalHeight), w = img.naturalWidth * k, h = img.naturalHeight * k;
      ctx.drawImage(img, x - w / 2, y - h / 2, w, h); }
    else { const low = thumbs ? images.get(data.objectid[i] + ":64") : null;
      if (low && low.ready) ctx.drawImage(low, x - half, y - half, p, p);
      else { ctx.fillStyle = data.style[i] ? `hsl(${hue(data.style[i])},40%,55%)` : "#77777c"; ctx.fillRect(x - half * 0.8, y - half * 0.8, p * 0.8, p * 0.8); } }
  }
  pump();
  info.textContent = `${n} paintings · ${shown} in view · zoom ${view.s.toFixed(1)}× · ${data.source || ""}`;
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
  tip.innerHTML = `<b>${esc(data.title[i])}</b><br>${esc(data.artist[i])}<br><span style="color:#666">${esc(data.style[i])} · objectid ${data.objectid[i]}</span>`;
  tip.style.left = (mx + 14) + "px"; tip.style.top = (my + 14) + "px"; tip.classList.remove("hidden");
});
canvas.addEventListener("pointerup", (e) => { canvas.classList.remove("dragging"); const d = drag; drag = null;
  if (!d || d.moved || !data) return; const r = canvas.getBoundingClientRect(), i = hit(e.clientX - r.left, e.clientY - r.top);
  if (i >= 0) location.href = "/?objectid=" + data.objectid[i]; });
canvas.addEventListener("wheel", (e) => { e.preventDefault(); const r = canvas.getBoundingClientRect();
  zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top); }, {passive: false});
function centreZoom(f) { const r = canvas.getBoundingClientRect(); zoomAt(f, r.width / 2, r.height / 2); }
document.getElementById("zin").onclick = () => centreZoom(1.6); document.getElementById("zout").onclick = () => centreZoom(1 / 1.6);
document.getElementById("zfit").onclick = fit;
function esc(s) { return String(s ?? "").replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c])); }
async function load() {
  const r = await fetch("/api/map?wait=5"); const j = await r.json().catch(() => ({}));
  if (r.status === 202) { msg.textContent = "Computing the map of the collection… (about a minute for 10,000 paintings)"; setTimeout(load, 1500); return; }
  if (!r.ok) { msg.innerHTML = esc(j.detail || "The map is not available.") + (r.status === 503 ? " Run <code>artsim run</code> first." : ""); return; }
  data = j; n = j.count; msg.classList.add("hidden");
  // a tile is about the mean spacing of the paintings at zoom 1 (every painting visible, little overlap)
  tile = Math.min(0.12, 0.9 / Math.sqrt(Math.max(1, n)));
  resize(); fit(); canvas.dataset.ready = "1"; canvas.dataset.count = String(n);
}
addEventListener("resize", () => { resize(); });
requestAnimationFrame(draw); load();
</script>
</body></html>
"""
