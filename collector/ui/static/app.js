/* The collector's page: pick a service and range, read the timeline, the spikes and
 * their causes, and the flame graph or diff of a window, for "p99 jumped at 10:42, why?".
 *
 * It calls only the collector's own API (relative URLs: it works behind a path prefix
 * too), with the read token of this tab when the collector asked for one. The whole
 * view lives in the URL's query string, so reloading or sharing it shows the same thing.
 * Text from the data is set with textContent only.
 */
"use strict";
(function () {
  const F = PyrometerFlame;
  const $ = (id) => document.getElementById(id);
  const PRESETS = ["15m", "1h", "6h", "24h", "7d"];
  const LABELS = ["instance", "version", "route", "thread"];
  const FLAME_LABELS = ["instance", "version", "thread"];  // the flame graph has no route
  const SERIES_LABELS = ["instance", "version"];
  const TOKEN_KEY = "pyrometer.read-token";
  const UNITS = { ms: 1, s: 1e3, m: 6e4, h: 3.6e6, d: 8.64e7, w: 6.048e8 };
  const STEPS_S = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
  const MAX_POINTS = 300;  // about one per 4 px of a wide panel: more only costs transfer
  const BLANK_AXIS = { side: 1, size: 48, grid: { show: false }, ticks: { show: false }, values: (u, splits) => splits.map(() => "") };
  const COLOURS = ["#1565c0", "#ef6c00", "#c62828", "#2e7d32", "#6a1b9a", "#00838f", "#5d4037"];
  const REASON_COLOURS = ["#d32f2f", "#f57c00", "#7b1fa2", "#0288d1", "#388e3c", "#5d4037", "#c2185b", "#455a64"];

  const state = readState();
  let range = [0, 0];  // the resolved range, ms
  let spikes = [];
  let events = [];
  let charts = [];
  let loadToken = 0;  // a newer load makes an older one's answers stale
  let shownBaseline = null;  // the diff's baseline as the API chose it, when the URL names none
  const graph = new F.FlameGraph($("chart"), $("tip"));
  const topTable = new F.TopTable($("top"), (name) => setSearch(name));
  const changesTable = new F.ChangesTable($("top"), (name) => setSearch(name));

  // ---- state in the URL ------------------------------------------------------------

  function pair(text) {
    const parts = (text || "").split(",").map(Number);
    return parts.length === 2 && parts.every(Number.isFinite) && parts[0] < parts[1] ? parts : null;
  }

  function readState() {
    const q = new URLSearchParams(location.search);
    const s = { service: q.get("service") || "", from: q.get("from") || "now-1h", to: q.get("to") || "now",
      sel: pair(q.get("sel")), base: pair(q.get("base")), view: q.get("view") === "diff" ? "diff" : "flame",
      q: q.get("q") || "", colour: q.get("colour") === "value" ? "value" : "share",
      per: q.get("per") === "second" ? "second" : "request" };
    for (const name of LABELS) s[name] = q.get(name) || "";
    return s;
  }

  function writeState(push) {
    const q = new URLSearchParams();
    const put = (k, v) => { if (v) q.set(k, v); };
    put("service", state.service);
    for (const name of LABELS) put(name, state[name]);
    put("from", state.from); put("to", state.to);
    if (state.sel) q.set("sel", state.sel.map(Math.round).join(","));
    if (state.base) q.set("base", state.base.map(Math.round).join(","));
    if (state.view === "diff") q.set("view", "diff");
    if (state.colour !== "share") q.set("colour", state.colour);
    if (state.per !== "request") q.set("per", state.per);
    put("q", state.q);
    const url = "?" + q.toString();
    if (url !== location.search) history[push ? "pushState" : "replaceState"](null, "", url);
  }

  // ---- times -------------------------------------------------------------------------

  /* Like the API: RFC 3339, unix seconds, or now[-+]DURATION; ms since the epoch. */
  function parseTime(text, now) {
    const t = (text || "").trim();
    const rel = /^now(?:([-+])((?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+))?$/.exec(t);
    if (rel) {
      if (!rel[1]) return now;
      let offset = 0;
      for (const [, n, unit] of rel[2].matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/g)) offset += n * UNITS[unit];
      return rel[1] === "-" ? now - offset : now + offset;
    }
    if (/^\d+(\.\d+)?$/.test(t)) return 1000 * Number(t);
    const parsed = Date.parse(t);
    if (Number.isNaN(parsed)) throw new Error("cannot read the time " + JSON.stringify(t) +
      ": use RFC 3339 (2026-11-28T10:42:00Z), unix seconds, or now-15m");
    return parsed;
  }

  const iso = (ms) => new Date(ms).toISOString();
  const clock = (ms) => iso(ms).slice(0, 19).replace("T", " ") + "Z";
  function duration(ms) {
    const s = Math.round(ms / 1000);
    if (s < 120) return s + " s";
    if (s < 7200) return Math.floor(s / 60) + " min" + (s % 60 ? " " + (s % 60) + " s" : "");
    return (s / 3600).toFixed(1) + " h";
  }

  function stepFor(spanMs) {
    for (const s of STEPS_S) if (spanMs / (s * 1000) <= MAX_POINTS) return s;
    return Math.ceil(spanMs / 1000 / MAX_POINTS);
  }

  // ---- the API, with this tab's read token -------------------------------------------

  let tokenAsked = null;

  /* Ask for a read token once: concurrent 401s share one dialog. */
  function askToken(refused) {
    if (!tokenAsked) {
      tokenAsked = new Promise((resolve, reject) => {
        const dialog = $("token-dialog");
        $("token-message").textContent = refused
          ? "That token was refused. Enter the collector's read token."
          : "This collector needs a read token (its --read-token, or the main token).";
        $("token-input").value = "";
        dialog.addEventListener("close", function done() {
          dialog.removeEventListener("close", done);
          tokenAsked = null;
          const value = $("token-input").value.trim();
          if (dialog.returnValue === "ok" && value) {
            sessionStorage.setItem(TOKEN_KEY, value);
            resolve();
          } else {
            reject(new Error("a read token is needed to see this collector's data"));
          }
        });
        dialog.showModal();
        $("token-input").focus();
      });
    }
    return tokenAsked;
  }

  function apiUrl(path, params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v !== "" && v !== null && v !== undefined) q.set(k, v);
    return path + "?" + q.toString();
  }

  async function api(path, params) {
    const url = apiUrl(path, params);
    for (let attempt = 0; attempt < 4; attempt++) {
      const token = sessionStorage.getItem(TOKEN_KEY);
      const reply = await fetch(url, { headers: token ? { Authorization: "Bearer " + token } : {} });
      if (reply.status === 401) {
        // another call may have got a token while this one was on its way
        if (sessionStorage.getItem(TOKEN_KEY) === token) await askToken(Boolean(token));
        continue;
      }
      if (!reply.ok) {
        let body = {};
        try { body = await reply.json(); } catch (e) { /* not JSON */ }
        const err = new Error(body.error || reply.status + " " + reply.statusText);
        err.parameter = body.parameter;
        throw err;
      }
      return reply;
    }
    throw new Error("the collector refused every token given");
  }

  const apiJson = async (path, params) => (await api(path, params)).json();

  function status(text, isError) {
    $("status").textContent = text;
    $("status").className = isError ? "error" : "";
  }

  function fail(err) {
    status(String(err.message || err), true);
  }

  // ---- pick: service, labels, range --------------------------------------------------

  function fillSelect(select, values, selected, allLabel) {
    select.textContent = "";
    if (allLabel) select.appendChild(new Option(allLabel, ""));
    for (const [value, text] of values) select.appendChild(new Option(text, value));
    if (selected && !values.some(([v]) => v === selected)) select.appendChild(new Option(selected + " (no data)", selected));
    select.value = selected;
  }

  async function loadServices() {
    const doc = await apiJson("api/v1/services");
    const names = doc.services.map((s) => [s.name, s.name]);
    if (!state.service && names.length) state.service = names[0][0];
    fillSelect($("service"), names, state.service, null);
    if (!names.length) status("No service has sent data yet.", false);
  }

  async function loadLabels(token) {
    const doc = await apiJson("api/v1/labels", { service: state.service, from: iso(range[0]), to: iso(range[1]) });
    if (token !== loadToken) return;
    for (const name of ["instance", "version", "thread"]) {
      // an unnamed thread (py-spy without --threads) is no choice to offer
      fillSelect($(name), doc[name].filter((v) => v !== "").map((v) => [v, v]), state[name], "all");
    }
    fillSelect($("route"), doc.route.map((r) => [r.route, r.route + " (" + r.requests + ")"]), state.route, "all");
  }

  function bindPick() {
    const presets = $("presets");
    for (const p of PRESETS) {
      const b = document.createElement("button");
      b.type = "button"; b.textContent = p; b.dataset.preset = p;
      b.addEventListener("click", () => { setRange("now-" + p, "now"); });
      presets.appendChild(b);
    }
    $("apply").addEventListener("click", () => setRange($("from").value, $("to").value));
    // a link with now-1h in it shows another hour tomorrow: pin the range to its times
    $("pin").addEventListener("click", () => {
      state.from = iso(range[0]); state.to = iso(range[1]);
      writeState(true); showRange();
    });
    for (const id of ["from", "to"]) {
      $(id).addEventListener("keydown", (e) => { if (e.key === "Enter") $("apply").click(); });
    }
    $("service").addEventListener("change", () => {
      state.service = $("service").value;
      for (const name of LABELS) state[name] = "";
      state.sel = null; state.base = null;
      writeState(true); loadAll();
    });
    for (const name of LABELS) {
      $(name).addEventListener("change", () => { state[name] = $(name).value; writeState(true); loadAll(); });
    }
  }

  function setRange(from, to) {
    try {
      const now = Date.now();
      if (parseTime(from, now) >= parseTime(to, now)) throw new Error("From must be before To");
    } catch (err) { fail(err); return; }
    state.from = from.trim(); state.to = to.trim(); state.sel = null; state.base = null;
    writeState(true); loadAll();
  }

  function showRange() {
    $("from").value = state.from; $("to").value = state.to;
    for (const b of $("presets").children) {
      b.classList.toggle("active", state.to === "now" && state.from === "now-" + b.dataset.preset);
    }
  }

  // ---- timeline ----------------------------------------------------------------------

  /* Points of several series on one x axis (seconds), nulls where a series has none. */
  function align(groups) {
    const xs = new Set();
    for (const g of groups) for (const p of g.points) xs.add(p.start_ns);
    const sorted = Array.from(xs).sort((a, b) => a - b);
    const at = new Map(sorted.map((x, i) => [x, i]));
    const columns = [sorted.map((x) => x / 1e9)];
    for (const g of groups) {
      for (const pick of g.series) {
        const col = new Array(sorted.length).fill(null);
        for (const p of g.points) {
          const v = pick(p);
          col[at.get(p.start_ns)] = v === undefined ? null : v;
        }
        columns.push(col);
      }
    }
    return columns;
  }

  function shade(u) {
    const ctx = u.ctx, top = u.bbox.top, height = u.bbox.height;
    const x = (ms) => u.valToPos(ms / 1000, "x", true);
    const fill = (a, b, colour) => {
      const left = Math.max(x(a), u.bbox.left), right = Math.min(x(b), u.bbox.left + u.bbox.width);
      if (right > left) { ctx.fillStyle = colour; ctx.fillRect(left, top, right - left, height); }
    };
    ctx.save();
    for (const s of spikes) fill(s.start_ns / 1e6, s.end_ns / 1e6, "rgba(229, 57, 53, 0.13)");
    const base = state.base || shownBaseline;
    if (state.view === "diff" && base) fill(base[0], base[1], "rgba(30, 136, 229, 0.12)");
    if (state.sel) fill(state.sel[0], state.sel[1], "rgba(106, 27, 154, 0.16)");
    ctx.restore();
  }

  function markers(u) {
    const ctx = u.ctx, top = u.bbox.top, height = u.bbox.height, ratio = devicePixelRatio || 1;
    let drawn = 0;
    ctx.save();
    ctx.font = (10 * ratio) + "px system-ui, sans-serif";
    for (const e of events) {
      const x = u.valToPos(e.time_ns / 1e9, "x", true);
      if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
      drawn++;
      ctx.strokeStyle = e.kind === "deploy" ? "#6a1b9a" : e.kind === "restart" ? "#ef6c00" : "#777";
      ctx.setLineDash([4 * ratio, 3 * ratio]);
      ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + height); ctx.stroke();
      ctx.fillStyle = ctx.strokeStyle;
      ctx.fillText(eventLabel(e), x + 3 * ratio, top + 10 * ratio);
    }
    ctx.restore();
    // what the canvas cannot tell a reader (or a test): how many markers it shows
    if (u.root.parentElement) u.root.parentElement.dataset.markers = String(drawn);
  }

  function eventLabel(e) {
    if (e.kind === "deploy") return "deploy " + (e.previous_version ? e.previous_version + " \u2192 " : "") + e.version;
    return e.kind + (e.version ? " " + e.version : "");
  }

  /* Strips at the top of the GPU clock panel where a throttle reason was active. */
  function strips(reasons) {
    return (u) => {
      const ctx = u.ctx, ratio = devicePixelRatio || 1, h = 4 * ratio;
      const xs = u.data[0];
      ctx.save();
      reasons.forEach((r, row) => {
        ctx.fillStyle = REASON_COLOURS[row % REASON_COLOURS.length];
        for (let i = 0; i < xs.length; i++) {
          if (!(r.active[i] > 0)) continue;
          const left = u.valToPos(xs[i], "x", true);
          const right = u.valToPos(i + 1 < xs.length ? xs[i + 1] : xs[i] + r.step, "x", true);
          ctx.fillRect(left, u.bbox.top + row * (h + ratio), Math.max(right - left, ratio), h);
        }
      });
      ctx.restore();
    };
  }

  function panel(title, columns, series, extra) {
    const box = document.createElement("div");
    box.className = "panel";
    const head = document.createElement("div");
    head.className = "panel-title";
    head.textContent = title;
    box.appendChild(head);
    $("timeline").appendChild(box);
    const opts = extra || {};
    const points = columns[0].length;
    box.dataset.panel = opts.key || title;
    box.dataset.points = String(points);
    const draws = [markers].concat(opts.draw || []);
    const u = new uPlot({
      width: Math.max(300, $("timeline").clientWidth - 28), height: opts.height || 130,
      cursor: { sync: { key: "pyrometer" }, drag: { x: true, y: false, setScale: false } },
      select: { show: true },
      scales: { x: { time: true, range: () => [range[0] / 1000, range[1] / 1000] }, ...(opts.scales || {}) },
      // every panel has a right axis (blank where unused), so their time axes line up
      axes: (opts.axes || [{}, { size: 56 }, BLANK_AXIS]).map((a, i) => (i === 0 ? { space: 90, ...a } : a)),
      series: [{}].concat(series),
      bands: opts.bands,
      legend: { live: true },
      hooks: {
        drawClear: [shade],
        draw: draws,
        setSelect: [(chart) => {
          if (chart.select.width < 3) return;
          const a = chart.posToVal(chart.select.left, "x") * 1000;
          const b = chart.posToVal(chart.select.left + chart.select.width, "x") * 1000;
          chart.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
          if (state.view === "diff" && $("drag-sets").value === "baseline") setBaseline([a, b]);
          else selectWindow([a, b], null);
        }],
      },
    }, columns, box);
    charts.push(u);
    return { box, head, u };
  }

  function emptyPanel(text) {
    const box = document.createElement("div");
    box.className = "panel empty-panel";
    box.textContent = text;
    $("timeline").appendChild(box);
  }

  const line = (label, colour, extra) => Object.assign({ label, stroke: colour, width: 1.5, spanGaps: false }, extra || {});

  function drawTimeline(lat, gpu, proc, engine) {
    for (const u of charts) u.destroy();
    charts = [];
    $("timeline").textContent = "";
    const pts = lat.points;
    if (pts.length) {
      const stepS = lat.step_ns / 1e9;
      panel("Requests per second", align([{ points: pts, series: [(p) => p.rate_per_s, (p) => p.errors / stepS] }]),
        [line("requests/s", COLOURS[0]), line("errors/s (5xx)", COLOURS[2])], { key: "rate" });
      const streamed = pts.some((p) => p.ttfb_p50_ms !== null);
      const lat_series = [(p) => p.latency_p50_ms, (p) => p.latency_p95_ms, (p) => p.latency_p99_ms];
      const lat_lines = [line("p50 ms", COLOURS[3]), line("p95 ms", COLOURS[1]), line("p99 ms", COLOURS[2], { width: 2 })];
      if (streamed) {
        lat_series.push((p) => p.ttfb_p50_ms, (p) => p.ttfb_p95_ms);
        lat_lines.push(line("TTFB p50 ms", COLOURS[5], { dash: [4, 3] }), line("TTFB p95 ms", COLOURS[4], { dash: [4, 3] }));
      }
      panel("Latency (p50 \u2013 p99 band" + (streamed ? "; time to first byte dashed" : "") + ")",
        align([{ points: pts, series: lat_series }]), lat_lines,
        { key: "latency", bands: [{ series: [3, 1], fill: "rgba(198, 40, 40, 0.08)" }], height: 160 });
    } else {
      emptyPanel("No requests recorded in this range (requests come from the middleware or the agent's proxy).");
    }
    drawGpu(gpu);
    drawEngine(engine);
    drawHost(proc);
  }

  // The serving engine's own metrics (agent --scrape), drawn only where there are some: its
  // batch and queue beside the KV cache's use, and its latencies per request (the metrics
  // ENGINE_LABELS names). One engine and model on one instance, as the GPU clock shows one GPU.
  const ENGINE_LABELS = { requests_running: "running", requests_waiting: "waiting", kv_cache_usage: "KV cache %",
    queue_time_s: "queue ms", ttft_s: "TTFT ms", itl_s: "inter-token ms", compute_time_s: "compute ms" };
  function drawEngine(engine) {
    // the first engine and model (on its instance) that reports something drawn here
    const first = engine.series.find((s) => s.metric in ENGINE_LABELS);
    if (!first) return;
    const by = {};
    for (const s of engine.series) {
      if (s.instance === first.instance && s.engine === first.engine && s.model === first.model) by[s.metric] = s;
    }
    const who = [first.engine, first.model].filter(Boolean).join(" ") + " on " + first.instance;
    const counts = ["requests_running", "requests_waiting"].filter((m) => by[m]);
    if (counts.length || by.kv_cache_usage) {
      const pick = (m) => (p) => (p.value === null ? null : m === "kv_cache_usage" ? p.value * 100 : p.value);
      // the KV cache on a right-hand % axis beside the counts; alone, on the left one
      const kvRight = counts.length > 0 && by.kv_cache_usage;
      const metrics = counts.concat(by.kv_cache_usage ? ["kv_cache_usage"] : []);
      const title = (counts.length ? "Engine batch: requests running and waiting" : "Engine KV cache used (%)") +
        (kvRight ? "; KV cache used (%)" : "") + ", " + who;
      panel(title, align(metrics.map((m) => ({ points: by[m].points, series: [pick(m)] }))),
        metrics.map((m, i) => line(ENGINE_LABELS[m], m === "kv_cache_usage" ? COLOURS[4] : COLOURS[i], kvRight && m === "kv_cache_usage" ? { scale: "%" } : undefined)),
        { key: "engine-batch", scales: kvRight ? { "%": { range: [0, 100] } } : undefined,
          axes: [{}, { size: 56 }, kvRight ? { scale: "%", side: 1, size: 48, grid: { show: false } } : BLANK_AXIS] });
    }
    const times = ["queue_time_s", "ttft_s", "itl_s", "compute_time_s"].filter((m) => by[m]);
    if (times.length) {
      panel("Engine latency per request (ms, mean), " + who,
        align(times.map((m) => ({ points: by[m].points, series: [(p) => (p.value === null ? null : p.value * 1000)] }))),
        times.map((m, i) => line(ENGINE_LABELS[m], COLOURS[(i + 3) % COLOURS.length])), { key: "engine-latency" });
    }
  }

  function drawGpu(gpu) {
    const groups = gpu.gpus;
    if (!groups.length) { emptyPanel("No GPU data in this range."); return; }
    const replayed = gpu.replayed;
    const name = (g) => g.instance + " GPU " + g.gpu_index;
    const mark = (p) => {
      if (replayed) {
        const tag = document.createElement("span");
        tag.className = "replayed"; tag.textContent = "replayed, not measured";
        tag.title = gpu.notice || "replayed GPU data";
        p.head.appendChild(tag);
      }
      return p;
    };
    const first = groups[0];
    const reasons = new Map();
    for (const p of first.points) for (const [r, v] of Object.entries(p.throttle || {})) if (v > 0) reasons.set(r, true);
    const names = Array.from(reasons.keys());
    const clockCols = align([{ points: first.points, series: [(p) => p.sm_clock_mhz, (p) => p.sm_clock_max_mhz]
      .concat(names.map((r) => (p) => (p.throttle ? p.throttle[r] || 0 : 0))) }]);
    const stripRows = names.map((r, i) => ({ reason: r, step: gpu.step_ns / 1e9, active: clockCols[3 + i] }));
    clockCols.length = 3;
    const clock = mark(panel("GPU SM clock (MHz) against its max, " + name(first), clockCols,
      [line("SM clock", COLOURS[0]), line("max", "#999", { dash: [5, 4] })],
      { key: "gpu-clock", draw: [strips(stripRows)] }));
    if (stripRows.length) {
      const key = document.createElement("span");
      key.className = "strip-key";
      key.textContent = "throttled:";
      stripRows.forEach((r, i) => {
        const sw = document.createElement("i"); sw.style.background = REASON_COLOURS[i % REASON_COLOURS.length];
        key.appendChild(sw); key.appendChild(document.createTextNode(r.reason));
      });
      clock.head.appendChild(key);
      clock.box.dataset.throttle = stripRows.map((r) => r.reason).join(",");
    }
    mark(panel("GPU temperature (\u00b0C) against the slowdown threshold",
      align(groups.map((g) => ({ points: g.points, series: [(p) => p.temperature_c, (p) => p.slowdown_temperature_c] }))),
      groups.flatMap((g, i) => [line(name(g), COLOURS[i % COLOURS.length]), line("slowdown", "#c62828", { dash: [5, 4] })]),
      { key: "gpu-temperature" }));
    mark(panel("GPU power (W) and memory (GiB)",
      align(groups.map((g) => ({ points: g.points, series: [(p) => p.power_w, (p) => p.power_limit_w,
        (p) => p.memory_used_bytes === null ? null : p.memory_used_bytes / 2 ** 30] }))),
      groups.flatMap((g, i) => [line(name(g) + " W", COLOURS[i % COLOURS.length]),
        line("limit W", "#999", { dash: [5, 4] }), line(name(g) + " GiB", COLOURS[(i + 4) % COLOURS.length], { scale: "GiB" })]),
      { key: "gpu-power", axes: [{}, { size: 56 }, { scale: "GiB", side: 1, size: 48, grid: { show: false } }] }));
  }

  function drawHost(proc) {
    const hosts = proc.hosts;
    if (!hosts.length) { emptyPanel("No host data in this range."); return; }
    panel("Host CPU (%) and pressure (PSI some, avg10 %)",
      align(hosts.map((h) => ({ points: h.points, series: [(p) => p.cpu_pct, (p) => p.psi_cpu_some,
        (p) => p.psi_memory_some, (p) => p.psi_io_some] }))),
      hosts.flatMap((h) => [line(h.instance + " CPU %", COLOURS[0]), line("PSI cpu", COLOURS[1]),
        line("PSI memory", COLOURS[4]), line("PSI io", COLOURS[5])]),
      { key: "host" });
  }

  function listEvents() {
    const list = $("events");
    list.textContent = "";
    for (const e of events) {
      const li = document.createElement("li");
      li.dataset.kind = e.kind;
      li.textContent = clock(e.time_ns / 1e6) + " " + eventLabel(e) + (e.instance ? " on " + e.instance : "");
      list.appendChild(li);
    }
  }

  async function loadTimeline(token) {
    const step = stepFor(range[1] - range[0]) + "s";
    const base = { service: state.service, from: iso(range[0]), to: iso(range[1]), step };
    const series = { ...base, instance: state.instance, version: state.version };
    const [lat, gpu, proc, engine, ev] = await Promise.all([
      apiJson("api/v1/latency", { ...series, route: state.route }),
      apiJson("api/v1/gpu", series), apiJson("api/v1/process", series), apiJson("api/v1/engine", series),
      apiJson("api/v1/events", { service: state.service, from: iso(range[0]), to: iso(range[1]) })]);
    if (token !== loadToken) return;
    events = ev.events;
    listEvents();
    drawTimeline(lat, gpu, proc, engine);
  }

  function redrawTimeline() { for (const u of charts) u.redraw(false, false); }

  // ---- spikes ------------------------------------------------------------------------

  // The spike analysis in 10 s steps (the API's default) up to a few hours; past that, in
  // steps that keep it to about 3000 buckets with its 30 min baseline: a day in 10 s steps
  // is 8820 buckets and takes seconds, in 30 s steps a third of that.
  const SPIKE_STEPS_S = [10, 30, 60, 120, 300, 600];
  function spikeStep(spanMs) {
    const buckets = (s) => (spanMs / 1000 + 1800) / s;
    return (SPIKE_STEPS_S.find((s) => buckets(s) <= 3000) || Math.ceil(buckets(1) / 3000)) + "s";
  }

  function evidence(dl, items) {
    for (const [k, v] of Object.entries(items)) {
      const dt = document.createElement("dt"); dt.textContent = k;
      const dd = document.createElement("dd");
      const plain = (x) => (typeof x === "number" ? F.num(x) : x !== null && typeof x === "object" ? JSON.stringify(x) : String(x));
      // a list of records (the functions that changed, say): one line each, in words
      if (Array.isArray(v) && v.every((x) => x !== null && typeof x === "object")) {
        dd.textContent = v.map((x) => Object.entries(x).map(([a, b]) => a + " " + plain(b)).join(", ")).join("\n");
        dd.style.whiteSpace = "pre-line";
      } else {
        dd.textContent = plain(v);
      }
      dl.appendChild(dt); dl.appendChild(dd);
    }
  }

  function spikeRow(s, baselineNs) {
    const li = document.createElement("li");
    li.className = "spike";
    li.dataset.start = String(s.start_ns / 1e6);
    const head = document.createElement("div");
    head.className = "spike-head";
    const when = document.createElement("span");
    when.className = "when";
    when.textContent = clock(s.start_ns / 1e6);
    const facts = document.createElement("span");
    facts.textContent = duration((s.end_ns - s.start_ns) / 1e6) + ", peak " + F.num(s.peak_ms) + " ms against a baseline of " +
      F.num(s.baseline_ms) + " ms (z " + s.z + ")" + (s.route ? " on " + s.route : "");
    const cause = document.createElement("span");
    cause.className = "cause";
    const top = s.causes[0];
    if (s.unexplained || !top) cause.textContent = "unexplained";
    else {
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = top.kind + " " + top.score.toFixed(2);
      cause.appendChild(score);
      cause.appendChild(document.createTextNode(" " + top.explanation));
    }
    const flame = document.createElement("button");
    flame.type = "button"; flame.textContent = "Flame graph"; flame.className = "spike-flame";
    flame.addEventListener("click", () => selectWindow([s.start_ns / 1e6, s.end_ns / 1e6], "flame"));
    const diff = document.createElement("button");
    diff.type = "button"; diff.textContent = "Diff against baseline"; diff.className = "spike-diff";
    diff.addEventListener("click", () => {
      // the spike's own trailing baseline, kept inside the range picked when that leaves
      // a baseline at least as long as the spike
      const start = s.start_ns / 1e6, length = (s.end_ns - s.start_ns) / 1e6;
      const trailing = start - baselineNs / 1e6;
      state.base = [start - range[0] >= length ? Math.max(trailing, range[0]) : trailing, start];
      selectWindow([start, s.end_ns / 1e6], "diff");
    });
    head.append(when, facts, cause, flame, diff);
    li.appendChild(head);
    // the pipeline's stages, spike against baseline, in time per request (stages.py)
    if (s.stages_summary) {
      const stagesLine = document.createElement("div");
      stagesLine.className = "spike-stages";
      stagesLine.textContent = "Stages: " + s.stages_summary;
      li.appendChild(stagesLine);
    }

    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = "Ranked causes and what was checked";
    details.appendChild(summary);
    for (const c of s.causes) {
      const div = document.createElement("div");
      div.className = "candidate";
      div.textContent = c.kind + " \u2014 score " + c.score.toFixed(2) + ", z " + c.z + ": " + c.explanation;
      const dl = document.createElement("dl");
      evidence(dl, c.evidence);
      div.appendChild(dl);
      details.appendChild(div);
    }
    if (s.stages && s.stages.length) {
      const table = document.createElement("table");
      table.className = "stages";
      const row = (cells, tag) => {
        const tr = document.createElement("tr");
        for (const c of cells) { const td = document.createElement(tag); td.textContent = c; tr.appendChild(td); }
        table.appendChild(tr);
      };
      row(["stage", "baseline ms/request", "spike ms/request", "baseline share", "spike share"], "th");
      const pctOf = (x) => (x === null || x === undefined ? "\u2013" : (100 * x).toFixed(1) + "%");
      const ms = (x) => (x === null || x === undefined ? "\u2013" : F.num(x));
      for (const st of s.stages) {
        row([st.stage, ms(st.baseline_ms_per_request), ms(st.spike_ms_per_request), pctOf(st.baseline_share), pctOf(st.spike_share)], "td");
      }
      details.appendChild(table);
    }
    // "checked" lists every candidate; those ranked above are causes, the rest were not
    const ranked = new Set(s.causes.map((c) => c.kind));
    for (const c of s.checked.filter((x) => !ranked.has(x.kind))) {
      const div = document.createElement("div");
      div.className = "candidate checked";
      div.textContent = "checked, not the cause: " + c.kind + " (score " + c.score.toFixed(2) + ", z " + c.z + "): " + c.note;
      details.appendChild(div);
    }
    li.appendChild(details);
    return li;
  }

  async function loadSpikes(token) {
    $("spikes-message").textContent = "analysing the range\u2026";
    let doc;
    try {
      doc = await apiJson("api/v1/spikes", { service: state.service, from: iso(range[0]), to: iso(range[1]),
        step: spikeStep(range[1] - range[0]) });
    } catch (err) {
      if (token !== loadToken) return;
      spikes = []; $("spikes").textContent = ""; $("spikes-message").textContent = String(err.message);
      return;
    }
    if (token !== loadToken) return;
    spikes = doc.spikes;
    $("spikes-message").textContent = doc.message + " (" + doc.step + " steps, " + doc.percentile +
      " against the trailing " + doc.baseline + ")";
    const list = $("spikes");
    list.textContent = "";
    for (const s of spikes) list.appendChild(spikeRow(s, doc.baseline_ns));
    markSelectedSpike();
    redrawTimeline();
  }

  function markSelectedSpike() {
    for (const li of $("spikes").children) {
      li.classList.toggle("selected", Boolean(state.sel) && Math.abs(Number(li.dataset.start) - state.sel[0]) < 1);
    }
  }

  // ---- flame graph and diff ----------------------------------------------------------

  function profileWindow() { return state.sel || range; }

  function profileParams(format) {
    const w = profileWindow();
    const p = { service: state.service, from: iso(w[0]), to: iso(w[1]), format };
    for (const name of FLAME_LABELS) p[name] = state[name];
    if (state.view === "diff") {
      if (state.base) { p.baseline_from = iso(state.base[0]); p.baseline_to = iso(state.base[1]); }
      p.per = state.per;
    }
    return p;
  }

  function selectWindow(win, view) {
    state.sel = win;
    if (view) state.view = view;
    writeState(true);
    markSelectedSpike();
    redrawTimeline();
    loadProfile(loadToken).catch(fail);
  }

  function setBaseline(win) {
    state.base = win;
    writeState(true);
    redrawTimeline();
    loadProfile(loadToken).catch(fail);
  }

  function setSearch(term) {
    $("search").value = term;
    state.q = term;
    writeState(false);
    $("matched").textContent = graph.search(term);
  }

  function downloadLinks() {
    const box = $("downloads");
    box.textContent = "Download:";
    const formats = state.view === "diff" ? ["json", "html"] : ["folded", "json", "speedscope", "pprof", "html"];
    const path = state.view === "diff" ? "api/v1/flamegraph/diff" : "api/v1/flamegraph";
    for (const fmt of formats) {
      const a = document.createElement("a");
      a.href = apiUrl(path, profileParams(fmt));
      a.textContent = fmt;
      a.dataset.format = fmt;
      const ext = { folded: "folded.txt", speedscope: "speedscope.json", pprof: "pb.gz" }[fmt] || fmt;
      a.download = (state.service || "profile").replace(/[^A-Za-z0-9._-]/g, "_") +
        (state.view === "diff" ? "-diff." : ".") + ext;
      // a plain link carries no token: fetch with it, then save what came back
      a.addEventListener("click", (e) => {
        e.preventDefault();
        fetchBlob(path, profileParams(fmt)).then((url) => {
          const save = document.createElement("a");
          save.href = url; save.download = a.download;
          document.body.appendChild(save); save.click(); save.remove();
          setTimeout(() => URL.revokeObjectURL(url), 60000);
        }).catch(fail);
      });
      box.appendChild(a);
    }
  }

  async function fetchBlob(path, params) {
    const reply = await api(path, params);
    return URL.createObjectURL(await reply.blob());
  }

  async function openSpeedscope() {
    // speedscope loads #profileURL= with a plain fetch (no token): hand it a same-origin
    // blob of the profile this page fetched with the token
    const url = await fetchBlob("api/v1/flamegraph", profileParams("speedscope"));
    const w = profileWindow();
    const title = state.service + " " + clock(w[0]) + " .. " + clock(w[1]);
    window.open("ui/vendor/speedscope/index.html#profileURL=" + encodeURIComponent(url) +
      "&title=" + encodeURIComponent(title), "_blank");
  }

  function showView() {
    document.body.classList.toggle("diff", state.view === "diff");
    $("view-flame").classList.toggle("active", state.view === "flame");
    $("view-diff").classList.toggle("active", state.view === "diff");
    const w = profileWindow();
    $("window-label").textContent = (state.sel ? "selected window " : "whole range ") + clock(w[0]) + " .. " +
      clock(w[1]) + " (" + duration(w[1] - w[0]) + ")";
    $("clear-selection").hidden = !state.sel;
  }

  async function loadProfile(token) {
    showView();
    downloadLinks();
    $("profile-summary").textContent = "Loading\u2026";
    const diff = state.view === "diff";
    let doc, fallback = "";
    try {
      doc = await apiJson(diff ? "api/v1/flamegraph/diff" : "api/v1/flamegraph", profileParams("json"));
    } catch (err) {
      // per request needs requests in both windows; without them, per second still compares
      if (!diff || err.parameter !== "per") throw err;
      doc = await apiJson("api/v1/flamegraph/diff", { ...profileParams("json"), per: "second" });
      fallback = err.message + ": values are per second.";
    }
    if (token !== loadToken) return;
    if (diff) {
      shownBaseline = [doc.baseline_from_ns / 1e6, doc.baseline_to_ns / 1e6];
      redrawTimeline();
      $("baseline-from").value = iso(doc.baseline_from_ns / 1e6);
      $("baseline-to").value = iso(doc.baseline_to_ns / 1e6);
      $("colour").value = state.colour;
      $("per").value = state.per;
      $("colour").options[1].textContent = "change per " + doc.normalisation.per;
      graph.colourMode = state.colour;
      changesTable.show(doc);
    } else {
      topTable.show(doc);
    }
    $("profile-summary").textContent = F.describe(doc);
    const lines = F.notices(doc).concat(fallback ? [fallback] : []);
    $("profile-notice").textContent = lines.join(" ");
    $("profile-notice").style.display = lines.length ? "block" : "none";
    graph.setDocument(doc);
    $("search").value = state.q;
    $("matched").textContent = graph.search(state.q);
    document.body.dataset.profileLoaded = String(Date.now());
  }

  function bindProfile() {
    $("view-flame").addEventListener("click", () => { state.view = "flame"; writeState(true); loadProfile(loadToken).catch(fail); });
    $("view-diff").addEventListener("click", () => { state.view = "diff"; writeState(true); redrawTimeline(); loadProfile(loadToken).catch(fail); });
    $("clear-selection").addEventListener("click", () => selectWindow(null, null));
    $("search").addEventListener("input", () => setSearch($("search").value));
    $("reset").addEventListener("click", () => { setSearch(""); graph.reset(); });
    $("width").addEventListener("change", () => graph.setWidth($("width").value));
    $("per").addEventListener("change", () => { state.per = $("per").value; writeState(true); loadProfile(loadToken).catch(fail); });
    $("colour").addEventListener("change", () => { state.colour = $("colour").value; writeState(false); graph.setColour(state.colour); });
    const setBase = () => {
      try {
        const now = Date.now();
        const a = parseTime($("baseline-from").value, now), b = parseTime($("baseline-to").value, now);
        if (a >= b) throw new Error("the baseline's start must be before its end");
        setBaseline([a, b]);
      } catch (err) { fail(err); }
    };
    for (const id of ["baseline-from", "baseline-to"]) {
      $(id).addEventListener("keydown", (e) => { if (e.key === "Enter") setBase(); });
    }
    $("speedscope").addEventListener("click", () => openSpeedscope().catch(fail));
    document.addEventListener("keydown", (e) => { if (e.key === "Escape") graph.zoom(null); });
    window.addEventListener("resize", () => {
      graph.draw();
      for (const u of charts) u.setSize({ width: Math.max(300, $("timeline").clientWidth - 28), height: u.height });
    });
  }

  // ---- loading -----------------------------------------------------------------------

  /* Say on the body that a stage of load `token` is done, and when (ms since navigation):
   * for tests to wait on, and for the bench to time. */
  function mark(token, name) {
    if (token !== loadToken) return;
    document.body.dataset[name] = String(token);
    document.body.dataset[name + "At"] = String(Math.round(performance.now()));
  }

  async function loadAll() {
    const token = ++loadToken;
    try {
      const now = Date.now();
      range = [parseTime(state.from, now), parseTime(state.to, now)];
      if (range[0] >= range[1]) throw new Error("From must be before To");
    } catch (err) { fail(err); return; }
    showRange();
    writeState(false);
    if (!state.service) return;
    status("Loading\u2026", false);
    const started = performance.now();
    const profile = loadProfile(token);
    // the spike analysis of a long range takes seconds (it reads every request of the range
    // and its baseline): the list fills in when it comes, and the page does not wait for it
    const spikesListed = loadSpikes(token).then(() => {
      mark(token, "spikesLoaded");
    });
    const overview = Promise.all([loadLabels(token), loadTimeline(token)]).then(() => {
      // the page answers picks, clicks and drags from here on
      mark(token, "interactive");
    });
    const results = await Promise.allSettled([overview, spikesListed, profile]);
    if (token !== loadToken) return;
    const failed = results.find((r) => r.status === "rejected");
    if (failed) { fail(failed.reason); return; }
    status("Loaded in " + Math.round(performance.now() - started) + " ms", false);
    mark(token, "loaded");
  }

  window.addEventListener("popstate", () => {
    Object.assign(state, readState());
    loadAll();
  });

  async function start() {
    bindPick();
    bindProfile();
    // with a service in the URL, its data need not wait for the listing of services
    const listing = loadServices().catch((err) => fail(err));
    if (!state.service) await listing;
    await loadAll();
    await listing;
  }

  start();
})();
