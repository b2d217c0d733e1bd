/*
 * timeline_html.c — the interactive allocation timeline of a cell:
 * timelines/<name>.html, one self-contained page (inline canvas drawing and
 * a little vanilla JavaScript; no network, no framework).  The page embeds
 * the cell's timeline decimated by ftr_timeline_decimate (every peak and
 * phase boundary kept, MAIN_BUCKETS buckets over the whole cell, so the
 * page stays small whatever the timeline's length) and, coarser, the
 * timelines of the other cells of its scope and length to compare with on
 * one axis normalised to step boundaries.  Zoom, pan, hover (phase,
 * category split, RSS at that instant) and category toggles are in the
 * script below; docs/REPORTS.md describes the page and
 * ci/test-timeline-browser.py checks it in Debian's chromium.
 */
#include "report_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAIN_BUCKETS  4000
#define OTHER_BUCKETS 800

/* The page's script (window.ftb is what the browser test reads back). */
static const char page_js[] =
    "// timeline_page.js — the interactive allocation timeline of one cell\n"
    "// (`ftbench report` writes it into timelines/<name>.html, inline: no\n"
    "// network, no framework).  Reads the JSON in <script id=\"data\">: the cell's\n"
    "// timeline decimated by ftr_timeline_decimate (every peak and phase\n"
    "// boundary kept) and, coarser, the other cells of its scope and length to\n"
    "// compare with.  Canvas drawing; zoom (wheel, buttons), pan (drag), hover\n"
    "// (phase, category split, RSS at that instant), category toggles, a time\n"
    "// axis in seconds or normalised to step boundaries (step k spans [k, k+1]).\n"
    "// window.ftb exposes what ci/test-timeline-browser.py reads back.\n"
    "(function () {\n"
    "  \"use strict\";\n"
    "  var t_start = performance.now();\n"
    "  var D = JSON.parse(document.getElementById(\"data\").textContent);\n"
    "  var M = D.main;\n"
    "  var NC = D.cats.length;\n"
    "  var CLASS_COL = [\"#ffffff\", \"#9ecae1\", \"#3182bd\", \"#31a354\", \"#d9d9d9\"];\n"
    "  var CLASS_NAME = [\"\", \"forward\", \"backward\", \"optimizer\", \"other\"];\n"
    "  var canvas = document.getElementById(\"plot\");\n"
    "  var ctx = canvas.getContext(\"2d\");\n"
    "  var hoverBox = document.getElementById(\"hover\");\n"
    "  var on = D.cats.map(function () { return true; });\n"
    "  var state = { norm: false, other: -1, x0: 0, x1: 1, yzero: false, hoverX: null };\n"
    "\n"
    "  // Piecewise-linear map from seconds to step units: step k starts at k,\n"
    "  // the next step's start is k + 1; loading before step 0 maps to [-1, 0],\n"
    "  // the tail after the last step to [n, n + 0.25].\n"
    "  function normMap(cell) {\n"
    "    var st = cell.steps, n = st.length, tt = cell.t;\n"
    "    var bt = [], bx = [];\n"
    "    if (!n) return null;\n"
    "    bt.push(tt[0]); bx.push(-1);\n"
    "    for (var k = 0; k < n; k++) {\n"
    "      if (st[k][0] > bt[bt.length - 1]) { bt.push(st[k][0]); bx.push(k); }\n"
    "    }\n"
    "    var last = st[n - 1][1];\n"
    "    if (last > bt[bt.length - 1]) { bt.push(last); bx.push(n); }\n"
    "    var end = tt[tt.length - 1];\n"
    "    if (end > bt[bt.length - 1]) { bt.push(end); bx.push(n + 0.25); }\n"
    "    return { t: bt, x: bx };\n"
    "  }\n"
    "  function interp(a, b, v) {  // a ascending; maps v from a to b\n"
    "    if (v <= a[0]) return b[0] + (v - a[0]) * (a.length > 1 ? (b[1] - b[0]) / (a[1] - a[0]) : 1);\n"
    "    var lo = 0, hi = a.length - 1;\n"
    "    if (v >= a[hi]) return b[hi] + (v - a[hi]) * (hi > 0 ? (b[hi] - b[hi - 1]) / (a[hi] - a[hi - 1]) : 1);\n"
    "    while (hi - lo > 1) { var m = (lo + hi) >> 1; if (a[m] <= v) lo = m; else hi = m; }\n"
    "    return b[lo] + (v - a[lo]) * (b[hi] - b[lo]) / (a[hi] - a[lo]);\n"
    "  }\n"
    "  M.map = normMap(M);\n"
    "  D.others.forEach(function (o) { o.map = normMap(o); });\n"
    "  function ax(cell, t) { return state.norm && cell.map ? interp(cell.map.t, cell.map.x, t) : t; }\n"
    "  function unax(cell, x) { return state.norm && cell.map ? interp(cell.map.x, cell.map.t, x) : x; }\n"
    "\n"
    "  // Peaks over every row kept (the decimation keeps the true peaks).\n"
    "  var pkRss = 0, pkRssAt = 0, pkCore = 0, pkCoreAt = 0;\n"
    "  for (var i = 0; i < M.t.length; i++) {\n"
    "    if (M.rss[i] !== null && M.rss[i] > pkRss) { pkRss = M.rss[i]; pkRssAt = i; }\n"
    "    if (M.live[i] > pkCore) { pkCore = M.live[i]; pkCoreAt = i; }\n"
    "  }\n"
    "\n"
    "  // The last row at or before t.\n"
    "  function rowAt(cell, t) {\n"
    "    var a = cell.t, lo = 0, hi = a.length - 1;\n"
    "    if (t < a[0]) return 0;\n"
    "    while (lo < hi) { var m = (lo + hi + 1) >> 1; if (a[m] <= t) lo = m; else hi = m - 1; }\n"
    "    return lo;\n"
    "  }\n"
    "\n"
    "  var PAD = { l: 64, r: 16, t: 30, b: 36 }, STRIP = 16;\n"
    "  function size() {\n"
    "    var w = Math.max(400, canvas.parentNode.clientWidth), h = 440, dpr = window.devicePixelRatio || 1;\n"
    "    canvas.width = w * dpr; canvas.height = h * dpr;\n"
    "    canvas.style.width = w + \"px\"; canvas.style.height = h + \"px\";\n"
    "    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);\n"
    "    return { w: w, h: h };\n"
    "  }\n"
    "  var dim = size();\n"
    "  function pw() { return dim.w - PAD.l - PAD.r; }\n"
    "  function xToPx(x) { return PAD.l + (x - state.x0) / (state.x1 - state.x0) * pw(); }\n"
    "  function pxToX(px) { return state.x0 + (px - PAD.l) / pw() * (state.x1 - state.x0); }\n"
    "  var Y = { lo: 0, hi: 1 };\n"
    "  function yToPx(y) { var top = PAD.t + STRIP + 6, bot = dim.h - PAD.b; return bot - (y - Y.lo) / (Y.hi - Y.lo) * "
    "(bot - top); }\n"
    "\n"
    "  function stack(i, upto) {  // the enabled categories below and including upto, row i\n"
    "    var s = 0;\n"
    "    for (var c = 0; c <= upto; c++) if (on[c]) s += M.c[c][i];\n"
    "    return s;\n"
    "  }\n"
    "  function visibleRange(cell) {\n"
    "    var a = rowAt(cell, unax(cell, state.x0)), b = rowAt(cell, unax(cell, state.x1));\n"
    "    return [a, Math.min(cell.t.length - 1, b + 1)];\n"
    "  }\n"
    "  function niceStep(span, n) {\n"
    "    var s = Math.pow(10, Math.floor(Math.log10(span / n))), r = span / s / n;\n"
    "    return s * (r > 5 ? 10 : r > 2 ? 5 : r > 1 ? 2 : 1);\n"
    "  }\n"
    "\n"
    "  function draw() {\n"
    "    var t0 = performance.now();\n"
    "    ctx.clearRect(0, 0, dim.w, dim.h);\n"
    "    var r = visibleRange(M), lo = Infinity, hi = 0, i, c;\n"
    "    for (i = r[0]; i <= r[1]; i++) {\n"
    "      var top = stack(i, NC - 1);\n"
    "      hi = Math.max(hi, top); lo = Math.min(lo, top);\n"
    "      if (M.rss[i] !== null) { hi = Math.max(hi, M.rss[i]); lo = Math.min(lo, M.rss[i]); }\n"
    "    }\n"
    "    var other = state.other >= 0 ? D.others[state.other] : null;\n"
    "    if (other) {\n"
    "      var ro = visibleRange(other);\n"
    "      for (i = ro[0]; i <= ro[1]; i++) {\n"
    "        hi = Math.max(hi, other.live[i]); lo = Math.min(lo, other.live[i]);\n"
    "        if (other.rss[i] !== null) { hi = Math.max(hi, other.rss[i]); lo = Math.min(lo, other.rss[i]); }\n"
    "      }\n"
    "    }\n"
    "    if (!(hi > lo)) { hi = lo + 1; }\n"
    "    Y.lo = state.yzero ? 0 : Math.max(0, lo - 0.08 * (hi - lo));\n"
    "    Y.hi = hi + 0.04 * (hi - Y.lo);\n"
    "    ctx.save();\n"
    "    ctx.beginPath(); ctx.rect(PAD.l, 0, pw(), dim.h); ctx.clip();\n"
    "    // Categories, stacked, as steps (a value holds until the next row).\n"
    "    for (c = 0; c < NC; c++) {\n"
    "      if (!on[c]) continue;\n"
    "      ctx.beginPath();\n"
    "      var first = true;\n"
    "      for (i = r[0]; i <= r[1]; i++) {\n"
    "        var x = xToPx(ax(M, M.t[i])), xn = i < r[1] ? xToPx(ax(M, M.t[i + 1])) : x;\n"
    "        var y = yToPx(stack(i, c));\n"
    "        if (first) { ctx.moveTo(x, y); first = false; } else ctx.lineTo(x, y);\n"
    "        ctx.lineTo(xn, y);\n"
    "      }\n"
    "      for (i = r[1]; i >= r[0]; i--) {\n"
    "        var xb = xToPx(ax(M, M.t[i])), xbn = i < r[1] ? xToPx(ax(M, M.t[i + 1])) : xb;\n"
    "        var yb = yToPx(stack(i, c) - M.c[c][i]);\n"
    "        ctx.lineTo(xbn, yb); ctx.lineTo(xb, yb);\n"
    "      }\n"
    "      ctx.closePath();\n"
    "      ctx.fillStyle = D.colours[c];\n"
    "      ctx.fill();\n"
    "    }\n"
    "    function line(cell, key, colour, dash, width) {\n"
    "      var rr = visibleRange(cell), started = false;\n"
    "      ctx.beginPath();\n"
    "      for (var j = rr[0]; j <= rr[1]; j++) {\n"
    "        var v = cell[key][j];\n"
    "        if (v === null) { started = false; continue; }\n"
    "        var px = xToPx(ax(cell, cell.t[j])), py = yToPx(v);\n"
    "        if (!started) { ctx.moveTo(px, py); started = true; } else ctx.lineTo(px, py);\n"
    "        var nx = j < rr[1] ? xToPx(ax(cell, cell.t[j + 1])) : px;\n"
    "        ctx.lineTo(nx, py);\n"
    "      }\n"
    "      ctx.strokeStyle = colour; ctx.setLineDash(dash); ctx.lineWidth = width; ctx.stroke(); ctx.setLineDash([]);\n"
    "    }\n"
    "    line(M, \"rss\", \"#000000\", [], 1.6);\n"
    "    if (other) {\n"
    "      line(other, \"rss\", \"#b00000\", [6, 3], 1.6);\n"
    "      line(other, \"live\", \"#b00000\", [2, 3], 1.4);\n"
    "    }\n"
    "    // Phase strip: classes of the rows, at full resolution of the rows kept.\n"
    "    var sy = PAD.t;\n"
    "    for (i = r[0]; i <= r[1]; i++) {\n"
    "      var xs = xToPx(ax(M, M.t[i])), xe = i < r[1] ? xToPx(ax(M, M.t[i + 1])) : xs + 1;\n"
    "      ctx.fillStyle = CLASS_COL[D.phase_class[M.ph[i]]];\n"
    "      ctx.fillRect(xs, sy, Math.max(1, xe - xs), STRIP);\n"
    "    }\n"
    "    // Step boundaries.\n"
    "    ctx.font = \"11px sans-serif\"; ctx.fillStyle = \"#444\"; ctx.strokeStyle = \"#777\"; ctx.setLineDash([2, "
    "3]);\n"
    "    for (var k = 0; k < M.steps.length; k++) {\n"
    "      var sx = xToPx(ax(M, M.steps[k][0]));\n"
    "      if (sx < PAD.l || sx > dim.w - PAD.r) continue;\n"
    "      ctx.beginPath(); ctx.moveTo(sx, sy + STRIP); ctx.lineTo(sx, dim.h - PAD.b); ctx.stroke();\n"
    "      ctx.fillText((k < M.warmup ? \"warm-up \" : \"step \") + (k + 1), sx + 3, dim.h - PAD.b - 5);\n"
    "    }\n"
    "    ctx.setLineDash([]);\n"
    "    // Peak marks.\n"
    "    function mark(t, v, label) {\n"
    "      var px = xToPx(ax(M, t)), py = yToPx(v);\n"
    "      ctx.strokeStyle = \"#000\"; ctx.lineWidth = 1.2;\n"
    "      ctx.beginPath(); ctx.moveTo(px - 4, py - 4); ctx.lineTo(px + 4, py + 4); ctx.moveTo(px + 4, py - 4); "
    "ctx.lineTo(px - 4, py + 4); ctx.stroke();\n"
    "      ctx.fillStyle = \"#000\"; ctx.fillText(label, px + 6, py + 14);\n"
    "    }\n"
    "    mark(M.t[pkRssAt], pkRss, \"RSS peak \" + pkRss.toFixed(1));\n"
    "    mark(M.t[pkCoreAt], pkCore, \"core peak \" + pkCore.toFixed(1));\n"
    "    // Hover line.\n"
    "    if (state.hoverX !== null) {\n"
    "      ctx.strokeStyle = \"#555\"; ctx.lineWidth = 1;\n"
    "      ctx.beginPath(); ctx.moveTo(state.hoverX, sy); ctx.lineTo(state.hoverX, dim.h - PAD.b); ctx.stroke();\n"
    "    }\n"
    "    ctx.restore();\n"
    "    // Axes.\n"
    "    ctx.fillStyle = \"#222\"; ctx.strokeStyle = \"#222\"; ctx.font = \"12px sans-serif\";\n"
    "    ctx.beginPath(); ctx.moveTo(PAD.l, sy + STRIP + 4); ctx.lineTo(PAD.l, dim.h - PAD.b); ctx.lineTo(dim.w - "
    "PAD.r, dim.h - PAD.b); ctx.stroke();\n"
    "    var ys = niceStep(Y.hi - Y.lo, 5);\n"
    "    for (var yv = Math.ceil(Y.lo / ys) * ys; yv <= Y.hi; yv += ys) {\n"
    "      var yp = yToPx(yv);\n"
    "      ctx.fillText(String(+yv.toFixed(3)), 4, yp + 4);\n"
    "      ctx.beginPath(); ctx.moveTo(PAD.l - 4, yp); ctx.lineTo(PAD.l, yp); ctx.stroke();\n"
    "    }\n"
    "    var xs2 = niceStep(state.x1 - state.x0, 8);\n"
    "    for (var xv = Math.ceil(state.x0 / xs2) * xs2; xv <= state.x1; xv += xs2) {\n"
    "      var xp = xToPx(xv);\n"
    "      ctx.fillText(String(+xv.toFixed(4)), xp - 10, dim.h - PAD.b + 16);\n"
    "      ctx.beginPath(); ctx.moveTo(xp, dim.h - PAD.b); ctx.lineTo(xp, dim.h - PAD.b + 4); ctx.stroke();\n"
    "    }\n"
    "    ctx.fillText(state.norm ? \"steps (each step's start at an integer; loading before 0)\" : \"time since the "
    "cell started (s)\", PAD.l + pw() / 2 - 120, dim.h - 4);\n"
    "    ctx.fillText(\"MiB\" + (Y.lo > 0 ? \" (axis from \" + Y.lo.toFixed(0) + \")\" : \"\"), 4, PAD.t - 12);\n"
    "    ctx.fillText(\"phase\", PAD.l - 40, sy + 12);\n"
    "    var ms = performance.now() - t0;\n"
    "    window.ftb.lastDrawMs = ms;\n"
    "    return ms;\n"
    "  }\n"
    "\n"
    "  function fmt(v) { return v === null ? \"-\" : v.toFixed(3); }\n"
    "  function hoverAt(px) {\n"
    "    var x = pxToX(px), t = unax(M, x), i = rowAt(M, t);\n"
    "    var lines = [\"t = \" + M.t[i].toFixed(4) + \" s\" + (state.norm ? \" (step axis \" + x.toFixed(3) + \")\" : "
    "\"\"),\n"
    "                 \"phase: \" + D.phases[M.ph[i]] + \" (\" + CLASS_NAME[D.phase_class[M.ph[i]]] + \")\"];\n"
    "    for (var c = 0; c < NC; c++) lines.push(D.cats[c] + \": \" + fmt(M.c[c][i]) + \" MiB\");\n"
    "    lines.push(\"core total: \" + fmt(M.live[i]) + \" MiB\");\n"
    "    lines.push(\"RSS: \" + fmt(M.rss[i]) + \" MiB\");\n"
    "    if (state.other >= 0) {\n"
    "      var o = D.others[state.other], j = rowAt(o, unax(o, x));\n"
    "      lines.push(o.cell + \": core \" + fmt(o.live[j]) + \", RSS \" + fmt(o.rss[j]) + \" MiB\");\n"
    "    }\n"
    "    hoverBox.textContent = lines.join(\"\\n\");\n"
    "    hoverBox.dataset.row = i;\n"
    "    state.hoverX = px;\n"
    "    draw();\n"
    "    return i;\n"
    "  }\n"
    "\n"
    "  function setView(x0, x1) {\n"
    "    if (!(x1 > x0)) return;\n"
    "    state.x0 = x0; state.x1 = x1;\n"
    "    draw();\n"
    "  }\n"
    "  function measured() {\n"
    "    var st = M.steps, w = Math.min(M.warmup, Math.max(0, st.length - 1));\n"
    "    if (!st.length) return whole();\n"
    "    var a = ax(M, st[w][0]), b = ax(M, st[st.length - 1][1]);\n"
    "    setView(a - 0.01 * (b - a), b + 0.01 * (b - a));\n"
    "  }\n"
    "  function whole() { setView(ax(M, M.t[0]), ax(M, M.t[M.t.length - 1])); }\n"
    "\n"
    "  // Controls.\n"
    "  var legend = document.getElementById(\"legend\");\n"
    "  D.cats.forEach(function (name, c) {\n"
    "    var l = document.createElement(\"label\"), cb = document.createElement(\"input\"), sw = "
    "document.createElement(\"span\");\n"
    "    cb.type = \"checkbox\"; cb.checked = true; cb.id = \"cat-\" + name;\n"
    "    cb.addEventListener(\"change\", function () { on[c] = cb.checked; draw(); });\n"
    "    sw.className = \"swatch\"; sw.style.background = D.colours[c];\n"
    "    l.appendChild(cb); l.appendChild(sw); l.appendChild(document.createTextNode(name));\n"
    "    legend.appendChild(l);\n"
    "  });\n"
    "  var sel = document.getElementById(\"compare\");\n"
    "  D.others.forEach(function (o, k) {\n"
    "    var op = document.createElement(\"option\"); op.value = k; op.textContent = o.cell + (o.run ? \" (\" + o.run "
    "+ \")\" : \"\");\n"
    "    sel.appendChild(op);\n"
    "  });\n"
    "  sel.addEventListener(\"change\", function () {\n"
    "    state.other = +sel.value;\n"
    "    if (state.other >= 0 && !state.norm) { state.norm = true; document.getElementById(\"norm\").checked = true; "
    "whole(); }\n"
    "    else draw();\n"
    "  });\n"
    "  document.getElementById(\"norm\").addEventListener(\"change\", function (e) {\n"
    "    var t0 = unax(M, state.x0), t1 = unax(M, state.x1);\n"
    "    state.norm = e.target.checked;\n"
    "    setView(ax(M, t0), ax(M, t1));\n"
    "  });\n"
    "  document.getElementById(\"yzero\").addEventListener(\"change\", function (e) { state.yzero = e.target.checked; "
    "draw(); });\n"
    "  document.getElementById(\"measured\").addEventListener(\"click\", measured);\n"
    "  document.getElementById(\"whole\").addEventListener(\"click\", whole);\n"
    "  function zoom(f, px) {\n"
    "    var c = px === undefined ? (state.x0 + state.x1) / 2 : pxToX(px);\n"
    "    setView(c - (c - state.x0) * f, c + (state.x1 - c) * f);\n"
    "  }\n"
    "  document.getElementById(\"zin\").addEventListener(\"click\", function () { zoom(0.5); });\n"
    "  document.getElementById(\"zout\").addEventListener(\"click\", function () { zoom(2); });\n"
    "  canvas.addEventListener(\"wheel\", function (e) { e.preventDefault(); zoom(e.deltaY < 0 ? 0.8 : 1.25, "
    "e.offsetX); }, { passive: false });\n"
    "  var drag = null;\n"
    "  canvas.addEventListener(\"mousedown\", function (e) { drag = { px: e.offsetX, x0: state.x0, x1: state.x1 }; "
    "});\n"
    "  window.addEventListener(\"mouseup\", function () { drag = null; });\n"
    "  canvas.addEventListener(\"mousemove\", function (e) {\n"
    "    if (drag) {\n"
    "      var d = (e.offsetX - drag.px) / pw() * (drag.x1 - drag.x0);\n"
    "      state.x0 = drag.x0 - d; state.x1 = drag.x1 - d;\n"
    "    }\n"
    "    hoverAt(e.offsetX);\n"
    "  });\n"
    "  canvas.addEventListener(\"dblclick\", measured);\n"
    "  window.addEventListener(\"resize\", function () { dim = size(); draw(); });\n"
    "\n"
    "  window.ftb = {\n"
    "    ready: false, data: D, peakRss: pkRss, peakRssT: M.t[pkRssAt], peakCore: pkCore, peakCoreT: M.t[pkCoreAt],\n"
    "    xToPx: function (t) { return xToPx(ax(M, t)); }, hoverAt: hoverAt, draw: draw, setView: setView,\n"
    "    axisOf: function (t) { return ax(M, t); },\n"
    "    otherAxisOf: function (k, t) { return ax(D.others[k], t); },\n"
    "    measured: measured, whole: whole, state: state\n"
    "  };\n"
    "  document.getElementById(\"peak\").textContent =\n"
    "    \"RSS peak \" + pkRss.toFixed(3) + \" MiB at \" + M.t[pkRssAt].toFixed(4) + \" s; core peak \" + "
    "pkCore.toFixed(3) +\n"
    "    \" MiB at \" + M.t[pkCoreAt].toFixed(4) + \" s (\" + D.phases[M.ph[pkCoreAt]] + \")\";\n"
    "  measured();\n"
    "  window.ftb.renderMs = performance.now() - t_start;\n"
    "  document.getElementById(\"render\").textContent = \"drawn in \" + window.ftb.renderMs.toFixed(0) + \" ms\";\n"
    "  window.ftb.ready = true;\n"
    "})();\n"
    "\n";

/* A number with at most `decimals` decimals, trailing zeros dropped. */
static void num(ftr_buf *b, double v, int decimals)
{
    if (!isfinite(v)) {
        ftr_buf_puts(b, "null");
        return;
    }
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%.*f", decimals, v);
    char *dot = strchr(tmp, '.');
    if (dot) {
        char *e = tmp + strlen(tmp) - 1;
        while (e > dot && *e == '0') *e-- = 0;
        if (e == dot) *e = 0;
    }
    if (!strcmp(tmp, "-0")) snprintf(tmp, sizeof tmp, "0");
    ftr_buf_puts(b, tmp);
}

/* A JSON string, safe inside <script>: "</" never appears. */
static void jstr(ftr_buf *b, const char *s)
{
    json_t *j = json_string(s ? s : "");
    char *t = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    for (const char *p = t ? t : "\"\""; *p; p++) {
        if (p[0] == '<' && p[1] == '/')
            ftr_buf_puts(b, "<\\");
        else {
            char c[2] = { *p, 0 };
            ftr_buf_puts(b, c);
        }
    }
    free(t);
    json_decref(j);
}

static void series(ftr_buf *b, const char *key, const ftr_timeline *tl, const int *keep, int nk, int what)
{
    if (key)
        ftr_buf_printf(b, "\"%s\":[", key);
    else
        ftr_buf_puts(b, "[");
    for (int q = 0; q < nk; q++) {
        const ftr_tl_row *r = &tl->rows[keep[q]];
        if (q) ftr_buf_puts(b, ",");
        if (what == -1)
            num(b, r->t, 4);
        else if (what == -2)
            num(b, r->rss, 3);
        else if (what == -3)
            num(b, r->live, 3);
        else if (what == -4)
            ftr_buf_printf(b, "%d", r->phase);
        else if (what == -5)
            ftr_buf_printf(b, "%d", keep[q]); /* the line of the timeline file (0 = the first after the header) */
        else
            num(b, r->cat[what], 3);
    }
    ftr_buf_puts(b, "]");
}

static void steps(ftr_buf *b, const ftr_timeline *tl)
{
    ftr_buf_puts(b, "\"steps\":[");
    for (int k = 0; k < tl->nsteps; k++) {
        ftr_buf_puts(b, k ? ",[" : "[");
        num(b, tl->step_t0[k], 4);
        ftr_buf_puts(b, ",");
        num(b, tl->step_t1[k], 4);
        ftr_buf_puts(b, "]");
    }
    ftr_buf_puts(b, "]");
}

/* The other cells: their RSS, core total and steps (phases are the main
 * cell's; the others' indices would not match). */
static void other_cell(ftr_buf *b, const ftr_rec *o)
{
    char path[8192], err[512];
    ftr_timeline tl;
    if (ftr_timeline_path(o, path, sizeof path, err, sizeof err) != 0 ||
        ftr_timeline_read(path, &tl, err, sizeof err) != 0)
        return;
    int *keep = malloc(((size_t)tl.n + 1) * sizeof *keep);
    int nk = ftr_timeline_decimate(&tl, tl.rows[0].t, tl.rows[tl.n - 1].t, OTHER_BUCKETS, keep);
    if (b->n && b->s[b->n - 1] != '[') ftr_buf_puts(b, ",");
    ftr_buf_puts(b, "{\"cell\":");
    jstr(b, o->cell);
    ftr_buf_puts(b, ",\"run\":");
    jstr(b, o->run_id);
    ftr_buf_printf(b, ",\"warmup\":%d,", o->warmup_steps > 0 ? o->warmup_steps : 0);
    series(b, "t", &tl, keep, nk, -1);
    ftr_buf_puts(b, ",");
    series(b, "rss", &tl, keep, nk, -2);
    ftr_buf_puts(b, ",");
    series(b, "live", &tl, keep, nk, -3);
    ftr_buf_puts(b, ",");
    steps(b, &tl);
    ftr_buf_puts(b, "}");
    free(keep);
    ftr_timeline_free(&tl);
}

static void html_text(ftr_buf *b, const char *s) { ftr_html_escape(b, s ? s : "?"); }

int ftr_timeline_page(const ftr_plotter *p, const ftr_rec *rec, const ftr_rec *const *others, int nothers,
                      const char *name, char *err, size_t errlen)
{
    char path[8192];
    if (ftr_timeline_path(rec, path, sizeof path, err, errlen) != 0) return -1;
    ftr_timeline tl;
    if (ftr_timeline_read(path, &tl, err, errlen) != 0) return -1;
    int *keep = malloc(((size_t)tl.n + 1) * sizeof *keep);
    int nk = ftr_timeline_decimate(&tl, tl.rows[0].t, tl.rows[tl.n - 1].t, MAIN_BUCKETS, keep);

    ftr_buf d = { 0 };
    ftr_buf_puts(&d, "{\"cell\":");
    jstr(&d, rec->cell);
    ftr_buf_puts(&d, ",\"cats\":[");
    for (int c = 0; c < FTR_NCAT; c++) {
        ftr_buf_puts(&d, c ? "," : "");
        jstr(&d, ftr_category_title(c));
    }
    ftr_buf_puts(&d, "],\"colours\":[");
    for (int c = 0; c < FTR_NCAT; c++) ftr_buf_printf(&d, "%s\"%s\"", c ? "," : "", ftr_category_colour(c));
    ftr_buf_puts(&d, "],\"phases\":[");
    for (int i = 0; i < tl.nnames; i++) {
        ftr_buf_puts(&d, i ? "," : "");
        jstr(&d, tl.names[i]);
    }
    ftr_buf_puts(&d, "],\"phase_class\":[");
    for (int i = 0; i < tl.nnames; i++) ftr_buf_printf(&d, "%s%d", i ? "," : "", ftr_phase_class(tl.names[i]));
    ftr_buf_printf(&d, "],\"main\":{\"warmup\":%d,", rec->warmup_steps > 0 ? rec->warmup_steps : 0);
    series(&d, "t", &tl, keep, nk, -1);
    ftr_buf_puts(&d, ",\"c\":[");
    for (int c = 0; c < FTR_NCAT; c++) {
        ftr_buf_puts(&d, c ? "," : "");
        series(&d, NULL, &tl, keep, nk, c);
    }
    ftr_buf_puts(&d, "],");
    series(&d, "rss", &tl, keep, nk, -2);
    ftr_buf_puts(&d, ",");
    series(&d, "live", &tl, keep, nk, -3);
    ftr_buf_puts(&d, ",");
    series(&d, "ph", &tl, keep, nk, -4);
    ftr_buf_puts(&d, ",");
    series(&d, "ln", &tl, keep, nk, -5);
    ftr_buf_puts(&d, ",");
    steps(&d, &tl);
    ftr_buf_puts(&d, "},\"others\":[");
    for (int i = 0; i < nothers; i++) other_cell(&d, others[i]);
    ftr_buf_puts(&d, "]}");

    ftr_buf h = { 0 };
    ftr_buf_puts(&h, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>timeline: ");
    html_text(&h, rec->cell);
    ftr_buf_puts(&h, "</title>\n<style>\n"
                     "body{font-family:Helvetica,Arial,sans-serif;margin:1.5em;color:#222}h1{font-size:1.3em;"
                     "font-weight:600}\n.meta{font-size:.9em;color:#444;max-width:1100px}\n"
                     ".controls{margin:.6em 0}.controls button,.controls select{margin-right:.5em}"
                     ".controls label{margin-right:1em}\n#legend label{margin-right:1em;font-size:.9em}"
                     ".swatch{display:inline-block;width:.9em;height:.9em;margin:0 .3em;vertical-align:middle}\n"
                     ".wrap{max-width:1400px}canvas{cursor:crosshair;display:block}\n"
                     "#hover{font-size:.85em;background:#f6f6f6;padding:.5em;min-height:9em;max-width:600px}\n"
                     "#peak{font-weight:600}#render{font-size:.8em;color:#777}\n</style>\n</head>\n<body>\n"
                     "<h1>Allocation timeline: ");
    html_text(&h, rec->cell);
    ftr_buf_puts(&h, " on ");
    html_text(&h, rec->device);
    ftr_buf_puts(&h, "</h1>\n<p class=\"meta\">Run ");
    html_text(&h, rec->run_id);
    ftr_buf_puts(&h, ". The record: peak RSS (VmHWM) ");
    ftr_buf_printf(&h, "%.1f MiB", rec->peak_mib);
    double sampled = json_number_value(json_object_get(json_object_get(rec->j, "memory"), "sampled_peak_rss_bytes"));
    if (sampled > 0) ftr_buf_printf(&h, ", sampled peak RSS %.3f MiB", sampled / 1048576.0);
    if (isfinite(rec->core_peak_mib)) ftr_buf_printf(&h, ", core peak %.3f MiB", rec->core_peak_mib);
    ftr_buf_printf(&h,
                   ". Drawn from %d of the timeline's %d lines: per time bucket its first, last, highest-core and "
                   "highest-RSS lines, every phase boundary and the peaks. Wheel or buttons zoom, drag pans, "
                   "hover reads the instant; compare puts another cell on an axis normalised to step "
                   "boundaries.</p>\n",
                   nk, tl.n);
    ftr_buf_puts(&h, "<div class=\"controls\"><button id=\"measured\">measured steps</button>"
                     "<button id=\"whole\">whole cell</button><button id=\"zin\">zoom in</button>"
                     "<button id=\"zout\">zoom out</button>"
                     "<label><input type=\"checkbox\" id=\"norm\"> axis in steps</label>"
                     "<label><input type=\"checkbox\" id=\"yzero\"> y from 0</label>"
                     "compare with <select id=\"compare\"><option value=\"-1\">(none)</option></select></div>\n"
                     "<div id=\"legend\"></div>\n<div class=\"wrap\"><canvas id=\"plot\"></canvas></div>\n"
                     "<p id=\"peak\"></p>\n<pre id=\"hover\">hover over the plot</pre>\n<p id=\"render\"></p>\n"
                     "<script type=\"application/json\" id=\"data\">");
    ftr_buf_puts(&h, d.s);
    ftr_buf_puts(&h, "</script>\n<script>\n");
    ftr_buf_puts(&h, page_js);
    ftr_buf_puts(&h, "</script>\n</body>\n</html>\n");
    snprintf(path, sizeof path, "%s/timelines/%s.html", p->out, name);
    int rc = ftr_buf_write(&h, path);
    if (rc != 0) snprintf(err, errlen, "cannot write %.400s", path);
    free(keep);
    ftr_timeline_free(&tl);
    ftr_buf_free(&d);
    ftr_buf_free(&h);
    return rc;
}
