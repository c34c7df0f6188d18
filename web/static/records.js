// carbonscada HMI records view: lab factors, period quantities and CSV imports, corrections
// with the value history of a stored value, locked periods, the CEMS zero / span checks and
// the periodic comparison tests against a reference method (HJ 75-2017 relative accuracy)
// (through /api/v1/entries, /entries/import, /revisions, /locks and /qa; web/records.py).
// The server checks every entry; the page shows its answer next to the form.
"use strict";

(() => {
  const hmi = window.hmi;
  const { el, fmt, fmtTime, api, state } = hmi;
  const v = hmi.views;
  const ROLES = ["viewer", "operator", "engineer", "admin"];
  // Factor names and units the server accepts (compute/factors.py FACTOR_UNITS).
  const FACTORS = [
    ["ncv_gj_t", "低位发热量", "NCV", "GJ/t"],
    ["cc_tc_gj", "单位热值含碳量", "Carbon per heat", "tC/GJ"],
    ["of", "碳氧化率", "Oxidation", "fraction"],
    ["c_ar_tc_t", "收到基含碳量", "Carbon content", "tC/t"],
    ["ncv_gj_1e4m3", "低位发热量（气）", "NCV (gas)", "GJ/10⁴m³"],
    ["c_ar_tc_1e4m3", "含碳量（气）", "Carbon content (gas)", "tC/10⁴m³"],
    ["ef_tco2_mwh", "电力排放因子", "EF electricity", "t CO2/MWh"],
    ["ef_tco2_gj", "热力排放因子", "EF heat", "t CO2/GJ"],
    ["ef_tco2_t", "过程排放因子", "EF process", "t CO2/t"],
  ];
  // What a correction may set, per target kind and level (compute/entries.py SETTABLE).
  const SETTABLE = {
    "source:minute": [["co2_dry_pct", "%"], ["flow_std_dry_m3_h", "m³/h"]],
    "source:hour": [["co2_t", "t"], ["co2_dry_pct", "%"], ["flow_std_dry_m3_h", "m³/h"]],
    "source:day": [["co2_t", "t"]],
    "stream:hour": [["quantity", ""]],
    "stream:day": [["quantity", ""]],
    "unit:hour": [["output_mwh", "MWh"]],
    "unit:day": [["output_mwh", "MWh"]],
  };
  // Columns of a stored row shown in its history, per table kind.
  const HISTORY_FIELDS = {
    source: [["co2_t", "CO₂", "CO₂", "t", 3], ["co2_measured_t", "实测 CO₂", "CO₂ measured", "t", 3],
      ["co2_dry_pct", "CO₂ 浓度", "CO₂ dry", "%", 3], ["flow_std_dry_m3_h", "标干流量", "Flow std dry", "m³/h", 0]],
    stream: [["quantity", "量", "Quantity", "", 3], ["co2_t", "CO₂", "CO₂", "t", 3]],
    unit: [["output_mwh", "发电量", "Output", "MWh", 3], ["co2_cems_t", "CO₂", "CO₂", "t", 3]],
  };
  const KINDS = {
    factor: ["化验因子", "lab factors"], quantity: ["周期量", "quantity"],
    correction: ["修正", "correction"], qa_check: ["校准检查", "QA check"],
    ra_test: ["比对监测", "comparison test"], lock: ["锁定", "lock"], unlock: ["解锁", "unlock"],
  };
  const QA_STATUS = {
    pass: ["合格", "pass", "ok"], adjust: ["需校准", "adjust", "warn"],
    out_of_control: ["失控", "out of control", "bad"],
  };

  const RA_STATUS = { true: ["合格", "pass", "ok"], false: ["不合格", "fail", "bad"] };
  // The unit a comparison test's results usually come in, per parameter (changed with it).
  const RA_UNITS = { co2: "%", o2: "%", flow: "m/s" };
  const PARAMETERS = { co2: "CO₂", o2: "O₂", flow: "流速 flow" };

  const rec = { role: null, entries: [], locks: [], qa: null, history: null, seq: 0 };

  function hasRole(needed) {
    const s = state.session;
    return !!s && ROLES.indexOf(s.role) >= ROLES.indexOf(needed);
  }

  function bi(zh, en) {
    return [zh, el("span", { class: "en" }, en)];
  }

  function msg(id, text, bad) {
    v.setStatus(id, text, bad);
  }

  // ------------------------------------------------------------ plant time

  const localIso = v.localIso;

  function localInput(ms) {
    const p = v.parts(ms);
    return `${p.year}-${p.month}-${p.day}T${p.hour}:${p.minute}:${p.second}`;
  }

  function when(iso) {
    return fmtTime(iso, true);
  }

  // A time for a table cell: date and time kept whole when the cell wraps.
  function whenCell(iso) {
    const [date, time] = when(iso).split(" ");
    return time ? [el("span", { class: "d" }, date), " ", el("span", { class: "d" }, time)] : [date];
  }

  function zone() {
    return state.timezone || "UTC";
  }

  // ------------------------------------------------------------ targets

  function streams() {
    return hmi.units.flatMap((u) => (u.streams || []).map((st) => ({ ...st, unit: u.id })));
  }

  function targetOptions(kinds) {
    const out = [];
    if (kinds.includes("source")) {
      for (const x of v.items("source")) out.push([`source:${x.id}`, `${v.label("排放源", "source")} ${x.id} · ${x.name}`]);
    }
    if (kinds.includes("stream")) {
      for (const st of streams()) {
        out.push([`stream:${st.id}`, `${v.label("燃料/能源", "stream")} ${st.id} [${st.quantity_unit || ""}]`]);
      }
    }
    if (kinds.includes("unit")) {
      for (const x of hmi.units || []) {
        out.push([`unit:${x.id}`, `${v.label("机组产出", "unit output")} ${x.id} [${x.output_unit || "MWh"}]`]);
      }
    }
    return out;
  }

  function fill(select, options) {
    const old = select.value;
    select.replaceChildren(...options.map(([value, text]) => el("option", { value }, text)));
    if (old && options.some(([x]) => x === old)) select.value = old;
  }

  function quantityUnit(target) {
    const [kind, id] = target.split(":");
    if (kind === "unit") return ((hmi.units || []).find((u) => u.id === id) || {}).output_unit || "MWh";
    const st = streams().find((s) => s.id === id);
    return st ? st.quantity_unit || "" : "";
  }

  function fillTargets() {
    fill(document.getElementById("rec-quantity-target"), targetOptions(["stream", "unit"]));
    fill(document.getElementById("rec-corr-target"), targetOptions(["source", "stream", "unit"]));
    fill(document.getElementById("rec-qa-source"), v.items("source").map((x) => [x.id, `${x.id} · ${x.name}`]));
    fill(document.getElementById("rec-ra-source"), v.items("source").map((x) => [x.id, `${x.id} · ${x.name}`]));
    const sets = new Set(rec.entries.filter((e) => e.kind === "factor").map((e) => e.target));
    document.getElementById("rec-factor-sets").replaceChildren(
      ...[...sets].sort().map((s) => el("option", { value: s })));
    quantityChanged();
    correctionChanged();
  }

  function quantityChanged() {
    const target = document.getElementById("rec-quantity-target").value || "";
    hmi.setText(document.getElementById("rec-quantity-unit"), quantityUnit(target));
  }

  function correctionChanged() {
    const target = document.getElementById("rec-corr-target").value || "";
    const level = document.getElementById("rec-corr-level").value;
    const kind = target.split(":")[0];
    const fields = SETTABLE[`${kind}:${level}`] || [];
    const select = document.getElementById("rec-corr-field");
    fill(select, fields.map(([f]) => [f, f]));
    fieldChanged();
  }

  function fieldChanged() {
    const target = document.getElementById("rec-corr-target").value || "";
    const level = document.getElementById("rec-corr-level").value;
    const f = document.getElementById("rec-corr-field").value;
    const row = (SETTABLE[`${target.split(":")[0]}:${level}`] || []).find((x) => x[0] === f);
    const unit = row ? row[1] || quantityUnit(target) : "";
    hmi.setText(document.getElementById("rec-corr-unit"), unit);
  }

  // ------------------------------------------------------------ role gate

  function gate() {
    rec.role = state.session ? state.session.role : null;
    const engineer = hasRole("engineer");
    const admin = hasRole("admin");
    document.getElementById("records-role").hidden = engineer;
    document.getElementById("rec-entry-forms").hidden = !engineer;
    document.getElementById("rec-corr-edit").hidden = !engineer;
    document.getElementById("rec-qa-form").hidden = !engineer;
    document.getElementById("rec-ra-form").hidden = !engineer;
    document.getElementById("rec-lock-form").hidden = !admin;
    for (const node of document.querySelectorAll(".rec-tz")) hmi.setText(node, zone());
  }

  // ------------------------------------------------------------ posting

  // POST one entry; the message next to its form: what was recalculated, or the refusal.
  async function post(body, msgId) {
    msg(msgId, v.label("提交中…", "submitting…"));
    const res = await api("POST", "/api/v1/entries", body);
    if (!res.ok) {
      msg(msgId, res.message, true);
      return null;
    }
    const r = res.body;
    const what = r.recalculated_from
      ? `${v.label("已重算", "recalculated")} ${r.hours} h, ${r.days} d ${v.label("自", "from")} ${when(r.recalculated_from)}`
      : v.label("无需重算", "nothing to recalculate");
    msg(msgId, `${v.label("已记录", "entered")} #${r.entry.id} · ${what}`, false);
    await loadAll();
    return r;
  }

  function number(id) {
    const text = document.getElementById(id).value.trim();
    return text === "" ? null : Number(text);
  }

  function timeOf(id, msgId) {
    const iso = localIso(document.getElementById(id).value);
    if (!iso) msg(msgId, v.label("请填写时间（厂区当地时间）", "enter a time (plant local time)"), true);
    return iso;
  }

  async function submitFactor(ev) {
    ev.preventDefault();
    const t = timeOf("rec-factor-from", "rec-factor-msg");
    if (!t) return;
    const values = {};
    const units = {};
    for (const [name, , , unit] of FACTORS) {
      const x = number(`rec-factor-${name}`);
      if (x === null) continue;
      values[name] = x;
      units[name] = unit;
    }
    const r = await post({
      kind: "factor", factors: document.getElementById("rec-factor-set").value.trim(),
      effective_from: t, values, units,
      document: document.getElementById("rec-factor-doc").value.trim(),
      reason: document.getElementById("rec-factor-reason").value.trim(),
    }, "rec-factor-msg");
    if (r) {
      for (const [name] of FACTORS) document.getElementById(`rec-factor-${name}`).value = "";
    }
  }

  async function submitQuantity(ev) {
    ev.preventDefault();
    const t = timeOf("rec-quantity-t", "rec-quantity-msg");
    if (!t) return;
    const target = document.getElementById("rec-quantity-target").value;
    await post({
      kind: "quantity", target, level: document.getElementById("rec-quantity-level").value, t,
      value: number("rec-quantity-value"), unit: quantityUnit(target),
      document: document.getElementById("rec-quantity-doc").value.trim(),
      reason: document.getElementById("rec-quantity-reason").value.trim(),
    }, "rec-quantity-msg");
  }

  async function submitCsv(ev) {
    ev.preventDefault();
    const file = document.getElementById("rec-csv-file").files[0];
    if (!file) {
      msg("rec-csv-msg", v.label("请选择 CSV 文件", "choose a CSV file"), true);
      return;
    }
    msg("rec-csv-msg", v.label("导入中…", "importing…"));
    const headers = { Accept: "application/json", "Content-Type": "text/csv" };
    if (state.session) headers["X-CSRF-Token"] = state.session.csrf_token;
    let res;
    let data = null;
    try {
      res = await fetch("/api/v1/entries/import", {
        method: "POST", headers, body: file, credentials: "same-origin", cache: "no-store",
      });
      data = await res.json().catch(() => null);
    } catch (e) {
      msg("rec-csv-msg", "无法连接服务器 / server unreachable", true);
      return;
    }
    if (!res.ok) {
      const text = (data && data.error) || `HTTP ${res.status}`;
      const kept = data && Array.isArray(data.entered) && data.entered.length
        ? ` · ${v.label("已录入", "entered before the error")}: #${data.entered.join(", #")}` : "";
      msg("rec-csv-msg", `${v.label("导入被拒绝", "import refused")}: ${text}${kept}`, true);
      if (kept) await loadAll();
      return;
    }
    const n = (data && data.entries ? data.entries : []).length;
    msg("rec-csv-msg", `${v.label("已导入", "imported")} ${n} ${v.label("条记录", "entries")}`, false);
    document.getElementById("rec-csv-file").value = "";
    await loadAll();
  }

  async function submitCorrection(ev) {
    ev.preventDefault();
    const t = timeOf("rec-corr-t", "rec-corr-msg");
    if (!t) return;
    const field = document.getElementById("rec-corr-field").value;
    const r = await post({
      kind: "correction", target: document.getElementById("rec-corr-target").value,
      level: document.getElementById("rec-corr-level").value, t,
      values: { [field]: number("rec-corr-value") },
      reason: document.getElementById("rec-corr-reason").value.trim(),
      document: document.getElementById("rec-corr-doc").value.trim(),
    }, "rec-corr-msg");
    if (r) {
      document.getElementById("rec-corr-reason").value = "";
      await loadHistory();
    }
  }

  async function submitQa(ev) {
    ev.preventDefault();
    const t = timeOf("rec-qa-t", "rec-qa-msg");
    if (!t) return;
    await post({
      kind: "qa_check", source: document.getElementById("rec-qa-source").value, t,
      check: document.getElementById("rec-qa-check").value,
      parameter: document.getElementById("rec-qa-parameter").value,
      reference_value: number("rec-qa-ref"), measured_value: number("rec-qa-measured"),
      full_scale: number("rec-qa-fs"), unit: document.getElementById("rec-qa-unit").value.trim(),
      document: document.getElementById("rec-qa-doc").value.trim(),
    }, "rec-qa-msg");
  }

  // A decimal number as typed or pasted ("10.2", "-0.5", "1e-3"); not "", "0x10" or "1,5".
  const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

  // The pasted "reference, CEMS" lines → {reference, cems}, or {error} naming the first bad
  // line (1-based, as an editor counts; blank lines are skipped but counted).
  function parsePairs(text) {
    const reference = [];
    const cems = [];
    const lines = text.split(/\r\n|\r|\n/);
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i].trim();
      if (!line) continue;
      // A sheet pastes tabs; people type commas (also the full-width one), semicolons or spaces.
      const parts = line.split(/\s*[,，;；\t]\s*|\s+/).filter((x) => x !== "");
      const bad = parts.length !== 2 ? "two" : parts.find((x) => !NUMBER.test(x) || !Number.isFinite(Number(x)));
      if (bad) {
        const shown = line.length > 40 ? `${line.slice(0, 40)}…` : line;
        const why = bad === "two"
          ? v.label(`应为两个数（参比值, CEMS 值），得到 ${parts.length} 个`,
            `expected two numbers (reference, CEMS), got ${parts.length}`)
          : `"${bad}" ${v.label("不是数字", "is not a number")}`;
        return { error: `${v.label(`第 ${i + 1} 行`, `line ${i + 1}`)} "${shown}": ${why}` };
      }
      reference.push(Number(parts[0]));
      cems.push(Number(parts[1]));
    }
    if (!reference.length) {
      return { error: v.label("请填写数据对（每行：参比值, CEMS 值）", "enter the data pairs (one \"reference, CEMS\" per line)") };
    }
    return { reference, cems };
  }

  async function submitRa(ev) {
    ev.preventDefault();
    const t = timeOf("rec-ra-t", "rec-ra-msg");
    if (!t) return;
    const pairs = parsePairs(document.getElementById("rec-ra-pairs").value);
    if (pairs.error) {
      msg("rec-ra-msg", pairs.error, true);
      return;
    }
    const r = await post({
      kind: "ra_test", source: document.getElementById("rec-ra-source").value, t,
      parameter: document.getElementById("rec-ra-parameter").value,
      reference: pairs.reference, cems: pairs.cems,
      unit: document.getElementById("rec-ra-unit").value.trim(),
      document: document.getElementById("rec-ra-doc").value.trim(),
      reason: document.getElementById("rec-ra-reason").value.trim(),
    }, "rec-ra-msg");
    if (r) document.getElementById("rec-ra-pairs").value = "";
  }

  function raParameterChanged() {
    const p = document.getElementById("rec-ra-parameter").value;
    document.getElementById("rec-ra-unit").value = RA_UNITS[p] || "";
  }

  async function submitLock(ev) {
    ev.preventDefault();
    const start = timeOf("rec-lock-start", "rec-lock-msg");
    const end = start && timeOf("rec-lock-end", "rec-lock-msg");
    if (!end) return;
    const r = await post({ kind: "lock", start, end,
      reason: document.getElementById("rec-lock-reason").value.trim() }, "rec-lock-msg");
    if (r) document.getElementById("rec-lock-reason").value = "";
  }

  // ------------------------------------------------------------ lists

  function valuesText(e) {
    const f = e.fields || {};
    if (e.kind === "qa_check") {
      return `${f.check} ${f.parameter}: ${f.reference_value} → ${f.measured_value} / FS ${f.full_scale} ${e.unit}`;
    }
    if (e.kind === "ra_test") return `${f.parameter}: n=${(f.reference || []).length}`;
    if (e.kind === "unlock") return `#${f.lock}`;
    if (e.kind === "lock") return `${when(e.t)} – ${when(e.t_end)}`;
    return Object.entries(f).map(([k, x]) => `${k} = ${x}`).join(", ") + (e.unit ? ` ${e.unit}` : "");
  }

  function renderEntries() {
    const list = rec.entries.slice(-50).reverse();
    hmi.setText(document.getElementById("rec-entries-count"), String(rec.entries.length));
    const head = el("tr", {}, v.th("编号", "No."), v.th("类型", "Kind", "", "left"),
      v.th("对象", "Target", "", "left"), v.th("周期/时间", "Period / time", "", "left"),
      v.th("数值", "Values", "", "left"), v.th("依据文件", "Document", "", "left"),
      v.th("原因", "Reason", "", "left"), v.th("录入人", "User", "", "left"),
      v.th("录入时间", "Entered", zone(), "left"));
    const body = el("tbody", {});
    for (const e of list) {
      const k = KINDS[e.kind] || [e.kind, e.kind];
      body.append(el("tr", { "data-entry": String(e.id), "data-kind": e.kind },
        el("td", { class: "num" }, `#${e.id}`),
        el("td", { "data-field": "kind" }, ...bi(k[0], k[1])),
        el("td", { "data-field": "target" }, e.kind === "factor" && e.factor_version ? e.factor_version : e.target || v.DASH),
        el("td", { "data-field": "t", class: "num" },
          ...(e.level ? [el("span", { class: "lvl" }, e.level), " "] : []), ...whenCell(e.t)),
        el("td", { "data-field": "values", class: "wrap" }, valuesText(e)),
        el("td", { "data-field": "document" }, e.document || v.DASH),
        el("td", { "data-field": "reason", class: "wrap" }, e.reason || v.DASH),
        el("td", { "data-field": "user" }, e.user),
        el("td", { "data-field": "entered", class: "num" }, ...whenCell(e.entered))));
    }
    document.getElementById("rec-entries-table").replaceChildren(el("thead", {}, head), body);
    msg("rec-entries-status", list.length ? "" : v.label("暂无记录", "no entries yet"), false);
  }

  function renderLocks() {
    const admin = hasRole("admin");
    hmi.setText(document.getElementById("rec-locks-count"), String(rec.locks.length));
    const head = el("tr", {}, v.th("编号", "No."), v.th("从", "From", zone(), "left"),
      v.th("到", "To", zone(), "left"), v.th("原因", "Reason", "", "left"),
      v.th("锁定人", "Locked by", "", "left"), v.th("时间", "Entered", "", "left"),
      ...(admin ? [v.th("解锁", "Unlock", "", "left")] : []));
    const body = el("tbody", {});
    for (const lk of rec.locks) {
      const cells = [
        el("td", { class: "num" }, `#${lk.id}`),
        el("td", { class: "num", "data-field": "start" }, ...whenCell(lk.t)),
        el("td", { class: "num", "data-field": "end" }, ...whenCell(lk.t_end)),
        el("td", { class: "wrap", "data-field": "reason" }, lk.reason),
        el("td", { "data-field": "user" }, lk.user),
        el("td", { class: "num" }, ...whenCell(lk.entered)),
      ];
      if (admin) {
        const form = el("form", { class: "inline-form", novalidate: "", "data-lock": String(lk.id) },
          el("input", { name: "reason", maxlength: "1000", placeholder: "解锁原因 / reason", "aria-label": "解锁原因 / Unlock reason" }),
          el("button", { type: "submit" }, ...bi("解锁", "Unlock")));
        form.addEventListener("submit", async (ev) => {
          ev.preventDefault();
          await post({ kind: "unlock", lock: lk.id, reason: form.elements.reason.value.trim() },
            "rec-lock-msg");
        });
        cells.push(el("td", {}, form));
      }
      body.append(el("tr", { "data-lock": String(lk.id) }, ...cells));
    }
    document.getElementById("rec-locks-table").replaceChildren(el("thead", {}, head), body);
    if (!rec.locks.length && !document.getElementById("rec-lock-msg").classList.contains("bad")) {
      const node = document.getElementById("rec-lock-msg");
      if (!node.textContent) msg("rec-lock-msg", v.label("无锁定周期", "no locked periods"), false);
    }
  }

  function renderQa() {
    const qa = rec.qa || { checks: [], out_of_control: {} };
    const checks = qa.checks.slice().reverse();
    hmi.setText(document.getElementById("rec-qa-count"), String(qa.checks.length));
    const ooc = [];
    for (const [source, spans] of Object.entries(qa.out_of_control || {})) {
      for (const s of spans) {
        ooc.push(el("li", { class: "bad", "data-source": source },
          ...bi("失控", "Out of control"), ` ${source}: ${when(s.start)} – `,
          s.end ? when(s.end) : el("span", {}, ...bi("至今", "ongoing"))));
      }
    }
    document.getElementById("rec-qa-ooc").replaceChildren(...ooc);
    const head = el("tr", {}, v.th("时间", "Time", zone(), "left"), v.th("排放源", "Source", "", "left"),
      v.th("类型", "Check", "", "left"), v.th("参数", "Parameter", "", "left"),
      v.th("标准值", "Reference"), v.th("测量值", "Measured"), v.th("满量程", "Full scale"),
      v.th("漂移", "Drift", "%FS"), v.th("限值", "Limits", "%FS"), v.th("结果", "Result", "", "left"),
      v.th("录入人", "User", "", "left"));
    const body = el("tbody", {});
    for (const c of checks) {
      const f = c.fields || {};
      const r = c.result || {};
      const st = QA_STATUS[r.status] || [r.status || v.DASH, r.status || "", ""];
      body.append(el("tr", { "data-entry": String(c.id), "data-status": r.status || "" },
        el("td", { class: "num" }, ...whenCell(c.t)),
        el("td", {}, c.target),
        el("td", { "data-field": "check" }, ...(f.check === "span" ? bi("量程", "span") : bi("零点", "zero"))),
        el("td", {}, f.parameter),
        el("td", { class: "num" }, `${fmt(f.reference_value, 3)} ${c.unit}`),
        el("td", { class: "num" }, `${fmt(f.measured_value, 3)} ${c.unit}`),
        el("td", { class: "num" }, `${fmt(f.full_scale, 3)} ${c.unit}`),
        el("td", { class: "num", "data-field": "drift" }, fmt(r.drift_pct_fs, 2)),
        el("td", { class: "num" }, `${fmt(r.requirement_pct_fs, 1)} / ${fmt(r.out_of_control_pct_fs, 1)}`),
        el("td", { "data-field": "status", class: `state ${st[2]}` }, ...bi(st[0], st[1])),
        el("td", {}, c.user)));
    }
    document.getElementById("rec-qa-table").replaceChildren(el("thead", {}, head), body);
    msg("rec-qa-status", checks.length ? "" : v.label("暂无校准记录", "no checks recorded"), false);
  }

  // Comparison tests: RA against its limit, or for flow (judged by the relative error,
  // HJ 75-2017) the RE and its limit; the limit shown only when the server sends it.
  function renderRa() {
    const tests = ((rec.qa && rec.qa.comparison_tests) || []).slice().reverse();
    hmi.setText(document.getElementById("rec-ra-count"), String(tests.length));
    const head = el("tr", {}, v.th("时间", "Time", zone(), "left"), v.th("排放源", "Source", "", "left"),
      v.th("参数", "Parameter", "", "left"), v.th("对数", "Pairs", "n"),
      v.th("参比均值", "Mean reference"), v.th("CEMS 均值", "Mean CEMS"),
      v.th("准确度", "Accuracy", "%"), v.th("限值", "Limit", "%"), v.th("结果", "Result", "", "left"),
      v.th("依据文件", "Document", "", "left"), v.th("录入人", "User", "", "left"));
    const body = el("tbody", {});
    for (const e of tests) {
      const f = e.fields || {};
      const r = e.result || {};
      const flow = f.parameter === "flow";
      const limit = flow ? r.re_limit_pct : r.ra_limit_pct;
      const st = RA_STATUS[String(!!r.passed)];
      body.append(el("tr", { "data-entry": String(e.id), "data-passed": String(!!r.passed) },
        el("td", { class: "num", "data-field": "t" }, ...whenCell(e.t)),
        el("td", { "data-field": "source" }, e.target),
        el("td", { "data-field": "parameter" }, PARAMETERS[f.parameter] || f.parameter),
        el("td", { class: "num", "data-field": "n" }, String(r.n ?? (f.reference || []).length)),
        el("td", { class: "num", "data-field": "mean_reference" }, `${fmt(r.mean_reference, 3)} ${e.unit}`),
        el("td", { class: "num", "data-field": "mean_cems" }, `${fmt(r.mean_cems, 3)} ${e.unit}`),
        el("td", { class: "num", "data-field": "accuracy" },
          el("span", { class: "lvl" }, flow ? "RE" : "RA"), " ", fmt(flow ? r.re_pct : r.ra_pct, 2)),
        el("td", { class: "num", "data-field": "limit" },
          limit === null || limit === undefined ? v.DASH : `${flow ? "|RE| " : ""}≤ ${fmt(limit, 1)}`),
        el("td", { "data-field": "passed", class: `state ${st[2]}` }, ...bi(st[0], st[1])),
        el("td", { "data-field": "document", class: "wrap" }, e.document || v.DASH),
        el("td", { "data-field": "user" }, e.user)));
    }
    document.getElementById("rec-ra-table").replaceChildren(el("thead", {}, head), body);
    msg("rec-ra-status", tests.length ? "" : v.label("暂无比对监测记录", "no comparison tests recorded"), false);
  }

  // ------------------------------------------------------------ value history

  function historyTable(target, level) {
    const kind = target.split(":")[0];
    return kind === "source" && level === "minute" ? "source_minute" : `${kind}_${level}`;
  }

  async function loadHistory() {
    const target = document.getElementById("rec-corr-target").value || "";
    const level = document.getElementById("rec-corr-level").value;
    const t = localIso(document.getElementById("rec-corr-t").value);
    if (!target || !t) {
      msg("rec-history-status", v.label("请选择对象与时间", "choose a target and a time"), true);
      return;
    }
    const [kind, id] = target.split(":");
    const table = historyTable(target, level);
    const seq = ++rec.seq;
    const res = await api("GET", `/api/v1/revisions?table=${encodeURIComponent(table)}` +
      `&id=${encodeURIComponent(id)}&t=${encodeURIComponent(t)}`);
    if (seq !== rec.seq) return;
    if (!res.ok) {
      rec.history = null;
      document.getElementById("rec-history-table").replaceChildren();
      msg("rec-history-status", res.message, true);
      return;
    }
    rec.history = res.body;
    renderHistory(kind, level);
  }

  function renderHistory(kind, level) {
    const h = rec.history;
    const fields = kind === "source" && level === "minute"
      ? [["co2_kg", "CO₂", "CO₂", "kg", 3], ["co2_dry_pct", "CO₂ 浓度", "CO₂ dry", "%", 3],
        ["flow_std_dry_m3_h", "标干流量", "Flow std dry", "m³/h", 0]]
      : HISTORY_FIELDS[kind] || [];
    const head = el("tr", {}, v.th("版本", "Version", "", "left"),
      ...fields.map(([, zh, en, unit]) => v.th(zh, en, unit)),
      v.th("标记", "Flag", "", "left"), v.th("修正人", "Changed by", "", "left"),
      v.th("修正时间", "Changed", zone(), "left"), v.th("原因", "Reason", "", "left"));
    const versions = (h.versions || []).map((x) => x.row);
    if (h.current) versions.push(h.current);
    const body = el("tbody", {});
    versions.forEach((row, i) => {
      const by = i > 0 ? h.versions[i - 1].replaced_by : null;
      const current = i === versions.length - 1 && h.current;
      const name = i === 0 ? (current ? bi("当前（原始）", "current (original)") : bi("原始", "original"))
        : current ? bi(`当前（第 ${i} 次修正）`, `current (correction ${i})`) : bi(`第 ${i} 次修正`, `correction ${i}`);
      body.append(el("tr", { "data-version": String(i), class: i === 0 ? "original" : "" },
        el("th", { scope: "row" }, ...name),
        ...fields.map(([f, , , , d]) => el("td", { class: "num", "data-field": f }, fmt(row[f], d))),
        el("td", { "data-field": "flag" }, row.flag || v.DASH),
        el("td", { "data-field": "user" }, by ? by.user : v.label("计算", "calculated")),
        el("td", { "data-field": "entered", class: "num" }, ...(by ? whenCell(by.entered) : [v.DASH])),
        el("td", { "data-field": "reason", class: "wrap" }, by ? by.reason : v.DASH)));
    });
    document.getElementById("rec-history-table").replaceChildren(el("thead", {}, head), body);
    msg("rec-history-status", versions.length
      ? `${h.table} ${h.id} ${when(h.t)} (${zone()}) · ${versions.length} ${v.label("个版本", "versions")}`
      : v.label("该时间无存储值", "no stored value at this time"), !versions.length);
  }

  // ------------------------------------------------------------ loading

  async function loadAll() {
    const [entries, locks, qa] = await Promise.all([
      api("GET", "/api/v1/entries"), api("GET", "/api/v1/locks"), api("GET", "/api/v1/qa")]);
    if (entries.ok) {
      rec.entries = entries.body || [];
      renderEntries();
    } else msg("rec-entries-status", entries.message, true);
    if (locks.ok) {
      rec.locks = locks.body || [];
      renderLocks();
    } else msg("rec-lock-msg", locks.message, true);
    if (qa.ok) {
      rec.qa = qa.body;
      renderQa();
      renderRa();
    } else {
      msg("rec-qa-status", qa.message, true);
      msg("rec-ra-status", qa.message, true);
    }
    const sets = new Set(rec.entries.filter((e) => e.kind === "factor").map((e) => e.target));
    document.getElementById("rec-factor-sets").replaceChildren(
      ...[...sets].sort().map((s) => el("option", { value: s })));
  }

  function defaults() {
    const now = Date.now() + state.clockOffsetMs;
    const p = v.parts(now);
    const from = document.getElementById("rec-factor-from");
    if (!from.value) from.value = `${p.year}-${p.month}-01T00:00:00`;
    const qaT = document.getElementById("rec-qa-t");
    if (!qaT.value) qaT.value = localInput(now - (now % 60_000));
    const raT = document.getElementById("rec-ra-t");
    if (!raT.value) raT.value = localInput(now - (now % 60_000));
    const q = document.getElementById("rec-quantity-t");
    if (!q.value) q.value = localInput(v.localToEpoch(`${p.year}-${p.month}-${p.day}T00:00`) - 86_400_000);
  }

  function show() {
    gate();
    fillTargets();
    defaults();
    loadAll();
  }

  function buildFactorInputs() {
    document.getElementById("rec-factor-values").replaceChildren(...FACTORS.map(([name, zh, en, unit]) =>
      el("label", {}, el("span", { class: "fname" }, zh, el("span", { class: "en" }, en)),
        el("input", { id: `rec-factor-${name}`, name, type: "number", step: "any", class: "num", "aria-label": name }),
        el("span", { class: "u" }, unit))));
  }

  hmi.viewHooks.records = show;
  hmi.records = rec;
  hmi.snapshotHooks.push(() => {
    if (document.body.dataset.view === "records") {
      gate();
      fillTargets();
    }
  });

  document.addEventListener("DOMContentLoaded", () => {
    buildFactorInputs();
    document.getElementById("rec-factor-form").addEventListener("submit", submitFactor);
    document.getElementById("rec-quantity-form").addEventListener("submit", submitQuantity);
    document.getElementById("rec-quantity-target").addEventListener("change", quantityChanged);
    document.getElementById("rec-csv-form").addEventListener("submit", submitCsv);
    document.getElementById("rec-correction-form").addEventListener("submit", submitCorrection);
    document.getElementById("rec-corr-target").addEventListener("change", correctionChanged);
    document.getElementById("rec-corr-level").addEventListener("change", correctionChanged);
    document.getElementById("rec-corr-field").addEventListener("change", fieldChanged);
    document.getElementById("rec-history-load").addEventListener("click", loadHistory);
    document.getElementById("rec-qa-form").addEventListener("submit", submitQa);
    document.getElementById("rec-ra-form").addEventListener("submit", submitRa);
    document.getElementById("rec-ra-parameter").addEventListener("change", raParameterChanged);
    document.getElementById("rec-lock-form").addEventListener("submit", submitLock);
    // A login or logout while the view is open shows the forms the new session may use.
    new MutationObserver(() => {
      const role = state.session ? state.session.role : null;
      if (document.body.dataset.view === "records" && role !== rec.role) {
        gate();
        renderLocks();
      }
    }).observe(document.body, { attributes: true, attributeFilter: ["data-role"] });
  });
})();
