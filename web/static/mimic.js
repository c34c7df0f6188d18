// carbonscada HMI plant mimic (overview): every unit drawn as a block piped to its stacks,
// each stack with its live CO2 rate and flow, its data flag (colour and text) and whether its
// data are stale or missing. Built from the /ws snapshot's configuration (units with their
// source ids, sources with their unit); every push only changes text and attributes.
"use strict";

(() => {
  const hmi = window.hmi;
  const { el, fmt, fmtTime, setText, setFlag, FLAGS, state } = hmi;
  const DASH = "—";

  // Decimals as the sources table and the unit cards of app.js show them.
  const STACK_VALUES = [
    // field, decimals, zh, en, unit
    ["co2_rate_t_h", 2, "CO₂ 排放速率", "CO₂ rate", "t/h"],
    ["flow_std_dry_m3_h", 0, "标干流量", "Flow std dry", "m³/h"],
  ];
  const UNIT_VALUES = [
    ["output_mwh", 2, "本分钟发电量", "Output this minute", "MWh"],
    ["intensity_t_mwh", 3, "排放强度", "Intensity", "t/MWh"],
  ];
  const NO_DATA = ["无数据", "no data"];
  const STALE = ["数据过期", "stale"];
  const STALE_MINUTES = 3; // as the sources table: older than three minutes is stale

  const mimic = { key: "", units: new Map(), stacks: new Map() };

  // A text of two languages that can be changed in place: span.zh (hidden in English) and
  // span.en, so the language switch (views.js) needs no text node of its own to wrap.
  function twoLang(cls, field) {
    return el("span", { class: cls, "data-field": field },
      el("span", { class: "zh" }), el("span", { class: "en" }));
  }

  function setTwoLang(node, zh, en) {
    setText(node.querySelector(":scope > .zh"), zh);
    setText(node.querySelector(":scope > .en"), en);
  }

  function value(field, zh, en, unit) {
    return el("div", { class: "mimic-value" },
      el("span", { class: "label" }, zh, el("span", { class: "en" }, en)),
      el("span", { class: "reading" },
        el("span", { class: "num", "data-field": field }, DASH), el("span", { class: "u" }, unit)));
  }

  function flagBox() {
    return el("span", { class: "mimic-flag" },
      el("span", { class: "flag flag-none", "data-field": "flag" }, DASH),
      twoLang("flag-text", "flag_text"));
  }

  function status() {
    return el("span", { class: "mimic-status" },
      twoLang("status-text", "status"), el("span", { class: "num", "data-field": "t" }, ""));
  }

  function buildStack(s) {
    const node = el("div", { class: "mimic-stack", "data-mimic-source": s.id, "data-state": "none" },
      el("span", { class: "chimney", "aria-hidden": "true" }),
      el("div", { class: "mimic-name" },
        el("span", { class: "title" }, ...hmi.bilingual(s.name_zh, s.name)),
        el("span", { class: "id" }, s.id)),
      ...STACK_VALUES.map(([f, , zh, en, u]) => value(f, zh, en, u)),
      el("div", { class: "mimic-state" },
        flagBox(),
        status()));
    return node;
  }

  function buildUnit(u, sources) {
    const box = el("div", { class: "mimic-unit-box", "data-state": "none" },
      el("div", { class: "mimic-name" },
        el("span", { class: "title" }, ...hmi.bilingual(u.name_zh, u.name)),
        el("span", { class: "id" }, u.id)),
      el("div", { class: "mimic-values" },
        ...UNIT_VALUES.map(([f, , zh, en, unit]) => value(f, zh, en, unit))),
      el("div", { class: "mimic-state" }, flagBox(), status()));
    const stacks = el("div", { class: "mimic-stacks" }, ...sources.map(buildStack));
    return el("div", { class: "mimic-unit", "data-mimic-unit": u.id }, box, stacks);
  }

  // The configuration the page was built from: ids and names, not values.
  function configKey(units, sources) {
    return JSON.stringify([units.map((u) => [u.id, u.name, u.name_zh, u.sources]),
      sources.map((s) => [s.id, s.name, s.name_zh, s.unit])]);
  }

  function build(units, sources) {
    const root = document.getElementById("mimic");
    if (!root) return;
    const key = configKey(units, sources);
    if (key === mimic.key) return; // a reconnect with the same plant keeps the DOM
    mimic.key = key;
    const byId = new Map(sources.map((s) => [s.id, s]));
    const placed = new Set();
    const blocks = units.map((u) => {
      const own = (u.sources || []).map((id) => byId.get(id) || { id });
      for (const s of own) placed.add(s.id);
      return buildUnit(u, own);
    });
    // A source of no listed unit still gets drawn, under a block of its own.
    const loose = sources.filter((s) => !placed.has(s.id));
    if (loose.length) {
      blocks.push(buildUnit({ id: DASH, name: "No unit", name_zh: "未归属机组" }, loose));
    }
    root.replaceChildren(...blocks);
    mimic.units = new Map([...root.querySelectorAll("[data-mimic-unit]")]
      .map((n) => [n.dataset.mimicUnit, n.querySelector(".mimic-unit-box")]));
    mimic.stacks = new Map([...root.querySelectorAll("[data-mimic-source]")]
      .map((n) => [n.dataset.mimicSource, n]));
  }

  function setFlagBox(node, flag) {
    setFlag(node.querySelector('[data-field="flag"]'), flag);
    const info = FLAGS[flag];
    const text = node.querySelector('[data-field="flag_text"]');
    if (info) setTwoLang(text, info[1], info[2]);
    else setTwoLang(text, NO_DATA[0], NO_DATA[1]);
    const level = info ? info[0] : "none";
    if (node.dataset.state !== level) node.dataset.state = level;
  }

  function fill(node, rec, fields) {
    for (const [field, decimals] of fields) {
      setText(node.querySelector(`.num[data-field="${field}"]`), fmt(rec[field], decimals));
    }
    setFlagBox(node, rec.flag);
    const invalid = rec.valid === false ? "true" : "false";
    if (node.dataset.invalid !== invalid) node.dataset.invalid = invalid;
    const t = node.querySelector('[data-field="t"]');
    if (t.dataset.t !== (rec.t || "")) t.dataset.t = rec.t || "";
    setText(t, rec.t ? fmtTime(rec.t, false) : "");
    markStale(node, Date.now() + state.clockOffsetMs);
  }

  function updateStack(s) {
    const node = mimic.stacks.get(s.id);
    if (node) fill(node, s, STACK_VALUES);
  }

  function updateUnit(u) {
    const box = mimic.units.get(u.id);
    if (box) fill(box, u, UNIT_VALUES);
  }

  // No minute yet: "no data"; the last one older than three minutes: "stale" (the values
  // stay, dimmed, with their time); otherwise the minute's time alone.
  function markStale(node, nowMs) {
    const iso = node.querySelector('[data-field="t"]').dataset.t || "";
    const t = Date.parse(iso);
    const status = !iso || !Number.isFinite(t) ? "nodata"
      : nowMs - t > STALE_MINUTES * state.minuteSeconds * 1000 ? "stale" : "live";
    if (node.dataset.data === status) return;
    node.dataset.data = status;
    const text = node.querySelector('[data-field="status"]');
    if (status === "nodata") setTwoLang(text, NO_DATA[0], NO_DATA[1]);
    else if (status === "stale") setTwoLang(text, STALE[0], STALE[1]);
    else setTwoLang(text, "", "");
  }

  function tick() {
    const now = Date.now() + state.clockOffsetMs;
    for (const node of [...mimic.units.values(), ...mimic.stacks.values()]) markStale(node, now);
  }

  hmi.snapshotHooks.push((msg) => {
    build(msg.units || [], msg.sources || []);
    for (const u of msg.units || []) updateUnit(u);
    for (const s of msg.sources || []) updateStack(s);
  });
  hmi.minuteHooks.push((msg) => {
    for (const u of msg.units || []) updateUnit(u);
    for (const s of msg.sources || []) updateStack(s);
  });
  hmi.mimic = mimic;

  document.addEventListener("DOMContentLoaded", () => setInterval(tick, 1000));
})();
