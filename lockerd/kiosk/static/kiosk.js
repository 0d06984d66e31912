// The kiosk page: shows what the daemon answers; decides nothing itself.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const state = { session: null, lang: "en", strings: {}, mode: null, ws: null,
                  selected: null, info: null };

  function t(key, values) {
    let text = state.strings[key] || key;
    for (const [k, v] of Object.entries(values || {})) text = text.split("{" + k + "}").join(String(v));
    return text;
  }

  function show(screen) { document.body.dataset.screen = screen; }

  function say(key, values, tone) {
    const m = $("message");
    m.textContent = key ? t(key, values) : "";
    m.dataset.key = key || "";
    m.className = tone || "";
  }

  async function setLanguage(lang) {
    const res = await fetch("/i18n/" + lang + ".json");
    state.strings = await res.json();
    state.lang = lang;
    document.documentElement.lang = lang;
    document.documentElement.dir = state.strings.dir || "ltr";
    for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
    for (const b of document.querySelectorAll("#languages button"))
      b.setAttribute("aria-pressed", String(b.dataset.lang === lang));
    const m = $("message");
    if (m.dataset.key) m.textContent = t(m.dataset.key, state.lastValues);
    if (state.session) api("POST", "/api/language", { language: lang }).catch(() => {});
    if (document.body.dataset.screen === "service" && state.cabinet) drawCabinet(state.cabinet);
  }

  async function ensureSession() {
    if (state.session) return;
    const res = await fetch("/api/sessions", { method: "POST", headers: { "Content-Type": "application/json" },
                                               body: JSON.stringify({ language: state.lang }) });
    state.session = (await res.json()).session;
    openSocket();
  }

  async function api(method, path, body) {
    await ensureSession();
    const res = await fetch(path, { method, headers: { "Content-Type": "application/json", "X-Kiosk-Session": state.session },
                                    body: body === undefined ? undefined : JSON.stringify(body) });
    const data = await res.json().catch(() => ({ screen: "error", message: "error.unexpected" }));
    if (res.status === 401) { state.session = null; }
    return data;
  }

  function openSocket() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(proto + "//" + location.host + "/api/events?session=" + encodeURIComponent(state.session));
    state.ws = ws;
    ws.onmessage = (ev) => onPush(JSON.parse(ev.data));
  }

  function onPush(msg) {
    if (msg.type === "door.closed") {
      say(msg.message, { compartment: msg.compartment }, "good");
      if (state.mode === "courier") { show("courier"); $("barcode").focus(); }
      else if (state.mode !== "service") setTimeout(() => { if (document.body.dataset.screen === "door_open") reset(); }, 4000);
    } else if (msg.type === "payment.confirmed") {
      $("payment-state").textContent = t("payment.confirmed");
      say("payment.confirmed", {}, "good");
      // The code was right and the parcel is paid: ask again for the same code to open.
      if (state.lastCode) submitCode(state.lastCode);
    } else if (msg.type === "screen") {
      render(msg);
    } else if (msg.type === "cabinet") {
      drawCabinet(msg.cabinet);
    } else if (msg.type === "session.ended") {
      state.session = null; state.mode = null; reset(); say(msg.message);
    }
  }

  function render(r) {
    state.lastValues = r;
    const tone = r.screen === "error" || r.screen === "lock_failed" ? "bad" : "good";
    say(r.message, r, tone);
    if (r.screen === "door_open") {
      $("door-compartment").textContent = r.compartment;
      show("door_open");
    } else if (r.screen === "payment") {
      $("payment-qr").src = "/api/payment/qr.svg?session=" + encodeURIComponent(state.session) + "&t=" + Date.now();
      $("payment-state").textContent = t(r.needs_network ? "payment.offline" : "payment.waiting");
      show("payment");
    } else if (r.screen === "courier") {
      state.mode = "courier"; show("courier"); $("barcode").focus();
    } else if (r.screen === "service") {
      state.mode = "service"; drawCabinet(r.cabinet); show("service");
    } else if (r.screen === "home") {
      reset();
    }
    // error: stay where the person is, the message says what went wrong
  }

  function drawCabinet(cells) {
    state.cabinet = cells;
    const grid = $("cabinet");
    const cols = Math.max(1, ...cells.map((c) => c.column || 1));
    grid.style.gridTemplateColumns = "repeat(" + cols + ", 1fr)";
    grid.replaceChildren();
    for (const c of cells) {
      const b = document.createElement("button");
      b.className = "cell";
      b.dataset.id = c.id;
      b.dataset.door = c.door; b.dataset.lock = c.lock; b.dataset.occupancy = c.occupancy || "none";
      b.dataset.fault = String(c.fault); b.dataset.inService = String(c.in_service);
      b.setAttribute("aria-pressed", String(state.selected === c.id));
      if (c.column) b.style.gridColumn = String(c.column);
      if (c.row) b.style.gridRow = String(c.row);
      b.innerHTML = "";
      const name = document.createElement("b"); name.textContent = c.id + " " + c.size; b.append(name);
      b.append(t("cell.door") + ": " + c.door + " · " + t("cell.lock") + ": " + c.lock);
      if (c.fault) { const f = document.createElement("div"); f.textContent = t("cell.fault"); b.append(f); }
      if (!c.in_service) { const o = document.createElement("div"); o.textContent = t("cell.out"); b.append(o); }
      b.onclick = () => { state.selected = c.id; $("service-selected").textContent = c.id; drawCabinet(state.cabinet); };
      grid.append(b);
    }
  }

  const prompts = { pickup: "code.enter", dropoff: "code.dropoff", courier: "code.courier", service: "code.service" };
  function go(mode) {
    state.mode = mode; state.entry = mode;
    $("code").value = "";
    $("keypad-label").textContent = t(prompts[mode]);
    $("keypad-label").dataset.i18n = prompts[mode];
    say("");
    show("keypad");
    ensureSession().catch(() => say("error.network", {}, "bad"));
  }

  async function submitCode(code) {
    const paths = { pickup: ["/api/pickup", { code }], dropoff: ["/api/dropoff", { code }],
                    courier: ["/api/courier/login", { code }], service: ["/api/service/login", { code }] };
    const [path, body] = paths[state.entry] || paths.pickup;
    if (state.entry === "pickup") state.lastCode = code;
    try { render(await api("POST", path, body)); }
    catch (e) { say("error.network", {}, "bad"); }
    $("code").value = "";
  }

  function reset() {
    state.mode = null; state.entry = null; state.lastCode = null; state.selected = null;
    $("code").value = ""; $("barcode").value = "";
    show("home");
  }

  async function finish() {
    if (state.session) await api("DELETE", "/api/sessions").catch(() => {});
    if (state.ws) state.ws.close();
    state.session = null; reset(); say("");
  }

  document.addEventListener("click", (ev) => {
    const el = ev.target.closest("button");
    if (!el) return;
    if (state.ws && state.ws.readyState === 1) state.ws.send("ping");
    if (el.dataset.go) go(el.dataset.go);
    else if (el.dataset.key) { if ($("code").value.length < 12) $("code").value += el.dataset.key; }
    else if (el.id === "key-clear") $("code").value = "";
    else if (el.id === "key-ok") { if ($("code").value) submitCode($("code").value); }
    else if (el.dataset.problem) api("POST", "/api/courier/exception", { problem: el.dataset.problem }).then(render);
    else if (el.id === "courier-scan") {
      const code = $("barcode").value.trim();
      if (code) api("POST", "/api/courier/scan", { barcode: code }).then((r) => { $("barcode").value = ""; render(r); });
    }
    else if (el.id === "service-open" && state.selected) api("POST", "/api/service/open", { compartment: state.selected }).then(render);
    else if (el.id === "service-out" && state.selected)
      api("POST", "/api/service/compartment", { compartment: state.selected, in_service: false }).then(render);
    else if (el.id === "service-in" && state.selected)
      api("POST", "/api/service/compartment", { compartment: state.selected, in_service: true }).then(render);
    else if (el.id === "back") { if (state.mode === "courier" || state.mode === "service") show(state.mode); else reset(); }
    else if (el.id === "finish") finish();
    else if (el.dataset.lang) setLanguage(el.dataset.lang);
  });
  $("barcode").addEventListener("keydown", (ev) => { if (ev.key === "Enter") $("courier-scan").click(); });

  fetch("/api/kiosk").then((r) => r.json()).then((info) => {
    state.info = info;
    for (const lang of info.languages) {
      const b = document.createElement("button");
      b.dataset.lang = lang; b.id = "lang-" + lang;
      b.textContent = { en: "EN", fa: "فا", ru: "РУ", zh: "中文" }[lang] || lang;
      $("languages").append(b);
    }
    return setLanguage(info.default_language);
  }).then(() => { document.body.dataset.ready = "true"; });
})();
