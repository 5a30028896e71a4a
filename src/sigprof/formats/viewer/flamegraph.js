// sigprof flame graph: builds a call tree (root at the top, an "icicle")
// from the embedded stacks for the selected thread(s), lays it out as
// absolutely positioned boxes, and offers search, click-to-zoom and hover
// details. No dependencies, no network: the whole profile is in #sigprof-data.
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("sigprof-data").textContent);
  var ROW = 20, MIN_PX = 0.6, TOP_ROWS = 40;
  var flame = document.getElementById("flame");
  var tooltip = document.getElementById("tooltip");
  var threadSelect = document.getElementById("thread");
  var searchBox = document.getElementById("search");
  var state = { thread: "all", search: "", zoomPath: [] };
  var root = null, zoom = null, boxes = [];

  function Node(fn, parent) {
    this.fn = fn; this.parent = parent; this.total = 0; this.self = 0;
    this.children = new Map(); this.lines = new Map();
  }

  function selectedThreads() {
    if (state.thread === "all") return D.threads.map(function (_, i) { return i; });
    var found = D.threads.findIndex(function (t) { return t.id === state.thread; });
    return found < 0 ? [] : [found];
  }

  // D.nodes is the call trie flattened: node n has parent D.nodes[2n] (-1 at
  // the root) and frame D.nodes[2n+1]; a sample names its leaf node. Several
  // trie nodes (one per line) map onto one tree node (one per function).
  function buildTree() {
    var top = new Node(-1, null), memo = new Map();
    function treeNode(n) {
      if (n < 0) return top;
      var found = memo.get(n);
      if (found) return found;
      var parent = treeNode(D.nodes[2 * n]), fn = D.frames[D.nodes[2 * n + 1]][0];
      var child = parent.children.get(fn);
      if (!child) { child = new Node(fn, parent); parent.children.set(fn, child); }
      memo.set(n, child);
      return child;
    }
    selectedThreads().forEach(function (ti) {
      D.threads[ti].samples.forEach(function (sample) {
        var w = sample[1];
        top.total += w;
        treeNode(sample[0]).self += w;
        for (var n = sample[0]; n >= 0; n = D.nodes[2 * n]) {
          var node = treeNode(n), line = D.frames[D.nodes[2 * n + 1]][1];
          node.total += w;
          node.lines.set(line, (node.lines.get(line) || 0) + w);
        }
      });
    });
    return top;
  }

  // ---- formatting ----
  function fmtTime(ns) {
    if (ns >= 1e9) return (ns / 1e9).toFixed(ns >= 1e10 ? 1 : 2) + " s";
    if (ns >= 1e6) return (ns / 1e6).toFixed(ns >= 1e7 ? 0 : 1) + " ms";
    return (ns / 1e3).toFixed(0) + " µs";
  }
  function fmtWeight(w) {
    if (D.unit === "nanoseconds") return fmtTime(w);
    var n = Math.round(w), text = n + (n === 1 ? " sample" : " samples");
    return D.intervalNs ? text + " · " + fmtTime(w * D.intervalNs) : text;
  }
  function pct(part, whole) {
    if (!whole) return "0%";
    var p = 100 * part / whole;
    return (p >= 10 || p === 0 ? p.toFixed(1) : p.toFixed(2)) + "%";
  }
  function esc(text) {
    return String(text).replace(/[&<>"]/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c];
    });
  }
  function hash(text) {
    var h = 2166136261;
    for (var i = 0; i < text.length; i++) { h ^= text.charCodeAt(i); h = Math.imul(h, 16777619); }
    return h >>> 0;
  }
  function colour(fn) {
    var f = D.functions[fn];
    if (f[4] === 2) return "#d4d4d8";
    var h = hash(f[0] + f[1]);
    if (f[4] === 1) return "hsl(" + (14 + h % 36) + "," + (70 + h % 20) + "%," + (60 + (h >> 8) % 14) + "%)";
    return "hsl(" + (190 + h % 40) + "," + (35 + h % 20) + "%," + (70 + (h >> 8) % 12) + "%)";
  }
  function name(fn) { return fn < 0 ? "all" : D.functions[fn][0]; }
  function topLines(node) {
    return Array.from(node.lines.entries()).sort(function (a, b) { return b[1] - a[1]; });
  }

  // ---- layout ----
  function render() {
    flame.textContent = "";
    boxes = [];
    if (!root.total) {
      flame.style.height = "auto";
      flame.innerHTML = '<div class="empty">No samples for this selection.</div>';
      renderCrumbs();
      return;
    }
    var width = flame.clientWidth || 1000, depth = 0, maxDepth = 0;
    var chain = [];
    for (var n = zoom; n; n = n.parent) chain.unshift(n);
    chain.slice(0, -1).forEach(function (a) { addBox(a, 0, 1, depth++, "ancestor"); });
    (function layout(node, x, w, d) {
      addBox(node, x, w, d, node === root ? "root" : "");
      if (d > maxDepth) maxDepth = d;
      var kids = Array.from(node.children.values()).sort(function (a, b) { return b.total - a.total; });
      var cx = x;
      kids.forEach(function (k) {
        var kw = w * k.total / node.total;
        if (kw * width >= MIN_PX) layout(k, cx, kw, d + 1);
        cx += kw;
      });
    })(zoom, 0, 1, depth);
    flame.style.height = ((maxDepth + 1) * ROW + 2) + "px";
    renderCrumbs();
    applySearch();
  }

  function addBox(node, x, w, depth, cls) {
    var div = document.createElement("div");
    div.className = "frame" + (cls ? " " + cls : "");
    div.style.left = (x * 100) + "%";
    div.style.width = (w * 100) + "%";
    div.style.top = (depth * ROW) + "px";
    div.dataset.index = String(boxes.length);
    div.setAttribute("role", "treeitem");
    if (node.fn >= 0) {
      var f = D.functions[node.fn];
      div.style.background = colour(node.fn);
      div.dataset.function = f[0];
      div.innerHTML = esc(f[0]) + (f[1] ? '<span class="file">' + esc(f[1]) + "</span>" : "");
    } else {
      div.dataset.function = "all";
      div.textContent = "all · " + fmtWeight(node.total);
    }
    boxes.push(node);
    flame.appendChild(div);
  }

  function pathOf(node) {
    var path = [];
    for (var n = node; n && n.parent; n = n.parent) path.unshift(n);
    return path;
  }

  function renderCrumbs() {
    var crumbs = document.getElementById("crumbs");
    if (zoom === root) { crumbs.textContent = "Click a frame to zoom in; hover for details."; return; }
    crumbs.innerHTML = '<a data-depth="0">all</a>' + pathOf(zoom).map(function (n, i) {
      return ' › <a data-depth="' + (i + 1) + '">' + esc(name(n.fn)) + "</a>";
    }).join("");
  }

  function setZoom(node) {
    zoom = node || root;
    state.zoomPath = pathOf(zoom).map(function (n) { return name(n.fn); });
    saveHash();
    render();
  }

  // ---- search ----
  function matches(fn, needle) {
    var f = D.functions[fn];
    return f[0].toLowerCase().indexOf(needle) >= 0 || f[1].toLowerCase().indexOf(needle) >= 0;
  }
  function applySearch() {
    var needle = state.search.trim().toLowerCase();
    var info = document.getElementById("match");
    flame.classList.toggle("searching", !!needle);
    if (!needle) { info.textContent = ""; return; }
    var divs = flame.querySelectorAll(".frame");
    for (var i = 0; i < divs.length; i++) {
      var node = boxes[i];
      divs[i].classList.toggle("match", node.fn >= 0 && matches(node.fn, needle));
    }
    // the matched share counts each sample once: stop descending at a match
    var matched = 0;
    (function walk(node) {
      if (node.fn >= 0 && matches(node.fn, needle)) { matched += node.total; return; }
      node.children.forEach(walk);
    })(zoom);
    info.textContent = "matched " + pct(matched, zoom.total);
  }

  // ---- hover ----
  function showTooltip(event, node) {
    var whole = root.total, html;
    if (node.fn < 0) {
      html = '<div class="fn">all</div><div>' + esc(fmtWeight(node.total)) + "</div>";
    } else {
      var f = D.functions[node.fn];
      var lines = topLines(node).slice(0, 3).map(function (e) {
        return e[0] ? esc(f[2] || f[1]) + ":" + e[0] + (node.lines.size > 1 ? " (" + pct(e[1], node.total) + ")" : "") : "";
      }).filter(Boolean);
      html = '<div class="fn">' + esc(f[0]) + "</div>" +
        (lines.length ? '<div class="loc">' + lines.join("<br>") + "</div>" : "") +
        (f[3] ? '<div class="mod">module ' + esc(f[3]) + "</div>" : "") +
        "<table><tr><td>Total</td><td>" + esc(fmtWeight(node.total)) + "</td><td>" + pct(node.total, whole) + "</td></tr>" +
        "<tr><td>Self</td><td>" + esc(fmtWeight(node.self)) + "</td><td>" + pct(node.self, whole) + "</td></tr></table>";
    }
    tooltip.innerHTML = html;
    tooltip.hidden = false;
    var x = event.clientX + 14, y = event.clientY + 14;
    var r = tooltip.getBoundingClientRect();
    if (x + r.width > window.innerWidth - 8) x = Math.max(8, event.clientX - r.width - 14);
    if (y + r.height > window.innerHeight - 8) y = Math.max(8, event.clientY - r.height - 14);
    tooltip.style.left = x + "px";
    tooltip.style.top = y + "px";
  }

  // ---- top functions table ----
  function renderTop() {
    var self = new Map(), total = new Map(), whole = 0;
    selectedThreads().forEach(function (ti) {
      D.threads[ti].samples.forEach(function (sample) {
        var n = sample[0], w = sample[1], seen = new Set();
        whole += w;
        if (n < 0) return;
        var leaf = D.frames[D.nodes[2 * n + 1]][0];
        self.set(leaf, (self.get(leaf) || 0) + w);
        for (; n >= 0; n = D.nodes[2 * n]) {
          var fn = D.frames[D.nodes[2 * n + 1]][0];
          if (!seen.has(fn)) { seen.add(fn); total.set(fn, (total.get(fn) || 0) + w); }
        }
      });
    });
    var rows = Array.from(total.keys()).sort(function (a, b) {
      return ((self.get(b) || 0) - (self.get(a) || 0)) || (total.get(b) - total.get(a));
    }).slice(0, TOP_ROWS);
    var max = rows.length ? (self.get(rows[0]) || 0) : 0;
    document.getElementById("top-scope").textContent = "by self time · " + fmtWeight(whole);
    document.querySelector("#top tbody").innerHTML = rows.map(function (fn) {
      var f = D.functions[fn], s = self.get(fn) || 0;
      return '<tr data-function="' + esc(f[0]) + '"><td class="num bar-cell"><i style="width:' +
        (max ? 100 * s / max : 0).toFixed(1) + '%"></i><span>' + pct(s, whole) + '</span></td><td class="num">' +
        pct(total.get(fn), whole) + "</td><td>" + esc(f[0]) + '</td><td class="loc">' + esc(f[1]) + "</td></tr>";
    }).join("");
  }

  // ---- state in the URL hash, so a view can be shared or reopened ----
  function saveHash() {
    var parts = [];
    if (state.thread !== "all") parts.push("thread=" + encodeURIComponent(state.thread));
    if (state.search) parts.push("search=" + encodeURIComponent(state.search));
    if (state.zoomPath.length) parts.push("zoom=" + state.zoomPath.map(encodeURIComponent).join("/"));
    var text = parts.length ? "#" + parts.join("&") : "";
    if (location.hash !== text) history.replaceState(null, "", text || location.pathname + location.search);
  }
  function loadHash() {
    location.hash.replace(/^#/, "").split("&").forEach(function (part) {
      var eq = part.indexOf("="); if (eq < 0) return;
      var key = part.slice(0, eq), value = part.slice(eq + 1);
      if (key === "thread") state.thread = decodeURIComponent(value);
      if (key === "search") state.search = decodeURIComponent(value);
      if (key === "zoom") state.zoomPath = value.split("/").map(decodeURIComponent);
    });
  }
  function findPath(path) {
    var node = root;
    for (var i = 0; i < path.length; i++) {
      var next = null;
      node.children.forEach(function (c) { if (!next && name(c.fn) === path[i]) next = c; });
      if (!next) break;
      node = next;
    }
    return node;
  }

  function selectThread(value) {
    state.thread = value;
    root = buildTree();
    zoom = findPath(state.zoomPath);
    renderTop();
    render();
    saveHash();
  }

  // ---- wiring ----
  function init() {
    loadHash();
    var start = D.range[0], end = D.range[1];
    var total = D.threads.reduce(function (a, t) { return a + t.samples.reduce(function (s, x) { return s + x[1]; }, 0); }, 0);
    document.getElementById("title").textContent = D.name;
    document.getElementById("summary").textContent = [
      end > start ? fmtTime(end - start) : null,
      fmtWeight(total),
      D.threads.length + (D.threads.length === 1 ? " thread" : " threads"),
      D.clock ? D.clock + " clock" : null,
      D.intervalNs ? Math.round(1e9 / D.intervalNs) + " Hz" : null,
      D.stats && D.stats.dropped ? D.stats.dropped + " dropped" : null
    ].filter(Boolean).join(" · ");
    var weights = D.threads.map(function (t) { return t.samples.reduce(function (s, x) { return s + x[1]; }, 0); });
    var order = D.threads.map(function (_, i) { return i; }).sort(function (a, b) { return weights[b] - weights[a]; });
    threadSelect.innerHTML = '<option value="all">All threads (' + D.threads.length + ")</option>" + order.map(function (i) {
      return '<option value="' + esc(D.threads[i].id) + '">' + esc(D.threads[i].name) + " — " + pct(weights[i], total) + "</option>";
    }).join("");
    if (!D.threads.some(function (t) { return t.id === state.thread; })) state.thread = "all";
    threadSelect.value = state.thread;
    searchBox.value = state.search;
    selectThread(state.thread);

    threadSelect.addEventListener("change", function () { state.zoomPath = []; selectThread(threadSelect.value); });
    searchBox.addEventListener("input", function () { state.search = searchBox.value; saveHash(); applySearch(); });
    document.getElementById("reset").addEventListener("click", function () { setZoom(root); });
    flame.addEventListener("click", function (e) {
      var div = e.target.closest(".frame"); if (!div) return;
      var node = boxes[+div.dataset.index];
      setZoom(node === zoom ? node.parent : node);
    });
    flame.addEventListener("mousemove", function (e) {
      var div = e.target.closest(".frame");
      if (!div) { tooltip.hidden = true; return; }
      showTooltip(e, boxes[+div.dataset.index]);
    });
    flame.addEventListener("mouseleave", function () { tooltip.hidden = true; });
    document.getElementById("crumbs").addEventListener("click", function (e) {
      var a = e.target.closest("a"); if (!a) return;
      var depth = +a.dataset.depth, node = zoom;
      while (pathOf(node).length > depth) node = node.parent;
      setZoom(node);
    });
    document.querySelector("#top tbody").addEventListener("click", function (e) {
      var tr = e.target.closest("tr"); if (!tr) return;
      state.search = tr.dataset.function; searchBox.value = state.search; saveHash(); applySearch();
      window.scrollTo({ top: 0, behavior: "smooth" });
    });
    document.addEventListener("keydown", function (e) {
      if (e.key === "Escape") { setZoom(root); state.search = ""; searchBox.value = ""; saveHash(); applySearch(); }
      if (e.key === "/" && document.activeElement !== searchBox) { e.preventDefault(); searchBox.focus(); }
    });
    var pending = 0;
    window.addEventListener("resize", function () { clearTimeout(pending); pending = setTimeout(render, 100); });
    document.body.dataset.ready = "true";
  }
  init();
})();
