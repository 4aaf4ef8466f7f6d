// A Web Worker of the collection map (map.js): snaps a layout to a grid so that no two thumbnails overlap
// when zoomed in. Each painting takes the nearest free cell of side `cell` (searched ring by ring around
// its own cell); a ring search starts where the last painting of the same cell found room, so a dense
// island costs about its rings, not their squares. Runs off the page's thread: the map stays responsive.
"use strict";
function snap(src, cell) {
  // occupancy: a byte per cell of a grid three times the map's side (the map in the middle third)
  const n = src.length / 2, out = new Float32Array(src.length), side = Math.ceil(1 / cell), W = 3 * side;
  const used = new Uint8Array(W * W), start = new Map();
  const id = (cx, cy) => (cx < -side || cy < -side || cx >= 2 * side || cy >= 2 * side) ? -1 : (cy + side) * W + (cx + side);
  for (let i = 0; i < n; i++) {
    const fx = src[2 * i] / cell, fy = src[2 * i + 1] / cell, cx = Math.floor(fx), cy = Math.floor(fy), home = id(cx, cy);
    let best = null, bd = Infinity, r = Math.max(0, (start.get(home) || 0) - 1);
    const tryCell = (gx, gy) => {
      const k = id(gx, gy); if (k < 0 || used[k]) return;
      const d = (gx + 0.5 - fx) ** 2 + (gy + 0.5 - fy) ** 2; if (d < bd) { bd = d; best = [gx, gy]; }
    };
    for (; best === null; r++) {  // the ring of cells at Chebyshev distance r
      if (r === 0) { tryCell(cx, cy); continue; }
      for (let d = -r; d <= r; d++) { tryCell(cx + d, cy - r); tryCell(cx + d, cy + r); }
      for (let d = -r + 1; d < r; d++) { tryCell(cx - r, cy + d); tryCell(cx + r, cy + d); }
    }
    start.set(home, r - 1);
    used[id(best[0], best[1])] = 1; out[2 * i] = (best[0] + 0.5) * cell; out[2 * i + 1] = (best[1] + 0.5) * cell;
  }
  return out;
}
onmessage = (e) => {
  const {name, positions, cell} = e.data, t0 = performance.now(), out = snap(positions, cell);
  postMessage({name, positions: out, ms: performance.now() - t0}, [out.buffer]);
};
