// carbonscada HMI allowance view: year-to-date emissions against the pro-rated allowance
// (uPlot), the year-end forecast and shortfall cost, and the monthly totals of every unit.
"use strict";

(() => {
  const hmi = window.hmi;
  const { el, fmt, api, state } = hmi;
  const v = hmi.views;
  const HOUR_SPAN_MS = 31 * 86_400_000; // the hours API answers at most 31 days

  const allowance = { seq: 0, data: null, position: null, months: [] };

  function yearBounds(year) {
    const start = v.localToEpoch(`${year}-01-01T00:00`);
    const end = v.localToEpoch(`${year + 1}-01-01T00:00`);
    return [start, end];
  }

  async function rows(path) {
    const res = await api("GET", path);
    if (!res.ok) throw new Error(res.message);
    return res.body || [];
  }

  function range(from, to) {
    return `from=${encodeURIComponent(v.isoUtc(from))}&to=${encodeURIComponent(v.isoUtc(to))}`;
  }

  // The site's CO2 per closed period: the stored days of every unit summed, then the closed
  // hours after the last stored day (the current day is not closed yet).
  async function sitePeriods(start, end) {
    const totals = new Map(); // period end (epoch s) → t
    const add = (rs, lenMs) => {
      for (const r of rs) {
        const co2 = Number.isFinite(r.co2_t) ? r.co2_t : r.co2_cems_t; // accounted CO2
        if (!Number.isFinite(co2)) continue;
        const x = (Date.parse(r.t) + lenMs) / 1000;
        totals.set(x, (totals.get(x) || 0) + co2);
      }
    };
    let lastDayEnd = start;
    for (const u of v.items("unit")) {
      const days = await rows(`/api/v1/units/${encodeURIComponent(u.id)}/days?${range(start, end)}`);
      for (const d of days) lastDayEnd = Math.max(lastDayEnd, Date.parse(d.t) + 86_400_000);
      add(days, 86_400_000);
    }
    const now = Date.now() + state.clockOffsetMs;
    const hoursTo = Math.min(end, now + 3_600_000);
    if (lastDayEnd < hoursTo) {
      const from = Math.max(lastDayEnd, hoursTo - HOUR_SPAN_MS);
      for (const u of v.items("unit")) {
        add(await rows(`/api/v1/units/${encodeURIComponent(u.id)}/hours?${range(from, hoursTo)}`),
          3_600_000);
      }
    }
    return [...totals.entries()].sort((a, b) => a[0] - b[0]);
  }

  // Columns of the chart: x (period end, epoch s), year-to-date t, pro-rated allowance t,
  // and the forecast line from the last closed period to the year's end.
  function buildData(periods, pos, start, end) {
    const annual = pos && Number.isFinite(pos.annual_t) ? pos.annual_t : null;
    const xs = [start / 1000];
    const ytd = [0];
    let sum = 0;
    for (const [x, co2] of periods) {
      sum += co2;
      xs.push(x);
      ytd.push(sum);
    }
    xs.push(end / 1000);
    ytd.push(null);
    const spanS = (end - start) / 1000;
    const prorated = xs.map((x) => (annual === null ? null : annual * (x - start / 1000) / spanS));
    const forecast = xs.map(() => null);
    if (pos && Number.isFinite(pos.forecast_year_end_t) && periods.length) {
      forecast[xs.length - 2] = sum;
      forecast[xs.length - 1] = pos.forecast_year_end_t;
    }
    return [xs, ytd, prorated, forecast];
  }

  function chartOptions(width) {
    const axisStyle = { stroke: "#9aa4af", grid: { stroke: "#343a42", width: 1 },
      ticks: { stroke: "#343a42", width: 1 } };
    const xValues = (u, splits) => splits.map((ts) => {
      const p = v.parts(ts * 1000);
      return `${p.month}-${p.day}`;
    });
    return {
      width, height: window.innerWidth <= 900 ? 300 : 380,
      series: [
        { label: v.label("日期", "Date") },
        { label: `${v.label("累计排放", "Year to date")} [t]`, stroke: "#58a6ff", width: 2,
          fill: v.alpha("#58a6ff", 0.12) },
        { label: `${v.label("折算配额", "Pro-rated allowance")} [t]`, stroke: "#3fb950", width: 2,
          dash: [6, 4] },
        { label: `${v.label("年末预测", "Year-end forecast")} [t]`, stroke: "#f0a020", width: 2,
          dash: [2, 4], spanGaps: true },
      ],
      axes: [{ ...axisStyle, values: xValues }, { ...axisStyle, label: "t", size: 80 }],
      scales: { x: { time: true } },
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), state.timezone),
      legend: { live: true },
    };
  }

  function drawChart() {
    const box = document.getElementById("allowance-chart");
    if (hmi.charts.allowance) {
      hmi.charts.allowance.destroy();
      delete hmi.charts.allowance;
    }
    box.replaceChildren();
    if (!allowance.data) return;
    const width = Math.max(280, box.clientWidth || 800);
    hmi.charts.allowance = new uPlot(chartOptions(width), allowance.data, box);
  }

  function figure(zh, en, value, unit, cls) {
    return el("div", {}, el("dt", {}, zh, el("span", { class: "en" }, en)),
      el("dd", cls ? { class: cls } : {}, value, ...(unit ? [el("span", { class: "u" }, unit)] : [])));
  }

  function renderFigures(pos) {
    const box = document.getElementById("allowance-figures");
    if (!pos || !pos.t) {
      box.replaceChildren(figure("配额", "Allowance", v.DASH, ""));
      return;
    }
    const short = Number.isFinite(pos.forecast_shortfall_t) && pos.forecast_shortfall_t > 0;
    const ahead = Number.isFinite(pos.ytd_t) && Number.isFinite(pos.prorated_t) &&
      pos.ytd_t > pos.prorated_t;
    box.replaceChildren(
      figure("年度配额", "Annual allowance", fmt(pos.annual_t, 0), "t"),
      figure("年累计排放", "Year to date", fmt(pos.ytd_t, 1), "t", ahead ? "bad" : "ok"),
      figure("折算配额", "Pro-rated allowance", fmt(pos.prorated_t, 1), "t"),
      figure("已用", "Used", fmt(pos.used_pct, 2), "%"),
      figure("年末预测", "Year-end forecast", fmt(pos.forecast_year_end_t, 0), "t"),
      figure("预测缺口", "Forecast shortfall", fmt(pos.forecast_shortfall_t, 0), "t", short ? "bad" : "ok"),
      figure("碳价", "Carbon price", fmt(pos.carbon_price_cny_t, 2), "CNY/t"),
      figure("缺口成本", "Shortfall cost", fmt(pos.shortfall_cost_cny, 0), "CNY", short ? "bad" : "ok"));
    for (const [dd, f] of [...box.querySelectorAll("dd")].map((dd, i) => [dd, FIGURE_FIELDS[i]])) {
      dd.dataset.field = f;
    }
  }
  const FIGURE_FIELDS = ["annual_t", "ytd_t", "prorated_t", "used_pct", "forecast_year_end_t",
    "forecast_shortfall_t", "carbon_price_cny_t", "shortfall_cost_cny"];

  function renderMonths(list) {
    const head = el("tr", {}, v.th("月份", "Month"), v.th("机组", "Unit", "", "left"),
      v.th("排放", "CO₂", "t"), v.th("发电量", "Output", "MWh"), v.th("强度", "Intensity", "t/MWh"),
      v.th("有效天数", "Valid days"), v.th("天数", "Days"));
    const body = el("tbody", {});
    for (const { unit, m } of list) {
      body.append(el("tr", { "data-month": m.month, "data-unit": unit },
        el("th", { scope: "row", class: "num" }, m.month),
        el("td", { class: "state" }, unit),
        el("td", { class: "num", "data-field": "co2_t" },
          fmt(Number.isFinite(m.co2_t) ? m.co2_t : m.co2_cems_t, 1)),
        el("td", { class: "num", "data-field": "output_mwh" }, fmt(m.output_mwh, 1)),
        el("td", { class: "num", "data-field": "intensity_t_mwh" }, fmt(m.intensity_t_mwh, 4)),
        el("td", { class: "num", "data-field": "valid_days" }, fmt(m.valid_days, 0)),
        el("td", { class: "num", "data-field": "days" }, fmt(m.days, 0))));
    }
    document.getElementById("months-table").replaceChildren(el("thead", {}, head), body);
  }

  async function loadAllowance() {
    const seq = ++allowance.seq;
    const yearBox = document.getElementById("allowance-year");
    const year = Number(yearBox.value);
    if (!Number.isInteger(year) || year < 2000 || year > 2100) {
      v.setStatus("allowance-status", v.label("年份无效", "invalid year"), true);
      return;
    }
    const [start, end] = yearBounds(year);
    v.setStatus("allowance-status", v.label("加载中…", "loading…"));
    try {
      const res = await api("GET", "/api/v1/allowance");
      const pos = res.ok ? res.body : null;
      // The position is the current year's: shown only when it is the year asked for.
      const current = pos && pos.t && Date.parse(pos.t) > start && Date.parse(pos.t) <= end;
      const periods = await sitePeriods(start, end);
      const list = [];
      for (const u of v.items("unit")) {
        for (const m of await rows(`/api/v1/units/${encodeURIComponent(u.id)}/months?${range(start, end)}`)) {
          list.push({ unit: u.id, m });
        }
      }
      if (seq !== allowance.seq) return;
      allowance.position = current ? pos : null;
      allowance.data = buildData(periods, current ? pos : { annual_t: pos && pos.annual_t }, start, end);
      allowance.months = list;
      renderFigures(allowance.position);
      drawChart();
      renderMonths(list);
      v.setStatus("allowance-status", `${periods.length} ${v.label("个已结束周期", "closed periods")}`);
    } catch (err) {
      if (seq === allowance.seq) v.setStatus("allowance-status", String(err.message || err), true);
    }
  }

  function showAllowance() {
    const box = document.getElementById("allowance-year");
    if (!box.value) box.value = v.parts(Date.now() + state.clockOffsetMs).year;
    if (v.items("unit").length) loadAllowance();
  }

  hmi.viewHooks.allowance = showAllowance;
  hmi.allowance = allowance;
  hmi.snapshotHooks.push(() => {
    if (document.body.dataset.view === "allowance" && !allowance.data) showAllowance();
  });

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("allowance-load").addEventListener("click", loadAllowance);
    window.addEventListener("resize", () => {
      if (document.body.dataset.view === "allowance" && allowance.data) drawChart();
    });
  });
})();

// ------------------------------------------------------------------ carbon assets (issue 17)
// The compliance position of a year (GET /api/v1/carbon/position), the holdings per
// instrument, the monthly trend (/carbon/trend) and the ledger of carbon-asset entries
// (/carbon/entries, newest first, reversed ones marked); for engineers a form per entry
// kind and a CSV import. The server checks every entry: its refusal is shown by the form.
(() => {
  const hmi = window.hmi;
  const { el, fmt, fmtTime, api, state } = hmi;
  const v = hmi.views;
  const ROLES = ["viewer", "operator", "engineer", "admin"];

  const INSTRUMENTS = {
    national_allowance: ["全国配额", "national allowance"],
    local_allowance: ["地方配额", "local allowance"],
    ccer: ["CCER", "CCER"],
    other_offset: ["其他核证减排量", "other offset"],
  };
  const SIDES = {
    pre: ["预分配", "pre-allocation"], final: ["核定分配", "final allocation"],
    adjustment: ["调整", "adjustment"], buy: ["买入", "buy"], sell: ["卖出", "sell"],
    in: ["转入", "in"], out: ["转出", "out"],
    renewable_mwh: ["可再生能源发电", "renewable generation"],
    green_certificate_mwh: ["绿证", "green certificates"], ccus_t: ["CCUS 封存", "CCUS captured"],
  };
  const SIDE_UNITS = { renewable_mwh: "MWh", green_certificate_mwh: "MWh", ccus_t: "t" };
  const ALLOWANCES = ["national_allowance", "local_allowance"];
  const OFFSETS = ["ccer", "other_offset"];
  const ALL = [...ALLOWANCES, ...OFFSETS];
  // The entry kinds and the fields of their forms (the body the server takes: server/assets.py).
  const KINDS = {
    allocation: ["配额分配", "allocation", ["year", ["instrument", ALLOWANCES],
      ["side", ["pre", "final", "adjustment"]], "quantity_t", "t", "document", "reason"]],
    acquisition: ["CCER 等取得", "acquisition", ["year", ["instrument", [...OFFSETS, ...ALLOWANCES]],
      "quantity_t", "price_cny_t", "vintage", "counterparty", "t", "document", "reason"]],
    trade: ["交易", "trade", ["year", ["instrument", ALL], ["side", ["buy", "sell"]],
      "quantity_t", "price_cny_t", "counterparty", "t", "document", "reason"]],
    surrender: ["清缴", "surrender", ["year", ["instrument", ALL], "quantity_t", "t",
      "document", "reason"]],
    transfer: ["划转", "transfer", ["year", ["instrument", ALL], ["side", ["in", "out"]],
      "quantity_t", "counterparty", "t", "document", "reason"]],
    price: ["碳价", "price", [["instrument", ALL], "price_cny_t", "t", "document"]],
    reduction: ["减排量", "reduction", ["year", ["side", ["renewable_mwh",
      "green_certificate_mwh", "ccus_t"]], "quantity_t", "t", "document", "reason"]],
    verified: ["核查排放量", "verified emissions", ["year", "quantity_t", "t", "document",
      "reason"]],
    reversal: ["冲销", "reversal", ["reverses", "reason", "document"]],
  };
  const FIELDS = {
    year: ["履约年度", "Compliance year", "", "number"],
    instrument: ["品种", "Instrument", "", "select"],
    side: ["方向/类型", "Side", "", "select"],
    quantity_t: ["数量", "Quantity", "t", "number"],
    price_cny_t: ["价格", "Price", "CNY/t", "number"],
    counterparty: ["交易对方", "Counterparty", "", "text"],
    vintage: ["减排年份", "Vintage", "", "number"],
    t: ["日期时间", "Date and time", "", "datetime-local"],
    document: ["依据文件", "Document", "", "text"],
    reverses: ["冲销编号", "Entry to reverse", "#", "number"],
    reason: ["原因", "Reason", "", "text"],
  };

  const carbon = { year: null, position: null, trend: [], entries: [], seq: 0, role: null };

  function hasRole(needed) {
    const s = state.session;
    return !!s && ROLES.indexOf(s.role) >= ROLES.indexOf(needed);
  }

  function bi(zh, en) {
    return [zh, el("span", { class: "en" }, en)];
  }

  function zone() {
    return state.timezone || "UTC";
  }

  function name(table, key) {
    const x = table[key];
    return x ? bi(x[0], x[1]) : [key || v.DASH];
  }

  const localIso = v.localIso;

  function localInput(ms) {
    const p = v.parts(ms);
    return `${p.year}-${p.month}-${p.day}T${p.hour}:${p.minute}`;
  }

  // ------------------------------------------------------------ position

  function figure(field, zh, en, value, unit, opts) {
    const o = opts || {};
    return el("div", { "data-figure": field },
      el("dt", {}, zh, el("span", { class: "en" }, en)),
      el("dd", { "data-field": field, ...(o.cls ? { class: o.cls } : {}) }, value,
        ...(unit ? [el("span", { class: "u" }, unit)] : [])),
      ...(o.sub ? [el("div", { class: "sub", "data-sub": field }, ...o.sub)] : []));
  }

  function renderPosition() {
    const p = carbon.position;
    const box = document.getElementById("carbon-figures");
    const red = document.getElementById("carbon-reductions");
    hmi.setText(document.getElementById("carbon-year"), p ? String(p.year) : "");
    if (!p) {
      box.replaceChildren();
      red.replaceChildren();
      return;
    }
    const verified = p.emissions_basis === "verified";
    const deficit = p.deficit_t > 0;
    const fcDeficit = p.forecast_deficit_t > 0;
    const priceAt = p.price_t ? `${fmtTime(p.price_t, true).slice(0, 10)}` : "";
    const deadline = p.surrender_deadline || "";
    const days = p.days_to_deadline_d;
    box.replaceChildren(
      figure("emissions_t", verified ? "核查排放量" : "实时排放量",
        verified ? "Verified emissions" : "Live emissions", fmt(p.emissions_t, 1), "t",
        { sub: bi(verified ? "核查" : "实时（未核查）", verified ? "verified" : "live, not verified") }),
      figure("allowances_t", "持有配额", "Allowances held", fmt(p.allowances_t, 1), "t"),
      figure("offsets_held_t", "持有抵销量", "Offsets held", fmt(p.offsets_held_t, 1), "t"),
      figure("offsets_eligible_t", "可用抵销量", "Offsets eligible", fmt(p.offsets_eligible_t, 1), "t",
        { sub: [`${v.label("上限", "limit")} ${fmt(p.offset_limit_pct, 1)} %`] }),
      deficit
        ? figure("deficit_t", "缺口", "Deficit", fmt(p.deficit_t, 1), "t", { cls: "bad" })
        : figure("surplus_t", "盈余", "Surplus", fmt(p.surplus_t, 1), "t", { cls: "ok" }),
      figure("deficit_cost_cny", "补足成本", "Cost of closing", fmt(p.deficit_cost_cny, 0), "CNY",
        { cls: deficit ? "bad" : "", sub: [`@ ${fmt(p.price_cny_t, 2)} CNY/t ${priceAt}`] }),
      figure("price_cny_t", "最新碳价", "Latest price", fmt(p.price_cny_t, 2), "CNY/t",
        { sub: [priceAt || v.DASH] }),
      figure("holdings_value_cny", "持有配额价值", "Value of holdings", fmt(p.holdings_value_cny, 0), "CNY"),
      figure("forecast_year_end_t", "年末预测排放", "Year-end forecast", fmt(p.forecast_year_end_t, 0), "t",
        { sub: [`${fmt(p.forecast_low_t, 0)} – ${fmt(p.forecast_high_t, 0)} t`] }),
      figure("forecast_deficit_t", "预测缺口", "Forecast deficit", fmt(p.forecast_deficit_t, 0), "t",
        { cls: fcDeficit ? "bad" : "ok" }),
      figure("surrendered_t", "已清缴", "Surrendered", fmt(p.surrendered_t, 1), "t"),
      figure("days_to_deadline_d", "距清缴截止", "Days to surrender deadline", fmt(days, 0), "d",
        { cls: Number.isFinite(days) && days < 30 && deficit ? "bad" : "", sub: [deadline] }));
    red.replaceChildren(
      figure("renewable_avoided_t", "可再生能源减排", "Renewable avoided", fmt(p.renewable_avoided_t, 1), "t CO₂",
        { sub: [`${fmt(p.renewable_mwh, 1)} MWh`] }),
      figure("green_certificate_avoided_t", "绿证减排", "Green certificates", fmt(p.green_certificate_avoided_t, 1), "t CO₂"),
      figure("ccus_t", "CCUS 封存", "CCUS captured", fmt(p.ccus_t, 1), "t CO₂"),
      figure("reductions_t", "减排量合计", "Reductions", fmt(p.reductions_t, 1), "t CO₂"),
      figure("net_emissions_t", "扣减后净排放", "Net emissions", fmt(p.net_emissions_t, 1), "t",
        { sub: bi("仅供参考", "for information") }));
  }

  function renderHoldings() {
    const p = carbon.position;
    const rows = p && Array.isArray(p.holdings) ? p.holdings
      : p && p.holdings ? Object.values(p.holdings) : [];
    const head = el("tr", {}, v.th("品种", "Instrument", "", "left"), v.th("分配", "Allocated", "t"),
      v.th("买入", "Bought", "t"), v.th("卖出", "Sold", "t"), v.th("转入", "In", "t"),
      v.th("转出", "Out", "t"), v.th("清缴", "Surrendered", "t"), v.th("持有", "Held", "t"));
    const body = el("tbody", {});
    for (const h of rows) {
      body.append(el("tr", { "data-instrument": h.instrument },
        el("th", { scope: "row" }, ...name(INSTRUMENTS, h.instrument)),
        ...["allocated_t", "bought_t", "sold_t", "transferred_in_t", "transferred_out_t",
          "surrendered_t", "held_t"].map((f) => el("td", { class: "num", "data-field": f }, fmt(h[f], 1)))));
    }
    document.getElementById("carbon-holdings-table").replaceChildren(el("thead", {}, head), body);
  }

  // ------------------------------------------------------------ trend

  function trendData() {
    const xs = carbon.trend.map((m) => Number(m.month));
    const col = (f) => carbon.trend.map((m) => (Number.isFinite(m[f]) ? m[f] : null));
    return [xs, col("emissions_t"), col("cumulative_t"), col("allowance_prorated_t"), col("gap_t")];
  }

  function drawTrend() {
    const box = document.getElementById("carbon-trend-chart");
    if (hmi.charts.carbonTrend) {
      hmi.charts.carbonTrend.destroy();
      delete hmi.charts.carbonTrend;
    }
    box.replaceChildren();
    if (!carbon.trend.length || typeof uPlot === "undefined") return;
    const width = Math.max(280, box.clientWidth || 800);
    const axisStyle = { stroke: "#9aa4af", grid: { stroke: "#343a42", width: 1 },
      ticks: { stroke: "#343a42", width: 1 } };
    const bars = uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.6, 60] }) : undefined;
    const opts = {
      width, height: window.innerWidth <= 900 ? 260 : 320,
      series: [
        { label: v.label("月份", "Month") },
        { label: `${v.label("月排放", "Monthly")} [t]`, stroke: "#58a6ff", fill: v.alpha("#58a6ff", 0.35),
          paths: bars, points: { show: false } },
        { label: `${v.label("累计", "Cumulative")} [t]`, stroke: "#d2a8ff", width: 2 },
        { label: `${v.label("折算配额", "Pro-rated allowance")} [t]`, stroke: "#3fb950", width: 2, dash: [6, 4] },
        { label: `${v.label("差额", "Gap")} [t]`, stroke: "#f0a020", width: 2, dash: [2, 4] },
      ],
      // x is the month number 1..12 of the compliance year, one tick a month.
      axes: [{ ...axisStyle, splits: () => [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
        // "2026-01" where there is room, the month alone on a narrow screen
        values: (u, splits) => splits.map((m) => (width >= 1000 ? `${carbon.year}-` : "") + String(m).padStart(2, "0")) },
      { ...axisStyle, label: "t", size: 80 }],
      scales: { x: { time: false, range: () => [0.5, 12.5] } },
      legend: { live: true },
    };
    hmi.charts.carbonTrend = new uPlot(opts, trendData(), box);
  }

  function renderTrend() {
    // Intensity against the plant's target (carbon.intensity_target_t_mwh) when it has one.
    const target = carbon.trend.some((m) => Number.isFinite(m.intensity_target_t_mwh));
    const cols = [["emissions_t", 1], ["cumulative_t", 1], ["allowance_prorated_t", 1], ["gap_t", 1],
      ["output_mwh", 1], ["intensity_t_mwh", 4],
      ...(target ? [["intensity_target_t_mwh", 4], ["intensity_gap_t_mwh", 4]] : [])];
    const head = el("tr", {}, v.th("月份", "Month"), v.th("排放", "Emissions", "t"),
      v.th("累计", "Cumulative", "t"), v.th("折算配额", "Pro-rated allowance", "t"), v.th("差额", "Gap", "t"),
      v.th("发电量", "Output", "MWh"), v.th("排放强度", "Intensity", "t/MWh"),
      ...(target ? [v.th("强度目标", "Target", "t/MWh"), v.th("超出目标", "Above target", "t/MWh")] : []));
    const body = el("tbody", {});
    for (const m of carbon.trend) {
      body.append(el("tr", { "data-month": String(m.month) },
        el("th", { scope: "row", class: "num" }, `${carbon.year}-${String(m.month).padStart(2, "0")}`),
        ...cols.map(([f, d]) => {
          const bad = (f === "gap_t" && m[f] < 0) || (f === "intensity_gap_t_mwh" && m[f] > 0);
          return el("td", { class: `num${bad ? " bad" : ""}`, "data-field": f }, fmt(m[f], d));
        })));
    }
    document.getElementById("carbon-trend-table").replaceChildren(el("thead", {}, head), body);
    drawTrend();
  }

  // ------------------------------------------------------------ ledger

  function detail(e) {
    const parts = [];
    if (e.side) parts.push(SIDES[e.side] ? v.label(...SIDES[e.side]) : e.side);
    if (e.counterparty) parts.push(`${v.label("对方", "counterparty")}: ${e.counterparty}`);
    if (e.vintage !== null && e.vintage !== undefined) parts.push(`${v.label("年份", "vintage")} ${e.vintage}`);
    if (e.reverses !== null && e.reverses !== undefined) parts.push(`${v.label("冲销", "reverses")} #${e.reverses}`);
    return parts.join(" · ") || v.DASH;
  }

  // A time for a table cell: date and time each kept whole when the cell wraps.
  function whenCell(iso) {
    const [day, time] = fmtTime(iso, true).split(" ");
    return time ? [el("span", { class: "d" }, day), " ", el("span", { class: "d" }, time)] : [day];
  }

  // The column headers as the cells' labels, for the cards of a narrow screen (style.css).
  function labelCells(table) {
    const heads = [...table.querySelectorAll("thead th")].map((h) => {
      const en = h.querySelector(".en");
      const zh = h.firstChild ? h.firstChild.textContent : "";
      return v.label(zh.trim(), en ? en.textContent : "");
    });
    for (const tr of table.querySelectorAll("tbody tr")) {
      [...tr.children].forEach((td, i) => { if (heads[i]) td.dataset.label = heads[i]; });
    }
  }

  function renderEntries() {
    const reversed = new Map();
    for (const e of carbon.entries) {
      if (e.reversed_by) reversed.set(e.id, e.reversed_by);
      if (e.kind === "reversal" && e.reverses !== null && e.reverses !== undefined) reversed.set(e.reverses, e.id);
    }
    const list = [...carbon.entries].sort((a, b) => b.id - a.id);
    hmi.setText(document.getElementById("carbon-entries-count"), String(list.length));
    const engineer = hasRole("engineer");
    const head = el("tr", {}, v.th("编号", "No."), v.th("类型", "Kind", "", "left"),
      v.th("时间", "Time", zone(), "left"), v.th("年度", "Year"), v.th("品种", "Instrument", "", "left"),
      v.th("数量", "Quantity", "t"), v.th("价格", "Price", "CNY/t"), v.th("详情", "Detail", "", "left"),
      v.th("依据文件", "Document", "", "left"), v.th("原因", "Reason", "", "left"),
      v.th("录入人", "User", "", "left"), ...(engineer ? [v.th("操作", "Action", "", "left")] : []));
    const body = el("tbody", {});
    for (const e of list) {
      const by = reversed.get(e.id);
      const qUnit = e.kind === "reduction" ? SIDE_UNITS[e.side] || "" : "";
      const row = el("tr", { "data-entry": String(e.id), "data-kind": e.kind,
        class: by ? "reversed" : e.kind === "reversal" ? "reversal" : "" },
        el("td", { class: "num" }, `#${e.id}`),
        el("td", { "data-field": "kind" }, ...name(KINDS, e.kind),
          ...(by ? [el("span", { class: "rev-mark", "data-field": "reversed_by" }, v.label(`已冲销 #${by}`, `reversed by #${by}`))] : [])),
        el("td", { "data-field": "t", class: "num" }, ...whenCell(e.t)),
        el("td", { "data-field": "year", class: "num" }, e.year ? String(e.year) : v.DASH),
        el("td", { "data-field": "instrument" }, ...(e.instrument ? name(INSTRUMENTS, e.instrument) : [v.DASH])),
        el("td", { "data-field": "quantity_t", class: "num" }, fmt(e.quantity_t, 1), ...(qUnit ? [el("span", { class: "u" }, qUnit)] : [])),
        el("td", { "data-field": "price_cny_t", class: "num" }, fmt(e.price_cny_t, 2)),
        el("td", { "data-field": "detail", class: "wrap" }, detail(e)),
        el("td", { "data-field": "document" }, e.document || v.DASH),
        el("td", { "data-field": "reason", class: "wrap" }, e.reason || v.DASH),
        el("td", { "data-field": "user" }, e.user || v.DASH));
      if (engineer) {
        const cell = el("td", { class: "actions" });
        if (!by && e.kind !== "reversal") {
          const b = el("button", { type: "button", class: "reverse", "data-reverse": String(e.id) }, ...bi("冲销", "Reverse"));
          b.addEventListener("click", () => startReversal(e.id));
          cell.append(b);
        }
        row.append(cell);
      }
      body.append(row);
    }
    const table = document.getElementById("carbon-entries-table");
    table.replaceChildren(el("thead", {}, head), body);
    labelCells(table);
  }

  // ------------------------------------------------------------ forms

  function inputFor(kind, spec) {
    const [field, options] = Array.isArray(spec) ? spec : [spec, null];
    const [zh, en, unit, type] = FIELDS[field];
    const id = `carbon-${kind}-${field}`;
    let input;
    if (type === "select") {
      const table = field === "instrument" ? INSTRUMENTS : SIDES;
      input = el("select", { id, name: field },
        ...options.map((o) => el("option", { value: o }, table[o] ? `${table[o][0]} / ${table[o][1]}` : o)));
    } else {
      const attrs = { id, name: field, type: type === "text" ? "text" : type };
      if (type === "number") Object.assign(attrs, { step: "any", class: "num" });
      if (type === "datetime-local") attrs.step = "60";
      if (type === "text") attrs.maxlength = field === "reason" ? "1000" : "200";
      if (field === "year" || field === "vintage" || field === "reverses") Object.assign(attrs, { step: "1", min: field === "reverses" ? "1" : "2000" });
      input = el("input", attrs);
    }
    const required = field === "reason" && kind === "reversal";
    const shownUnit = field === "quantity_t" && kind === "reduction" ? "unit-by-side" : unit;
    return el("label", { class: field === "reason" || field === "document" || field === "counterparty" ? "wide" : "" },
      zh, ...(required ? ["（必填）"] : []), el("span", { class: "en" }, en + (required ? " (required)" : "")), " ", input,
      ...(shownUnit ? [el("span", { class: "u", id: `${id}-unit` }, shownUnit === "unit-by-side" ? "MWh" : shownUnit)] : []),
      ...(field === "t" ? [el("span", { class: "u carbon-tz" }, zone())] : []));
  }

  function buildForms() {
    const box = document.getElementById("carbon-kind-forms");
    const select = document.getElementById("carbon-kind");
    select.replaceChildren(...Object.entries(KINDS).map(([k, [zh, en]]) =>
      el("option", { value: k }, `${zh} / ${en}`)));
    box.replaceChildren(...Object.entries(KINDS).map(([kind, [zh, en, fields]]) => {
      const form = el("form", { id: `carbon-form-${kind}`, class: "rec-form carbon-form", "data-kind": kind,
        novalidate: "", autocomplete: "off" },
        el("h3", {}, zh, el("span", { class: "en" }, en)),
        el("div", { class: "controls" }, ...fields.map((f) => inputFor(kind, f)),
          el("button", { type: "submit", class: "primary", id: `carbon-${kind}-submit` }, ...bi("提交", "Submit"))),
        el("p", { id: `carbon-${kind}-msg`, class: "status", role: "status" }));
      form.hidden = kind !== select.value;
      form.addEventListener("submit", (ev) => submitEntry(ev, kind));
      return form;
    }));
    const side = document.getElementById("carbon-reduction-side");
    side.addEventListener("change", () => hmi.setText(document.getElementById("carbon-reduction-quantity_t-unit"),
      SIDE_UNITS[side.value] || ""));
    select.addEventListener("change", () => showForm(select.value));
  }

  function showForm(kind) {
    document.getElementById("carbon-kind").value = kind;
    for (const f of document.querySelectorAll("#carbon-kind-forms form")) f.hidden = f.dataset.kind !== kind;
  }

  function startReversal(id) {
    showForm("reversal");
    document.getElementById("carbon-reversal-reverses").value = String(id);
    const reason = document.getElementById("carbon-reversal-reason");
    reason.focus();
    reason.scrollIntoView({ block: "center" });
  }

  function defaults() {
    const now = Date.now() + state.clockOffsetMs;
    for (const input of document.querySelectorAll("#carbon-kind-forms input[name=t]")) {
      if (!input.value) input.value = localInput(now - (now % 60_000));
    }
    for (const input of document.querySelectorAll("#carbon-kind-forms input[name=year]")) {
      if (!input.value && carbon.year) input.value = String(carbon.year);
    }
  }

  async function submitEntry(ev, kind) {
    ev.preventDefault();
    const msgId = `carbon-${kind}-msg`;
    const form = document.getElementById(`carbon-form-${kind}`);
    const body = { kind };
    for (const input of form.querySelectorAll("input, select")) {
      const f = input.name;
      const text = input.value.trim();
      if (f === "t") {
        const iso = localIso(text);
        if (!iso) {
          v.setStatus(msgId, v.label("请填写时间（厂区当地时间）", "enter a time (plant local time)"), true);
          return;
        }
        body.t = iso;
      } else if (input.type === "number") {
        if (text !== "") body[f] = Number(text);
      } else {
        body[f] = text;
      }
    }
    v.setStatus(msgId, v.label("提交中…", "submitting…"));
    const res = await api("POST", "/api/v1/carbon/entries", body);
    if (!res.ok) {
      v.setStatus(msgId, res.message, true);
      return;
    }
    const e = res.body && res.body.entry ? res.body.entry : res.body;
    v.setStatus(msgId, `${v.label("已记录", "entered")} #${e && e.id}`, false);
    for (const input of form.querySelectorAll("input[name=quantity_t], input[name=reason], input[name=reverses]")) input.value = "";
    await load();
  }

  async function submitCsv(ev) {
    ev.preventDefault();
    const file = document.getElementById("carbon-csv-file").files[0];
    const msgId = "carbon-csv-msg";
    if (!file) {
      v.setStatus(msgId, v.label("请选择 CSV 文件", "choose a CSV file"), true);
      return;
    }
    v.setStatus(msgId, v.label("导入中…", "importing…"));
    const headers = { Accept: "application/json", "Content-Type": "text/csv" };
    if (state.session) headers["X-CSRF-Token"] = state.session.csrf_token;
    let res;
    let data = null;
    try {
      res = await fetch("/api/v1/carbon/entries/import", {
        method: "POST", headers, body: file, credentials: "same-origin", cache: "no-store",
      });
      data = await res.json().catch(() => null);
    } catch (e) {
      v.setStatus(msgId, "无法连接服务器 / server unreachable", true);
      return;
    }
    if (!res.ok) {
      v.setStatus(msgId, `${v.label("导入被拒绝", "import refused")}: ${(data && data.error) || `HTTP ${res.status}`}`, true);
      return;
    }
    const n = Array.isArray(data) ? data.length : data && Array.isArray(data.entries) ? data.entries.length : 0;
    v.setStatus(msgId, `${v.label("已导入", "imported")} ${n} ${v.label("条记录", "entries")}`, false);
    document.getElementById("carbon-csv-file").value = "";
    await load();
  }

  function gate() {
    carbon.role = state.session ? state.session.role : null;
    const engineer = hasRole("engineer");
    document.getElementById("carbon-forms").hidden = !engineer;
    document.getElementById("carbon-role").hidden = engineer;
    for (const node of document.querySelectorAll(".carbon-tz")) hmi.setText(node, zone());
  }

  // ------------------------------------------------------------ loading

  async function load() {
    const seq = ++carbon.seq;
    const year = Number(document.getElementById("allowance-year").value);
    if (!Number.isInteger(year) || year < 2000 || year > 2100) return;
    gate();
    v.setStatus("carbon-status", v.label("加载中…", "loading…"));
    const [pos, trend, entries] = await Promise.all([
      api("GET", `/api/v1/carbon/position?year=${year}`), api("GET", `/api/v1/carbon/trend?year=${year}`),
      api("GET", "/api/v1/carbon/entries")]);
    if (seq !== carbon.seq) return;
    carbon.year = year;
    // A server without a carbon-asset keeper (503): only the note, not the empty panels.
    document.getElementById("view-allowance").dataset.carbon = pos.status === 503 || pos.status === 404 ? "off" : "on";
    if (!pos.ok) {
      carbon.position = null;
      v.setStatus("carbon-status", pos.status === 404 || pos.status === 503
        ? v.label("碳资产台账未启用", "carbon assets not available") : pos.message, true);
    } else {
      carbon.position = pos.body;
      const p = pos.body;
      v.setStatus("carbon-status", `${year} · ${p.emissions_basis === "verified"
        ? v.label("按核查排放量", "on verified emissions") : v.label("按实时排放量", "on live emissions")}`);
    }
    carbon.trend = trend.ok && Array.isArray(trend.body) ? trend.body
      : trend.ok && trend.body && Array.isArray(trend.body.months) ? trend.body.months : [];
    carbon.entries = entries.ok && Array.isArray(entries.body) ? entries.body : [];
    if (!entries.ok && pos.ok) v.setStatus("carbon-entries-status", entries.message, true);
    renderPosition();
    renderHoldings();
    renderTrend();
    renderEntries();
    defaults();
  }

  hmi.carbon = carbon;
  hmi.carbonLoad = load;
  // Built and set now (a deferred script runs on the parsed page), before views.js routes
  // on DOMContentLoaded: a page opened at #/allowance.
  buildForms();
  const prev = hmi.viewHooks.allowance;
  hmi.viewHooks.allowance = () => {
    prev();
    gate();
    load();
  };
  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("carbon-csv-form").addEventListener("submit", submitCsv);
    // After views.js's own listener has switched the language: texts made with v.label.
    document.getElementById("lang-switch").addEventListener("click", () => {
      if (document.body.dataset.view !== "allowance" || carbon.year === null) return;
      renderPosition();
      renderHoldings();
      renderTrend();
      renderEntries();
    });
    document.getElementById("allowance-load").addEventListener("click", load);
    new MutationObserver(() => {
      const role = state.session ? state.session.role : null;
      if (document.body.dataset.view === "allowance" && role !== carbon.role) {
        gate();
        renderEntries();
        defaults();
      }
    }).observe(document.body, { attributes: true, attributeFilter: ["data-role"] });
    window.addEventListener("resize", () => {
      if (document.body.dataset.view === "allowance" && carbon.trend.length) drawTrend();
    });
  });
})();
