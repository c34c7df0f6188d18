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

  function renderAlarms() {
    const list = document.getElementById("alarm-list");
    const items = [...state.alarms.values()].sort((a, b) =>
      (SEVERITY[a.state] ?? 2) - (SEVERITY[b.state] ?? 2) || (a.t < b.t ? 1 : a.t > b.t ? -1 : 0));
    list.replaceChildren(...items.map((a) => {
      const severity = a.state === "alarm" ? ["报警", "Alarm"] : ["预警", "Warning"];
      const detail = [];
      if (a.value !== null && a.value !== undefined) detail.push(`值 value ${fmt(a.value, 2)}`);
      if (a.limit !== null && a.limit !== undefined) detail.push(`限值 limit ${fmt(a.limit, 2)}`);
      return el("li", { class: `alarm-item ${a.state}`, "data-rule": a.rule },
        el("span", { class: "sev" }, severity[0], el("span", { class: "en" }, severity[1])),
        el("span", { class: "when num" }, fmtTime(a.t, false)),
        el("span", { class: "msg" }, a.message_zh || a.message || a.rule,
          el("span", { class: "en" }, a.message_zh ? a.message : "")),
        el("span", { class: "detail num" }, detail.join(" · ")),
        el("span", { class: "target" }, a.target || ""));
    }));
    const section = document.getElementById("alarms");
    const nAlarm = items.filter((a) => a.state === "alarm").length;
    section.dataset.count = String(items.length);
    section.dataset.level = nAlarm ? "alarm" : items.length ? "warning" : "normal";
    setText(document.getElementById("alarm-count"), String(items.length));
    document.getElementById("alarm-empty").hidden = items.length > 0;
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
    buildUnits(msg.units || []);
    for (const u of msg.units || []) updateUnit(u);
    buildSources(msg.sources || []);
    for (const s of msg.sources || []) updateSource(s);
    state.alarms = new Map((msg.alarms || []).map((a) => [a.rule, a]));
    renderAlarms();
    setLastMinute(msg.t);
  }

  function applyMinute(msg) {
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

  function applyAlarm(msg) {
    if (msg.state === "normal") state.alarms.delete(msg.rule);
    else state.alarms.set(msg.rule, msg);
    renderAlarms();
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
          state.alarms = new Map((msg.alarms || []).map((a) => [a.rule, a]));
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

  document.addEventListener("DOMContentLoaded", () => {
    tick();
    setInterval(tick, 1000);
    connect();
  });
})();
