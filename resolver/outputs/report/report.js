/* resolver run report: draws every element with data-chart="NAME" from the JSON in #report-data
   as inline SVG (no library, no network). Each drawn shape has class "mark"; each chart element
   gets data-marks (how many) or data-error; <html> gets data-charts-drawn / data-charts-failed. */
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var COLORS = ["#3b6fb6", "#d9534f", "#f0ad4e", "#5cb85c", "#8e5ea2", "#17a2b8", "#6c757d"];
  var W = 760;

  function el(tag, attrs, parent) {
    var e = document.createElementNS(NS, tag);
    for (var k in attrs) { if (Object.prototype.hasOwnProperty.call(attrs, k)) { e.setAttribute(k, attrs[k]); } }
    if (parent) { parent.appendChild(e); }
    return e;
  }
  function text(parent, x, y, s, attrs) {
    var a = attrs || {};
    a.x = x; a.y = y;
    var t = el("text", a, parent);
    t.textContent = s;
    return t;
  }
  function mark(e, title) {
    e.setAttribute("class", "mark");
    if (title) { el("title", {}, e).textContent = title; }
    return e;
  }
  function svg(host, w, h) {
    var s = el("svg", { viewBox: "0 0 " + w + " " + h, width: w, height: h, role: "img" });
    host.appendChild(s);
    return s;
  }
  function fmt(v) {
    if (v === null || v === undefined || isNaN(v)) { return "–"; }
    if (Math.abs(v) >= 1000) { return Math.round(v).toLocaleString("en"); }
    if (Math.abs(v) >= 10) { return (Math.round(v * 10) / 10).toString(); }
    return (Math.round(v * 1000) / 1000).toString();
  }
  function clip(s, n) { s = String(s); return s.length > n ? s.slice(0, n - 1) + "…" : s; }
  function legend(s, series, x, y) {
    series.forEach(function (ser, j) {
      el("rect", { x: x + j * 130, y: y - 9, width: 10, height: 10, fill: ser.color || COLORS[j % COLORS.length] }, s);
      text(s, x + j * 130 + 14, y, clip(ser.name, 18), { "font-size": 11 });
    });
  }
  // Axis ticks up to hi: 0 and round steps on a linear axis; 0, 1, 10, 100... on a log axis
  // (the bars' log scale is log10(1 + v), so 0 sits on the baseline).
  function ticks(hi, log) {
    var out = [0];
    if (log) {
      for (var p = 1; p <= hi; p *= 10) { out.push(p); }
      return out;
    }
    var raw = hi / 4, mag = Math.pow(10, Math.floor(Math.log10(raw))), step = mag;
    [1, 2, 2.5, 5, 10].some(function (m) { step = m * mag; return step >= raw; });
    for (var t = step; t <= hi * 1.0001; t += step) { out.push(t); }
    return out;
  }
  function yAxis(s, left, top, plotW, plotH, hi, scale, log) {
    ticks(hi, log).forEach(function (t) {
      var y = top + plotH - scale(t) * plotH;
      if (t > 0) { el("line", { x1: left, x2: left + plotW, y1: y, y2: y, stroke: "#eee" }, s); }
      text(s, left - 6, y + 3, fmt(t), { "text-anchor": "end", "font-size": 10 });
    });
    if (log) { text(s, 4, top - 2, "log scale", { "font-size": 9, fill: "#777" }); }
  }
  function finite(values) { return values.filter(function (v) { return v !== null && !isNaN(v); }); }

  // Horizontal bars, one row per label; series grouped (or stacked); signed values diverge from 0.
  function hbar(host, spec) {
    var labels = spec.labels, series = spec.series, stacked = !!spec.stacked, k = series.length;
    var lw = spec.labelWidth || 220, rowH = stacked || k === 1 ? 18 : 6 + 9 * k;
    var top = k > 1 ? 26 : 8, plotW = W - lw - 70;
    var lo = 0, hi = 0;
    labels.forEach(function (_, i) {
      if (stacked) {
        hi = Math.max(hi, series.reduce(function (a, s) { return a + Math.max(0, s.values[i] || 0); }, 0));
      } else {
        series.forEach(function (s) { var v = s.values[i] || 0; hi = Math.max(hi, v); lo = Math.min(lo, v); });
      }
    });
    if (hi - lo <= 0) { hi = 1; }
    var s = svg(host, W, top + labels.length * rowH + 8);
    if (k > 1) { legend(s, series, lw, 14); }
    var x = function (v) { return lw + (v - lo) / (hi - lo) * plotW; };
    if (lo < 0) { el("line", { x1: x(0), x2: x(0), y1: top, y2: top + labels.length * rowH, stroke: "#999" }, s); }
    labels.forEach(function (label, i) {
      var y = top + i * rowH;
      text(s, lw - 6, y + rowH / 2 + 4, clip(label, Math.floor(lw / 7)), { "text-anchor": "end", "font-size": 11 });
      var x0 = x(0), end = x0;
      series.forEach(function (ser, j) {
        var v = ser.values[i] || 0, color = ser.color || (spec.signColors ? (v < 0 ? COLORS[1] : COLORS[3]) : COLORS[j % COLORS.length]);
        var r;
        if (stacked) {
          var w = Math.max(0, x(v) - x(0));
          r = el("rect", { x: x0, y: y + 2, width: w, height: rowH - 4, fill: color }, s);
          x0 += w; end = x0;
        } else {
          var h = (rowH - 4) / k, a = Math.min(x(0), x(v));
          r = el("rect", { x: a, y: y + 2 + j * h, width: Math.max(Math.abs(x(v) - x(0)), 0.5), height: Math.max(h - 1, 1), fill: color }, s);
          end = Math.max(end, x(Math.max(v, 0)));
        }
        mark(r, label + " — " + ser.name + ": " + fmt(v));
      });
      if (k === 1 || stacked) {
        var total = stacked ? series.reduce(function (a, ser) { return a + (ser.values[i] || 0); }, 0) : series[0].values[i];
        text(s, end + 4, y + rowH / 2 + 4, fmt(total) + (spec.unit || ""), { "font-size": 10, fill: "#555" });
      }
    });
  }

  // Vertical bars over categories (or histogram bins), optional log scale and vertical markers.
  function vbar(host, spec) {
    var labels = spec.labels, series = spec.series, k = series.length, H = 240, left = 56, bottom = 40, top = k > 1 ? 26 : 12;
    var plotW = W - left - 16, plotH = H - top - bottom, n = labels.length;
    var hi = 0;
    labels.forEach(function (_, i) {
      hi = Math.max(hi, spec.stacked ? series.reduce(function (a, ser) { return a + (ser.values[i] || 0); }, 0)
        : Math.max.apply(null, series.map(function (ser) { return ser.values[i] || 0; })));
    });
    if (hi <= 0) { hi = 1; }
    var scale = spec.log ? function (v) { return v <= 0 ? 0 : Math.log10(1 + v) / Math.log10(1 + hi); } : function (v) { return v / hi; };
    var s = svg(host, W, H);
    if (k > 1) { legend(s, series, left, 14); }
    yAxis(s, left, top, plotW, plotH, hi, scale, spec.log);
    el("line", { x1: left, x2: left + plotW, y1: top + plotH, y2: top + plotH, stroke: "#999" }, s);
    var bw = Math.min(plotW / Math.max(n, 1), 90), every = Math.max(1, Math.ceil(n / 24));
    labels.forEach(function (label, i) {
      var x0 = left + i * bw, base = top + plotH;
      series.forEach(function (ser, j) {
        var v = ser.values[i] || 0, h = scale(v) * plotH, color = ser.color || COLORS[j % COLORS.length];
        var r;
        if (spec.stacked) {
          r = el("rect", { x: x0 + 1, y: base - h, width: Math.max(bw - 2, 1), height: h, fill: color }, s);
          base -= h;
        } else {
          var w = Math.max((bw - 2) / k, 1);
          r = el("rect", { x: x0 + 1 + j * w, y: base - h, width: w, height: h, fill: color }, s);
        }
        if (v > 0 || !spec.stacked) { mark(r, label + " — " + ser.name + ": " + fmt(v)); }
      });
      if (i % every === 0) {
        text(s, x0 + bw / 2, top + plotH + 14, clip(label, 10), { "text-anchor": "middle", "font-size": 10 });
      }
    });
    if (spec.xLabel) { text(s, left + plotW / 2, H - 6, spec.xLabel, { "text-anchor": "middle", "font-size": 11, fill: "#555" }); }
    (spec.markers || []).forEach(function (m, j) {
      var x = left + m.at * bw;
      el("line", { x1: x, x2: x, y1: top, y2: top + plotH, stroke: m.color || "#d9534f", "stroke-dasharray": "4 3" }, s);
      text(s, x + 3, top + 10 + 12 * j, m.label, { "font-size": 10, fill: m.color || "#d9534f" });
    });
  }

  // Lines over x (numbers or run labels); null values leave gaps; every point is a mark.
  function line(host, spec) {
    var xs = spec.x, series = spec.series, H = 220, left = 56, bottom = 36, top = 26;
    var plotW = W - left - 20, plotH = H - top - bottom, n = xs.length;
    var all = [];
    series.forEach(function (ser) { all = all.concat(finite(ser.values)); });
    var hi = spec.yMax !== undefined ? spec.yMax : Math.max.apply(null, all.concat([0]));
    if (hi <= 0) { hi = 1; }
    var numeric = typeof xs[0] === "number";
    var xmin = numeric ? Math.min.apply(null, xs) : 0, xmax = numeric ? Math.max.apply(null, xs) : n - 1;
    var px = function (i) { var v = numeric ? xs[i] : i; return left + (xmax > xmin ? (v - xmin) / (xmax - xmin) : 0.5) * plotW; };
    var py = function (v) { return top + plotH - v / hi * plotH; };
    var s = svg(host, W, H);
    legend(s, series, left, 14);
    yAxis(s, left, top, plotW, plotH, hi, function (v) { return v / hi; }, false);
    el("line", { x1: left, x2: left + plotW, y1: top + plotH, y2: top + plotH, stroke: "#999" }, s);
    el("line", { x1: left, x2: left, y1: top, y2: top + plotH, stroke: "#999" }, s);
    var every = Math.max(1, Math.ceil(n / 12));
    xs.forEach(function (x, i) {
      if (i % every === 0 || i === n - 1) { text(s, px(i), top + plotH + 14, clip(x, 12), { "text-anchor": "middle", "font-size": 10 }); }
    });
    if (spec.xLabel) { text(s, left + plotW / 2, H - 4, spec.xLabel, { "text-anchor": "middle", "font-size": 11, fill: "#555" }); }
    series.forEach(function (ser, j) {
      var color = ser.color || COLORS[j % COLORS.length], d = "", pen = false;
      ser.values.forEach(function (v, i) {
        if (v === null || isNaN(v)) { pen = false; return; }
        d += (pen ? "L" : "M") + px(i).toFixed(1) + " " + py(v).toFixed(1);
        pen = true;
      });
      if (d) { mark(el("path", { d: d, fill: "none", stroke: color, "stroke-width": 2 }, s), ser.name); }
      ser.values.forEach(function (v, i) {
        if (v === null || isNaN(v)) { return; }
        mark(el("circle", { cx: px(i), cy: py(v), r: 3, fill: color }, s), ser.name + " at " + xs[i] + ": " + fmt(v));
      });
    });
  }

  // A match-weight waterfall: prior, then each comparison's weight from the running total, then the sum.
  function waterfall(host, spec) {
    var steps = spec.steps, lw = 230, rowH = 18, plotW = W - lw - 170, H = 8 + (steps.length + 1) * rowH + 8;
    var run = 0, lo = 0, hi = 0;
    steps.forEach(function (st) { run += st.value; lo = Math.min(lo, run, run - st.value); hi = Math.max(hi, run, run - st.value); });
    lo = Math.min(lo, spec.total); hi = Math.max(hi, spec.total);
    if (hi - lo <= 0) { hi = lo + 1; }
    var x = function (v) { return lw + (v - lo) / (hi - lo) * plotW; };
    var s = svg(host, W, H);
    el("line", { x1: x(0), x2: x(0), y1: 4, y2: H - 4, stroke: "#999" }, s);
    run = 0;
    steps.forEach(function (st, i) {
      var y = 8 + i * rowH, a = x(run), b = x(run + st.value);
      text(s, lw - 6, y + 12, clip(st.label, 32), { "text-anchor": "end", "font-size": 11 });
      mark(el("rect", { x: Math.min(a, b), y: y + 2, width: Math.max(Math.abs(b - a), 1), height: rowH - 4,
        fill: st.value < 0 ? COLORS[1] : COLORS[3] }, s), st.label + ": " + fmt(st.value) + " bits");
      text(s, Math.max(a, b) + 4, y + 12, (st.value > 0 ? "+" : "") + fmt(st.value), { "font-size": 10, fill: "#555" });
      run += st.value;
    });
    var y = 8 + steps.length * rowH;
    text(s, lw - 6, y + 12, "match weight", { "text-anchor": "end", "font-size": 11, "font-weight": "bold" });
    mark(el("rect", { x: Math.min(x(0), x(spec.total)), y: y + 2, width: Math.max(Math.abs(x(spec.total) - x(0)), 1),
      height: rowH - 4, fill: COLORS[0] }, s), "match weight: " + fmt(spec.total));
    text(s, Math.max(x(0), x(spec.total)) + 4, y + 12, fmt(spec.total) + " bits (p = " + fmt(spec.probability) + ")",
      { "font-size": 10, fill: "#555" });
  }

  // m/u weights per comparison level, under one blocking rule (a select switches rule).
  function weights(host, spec) {
    var select = document.createElement("select");
    spec.rules.forEach(function (r, i) { var o = document.createElement("option"); o.value = i; o.textContent = r; select.appendChild(o); });
    var label = document.createElement("label");
    label.textContent = "blocking rule: ";
    label.appendChild(select);
    host.appendChild(label);
    var box = document.createElement("div");
    host.appendChild(box);
    function draw() {
      box.textContent = "";
      var r = Number(select.value);
      hbar(box, { labels: spec.labels, series: [{ name: "weight (bits)", values: spec.weights.map(function (w) { return w[r]; }) }],
        signColors: true, unit: " bits", labelWidth: 240 });
    }
    select.addEventListener("change", draw);
    draw();
  }

  var DRAW = { hbar: hbar, vbar: vbar, line: line, waterfall: waterfall, weights: weights };
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var drawn = 0, failed = 0;
  Array.prototype.forEach.call(document.querySelectorAll("[data-chart]"), function (host) {
    var name = host.getAttribute("data-chart");
    try {
      var spec = data.charts[name];
      if (!spec) { throw new Error("no data for chart " + name); }
      if (!DRAW[spec.type]) { throw new Error("unknown chart type " + spec.type); }
      DRAW[spec.type](host, spec);
      var marks = host.querySelectorAll(".mark").length;
      host.setAttribute("data-marks", marks);
      if (!marks) { throw new Error("chart " + name + " drew no marks"); }
      drawn += 1;
    } catch (err) {
      failed += 1;
      host.setAttribute("data-error", String(err));
      console.error("chart " + name + ": " + err);
    }
  });
  document.documentElement.setAttribute("data-charts-drawn", drawn);
  document.documentElement.setAttribute("data-charts-failed", failed);
}());
