// Live chart view for reactive_nb (anywidget ESM, no build step, no library): draws the
// model's series as SVG lines, bars or areas and redraws whenever they change.

const NS = "http://www.w3.org/2000/svg";
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939"];
const MARGIN = { top: 8, right: 12, bottom: 26, left: 52 };

function svg(tag, attrs, parent) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (parent) parent.append(node);
  return node;
}

function niceTicks(lo, hi, count) {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const ticks = [];
  for (let v = Math.floor(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(v);
  return ticks;
}

function formatNumber(v) {
  const a = Math.abs(v);
  if (a >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (a >= 1e4) return `${(v / 1e3).toFixed(0)}k`;
  return Number.isInteger(v) ? String(v) : v.toFixed(2);
}

function formatX(v, kind, span) {
  if (kind === "category") return String(v);
  if (kind === "number") return formatNumber(v);
  const d = new Date(v);
  const iso = d.toISOString();
  if (span > 2 * 86400000) return iso.slice(5, 10);
  return iso.slice(11, 16);
}

function draw(model, root, plot) {
  const series = model.get("series") || [];
  const kind = model.get("kind");
  const xKind = kind === "bar" && model.get("x_kind") !== "category" ? "bar" : model.get("x_kind");
  const width = Math.max(200, root.clientWidth || 600);
  const height = model.get("height");
  plot.replaceChildren();
  plot.setAttribute("width", width);
  plot.setAttribute("height", height);
  plot.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const w = width - MARGIN.left - MARGIN.right;
  const h = height - MARGIN.top - MARGIN.bottom;
  const g = svg("g", { transform: `translate(${MARGIN.left},${MARGIN.top})` }, plot);

  let points = 0;
  let total = 0;
  const ys = [0];
  const xsNum = [];
  const cats = [];
  for (const s of series) {
    for (const [x, y] of s.points) {
      points += 1;
      total += y;
      ys.push(y);
      if (xKind === "category" || xKind === "bar") {
        const label = xKind === "bar" ? formatX(x, model.get("x_kind"), 0) : String(x);
        if (!cats.includes(label)) cats.push(label);
      } else xsNum.push(x);
    }
  }
  root.dataset.points = String(points);
  root.dataset.total = String(total);
  root.dataset.series = series.map((s) => s.name).join(",");
  if (!points) {
    svg("text", { x: w / 2, y: h / 2, "text-anchor": "middle", class: "rnb-chart-empty" }, g)
      .textContent = "no data";
    return;
  }
  const yTicks = niceTicks(Math.min(...ys), Math.max(...ys), 4);
  const y0 = yTicks[0];
  const y1 = yTicks[yTicks.length - 1];
  const sy = (v) => h - ((v - y0) / (y1 - y0 || 1)) * h;
  for (const t of yTicks) {
    svg("line", { x1: 0, x2: w, y1: sy(t), y2: sy(t), class: "rnb-chart-grid" }, g);
    svg("text", { x: -6, y: sy(t) + 4, "text-anchor": "end", class: "rnb-chart-tick" }, g)
      .textContent = formatNumber(t);
  }

  let sx;
  let band = 0;
  const categorical = xKind === "category" || xKind === "bar";
  if (categorical) {
    band = w / cats.length;
    sx = (x) => {
      const label = xKind === "bar" ? formatX(x, model.get("x_kind"), 0) : String(x);
      return cats.indexOf(label) * band + band / 2;
    };
    const every = Math.ceil(cats.length / Math.max(1, Math.floor(w / 70)));
    cats.forEach((c, i) => {
      if (i % every) return;
      svg("text", { x: i * band + band / 2, y: h + 16, "text-anchor": "middle",
        class: "rnb-chart-tick" }, g).textContent = c;
    });
  } else {
    const lo = Math.min(...xsNum);
    const hi = Math.max(...xsNum);
    sx = (x) => (hi > lo ? ((x - lo) / (hi - lo)) * w : w / 2);
    const count = Math.max(2, Math.floor(w / 90));
    for (let i = 0; i <= count; i++) {
      const v = lo + ((hi - lo) * i) / count;
      svg("text", { x: sx(v), y: h + 16, "text-anchor": "middle", class: "rnb-chart-tick" }, g)
        .textContent = formatX(v, xKind, hi - lo);
    }
  }
  svg("line", { x1: 0, x2: w, y1: sy(Math.max(0, y0)), y2: sy(Math.max(0, y0)),
    class: "rnb-chart-axis" }, g);

  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const sorted = s.points;
    if (kind === "bar") {
      const bw = Math.max(1, (band * 0.8) / series.length);
      for (const [x, y] of sorted) {
        const left = sx(x) - band * 0.4 + i * bw;
        const top = Math.min(sy(y), sy(Math.max(0, y0)));
        svg("rect", { x: left, y: top, width: bw, height: Math.abs(sy(y) - sy(Math.max(0, y0))),
          fill: color, class: "rnb-chart-bar" }, g);
      }
      return;
    }
    const path = sorted.map(([x, y], j) => `${j ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`)
      .join("");
    if (kind === "area" && sorted.length) {
      const base = sy(Math.max(0, y0)).toFixed(1);
      const first = sx(sorted[0][0]).toFixed(1);
      const last = sx(sorted[sorted.length - 1][0]).toFixed(1);
      svg("path", { d: `${path}L${last},${base}L${first},${base}Z`, fill: color,
        "fill-opacity": 0.25, stroke: "none" }, g);
    }
    svg("path", { d: path, fill: "none", stroke: color, "stroke-width": 2,
      class: "rnb-chart-line" }, g);
  });
}

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "rnb-chart";
  const head = document.createElement("div");
  head.className = "rnb-chart-head";
  const title = document.createElement("span");
  title.className = "rnb-chart-title";
  const badge = document.createElement("span");
  badge.className = "rnb-badge";
  const legend = document.createElement("span");
  legend.className = "rnb-chart-legend";
  head.append(title, badge, legend);
  const plot = svg("svg", { class: "rnb-chart-plot" });
  root.append(head, plot);
  el.append(root);

  const redraw = () => {
    root.dataset.name = model.get("name");
    title.textContent = model.get("title") || model.get("name");
    const status = model.get("status");
    badge.dataset.status = status;
    badge.textContent = status;
    badge.title = status === "error" ? model.get("error") || "" : model.get("updated_at") || "";
    legend.replaceChildren();
    const series = model.get("series") || [];
    if (series.length > 1) {
      series.forEach((s, i) => {
        const item = document.createElement("span");
        item.className = "rnb-chart-key";
        item.style.setProperty("--rnb-key", COLORS[i % COLORS.length]);
        item.textContent = s.name;
        legend.append(item);
      });
    }
    draw(model, root, plot);
  };

  redraw();
  model.on("change", redraw);
  const resize = new ResizeObserver(() => draw(model, root, plot));
  resize.observe(root);
  return () => {
    resize.disconnect();
    model.off("change", redraw);
  };
}

export default { render };
