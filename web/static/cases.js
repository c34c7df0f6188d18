// carbonscada HMI cases view: the abnormal-data case ledger (Hubei guide §6.2.3c) through
// /api/v1/cases (web/cases.py, server/cases.py). The list of open, overdue and closed cases
// with filters; opening a case on a stored period, an alarm, a ledger entry or anything
// else; the next step of a case (action, assign, review, close, reopen) as the server allows
// it; and each case's history, every step as it was recorded. The server checks every
// step and the page shows its answer next to the form.
"use strict";

(() => {
  const hmi = window.hmi;
  const { el, fmtTime, api, state } = hmi;
  const v = hmi.views;
  const ROLES = ["viewer", "operator", "engineer", "admin"];
  // Who may take each step (web/cases.py ROLE_OF_EVENT); opening is the operator's.
  const ROLE_OF = { open: "operator", action: "operator", assign: "engineer", review: "engineer",
    close: "engineer", reopen: "engineer" };
  const EVENTS = {
    open: ["登记", "opened"], action: ["处理措施", "action"], assign: ["指派", "assigned"],
    review: ["审核", "review"], close: ["关闭", "closed"], reopen: ["重新打开", "reopened"],
  };
  const STATES = { open: ["未关闭", "open", ""], closed: ["已关闭", "closed", "ok"],
    overdue: ["逾期", "overdue", "bad"] };
  const KINDS = { period: ["周期数据", "period"], alarm: ["报警", "alarm"],
    entry: ["录入记录", "entry"], other: ["其他", "other"] };
  const FINDINGS = { accepted: ["通过", "accepted"], returned: ["退回", "returned"] };
  const DUE_DAYS = 7; // the default due time of a case opened here

  const cases = { list: [], open: null, detail: null, role: null, seq: 0, timer: null };

  function hasRole(needed) {
    const s = state.session;
    return !!s && ROLES.indexOf(s.role) >= ROLES.indexOf(needed);
  }

  function bi(pair) {
    return [pair[0], el("span", { class: "en" }, pair[1])];
  }

  function msg(id, text, bad) {
    v.setStatus(id, text, bad);
  }

  function zone() {
    return state.timezone || "UTC";
  }

  // ------------------------------------------------------------ plant time

  const localIso = v.localIso;

  function localMinute(ms) {
    const p = v.parts(ms);
    return `${p.year}-${p.month}-${p.day}T${p.hour}:${p.minute}`;
  }

  function when(iso) {
    return iso ? fmtTime(iso, true) : v.DASH;
  }

  // A time for a table cell: date and time kept whole when the cell wraps.
  function whenCell(iso) {
    const [date, time] = when(iso).split(" ");
    return time ? [el("span", { class: "d" }, date), " ", el("span", { class: "d" }, time)] : [date];
  }

  // ------------------------------------------------------------ subjects

  // What a case is about, in words: "source_hour S1 2026-03-01 16:00:00", "报警 s1_rate …".
  function subjectText(s) {
    if (!s) return v.DASH;
    if (s.kind === "period") {
      const [table, id, ...rest] = String(s.ref || "").split(":");
      const t = rest.join(":");
      return `${table} ${id} ${t ? when(t) : ""}`.trim();
    }
    if (s.kind === "alarm") return `${s.rule} ${when(s.t)}`;
    if (s.kind === "entry") return `#${s.entry}`;
    return String(s.ref || "");
  }

  // The subject with its kind: "报警 alarm s1_rate 2026-03-01 16:30:00".
  function subjectLabel(s) {
    const kind = s && KINDS[s.kind];
    return kind ? `${v.label(...kind)} ${subjectText(s)}` : subjectText(s);
  }

  function stateOf(c) {
    return c.state === "open" && c.overdue ? "overdue" : c.state;
  }

  // ------------------------------------------------------------ role gate

  function gate() {
    cases.role = state.session ? state.session.role : null;
    const operator = hasRole("operator");
    document.getElementById("cases-role").hidden = hasRole("engineer");
    document.getElementById("case-open-panel").hidden = !operator;
    for (const node of document.querySelectorAll(".cases-tz")) hmi.setText(node, zone());
    stepChoices();
  }

  // The steps the session may take on the case shown, as the case's state allows them.
  function stepChoices() {
    const form = document.getElementById("case-step-form");
    const c = cases.detail;
    const select = document.getElementById("case-step-event");
    const allowed = c ? (c.state === "closed" ? ["reopen"] : ["action", "assign", "review", "close"]) : [];
    let any = false;
    for (const option of select.options) {
      const ok = allowed.includes(option.value) && hasRole(ROLE_OF[option.value]);
      option.hidden = !ok;
      option.disabled = !ok;
      any = any || ok;
    }
    form.hidden = !any;
    if (any && select.selectedOptions[0] && select.selectedOptions[0].disabled) {
      select.value = [...select.options].find((o) => !o.disabled).value;
    }
    stepFields();
  }

  // Show the inputs of the chosen step only (labels name their steps in data-step).
  function stepFields() {
    const event = document.getElementById("case-step-event").value;
    for (const label of document.querySelectorAll("#case-step-form [data-step]")) {
      label.hidden = !label.dataset.step.split(" ").includes(event);
    }
  }

  function subjectFields() {
    const kind = document.getElementById("case-subject-kind").value;
    for (const k of Object.keys(KINDS)) {
      document.getElementById(`case-subject-${k}`).hidden = k !== kind;
    }
  }

  function periodIds() {
    const table = document.getElementById("case-period-table").value;
    const kind = table.split("_")[0];
    let ids = [];
    if (kind === "source") ids = (hmi.sources || []).map((x) => x.id);
    else if (kind === "unit") ids = (hmi.units || []).map((x) => x.id);
    else ids = (hmi.units || []).flatMap((u) => (u.streams || []).map((st) => st.id));
    document.getElementById("case-period-ids").replaceChildren(
      ...ids.map((id) => el("option", { value: id })));
  }

  // ------------------------------------------------------------ the list

  async function loadList() {
    const seq = ++cases.seq;
    const wanted = document.getElementById("cases-state").value;
    const res = await api("GET", `/api/v1/cases${wanted ? `?state=${wanted}` : ""}`);
    if (seq !== cases.seq) return; // a newer request was made meanwhile
    if (!res.ok) {
      msg("cases-status", res.message, true);
      return;
    }
    cases.list = res.body || [];
    renderList();
  }

  function filtered() {
    const kind = document.getElementById("cases-kind").value;
    const by = document.getElementById("cases-by").value;
    return cases.list.filter((c) => (!kind || c.subject.kind === kind)
      && (!by || (by === "system" ? c.opened_by === "system" : c.opened_by !== "system")));
  }

  function renderList() {
    const rows = filtered();
    const head = el("tr", {}, v.th("编号", "Case", "", "left"), v.th("状态", "State", "", "left"),
      v.th("对象", "Subject", "", "left"), v.th("标题", "Title", "", "left"),
      v.th("原因", "Cause", "", "left"), v.th("负责人", "Owner", "", "left"),
      v.th("审核人", "Reviewer", "", "left"), v.th("审核结论", "Review", "", "left"),
      v.th("期限", "Due", zone(), "left"), v.th("登记", "Opened", zone(), "left"),
      v.th("措施", "Actions"), v.th("", "", "", "left"));
    const body = el("tbody", {});
    for (const c of rows) {
      const st = stateOf(c);
      const review = c.review ? FINDINGS[c.review] : null;
      body.append(el("tr", { "data-case": String(c.id), "data-state": st, class: `case ${st}` },
        el("th", { scope: "row", class: "num" }, `#${c.id}`),
        el("td", { "data-field": "state", class: `state ${STATES[st] ? STATES[st][2] : ""}` },
          ...(STATES[st] ? bi(STATES[st]) : [st])),
        el("td", { "data-field": "subject", class: "wrap" },
          ...(KINDS[c.subject.kind] ? [el("span", { class: "d" }, v.label(...KINDS[c.subject.kind])), " "] : []),
          subjectText(c.subject)),
        el("td", { "data-field": "title", class: "wrap" }, c.title),
        el("td", { "data-field": "cause", class: "wrap" }, c.cause || v.DASH),
        el("td", { "data-field": "owner" }, c.owner),
        el("td", { "data-field": "reviewer" }, c.reviewer || v.DASH),
        el("td", { "data-field": "review" }, ...(review ? bi(review) : [v.DASH])),
        el("td", { "data-field": "due", class: st === "overdue" ? "num bad" : "num" }, ...whenCell(c.due)),
        el("td", { "data-field": "opened", class: "num" }, ...whenCell(c.opened), " ",
          el("span", { class: "d", "data-field": "opened_by" }, c.opened_by)),
        el("td", { "data-field": "actions", class: "num" }, String(c.actions)),
        el("td", {}, el("button", {
          type: "button", class: "case-open", "data-open": String(c.id),
          "aria-expanded": cases.open === c.id ? "true" : "false",
        }, "查看", el("span", { class: "en" }, "Show")))));
    }
    document.getElementById("cases-table").replaceChildren(el("thead", {}, head), body);
    hmi.setText(document.getElementById("cases-count"), String(rows.length));
    const over = cases.list.filter((c) => c.overdue).length;
    msg("cases-status", rows.length
      ? `${rows.length} ${v.label("个案例", "cases")}${over ? ` · ${over} ${v.label("个逾期", "overdue")}` : ""}`
      : v.label("没有符合条件的案例", "no case matches"), false);
  }

  // ------------------------------------------------------------ one case

  function figure(zh, en, value, field, cls) {
    return el("div", {}, el("dt", {}, zh, el("span", { class: "en" }, en)),
      el("dd", { "data-field": field, ...(cls ? { class: cls } : {}) }, ...value));
  }

  async function showCase(id) {
    cases.open = id;
    for (const b of document.querySelectorAll("#cases-table button.case-open")) {
      b.setAttribute("aria-expanded", Number(b.dataset.open) === id ? "true" : "false");
    }
    const panel = document.getElementById("case-detail-panel");
    if (id === null) {
      panel.hidden = true;
      cases.detail = null;
      return;
    }
    const res = await api("GET", `/api/v1/cases/${id}`);
    if (cases.open !== id) return; // another case was opened meanwhile
    panel.hidden = false;
    if (!res.ok) {
      cases.detail = null;
      document.getElementById("case-figures").replaceChildren();
      document.getElementById("case-history-table").replaceChildren();
      msg("case-step-msg", res.message, true);
      stepChoices();
      return;
    }
    renderCase(res.body);
  }

  function renderCase(c) {
    cases.detail = c;
    const st = stateOf(c);
    hmi.setText(document.getElementById("case-detail-id"), `#${c.id} ${c.title}`);
    document.getElementById("case-figures").replaceChildren(
      figure("状态", "State", STATES[st] ? bi(STATES[st]) : [st], "state", STATES[st] ? STATES[st][2] : ""),
      figure("对象", "Subject", [subjectLabel(c.subject)], "subject"),
      figure("原因", "Cause", [c.cause || v.DASH], "cause"),
      figure("负责人", "Owner", [c.owner], "owner"),
      figure("审核人", "Reviewer", [c.reviewer || v.DASH], "reviewer"),
      figure("期限", "Due", [when(c.due)], "due", st === "overdue" ? "bad" : ""),
      figure("登记", "Opened", [`${when(c.opened)} · ${c.opened_by}`], "opened"));
    const head = el("tr", {}, v.th("序号", "No.", "", "left"), v.th("时间", "Time", zone(), "left"),
      v.th("用户", "User", "", "left"), v.th("步骤", "Step", "", "left"),
      v.th("内容", "Details", "", "left"));
    const body = el("tbody", {});
    (c.history || []).forEach((e, i) => {
      body.append(el("tr", { "data-event": e.event, "data-id": String(e.id) },
        el("th", { scope: "row", class: "num" }, String(i + 1)),
        el("td", { "data-field": "t", class: "num" }, ...whenCell(e.t)),
        el("td", { "data-field": "user" }, e.user),
        el("td", { "data-field": "event" }, ...(EVENTS[e.event] ? bi(EVENTS[e.event]) : [e.event])),
        el("td", { "data-field": "detail", class: "wrap" }, detailText(e))));
    });
    document.getElementById("case-history-table").replaceChildren(el("thead", {}, head), body);
    stepChoices();
  }

  // What a step recorded, in words.
  function detailText(e) {
    const out = [];
    const add = (zh, en, value) => {
      if (value !== undefined && value !== null && value !== "") out.push(`${v.label(zh, en)}: ${value}`);
    };
    if (e.event === "open") {
      add("对象", "subject", subjectLabel(e.subject));
      add("标题", "title", e.title);
      add("原因", "cause", e.cause);
      add("负责人", "owner", e.owner);
      add("期限", "due", e.due ? when(e.due) : "");
    } else {
      add("说明", "note", e.note);
      add("原因", "cause", e.cause);
      add("负责人", "owner", e.owner);
      add("审核人", "reviewer", e.reviewer);
      add("结论", "finding", e.finding ? v.label(...FINDINGS[e.finding]) : "");
      add("理由", "reason", e.reason);
      add("期限", "due", e.due ? when(e.due) : "");
    }
    return out.join(" · ") || v.DASH;
  }

  // ------------------------------------------------------------ writing

  function value(id) {
    return document.getElementById(id).value.trim();
  }

  function subjectBody() {
    const kind = value("case-subject-kind");
    if (kind === "period") {
      const t = localIso(value("case-period-t"));
      if (!t) return { error: v.label("请填写周期开始时间（厂区当地时间）", "enter the period start (plant local time)") };
      return { kind, ref: `${value("case-period-table")}:${value("case-period-id")}:${t}` };
    }
    if (kind === "alarm") {
      const t = localIso(value("case-alarm-t"));
      if (!t) return { error: v.label("请填写报警时间（厂区当地时间）", "enter the alarm time (plant local time)") };
      return { kind, rule: value("case-alarm-rule"), t };
    }
    if (kind === "entry") return { kind, entry: Number(value("case-entry-id")) };
    return { kind, ref: value("case-other-ref") };
  }

  async function submitOpen(ev) {
    ev.preventDefault();
    const subject = subjectBody();
    if (subject.error) {
      msg("case-open-msg", subject.error, true);
      return;
    }
    const due = localIso(value("case-due"));
    if (!due) {
      msg("case-open-msg", v.label("请填写处理期限（厂区当地时间）", "enter the due time (plant local time)"), true);
      return;
    }
    const body = { subject, title: value("case-title"), cause: value("case-cause"), due };
    if (value("case-owner")) body.owner = value("case-owner");
    msg("case-open-msg", v.label("提交中…", "submitting…"));
    const res = await api("POST", "/api/v1/cases", body);
    if (!res.ok) {
      msg("case-open-msg", res.message, true);
      return;
    }
    const c = res.body.case;
    msg("case-open-msg", `${v.label("已登记", "opened")} #${c.id}`, false);
    for (const id of ["case-title", "case-cause"]) document.getElementById(id).value = "";
    await loadList();
    cases.open = c.id;
    renderCase(c);
    document.getElementById("case-detail-panel").hidden = false;
  }

  async function submitStep(ev) {
    ev.preventDefault();
    const c = cases.detail;
    if (!c) return;
    const event = value("case-step-event");
    const body = { event };
    const put = (key, id) => {
      if (value(id)) body[key] = value(id);
    };
    if (event === "action") {
      body.note = value("case-step-note");
      put("cause", "case-step-cause");
    } else if (event === "close") {
      body.note = value("case-step-note");
    } else if (event === "assign") {
      put("owner", "case-step-owner");
      put("reviewer", "case-step-reviewer");
    } else if (event === "review") {
      body.finding = value("case-step-finding");
      body.reason = value("case-step-reason");
    } else if (event === "reopen") {
      body.reason = value("case-step-reason");
    }
    if (event === "assign" || event === "reopen") {
      const text = value("case-step-due");
      if (text) {
        const due = localIso(text);
        if (!due) {
          msg("case-step-msg", v.label("期限不是有效时间", "the due time is not a time"), true);
          return;
        }
        body.due = due;
      }
    }
    msg("case-step-msg", v.label("提交中…", "submitting…"));
    const res = await api("POST", `/api/v1/cases/${c.id}/events`, body);
    if (!res.ok) {
      msg("case-step-msg", res.message, true);
      return;
    }
    msg("case-step-msg", `${v.label("已记录", "recorded")}: ${v.label(...EVENTS[event])}`, false);
    for (const id of ["case-step-note", "case-step-cause", "case-step-reason", "case-step-owner",
      "case-step-reviewer", "case-step-due"]) document.getElementById(id).value = "";
    renderCase(res.body.case);
    await loadList();
  }

  // ------------------------------------------------------------ showing

  function defaults() {
    const due = document.getElementById("case-due");
    if (!due.value) due.value = localMinute(Date.now() + state.clockOffsetMs + DUE_DAYS * 86_400_000);
  }

  function show() {
    gate();
    periodIds();
    defaults();
    loadList();
    if (cases.open !== null) showCase(cases.open);
  }

  hmi.viewHooks.cases = show;
  hmi.cases = cases;

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("cases-load").addEventListener("click", loadList);
    document.getElementById("cases-state").addEventListener("change", loadList);
    document.getElementById("cases-kind").addEventListener("change", renderList);
    document.getElementById("cases-by").addEventListener("change", renderList);
    document.getElementById("case-subject-kind").addEventListener("change", subjectFields);
    document.getElementById("case-period-table").addEventListener("change", periodIds);
    document.getElementById("case-open-form").addEventListener("submit", submitOpen);
    document.getElementById("case-step-form").addEventListener("submit", submitStep);
    document.getElementById("case-step-event").addEventListener("change", stepFields);
    document.getElementById("case-detail-close").addEventListener("click", () => showCase(null));
    document.getElementById("cases-table").addEventListener("click", (ev) => {
      const button = ev.target.closest("button.case-open");
      if (!button) return;
      const id = Number(button.dataset.open);
      showCase(cases.open === id ? null : id);
    });
    subjectFields();
    stepFields();
    // Cases the server opens by itself (cases.auto) appear while the view is open.
    cases.timer = setInterval(() => {
      if (document.body.dataset.view === "cases") loadList();
    }, 15000);
    // A login or logout while the view is open shows the forms the new session may use.
    new MutationObserver(() => {
      const role = state.session ? state.session.role : null;
      if (document.body.dataset.view === "cases" && role !== cases.role) gate();
    }).observe(document.body, { attributes: true, attributeFilter: ["data-role"] });
  });
})();
