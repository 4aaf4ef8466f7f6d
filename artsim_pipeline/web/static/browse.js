// The search page's browsing: a name or title typed + Enter -> the paintings that match as thumbnails, paged
// (GET /api/paintings?q=&offset=&limit=), with their count; the filters offered from the collection (GET /api/facets).
"use strict";
const BROWSE_PAGE = 24;
let browsing = null;  // {text, shown, total}

function browseCard(p) {
  return `
    <article class="card browse" data-objectid="${p.objectid}">
      <div class="thumb"><a href="${p.page_url}"><img loading="lazy" src="${p.thumb_url}" alt="${esc(p.title)}"></a></div>
      <div class="body"><div class="title"><a href="${p.page_url}">${esc(p.title)}</a></div>
        <div>${esc(p.attribution)}</div><div class="meta">${esc(p.date)}${p.date ? " · " : ""}objectid ${p.objectid}</div>
        <div class="actions"><button type="button" class="pick more-like secondary" data-objectid="${p.objectid}">More like this</button>
          <a class="page" href="${p.page_url}">Its page</a></div></div>
    </article>`;
}

function hidePicks() { const c = $("choices"); c.replaceChildren(); c.className = "hidden"; browsing = null; }

// Nothing by that name: say so, with close names of the collection as buttons that browse them.
function showNothing(j) {
  const box = $("choices"), p = document.createElement("p");
  p.className = "browse-head"; p.textContent = `No painting by or titled '${j.query.trim()}' in the collection.`;
  box.replaceChildren(p);
  if (j.suggestions.length) {
    const row = document.createElement("div"); row.className = "suggest";
    row.append("Did you mean ");
    for (const name of j.suggestions) {
      const b = document.createElement("button"); b.type = "button"; b.className = "suggestion secondary";
      b.dataset.text = name; b.textContent = name; row.append(b);
    }
    box.append(row);
  }
  box.className = "banner info";
}

async function fetchPage(text, offset) {
  const r = await fetch(`/api/paintings?limit=${BROWSE_PAGE}&offset=${offset}&q=` + encodeURIComponent(text));
  const j = await r.json();
  if (!r.ok) throw new Error(j.detail || "the lookup failed");
  return j;
}

// A text typed + Enter: one painting -> its search; several -> their thumbnails (paged); none -> a message.
async function findByText(text) {
  begin("Looking up…");
  let j;
  try { j = await fetchPage(text, 0); }
  catch (err) { $("status").textContent = ""; showError(String(err.message || err)); return; }
  $("status").textContent = "";
  if (j.total === 0) { showNothing(j); return; }
  if (j.total === 1) { search({objectid: String(j.items[0].objectid)}); return; }
  clearResults();
  const box = $("choices"), head = document.createElement("p"), grid = document.createElement("div");
  head.className = "browse-head"; head.id = "browse-head"; head.textContent = j.message;
  grid.className = "grid"; grid.id = "browse-grid"; grid.innerHTML = j.items.map(browseCard).join("");
  const more = document.createElement("div"); more.className = "more-row";
  more.innerHTML = `<button type="button" id="browse-more" class="secondary">Show more</button>`;
  box.replaceChildren(head, grid, more); box.className = "browse";
  browsing = {text, shown: j.items.length, total: j.total};
  updateBrowseMore();
  history.replaceState(null, "", "/?q=" + encodeURIComponent(text));
}

function updateBrowseMore() {
  const b = $("browse-more"); if (!b || !browsing) return;
  const left = browsing.total - browsing.shown;
  b.parentElement.classList.toggle("hidden", left <= 0);
  b.textContent = `Show more (${Math.min(left, BROWSE_PAGE)} of the ${left} left)`;
}

async function browseMore() {
  if (!browsing) return;
  const b = $("browse-more"); b.disabled = true;
  try {
    const j = await fetchPage(browsing.text, browsing.shown);
    const seen = new Set([...$("browse-grid").querySelectorAll(".card")].map(c => c.dataset.objectid));
    $("browse-grid").insertAdjacentHTML("beforeend", j.items.filter(p => !seen.has(String(p.objectid))).map(browseCard).join(""));
    browsing.shown += j.items.length; browsing.total = j.total;
  } catch (err) { showError(String(err.message || err)); }
  b.disabled = false; updateBrowseMore();
}

$("choices").addEventListener("click", (e) => {
  const pick = e.target.closest("button.pick");
  if (pick) { hidePicks(); $("objectid").value = pick.dataset.objectid; search({objectid: pick.dataset.objectid});
    window.scrollTo({top: 0, behavior: "smooth"}); return; }
  const name = e.target.closest("button.suggestion");
  if (name) { $("objectid").value = name.dataset.text; findByText(name.dataset.text); return; }
  if (e.target.closest("#browse-more")) browseMore();
});

// ---- filters offered from the collection: a control shows only where the catalog has data for it
function fillList(id, facet) {
  $(id).replaceChildren(...facet.values.map(v => { const o = document.createElement("option");
    o.value = v.value; o.label = `${v.count} painting${v.count === 1 ? "" : "s"}`; return o; }));
}
function orList(items) { return items.length < 2 ? items.join("") : items.slice(0, -1).join(", ") + " or " + items[items.length - 1]; }
async function loadFacets() {
  let j;
  try { const r = await fetch("/api/facets"); if (!r.ok) return; j = await r.json(); } catch (err) { return; }
  for (const name of ["artist", "style", "medium"]) {
    $(name).closest("label").classList.toggle("hidden", !j[name].available);
    if (j[name].available) fillList(name + "-list", j[name]);
  }
  const years = j.years;
  for (const id of ["year_from", "year_to"]) $(id).closest("label").classList.toggle("hidden", !years.available);
  if (years.available) {
    // the span as placeholders, not min/max: a range outside it may be asked, and is answered in words
    $("year_from").placeholder = years.min; $("year_to").placeholder = years.max;
  }
  const hidden = ["style", "medium"].filter(n => !j[n].available).concat(years.available ? [] : ["date"]);
  $("filters-note").textContent = (years.available ? `Paintings from ${years.min} to ${years.max}. ` : "") +
    (hidden.length ? `No painting of this collection has ${orList(hidden.map(h => "a " + h))}, so ` +
      (hidden.length > 1 ? "those filters are" : "that filter is") + " not offered." : "");
}
