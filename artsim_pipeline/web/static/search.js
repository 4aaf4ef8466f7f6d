// The search page: upload or pick a painting, filters, results as cards (Load more), export and a shareable URL;
// browsing by artist or title and the filters offered from the collection are in browse.js.
"use strict";
const OPTION_IDS = ["artist", "style", "medium", "year_from", "year_to"];
let currentFile = null, last = null;  // last: {payload, query, options} of the results shown
function showError(msg) { const e = $("error"); e.textContent = msg; e.classList.toggle("hidden", !msg); }
// Every new search or lookup starts clean: no stale error, pick list or browse grid.
function begin(statusText) { showError(""); hidePicks(); $("status").textContent = statusText || ""; }
function clearResults() { last = null; $("grid").innerHTML = ""; $("grid").dataset.query = ""; $("query").classList.add("hidden");
  $("more-row").classList.add("hidden"); }
// An empty or too large file is named in words here, before it is sent (the server says the same).
function mb(n) { const v = n / 1048576; return v >= 10 ? `${Math.round(v)} MB` : `${v.toFixed(1)} MB`; }
function fileProblem(file) {
  const limit = Number(document.body.dataset.limitMb) * 1048576;
  if (file.size === 0) return `${file.name}: empty file (0 bytes): choose an image`;
  if (limit && file.size > limit) return `${file.name}: too large: ${mb(file.size)}, the limit is ${mb(limit)}`;
  return "";
}
function setFile(file) {
  const problem = file ? fileProblem(file) : "";
  if (problem) { clearResults(); begin(); showError(problem); file = null; $("file").value = ""; }
  currentFile = file; $("filename").textContent = file ? file.name : "";
  if (file) { $("objectid").value = ""; search({file}); }
}
$("drop").addEventListener("click", () => $("file").click());
$("drop").addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); } });
$("file").addEventListener("change", () => setFile($("file").files[0] || null));
for (const ev of ["dragenter", "dragover"]) $("drop").addEventListener(ev, (e) => { e.preventDefault(); $("drop").classList.add("over"); });
for (const ev of ["dragleave", "drop"]) $("drop").addEventListener(ev, (e) => { e.preventDefault(); $("drop").classList.remove("over"); });
$("drop").addEventListener("drop", (e) => { const f = e.dataTransfer.files[0]; if (f) setFile(f); });
// Enter in any field submits the form: the search box's text decides what is searched
$("form").addEventListener("submit", (e) => {
  e.preventDefault();
  const id = $("objectid").value.trim(), digits = id.match(/^(\d+)(\s|$)/);
  begin();
  if (digits) search({objectid: digits[1]});  // an objectid, or a pick of the list ("1005 Title")
  else if (id) findByText(id);
  else if (currentFile) search({file: currentFile});
  else showError("Choose or drop an image, or type an objectid, a title or an artist.");
});
$("clear").addEventListener("click", () => { currentFile = null; last = null; $("file").value = ""; $("filename").textContent = "";
  for (const id of ["objectid", ...OPTION_IDS]) $(id).value = "";
  clearResults(); begin(); history.replaceState(null, "", "/"); });
let pickTimer = null;
$("objectid").addEventListener("input", () => {
  clearTimeout(pickTimer);
  const q = $("objectid").value.trim(); if (q.length < 2 || /^\d+$/.test(q)) return;
  pickTimer = setTimeout(async () => {
    const r = await fetch("/api/paintings?limit=15&q=" + encodeURIComponent(q)); if (!r.ok) return;
    const j = await r.json();
    $("picks").replaceChildren(...j.paintings.map(p => { const o = document.createElement("option");
      o.value = `${p.objectid} ${p.title}`; o.textContent = `${p.artist} ${p.date}`; return o; }));
  }, 200);
});

// The search's options as URL parameters: the shareable link of an objectid search (uploads are not stored).
function optionParams(objectid) {
  const p = new URLSearchParams();
  if (objectid) p.set("objectid", objectid);
  p.set("k", $("k").value || "12");
  if ($("face").checked) p.set("face_crop", "true");
  for (const id of OPTION_IDS) if ($(id).value.trim()) p.set(id, $(id).value.trim());
  return p;
}
// q: {file} or {objectid}; more: fetch the next page of the same search and add it ("Load more").
async function search(q, more) {
  begin(more ? "Loading more…" : "Searching…");
  const fd = new FormData(), options = more ? last.options : optionParams(q.objectid);
  if (q.file) fd.append("image", q.file, q.file.name || "upload");
  for (const [key, value] of options) fd.append(key, value);
  if (more) fd.append("offset", String(last.payload.results[last.payload.results.length - 1].rank));  // the ranks after it
  let r, j;
  try { r = await fetch("/api/search", {method: "POST", body: fd}); j = await r.json(); }
  catch (err) { $("status").textContent = ""; showError("The server did not answer: " + err); return; }
  $("status").textContent = "";
  if (!r.ok) { showError(j.detail + (j.hint ? " (" + j.hint + ")" : "")); return; }
  if (more) { appendResults(j); return; }
  history.replaceState(null, "", q.objectid ? "/?" + options : "/");
  last = {payload: j, query: q, options};
  render(j, q);
}
function appendResults(j) {
  const seen = new Set(last.payload.results.map(r => r.objectid));
  const fresh = j.results.filter(r => !seen.has(r.objectid));  // in rank order, none twice
  last.payload.results.push(...fresh);
  $("grid").insertAdjacentHTML("beforeend", fresh.map(r => resultCard(r)).join(""));
  sizeBars($("grid"));
  updateMore(j.more, j.k);
}
// "Load more" shows while the API says more ranks are there (j.more: the last page came back full).
function updateMore(more, k) {
  $("more-row").classList.toggle("hidden", !more);
  $("load-more").textContent = `Load ${k} more`;
}
$("load-more").addEventListener("click", () => { if (last) search(last.query, true); });

function render(j, q) {
  const img = $("query-img"), box = $("facebox");
  box.classList.add("hidden");
  if (q.file) { img.src = URL.createObjectURL(q.file); $("query-title").textContent = "Your image: " + (q.file.name || "upload"); }
  else { img.src = j.query_painting.thumbnail + "?size=256";
    $("query-title").innerHTML = `<a href="/painting/${j.objectid}">${esc(j.query_painting.title)}</a> — ${esc(j.query_painting.artist)} ${esc(j.query_painting.date)} (objectid ${j.objectid})`; }
  $("query-title").insertAdjacentHTML("beforeend", ` <a id="show-on-map" href="/map?highlight=${j.results.map(r => r.objectid).join(",")}${j.objectid != null ? "&query=" + j.objectid : ""}">Show on map</a>`);
  img.onload = () => {
    if (!j.face_box) return;
    const s = img.clientWidth / img.naturalWidth, [x0, y0, x1, y1] = j.face_box;
    Object.assign(box.style, {left: (x0 * s + 1) + "px", top: (y0 * s + 1) + "px", width: ((x1 - x0) * s) + "px", height: ((y1 - y0) * s) + "px"});
    box.classList.remove("hidden");
  };
  const notes = [...j.notes];
  if (j.face_count !== null && j.face_count !== undefined) notes.unshift(j.face_count + " face(s) found" + (j.variant === "face" ? "; searched with the face" : ""));
  $("notes").innerHTML = notes.map(n => `<li>${esc(n)}</li>`).join("");
  $("share").disabled = !!q.file;
  $("share").title = q.file ? "an uploaded image is not stored, so its search has no link" : "copy this search's address";
  $("shared").textContent = "";
  $("query").classList.remove("hidden");
  const grid = $("grid");
  if (!j.results.length) {  // the notes say what each filter removed (core/search_filters.py)
    const why = j.notes.filter(n => n !== "no painting matches the filters");
    grid.innerHTML = `<p class="banner info">No painting matches the filters: ${esc(why.join("; ") || "try other filters")}.</p>`; }
  else grid.innerHTML = j.results.map(r => resultCard(r)).join("");
  sizeBars(grid);
  renderIdentification(grid, j);
  updateMore(j.more, j.k);
  grid.dataset.query = j.query;
  grid.dataset.generation = j.generation || "";
}
$("grid").addEventListener("click", (e) => {
  const b = e.target.closest("button.more"); if (!b) return;
  $("objectid").value = b.dataset.objectid; currentFile = null; $("filename").textContent = "";
  search({objectid: b.dataset.objectid}); window.scrollTo({top: 0, behavior: "smooth"});
});

// ---- export: what is shown, as a file (works for uploads too: nothing is asked of the server). Each row carries
// the query (objectid or image name, and the options), the why-sentence and its numbers, thumbnail and nga.gov URLs.
const CSV_COLUMNS = ["query", "options", "rank", "objectid", "title", "artist", "date", "style", "medium", "visual",
  "metadata", "final", "cosine", "why", "why_numbers", "thumbnail_url", "nga_url"];
function csvCell(v) { const s = String(v ?? ""); return /[",\n\r]/.test(s) || /^[=+\-@]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; }
function download(name, type, text) {
  const a = document.createElement("a"); a.href = URL.createObjectURL(new Blob([text], {type})); a.download = name;
  document.body.appendChild(a); a.click(); a.remove(); setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}
function exportName(ext) { const q = last.query; return `artsim-${q.objectid ? "objectid-" + q.objectid : "upload"}.${ext}`; }
function exportQuery() {
  const q = last.query, options = Object.fromEntries([...last.options].filter(([k]) => k !== "objectid"));
  return {query: q.objectid ? `objectid ${q.objectid}` : `image ${q.file.name || "upload"}`,
    objectid: q.objectid ? Number(q.objectid) : null, image: q.file ? (q.file.name || "upload") : null, options,
    generation: last.payload.generation || null, exported_from: location.origin + "/"};
}
function exportRow(r) {
  return {...r, why: r.explanation ? r.explanation.summary : "", why_numbers: whyNumbers(r.explanation),
    thumbnail_url: new URL(r.thumbnail + "?size=256", location.origin).href};
}
$("csv").addEventListener("click", () => { if (!last) return;
  const q = exportQuery(), options = new URLSearchParams(q.options).toString();
  const lines = [CSV_COLUMNS.join(",")].concat(last.payload.results.map(exportRow).map(r =>
    CSV_COLUMNS.map(c => csvCell(c === "query" ? q.query : c === "options" ? options : r[c])).join(",")));
  download(exportName("csv"), "text/csv", lines.join("\r\n") + "\r\n"); });
$("json").addEventListener("click", () => { if (!last) return;
  const out = {...last.payload, query: exportQuery(), results: last.payload.results.map(exportRow)};
  download(exportName("json"), "application/json", JSON.stringify(out, null, 2)); });
$("share").addEventListener("click", async () => {
  const url = location.href;
  try { await navigator.clipboard.writeText(url); $("shared").textContent = "link copied"; }
  catch (err) { $("shared").textContent = url; }  // no clipboard (plain http on another host): show it to copy
});

(async () => {
  const r = await fetch("/healthz"); const j = await r.json().catch(() => ({}));
  const b = $("banner");
  if (r.status === 503) { b.className = "banner error";
    b.innerHTML = "No search index yet: run <code>artsim run</code> first. " + esc(j.detail || ""); }
  else if (r.ok) { b.className = "banner info";
    b.innerHTML = `${j.indexed} paintings indexed (models ${esc(j.models.join(", "))}). <a href="/status">Status of the collection</a>`; }
  await loadFacets();
  const p = new URLSearchParams(location.search);
  if (p.get("k")) $("k").value = p.get("k");
  $("face").checked = p.get("face_crop") === "true";
  for (const id of OPTION_IDS) if (p.get(id)) $(id).value = p.get(id);
  if (p.get("years") && !p.get("year_from")) { const [a, z] = p.get("years").split("-"); $("year_from").value = a || ""; $("year_to").value = z ?? a ?? ""; }
  const id = p.get("objectid"), text = p.get("q");
  if (id) { $("objectid").value = id; search({objectid: id}); }
  else if (text) { $("objectid").value = text; findByText(text); }
})();
