// Live table view for reactive_nb (anywidget ESM, no build step).
//
// The model holds the header state and one window of rows; other rows are asked for
// with {type: "page", start, count, seq, sort, search} and arrive as {type: "rows", ...};
// the search box sends {type: "search", query} (debounced) and Python pushes the applied
// `search`, `matched_rows` and a first window; a {type: "heartbeat"} every HEARTBEAT_MS
// keeps the visibility report alive. Each message
// kind is typed on the Python side in messages.py: keep the two in step.
// Only the rows inside the scroll viewport are in the DOM; a spacer of
// total_rows * ROW_H (scaled down past MAX_SCROLL_PX) gives the scrollbar its size.

const ROW_H = 26; // px, one row; mirrored as --rnb-row-h
const MAX_SCROLL_PX = 15000000; // browsers cap element heights (~33M px in Chromium)
const VISIBLE_ROWS = 15; // height of the scroll box, in rows
const OVERSCAN = 20; // rows asked for above and below the viewport
const DEBOUNCE_MS = 40; // page requests while scrolling
const SEARCH_DEBOUNCE_MS = 250; // search messages while typing
const HEARTBEAT_MS = 10000; // keeps the visibility report alive in Python
const CACHE_LIMIT = 5000; // rows kept in the browser before trimming

function div(className, text) {
  const node = document.createElement("div");
  node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function agoText(iso) {
  if (!iso) return "";
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return "";
  const s = Math.max(0, Math.round((Date.now() - then) / 1000));
  if (s < 60) return `updated ${s} s ago`;
  if (s < 3600) return `updated ${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `updated ${Math.floor(s / 3600)} h ago`;
  return `updated ${new Date(then).toISOString().slice(0, 16).replace("T", " ")}`;
}

function sameSort(a, b) {
  return JSON.stringify(a || []) === JSON.stringify(b || []);
}

function render({ model, el }) {
  const root = div("rnb-table");
  root.style.setProperty("--rnb-row-h", `${ROW_H}px`);
  root.dataset.rowHeight = String(ROW_H);

  const head = div("rnb-head");
  const title = div("rnb-name");
  const count = div("rnb-count");
  const badge = div("rnb-badge");
  const ago = div("rnb-ago");
  const search = document.createElement("input");
  search.type = "search";
  search.className = "rnb-search";
  search.placeholder = "search";
  search.setAttribute("aria-label", "search every row");
  search.value = model.get("search") || "";
  head.append(title, count, search, badge, ago);

  const scroll = div("rnb-scroll");
  const colsRow = div("rnb-cols");
  const spacer = div("rnb-spacer");
  const layer = div("rnb-rows");
  const empty = div("rnb-empty");
  spacer.append(layer);
  scroll.append(colsRow, spacer);
  root.append(head, scroll, empty);
  el.append(root);

  const cache = new Map(); // view position -> row (array of cells)
  const changedAt = new Map(); // view position -> performance.now() of the change
  let cacheVersion = null;
  let cacheSort = null;
  let cacheSearch = null;
  let searchDebounce = null;
  let seq = 0;
  let inflight = null; // {start, end, version, sort, at}
  let debounce = null;
  let frame = null;
  let headerDrawn = null;
  const measure = document.createElement("canvas").getContext("2d");

  // ---- data -------------------------------------------------------------------------

  function resetIfStale() {
    const version = model.get("version");
    const sort = model.get("sort");
    const query = model.get("search") || "";
    if (version !== cacheVersion || !sameSort(sort, cacheSort) || query !== cacheSearch) {
      if (cacheSearch !== null && query !== cacheSearch) scroll.scrollTop = 0; // new matches
      cache.clear();
      changedAt.clear();
      cacheVersion = version;
      cacheSort = sort;
      cacheSearch = query;
      inflight = null;
    }
  }

  function absorb(msg) {
    if (!msg || !Array.isArray(msg.rows)) return false;
    resetIfStale();
    if (msg.version !== cacheVersion || !sameSort(msg.sort, cacheSort)) return false;
    if ((msg.search || "") !== cacheSearch) return false;
    msg.rows.forEach((row, i) => cache.set(msg.start + i, row));
    if (msg.changed && msg.changed.length) {
      const t0 = performance.now() - (msg.changed_age_ms || 0);
      for (const i of msg.changed) {
        if (!changedAt.has(msg.start + i)) changedAt.set(msg.start + i, t0);
      }
    }
    return true;
  }

  function shownRows() {
    return model.get("search") ? model.get("matched_rows") : model.get("total_rows");
  }

  function request(first, n, now) {
    const total = shownRows();
    const start = Math.max(0, first - OVERSCAN);
    const end = Math.min(total, Math.max(first + n + OVERSCAN, start + model.get("page_size")));
    if (end <= start) return;
    const sort = model.get("sort");
    if (
      inflight &&
      inflight.version === cacheVersion &&
      sameSort(inflight.sort, sort) &&
      inflight.start <= first &&
      inflight.end >= Math.min(total, first + n) &&
      performance.now() - inflight.at < 2000
    ) {
      return; // already asked for these rows
    }
    clearTimeout(debounce);
    const send = () => {
      inflight = { start, end, version: cacheVersion, sort, at: performance.now() };
      model.send({ type: "page", start, count: end - start, seq: ++seq, sort, search: cacheSearch });
    };
    if (now) send();
    else debounce = setTimeout(send, DEBOUNCE_MS);
  }

  function trimCache(first, n) {
    if (cache.size <= CACHE_LIMIT) return;
    for (const pos of cache.keys()) {
      if (pos < first - 2 * OVERSCAN || pos > first + n + 2 * OVERSCAN) cache.delete(pos);
    }
  }

  // ---- drawing ----------------------------------------------------------------------

  function drawHeader() {
    const name = model.get("name");
    const status = model.get("status");
    const error = model.get("error");
    const updated = model.get("updated_at");
    root.dataset.name = name;
    title.textContent = name;
    const total = model.get("total_rows");
    count.textContent = model.get("search")
      ? `${model.get("matched_rows").toLocaleString("en-US")} of ${total.toLocaleString("en-US")}`
      : `${total.toLocaleString("en-US")} rows`;
    if (document.activeElement !== search && searchDebounce === null) {
      search.value = model.get("search") || ""; // another view, or a restored state
    }
    root.dataset.status = status;
    badge.dataset.status = status;
    badge.textContent = status;
    const lastGood = `last good data: ${updated || "none yet"}`;
    badge.title = status === "error" && error ? `${error}\n${lastGood}` : lastGood;
    ago.textContent = agoText(updated);
  }

  function drawColumns() {
    const columns = model.get("columns") || [];
    const key = JSON.stringify(columns);
    const sort = model.get("sort") || [];
    const headerKey = key + JSON.stringify(sort) + model.get("total_rows");
    if (headerKey === headerDrawn) return;
    headerDrawn = headerKey;
    // Column widths from the widest sampled text Python sends (stable while scrolling).
    const family = getComputedStyle(root).fontFamily || "sans-serif";
    const width = (text, weight) => {
      measure.font = `${weight} 12px ${family}`;
      return measure.measureText(text).width;
    };
    const widths = columns.map((c) =>
      Math.min(320, Math.max(40, Math.max(width(c.widest || "", 400), width(c.name, 600) + 12) + 18)),
    );
    const gutter = width(String(model.get("total_rows")), 400) + 18;
    const tracks = widths.map((w) => `${Math.ceil(w)}px`);
    root.style.setProperty("--rnb-grid", [`${Math.ceil(Math.max(32, gutter))}px`, ...tracks].join(" "));
    colsRow.replaceChildren(div("rnb-gutter", "#"));
    columns.forEach((c) => {
      const th = div(`rnb-col rnb-k-${c.kind}`, c.name);
      th.title = `${c.name} (click to sort)`;
      if (sort[0] === c.name) th.dataset.sort = sort[1] ? "asc" : "desc";
      th.addEventListener("click", () => onSort(c.name));
      colsRow.append(th);
    });
  }

  function geometry() {
    const total = shownRows();
    const headH = colsRow.offsetHeight;
    const viewH = Math.max(ROW_H, scroll.clientHeight - headH);
    const fullH = total * ROW_H;
    const spacerH = Math.min(fullH, MAX_SCROLL_PX);
    const ratio = spacerH > viewH ? (fullH - viewH) / (spacerH - viewH) : 1;
    const virtualTop = scroll.scrollTop * ratio;
    const first = Math.max(0, Math.min(Math.floor(virtualTop / ROW_H), total - 1));
    const n = Math.min(total - first, Math.ceil(viewH / ROW_H) + 1);
    const layerTop = scroll.scrollTop + (first * ROW_H - virtualTop);
    return { total, headH, spacerH, first, n, layerTop };
  }

  function drawRows() {
    resetIfStale();
    const columns = model.get("columns") || [];
    scroll.hidden = columns.length === 0;
    // Size the box first: geometry() reads its height to know how many rows fit.
    const height = model.get("height");
    scroll.style.boxSizing = height ? "border-box" : ""; // height: the box's outer height
    if (height) {
      scroll.style.height = `${height}px`;
    } else {
      const rowsShown = Math.max(1, Math.min(shownRows(), VISIBLE_ROWS));
      const chrome = scroll.offsetHeight - scroll.clientHeight;
      scroll.style.height = `${colsRow.offsetHeight + rowsShown * ROW_H + chrome}px`;
    }
    const g = geometry();
    spacer.style.height = `${g.spacerH}px`;
    layer.style.transform = `translateY(${Math.max(0, g.layerTop)}px)`;
    const lifetime = model.get("highlight_ms");
    const now = performance.now();
    const nodes = [];
    let missing = false;
    for (let pos = g.first; pos < g.first + g.n; pos++) {
      const row = cache.get(pos);
      const tr = div("rnb-row");
      tr.dataset.pos = String(pos);
      tr.append(div("rnb-gutter", String(pos + 1)));
      if (!row) {
        missing = true;
        tr.classList.add("rnb-pending");
        columns.forEach(() => tr.append(div("rnb-cell", "…")));
      } else {
        row.forEach((v, j) => tr.append(cellNode(v, columns[j] ? columns[j].kind : "other")));
        const t0 = changedAt.get(pos);
        if (t0 !== undefined && now - t0 < lifetime) {
          tr.classList.add("rnb-changed");
          tr.style.animationDelay = `${-(now - t0)}ms`;
        }
      }
      nodes.push(tr);
    }
    layer.replaceChildren(...nodes);
    const status = model.get("status");
    empty.textContent =
      g.total > 0
        ? ""
        : status === "loading"
          ? "loading…"
          : status === "error"
            ? "no data"
            : model.get("search")
              ? "no matching rows"
              : "no rows";
    empty.hidden = g.total > 0;
    if (missing) request(g.first, g.n, false);
    trimCache(g.first, g.n);
  }

  function cellNode(value, kind) {
    const node = div(`rnb-cell rnb-k-${kind}`);
    if (value === null || value === undefined) {
      node.classList.add("rnb-null");
      node.textContent = "null";
      return node;
    }
    if (typeof value === "number" && !Number.isInteger(value)) {
      node.textContent = String(Number(value.toPrecision(8))); // full value on hover
      node.title = String(value);
      return node;
    }
    const text = String(value);
    node.textContent = text;
    if (typeof value === "string") node.title = text;
    return node;
  }

  function draw() {
    frame = null;
    drawHeader();
    drawColumns();
    drawRows();
  }

  function schedule() {
    if (frame === null) frame = requestAnimationFrame(draw);
  }

  // ---- events -----------------------------------------------------------------------

  function onSort(name) {
    const sort = model.get("sort") || [];
    const next = sort[0] !== name ? [name, true] : sort[1] ? [name, false] : [];
    model.set("sort", next);
    model.save_changes();
    resetIfStale();
    const g = geometry();
    request(g.first, g.n, true);
    schedule();
  }

  function onSearchInput() {
    clearTimeout(searchDebounce);
    searchDebounce = setTimeout(() => {
      searchDebounce = null;
      const query = search.value.trim();
      if (query !== (model.get("search") || "")) model.send({ type: "search", query });
    }, SEARCH_DEBOUNCE_MS);
  }
  search.addEventListener("input", onSearchInput);

  function onCustom(msg) {
    if (msg && msg.type === "rows" && absorb(msg)) schedule();
  }

  function onState() {
    absorb(model.get("window"));
    schedule();
  }

  const onScroll = () => schedule();
  scroll.addEventListener("scroll", onScroll, { passive: true });

  const stateEvents = [
    "change:version",
    "change:window",
    "change:sort",
    "change:status",
    "change:error",
    "change:updated_at",
    "change:runs",
    "change:total_rows",
    "change:matched_rows",
    "change:search",
    "change:height",
    "change:columns",
    "change:name",
  ];
  for (const e of stateEvents) model.on(e, onState);
  model.on("msg:custom", onCustom);

  // Visibility: on screen (IntersectionObserver) and the tab shown (visibilitychange).
  let inView = false;
  function reportVisible() {
    const visible = inView && !document.hidden;
    if (model.get("visible") !== visible) {
      model.set("visible", visible);
      model.save_changes();
    }
  }
  const observer = new IntersectionObserver((entries) => {
    inView = entries[entries.length - 1].isIntersecting;
    reportVisible();
  });
  observer.observe(root);
  document.addEventListener("visibilitychange", reportVisible);
  // The first draw may run before the view is attached (Voila renders a widget whose state
  // is already fresh, so no later change redraws it): redraw when the box gets its size.
  const resize = new ResizeObserver(() => {
    headerDrawn = null; // column widths too: text measured while detached uses a default font
    schedule();
  });
  resize.observe(root);
  const heartbeat = setInterval(() => model.send({ type: "heartbeat" }), HEARTBEAT_MS);
  const ticker = setInterval(() => {
    ago.textContent = agoText(model.get("updated_at"));
  }, 1000);

  absorb(model.get("window"));
  draw();

  return () => {
    clearInterval(heartbeat);
    clearInterval(ticker);
    clearTimeout(debounce);
    clearTimeout(searchDebounce);
    search.removeEventListener("input", onSearchInput);
    if (frame !== null) cancelAnimationFrame(frame);
    observer.disconnect();
    resize.disconnect();
    document.removeEventListener("visibilitychange", reportVisible);
    scroll.removeEventListener("scroll", onScroll);
    for (const e of stateEvents) model.off(e, onState);
    model.off("msg:custom", onCustom);
  };
}

export default { render };
