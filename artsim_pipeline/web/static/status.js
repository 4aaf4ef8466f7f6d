// The status page: what the lake holds (GET /api/status), as artsim status prints it.
"use strict";
function counts(mapping) { const e = Object.entries(mapping || {}); return e.length ? e.map(([k, v]) => `${k} ${v}`).join(", ") : "none"; }
(async () => {
  let r, s;
  try { r = await fetch("/api/status"); s = await r.json(); }
  catch (err) { $("error").textContent = "The server did not answer: " + err; $("error").classList.remove("hidden"); return; }
  if (!r.ok) { $("error").textContent = s.detail; $("error").classList.remove("hidden"); return; }
  const c = s.catalog, i = s.images, f = s.faces, x = s.index;
  const rows = [
    ["Paintings in the catalog", c.paintings, c.written ? `${c.batches} image batches; written ${c.written}` : "not built yet: run artsim run"],
    ["Images cached", i.cached, i.not_tried ? `${i.not_tried} not tried yet` : ""],
    ["Skipped (too small)", i.skipped_small, ""], ["Failed to download", i.failed, counts(i.reasons)],
    ["With a face", f.with_face, `${f.checked} images checked` + (f.errors ? `, ${f.errors} unreadable` : "")],
    ...Object.entries(s.embeddings).map(([m, e]) => [`Embedded by ${m}`, e.paintings, `${e.face_vectors} face crops`]),
    ["Indexed (searchable)", x ? x.indexed : 0, x ? `generation ${x.generation}, created ${x.created}; ${x.face_indexed} searchable by face` : "no index published yet"],
    ["Catalog rows rejected", Object.values(s.rejected.catalog_rows).reduce((a, b) => a + b, 0), counts(s.rejected.catalog_rows)],
    ["CSV rows unreadable", Object.values(s.rejected.csv_rows).reduce((a, b) => a + b, 0), counts(s.rejected.csv_rows)],
  ];
  $("counts").innerHTML = rows.map(([a, n, b]) => `<tr><th>${esc(a)}</th><td class="n">${esc(n)}</td><td>${esc(b)}</td></tr>`).join("");
  if (s.errors.length) { $("damaged").innerHTML = "<b>Damaged:</b> " + s.errors.map(esc).join("<br>") + "<br>Run <code>artsim run</code> to repair."; $("damaged").classList.remove("hidden"); }
  if (s.stale === null) $("stale").innerHTML = `<p class="muted">Not checked: ${esc(s.stale_note || "the server has no Dagster instance")}; run <code>artsim status</code>.</p>`;
  else if (!s.stale.length) $("stale").innerHTML = "<p>Nothing: every asset and batch is up to date.</p>";
  else $("stale").innerHTML = `<div class="scroll"><table class="status"><tr><th>asset</th><th>batch</th><th>why</th></tr>` +
    s.stale.map(t => `<tr><td>${esc(t.asset)}</td><td>${esc(t.partition || "")}</td><td>${esc(t.status.toLowerCase())}: ${esc(t.reason)}</td></tr>`).join("") + "</table></div>";
  $("problems-head").textContent = s.problem_count ? `${s.problem_count} in all; the worst ${s.problems.length}:` : "None.";
  if (s.problems.length) $("problems").innerHTML = "<tr><th>objectid</th><th>title</th><th>artist</th><th>stage</th><th>reason</th></tr>" +
    s.problems.map(p => `<tr><td>${p.objectid}</td><td>${esc(p.title)}</td><td>${esc(p.artist)}</td><td>${esc(p.stage)}: ${esc(p.status)}</td><td>${esc(p.reason)}</td></tr>`).join("");
})();
