// carbonscada HMI instrument register (devices view): every tag's instrument, its
// calibration due date and state, and each CEMS source's CO2 uncertainty from them.
"use strict";

(() => {
  const hmi = window.hmi;
  const { el, fmt, api, setText } = hmi;
  const v = hmi.views;
  // state: css class, zh, en. Colour is never the only cue: the words are shown too.
  const STATES = {
    ok: ["ok", "有效", "valid"],
    due_soon: ["warn", "即将到期", "due soon"],
    overdue: ["bad", "已逾期", "overdue"],
    unregistered: ["muted", "未登记", "not registered"],
  };
  const ORDER = { overdue: 0, due_soon: 1, ok: 2, unregistered: 3 };

  function stateCell(state) {
    const [cls, zh, en] = STATES[state] || ["muted", state, ""];
    return el("td", { "data-field": "state", class: `state reg-${cls}` }, zh, el("span", { class: "en" }, en));
  }

  function render(reg) {
    setText(document.getElementById("register-date"), `${reg.date} ${reg.timezone}`);
    const c = reg.counts;
    v.setStatus("register-status", `${c.overdue} ${v.label("已逾期", "overdue")} · ` +
      `${c.due_soon} ${v.label("即将到期", "due soon")} (≤ ${reg.due_soon_days} d) · ` +
      `${c.ok} ${v.label("有效", "valid")} · ${c.unregistered} ${v.label("未登记", "not registered")}`,
    c.overdue > 0);
    document.getElementById("register-uncertainty").replaceChildren(...reg.sources.map((s) =>
      el("li", { "data-source": s.source },
        `${s.source} CO₂ `, v.label("相对不确定度", "relative uncertainty"), " ",
        el("b", { class: "num" }, s.co2_rel_uncertainty_pct === null ? v.DASH
          : `${fmt(s.co2_rel_uncertainty_pct, 2)} %`),
        s.co2_rel_expanded_uncertainty_pct === null ? ""
          : ` (k = ${s.coverage_factor}: ${fmt(s.co2_rel_expanded_uncertainty_pct, 2)} %)`,
        s.missing.length ? ` — ${v.label("未登记仪表", "unregistered")}: ${s.missing.join(", ")}` : "")));
    const rows = reg.instruments.slice().sort((a, b) =>
      (ORDER[a.state] - ORDER[b.state]) || ((a.days_to_due ?? 1e9) - (b.days_to_due ?? 1e9)));
    const head = el("tr", {}, v.th("测点", "Tag", "", "left"), v.th("设备", "Device", "", "left"),
      v.th("名称", "Name", "", "left"), v.th("编号", "Serial", "", "left"), v.th("准确度", "Accuracy", "%"),
      v.th("校准日期", "Calibrated", "", "left"), v.th("到期", "Due", "", "left"),
      v.th("剩余", "Days left", "d"), v.th("状态", "State", "", "left"));
    const body = el("tbody", {}, ...rows.map((r) => el("tr", { "data-tag": r.tag, "data-state": r.state },
      el("th", { scope: "row", class: "tag-id" }, r.tag),
      el("td", { "data-field": "device" }, r.device),
      el("td", { "data-field": "name" }, ...hmi.bilingual(r.description_zh, r.description)),
      el("td", { "data-field": "serial" }, r.serial || v.DASH),
      el("td", { class: "num", "data-field": "accuracy_pct" }, r.accuracy_pct === null ? v.DASH : fmt(r.accuracy_pct, 2)),
      el("td", { "data-field": "calibrated_on" }, r.calibrated_on || v.DASH),
      el("td", { "data-field": "calibration_due" }, r.calibration_due || v.DASH),
      el("td", { class: "num", "data-field": "days_to_due" }, r.days_to_due === null ? v.DASH : String(r.days_to_due)),
      stateCell(r.state))));
    document.getElementById("register-table").replaceChildren(el("thead", {}, head), body);
  }

  async function show() {
    const res = await api("GET", "/api/v1/instruments");
    if (!res.ok) {
      v.setStatus("register-status", res.message, true);
      return;
    }
    render(res.body);
  }

  hmi.viewHooks.devices = show;
})();
