// carbonscada HMI performance view: the year's carbon performance per unit and for the site
// (through /api/v1/performance; web/performance.py): the baseline and the baseline
// normalised to this year's output, the target to date (prorated by plant-local days and by
// the quarters' shares), progress bars, the deviations and the intensity against the
// configured benchmark or best-in-class values with their sources.
"use strict";

(() => {
  const hmi = window.hmi;
  const { el, fmt } = hmi;
  const v = hmi.views;
  const KINDS = {
    benchmark: ["基准值", "benchmark"], best_in_class: ["先进值", "best in class"],
    advanced: ["领先值", "advanced"],
  };
  const perf = { seq: 0, data: null, bound: false };

  function has(x) {
    return x !== null && x !== undefined && Number.isFinite(x);
  }

  function num(x, digits) {
    return has(x) ? fmt(x, digits) : v.DASH;
  }

  function signed(x, digits) {
    return has(x) ? `${x > 0 ? "+" : ""}${fmt(x, digits)}` : v.DASH;
  }

  // A row's output and intensity keys carry their unit (_mwh / _t, _t_mwh / _t_t).
  function output(r, base) {
    return r.output_unit === "t" ? r[`${base}_t`] : r[`${base}_mwh`];
  }

  function intensity(r, base) {
    return r.output_unit === "t" ? r[`${base}_t_t`] : r[`${base}_t_mwh`];
  }

  function intensityUnit(r) {
    return r.output_unit === "t" ? "t/t" : r.output_unit === "MWh" ? "t/MWh" : "";
  }

  // The id in an element of its own: a bare text node beside an .en span would be taken
  // for Chinese (views.js wrapZh) and hidden in English.
  function unitName(id) {
    if (id === "site") return [el("span", {}, "全厂", el("span", { class: "en" }, "Site"))];
    const u = v.items("unit").find((x) => x.id === id);
    const ident = el("span", { class: "perf-id" }, id);
    return u ? [ident, " ", ...hmi.bilingual(u.name_zh, u.name)] : [ident];
  }

  // Deviation above the target is bad, within it good; no target: neither.
  function devClass(x) {
    return has(x) ? (x > 0 ? "num bad" : "num ok") : "num";
  }

  // The year's target used so far, with a mark where the days passed put it on plan.
  function progressBar(r, data) {
    const used = r.target_used_pct;
    const span = el("span", { class: has(r.deviation_ytd_pct) && r.deviation_ytd_pct > 0 ? "bad" : "" });
    const mark = el("i", { class: "mark" });
    const bar = el("div", { class: "bar perf-bar", role: "img",
      "aria-label": has(used) ? `${fmt(used, 1)} %` : v.DASH }, span, mark);
    // Set through the CSSOM: the page's CSP allows no inline style attribute.
    span.style.width = has(used) ? `${Math.max(0, Math.min(100, used))}%` : "0";
    mark.style.left = `${data.days_elapsed_d / data.days_in_year_d * 100}%`;
    mark.hidden = !has(used);
    return bar;
  }

  function progressRow(r, data) {
    const iu = intensityUnit(r);
    return el("tr", { "data-unit": r.unit },
      el("th", { scope: "row", class: "left" }, ...unitName(r.unit)),
      el("td", { class: "num", "data-field": "co2_ytd_t" }, num(r.co2_ytd_t, 1)),
      el("td", { class: "num", "data-field": "target_ytd_t" }, num(r.target_ytd_t, 1)),
      el("td", { class: devClass(r.deviation_ytd_t), "data-field": "deviation_ytd_t" }, signed(r.deviation_ytd_t, 1)),
      el("td", { class: devClass(r.deviation_ytd_pct), "data-field": "deviation_ytd_pct" }, signed(r.deviation_ytd_pct, 2)),
      el("td", { class: "num", "data-field": "target_used_pct" }, num(r.target_used_pct, 1), progressBar(r, data)),
      el("td", { class: "num", "data-field": "co2_qtd_t" }, num(r.co2_qtd_t, 1)),
      el("td", { class: "num", "data-field": "target_qtd_t" }, num(r.target_qtd_t, 1)),
      el("td", { class: devClass(r.deviation_qtd_pct), "data-field": "deviation_qtd_pct" }, signed(r.deviation_qtd_pct, 2)),
      el("td", { class: devClass(r.deviation_ytd_quarters_pct), "data-field": "deviation_ytd_quarters_pct" },
        signed(r.deviation_ytd_quarters_pct, 2)),
      el("td", { class: "num", "data-field": "intensity_ytd" }, num(intensity(r, "intensity_ytd"), 4),
        iu ? el("span", { class: "u" }, iu) : ""),
      el("td", { class: "num", "data-field": "target_intensity" }, num(intensity(r, "target_intensity"), 4)),
      el("td", { class: "num", "data-field": "output_ytd" }, num(output(r, "output_ytd"), 1),
        r.output_unit ? el("span", { class: "u" }, r.output_unit) : ""),
      el("td", { class: "num", "data-field": "baseline_intensity" }, num(intensity(r, "baseline_intensity"), 4)),
      el("td", { class: "num", "data-field": "normalised_baseline_ytd_t" }, num(r.normalised_baseline_ytd_t, 1)),
      el("td", { class: devClass(r.vs_baseline_pct), "data-field": "vs_baseline_pct" }, signed(r.vs_baseline_pct, 2)));
  }

  function renderProgress(data) {
    const head = el("tr", {}, v.th("机组", "Unit", "", "left"), v.th("年累计排放", "CO₂ to date", "t"),
      v.th("按天折算目标", "Target to date", "t"), v.th("偏差", "Deviation", "t"),
      v.th("偏差", "Deviation", "%"), v.th("年度目标已用", "Target of the year used", "%"),
      v.th("季度累计", "Quarter to date", "t"), v.th("季度目标", "Quarter's target", "t"),
      v.th("季度偏差", "Quarter deviation", "%"), v.th("按季度分解偏差", "Deviation by quarters", "%"),
      v.th("排放强度", "Intensity", ""), v.th("强度目标", "Intensity target", ""),
      v.th("产出", "Output", ""), v.th("基准强度", "Baseline intensity", ""),
      v.th("折算基准排放", "Normalised baseline", "t"), v.th("较基准", "Against baseline", "%"));
    document.getElementById("perf-table").replaceChildren(el("thead", {}, head),
      el("tbody", {}, ...data.units.map((r) => progressRow(r, data)), progressRow(data.site, data)));
  }

  function renderBenchmarks(data) {
    const head = el("tr", {}, v.th("排名", "Rank", ""), v.th("机组", "Unit", "", "left"),
      v.th("类型", "Kind", "", "left"), v.th("对标值", "Value", ""), v.th("实际值", "Actual", ""),
      v.th("差距", "Gap", ""), v.th("差距", "Gap", "%"), v.th("来源", "Source", "", "left"));
    const rows = data.benchmarks.map((b) => {
      const [zh, en] = KINDS[b.kind] || [b.kind, b.kind];
      const unit = b.indicator === "intensity_t_t" ? "t/t" : "t/MWh";
      return el("tr", { "data-unit": b.unit, "data-kind": b.kind },
        el("td", { class: "num", "data-field": "rank" }, b.rank ? String(b.rank) : v.DASH),
        el("th", { scope: "row", class: "left" }, ...unitName(b.unit)),
        el("td", { "data-field": "kind" }, zh, el("span", { class: "en" }, en)),
        el("td", { class: "num", "data-field": "value" }, num(b[`value_${b.indicator}`], 4), el("span", { class: "u" }, unit)),
        el("td", { class: "num", "data-field": "actual" }, num(b[`actual_${b.indicator}`], 4)),
        el("td", { class: devClass(b[`gap_${b.indicator}`]), "data-field": "gap" }, signed(b[`gap_${b.indicator}`], 4)),
        el("td", { class: devClass(b.gap_pct), "data-field": "gap_pct" }, signed(b.gap_pct, 2)),
        el("td", { class: "left", "data-field": "source" }, b.source));
    });
    document.getElementById("perf-bench").replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
    document.getElementById("perf-bench-none").hidden = data.benchmarks.length > 0;
  }

  function figure(zh, en, value, unit, cls) {
    return el("div", {}, el("dt", {}, zh, el("span", { class: "en" }, en)),
      el("dd", cls ? { class: cls } : {}, value, unit ? el("span", { class: "u" }, unit) : ""));
  }

  function renderFigures(data) {
    const s = data.site;
    const iu = intensityUnit(s);
    const dev = has(s.deviation_ytd_pct) ? (s.deviation_ytd_pct > 0 ? "bad" : "ok") : "";
    document.getElementById("perf-figures").replaceChildren(
      figure("基准年", "Baseline year", data.baseline_year === null ? v.DASH : String(data.baseline_year), ""),
      figure("基准强度", "Baseline intensity", num(intensity(s, "baseline_intensity"), 4), iu),
      figure("折算基准排放", "Normalised baseline", num(s.normalised_baseline_ytd_t, 0), "t"),
      figure("年度目标", "Target of the year", num(s.target_year_t, 0), "t"),
      figure("年累计排放", "CO₂ to date", num(s.co2_ytd_t, 0), "t"),
      figure("按天折算目标", "Target to date", num(s.target_ytd_t, 0), "t"),
      figure("偏差", "Deviation", signed(s.deviation_ytd_pct, 2), "%", dev),
      figure("排放强度", "Intensity", num(intensity(s, "intensity_ytd"), 4), iu));
  }

  function render(data) {
    perf.data = data;
    renderFigures(data);
    renderProgress(data);
    renderBenchmarks(data);
    document.getElementById("perf-asof").textContent =
      `${data.year} Q${data.quarter} · ${data.days_elapsed_d} / ${data.days_in_year_d} d`;
    const sources = [
      `${v.label("统计至(不含)", "days before")} ${data.as_of}`,
      `${v.label("基准来源", "baseline source")}: ${data.baseline_source || v.DASH}`,
      `${v.label("目标来源", "target source")}: ${data.target_source || v.DASH}`,
    ];
    v.setStatus("perf-status", sources.join(" · "));
  }

  async function load() {
    const seq = ++perf.seq;
    const input = document.getElementById("perf-year");
    const q = input.value ? `?year=${encodeURIComponent(input.value)}` : "";
    v.setStatus("perf-status", v.label("加载中…", "loading…"));
    const res = await hmi.api("GET", `/api/v1/performance${q}`);
    if (seq !== perf.seq) return; // a later request answers
    if (!res.ok) {
      perf.data = null;
      for (const id of ["perf-table", "perf-bench", "perf-figures"]) document.getElementById(id).replaceChildren();
      v.setStatus("perf-status", res.message, true);
      return;
    }
    if (!input.value) input.value = String(res.body.year);
    render(res.body);
  }

  function show() {
    if (!perf.bound) {
      perf.bound = true;
      document.getElementById("perf-load").addEventListener("click", load);
      document.getElementById("perf-year").addEventListener("change", load);
    }
    load();
  }

  hmi.viewHooks.performance = show;
  // Texts built in the page's language (the status line): a switch builds them again.
  new MutationObserver(() => {
    if (document.body.dataset.view === "performance" && perf.data) render(perf.data);
  }).observe(document.documentElement, { attributes: true, attributeFilter: ["lang"] });
  hmi.performance = perf;
})();
