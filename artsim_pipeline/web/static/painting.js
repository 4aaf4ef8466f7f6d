// A painting's page: the large image, all its catalog metadata, its nga.gov link and its nearest neighbours.
"use strict";
const objectid = document.body.dataset.objectid;
const LABELS = {title: "Title", artist: "Artist", attribution: "Attribution", date: "Date", displaydate: "Date (as written)",
  beginyear: "From year", endyear: "To year", style: "Style", medium: "Medium", width: "Image width (px)",
  height: "Image height (px)", is_portrait: "Portrait", has_high_res: "High-resolution image", objectid: "Object id",
  uuid: "Image id", batch_key: "Image batch", indexed: "In the search index", has_face_vector: "Searchable by its face"};
const SKIP = new Set(["thumbnail", "nga_url", "metadata", "iiifurl", "artist_key", "image_path"]);
function value(v) { if (v === true) return "yes"; if (v === false) return "no"; return v ?? ""; }
(async () => {
  let r, j;
  try { r = await fetch("/api/paintings/" + encodeURIComponent(objectid)); j = await r.json(); }
  catch (err) { $("error").textContent = "The server did not answer: " + err; $("error").classList.remove("hidden"); return; }
  if (!r.ok) { $("error").textContent = j.detail + (j.hint ? " (" + j.hint + ")" : ""); $("error").classList.remove("hidden"); return; }
  document.title = `artsim: ${j.title}`;
  $("large").src = j.thumbnail + "?size=1024"; $("large").alt = j.title;
  $("title").textContent = j.title; $("artist").textContent = j.artist;
  const fields = {...(j.metadata || {}), indexed: j.indexed, has_face_vector: j.has_face_vector};
  const rows = Object.entries(fields).filter(([k, v]) => !SKIP.has(k) && v !== null && v !== "");
  $("fields").innerHTML = rows.map(([k, v]) => `<dt>${esc(LABELS[k] || k)}</dt><dd>${esc(value(v))}</dd>`).join("");
  $("nga").href = j.nga_url; $("search-with").href = "/?objectid=" + j.objectid; $("on-map").href = "/map?focus=" + j.objectid;
  $("detail").classList.remove("hidden");
  if (!j.indexed) return;
  const s = await fetch(`/api/search?objectid=${encodeURIComponent(objectid)}&k=12`); const sj = await s.json();
  if (!s.ok) { $("error").textContent = sj.detail; $("error").classList.remove("hidden"); return; }
  $("neighbours-head").classList.remove("hidden");
  $("neighbours").innerHTML = sj.results.map(r => resultCard(r, {more: false})).join("");
  sizeBars($("neighbours"));
  labelNearDuplicates($("neighbours"), sj);
})();
