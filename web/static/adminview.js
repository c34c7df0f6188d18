// carbonscada HMI administration view: user accounts (admin), alarm rules (engineer and up,
// through /api/v1/alarm-rules) and the audit log (engineer and up). What a role may do is
// the server's decision; the page only leaves out what the server would refuse.
"use strict";

(() => {
  const hmi = window.hmi;
  const { el, fmt, fmtTime, api, state } = hmi;
  const v = hmi.views;
  const ROLES = ["viewer", "operator", "engineer", "admin"];
  const ROLE_NAMES = {
    viewer: ["查看员", "viewer"], operator: ["操作员", "operator"],
    engineer: ["工程师", "engineer"], admin: ["管理员", "admin"],
  };
  const KINDS = {
    threshold: ["限值", "threshold"], rate_of_change: ["变化率", "rate of change"],
    stale: ["数据停滞", "stale"], comm_loss: ["通讯中断", "communication loss"],
    intensity: ["排放强度", "intensity"], allowance_position: ["配额", "allowance"],
    capture_rate: ["数据捕集率", "capture rate"], reconciliation_diff: ["核算偏差", "reconciliation"],
    carbon_position: ["履约状况", "compliance position"],
  };
  // Values a rule may watch: zh, en, unit (the records' field names say the unit too).
  const FIELDS = {
    co2_rate_t_h: ["CO₂ 排放速率", "CO₂ rate", "t/h"],
    co2_rate_kg_h: ["CO₂ 排放速率", "CO₂ rate", "kg/h"],
    co2_kg: ["本分钟排放", "CO₂ per minute", "kg"],
    co2_hour_t: ["本小时排放", "CO₂ this hour", "t"],
    co2_today_t: ["今日排放", "CO₂ today", "t"],
    co2_ytd_t: ["年累计排放", "CO₂ year to date", "t"],
    co2_dry_pct: ["CO₂ 浓度（干基）", "CO₂ dry", "%"],
    co2_mg_m3: ["CO₂ 质量浓度", "CO₂ conc.", "mg/m³"],
    flow_std_dry_m3_h: ["标干流量", "Flow std dry", "m³/h"],
    flow_act_m3_h: ["工况流量", "Flow actual", "m³/h"],
    output_mwh: ["本分钟发电量", "Output per minute", "MWh"],
    intensity_t_mwh: ["排放强度", "Intensity", "t/MWh"],
    allowance_used_pct: ["配额使用", "Allowance used", "%"],
    allowance_headroom_t: ["剩余配额", "Allowance headroom", "t"],
    mean: ["平均值", "mean", ""], min: ["最小值", "min", ""], max: ["最大值", "max", ""],
  };
  const MEASURE_UNITS = { used_pct: "%", prorated_pct: "%", forecast_pct: "%",
    forecast_shortfall_t: "t", shortfall_cost_cny: "CNY", forecast_deficit_t: "t",
    deficit_t: "t", days_to_deadline: "d" };
  const ACTIONS = {
    login: ["登录", "login"], logout: ["退出", "logout"], login_failed: ["登录失败", "login failed"],
    acknowledge: ["确认", "acknowledge"], shelve: ["搁置", "shelve"], unshelve: ["解除搁置", "unshelve"],
    "out-of-service": ["停用", "out of service"], "return-to-service": ["恢复投用", "return to service"],
    alarm_rules_changed: ["报警规则修改", "alarm rules changed"],
    user_add: ["添加用户", "user added"], user_role: ["角色修改", "role changed"],
    user_password: ["密码重置", "password reset"], user_remove: ["删除用户", "user removed"],
    config_changed: ["配置变更", "configuration changed"], backup: ["备份", "backup"],
    backup_failed: ["备份失败", "backup failed"], restore: ["恢复", "restore"],
    retention_prune: ["数据清理", "retention prune"],
  };
  const GENESIS = "0".repeat(64);
  const DASH = v.DASH;

  function hasRole(needed) {
    const s = state.session;
    return !!s && ROLES.indexOf(s.role) >= ROLES.indexOf(needed);
  }

  function bi(pair) {
    return pair ? [pair[0], el("span", { class: "en" }, pair[1])] : [];
  }

  function button(zh, en, attrs) {
    return el("button", { type: "button", ...attrs }, zh, el("span", { class: "en" }, en));
  }

  function status(id, text, bad) {
    v.setStatus(id, text, bad);
  }

  // ------------------------------------------------------------ role gate

  const admin = { shown: false, role: null };

  // Which sections this session sees; reloads them when the view is shown or the
  // session changes while it is.
  function show() {
    admin.shown = true;
    const role = state.session ? state.session.role : null;
    admin.role = role;
    document.getElementById("admin-denied").hidden = hasRole("engineer");
    document.getElementById("admin-users").hidden = !hasRole("admin");
    document.getElementById("admin-rules").hidden = !hasRole("engineer");
    document.getElementById("admin-audit").hidden = !hasRole("engineer");
    if (hasRole("admin")) loadUsers();
    if (hasRole("engineer")) {
      loadRules();
      auditDefaults();
      loadAudit();
    }
  }

  // ------------------------------------------------------------ users

  const users = { rows: [] };

  async function loadUsers() {
    const res = await api("GET", "/api/v1/users");
    if (!res.ok) {
      status("users-status", res.message, true);
      return;
    }
    users.rows = res.body || [];
    renderUsers();
  }

  function roleSelect(value, attrs) {
    const select = el("select", attrs || {});
    for (const r of ROLES) select.append(el("option", { value: r }, `${ROLE_NAMES[r][0]} / ${r}`));
    select.value = value;
    return select;
  }

  function renderUsers() {
    const me = state.session ? state.session.user.toLowerCase() : "";
    const tz = state.timezone;
    const head = el("tr", {}, v.th("用户名", "User", "", "left"), v.th("角色", "Role", "", "left"),
      v.th("创建时间", "Created", tz), v.th("修改时间", "Changed", tz), v.th("操作", "Actions", "", "left"));
    const body = el("tbody", {});
    for (const u of users.rows) {
      const self = u.name.toLowerCase() === me;
      const actions = el("td", { class: "actions" },
        button("改角色", "Change role", { "data-action": "role", ...(self ? { disabled: "", title: "不能修改自己的角色 / you cannot change your own role" } : {}) }),
        button("重置密码", "Reset password", { "data-action": "password" }),
        button("删除", "Remove", { "data-action": "remove", ...(self ? { disabled: "", title: "不能删除自己 / you cannot remove yourself" } : {}) }));
      const row = el("tr", { "data-user": u.name },
        el("th", { scope: "row" }, u.name),
        el("td", { "data-field": "role", class: "state" }, ...bi(ROLE_NAMES[u.role] || [u.role, ""])),
        el("td", { class: "num", "data-field": "created" }, fmtTime(u.created, true)),
        el("td", { class: "num", "data-field": "updated" }, fmtTime(u.updated, true)),
        actions);
      actions.addEventListener("click", (ev) => {
        const b = ev.target.closest("button[data-action]");
        if (b && !b.disabled) openUserForm(row, u, b.dataset.action);
      });
      body.append(row);
    }
    document.getElementById("users-table").replaceChildren(el("thead", {}, head), body);
    document.getElementById("users-count").textContent = String(users.rows.length);
  }

  // An inline confirmation under the user's row: the change happens only on its submit.
  function openUserForm(row, u, action) {
    const old = row.parentNode.querySelector("tr.form-row");
    if (old) old.remove();
    const form = el("form", { class: "action-form", "data-action": action });
    const submit = (zh, en) => el("button", { type: "submit", class: "primary" }, zh, el("span", { class: "en" }, en));
    if (action === "role") {
      form.append(el("label", {}, "新角色", el("span", { class: "en" }, "New role"),
        roleSelect(u.role, { name: "role" })), submit("确认修改", "Confirm change"));
    } else if (action === "password") {
      form.append(el("label", {}, "新密码", el("span", { class: "en" }, "New password"),
        el("input", { name: "password", type: "password", minlength: "8", maxlength: "1024",
          autocomplete: "new-password", required: "" })), submit("确认重置", "Confirm reset"));
    } else {
      form.append(el("span", { class: "confirm zh" }, `删除用户 ${u.name}？`),
        el("span", { class: "confirm en" }, `Remove user ${u.name}?`), submit("确认删除", "Confirm remove"));
    }
    const cancel = button("取消", "Cancel", { "data-action": "cancel" });
    cancel.addEventListener("click", () => formRow.remove());
    form.append(cancel);
    const formRow = el("tr", { class: "form-row", "data-user": u.name }, el("td", { colspan: "5" }, form));
    row.after(formRow);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const path = `/api/v1/users/${encodeURIComponent(u.name)}`;
      let res;
      if (action === "role") res = await api("PUT", path, { role: form.elements.role.value });
      else if (action === "password") res = await api("PUT", path, { password: form.elements.password.value });
      else res = await api("DELETE", path);
      if (!res.ok) {
        status("users-status", res.message, true);
        return;
      }
      const done = { role: ["角色已修改", "role changed"], password: ["密码已重置", "password reset"],
        remove: ["已删除", "removed"] }[action];
      status("users-status", `${v.label(done[0], done[1])}: ${u.name}`, false);
      await loadUsers();
    });
  }

  async function addUser(ev) {
    ev.preventDefault();
    const name = document.getElementById("user-add-name");
    const role = document.getElementById("user-add-role");
    const password = document.getElementById("user-add-password");
    const res = await api("POST", "/api/v1/users", { user: name.value.trim(), role: role.value, password: password.value });
    if (!res.ok) {
      status("users-status", res.message, true);
      return;
    }
    password.value = "";
    name.value = "";
    status("users-status", `${v.label("已添加", "added")}: ${res.body.name} (${res.body.role})`, false);
    await loadUsers();
  }

  // ------------------------------------------------------------ alarm rules

  const rules = { rows: [], editing: null };

  function targetText(t) {
    if (!t || typeof t !== "object") return ["", ""];
    const info = FIELDS[t.field] || [t.field || "", t.field || "", ""];
    let zh = "";
    let en = "";
    // The rules as the server answers them hold every key: null for the kinds not used.
    if (t.source != null || t.unit != null) {
      const kind = t.source != null ? "source" : "unit";
      const id = t[kind];
      const item = (kind === "source" ? hmi.sources : hmi.units).find((x) => x.id === id) || {};
      zh = item.name_zh || item.name || id;
      en = item.name || id;
    } else if (t.tag != null) {
      zh = `测点 ${t.tag}`;
      en = `tag ${t.tag}`;
    } else if (t.site) {
      zh = "全厂";
      en = "site";
    }
    return [`${zh} ${info[0]}`, `${en} ${info[1]}`];
  }

  // What the rule watches as text, and the unit of its levels.
  function describe(r) {
    const kind = r.kind || "threshold";
    if (kind === "threshold" || kind === "rate_of_change" || kind === "stale") {
      const unit = (FIELDS[r.target && r.target.field] || ["", "", ""])[2];
      return { what: targetText(r.target), unit: kind === "stale" ? "min" : kind === "rate_of_change" ? `${unit}/min` : unit,
        levels: kind === "stale" ? ["warning_min", "alarm_min"] : ["warning", "alarm"] };
    }
    if (kind === "intensity") {
      const s = r.scope || {};
      const what = s.site ? ["全厂", "site"] : [s.source || s.unit || "", s.source || s.unit || ""];
      // A unit whose output is a product (hot metal, lime) has its intensity in t CO2/t:
      // its rule's keys say so (benchmark_t_t, min_output_t), or the unit's output unit.
      const unit = s.unit ? hmi.units.find((x) => x.id === s.unit) : null;
      const perT = r.benchmark_t_t != null || r.min_output_t != null
        || (unit != null && unit.output_unit === "t");
      const base = perT ? "t/t" : "t/MWh";
      const bench = perT ? r.benchmark_t_t : r.benchmark_t_mwh;
      const pct = bench != null;
      return { what: [`${what[0]} 排放强度（${r.window || ""}）`, `${what[1]} intensity (${r.window || ""})`],
        unit: pct ? `% × ${fmt(bench, 3)} ${base}` : base,
        levels: pct ? ["warning_pct", "alarm_pct"] : ["warning", "alarm"] };
    }
    if (kind === "allowance_position") {
      return { what: [`配额 ${r.measure}`, `allowance ${r.measure}`], unit: MEASURE_UNITS[r.measure] || "",
        levels: ["warning", "alarm"] };
    }
    if (kind === "carbon_position") {
      return { what: [`履约 ${r.measure}`, `compliance ${r.measure}`], unit: MEASURE_UNITS[r.measure] || "",
        levels: ["warning", "alarm"] };
    }
    if (kind === "capture_rate") {
      return { what: [`${r.source} 有效小时捕集率`, `${r.source} valid-hour capture`], unit: "%", levels: ["warning", "alarm"] };
    }
    if (kind === "reconciliation_diff") {
      return { what: [`${r.unit} CEMS 与核算偏差`, `${r.unit} CEMS vs factor`], unit: "%", levels: ["warning", "alarm"] };
    }
    if (kind === "comm_loss") return { what: [`设备 ${r.device}`, `device ${r.device}`], unit: "", levels: [] };
    return { what: ["", ""], unit: "", levels: [] };
  }

  function level(value, unit) {
    if (value === undefined || value === null) return DASH;
    return unit ? `${fmt(value, Number.isInteger(value) ? 0 : 2)} ${unit}` : fmt(value, 2);
  }

  async function loadRules() {
    const res = await api("GET", "/api/v1/alarm-rules");
    if (!res.ok) {
      status("rules-status", res.message, true);
      return;
    }
    rules.rows = res.body || [];
    renderRules();
  }

  function renderRules() {
    const head = el("tr", {}, v.th("规则", "Rule", "", "left"), v.th("名称", "Name", "", "left"),
      v.th("类型", "Kind", "", "left"), v.th("对象", "Watches", "", "left"),
      v.th("预警", "Warning"), v.th("报警", "Alarm"), v.th("操作", "Actions", "", "left"));
    const body = el("tbody", {});
    for (const r of rules.rows) {
      const d = describe(r);
      const [w, a] = d.levels;
      const actions = el("td", { class: "actions" },
        button("编辑", "Edit", { "data-action": "edit" }), button("删除", "Delete", { "data-action": "delete" }));
      const row = el("tr", { "data-rule": r.id },
        el("th", { scope: "row" }, r.id),
        el("td", { "data-field": "name", class: "msg" }, r.name || DASH),
        el("td", { "data-field": "kind", class: "state" }, ...bi(KINDS[r.kind || "threshold"] || [r.kind, ""])),
        el("td", { "data-field": "target", class: "msg" }, ...bi(d.what)),
        el("td", { class: "num", "data-field": "warning" }, w ? level(r[w], d.unit) : DASH),
        el("td", { class: "num", "data-field": "alarm" }, a ? level(r[a], d.unit) : DASH),
        actions);
      actions.addEventListener("click", (ev) => {
        const b = ev.target.closest("button[data-action]");
        if (!b) return;
        if (b.dataset.action === "edit") openRuleForm(r);
        else openDeleteRule(row, r);
      });
      body.append(row);
    }
    document.getElementById("rules-table").replaceChildren(el("thead", {}, head), body);
    document.getElementById("rules-count").textContent = String(rules.rows.length);
  }

  function openDeleteRule(row, r) {
    const old = row.parentNode.querySelector("tr.form-row");
    if (old) old.remove();
    const form = el("form", { class: "action-form" },
      el("span", { class: "confirm zh" }, `删除规则 ${r.id}？`), el("span", { class: "confirm en" }, `Delete rule ${r.id}?`),
      el("label", {}, "说明", el("span", { class: "en" }, "Comment"),
        el("input", { name: "comment", maxlength: "1000", required: "" })),
      el("button", { type: "submit", class: "primary" }, "确认删除", el("span", { class: "en" }, "Confirm delete")));
    const cancel = button("取消", "Cancel", {});
    form.append(cancel);
    const formRow = el("tr", { class: "form-row", "data-rule": r.id }, el("td", { colspan: "7" }, form));
    cancel.addEventListener("click", () => formRow.remove());
    row.after(formRow);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const res = await api("DELETE", `/api/v1/alarm-rules/${encodeURIComponent(r.id)}`,
        { comment: form.elements.comment.value });
      if (!res.ok) {
        status("rules-status", res.message, true);
        return;
      }
      rules.rows = res.body || [];
      renderRules();
      status("rules-status", `${v.label("已删除", "deleted")}: ${r.id}`, false);
    });
  }

  // The form edits the rule's JSON (every kind has other fields); name and the two levels
  // have their own inputs, which write into it.
  function openRuleForm(r) {
    rules.editing = r ? r.id : null;
    const first = hmi.sources[0];
    const rule = r ? r : { id: "", name: "", kind: "threshold",
      target: { source: first ? first.id : "S1", field: "co2_rate_t_h" }, direction: "high",
      warning: null, alarm: null };
    const form = document.getElementById("rule-form");
    document.getElementById("rule-form-title").replaceChildren(
      ...(r ? [`编辑规则 ${r.id}`, el("span", { class: "en" }, `Edit rule ${r.id}`)]
        : ["新建规则", el("span", { class: "en" }, "New rule")]));
    document.getElementById("rule-json").value = JSON.stringify(rule, null, 2);
    document.getElementById("rule-comment").value = "";
    showRuleError("");
    syncInputs();
    form.hidden = false;
    form.scrollIntoView({ block: "nearest" });
  }

  function parseRule() {
    try {
      const rule = JSON.parse(document.getElementById("rule-json").value);
      return rule && typeof rule === "object" && !Array.isArray(rule) ? rule : null;
    } catch (e) {
      return null;
    }
  }

  function syncInputs() {
    const rule = parseRule();
    if (!rule) return;
    const d = describe(rule);
    const [w, a] = d.levels;
    document.getElementById("rule-name").value = rule.name || "";
    for (const [id, key] of [["rule-warning", w], ["rule-alarm", a]]) {
      const input = document.getElementById(id);
      input.disabled = !key;
      input.dataset.key = key || "";
      input.value = key && rule[key] !== null && rule[key] !== undefined ? String(rule[key]) : "";
      document.getElementById(`${id}-unit`).textContent = d.unit;
    }
  }

  function writeInput(ev) {
    const rule = parseRule();
    if (!rule) {
      showRuleError("规则 JSON 无效 / the rule is not valid JSON");
      return;
    }
    const input = ev.target;
    if (input.id === "rule-name") rule.name = input.value;
    else if (input.dataset.key) rule[input.dataset.key] = input.value === "" ? null : Number(input.value);
    document.getElementById("rule-json").value = JSON.stringify(rule, null, 2);
    showRuleError("");
  }

  function showRuleError(text) {
    const box = document.getElementById("rule-error");
    box.textContent = text || "";
    box.hidden = !text;
  }

  async function saveRule(ev) {
    ev.preventDefault();
    const rule = parseRule();
    if (!rule) {
      showRuleError("规则 JSON 无效 / the rule is not valid JSON");
      return;
    }
    const comment = document.getElementById("rule-comment").value;
    const res = rules.editing === null
      ? await api("POST", "/api/v1/alarm-rules", { rule, comment })
      : await api("PUT", `/api/v1/alarm-rules/${encodeURIComponent(rules.editing)}`, { rule, comment });
    if (!res.ok) {
      // The server's message names the rule's field (and lists every problem).
      const problems = res.body && Array.isArray(res.body.problems) ? res.body.problems : [];
      showRuleError([res.message, ...problems.slice(3).map((p) => `${p.path}: ${p.problem}`)].join("\n"));
      return;
    }
    document.getElementById("rule-form").hidden = true;
    rules.rows = res.body || [];
    renderRules();
    status("rules-status", `${v.label("已保存", "saved")}: ${rule.id}`, false);
  }

  // ------------------------------------------------------------ audit log

  const audit = { rows: [], seq: 0 };

  function auditDefaults() {
    const fromBox = document.getElementById("audit-from");
    const toBox = document.getElementById("audit-to");
    if (fromBox.value && toBox.value) return;
    const now = Date.now() + state.clockOffsetMs;
    toBox.value = v.epochToLocal(now + 3_600_000, true);
    fromBox.value = v.epochToLocal(now - 86_400_000, true);
  }

  async function loadAudit() {
    const seq = ++audit.seq;
    const from = v.localToEpoch(document.getElementById("audit-from").value);
    const to = v.localToEpoch(document.getElementById("audit-to").value);
    if (!(from < to)) {
      status("audit-status", v.label("时间范围无效", "invalid range"), true);
      return;
    }
    status("audit-status", v.label("加载中…", "loading…"), false);
    const q = `from=${encodeURIComponent(v.isoUtc(from))}&to=${encodeURIComponent(v.isoUtc(to))}`;
    const res = await api("GET", `/api/v1/audit?${q}`);
    if (seq !== audit.seq) return;
    if (!res.ok) {
      status("audit-status", res.message, true);
      return;
    }
    audit.rows = res.body || [];
    fillAuditFilters();
    renderAudit();
  }

  function fillAuditFilters() {
    for (const [id, key, all] of [["audit-user", "user", ["全部用户", "all users"]],
      ["audit-action", "action", ["全部操作", "all actions"]]]) {
      const select = document.getElementById(id);
      const keep = select.value;
      const values = [...new Set(audit.rows.map((e) => e[key]))].sort();
      const name = (x) => (key === "action" && ACTIONS[x] ? `${ACTIONS[x][0]} / ${x}` : x);
      select.replaceChildren(el("option", { value: "" }, v.label(all[0], all[1])),
        ...values.map((x) => el("option", { value: x }, name(x))));
      select.value = values.includes(keep) ? keep : "";
    }
  }

  function detailText(d) {
    if (!d || typeof d !== "object") return DASH;
    const parts = Object.entries(d).map(([k, x]) => `${k}: ${typeof x === "object" && x !== null ? JSON.stringify(x) : x}`);
    return parts.length ? parts.join("; ") : DASH;
  }

  // The API gives each entry's hash and its predecessor's, not a verdict on the whole
  // chain: the page checks the links between the entries it was given.
  function chainCheck(rows) {
    const sorted = [...rows].sort((a, b) => a.seq - b.seq);
    for (let i = 0; i < sorted.length; i++) {
      const e = sorted[i];
      const before = i > 0 && sorted[i - 1].seq === e.seq - 1 ? sorted[i - 1].hash : e.seq === 1 ? GENESIS : null;
      if (before !== null && e.prev_hash !== before) return e.seq;
    }
    return null;
  }

  function renderAudit() {
    const user = document.getElementById("audit-user").value;
    const action = document.getElementById("audit-action").value;
    const shown = audit.rows.filter((e) => (!user || e.user === user) && (!action || e.action === action))
      .sort((a, b) => b.seq - a.seq); // newest first
    const head = el("tr", {}, v.th("序号", "Seq"), v.th("时间", "Time", state.timezone, "left"),
      v.th("用户", "User", "", "left"), v.th("操作", "Action", "", "left"),
      v.th("对象", "Target", "", "left"), v.th("详情", "Detail", "", "left"));
    const body = el("tbody", {});
    for (const e of shown) {
      body.append(el("tr", { "data-seq": String(e.seq), "data-action": e.action },
        el("td", { class: "num" }, String(e.seq)),
        el("th", { scope: "row", class: "num", "data-field": "t" }, fmtTime(e.t, true)),
        el("td", { "data-field": "user", class: "state" }, e.user),
        el("td", { "data-field": "action", class: "state" }, ...(ACTIONS[e.action] ? bi(ACTIONS[e.action]) : [e.action])),
        el("td", { "data-field": "target", class: "state" }, e.target),
        el("td", { "data-field": "detail", class: "msg" }, detailText(e.detail))));
    }
    document.getElementById("audit-table").replaceChildren(el("thead", {}, head), body);
    document.getElementById("audit-count").textContent = String(shown.length);
    status("audit-status", audit.rows.length
      ? v.label(`共 ${audit.rows.length} 条，显示 ${shown.length} 条`, `${audit.rows.length} entries, ${shown.length} shown`)
      : v.label("该时段无记录", "no entries in this range"), false);
    const broken = chainCheck(audit.rows);
    const chain = document.getElementById("audit-chain");
    chain.dataset.chain = !audit.rows.length ? "none" : broken === null ? "linked" : "broken";
    if (!audit.rows.length) status("audit-chain", "", false);
    else if (broken === null) {
      status("audit-chain", v.label("哈希链：所列条目首尾相接（服务器未给出全链校验结果，可用 carbonscada audit verify 校验）",
        "Hash chain: the entries listed link up (the server gives no verdict on the whole chain; run carbonscada audit verify)"), false);
    } else {
      status("audit-chain", v.label(`哈希链断开：条目 ${broken} 的 prev_hash 与前一条不符`,
        `Hash chain broken: entry ${broken}'s prev_hash is not the hash before it`), true);
    }
  }

  // ------------------------------------------------------------ start

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("user-add-role").replaceWith(roleSelect("viewer", { id: "user-add-role", name: "role" }));
    document.getElementById("user-add-form").addEventListener("submit", addUser);
    document.getElementById("rule-new").addEventListener("click", () => openRuleForm(null));
    document.getElementById("rule-form").addEventListener("submit", saveRule);
    document.getElementById("rule-cancel").addEventListener("click", () => {
      document.getElementById("rule-form").hidden = true;
    });
    for (const id of ["rule-name", "rule-warning", "rule-alarm"]) {
      document.getElementById(id).addEventListener("input", writeInput);
    }
    document.getElementById("rule-json").addEventListener("input", () => {
      if (parseRule()) {
        showRuleError("");
        syncInputs();
      }
    });
    document.getElementById("audit-load").addEventListener("click", loadAudit);
    document.getElementById("audit-user").addEventListener("change", renderAudit);
    document.getElementById("audit-action").addEventListener("change", renderAudit);
    // A login or logout while the view is open shows what the new session may see.
    new MutationObserver(() => {
      const role = state.session ? state.session.role : null;
      if (document.body.dataset.view === "admin" && role !== admin.role) show();
    }).observe(document.body, { attributes: true, attributeFilter: ["data-role"] });
  });
  hmi.viewHooks.admin = show;
})();
