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
        const co2 = r.co2_cems_t;
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
        el("td", { class: "num", "data-field": "co2_cems_t" }, fmt(m.co2_cems_t, 1)),
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
