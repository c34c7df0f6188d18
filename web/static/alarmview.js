// carbonscada HMI alarm view: the alarm journal with filters, the shelved list, and the
// banner and beep of a new alarm (WebAudio, no sound file: the control room has no internet).
// The active list with its role-dependent actions is web/static/app.js's #alarm-list.
"use strict";

(() => {
  const hmi = window.hmi;
  const { el, fmt, fmtTime, api, state } = hmi;
  const v = hmi.views;
  const SEVERITY = { alarm: ["报警", "Alarm"], warning: ["预警", "Warning"], normal: ["正常", "Normal"] };
  const CAUSES = {
    condition: ["状态变化", "condition"], acknowledge: ["确认", "acknowledge"],
    shelve: ["搁置", "shelve"], unshelve: ["取消搁置", "unshelve"],
    shelve_expired: ["搁置到期", "shelve expired"], suppress: ["抑制", "suppress"],
    unsuppress: ["取消抑制", "unsuppress"], out_of_service: ["停用", "out of service"],
    return_to_service: ["恢复投用", "return to service"], removed: ["规则删除", "rule removed"],
    comment: ["备注", "comment"], confirm: ["确认记录", "confirm"],
  };
  const BEEP_EVERY_MS = 4000;

  function bi(pair) {
    return pair ? [pair[0], el("span", { class: "en" }, pair[1])] : [];
  }

  // ------------------------------------------------------------ journal

  const journal = { rows: [], rules: new Set(), seq: 0 };

  function journalDefaults() {
    const fromBox = document.getElementById("journal-from");
    const toBox = document.getElementById("journal-to");
    if (fromBox.value && toBox.value) return;
    const now = Date.now() + state.clockOffsetMs;
    toBox.value = v.epochToLocal(now + 3_600_000, true);
    fromBox.value = v.epochToLocal(now - 86_400_000, true);
  }

  // Rules to choose from: those seen in the journal and the active list, and the configured
  // ones when the session may read them (viewer or higher).
  async function fillRules() {
    for (const a of state.alarms.values()) journal.rules.add(a.rule);
    if (state.session) {
      const res = await api("GET", "/api/v1/alarm-rules");
      if (res.ok && Array.isArray(res.body)) {
        for (const r of res.body) if (r && typeof r.id === "string") journal.rules.add(r.id);
      }
    }
    const select = document.getElementById("journal-rule");
    const keep = select.value;
    const options = [["", v.label("全部规则", "all rules")],
      ...[...journal.rules].sort().map((r) => [r, r])];
    select.replaceChildren(...options.map(([value, text]) => el("option", { value }, text)));
    select.value = journal.rules.has(keep) ? keep : "";
  }

  async function loadJournal() {
    const seq = ++journal.seq;
    const from = v.localToEpoch(document.getElementById("journal-from").value);
    const to = v.localToEpoch(document.getElementById("journal-to").value);
    if (!(from < to)) {
      v.setStatus("journal-status", v.label("时间范围无效", "invalid range"), true);
      return;
    }
    const rule = document.getElementById("journal-rule").value;
    let path = `/api/v1/alarms/journal?from=${encodeURIComponent(v.isoUtc(from))}` +
      `&to=${encodeURIComponent(v.isoUtc(to))}`;
    if (rule) path += `&rule=${encodeURIComponent(rule)}`;
    v.setStatus("journal-status", v.label("加载中…", "loading…"));
    const res = await api("GET", path);
    if (seq !== journal.seq) return; // a newer query was started
    if (!res.ok) {
      v.setStatus("journal-status", res.message, true);
      document.getElementById("journal-table").replaceChildren();
      return;
    }
    journal.rows = res.body || [];
    const before = journal.rules.size;
    for (const r of journal.rows) journal.rules.add(r.rule);
    if (journal.rules.size !== before) fillRules();
    renderJournal();
  }

  function renderJournal() {
    const wanted = document.getElementById("journal-state").value;
    // The server filters by rule and time; the condition state is filtered here.
    const rows = journal.rows.filter((r) => !wanted || r.state === wanted).slice().reverse();
    const head = el("tr", {}, v.th("时间", "Time", state.timezone), v.th("规则", "Rule", "", "left"),
      v.th("状态", "State", "", "left"), v.th("原因", "Cause", "", "left"),
      v.th("内容", "Message", "", "left"), v.th("值", "Value"), v.th("限值", "Limit"),
      v.th("操作人", "User", "", "left"), v.th("说明", "Comment", "", "left"));
    const body = el("tbody", {});
    // data-label names each cell where a narrow screen lays the rows out as cards.
    const cell = (attrs, zh, en, ...content) => el("td", { ...attrs, "data-label": `${zh} / ${en}` }, ...content);
    for (const r of rows) {
      const unit = hmi.alarmTarget(r.target).unit;
      const withUnit = (x) => (x === null || x === undefined ? v.DASH : `${fmt(x, 2)}${unit ? ` ${unit}` : ""}`);
      body.append(el("tr", { class: `journal ${r.state}`, "data-rule": r.rule, "data-state": r.state,
        "data-cause": r.cause },
      el("th", { scope: "row", class: "when num", "data-t": r.t || "" }, fmtTime(r.t, true)),
      cell({ "data-field": "rule", class: "state" }, "规则", "Rule", r.rule),
      cell({ "data-field": "state", class: `state sev-${r.state}` }, "状态", "State",
        ...bi(SEVERITY[r.state] || [r.state, ""])),
      cell({ "data-field": "cause", class: "state" }, "原因", "Cause", ...bi(CAUSES[r.cause] || [r.cause, ""])),
      cell({ "data-field": "message", class: "state msg" }, "内容", "Message", r.message_zh || r.message,
        el("span", { class: "en" }, r.message_zh ? r.message : "")),
      cell({ class: "num", "data-field": "value" }, "值", "Value", withUnit(r.value)),
      cell({ class: "num", "data-field": "limit" }, "限值", "Limit", withUnit(r.limit)),
      cell({ "data-field": "user", class: "state" }, "操作人", "User", r.user || v.DASH),
      cell({ "data-field": "comment", class: "state" }, "说明", "Comment", r.comment || v.DASH)));
    }
    document.getElementById("journal-table").replaceChildren(el("thead", {}, head), body);
    v.setStatus("journal-status", `${rows.length} ${v.label("条", "rows")}` +
      (rows.length < journal.rows.length ? ` / ${journal.rows.length}` : ""));
  }

  // ------------------------------------------------------------ shelved

  function renderShelved(items) {
    const shelved = items.filter((a) => a.ack_state === "shelved");
    hmi.setText(document.getElementById("shelved-count"), String(shelved.length));
    document.getElementById("shelved-empty").hidden = shelved.length > 0;
    const table = document.getElementById("shelved-table");
    if (!shelved.length) {
      table.replaceChildren();
      return;
    }
    const head = el("tr", {}, v.th("规则", "Rule", "", "left"), v.th("内容", "Message", "", "left"),
      v.th("报警时间", "Raised", state.timezone), v.th("搁置人", "Shelved by", "", "left"),
      v.th("搁置至", "Until", state.timezone), v.th("说明", "Comment", "", "left"));
    const body = el("tbody", {});
    for (const a of shelved) {
      body.append(el("tr", { "data-rule": a.rule },
        el("th", { scope: "row" }, a.rule),
        el("td", { class: "state msg" }, a.message_zh || a.message,
          el("span", { class: "en" }, a.message_zh ? a.message : "")),
        el("td", { class: "num", "data-field": "raised_at" }, fmtTime(a.raised_at || a.t, false)),
        el("td", { class: "state", "data-field": "user" }, a.user || v.DASH),
        el("td", { class: "num", "data-field": "shelved_until" }, fmtTime(a.shelved_until, true)),
        el("td", { class: "state", "data-field": "comment" }, a.comment || v.DASH)));
    }
    table.replaceChildren(el("thead", {}, head), body);
  }

  // ------------------------------------------------------------ banner and beep

  // What the tests read: beeps tried, whether silenced, the audio state.
  const sound = { beeps: 0, silenced: false, ctx: null, timer: null, audio: "none" };

  function audioContext() {
    if (!sound.ctx) {
      const Ctx = window.AudioContext || window.webkitAudioContext;
      if (!Ctx) return null;
      sound.ctx = new Ctx();
    }
    return sound.ctx;
  }

  // Two short tones; a browser keeps audio suspended until the page had a click, so the
  // first click anywhere (login, navigation) resumes it.
  function beep() {
    sound.beeps += 1;
    const ctx = audioContext();
    if (!ctx) return;
    if (ctx.state === "suspended") ctx.resume().catch(() => {});
    sound.audio = ctx.state;
    const t0 = ctx.currentTime;
    for (const [start, freq] of [[0, 880], [0.3, 660]]) {
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.type = "square";
      osc.frequency.value = freq;
      gain.gain.setValueAtTime(0.0001, t0 + start);
      gain.gain.exponentialRampToValueAtTime(0.2, t0 + start + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, t0 + start + 0.25);
      osc.connect(gain).connect(ctx.destination);
      osc.start(t0 + start);
      osc.stop(t0 + start + 0.27);
    }
  }

  function stopBeeping() {
    if (sound.timer) clearInterval(sound.timer);
    sound.timer = null;
  }

  function onNewAlarm(a) {
    const banner = document.getElementById("alarm-banner");
    banner.hidden = false;
    banner.dataset.rule = a.rule;
    banner.dataset.state = a.state;
    banner.classList.toggle("warning", a.state === "warning");
    document.getElementById("alarm-banner-text").replaceChildren(a.message_zh || a.message || a.rule,
      el("span", { class: "en" }, a.message_zh ? a.message : ""));
    hmi.setText(document.getElementById("alarm-banner-time"), fmtTime(a.raised_at || a.t, false));
    // A new alarm sounds again even after an earlier one was silenced.
    sound.silenced = false;
    banner.classList.remove("silenced");
    beep();
    stopBeeping();
    sound.timer = setInterval(beep, BEEP_EVERY_MS);
  }

  function silence() {
    sound.silenced = true;
    stopBeeping();
    document.getElementById("alarm-banner").classList.add("silenced");
  }

  // The banner goes once nothing listed waits for an acknowledgement.
  function checkBanner(items) {
    const waiting = items.some((a) => a.ack_state === "active-unacknowledged" ||
      a.ack_state === "returned-unacknowledged" || (!a.ack_state && a.state !== "normal"));
    if (!waiting) {
      stopBeeping();
      document.getElementById("alarm-banner").hidden = true;
    }
  }

  // ------------------------------------------------------------ view

  function showAlarms() {
    journalDefaults();
    fillRules().then(loadJournal);
  }

  hmi.viewHooks.alarms = showAlarms;
  hmi.alarmHooks.push(onNewAlarm);
  hmi.alarmListHooks.push(renderShelved, checkBanner);
  hmi.alarmSound = sound;
  hmi.journal = journal;

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("journal-load").addEventListener("click", loadJournal);
    document.getElementById("journal-rule").addEventListener("change", loadJournal);
    document.getElementById("journal-state").addEventListener("change", renderJournal);
    document.getElementById("alarm-silence").addEventListener("click", silence);
    document.getElementById("alarm-banner-close").addEventListener("click", () => {
      silence();
      document.getElementById("alarm-banner").hidden = true;
    });
    // Audio may start only after a user gesture: the first click unlocks it.
    document.addEventListener("click", () => {
      const ctx = audioContext();
      if (ctx && ctx.state === "suspended") ctx.resume().catch(() => {});
    }, { once: true });
  });
})();
