// carbonscada control-room HMI: renders /ws snapshots and pushes; no external resources.
"use strict";

(() => {
  const DASH = "—";

  // Decimals per field; thousands separators everywhere.
  const SOURCE_COLUMNS = [
    ["co2_dry_pct", 2],
    ["co2_mg_m3", 0],
    ["flow_std_dry_m3_h", 0],
    ["co2_rate_t_h", 2],
    ["co2_kg", 2],
    ["co2_hour_t", 2],
    ["co2_today_t", 2],
  ];
  const UNIT_METRICS = [
    // field, decimals, zh label, en label, unit, primary?
    ["output_mwh", 2, "本分钟发电量", "Output this minute", "MWh", true],
    ["intensity_t_mwh", 3, "排放强度", "Intensity", "t/MWh", true],
    ["co2_today_t", 2, "今日排放", "CO₂ today", "t", true],
    ["output_today_mwh", 1, "今日发电量", "Output today", "MWh", false],
    ["intensity_today_t_mwh", 3, "今日强度", "Intensity today", "t/MWh", false],
    ["co2_ytd_t", 0, "年累计排放", "CO₂ year to date", "t", false],
  ];
  const SITE_DECIMALS = {
    co2_kg: 2, co2_today_t: 2, co2_ytd_t: 0, allowance_annual_t: 0,
    allowance_used_pct: 2, allowance_headroom_t: 0,
  };
  const FLAGS = {
    N: ["ok", "正常", "normal"],
    F: ["warn", "停运", "unit stopped"],
    M: ["warn", "维护", "maintenance"],
    S: ["warn", "手工设定", "manually set"],
    C: ["warn", "校准", "calibration"],
    T: ["warn", "超量程", "over range"],
    D: ["bad", "仪表故障", "instrument fault"],
    B: ["bad", "通讯故障", "communication failure"],
  };
  const CONN_TEXT = {
    connecting: "连接中 / connecting",
    connected: "已连接 / connected",
    disconnected: "连接中断 / disconnected",
  };
  const SEVERITY = { alarm: 0, warning: 1 };
  // ISA-18.2 alarm states: zh, en.
  const ACK_STATES = {
    "normal": ["正常", "normal"],
    "active-unacknowledged": ["未确认", "unacknowledged"],
    "active-acknowledged": ["已确认", "acknowledged"],
    "returned-unacknowledged": ["已恢复未确认", "returned, unacknowledged"],
    "shelved": ["已搁置", "shelved"],
    "suppressed": ["已抑制", "suppressed"],
    "out-of-service": ["已停用", "out of service"],
  };
  const ROLES = ["viewer", "operator", "engineer", "admin"];
  const ROLE_NAMES = {
    viewer: ["查看员", "viewer"], operator: ["操作员", "operator"],
    engineer: ["工程师", "engineer"], admin: ["管理员", "admin"],
  };
  // Operator actions on an alarm row: who may, and in which states ("" = state unknown).
  const ACTIONS = [
    { id: "acknowledge", zh: "确认", en: "Acknowledge", role: "operator",
      states: ["active-unacknowledged", "returned-unacknowledged", ""] },
    { id: "shelve", zh: "搁置", en: "Shelve", role: "operator",
      states: ["active-unacknowledged", "active-acknowledged", "returned-unacknowledged",
        "suppressed", ""] },
    { id: "unshelve", zh: "解除搁置", en: "Unshelve", role: "operator", states: ["shelved"] },
    { id: "out-of-service", zh: "停用", en: "Out of service", role: "engineer",
      states: ["active-unacknowledged", "active-acknowledged", "returned-unacknowledged",
        "shelved", "suppressed", ""] },
    { id: "return-to-service", zh: "恢复投用", en: "Return to service", role: "engineer",
      states: ["out-of-service"] },
  ];
  const MAX_SHELVE_MIN = 24 * 60;
  // Fields an alarm rule may watch: zh, en, unit.
  const ALARM_FIELDS = {
    co2_rate_t_h: ["CO₂ 排放速率", "CO₂ rate", "t/h"],
    co2_kg: ["本分钟排放", "CO₂ per minute", "kg"],
    co2_hour_t: ["本小时排放", "CO₂ this hour", "t"],
    co2_today_t: ["今日排放", "CO₂ today", "t"],
    co2_dry_pct: ["CO₂ 浓度（干基）", "CO₂ dry", "%"],
    co2_mg_m3: ["CO₂ 质量浓度", "CO₂ conc.", "mg/m³"],
    flow_std_dry_m3_h: ["标干流量", "Flow std dry", "m³/h"],
    output_mwh: ["本分钟发电量", "Output per minute", "MWh"],
    intensity_t_mwh: ["排放强度", "Intensity", "t/MWh"],
    allowance_used_pct: ["配额使用", "Allowance used", "%"],
  };
  // Who did what, by the event's cause.
  const ACTION_NAMES = {
    acknowledge: ["确认人", "acknowledged by"], shelve: ["搁置人", "shelved by"],
    unshelve: ["解除人", "unshelved by"], "out-of-service": ["停用人", "out of service by"],
    "return-to-service": ["恢复人", "returned to service by"],
  };

  const state = {
    timezone: "Asia/Shanghai",
    minuteSeconds: 60,
    clockOffsetMs: 0, // server time − browser time, so the clock shows plant time
    lastT: null,
    alarms: new Map(),
    ws: null,
    attempt: 0,
    retryAt: 0,
    retryTimer: null,
    resync: false,
    session: null, // {user, role, csrf_token, expires, idle_timeout_s}
    lastUse: 0, // when the session was last used (browser clock, ms)
  };

  // ------------------------------------------------------------------ formatting

  const numberFormats = new Map();
  function fmt(v, decimals) {
    if (v === null || v === undefined || !Number.isFinite(v)) return DASH;
    let nf = numberFormats.get(decimals);
    if (!nf) {
      nf = new Intl.NumberFormat("en-US", {
        minimumFractionDigits: decimals, maximumFractionDigits: decimals,
      });
      numberFormats.set(decimals, nf);
    }
    // Avoid "-0.00" for tiny negative values.
    const x = Math.abs(v) < 0.5 * 10 ** -decimals ? 0 : v;
    return nf.format(x);
  }

  const timeFormats = new Map();
  function localParts(date) {
    let f = timeFormats.get(state.timezone);
    if (!f) {
      try {
        f = new Intl.DateTimeFormat("en-CA", {
          timeZone: state.timezone, year: "numeric", month: "2-digit", day: "2-digit",
          hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
        });
      } catch (e) {
        f = new Intl.DateTimeFormat("en-CA", {
          timeZone: "UTC", year: "numeric", month: "2-digit", day: "2-digit",
          hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
        });
      }
      timeFormats.set(state.timezone, f);
    }
    const p = {};
    for (const part of f.formatToParts(date)) p[part.type] = part.value;
    return {
      date: `${p.year}-${p.month}-${p.day}`,
      time: `${p.hour}:${p.minute}:${p.second}`,
    };
  }

  function fmtTime(iso, withDate) {
    if (!iso) return DASH;
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return DASH;
    const p = localParts(d);
    return withDate ? `${p.date} ${p.time}` : p.time;
  }

  // --------------------------------------------------------------------- DOM

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) {
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function bilingual(zh, en) {
    return [zh || en || "", el("span", { class: "en" }, zh && en && zh !== en ? en : "")];
  }

  function setText(node, text) {
    if (node && node.textContent !== text) node.textContent = text;
  }

  function setFlag(node, flag) {
    if (!node) return;
    const info = FLAGS[flag];
    node.textContent = flag || DASH;
    node.className = "flag " + (info ? `flag-${info[0]}` : "flag-none");
    node.dataset.flag = flag || "";
    node.title = info ? `${info[1]} / ${info[2]}` : "";
  }

  // ------------------------------------------------------------------- render

  function renderSite(site) {
    if (!site) return;
    if (site.timezone && site.timezone !== state.timezone) {
      state.timezone = site.timezone;
    }
    if (site.minute_seconds) state.minuteSeconds = site.minute_seconds;
    setText(document.getElementById("site-name-zh"), site.name_zh || site.name || "");
    setText(document.getElementById("site-name"),
      site.name_zh && site.name && site.name !== site.name_zh ? site.name : "");
    document.title = `${site.name_zh || site.name} · 碳排放监测 / Carbon monitoring`;
    setText(document.getElementById("tz"), state.timezone);
    for (const [field, decimals] of Object.entries(SITE_DECIMALS)) {
      const node = document.querySelector(`[data-site="site"][data-field="${field}"]`);
      setText(node, fmt(site[field], decimals));
    }
    const used = site.allowance_used_pct;
    const bar = document.getElementById("allowance-bar");
    if (bar) {
      const pct = Number.isFinite(used) ? Math.max(0, Math.min(100, used)) : 0;
      bar.style.width = `${pct}%`;
      bar.className = used >= 100 ? "bad" : used >= 90 ? "warn" : "";
    }
    renderForecast(site.allowance || {});
  }

  // The year-end forecast and what its shortfall would cost at the configured carbon
  // price, from the position at the latest closed hour (the answer /allowance gives); the
  // gauge's mark is where the year's pro-rated allowance stands today.
  function renderForecast(pos) {
    const has = (x) => Number.isFinite(x);
    const annual = pos.annual_t;
    setText(document.getElementById("forecast-t"), fmt(pos.forecast_year_end_t, 0));
    setText(document.getElementById("forecast-pct"), has(pos.forecast_year_end_t) && annual > 0
      ? `${fmt(pos.forecast_year_end_t / annual * 100, 1)} % 配额 of allowance` : "");
    setText(document.getElementById("shortfall-cost"), fmt(pos.shortfall_cost_cny, 0));
    const short = pos.forecast_shortfall_t;
    setText(document.getElementById("shortfall-text"), !has(short) ? ""
      : short > 0 ? `缺口 shortfall ${fmt(short, 0)} t × ${fmt(pos.carbon_price_cny_t, 2)} 元/t`
        : "无缺口 no shortfall");
    document.getElementById("forecast-tile").classList.toggle("over", has(short) && short > 0);
    document.getElementById("shortfall-tile").classList.toggle("over", has(short) && short > 0);
    const mark = document.getElementById("allowance-prorated");
    const prorated = has(pos.prorated_t) && annual > 0 ? pos.prorated_t / annual * 100 : NaN;
    mark.hidden = !has(prorated);
    if (has(prorated)) mark.style.left = `${Math.max(0, Math.min(100, prorated))}%`;
    setText(document.getElementById("allowance-prorated-text"), has(prorated)
      ? `按时间 pro-rated ${fmt(prorated, 1)} %` : "");
  }

  function buildUnits(units) {
    const box = document.getElementById("units");
    box.replaceChildren();
    for (const u of units) {
      const metrics = el("dl", { class: "metrics" });
      for (const [field, , zh, en, unit, primary] of UNIT_METRICS) {
        metrics.append(el("div", { class: primary ? "metric primary" : "metric" },
          el("dt", {}, zh, el("span", { class: "en" }, en)),
          el("dd", {},
            el("span", { class: "num", "data-unit": u.id, "data-field": field }, DASH),
            el("span", { class: "u" }, unit))));
      }
      box.append(el("article", { class: "card", "data-unit-card": u.id },
        el("header", {},
          el("h3", {}, ...bilingual(u.name_zh, u.name)),
          el("span", { class: "flag flag-none", "data-unit": u.id, "data-field": "flag" }, DASH)),
        metrics));
    }
  }

  function updateUnit(u) {
    if (!document.querySelector(`[data-unit-card="${CSS.escape(u.id)}"]`)) return false;
    const sel = (f) => document.querySelector(
      `[data-unit="${CSS.escape(u.id)}"][data-field="${f}"]`);
    for (const [field, decimals] of UNIT_METRICS) setText(sel(field), fmt(u[field], decimals));
    setFlag(sel("flag"), u.flag);
    return true;
  }

  function buildSources(sources) {
    const body = document.getElementById("sources");
    body.replaceChildren();
    for (const s of sources) {
      const row = el("tr", { "data-source-row": s.id },
        el("th", { class: "name", scope: "row" }, ...bilingual(s.name_zh, s.name),
          el("span", { class: "id" }, s.unit ? `${s.id} · ${s.unit}` : s.id)));
      for (const [field] of SOURCE_COLUMNS) {
        row.append(el("td", { class: "num", "data-source": s.id, "data-field": field }, DASH));
      }
      row.append(el("td", { class: "flag-col" },
        el("span", { class: "flag flag-none", "data-source": s.id, "data-field": "flag" }, DASH)));
      row.append(el("td", { class: "time-col num", "data-source": s.id, "data-field": "t" }, DASH));
      body.append(row);
    }
  }

  function updateSource(s) {
    const row = document.querySelector(`[data-source-row="${CSS.escape(s.id)}"]`);
    if (!row) return false;
    const sel = (f) => row.querySelector(`[data-field="${f}"]`);
    for (const [field, decimals] of SOURCE_COLUMNS) setText(sel(field), fmt(s[field], decimals));
    setFlag(sel("flag"), s.flag);
    const t = sel("t");
    setText(t, fmtTime(s.t, false));
    t.dataset.t = s.t || "";
    row.classList.toggle("invalid", s.valid === false);
    return true;
  }

  function hasRole(needed) {
    const s = state.session;
    return !!s && ROLES.indexOf(s.role) >= ROLES.indexOf(needed) && ROLES.includes(needed);
  }

  function availableActions(a) {
    if (!state.session) return [];
    const ack = a.ack_state || "";
    return ACTIONS.filter((act) => hasRole(act.role) && act.states.includes(ack));
  }

  // What the rule watches, "source S1 co2_rate_t_h", as names and a unit.
  function alarmTarget(target) {
    const m = /^(source|unit|site)\s+(\S+)\s+(\S+)$/.exec(target || "");
    if (!m) return { zh: "", en: "", unit: "" };
    const [, kind, id, field] = m;
    const list = kind === "source" ? hmi.sources : kind === "unit" ? hmi.units : [];
    const item = list.find((x) => x.id === id) || {};
    const info = ALARM_FIELDS[field] || [field, field, ""];
    const zhName = item.name_zh || item.name || id;
    const enName = item.name || id;
    return { zh: `${zhName} ${info[0]}`, en: `${enName} ${info[1]}`, unit: info[2] };
  }

  function buildAlarmRow(rule) {
    return el("li", { "data-rule": rule },
      el("span", { class: "sev" }),
      el("span", { class: "when num" }),
      el("span", { class: "ack", "data-field": "ack_state" }),
      el("span", { class: "msg" }),
      el("span", { class: "detail num" }),
      el("span", { class: "target" }),
      el("span", { class: "actions" }),
      el("span", { class: "row-error", role: "alert", hidden: "" }));
  }

  function fillAlarmRow(li, a) {
    const part = (cls) => li.querySelector(`:scope > .${cls}`);
    const ack = a.ack_state || "";
    li.className = `alarm-item ${a.state}`;
    li.dataset.ackState = ack;
    li.classList.toggle("unacked", ack === "active-unacknowledged" || ack === "returned-unacknowledged");
    li.classList.toggle("masked", ack === "shelved" || ack === "suppressed" || ack === "out-of-service");
    const severity = a.state === "alarm" ? ["报警", "Alarm"]
      : a.state === "warning" ? ["预警", "Warning"] : ["已恢复", "Returned"];
    part("sev").replaceChildren(severity[0], el("span", { class: "en" }, severity[1]));
    const label = ACK_STATES[ack];
    part("ack").replaceChildren(...(label ? [label[0], el("span", { class: "en" }, label[1])] : []));
    if (ack === "shelved" && a.shelved_until) {
      part("ack").append(el("span", { class: "until num" }, ` → ${fmtTime(a.shelved_until, false)}`));
    }
    part("msg").replaceChildren(a.message_zh || a.message || a.rule,
      el("span", { class: "en" }, a.message_zh ? a.message : ""));
    // The time shown is when the condition began (the server's raised_at, kept over
    // acknowledge and shelve and over a page reload), not when someone acted on it.
    const since = a.raised_at || a.t;
    setText(part("when"), fmtTime(since, false));
    part("when").dataset.t = since || "";
    const target = alarmTarget(a.target);
    const u = target.unit ? ` ${target.unit}` : "";
    const detail = [];
    if (a.value !== null && a.value !== undefined) detail.push(`值 value ${fmt(a.value, 2)}${u}`);
    if (a.limit !== null && a.limit !== undefined) detail.push(`限值 limit ${fmt(a.limit, 2)}${u}`);
    if (a.acknowledged_by && a.cause !== "acknowledge") {
      detail.push(`确认 acknowledged by ${a.acknowledged_by} (${fmtTime(a.acknowledged_at, false)})`);
    }
    if (a.user) {
      const did = ACTION_NAMES[a.cause] || ["操作", "by"];
      detail.push(`${did[0]} ${did[1]} ${a.user}：${a.comment || ""} (${fmtTime(a.t, false)})`);
    }
    setText(part("detail"), detail.join(" · "));
    part("target").replaceChildren(...(target.zh
      ? [target.zh, el("span", { class: "en" }, target.en)] : [a.target || ""]));
    part("target").title = a.target || "";

    const acts = availableActions(a);
    const key = acts.map((act) => act.id).join(",");
    const box = part("actions");
    if (box.dataset.key !== key) {
      box.dataset.key = key;
      box.replaceChildren(...acts.map((act) => {
        const b = el("button", { type: "button", class: "act", "data-action": act.id },
          act.zh, el("span", { class: "en" }, act.en));
        b.addEventListener("click", () => openActionForm(li, act));
        return b;
      }));
    }
    // A form for an action that no longer applies (someone else acted) is closed.
    const form = li.querySelector(":scope > form.action-form");
    if (form && !acts.some((act) => act.id === form.dataset.action)) form.remove();
  }

  function showRowError(li, message) {
    const box = li.querySelector(":scope > .row-error");
    box.textContent = message || "";
    box.hidden = !message;
  }

  function openActionForm(li, act) {
    const old = li.querySelector(":scope > form.action-form");
    if (old) old.remove();
    showRowError(li, "");
    const comment = el("input", {
      name: "comment", required: "", maxlength: "1000", autocomplete: "off",
      placeholder: "说明（必填） / comment (required)", "aria-label": "说明 / Comment",
    });
    const fields = [el("label", {}, "说明", el("span", { class: "en" }, "Comment"), comment)];
    let minutes = null;
    if (act.id === "shelve") {
      minutes = el("input", {
        name: "minutes", type: "number", min: "1", max: String(MAX_SHELVE_MIN), step: "1",
        value: "60", required: "", class: "num",
      });
      fields.push(el("label", {}, "时长（分钟）", el("span", { class: "en" }, "Minutes"), minutes));
    }
    const submit = el("button", { type: "submit", class: "primary" },
      act.zh, el("span", { class: "en" }, act.en));
    const cancel = el("button", { type: "button", class: "cancel" },
      "取消", el("span", { class: "en" }, "Cancel"));
    const form = el("form", { class: "action-form", "data-action": act.id },
      ...fields, submit, cancel);
    cancel.addEventListener("click", () => {
      form.remove();
      showRowError(li, "");
    });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = { comment: comment.value.trim() };
      if (!body.comment) {
        showRowError(li, "请填写说明 / a comment is required");
        comment.focus();
        return;
      }
      if (minutes) body.minutes = Number(minutes.value);
      submit.disabled = true;
      const rule = li.dataset.rule;
      const res = await api("POST", `/api/v1/alarms/${encodeURIComponent(rule)}/${act.id}`, body);
      submit.disabled = false;
      if (res.ok) {
        form.remove();
        showRowError(li, "");
        // The WebSocket may already have brought this or a newer event of the rule.
        const known = state.alarms.get(rule);
        const now = res.body.alarm;
        if (!known || !now || known.t <= now.t) {
          if (now) state.alarms.set(rule, now);
          else state.alarms.delete(rule);
          renderAlarms();
        }
      } else {
        showRowError(li, res.message);
      }
    });
    li.append(form);
    comment.focus();
  }

  function renderAlarms() {
    const list = document.getElementById("alarm-list");
    const items = [...state.alarms.values()].sort((a, b) =>
      (SEVERITY[a.state] ?? 2) - (SEVERITY[b.state] ?? 2) || (a.t < b.t ? 1 : a.t > b.t ? -1 : 0));
    const wanted = new Set(items.map((a) => a.rule));
    for (const li of [...list.children]) {
      if (!wanted.has(li.dataset.rule)) li.remove();
    }
    // Rows are updated in place so that an open comment form keeps its text and focus.
    items.forEach((a, i) => {
      let li = list.querySelector(`:scope > li[data-rule="${CSS.escape(a.rule)}"]`);
      if (!li) li = buildAlarmRow(a.rule);
      fillAlarmRow(li, a);
      if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
    });
    const section = document.getElementById("alarms");
    const nAlarm = items.filter((a) => a.state === "alarm").length;
    const nWarn = items.filter((a) => a.state === "warning").length;
    section.dataset.count = String(items.length);
    section.dataset.level = nAlarm ? "alarm" : nWarn ? "warning" : "normal";
    setText(document.getElementById("alarm-count"), String(items.length));
    document.getElementById("alarm-empty").hidden = items.length > 0;
    for (const hook of hmi.alarmListHooks) hook(items);
  }

  // ------------------------------------------------------------------ login

  // One request to the API: {ok, status, body, message}; message is bilingual on errors.
  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (state.session && method !== "GET") headers["X-CSRF-Token"] = state.session.csrf_token;
    let res;
    try {
      res = await fetch(path, {
        method, headers, credentials: "same-origin", cache: "no-store",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      return { ok: false, status: 0, body: null, message: "无法连接服务器 / server unreachable" };
    }
    let data = null;
    try {
      data = await res.json();
    } catch (e) {
      data = null;
    }
    if (res.ok) {
      if (state.session) state.lastUse = Date.now();
      return { ok: true, status: res.status, body: data, message: "" };
    }
    const text = (data && data.error) || `HTTP ${res.status}`;
    let message = text;
    if (res.status === 401 && path !== "/api/v1/login") {
      message = `未登录或登录已过期 / ${text}`;
      setSession(null);
    } else if (res.status === 403) {
      message = `无权限 / ${text}`;
    } else if (res.status === 409) {
      message = `操作未执行 / ${text}`;
    }
    return { ok: false, status: res.status, body: data, message };
  }

  function setSession(session) {
    state.session = session;
    state.lastUse = Date.now();
    const auth = document.getElementById("auth");
    auth.dataset.state = session ? "in" : "out";
    document.getElementById("login-form").hidden = !!session;
    document.getElementById("session-box").hidden = !session;
    document.body.dataset.role = session ? session.role : "";
    if (session) {
      setText(document.getElementById("session-user"), session.user);
      const names = ROLE_NAMES[session.role] || [session.role, ""];
      document.getElementById("session-role").replaceChildren(
        names[0], el("span", { class: "en" }, names[1]));
      showLoginError("");
    }
    renderAlarms();
  }

  function showLoginError(message) {
    const box = document.getElementById("login-error");
    box.textContent = message || "";
    box.hidden = !message;
  }

  async function login(ev) {
    ev.preventDefault();
    const user = document.getElementById("login-user");
    const password = document.getElementById("login-password");
    const button = document.getElementById("login-submit");
    button.disabled = true;
    const res = await api("POST", "/api/v1/login", { user: user.value, password: password.value });
    button.disabled = false;
    password.value = "";
    if (res.ok) {
      setSession(res.body);
      return;
    }
    if (res.status === 401) showLoginError("用户名或密码错误 / wrong user name or password");
    else if (res.status === 429) showLoginError(`尝试次数过多 / ${res.message}`);
    else showLoginError(res.message);
  }

  async function logout() {
    await api("POST", "/api/v1/logout", {});
    setSession(null);
  }

  async function loadSession() {
    const res = await api("GET", "/api/v1/session");
    setSession(res.ok ? res.body : null);
  }

  // The server ends an unused session on its own; show the login box when it has.
  function checkSessionExpiry() {
    const s = state.session;
    if (!s) return;
    const now = Date.now();
    const idle = (s.idle_timeout_s || 0) * 1000;
    const end = Date.parse(s.expires || "") - state.clockOffsetMs;
    if ((idle && now - state.lastUse > idle) || (Number.isFinite(end) && now > end)) {
      setSession(null);
      showLoginError("登录已过期 / session expired");
    }
  }

  function setLastMinute(t) {
    if (t) state.lastT = t;
    setText(document.getElementById("last-minute"), fmtTime(state.lastT, true));
  }

  function applySnapshot(msg) {
    if (msg.server_time) {
      const server = Date.parse(msg.server_time);
      if (Number.isFinite(server)) state.clockOffsetMs = server - Date.now();
    }
    renderSite(msg.site);
    hmi.units = msg.units || [];
    hmi.sources = msg.sources || [];
    for (const hook of hmi.snapshotHooks) hook(msg);
    buildUnits(msg.units || []);
    for (const u of msg.units || []) updateUnit(u);
    buildSources(msg.sources || []);
    for (const s of msg.sources || []) updateSource(s);
    setAlarms(msg.alarms || []);
    renderAlarms();
    setLastMinute(msg.t);
  }

  function applyMinute(msg) {
    for (const hook of hmi.minuteHooks) hook(msg);
    renderSite(msg.site);
    let unknown = false;
    for (const u of msg.units || []) unknown = !updateUnit(u) || unknown;
    for (const s of msg.sources || []) unknown = !updateSource(s) || unknown;
    setLastMinute(msg.t);
    // A source or unit the page has not seen: fetch a fresh snapshot by reconnecting.
    if (unknown && state.ws) {
      state.resync = true;
      state.ws.close();
    }
  }

  // Listed: every ISA-18.2 state but normal (returned, shelved, suppressed, out of service).
  function isListed(a) {
    return a.ack_state ? a.ack_state !== "normal" : a.state !== "normal";
  }

  function setAlarms(list) {
    state.alarms = new Map(list.map((a) => [a.rule, a]));
  }

  // A condition rising from normal is a new alarm: the views' hooks sound and show it.
  function applyAlarm(msg) {
    const known = state.alarms.get(msg.rule);
    const rose = (!msg.cause || msg.cause === "condition") && msg.state !== "normal" &&
      (msg.previous === "normal" || !known);
    if (isListed(msg)) state.alarms.set(msg.rule, msg);
    else state.alarms.delete(msg.rule);
    renderAlarms();
    if (rose) for (const hook of hmi.alarmHooks) hook(msg);
  }

  // --------------------------------------------------------------- connection

  function setConn(s) {
    const conn = document.getElementById("conn");
    conn.dataset.state = s;
    setText(document.getElementById("conn-text"), CONN_TEXT[s]);
    document.body.classList.toggle("offline", s !== "connected");
    if (s !== "disconnected") setText(document.getElementById("conn-retry"), "");
  }

  function connect() {
    state.retryTimer = null;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let ws;
    try {
      ws = new WebSocket(`${scheme}//${location.host}/ws`);
    } catch (e) {
      scheduleReconnect();
      return;
    }
    state.ws = ws;
    if (document.getElementById("conn").dataset.state !== "disconnected") setConn("connecting");
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      switch (msg.type) {
        case "snapshot":
          applySnapshot(msg);
          state.attempt = 0;
          setConn("connected");
          break;
        case "minute": applyMinute(msg); break;
        case "alarm": applyAlarm(msg); break;
        case "alarms":
          setAlarms(msg.alarms || []);
          renderAlarms();
          break;
        default: break;
      }
    };
    ws.onclose = () => {
      if (state.ws !== ws) return;
      state.ws = null;
      if (state.resync) {
        state.resync = false;
        connect();
        return;
      }
      setConn("disconnected");
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    if (state.retryTimer) return;
    // Exponential backoff 1 s … 30 s with jitter, so many screens do not reconnect in step.
    const base = Math.min(30000, 1000 * 2 ** state.attempt);
    const delay = base / 2 + Math.random() * base / 2;
    state.attempt = Math.min(state.attempt + 1, 10);
    state.retryAt = Date.now() + delay;
    state.retryTimer = setTimeout(connect, delay);
  }

  // -------------------------------------------------------------------- clock

  function tick() {
    checkSessionExpiry();
    const now = new Date(Date.now() + state.clockOffsetMs);
    const p = localParts(now);
    setText(document.getElementById("local-date"), p.date);
    setText(document.getElementById("local-time"), p.time);
    const conn = document.getElementById("conn");
    if (conn.dataset.state === "disconnected" && state.retryTimer) {
      const s = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
      setText(document.getElementById("conn-retry"), `${s} s 后重连 / retry in ${s} s`);
    }
    // A row whose last minute is more than three minutes old is marked stale.
    const staleMs = 3 * state.minuteSeconds * 1000;
    for (const cell of document.querySelectorAll('[data-field="t"][data-source]')) {
      const t = Date.parse(cell.dataset.t || "");
      const stale = Number.isFinite(t) && now.getTime() - t > staleMs;
      cell.closest("tr").classList.toggle("stale", stale);
    }
  }

  // What the views of web/static/views.js share with this page: its state, formatting,
  // the API helper and hooks on the WebSocket messages; window.hmi.charts holds the
  // uPlot charts (the tests read their data from there).
  const hmi = {
    state, fmt, fmtTime, localParts, el, bilingual, setText, setFlag, api, FLAGS, alarmTarget,
    units: [], sources: [], minuteHooks: [], snapshotHooks: [], alarmHooks: [], alarmListHooks: [],
    charts: {},
  };
  window.hmi = hmi;

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("login-form").addEventListener("submit", login);
    document.getElementById("logout").addEventListener("click", logout);
    tick();
    setInterval(tick, 1000);
    connect();
    loadSession();
  });
})();
