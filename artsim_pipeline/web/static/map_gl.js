// The collection map's WebGL layer: one point sprite per painting, drawn from ONE atlas texture (every
// thumbnail in a grid, GET /api/map/atlas.jpg) or as a coloured square (colour by artist, decade, region).
// Positions move between two layouts on the GPU (a = from, b = to, mixed by u_t), so switching layouts or
// snapping to the grid animates without re-uploading per frame. No library: WebGL 1 only.
"use strict";
const MapGL = (() => {
  const VS = `
attribute vec2 a_from; attribute vec2 a_to; attribute float a_cell; attribute vec4 a_colour; attribute float a_flag;
uniform vec2 u_scale; uniform vec2 u_offset; uniform vec2 u_canvas; uniform float u_t; uniform float u_size;
uniform float u_any; uniform float u_dpr;
varying vec2 v_cell; varying vec4 v_colour; varying float v_flag; varying float v_dim;
uniform float u_cols;
void main() {
  vec2 p = mix(a_from, a_to, u_t) * u_scale + u_offset;             // CSS pixels
  gl_Position = vec4(p.x / u_canvas.x * 2.0 - 1.0, 1.0 - p.y / u_canvas.y * 2.0, 0.0, 1.0);
  float big = a_flag > 0.5 ? 1.0 : 0.0;
  gl_PointSize = max(2.0, u_size * u_dpr * (1.0 + 0.35 * big * step(u_size, 24.0)));
  v_cell = vec2(mod(a_cell, u_cols), floor(a_cell / u_cols));
  v_colour = a_colour; v_flag = a_flag; v_dim = (u_any > 0.5 && a_flag < 0.5) ? 1.0 : 0.0;
}`;
  const FS = `
precision mediump float;
uniform sampler2D u_atlas; uniform vec2 u_atlasSize; uniform float u_cell; uniform float u_useAtlas;
varying vec2 v_cell; varying vec4 v_colour; varying float v_flag; varying float v_dim;
void main() {
  vec2 pc = gl_PointCoord;
  vec4 c = v_colour;
  if (u_useAtlas > 0.5) c = texture2D(u_atlas, (v_cell * u_cell + pc * u_cell) / u_atlasSize);
  float edge = max(abs(pc.x - 0.5), abs(pc.y - 0.5));
  if (v_flag > 0.5 && edge > 0.42) c = v_flag > 1.5 ? vec4(0.2, 0.85, 1.0, 1.0) : vec4(1.0, 0.8, 0.1, 1.0);
  if (v_dim > 0.5) c = vec4(c.rgb * 0.35 + 0.08, 1.0);
  gl_FragColor = vec4(c.rgb, 1.0);
}`;
  function shader(gl, type, src) {
    const s = gl.createShader(type); gl.shaderSource(s, src); gl.compileShader(s);
    if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
    return s;
  }
  function create(canvas) {
    const gl = canvas.getContext("webgl", {antialias: false, preserveDrawingBuffer: true, alpha: false});
    if (!gl) return null;
    const prog = gl.createProgram();
    gl.attachShader(prog, shader(gl, gl.VERTEX_SHADER, VS)); gl.attachShader(prog, shader(gl, gl.FRAGMENT_SHADER, FS));
    gl.linkProgram(prog);
    if (!gl.getProgramParameter(prog, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(prog));
    gl.useProgram(prog);
    const loc = {}, buf = {};
    for (const name of ["u_scale", "u_offset", "u_canvas", "u_t", "u_size", "u_any", "u_dpr", "u_cols", "u_atlas",
      "u_atlasSize", "u_cell", "u_useAtlas"]) loc[name] = gl.getUniformLocation(prog, name);
    const attrs = {a_from: [2, gl.FLOAT, false], a_to: [2, gl.FLOAT, false], a_cell: [1, gl.FLOAT, false],
      a_colour: [4, gl.UNSIGNED_BYTE, true], a_flag: [1, gl.UNSIGNED_BYTE, false]};
    for (const [name, [size, type, norm]] of Object.entries(attrs)) {
      const at = gl.getAttribLocation(prog, name); buf[name] = gl.createBuffer();
      gl.bindBuffer(gl.ARRAY_BUFFER, buf[name]); gl.enableVertexAttribArray(at); gl.vertexAttribPointer(at, size, type, norm, 0, 0);
    }
    const tex = gl.createTexture();
    let n = 0, atlas = null;
    const maxPoint = gl.getParameter(gl.ALIASED_POINT_SIZE_RANGE)[1];
    function upload(name, array) { gl.bindBuffer(gl.ARRAY_BUFFER, buf[name]); gl.bufferData(gl.ARRAY_BUFFER, array, gl.DYNAMIC_DRAW); }
    return {
      maxPoint, maxTexture: gl.getParameter(gl.MAX_TEXTURE_SIZE),
      setCount(count) { n = count; upload("a_cell", Float32Array.from({length: count}, (_, i) => i)); },
      setPositions(from, to) { upload("a_from", from); upload("a_to", to); },
      setColours(rgba) { upload("a_colour", rgba); },
      setFlags(flags) { upload("a_flag", flags); },
      setAtlas(img, cell, cols) {
        gl.bindTexture(gl.TEXTURE_2D, tex);
        gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGB, gl.RGB, gl.UNSIGNED_BYTE, img);
        for (const [k, v] of [[gl.TEXTURE_MIN_FILTER, gl.LINEAR], [gl.TEXTURE_MAG_FILTER, gl.LINEAR],
          [gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE], [gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE]]) gl.texParameteri(gl.TEXTURE_2D, k, v);
        atlas = {w: img.naturalWidth, h: img.naturalHeight, cell, cols};
      },
      // view: {scale (CSS px per world unit), ox, oy}; size: sprite side in CSS px
      draw(view, size, t, opts) {
        const w = canvas.width, h = canvas.height, dpr = opts.dpr || 1;
        gl.viewport(0, 0, w, h); gl.clearColor(0.125, 0.125, 0.133, 1); gl.clear(gl.COLOR_BUFFER_BIT);
        gl.uniform2f(loc.u_scale, view.scale, view.scale); gl.uniform2f(loc.u_offset, view.ox, view.oy);
        gl.uniform2f(loc.u_canvas, w / dpr, h / dpr); gl.uniform1f(loc.u_t, t); gl.uniform1f(loc.u_size, Math.min(size, maxPoint / dpr));
        gl.uniform1f(loc.u_any, opts.dimOthers ? 1 : 0); gl.uniform1f(loc.u_dpr, dpr);
        const useAtlas = !!(atlas && opts.thumbnails);
        gl.uniform1f(loc.u_useAtlas, useAtlas ? 1 : 0);
        if (atlas) { gl.uniform1f(loc.u_cols, atlas.cols); gl.uniform2f(loc.u_atlasSize, atlas.w, atlas.h); gl.uniform1f(loc.u_cell, atlas.cell); }
        else gl.uniform1f(loc.u_cols, 1);
        gl.activeTexture(gl.TEXTURE0); gl.bindTexture(gl.TEXTURE_2D, tex); gl.uniform1i(loc.u_atlas, 0);
        if (n) gl.drawArrays(gl.POINTS, 0, n);
        if (opts.finish) gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, new Uint8Array(4));  // waits for the frame
      },
    };
  }
  return {create};
})();
