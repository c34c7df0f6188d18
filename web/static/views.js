// carbonscada HMI views beyond the overview: hash routes, language switch, trends (uPlot),
// hours and days, devices. Everything from the server itself (the control room has no internet).
"use strict";

(() => {
  const hmi = window.hmi;
  const { el, fmt, fmtTime, localParts, api, state } = hmi;
  const DASH = "—";
  const VIEWS = ["overview", "trends", "periods", "alarms", "devices", "allowance", "records",
    "admin"];
  VIEWS.push("cases"); // web/static/cases.js
  VIEWS.push("boundaries"); // web/static/boundaries.js
  VIEWS.push("performance"); // web/static/performance.js
  const LANG_KEY = "carbonscada.lang";
  const COLORS = ["#58a6ff", "#3fb950", "#d2a8ff", "#f0a020", "#39c5cf", "#ff7b72"];
  const BAD = "#f04848";
  // Values a chart can show, per kind: field, zh, en, unit.
  const FIELDS = {
    source: [
      ["co2_kg", "本分钟排放", "CO₂ per minute", "kg"],
      ["co2_rate_kg_h", "CO₂ 排放速率", "CO₂ rate", "kg/h"],
      ["co2_dry_pct", "CO₂ 浓度（干基）", "CO₂ dry", "%"],
      ["co2_mg_m3", "CO₂ 质量浓度", "CO₂ conc.", "mg/m³"],
      ["flow_std_dry_m3_h", "标干流量", "Flow std dry", "m³/h"],
      ["flow_act_m3_h", "工况流量", "Flow actual", "m³/h"],
    ],
    unit: [
      ["output_mwh", "本分钟发电量", "Output per minute", "MWh"],
      ["co2_kg", "本分钟排放", "CO₂ per minute", "kg"],
      ["intensity_t_mwh", "排放强度", "Intensity", "t/MWh"],
    ],
    tag: [["mean", "平均值", "mean", ""]],
  };

  // ------------------------------------------------------------ language

  // The page is written as "中文<span class=en>English</span>"; the Chinese text nodes are
  // wrapped in span.zh (also those added later) so that English alone can be shown.
  function wrapZh(root) {
    for (const en of root.querySelectorAll(".en")) {
      const parent = en.parentNode;
      if (!parent || parent.classList.contains("zh")) continue;
      for (const node of [...parent.childNodes]) {
        if (node.nodeType === Node.TEXT_NODE && node.nodeValue.trim()) {
          const span = document.createElement("span");
          span.className = "zh";
          parent.replaceChild(span, node);
          span.append(node);
        }
      }
    }
  }

  function setLang(lang) {
    const en = lang === "en";
    document.documentElement.lang = en ? "en" : "zh-CN";
    const button = document.getElementById("lang-switch");
    button.textContent = en ? "中文" : "English";
    button.dataset.lang = en ? "en" : "zh-CN";
    try {
      localStorage.setItem(LANG_KEY, en ? "en" : "zh-CN");
    } catch (e) { /* private mode: the choice lasts for this page only */ }
  }

  function lang() {
    return document.documentElement.lang === "en" ? "en" : "zh-CN";
  }

  // "中文 English" in zh-CN, "English" alone in English (for text outside the markup).
  function label(zh, en) {
    return lang() === "en" ? en : `${zh} ${en}`;
  }

  // ------------------------------------------------------------ plant time

  const partFormats = new Map();
  function parts(ms) {
    let f = partFormats.get(state.timezone);
    if (!f) {
      f = new Intl.DateTimeFormat("en-CA", {
        timeZone: state.timezone, year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
      });
      partFormats.set(state.timezone, f);
    }
    const p = {};
    for (const x of f.formatToParts(new Date(ms))) p[x.type] = x.value;
    return p;
  }

  // Plant-zone offset from UTC at the instant ms.
  function offsetMs(ms) {
    const p = parts(ms);
    const asUtc = Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour, +p.minute, +p.second);
    return asUtc - Math.floor(ms / 1000) * 1000;
  }

  // "YYYY-MM-DDTHH:MM" read as plant local time → epoch ms.
  function localToEpoch(text) {
    const m = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2}))?/.exec(text || "");
    if (!m) return NaN;
    const guess = Date.UTC(+m[1], +m[2] - 1, +m[3], +(m[4] || 0), +(m[5] || 0));
    const first = guess - offsetMs(guess);
    return guess - offsetMs(first);
  }

  // "YYYY-MM-DDTHH:MM[:SS]" in plant local time → ISO 8601 UTC (null when not a time):
  // what the forms of the records, allowance and cases views send.
  function localIso(text) {
    const m = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2})(?::(\d{2}))?/.exec(text || "");
    if (!m) return null;
    const ms = localToEpoch(m[1]);
    return Number.isFinite(ms) ? isoUtc(ms + 1000 * Number(m[2] || 0)) : null;
  }

  function epochToLocal(ms, withTime) {
    const p = parts(ms);
    const date = `${p.year}-${p.month}-${p.day}`;
    return withTime ? `${date}T${p.hour}:${p.minute}` : date;
  }

  function isoUtc(ms) {
    return new Date(ms).toISOString().replace(/\.000Z$/, "Z");
  }

  // ------------------------------------------------------------ routes

  const shown = { view: null };
  function route() {
    const m = /^#\/([a-z]+)/.exec(location.hash);
    const view = m && VIEWS.includes(m[1]) ? m[1] : "overview";
    document.body.dataset.view = view;
    for (const node of document.querySelectorAll("main > .view")) {
      node.hidden = node.dataset.view !== view;
    }
    // The alarm list is on the overview and is the alarm view; other views leave it out
    // unless an alarm is active (then it stays above them, never hidden from the operator).
    for (const a of document.querySelectorAll("#nav a")) {
      a.classList.toggle("active", a.dataset.view === view);
      if (a.dataset.view === view) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    const previous = shown.view;
    shown.view = view;
    if (previous === "devices" && view !== "devices") stopDevices();
    if (view === "trends") showTrends();
    if (view === "periods") showPeriods();
    if (view === "devices") startDevices();
    if (hmi.viewHooks[view]) hmi.viewHooks[view]();
  }

  // ------------------------------------------------------------ items

  function items(kind) {
    const list = kind === "unit" ? hmi.units : kind === "source" ? hmi.sources : [];
    return list.map((x) => ({ id: x.id, name: x.name_zh && lang() !== "en" ? x.name_zh : x.name || x.id }));
  }

  function fillSelect(select, options, keep) {
    const old = keep ? select.value : "";
    select.replaceChildren(...options.map(([value, text]) => el("option", { value }, text)));
    if (old && options.some(([v]) => v === old)) select.value = old;
  }

  // ------------------------------------------------------------ trends

  const trend = {
    series: [], // {kind, id, field, zh, en, unit, color}
    range: { rolling: 3600, from: 0, to: 0 }, // rolling seconds, or a fixed from/to (ms)
    data: null, // uPlot data: [xs, per series mean, min, max, flagged]
    loaded: false,
    seq: 0,
    maxPoints: 5000, // the API's limit
    level: "minutes", // or "hours" / "days": closed periods, drawn as bars
  };
  const LEVEL_MS = { hours: 3_600_000, days: 86_400_000 };
  const TAG_REFETCH_MS = 1500;

  // The values a kind offers at a level: minutes have their own; hours and days are the
  // stored periods' columns (raw tags have no periods).
  function levelFields(kind, level) {
    if (level === "minutes") return FIELDS[kind] || [];
    return (PERIOD_COLUMNS[kind] || []).filter(([f]) => f !== "n_valid")
      .map(([f, zh, en, u]) => [f, zh, en, u]);
  }

  function fieldInfo(kind, field) {
    return levelFields(kind, trend.level).find((f) => f[0] === field) || [field, field, field, ""];
  }

  function fillTrendForm() {
    const kindBox = document.getElementById("trend-kind");
    const tagOption = kindBox.querySelector('option[value="tag"]');
    tagOption.disabled = trend.level !== "minutes";
    if (tagOption.disabled && kindBox.value === "tag") kindBox.value = "source";
    const kind = kindBox.value;
    const isTag = kind === "tag";
    document.getElementById("trend-id").hidden = isTag;
    document.getElementById("trend-tag").hidden = !isTag;
    fillSelect(document.getElementById("trend-id"),
      items(kind).map((x) => [x.id, `${x.id} · ${x.name}`]), true);
    fillSelect(document.getElementById("trend-field"),
      levelFields(kind, trend.level).map(([f, zh, en, u]) => [f, `${label(zh, en)}${u ? ` (${u})` : ""}`]), true);
  }

  // Series carry over to another level only where it has the same value; else the first
  // source's CO2 is shown, so the chart is never silently empty.
  function setLevel(level) {
    trend.level = level;
    trend.series = trend.series.filter((s) => s.kind !== "tag" &&
      levelFields(s.kind, level).some(([f]) => f === s.field));
    if (!trend.series.length && hmi.sources.length) {
      addSeries("source", hmi.sources[0].id, level === "minutes" ? "co2_kg" : "co2_t");
    }
    fillTrendForm();
    renderSeriesList();
  }

  function addSeries(kind, id, field) {
    if (!id || trend.series.some((s) => s.kind === kind && s.id === id && s.field === field)) return;
    const [, zh, en, unit] = fieldInfo(kind, field);
    const used = new Set(trend.series.map((s) => s.color));
    const color = COLORS.find((c) => !used.has(c)) || COLORS[trend.series.length % COLORS.length];
    trend.series.push({ kind, id, field, zh, en, unit, color });
  }

  function renderSeriesList() {
    const list = document.getElementById("trend-series");
    list.replaceChildren(...trend.series.map((s, i) => {
      const remove = el("button", { type: "button", class: "remove", "aria-label": "移除 / remove" }, "×");
      remove.addEventListener("click", () => {
        trend.series.splice(i, 1);
        renderSeriesList();
        loadTrend();
      });
      return el("li", { "data-series": `${s.kind}:${s.id}:${s.field}` },
        el("span", { class: "swatch", "data-color": s.color }),
        `${s.id} ${label(s.zh, s.en)}${s.unit ? ` [${s.unit}]` : ""}`, remove);
    }));
    for (const sw of list.querySelectorAll(".swatch")) sw.style.background = sw.dataset.color;
  }

  function rangeMs() {
    if (trend.range.rolling) {
      const to = Date.now() + state.clockOffsetMs;
      return [to - trend.range.rolling * 1000, to];
    }
    return [trend.range.from, trend.range.to];
  }

  function chartWidth() {
    const box = document.getElementById("trend-chart");
    return Math.max(300, box.clientWidth || 800);
  }

  function chartHeight() {
    return window.innerWidth <= 900 ? 320 : Math.max(320, Math.min(520, window.innerHeight - 420));
  }

  // One series' answer as columns keyed by x (epoch seconds of the bucket or minute start;
  // of an hour's or day's middle, where its bar is centred).
  function columns(s, body) {
    const out = new Map();
    if (trend.level !== "minutes") {
      const half = LEVEL_MS[trend.level] / 2000;
      for (const r of body || []) {
        const v = Number.isFinite(r[s.field]) ? r[s.field] : null;
        const flagged = r.valid === false || !!r.substituted || (r.flag && r.flag !== "N");
        out.set(Date.parse(r.t) / 1000 + half, { mean: v, min: v, max: v, flagged,
          flags: r.flag ? { [r.flag]: 1 } : {} });
      }
      return out;
    }
    const rows = body.buckets || body.minutes || [];
    for (const b of rows) {
      const x = Date.parse(b.t) / 1000;
      let v;
      let flagged;
      if (s.kind === "tag") v = { mean: b.mean, min: b.min, max: b.max };
      else if (body.buckets) v = b[s.field] || { mean: null, min: null, max: null };
      else v = { mean: b[s.field], min: b[s.field], max: b[s.field] };
      if (b.flags) {
        flagged = Object.keys(b.flags).some((f) => f !== "N") || (b.n_valid !== undefined && b.n_valid < b.n);
      } else {
        flagged = b.flag !== "N" || b.valid === false;
      }
      out.set(x, { ...v, flagged, flags: b.flags || (b.flag ? { [b.flag]: 1 } : {}) });
    }
    return out;
  }

  function buildData(cols) {
    const xs = [...new Set(cols.flatMap((c) => [...c.keys()]))].sort((a, b) => a - b);
    const data = [xs];
    for (const c of cols) {
      const mean = [];
      const min = [];
      const max = [];
      const flagged = [];
      for (const x of xs) {
        const v = c.get(x);
        mean.push(v && Number.isFinite(v.mean) ? v.mean : null);
        min.push(v && Number.isFinite(v.min) ? v.min : null);
        max.push(v && Number.isFinite(v.max) ? v.max : null);
        flagged.push(v && v.flagged ? (Number.isFinite(v.mean) ? v.mean : null) : null);
      }
      data.push(mean, min, max, flagged);
    }
    return data;
  }

  function alpha(hex, a) {
    const n = parseInt(hex.slice(1), 16);
    return `rgba(${n >> 16}, ${(n >> 8) & 255}, ${n & 255}, ${a})`;
  }

  function chartOptions() {
    const units = [...new Set(trend.series.map((s) => s.unit || "value"))];
    const axisStyle = { stroke: "#9aa4af", grid: { stroke: "#343a42", width: 1 },
      ticks: { stroke: "#343a42", width: 1 } };
    const series = [{ label: label("时间", "Time") }];
    const bands = [];
    const periods = trend.level !== "minutes";
    if (periods) {
      // x is the period's middle: the legend names the period by its start.
      const half = LEVEL_MS[trend.level] / 2000;
      series[0].value = (u, ts) => (ts === null ? DASH
        : fmtTime(isoUtc((ts - half) * 1000), true).slice(0, trend.level === "days" ? 10 : 16));
    }
    trend.series.forEach((s) => {
      const scale = s.unit || "value";
      const name = `${s.id} ${label(s.zh, s.en)}`;
      const base = series.length;
      if (periods) {
        series.push({ label: `${name} [${s.unit}]`, scale, stroke: s.color, width: 1,
          fill: alpha(s.color, 0.45), paths: uPlot.paths.bars({ size: [0.6, 80], align: 0 }),
          points: { show: false } });
        series.push({ label: "", scale, show: false });
        series.push({ label: "", scale, show: false });
      } else {
        series.push({ label: `${name} [${s.unit}]`, scale, stroke: s.color, width: 2 });
        series.push({ label: `${label("最小", "min")}`, scale, stroke: alpha(s.color, 0.5), width: 1 });
        series.push({ label: `${label("最大", "max")}`, scale, stroke: alpha(s.color, 0.5), width: 1 });
        bands.push({ series: [base + 2, base + 1], fill: alpha(s.color, 0.18) });
      }
      series.push({ label: label("无效/替代/标记", "invalid/substituted/flagged"), scale, stroke: BAD,
        width: 0, paths: () => null, points: { show: true, size: 10, fill: BAD, stroke: BAD } });
    });
    // Time ticks in plant local time, 24 h, the date where it changes (not uPlot's US style).
    const xValues = (u, splits) => {
      let lastDate = "";
      return splits.map((ts) => {
        const p = parts(ts * 1000);
        const date = `${p.month}-${p.day}`;
        const hm = `${p.hour}:${p.minute}`;
        const text = date !== lastDate ? `${hm}\n${date}` : hm;
        lastDate = date;
        return text;
      });
    };
    const axes = [{ ...axisStyle, values: xValues, size: 52 }];
    units.forEach((u, i) => {
      axes.push({ ...axisStyle, scale: u, label: u === "value" ? "" : u, side: i % 2 ? 1 : 3,
        size: 70, grid: { ...axisStyle.grid, show: i === 0 } });
    });
    // Periods: the asked range is shown whole, so the first and last bars are not cut in half.
    const [from, to] = rangeMs();
    const scales = { x: periods ? { time: true, range: () => [from / 1000, to / 1000] } : { time: true } };
    // Bars stand on zero; lines scale to their values.
    for (const u of units) {
      scales[u] = periods ? { auto: true, range: (u2, lo, hi) => [Math.min(0, lo), Math.max(0, hi) * 1.05 || 1] }
        : { auto: true };
    }
    return {
      width: chartWidth(), height: chartHeight(), series, bands, axes, scales,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), state.timezone),
      cursor: { drag: { x: true, y: false, setScale: true } },
      legend: { live: true },
    };
  }

  function drawChart() {
    const box = document.getElementById("trend-chart");
    if (hmi.charts.trend) {
      hmi.charts.trend.destroy();
      delete hmi.charts.trend;
    }
    box.replaceChildren();
    if (!trend.series.length || !trend.data) return;
    hmi.charts.trend = new uPlot(chartOptions(), trend.data, box);
    if (trend.level !== "minutes") {
      // Bars have no min/max: their placeholder series stay out of the legend.
      const rows = box.querySelectorAll(".u-legend .u-series");
      trend.series.forEach((s, i) => {
        for (const k of [2, 3]) if (rows[1 + 4 * i + k - 1]) rows[1 + 4 * i + k - 1].hidden = true;
      });
    }
  }

  function setStatus(id, text, bad) {
    const node = document.getElementById(id);
    node.textContent = text || "";
    node.classList.toggle("bad", !!bad);
  }

  async function loadTrend() {
    const seq = ++trend.seq;
    trend.loaded = true;
    if (!trend.series.length) {
      trend.data = null;
      drawChart();
      setStatus("trend-status", label("请添加曲线", "Add a series"));
      return;
    }
    const [from, to] = rangeMs();
    // About one point per pixel of the chart; trend.maxPoints lowers it (a coarser view).
    const points = Math.max(1, Math.min(trend.maxPoints, Math.round(chartWidth())));
    setStatus("trend-status", label("加载中…", "loading…"));
    const span = `from=${encodeURIComponent(isoUtc(from))}&to=${encodeURIComponent(isoUtc(to))}`;
    const answers = await Promise.all(trend.series.map((s) => api("GET",
      `/api/v1/${s.kind}s/${encodeURIComponent(s.id)}/${trend.level}?${span}` +
      (trend.level === "minutes" ? `&points=${points}` : ""))));
    if (seq !== trend.seq) return; // a newer request replaced this one
    const bad = answers.find((a) => !a.ok);
    if (bad) {
      setStatus("trend-status", bad.message, true);
      trend.data = null;
      drawChart();
      return;
    }
    trend.data = buildData(answers.map((a, i) => columns(trend.series[i], a.body)));
    const n = trend.data[0].length;
    setStatus("trend-status", `${fmtTime(isoUtc(from), true)} – ${fmtTime(isoUtc(to), true)} ` +
      `${state.timezone} · ${n} ${label("点", "points")}`);
    drawChart();
  }

  // A minute pushed over the WebSocket extends a rolling range.
  const LIVE_FIELD = { co2_rate_kg_h: ["co2_rate_t_h", 1000] };
  function extendTrend(msg) {
    if (!trend.data || !trend.range.rolling || !hmi.charts.trend || trend.level !== "minutes") return;
    // Raw tags are not in the minute push: their minute statistics are read back from the
    // historian a moment later (the historian stores the minute alongside this push).
    if (trend.series.some((s) => s.kind === "tag")) {
      clearTimeout(trend.refetch);
      trend.refetch = setTimeout(loadTrend, TAG_REFETCH_MS);
      return;
    }
    const x = Date.parse(msg.t) / 1000;
    const xs = trend.data[0];
    if (!Number.isFinite(x) || (xs.length && x <= xs[xs.length - 1])) return;
    let any = false;
    const values = trend.series.map((s) => {
      const list = s.kind === "source" ? msg.sources : s.kind === "unit" ? msg.units : null;
      const item = (list || []).find((it) => it.id === s.id);
      if (!item) return null;
      const [name, factor] = LIVE_FIELD[s.field] || [s.field, 1];
      const v = item[name];
      if (v === undefined) return null;
      any = true;
      return { v: Number.isFinite(v) ? v * factor : null, flagged: item.valid === false || (item.flag && item.flag !== "N") };
    });
    if (!any) return;
    xs.push(x);
    values.forEach((val, i) => {
      const base = 1 + 4 * i;
      const v = val ? val.v : null;
      trend.data[base].push(v);
      trend.data[base + 1].push(v);
      trend.data[base + 2].push(v);
      trend.data[base + 3].push(val && val.flagged ? v : null);
    });
    hmi.charts.trend.setData(trend.data);
  }

  // CSV of what the chart shows (the zoomed range), times in plant local time.
  function trendCsv() {
    const chart = hmi.charts.trend;
    if (!chart || !trend.data) return "";
    const lo = chart.scales.x.min;
    const hi = chart.scales.x.max;
    const periods = trend.level !== "minutes";
    const half = periods ? LEVEL_MS[trend.level] / 2000 : 0;
    const head = [`${periods ? `${trend.level.slice(0, -1)} start` : "time"} (${state.timezone})`];
    for (const s of trend.series) {
      const n = `${s.id} ${s.field}${s.unit ? ` [${s.unit}]` : ""}`;
      head.push(`${n} mean`, `${n} min`, `${n} max`, `${n} flagged`);
    }
    const lines = [head.map(csvCell).join(",")];
    const xs = trend.data[0];
    for (let j = 0; j < xs.length; j++) {
      if (xs[j] < lo || xs[j] > hi) continue;
      const p = parts((xs[j] - half) * 1000);
      const row = [`${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second}`];
      trend.series.forEach((s, i) => {
        const base = 1 + 4 * i;
        for (let k = 0; k < 3; k++) row.push(trend.data[base + k][j] ?? "");
        row.push(trend.data[base + 3][j] !== null ? "1" : "0");
      });
      lines.push(row.map(csvCell).join(","));
    }
    return lines.join("\r\n") + "\r\n";
  }

  function csvCell(v) {
    const text = String(v);
    return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  }

  function downloadCsv() {
    const text = trendCsv();
    if (!text) return;
    const url = URL.createObjectURL(new Blob(["\ufeff", text], { type: "text/csv" }));
    const a = el("a", { href: url, download: `trend-${epochToLocal(Date.now(), true).replace(":", "")}.csv` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }

  function markRange() {
    for (const b of document.querySelectorAll("#trend-ranges button")) {
      b.classList.toggle("active", Number(b.dataset.range) === trend.range.rolling);
    }
    const [from, to] = rangeMs();
    document.getElementById("trend-from").value = epochToLocal(from, true);
    document.getElementById("trend-to").value = epochToLocal(to, true);
  }

  function showTrends() {
    fillTrendForm();
    if (!trend.series.length && hmi.sources.length) addSeries("source", hmi.sources[0].id, "co2_kg");
    renderSeriesList();
    markRange();
    loadTrend();
  }

  function initTrends() {
    document.getElementById("trend-kind").addEventListener("change", fillTrendForm);
    document.getElementById("trend-level").addEventListener("change", (ev) => {
      setLevel(ev.target.value);
      loadTrend();
    });
    document.getElementById("trend-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const kind = document.getElementById("trend-kind").value;
      const id = kind === "tag" ? document.getElementById("trend-tag").value.trim()
        : document.getElementById("trend-id").value;
      addSeries(kind, id, document.getElementById("trend-field").value);
      renderSeriesList();
      loadTrend();
    });
    for (const b of document.querySelectorAll("#trend-ranges button")) {
      b.addEventListener("click", () => {
        trend.range = { rolling: Number(b.dataset.range), from: 0, to: 0 };
        markRange();
        loadTrend();
      });
    }
    document.getElementById("trend-custom").addEventListener("click", () => {
      const from = localToEpoch(document.getElementById("trend-from").value);
      const to = localToEpoch(document.getElementById("trend-to").value);
      if (!(from < to)) {
        setStatus("trend-status", label("时间范围无效", "invalid range"), true);
        return;
      }
      trend.range = { rolling: 0, from, to };
      markRange();
      loadTrend();
    });
    document.getElementById("trend-csv").addEventListener("click", downloadCsv);
    hmi.minuteHooks.push(extendTrend);
    let timer = null;
    window.addEventListener("resize", () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        if (hmi.charts.trend) hmi.charts.trend.setSize({ width: chartWidth(), height: chartHeight() });
      }, 150);
    });
  }

  // ------------------------------------------------------------ hours and days

  // Columns per kind: field, zh, en, unit, decimals.
  const PERIOD_COLUMNS = {
    source: [
      ["co2_t", "CO₂ 排放量", "CO₂", "t", 3], ["co2_measured_t", "实测排放量", "CO₂ measured", "t", 3],
      ["co2_dry_pct", "CO₂ 浓度", "CO₂ dry", "%", 2], ["flow_std_dry_m3_h", "标干流量", "Flow std dry", "m³/h", 0],
      ["n_valid", "有效分钟", "Valid minutes", "", 0],
    ],
    // co2_t: the unit's accounted CO2 (its CEMS, or the factor method for a unit without
    // one); co2e_t adds the other gases by the GWP set; a product unit's output is in t.
    unit: [
      ["co2_t", "核算排放量", "CO₂ accounted", "t", 3], ["co2e_t", "CO₂当量", "CO₂e", "t", 3],
      ["co2_cems_t", "CEMS 排放量", "CO₂ CEMS", "t", 3], ["co2_factor_t", "排放因子法", "CO₂ by factors", "t", 3],
      ["output_mwh", "发电量", "Output", "MWh", 1], ["intensity_t_mwh", "排放强度", "Intensity", "t/MWh", 4],
      ["output_t", "产量", "Output", "t", 1], ["intensity_t_t", "排放强度", "Intensity", "t/t", 4],
      ["reconciliation_diff_pct", "对比偏差", "Reconciliation", "%", 2],
      // hours whose CO2 holds a substitute (a source's hour, a carbon balance's filled hour)
      ["n_substituted", "含替代小时", "Substituted hours", "h", 0],
    ],
    // A stream's unit of quantity is its own (t, 10⁴ m³, MWh, GJ): taken from its rows.
    // Decimals null: a text column.
    stream: [
      ["quantity", "消耗量", "Quantity", "", 3], ["co2_t", "核算排放量", "CO₂ by factors", "t", 3],
      ["co2e_t", "CO₂当量", "CO₂e", "t", 3],
      ["factor_version", "因子版本", "Factor version", "", null], ["method", "核算方法", "Method", "", null],
      ["n_valid", "有效分钟", "Valid minutes", "", 0],
    ],
  };
  const METHODS = {
    ncv_cc_of: ["低位发热量×单位热值含碳量×氧化率", "NCV × CC × OF"],
    measured_carbon: ["实测含碳量×氧化率", "measured carbon × OF"],
    electricity: ["购入电力×排放因子", "MWh × EF"], heat: ["购入热力×排放因子", "GJ × EF"],
    process: ["过程排放×排放因子", "quantity × EF"],
    carbon_input: ["输入物料×含碳量×44/12", "Q × C × 44/12"],
    carbon_output: ["−输出物料×含碳量×44/12", "−Q × C × 44/12"],
    carbonate_oxides: ["产品×(CaO、MgO 含量)×分子量比", "Q × (CaO, MgO) × 44/56.08, 44/40.30"],
    electricity_export: ["−输出电力×排放因子", "−MWh × EF"], heat_export: ["−输出热力×排放因子", "−GJ × EF"],
    electricity_green: ["绿色电力×排放因子", "green MWh × EF"],
    ghg: ["其他温室气体", "other greenhouse gas"],
  };

  function streamItems() {
    return hmi.units.flatMap((u) => (u.streams || []).map((st) => ({
      id: st.id, unit: u.id,
      name: st.name_zh && lang() !== "en" ? st.name_zh : st.name || st.id })));
  }

  function periodDefaults(force) {
    const level = document.getElementById("period-level").value;
    const fromBox = document.getElementById("period-from");
    const toBox = document.getElementById("period-to");
    if (fromBox.value && toBox.value && !force) return;
    const now = Date.now() + state.clockOffsetMs;
    toBox.value = epochToLocal(now + 86_400_000, false);
    fromBox.value = epochToLocal(now - (level === "days" ? 31 : 1) * 86_400_000, false);
  }

  function showPeriods() {
    const options = [
      ...items("source").map((x) => [`source:${x.id}`, `${label("排放源", "source")} ${x.id} · ${x.name}`]),
      ...items("unit").map((x) => [`unit:${x.id}`, `${label("机组", "unit")} ${x.id} · ${x.name}`]),
      ...streamItems().map((x) => [`stream:${x.id}`,
        `${label("燃料/能源", "stream")} ${x.unit} ${x.id} · ${x.name}`]),
    ];
    fillSelect(document.getElementById("period-item"), options, true);
    periodDefaults(false);
    loadPeriods();
  }

  function th(zh, en, unit, cls) {
    return el("th", cls ? { class: cls } : {}, zh, el("span", { class: "en" }, en), ...(unit ? [el("span", { class: "u" }, unit)] : []));
  }

  async function loadPeriods() {
    const [kind, id] = (document.getElementById("period-item").value || ":").split(":");
    if (!id) return;
    const level = document.getElementById("period-level").value;
    const from = localToEpoch(document.getElementById("period-from").value);
    const to = localToEpoch(document.getElementById("period-to").value);
    if (!(from < to)) {
      setStatus("period-status", label("时间范围无效", "invalid range"), true);
      return;
    }
    setStatus("period-status", label("加载中…", "loading…"));
    const res = await api("GET", `/api/v1/${kind}s/${encodeURIComponent(id)}/${level}` +
      `?from=${encodeURIComponent(isoUtc(from))}&to=${encodeURIComponent(isoUtc(to))}`);
    const table = document.getElementById("period-table");
    if (!res.ok) {
      setStatus("period-status", res.message, true);
      table.replaceChildren();
      return;
    }
    const rows = res.body || [];
    const cols = PERIOD_COLUMNS[kind].filter(([f], i) => i < 4 || rows.some((r) => f in r))
      .map((c) => (kind === "stream" && c[0] === "quantity" && rows.length
        ? [c[0], c[1], c[2], rows[0].quantity_unit === "1e4m3" ? "10⁴ m³" : rows[0].quantity_unit, c[4]] : c));
    const head = el("tr", {}, th(level === "days" ? "日期" : "小时", level === "days" ? "Day" : "Hour",
      state.timezone));
    for (const [, zh, en, u] of cols) head.append(th(zh, en, u));
    head.append(th("有效", "Valid", "", "left"), th("标记", "Flag", "", "center"),
      th("替代规则", "Substitution", "", "left"), th("缺失原因", "Missing reason", "", "left"));
    const body = el("tbody", {});
    for (const r of rows) {
      const substituted = !!r.substituted;
      const tr = el("tr", { "data-t": r.t, class: [r.valid === false ? "invalid" : "", substituted ? "substituted" : ""].join(" ").trim() });
      const when = fmtTime(r.t, true);
      tr.append(el("th", { class: "when num", scope: "row" }, level === "days" ? when.slice(0, 10) : when.slice(0, 16)));
      for (const [f, , , , d] of cols) {
        if (d !== null) {
          const exceeded = f === "reconciliation_diff_pct" && r.reconciliation_exceeded;
          tr.append(el("td", { class: exceeded ? "num exceeded" : "num", "data-field": f,
            ...(exceeded ? { title: label("超出对比限值", "over the reconciliation limit") } : {}) },
          fmt(r[f], d), ...(exceeded ? [" ⚠"] : [])));
        } else if (f === "method") {
          const m = METHODS[r.method] || [r.method || DASH, ""];
          tr.append(el("td", { "data-field": f }, m[0], el("span", { class: "en" }, m[1])));
        } else {
          tr.append(el("td", { "data-field": f }, r[f] || DASH));
        }
      }
      tr.append(el("td", { "data-field": "valid", class: "state" },
        ...(r.valid === false ? ["无效", el("span", { class: "en" }, "invalid")] : ["有效", el("span", { class: "en" }, "valid")])));
      const flag = el("span", { "data-field": "flag" });
      hmi.setFlag(flag, r.flag);
      tr.append(el("td", { class: "flag-col" }, flag));
      tr.append(el("td", { "data-field": "substitution_rule" }, substituted ? `${r.substitution_rule || "?"}` : DASH));
      tr.append(el("td", { "data-field": "missing_reason" }, r.missing_reason || r.note || DASH));
      body.append(tr);
    }
    table.replaceChildren(el("thead", {}, head), body);
    const invalid = rows.filter((r) => r.valid === false).length;
    const subst = rows.filter((r) => r.substituted).length;
    setStatus("period-status", `${rows.length} ${label("条", "rows")} · ${invalid} ${label("无效", "invalid")} · ` +
      `${subst} ${label("替代", "substituted")}`, false);
  }

  function initPeriods() {
    document.getElementById("period-load").addEventListener("click", loadPeriods);
    document.getElementById("period-item").addEventListener("change", loadPeriods);
    document.getElementById("period-level").addEventListener("change", () => {
      periodDefaults(true);
      loadPeriods();
    });
  }

  // ------------------------------------------------------------ devices

  const devices = { timer: null, open: null, bound: false, seq: 0 };

  async function loadDevices() {
    const res = await api("GET", "/api/v1/devices");
    const table = document.getElementById("devices-table");
    if (!res.ok) {
      setStatus("devices-status", res.message, true);
      return;
    }
    const buses = res.body.buses || [];
    setStatus("devices-status", buses.length ? "" : label("无设备", "no devices"));
    const head = el("tr", {}, th("总线 / 设备", "Bus / device"), th("状态", "State", "", "left"),
      th("最后错误", "Last error", "", "left"), th("延迟", "Latency", "ms"), th("轮询", "Polls"),
      th("请求", "Requests"), th("错误", "Errors"));
    const body = el("tbody", {});
    for (const b of buses) {
      const up = !!b.connected;
      body.append(el("tr", { class: `bus ${up ? "online" : "offline"}`, "data-bus": b.bus },
        el("th", { scope: "row" }, b.bus),
        el("td", { "data-field": "state" }, el("span", { class: `pill ${up ? "ok" : "bad"}` },
          ...(up ? ["已连接", el("span", { class: "en" }, "connected")] : ["未连接", el("span", { class: "en" }, "disconnected")]))),
        el("td", {}, ""), el("td", {}, ""), el("td", {}, ""),
        el("td", { class: "num" }, fmt(b.requests, 0)), el("td", { class: "num" }, fmt(b.errors, 0))));
      for (const d of b.devices || []) {
        const on = !!d.online;
        body.append(el("tr", { class: `device ${on ? "online" : "offline"}`, "data-device": d.device },
          el("th", { scope: "row", class: "device-name" },
            el("button", { type: "button", class: "device-open", "data-open": d.device,
              "aria-expanded": devices.open === d.device ? "true" : "false",
              title: label("查看原始数据", "show raw tags") }, d.device)),
          el("td", { "data-field": "state" }, el("span", { class: `pill ${on ? "ok" : "bad"}` },
            ...(on ? ["在线", el("span", { class: "en" }, "online")] : ["离线", el("span", { class: "en" }, "offline")]))),
          el("td", { "data-field": "last_error", class: "error" }, d.last_error || DASH),
          el("td", { "data-field": "latency_ms", class: "num" },
            d.polls ? fmt((d.last_latency_s || 0) * 1000, 1) : DASH),
          el("td", { class: "num", "data-field": "polls" }, fmt(d.polls, 0)),
          el("td", { class: "num", "data-field": "requests" }, fmt(d.requests, 0)),
          el("td", { class: "num", "data-field": "errors" }, fmt(d.errors, 0))));
      }
    }
    table.replaceChildren(el("thead", {}, head), body);
    hmi.setText(document.getElementById("devices-time"), fmtTime(isoUtc(Date.now() + state.clockOffsetMs), false));
  }

  // Raw values as read: up to 6 significant digits (float32 registers hold about 7),
  // no padding zeros, so 230.1 V reads "230.1", not "230.100006".
  const rawFormats = new Map();
  function fmtRaw(v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return DASH;
    const whole = Math.abs(v) >= 1 ? Math.floor(Math.log10(Math.abs(v))) + 1 : 1;
    const decimals = Math.max(0, Math.min(4, 6 - whole));
    let nf = rawFormats.get(decimals);
    if (!nf) {
      nf = new Intl.NumberFormat("en-US", { maximumFractionDigits: decimals });
      rawFormats.set(decimals, nf);
    }
    return nf.format(Math.abs(v) < 0.5 * 10 ** -decimals ? 0 : v);
  }

  function fmtAge(s) {
    if (s === null || s === undefined) return DASH;
    if (s < 10) return `${fmt(s, 1)} s`;
    if (s < 120) return `${fmt(s, 0)} s`;
    if (s < 7200) return `${fmt(s / 60, 0)} min`;
    return `${fmt(s / 3600, 1)} h`;
  }

  const QUALITY = { good: ["好", "good"], uncertain: ["可疑", "uncertain"], bad: ["坏", "bad"] };

  async function loadDeviceTags() {
    const id = devices.open;
    const panel = document.getElementById("device-tags-panel");
    if (!id) {
      panel.hidden = true;
      return;
    }
    const seq = ++devices.seq;
    panel.hidden = false;
    hmi.setText(document.getElementById("device-tags-name"), id);
    const res = await api("GET", `/api/v1/devices/${encodeURIComponent(id)}/tags`);
    if (seq !== devices.seq || devices.open !== id) return; // another device was opened
    const table = document.getElementById("device-tags-table");
    if (!res.ok) {
      setStatus("device-tags-status", res.message, true);
      table.replaceChildren();
      return;
    }
    const tags = res.body.tags || [];
    setStatus("device-tags-status", `${tags.length} ${label("个测点", "tags")}`);
    const head = el("tr", {}, th("测点", "Tag"), th("名称", "Name", "", "left"), th("值", "Value"),
      th("单位", "Unit", "", "left"), th("质量", "Quality", "", "left"), th("标记", "Flag", "", "center"),
      th("时间", "Time", state.timezone), th("数据龄", "Age"));
    const body = el("tbody", {});
    for (const t of tags) {
      const q = QUALITY[t.quality];
      const flag = el("span", { "data-field": "flag" });
      hmi.setFlag(flag, t.flag);
      const name = lang() === "en" ? (t.name_en || t.name) : t.name;
      body.append(el("tr", { "data-tag": t.tag, class: `raw ${t.quality || "none"}` },
        el("th", { scope: "row", class: "tag-id" }, t.tag),
        el("td", { "data-field": "name", class: "name" }, name || DASH),
        el("td", { "data-field": "value", class: "num" }, fmtRaw(t.value)),
        el("td", { "data-field": "unit", class: "unit" }, t.unit || ""),
        el("td", { "data-field": "quality", class: "quality" }, ...(q ? [q[0], el("span", { class: "en" }, q[1])] : [DASH])),
        el("td", { class: "flag-col" }, flag),
        el("td", { "data-field": "t", class: "num" }, fmtTime(t.t, true)),
        el("td", { "data-field": "age_s", class: "num" }, fmtAge(t.age_s))));
    }
    table.replaceChildren(el("thead", {}, head), body);
    hmi.setText(document.getElementById("device-tags-time"), fmtTime(res.body.t, false));
  }

  function openDevice(id) {
    devices.open = id;
    for (const b of document.querySelectorAll("#devices-table button.device-open")) {
      b.setAttribute("aria-expanded", b.dataset.open === id ? "true" : "false");
    }
    if (!id) document.getElementById("device-tags-table").replaceChildren();
    loadDeviceTags();
  }

  function refreshDevices() {
    loadDevices();
    loadDeviceTags();
  }

  function startDevices() {
    stopDevices();
    if (!devices.bound) {
      devices.bound = true;
      document.getElementById("devices-table").addEventListener("click", (ev) => {
        const button = ev.target.closest("button.device-open");
        if (button) openDevice(devices.open === button.dataset.open ? null : button.dataset.open);
      });
      document.getElementById("device-tags-close").addEventListener("click", () => openDevice(null));
    }
    refreshDevices();
    devices.timer = setInterval(refreshDevices, 5000);
  }

  function stopDevices() {
    if (devices.timer) clearInterval(devices.timer);
    devices.timer = null;
  }

  // ------------------------------------------------------------ shared

  // For the views in web/static/alarmview.js and allowance.js (loaded after this file):
  // they register what to do when their view is shown in hmi.viewHooks.
  hmi.viewHooks = {};
  hmi.views = { label, setStatus, localToEpoch, epochToLocal, isoUtc, localIso, parts, th, alpha,
    items, COLORS, DASH };

  // ------------------------------------------------------------ start

  document.addEventListener("DOMContentLoaded", () => {
    let saved = null;
    try {
      saved = localStorage.getItem(LANG_KEY);
    } catch (e) { saved = null; }
    wrapZh(document.body);
    new MutationObserver((records) => {
      for (const r of records) {
        if (r.target.nodeType === Node.ELEMENT_NODE && r.target.querySelector(".en")) wrapZh(r.target);
      }
    }).observe(document.body, { childList: true, subtree: true });
    setLang(saved === "en" ? "en" : "zh-CN");
    document.getElementById("lang-switch").addEventListener("click", () => {
      setLang(lang() === "en" ? "zh-CN" : "en");
      if (shown.view === "trends") showTrends();
      if (shown.view === "periods") showPeriods();
    });
    initTrends();
    initPeriods();
    hmi.snapshotHooks.push(() => {
      if (shown.view === "trends" && !trend.series.length) showTrends();
      if (shown.view === "periods" && !document.getElementById("period-item").value) showPeriods();
    });
    hmi.trendCsv = trendCsv;
    hmi.trend = trend;
    window.addEventListener("hashchange", route);
    route();
  });
})();
