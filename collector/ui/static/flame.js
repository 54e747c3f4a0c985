/* Pyrometer's flame graph components, shared by the collector's page (served as a file)
 * and the single-file HTML exports (inlined by collector/render/html.py), so there is one
 * copy of the drawing code.
 *
 * Why our own renderer rather than d3-flame-graph: it draws the API's JSON tree as it is
 * (plain {name, value, children} and diff {baseline, target, *_share, delta} nodes alike)
 * with a few hundred lines and no dependency, and the diff colour we want is the change of
 * a frame's share of its window (or of its cost per request), which stays grey when
 * traffic merely doubled; d3-flame-graph colours an absolute delta, which turns
 * everything red then.
 *
 * Every piece of text from the data is set with textContent, never as markup: frame
 * names come from the profiled program and may hold anything.
 */
"use strict";
var PyrometerFlame = (function () {
  const ROW = 17;
  const TOP_ROWS = 25;

  const pct = (share) => (100 * share).toFixed(2) + "%";
  const share = (v, of) => pct(of > 0 ? v / of : 0);
  const fmt = (n) => Math.round(n).toLocaleString("en-US");
  const num = (v) => v.toLocaleString("en-US", { maximumSignificantDigits: 4 });
  const signed = (v, text) => (v > 0 ? "+" : "") + text;

  // Parent links, depth and ids in one pass; iterative because stacks can be deep.
  function index(root) {
    const nodes = [];
    const pending = [[root, null, 0]];
    while (pending.length) {
      const [node, parent, depth] = pending.pop();
      node.parent = parent; node.depth = depth; node.id = nodes.length;
      nodes.push(node);
      for (const c of node.children) pending.push([c, node, depth + 1]);
    }
    return nodes;
  }

  function hashColour(name) {
    let h = 0;
    for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
    return "hsl(" + (h % 55) + ", " + (70 + h % 25) + "%, " + (58 + (h >> 8) % 14) + "%)";
  }

  function isDiff(doc) {
    return doc.tree !== undefined && doc.tree.baseline !== undefined;
  }

  /* One line on what a flame graph or diff document shows. */
  function describe(doc) {
    const mode = doc.idle_included ? "wall-clock (idle stacks included)" : "on-CPU stacks only";
    if (!isDiff(doc)) {
      return (doc.duration_ns / 1e9).toFixed(1) + " s window sampled at " + doc.rate_hz +
        " Hz, " + fmt(doc.total) + " samples, " + mode;
    }
    const seconds = (a, b) => ((b - a) / 1e9).toFixed(1) + " s";
    const norm = doc.normalisation;
    return "Target " + seconds(doc.from_ns, doc.to_ns) + ", " + fmt(doc.target_total) +
      " samples; baseline " + seconds(doc.baseline_from_ns, doc.baseline_to_ns) + ", " +
      fmt(doc.baseline_total) + " samples. Values are samples per " +
      (norm.per === "second" ? "second of each window" :
        norm.per + " (baseline " + num(norm.baseline) + ", target " + num(norm.target) + ")") +
      "; " + mode;
  }

  /* The banner lines a document asks for: its notice, and a diff's caveats. */
  function notices(doc) {
    return (doc.notice ? [doc.notice] : []).concat(doc.caveats || []);
  }

  /* A flame graph (root on top) of a plain or a diff tree in `chart`, tooltips in `tip`.
   * Click zooms, search highlights; for a diff, `widthMode` picks which window sets the
   * widths and `colourMode` what the colour shows. */
  class FlameGraph {
    constructor(chart, tip, options) {
      this.chart = chart;
      this.tip = tip;
      this.options = options || {};
      this.doc = null;
      this.nodes = [];
      this.term = "";
      this.widthMode = "target";
      this.colourMode = "share";
      this.maxChange = 0;
      chart.addEventListener("click", (e) => {
        const id = e.target.dataset && e.target.dataset.id;
        if (id !== undefined) this.zoom(this.nodes[+id]);
      });
      chart.addEventListener("mousemove", (e) => this.hover(e));
      chart.addEventListener("mouseleave", () => { tip.style.display = "none"; });
    }

    setDocument(doc) {
      this.doc = doc;
      this.diff = isDiff(doc);
      this.root = doc.tree;
      this.nodes = index(this.root);
      this.zoomed = this.root;
      this.rescale();
      this.draw();
    }

    zoom(node) {
      this.zoomed = node || this.root;
      this.draw();
      if (this.options.onZoom) this.options.onZoom(this.zoomed);
    }

    reset() { this.term = ""; this.zoom(this.root); }

    setWidth(mode) { this.widthMode = mode; this.draw(); }

    setColour(mode) { this.colourMode = mode; this.rescale(); this.draw(); }

    width(node) {
      if (!this.diff) return node.value;
      if (this.widthMode === "baseline") return node.baseline;
      if (this.widthMode === "combined") return node.baseline + node.target;
      return node.target;
    }

    // Change of share, or normalised change as a fraction of the larger window's whole:
    // both on a 0..1 scale, so one colour ramp serves either.
    change(node) {
      if (this.colourMode === "share") return node.target_share - node.baseline_share;
      const whole = Math.max(this.root.baseline, this.root.target);
      return whole > 0 ? node.delta / whole : 0;
    }

    rescale() {
      this.maxChange = 0;
      if (!this.diff) return;
      for (const n of this.nodes) {
        if (n !== this.root) this.maxChange = Math.max(this.maxChange, Math.abs(this.change(n)));
      }
    }

    // Red for growth, blue for shrinkage; the square root keeps small changes visible
    // next to one large one.
    colour(node) {
      if (!this.diff) return hashColour(node.name);
      const d = this.maxChange > 0 ? this.change(node) / this.maxChange : 0;
      if (Math.abs(d) < 1e-9) return "hsl(0, 0%, 90%)";
      const s = Math.sqrt(Math.min(1, Math.abs(d)));
      return "hsl(" + (d > 0 ? 0 : 220) + ", " + Math.round(40 + 50 * s) + "%, " +
        Math.round(90 - 35 * s) + "%)";
    }

    isMatch(node) {
      return this.term !== "" && node.name.toLowerCase().includes(this.term);
    }

    box(node, left, w, cls) {
      const el = document.createElement("div");
      el.className = "frame" + cls + (this.isMatch(node) ? " match" : "");
      el.style.cssText = "left:" + left + "%;width:" + w + "%;top:" + node.depth * ROW +
        "px;background:" + this.colour(node);
      if (this.diff) el.dataset.change = this.change(node) > 0 ? "grew" : this.change(node) < 0 ? "shrank" : "same";
      el.textContent = node.name;
      el.dataset.id = node.id;
      return el;
    }

    message(text) {
      this.chart.style.height = "";
      const el = document.createElement("div");
      el.className = "empty"; el.textContent = text;
      this.chart.appendChild(el);
    }

    draw() {
      const chart = this.chart;
      chart.textContent = "";
      if (!this.doc) return;
      if (this.diff && this.doc.baseline_total === 0 && this.doc.target_total === 0) {
        this.message("No samples in either window."); return;
      }
      if (!this.diff && this.root.value === 0) { this.message("No samples in this window."); return; }
      if (this.width(this.zoomed) <= 0) this.zoomed = this.root;
      if (this.width(this.root) <= 0) {
        this.message("No samples in the " + this.widthMode + " window: choose another width."); return;
      }
      const out = document.createDocumentFragment();
      for (let a = this.zoomed.parent; a; a = a.parent) out.appendChild(this.box(a, 0, 100, " ancestor"));
      const whole = this.width(this.zoomed);
      const minWidth = 100 / Math.max(chart.clientWidth, 1);  // one pixel, in percent
      let deepest = this.zoomed.depth;
      const pending = [[this.zoomed, 0]];
      while (pending.length) {
        const [node, left] = pending.pop();
        const w = 100 * this.width(node) / whole;
        if (w < minWidth) continue;
        out.appendChild(this.box(node, left, w, ""));
        deepest = Math.max(deepest, node.depth);
        let x = left;
        for (const c of node.children) { pending.push([c, x]); x += 100 * this.width(c) / whole; }
      }
      chart.style.height = (deepest + 1) * ROW + "px";
      chart.appendChild(out);
    }

    /* Highlight frames whose name holds `term` (case-insensitive); returns the line
     * saying what share of the samples they cover. */
    search(term) {
      this.term = (term || "").trim().toLowerCase();
      this.draw();
      return this.matchedShare();
    }

    // A match inside a matched node is not counted twice: its samples are already in.
    matchedShare() {
      if (this.term === "" || !this.doc) return "";
      let plain = 0, before = 0, after = 0;
      const pending = [this.root];
      while (pending.length) {
        const node = pending.pop();
        if (node !== this.root && this.isMatch(node)) {
          if (this.diff) { before += node.baseline_samples; after += node.target_samples; }
          else plain += node.value;
          continue;
        }
        for (const c of node.children) pending.push(c);
      }
      if (this.diff) {
        return "Matched: " + share(before, this.doc.baseline_total) + " of baseline, " +
          share(after, this.doc.target_total) + " of target";
      }
      return "Matched: " + fmt(plain) + " of " + fmt(this.root.value) + " samples (" +
        share(plain, this.root.value) + ")";
    }

    tipText(n) {
      if (this.diff) {
        const per = this.doc.normalisation.per === "second" ? "/s" : "/" + this.doc.normalisation.per;
        return n.name +
          "\nbaseline: " + num(n.baseline) + per + ", " + pct(n.baseline_share) + " (" +
          fmt(n.baseline_samples) + " samples)" +
          "\ntarget:   " + num(n.target) + per + ", " + pct(n.target_share) + " (" +
          fmt(n.target_samples) + " samples)" +
          "\nchange:   " + signed(n.delta, num(n.delta)) + per + ", " +
          signed(n.target_share - n.baseline_share,
            (100 * (n.target_share - n.baseline_share)).toFixed(2)) + " points of share";
      }
      const total = this.root.value;
      const own = n.value - n.children.reduce((s, c) => s + c.value, 0);
      return n.name + "\ntotal: " + fmt(n.value) + " samples, " + share(n.value, total) +
        " of all" + (this.zoomed !== this.root ? ", " + share(n.value, this.zoomed.value) + " of zoom" : "") +
        "\nself: " + fmt(own) + " samples, " + share(own, total);
    }

    hover(e) {
      const tip = this.tip;
      const id = e.target.dataset && e.target.dataset.id;
      if (id === undefined) { tip.style.display = "none"; return; }
      tip.textContent = this.tipText(this.nodes[+id]);
      tip.style.display = "block";
      tip.style.left = Math.min(e.clientX + 12, window.innerWidth - tip.offsetWidth - 4) + "px";
      tip.style.top = (e.clientY + 14) + "px";
    }
  }

  /* Per function (a tree node's name): self samples, and total samples counting each
   * sample once even where the function recurses. */
  function topFunctions(root) {
    const self = new Map(), total = new Map(), onPath = new Map();
    const pending = [];
    for (const c of root.children) pending.push([c, false]);
    while (pending.length) {
      const [node, leaving] = pending.pop();
      const seen = onPath.get(node.name) || 0;
      if (leaving) { onPath.set(node.name, seen - 1); continue; }
      if (seen === 0) total.set(node.name, (total.get(node.name) || 0) + node.value);
      onPath.set(node.name, seen + 1);
      const own = node.value - node.children.reduce((s, c) => s + c.value, 0);
      self.set(node.name, (self.get(node.name) || 0) + own);
      pending.push([node, true]);
      for (const c of node.children) pending.push([c, false]);
    }
    return Array.from(total.keys(), (name) => ({ name, self: self.get(name), total: total.get(name) }));
  }

  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function headRow(table, caption, columns) {
    table.textContent = "";
    table.classList.add("top-table");
    const cap = document.createElement("caption");
    cap.textContent = caption;
    table.appendChild(cap);
    const head = document.createElement("thead");
    const tr = document.createElement("tr");
    for (const [label, sortKey] of columns) {
      const th = document.createElement("th");
      th.textContent = label;
      if (sortKey) th.dataset.sort = sortKey;
      tr.appendChild(th);
    }
    head.appendChild(tr);
    table.appendChild(head);
    const body = document.createElement("tbody");
    table.appendChild(body);
    return body;
  }

  /* The functions with the most self (or total) samples; a click on a row calls onPick
   * with its name (the page searches for it). */
  class TopTable {
    constructor(table, onPick) {
      this.table = table;
      this.onPick = onPick;
      this.sortKey = "self";
      this.rows = [];
      this.total = 0;
      table.addEventListener("click", (e) => {
        const th = e.target.closest("th");
        if (th && th.dataset.sort) { this.sortKey = th.dataset.sort; this.draw(); return; }
        const tr = e.target.closest("tbody tr");
        if (tr && this.onPick) this.onPick(tr.dataset.name);
      });
    }

    show(doc) {
      this.rows = isDiff(doc) ? [] : topFunctions(doc.tree);
      this.total = isDiff(doc) ? 0 : doc.tree.value;
      this.draw();
    }

    draw() {
      const key = this.sortKey;
      const body = headRow(this.table, "Top functions by " + key,
        [["Function", null], ["Self", "self"], ["Self %", "self"], ["Total", "total"], ["Total %", "total"]]);
      const rows = this.rows.slice().sort((a, b) => b[key] - a[key] || (a.name < b.name ? -1 : 1));
      for (const r of rows.slice(0, TOP_ROWS)) {
        const tr = document.createElement("tr");
        tr.dataset.name = r.name;
        cell(tr, r.name).title = r.name;
        cell(tr, fmt(r.self)); cell(tr, share(r.self, this.total));
        cell(tr, fmt(r.total)); cell(tr, share(r.total, this.total));
        body.appendChild(tr);
      }
    }
  }

  /* A diff's largest changes of share (the envelope's top_changes). */
  class ChangesTable {
    constructor(table, onPick) {
      this.table = table;
      this.onPick = onPick;
      table.addEventListener("click", (e) => {
        const tr = e.target.closest("tbody tr");
        if (tr && this.onPick) this.onPick(tr.dataset.name);
      });
    }

    show(doc) {
      const per = doc.normalisation.per === "second" ? "/s" : "/" + doc.normalisation.per;
      const body = headRow(this.table, "Largest changes of share",
        [["Function", null], ["Baseline", null], ["Target", null], ["Change", null], ["Value " + per, null]]);
      for (const c of doc.top_changes) {
        const tr = document.createElement("tr");
        tr.dataset.name = c.function;
        const points = 100 * c.share_delta;
        cell(tr, c.function).title = c.function;
        cell(tr, pct(c.baseline_share)); cell(tr, pct(c.target_share));
        cell(tr, signed(points, points.toFixed(2)) + " pt", points > 0 ? "grew" : points < 0 ? "shrank" : "");
        cell(tr, signed(c.delta, num(c.delta)));
        body.appendChild(tr);
      }
    }
  }

  return { FlameGraph, TopTable, ChangesTable, topFunctions, describe, notices, isDiff, pct, fmt, num };
})();
