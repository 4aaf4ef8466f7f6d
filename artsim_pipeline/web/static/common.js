// Shared by artsim's pages: escaping, score bars, result cards.
"use strict";
const $ = (id) => document.getElementById(id);
function esc(s) { return String(s ?? "").replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c])); }
function pct(v) { return Math.round(Math.max(0, Math.min(1, Number(v) || 0)) * 100); }
// One labelled bar per score: a curator reads the bar and the percentage; the exact number is on hover.
function scoreBar(label, value, digits, cls) {
  const p = pct(value);
  return `<div class="score ${cls || ""}" title="${esc(label)} ${Number(value).toFixed(digits)}">` +
    `<span class="label">${esc(label)}</span><span class="track"><span class="fill" data-width="${p}"></span></span>` +
    `<span class="pct">${p}%</span></div>`;
}
// Bar widths are set through the CSSOM (allowed by the page's Content-Security-Policy; style="" attributes are not).
function sizeBars(root) { for (const el of root.querySelectorAll(".fill[data-width]")) el.style.width = el.dataset.width + "%"; }
// What agreed (core/explain.py): the summary in words; the numbers behind it in a <details> that opens on a
// tap or a click (a phone has no hover), and on hover as before.
const DEPTH_NAMES = {early: "early layers (palette, brushwork)", middle: "middle layers (forms, motifs)", final: "final features (subject, composition)"};
function whyParts(x) {
  const fmt = (v) => Number(v).toFixed(2);
  return {
    depths: Object.entries(x.depths || {}).map(([d, v]) => `${DEPTH_NAMES[d] || d}: ${fmt(v)} (${(x.levels || {})[d]})`),
    models: Object.entries(x.backbones || {}).map(([m, v]) => `${m}: ${fmt(v)}`),
    meta: Object.entries(x.metadata || {}).map(([k, v]) => `${k} +${fmt(v)}`),
  };
}
// The numbers on one line (the export's "why_numbers" column).
function whyNumbers(x) {
  if (!x) return "";
  const p = whyParts(x);
  return ["by depth: " + p.depths.join("; "), "by backbone: " + p.models.join("; ")]
    .concat(p.meta.length ? ["metadata bonuses: " + p.meta.join("; ")] : []).join(" | ");
}
function whyLine(x) {
  if (!x) return "";
  const p = whyParts(x);
  const title = ["agreement (cosine) by depth", ...p.depths, "by backbone", ...p.models].concat(p.meta.length ? ["metadata bonuses", ...p.meta] : []).join("\n");
  const list = (head, items) => items.length ? `<li class="head">${esc(head)}</li>` + items.map(i => `<li>${esc(i)}</li>`).join("") : "";
  return `<p class="why" title="${esc(title)}">${esc(x.summary)}</p>` +
    `<details class="why-numbers"><summary>The numbers</summary><ul>${list("agreement (cosine) by depth", p.depths)}` +
    `${list("by backbone", p.models)}${list("metadata bonuses", p.meta)}</ul></details>`;
}
function resultCard(r, opts) {
  const more = opts && opts.more === false ? "" :
    `<button type="button" class="more secondary" data-objectid="${r.objectid}">More like this</button>`;
  return `
    <article class="card" data-objectid="${r.objectid}">
      <div class="thumb"><a href="/painting/${r.objectid}"><img loading="lazy" src="${r.thumbnail}?size=256" alt="${esc(r.title)}"></a></div>
      <div class="body"><div class="title"><span class="rank">${r.rank}</span><a href="/painting/${r.objectid}">${esc(r.title)}</a></div>
        <div>${esc(r.artist)}</div><div class="meta">${esc(r.date)}${r.style ? " · " + esc(r.style) : ""}</div>
        <div class="meta">${esc(r.medium)}</div>
        ${scoreBar("match", r.final, 3, "final")}${scoreBar("visual", r.visual, 3)}${scoreBar("metadata", r.metadata, 2)}
        ${whyLine(r.explanation)}
        <div class="actions">${more}<a class="nga" href="${r.nga_url}" target="_blank" rel="noopener">nga.gov ↗</a></div></div>
    </article>`;
}
