// The collection map's panels (map.js draws): colour by artist / decade / region with a legend, the named
// regions (labels on the map, a list to jump to), the find box (a painting by title or objectid, an
// artist: fly there and highlight), box and lasso selection with its thumbnail list, CSV/JSON export and
// "search within these" (POST /api/map/search), and "Show on map" links (?focus=, ?highlight=&query=).
"use strict";
const MapUI = (() => {
  const PALETTE = [[230, 25, 75], [60, 180, 75], [255, 225, 25], [67, 99, 216], [245, 130, 49], [145, 30, 180], [66, 212, 244],
    [240, 50, 230], [191, 239, 69], [250, 190, 212], [70, 153, 144], [220, 190, 255], [154, 99, 36], [255, 250, 200]];
  const GREY = [120, 120, 126];
  let j = null, byId = new Map(), folded = null, legend = [], lasso = null, regionCentres = {};
  const fold = (s) => String(s || "").normalize("NFD").replace(/[\u0300-\u036f]/g, "").toLowerCase().trim();
  const indexOf = (objectid) => { const i = byId.get(Number(objectid)); return i === undefined ? -1 : i; };
  const regionName = (id) => { const r = j.regions.find((q) => q.id === id); return r ? r.label : ""; };

  function init(payload) {
    j = payload; byId = new Map(j.objectid.map((o, i) => [o, i]));
    $("layout").onchange = (e) => setLayout(e.target.value);
    $("colour").onchange = (e) => setColour(e.target.value);
    for (const t of ["pan", "box", "lasso"]) $("tool-" + t).onclick = () => setTool(t);
    const touch = matchMedia("(pointer: coarse)").matches || navigator.maxTouchPoints > 0;
    $("hint").textContent = touch ? "drag to pan, pinch to zoom, tap a painting" :
      "drag to pan, scroll to zoom, click a painting for its page, shift-drag to select";
    $("panel-toggle").onclick = () => $("panel").classList.toggle("open");
    regionList(); setupFind(); setupSelection(); setColour("thumbnails");
  }
  function setTool(t) { st.tool = t; for (const k of ["pan", "box", "lasso"]) $("tool-" + k).classList.toggle("on", k === t); }

  // ---------------------------------------------------------------- colours and the legend
  function setColour(mode) {
    st.colour = mode; $("colour").value = mode;
    const rgba = new Uint8Array(4 * n); legend = [];
    let of = () => GREY;
    if (mode === "artist" || mode === "thumbnails") {
      const counts = new Map(); for (const a of j.artist) counts.set(a, (counts.get(a) || 0) + 1);
      const top = [...counts].filter(([a]) => a).sort((a, b) => b[1] - a[1]).slice(0, PALETTE.length);
      const colourOf = new Map(top.map(([a], k) => [a, PALETTE[k]]));
      of = (i) => colourOf.get(j.artist[i]) || GREY;
      legend = top.map(([a, c]) => ({label: a, count: c, rgb: colourOf.get(a)}));
      if (counts.size > top.length) legend.push({label: "other artists", rgb: GREY});
    } else if (mode === "decade") {
      let lo = Infinity, hi = -Infinity; for (const y of j.year) if (y != null) { lo = Math.min(lo, y); hi = Math.max(hi, y); }
      lo = Math.floor(lo / 10) * 10; hi = Math.floor(hi / 10) * 10; if (!isFinite(lo)) lo = hi = 0;
      const ramp = (d) => { const t = hi > lo ? (d - lo) / (hi - lo) : 0.5; return [Math.round(40 + 215 * t), Math.round(90 + 100 * Math.sin(Math.PI * t)), Math.round(230 - 200 * t)]; };
      of = (i) => j.year[i] == null ? GREY : ramp(Math.floor(j.year[i] / 10) * 10);
      const step = Math.max(10, Math.ceil((hi - lo) / 60) * 10);
      for (let d = lo; d <= hi; d += step) legend.push({label: `${d}s`, rgb: ramp(d)});
      legend.push({label: "undated", rgb: GREY});
    } else if (mode === "region") {
      const hue = (k) => PALETTE[k % PALETTE.length];
      of = (i) => j.region[i] < 0 ? GREY : hue(j.region[i]);
      legend = j.regions.slice(0, 14).map((r) => ({label: r.label, count: r.size, rgb: hue(r.id)}));
      legend.push({label: "in no region", rgb: GREY});
    }
    for (let i = 0; i < n; i++) { const c = of(i); rgba.set([c[0], c[1], c[2], 255], 4 * i); }
    if (gl) gl.setColours(rgba);
    glChanged();
    if (mode === "thumbnails") legend = [];
    $("legend").innerHTML = legend.map((e) => `<li><span class="swatch" data-rgb="${e.rgb.join(",")}"></span>${esc(e.label)}${e.count ? ` <span class="sub">${e.count}</span>` : ""}</li>`).join("");
    for (const s of $("legend").querySelectorAll(".swatch")) s.style.background = `rgb(${s.dataset.rgb})`;
    $("legend").classList.toggle("hidden", !legend.length); dirty = true;
  }

  // ---------------------------------------------------------------- regions: labels and the list
  function regionList() {
    const reps = (r) => `<span class="reps">${r.representatives.map((o) => `<img loading="lazy" src="/thumbs/${o}.jpg?size=64" alt="" data-objectid="${o}">`).join("")}</span>`;
    $("regions").innerHTML = j.regions.map((r) => `<li><button type="button" class="link" data-region="${r.id}">${esc(r.label)}</button> <span class="sub">${r.size}</span>${reps(r)}</li>`).join("")
      || "<li class=\"sub\">no regions (too few paintings)</li>";
    for (const b of $("regions").querySelectorAll("button")) b.onclick = () => jumpToRegion(Number(b.dataset.region));
    layoutChanged();
  }
  function members(id) { const out = []; for (let i = 0; i < n; i++) if (j.region[i] === id) out.push(i); return out; }
  function jumpToRegion(id) {
    const idx = members(id); st.highlight = new Set(idx.map((i) => j.objectid[i])); flags();
    const [x0, y0, x1, y1] = boundsOf(idx); flyTo(x0, y0, x1, y1); status(`${regionName(id)}: ${idx.length} paintings`);
  }
  function layoutChanged() {  // label positions: the members' mean in the current layout
    regionCentres = {}; const sums = {};
    const src = layouts[st.layout];
    for (let i = 0; i < n; i++) { const r = j.region[i]; if (r < 0) continue; const s = sums[r] || (sums[r] = [0, 0, 0]); s[0] += src[2 * i]; s[1] += src[2 * i + 1]; s[2]++; }
    for (const [r, s] of Object.entries(sums)) regionCentres[r] = [s[0] / s[2], s[1] / s[2]];
    dirty = true;
  }
  function drawAxis(ctx, r) {  // the date layout's years along the bottom
    const a = j.layouts.date.axis, width = Math.max(a.to - a.from + 1, 1), wx = (year) => (year - a.from + 0.5) / width * a.span;
    const pxPerYear = a.span / width * base * view.s, step = [1, 2, 5, 10, 20, 50, 100, 200, 500].find((s) => s * pxPerYear >= 70) || 1000;
    ctx.fillStyle = "rgba(20,20,22,.78)"; ctx.fillRect(0, r.height - 22, r.width, 22);
    ctx.fillStyle = "#ddd"; ctx.font = "11px system-ui, sans-serif"; ctx.textBaseline = "middle";
    for (let y = Math.ceil(a.from / step) * step; y <= a.to; y += step) {
      const x = wx(y) * base * view.s + view.ox; if (x > 0 && x < r.width) { ctx.fillRect(x, r.height - 22, 1, 5); ctx.fillText(String(y), x + 3, r.height - 11); }
    }
    const ux = a.undated_x * base * view.s + view.ox; if (ux > 0 && ux < r.width) ctx.fillText("undated", ux, r.height - 11);
  }
  function drawLabels(ctx, r) {
    if (st.layout === "date" && j.layouts.date) drawAxis(ctx, r);
    st.labels = []; const boxes = [];
    ctx.font = "600 12px system-ui, sans-serif"; ctx.textBaseline = "middle";
    for (const reg of j.regions) {
      const c = regionCentres[reg.id]; if (!c) continue;
      const x = c[0] * base * view.s + view.ox, y = c[1] * base * view.s + view.oy;
      if (x < 0 || y < 0 || x > r.width || y > r.height) continue;
      const text = reg.label.length > 42 ? reg.label.slice(0, 40) + "…" : reg.label, w = ctx.measureText(text).width + 12, box = [x - w / 2, y - 10, w, 20];
      if (boxes.some((b) => box[0] < b[0] + b[2] && b[0] < box[0] + box[2] && box[1] < b[1] + b[3] && b[1] < box[1] + box[3])) continue;
      boxes.push(box); st.labels.push(reg.label);
      ctx.fillStyle = "rgba(20,20,22,.78)"; ctx.fillRect(...box); ctx.fillStyle = "#fff"; ctx.fillText(text, box[0] + 6, y);
    }
  }

  // ---------------------------------------------------------------- find: a painting or an artist
  let artistsFolded = null;
  function suggestions(q) {
    const t = fold(q); if (!t) return [];
    if (!folded) { folded = j.title.map(fold); const counts = new Map(); for (const a of j.artist) if (a) counts.set(a, (counts.get(a) || 0) + 1);
      artistsFolded = [...counts].map(([a, c]) => [a, fold(a), c]); }
    const out = [];
    if (/^\d+$/.test(t) && indexOf(Number(t)) >= 0) out.push({kind: "painting", i: indexOf(Number(t))});
    const artists = artistsFolded.filter(([, f]) => f.includes(t)).sort((a, b) => (b[1].startsWith(t) - a[1].startsWith(t)) || b[2] - a[2]).slice(0, 6);
    for (const [a, , c] of artists) out.push({kind: "artist", artist: a, count: c});
    for (let i = 0; i < n && out.length < 14; i++) if (folded[i].includes(t)) out.push({kind: "painting", i});
    return out;
  }
  function setupFind() {
    const box = $("find"), list = $("finds"); let shown = [];
    const render = () => {
      shown = suggestions(box.value);
      list.innerHTML = shown.map((s, k) => `<li><button type="button" class="link" data-k="${k}">` + (s.kind === "artist"
        ? `${esc(s.artist)} <span class="sub">artist · ${s.count} paintings</span>` : `${esc(j.title[s.i])} <span class="sub">${esc(j.artist[s.i])} · ${j.objectid[s.i]}</span>`) + "</button></li>").join("");
      for (const b of list.querySelectorAll("button")) b.onclick = () => pick(shown[Number(b.dataset.k)]);
      list.classList.toggle("hidden", !shown.length);
    };
    box.addEventListener("input", render);
    box.addEventListener("keydown", (e) => { if (e.key === "Enter") { render(); if (shown.length) pick(shown[0]); } if (e.key === "Escape") list.classList.add("hidden"); });
    $("find-clear").onclick = () => { box.value = ""; list.classList.add("hidden"); st.highlight = new Set(); st.focus = null; flags(); status(""); };
  }
  function pick(s) {
    $("finds").classList.add("hidden");
    if (s.kind === "artist") { showArtist(s.artist); return; }
    focusPainting(j.objectid[s.i]);
  }
  function showArtist(artist) {
    const idx = []; for (let i = 0; i < n; i++) if (j.artist[i] === artist) idx.push(i);
    st.highlight = new Set(idx.map((i) => j.objectid[i])); st.focus = null; flags();
    const [x0, y0, x1, y1] = boundsOf(idx); flyTo(x0, y0, x1, y1); status(`${artist}: ${idx.length} paintings highlighted`);
  }
  function focusPainting(objectid) {
    const i = indexOf(objectid); if (i < 0) { status(`objectid ${objectid} is not on the map`); return; }
    st.focus = j.objectid[i]; st.highlight = new Set([st.focus]); flags();
    const x = to[2 * i], y = to[2 * i + 1]; flyTo(x, y, x, y, 140);
    status(`${j.title[i]} — ${j.artist[i]}${j.year[i] ? ", " + j.year[i] : ""}`);
  }
  function status(text) { $("status").textContent = text; $("status").classList.toggle("hidden", !text); }
  function applyParams() {  // "Show on map": ?focus=<objectid>, or ?highlight=<id,id,...>&query=<objectid>
    const q = new URLSearchParams(location.search);
    const ids = (q.get("highlight") || "").split(",").map(Number).filter((v) => v && indexOf(v) >= 0);
    const query = Number(q.get("query")); st.query = indexOf(query) >= 0 ? query : null;
    if (ids.length) {
      st.highlight = new Set(ids); flags();
      const [x0, y0, x1, y1] = boundsOf([...ids, ...(st.query ? [st.query] : [])].map(indexOf)); flyTo(x0, y0, x1, y1);
      status(`${ids.length} search results highlighted` + (st.query ? `; the query (objectid ${st.query}) is ringed` : ""));
    } else if (q.get("focus")) focusPainting(Number(q.get("focus")));
    else flags();
  }

  // ---------------------------------------------------------------- tooltip and the tap card
  function showTip(i, mx, my, tapped) {
    const reg = j.region[i] >= 0 ? regionName(j.region[i]) : "";
    tip.innerHTML = `<b>${esc(j.title[i])}</b><br>${esc(j.artist[i])}${j.year[i] ? ", " + j.year[i] : ""}<br><span class="sub">objectid ${j.objectid[i]}${reg ? " · " + esc(reg) : ""}</span>` +
      (tapped ? `<br><a href="/painting/${j.objectid[i]}">Open the painting's page</a>` : "");
    tip.classList.toggle("card", tapped);
    tip.style.left = Math.min(mx + 14, over.clientWidth - 240) + "px"; tip.style.top = (my + 14) + "px"; tip.classList.remove("hidden");
  }

  // ---------------------------------------------------------------- box and lasso selection
  function startLasso(tool, x, y) { lasso = {tool, pts: [[x, y]]}; }
  function extendLasso(x, y) { if (!lasso) return; if (lasso.tool === "box") lasso.pts[1] = [x, y]; else lasso.pts.push([x, y]); dirty = true; }
  function cancelLasso() { lasso = null; dirty = true; }
  function polygon() { if (lasso.tool !== "box") return lasso.pts; const [[a, b], [c, d]] = [lasso.pts[0], lasso.pts[1] || lasso.pts[0]]; return [[a, b], [c, b], [c, d], [a, d]]; }
  function drawLasso(ctx) {
    if (!lasso) return; const pts = polygon();
    ctx.strokeStyle = "#33d9ff"; ctx.lineWidth = 1.5; ctx.setLineDash([5, 4]); ctx.beginPath();
    pts.forEach(([x, y], k) => (k ? ctx.lineTo(x, y) : ctx.moveTo(x, y))); ctx.closePath(); ctx.stroke(); ctx.setLineDash([]);
  }
  function inside(x, y, pts) {
    let c = false;
    for (let a = 0, b = pts.length - 1; a < pts.length; b = a++) {
      const [xa, ya] = pts[a], [xb, yb] = pts[b];
      if ((ya > y) !== (yb > y) && x < (xb - xa) * (y - ya) / (yb - ya) + xa) c = !c;
    }
    return c;
  }
  function finishLasso() {
    if (!lasso) return; const pts = polygon(); lasso = null;
    const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]), x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
    const sel = new Set();
    for (let i = 0; i < n; i++) {
      const [x, y] = toScreen(i); if (x < x0 || x > x1 || y < y0 || y > y1) continue;
      if (inside(x, y, pts)) sel.add(j.objectid[i]);
    }
    st.selected = sel; flags(); renderSelection();
  }
  function selectedRows() { return [...st.selected].map(indexOf).filter((i) => i >= 0); }
  function renderSelection() {
    const rows = selectedRows(); $("sel").classList.toggle("hidden", !rows.length); $("panel").classList.add("open");
    $("sel-count").textContent = `${rows.length} selected`;
    $("sel-list").innerHTML = rows.slice(0, 150).map((i) => `<a href="/painting/${j.objectid[i]}" data-objectid="${j.objectid[i]}" title="${esc(j.title[i])} — ${esc(j.artist[i])}"><img loading="lazy" src="/thumbs/${j.objectid[i]}.jpg?size=64" alt="${esc(j.title[i])}"></a>`).join("")
      + (rows.length > 150 ? `<span class="sub">and ${rows.length - 150} more (in the export)</span>` : "");
    $("sel-results").innerHTML = "";
  }
  function exportRows() { return selectedRows().map((i) => ({objectid: j.objectid[i], title: j.title[i], artist: j.artist[i], year: j.year[i], region: j.region[i] >= 0 ? regionName(j.region[i]) : ""})); }
  function download(name, type, text) {
    const a = document.createElement("a"); a.href = URL.createObjectURL(new Blob([text], {type})); a.download = name;
    document.body.appendChild(a); a.click(); setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }
  const csvCell = (v) => { const s = String(v ?? ""); return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s; };
  function setupSelection() {
    $("sel-csv").onclick = () => { const rows = exportRows(), cols = ["objectid", "title", "artist", "year", "region"];
      download("artsim-selection.csv", "text/csv", [cols.join(","), ...rows.map((r) => cols.map((c) => csvCell(r[c])).join(","))].join("\n") + "\n"); };
    $("sel-json").onclick = () => download("artsim-selection.json", "application/json", JSON.stringify({paintings: exportRows()}, null, 1));
    $("sel-clear").onclick = () => { st.selected = new Set(); flags(); $("sel").classList.add("hidden"); };
    $("sel-search").onclick = searchWithin;
  }
  async function searchWithin() {
    const ids = [...st.selected]; if (!ids.length) return;
    const query = st.query ?? st.focus ?? ids[0];
    $("sel-results").textContent = "Searching…";
    const r = await fetch("/api/map/search", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({objectid: query, objectids: ids, k: 24})});
    const body = await r.json().catch(() => ({}));
    if (!r.ok) { $("sel-results").textContent = body.detail || "The search failed."; return; }
    const i = indexOf(query);
    $("sel-results").innerHTML = `<p class="sub">Most like <a href="/painting/${query}">${esc(i >= 0 ? j.title[i] : query)}</a> among the ${body.within} selected:</p><ol>` +
      body.results.map((x) => `<li data-objectid="${x.objectid}"><a href="/painting/${x.objectid}">${esc(x.title)}</a> — ${esc(x.artist)} <span class="sub">${x.score.toFixed(3)}</span></li>`).join("") + "</ol>";
    st.highlight = new Set(body.results.map((x) => x.objectid)); flags();
  }
  return {init, indexOf, applyParams, layoutChanged, drawLabels, drawLasso, startLasso, extendLasso, finishLasso, cancelLasso,
    showTip, legendEntries: () => legend.map((e) => e.label), setColour, showArtist, focusPainting, jumpToRegion, status};
})();
