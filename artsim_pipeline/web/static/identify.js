// Identification on the search page: "This is <title> — <artist> (confidence 97%)" or "Not in the collection"
// above the results of an image search, how the match is made, and the "near duplicate" label of a result.
// Uses esc() from common.js; styles in identify.css. The API's fields: identified {objectid, title, attribution, confidence} | null,
// identification {verdict, basis, score, threshold, inliers, inlier_threshold, confidence, method} | null, match_basis, results[].near_duplicate.
"use strict";
function confidenceText(x) { return Math.round(100 * Number(x)) + "%"; }

// The banner's content for one search response ("" when there is nothing to say).
function identificationHtml(response) {
  const id = response.identification, found = response.identified;
  let head = "";
  if (id && id.verdict === "identified" && found) {
    head = `<strong>This is <a href="/painting/${found.objectid}">${esc(found.title || "Untitled")}</a> — ` +
      `${esc(found.attribution || "unknown artist")}</strong> (confidence ${confidenceText(found.confidence)})`;
  } else if (id) {
    const closest = (response.results || []).find(r => r.objectid === id.closest_objectid) || (response.results || [])[0];
    head = `<strong>Not in the collection</strong>` + (closest ?
      ` (closest: <a href="/painting/${closest.objectid}">${esc(closest.title || "Untitled")}</a> — ${esc(closest.artist)})` : "") +
      ` (confidence ${confidenceText(id.confidence)})`;
  } else if (response.kind === "image") {
    head = "Whether this photo shows a painting of the collection is not known: the index has no identification calibration.";
  }
  const how = !id ? "" : id.basis === "geometry" ?
    `<span title="${esc(id.method)}">${Number(id.inliers)} keypoints of the photo match the painting's image ` +
    `(identified from ${Number(id.inlier_threshold)})</span>` :
    `<span title="${esc(id.method)}">score ${Number(id.score).toFixed(3)}, identified from ${Number(id.threshold).toFixed(3)}</span>`;
  const basis = response.match_basis ? `How the match is made: ${esc(response.match_basis)}.` : "";
  if (!head && !basis) return "";
  return (head ? `<div class="verdict">${head}</div>` : "") +
    `<div class="meta">${[basis, how].filter(Boolean).join(" · ")}</div>`;
}

// Show the identification banner right above `container` (the results) and label its near-duplicate cards.
function renderIdentification(container, response) {
  let banner = document.getElementById("identification");
  if (!banner) {
    banner = document.createElement("div"); banner.id = "identification"; banner.setAttribute("aria-live", "polite");
    container.parentNode.insertBefore(banner, container);
  }
  const html = response ? identificationHtml(response) : "";
  banner.className = "banner " + (response && response.identified ? "info identified" : "info");
  banner.innerHTML = html;
  banner.classList.toggle("hidden", !html);
  labelNearDuplicates(container, response);
}

// The small label of a result that is another image of the query painting ("" for any other result).
function nearDuplicateLabel(result) {
  return result && result.near_duplicate ?
    `<span class="near-duplicate" title="cosine ${Number(result.cosine).toFixed(3)}: another image of the same work">` +
    `near duplicate</span>` : "";
}

// Add the label to the cards (article.card[data-objectid]) of the near-duplicate results of `response`.
function labelNearDuplicates(container, response) {
  for (const r of (response && response.results) || []) {
    if (!r.near_duplicate) continue;
    const title = container.querySelector(`article.card[data-objectid="${r.objectid}"] .title`);
    if (title && !title.querySelector(".near-duplicate")) title.insertAdjacentHTML("beforeend", nearDuplicateLabel(r));
  }
}
