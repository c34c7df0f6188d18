// carbonscada HMI boundaries view: the site → process (accounting unit) → facility tree of
// a chosen plant-local day (or its month or year) with each node's CO2, CO2e and share of
// its parent and of the site (through /api/v1/boundaries; web/boundaries.py). A node whose
// facilities lack a value is marked incomplete and its shares are not shown: a share of a
// partial total is not the node's share.
"use strict";

(() => {
  const hmi = window.hmi;
  const { el, fmt } = hmi;
  const v = hmi.views;
  const LEVELS = { site: ["厂区", "site"], process: ["工序", "process"], facility: ["设施", "facility"] };
  const KINDS = {
    ironmaking: ["炼铁", "ironmaking"], steelmaking: ["炼钢", "steelmaking"], lime: ["石灰", "lime"],
    power: ["发电", "power"], coking: ["炼焦", "coking"], sintering: ["烧结", "sintering"],
    cement: ["水泥", "cement"],
  };
  const bnd = { seq: 0, data: null, bound: false };

  function pct(x) {
    return x === null || x === undefined ? v.DASH : `${fmt(x, 2)} %`;
  }

  function nameCell(n, depth) {
    const [zh, en] = LEVELS[n.level] || [n.level, n.level];
    const kind = n.kind ? (KINDS[n.kind] || [n.kind, n.kind]) : null;
    return el("th", { scope: "row", class: `bnd-name bnd-depth-${depth}` },
      el("span", { class: "bnd-level" }, zh, el("span", { class: "en" }, en)), " ",
      el("span", { class: "bnd-id" }, n.id), " ",
      ...hmi.bilingual(n.name_zh, n.name),
      ...(kind ? [" ", el("span", { class: "bnd-kind" }, `(${kind[0]}`, el("span", { class: "en" }, kind[1]), ")")] : []));
  }

  function shareBar(n) {
    const bar = el("span", { class: "bnd-bar", "aria-hidden": "true" }, el("i"));
    const share = n.share_of_site_pct;
    // Set through the CSSOM: the page's CSP allows no inline style attribute.
    bar.firstChild.style.width = share === null ? "0" : `${Math.max(0, Math.min(100, share))}%`;
    return bar;
  }

  function stateCell(n) {
    if (!n.complete) {
      return el("td", { "data-field": "state", class: "state bnd-incomplete" },
        "不完整", el("span", { class: "en" }, "incomplete"),
        n.missing.length ? ` — ${v.label("缺数据", "no data")}: ${n.missing.join(", ")}` : "");
    }
    if (!n.valid) {
      return el("td", { "data-field": "state", class: "state bnd-invalid" },
        "含无效", el("span", { class: "en" }, "has invalid data"));
    }
    return el("td", { "data-field": "state", class: "state bnd-ok" }, "完整有效", el("span", { class: "en" }, "complete"));
  }

  function row(n, depth) {
    const output = [];
    if (n.output_mwh !== null) output.push(`${fmt(n.output_mwh, 1)} MWh`);
    if (n.output_t !== null) output.push(`${fmt(n.output_t, 1)} t`);
    return el("tr", { "data-node": n.id, "data-level": n.level, "data-complete": String(n.complete) },
      nameCell(n, depth),
      el("td", { class: "num", "data-field": "co2_t" }, fmt(n.co2_t, 3)),
      el("td", { class: "num", "data-field": "co2e_t" }, fmt(n.co2e_t, 3)),
      el("td", { class: "num", "data-field": "share_of_parent_pct" }, n.level === "site" ? v.DASH : pct(n.share_of_parent_pct)),
      el("td", { class: "num", "data-field": "share_of_site_pct" }, pct(n.share_of_site_pct), shareBar(n)),
      el("td", { class: "num", "data-field": "co2e_share_of_site_pct" }, pct(n.co2e_share_of_site_pct)),
      el("td", { class: "num", "data-field": "output" }, output.length ? output.join(" · ") : v.DASH),
      el("td", { class: "num", "data-field": "children" }, `${n.n_valid} / ${n.n_invalid}`),
      stateCell(n));
  }

  function rows(n, depth, out) {
    out.push(row(n, depth));
    for (const c of n.children) rows(c, depth + 1, out);
    return out;
  }

  function render(data) {
    const head = el("tr", {}, v.th("节点", "Node", "", "left"), v.th("二氧化碳", "CO₂", "t"),
      v.th("二氧化碳当量", "CO₂e", "t"), v.th("占上级", "Share of parent", "%"),
      v.th("占全厂", "Share of site", "%"), v.th("当量占全厂", "CO₂e share of site", "%"),
      v.th("产量", "Output", ""), v.th("下级 有效/无效", "Children valid / invalid", ""),
      v.th("状态", "State", "", "left"));
    document.getElementById("bnd-table").replaceChildren(el("thead", {}, head),
      el("tbody", {}, ...rows(data.site, 0, [])));
    const period = document.getElementById("bnd-period");
    period.textContent = `${data.label} (${data.timezone})`;
    const stored = `${v.label("已存", "stored")} ${data.periods_stored} / ${data.periods_ended} ` +
      (data.level === "hour" ? v.label("小时", "hours") : v.label("天", "days"));
    v.setStatus("bnd-status", data.site.complete ? stored
      : `${stored} · ${v.label("部分设施缺数据，合计仅含已有数据，占比不显示",
        "some facilities lack data: totals hold what is known, shares are not shown")}`,
    !data.site.complete);
  }

  async function load() {
    const seq = ++bnd.seq;
    const level = document.getElementById("bnd-level").value;
    const day = document.getElementById("bnd-day").value;
    const q = new URLSearchParams({ level });
    if (day) q.set("t", day);
    v.setStatus("bnd-status", v.label("加载中…", "loading…"));
    const res = await hmi.api("GET", `/api/v1/boundaries?${q}`);
    if (seq !== bnd.seq) return; // a later request answers
    if (!res.ok) {
      document.getElementById("bnd-table").replaceChildren();
      v.setStatus("bnd-status", res.message, true);
      return;
    }
    bnd.data = res.body;
    // The server chose the day when none was given (yesterday in plant time).
    if (!day && res.body.level === "day") document.getElementById("bnd-day").value = res.body.label;
    render(res.body);
  }

  function show() {
    if (!bnd.bound) {
      bnd.bound = true;
      document.getElementById("bnd-load").addEventListener("click", load);
      document.getElementById("bnd-level").addEventListener("change", load);
      document.getElementById("bnd-day").addEventListener("change", load);
    }
    load();
  }

  hmi.viewHooks.boundaries = show;
  // The status line is built in the page's language: a switch builds it again.
  new MutationObserver(() => {
    if (document.body.dataset.view === "boundaries" && bnd.data) render(bnd.data);
  }).observe(document.documentElement, { attributes: true, attributeFilter: ["lang"] });
  hmi.boundaries = bnd;
})();
