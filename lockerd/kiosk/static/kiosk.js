// The kiosk page: shows what the daemon answers; decides nothing itself.
// Every word comes from a catalogue: an element shows a key (data-i18n) and its values
// (data-i18n-values), so switching language re-renders whatever is on screen.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const state = { session: null, lang: "en", catalogues: {}, mode: null, ws: null, selected: null,
                  info: { session_timeout_s: 60, layout: [] }, idleSince: Date.now(), deposited: 0,
                  accessible: false, collecting: null };
  const WARN_S = 20; // the idle countdown shows this long before the session ends (at most half of it)
  const CLOSED_RESET_MS = 4000; // after "thank you, the door is closed", back to the start

  function t(key, values, lang) {
    const l = lang || state.lang;
    return window.KioskMessages.format(state.catalogues[l] || {}, l, key, values);
  }

  // Show a catalogue message in an element and remember it, so a language switch redraws it.
  function put(el, key, values) {
    if (!key) { delete el.dataset.i18n; delete el.dataset.i18nValues; el.textContent = ""; return; }
    el.dataset.i18n = key;
    if (values) el.dataset.i18nValues = JSON.stringify(values); else delete el.dataset.i18nValues;
    el.textContent = t(key, values);
  }

  function redraw() {
    for (const el of document.querySelectorAll("[data-i18n]")) {
      el.textContent = t(el.dataset.i18n, el.dataset.i18nValues ? JSON.parse(el.dataset.i18nValues) : {});
    }
    for (const el of document.querySelectorAll("[data-i18n-alt]")) el.alt = t(el.dataset.i18nAlt);
    for (const el of document.querySelectorAll("[data-i18n-aria]")) el.setAttribute("aria-label", t(el.dataset.i18nAria));
    if (state.cabinet) drawCabinet(state.cabinet);
    tick();
  }

  function show(screen) {
    document.body.dataset.screen = screen;
    tick();
    // A USB keypad user lands on the first thing to do on the new screen.
    const panel = $(screen);
    const first = panel && [...panel.querySelectorAll("input, button")].find((el) => el.offsetParent !== null);
    (first || $("back")).focus({ preventScroll: true });
  }

  function say(key, values, tone) {
    put($("message"), key, values);
    $("message").className = tone || "";
  }

  async function setLanguage(lang) {
    state.lang = lang;
    document.documentElement.lang = lang;
    document.documentElement.dir = state.catalogues[lang].dir || "ltr";
    for (const b of document.querySelectorAll("#languages button"))
      b.setAttribute("aria-pressed", String(b.dataset.lang === lang));
    redraw();
    if (state.session) api("POST", "/api/language", { language: lang }).catch(() => {});
  }

  async function ensureSession() {
    if (state.session) return;
    const res = await fetch("/api/sessions", { method: "POST", headers: { "Content-Type": "application/json" },
                                               body: JSON.stringify({ language: state.lang }) });
    state.session = (await res.json()).session;
    active();
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

  // The server counts a session idle from its last request or ping; the page mirrors that
  // clock to show the countdown, and pings on every touch or key so reading is not idle.
  function active() {
    state.idleSince = Date.now();
    if (state.ws && state.ws.readyState === 1) state.ws.send("ping");
    tick();
  }

  function timeoutS() { // accessible mode waits longer, as the server does
    return state.accessible ? state.info.accessible_session_timeout_s || state.info.session_timeout_s
                            : state.info.session_timeout_s;
  }

  function secondsLeft() {
    return Math.max(0, Math.ceil(timeoutS() - (Date.now() - state.idleSince) / 1000));
  }

  function tick() {
    const screen = document.body.dataset.screen;
    const left = secondsLeft();
    const warn = Math.min(WARN_S, timeoutS() / 2);
    // An open door keeps the session (the server waits for it to close); the payment
    // screen shows its own wait all the time.
    const showing = Boolean(state.session) && screen !== "door_open" && screen !== "payment" && screen !== "collection" && left <= warn;
    const box = $("countdown");
    if (showing) put($("countdown-left"), "countdown.left", { seconds: left });
    if (box.hidden === showing) {
      box.hidden = !showing;
      if (showing) $("countdown-more").focus({ preventScroll: true });
    }
    if (screen === "payment" && !$("payment").classList.contains("offline"))
      put($("payment-wait"), "payment.wait", { seconds: left });
  }

  function onPush(msg) {
    // The server counts these as activity too (a door closing, a scan at the cabinet).
    if (msg.type === "door.closed" || msg.type === "screen") state.idleSince = Date.now();
    if (msg.type === "door.closed") {
      if (doorCollected(msg) || nextDoor()) return;
      say(msg.message, { compartment: msg.compartment }, "good");
      if (msg.message === "parcel.deposited") { state.deposited += 1; putCount(); }
      if (state.mode === "courier") show("courier");
      else if (state.mode !== "service") setTimeout(() => { if (document.body.dataset.screen === "door_open") reset(); },
                                                 CLOSED_RESET_MS * (state.accessible ? 3 : 1));
    } else if (msg.type === "payment.confirmed") {
      put($("payment-state"), "payment.confirmed");
      say("payment.confirmed", {}, "good");
      // The door opens by itself: the server pushes the open door's screen next.
    } else if (msg.type === "screen") {
      render(msg);
    } else if (msg.type === "cabinet") {
      drawCabinet(msg.cabinet);
    } else if (msg.type === "session.ended") {
      state.session = null; setAccessible(false, false); reset(); say(msg.message);
    }
  }

  function render(r) {
    const failed = r.screen === "error" || r.screen === "lock_failed" || r.message === "collect.some_failed";
    const tone = failed ? "bad" : "good";
    const values = {};
    for (const [k, v] of Object.entries(r)) if (typeof v === "string" || typeof v === "number") values[k] = v;
    say(r.message, values, tone);
    if (r.accessible && !state.accessible) setAccessible(true, false); // an accessible booking
    if (r.screen === "door_open") {
      showDoor(r.compartment);
      startRound(r);
    } else if (r.screen === "unbooked_size") {
      showSizes(r);
    } else if (r.screen === "payment") {
      $("payment").classList.toggle("offline", Boolean(r.needs_network));
      $("payment-qr").src = "/api/payment/qr.svg?session=" + encodeURIComponent(state.session) + "&t=" + Date.now();
      put($("payment-state"), r.needs_network ? "payment.offline" : "payment.waiting");
      put($("payment-next"), r.needs_network ? "payment.offline_next" : "payment.failed");
      if (r.needs_network) put($("payment-wait"), null);
      show("payment");
    } else if (r.screen === "courier") {
      if (r.message === "courier.welcome") state.deposited = 0; // a new login, not "nothing to collect"
      state.mode = "courier"; putCount(); putAwaiting(r.awaiting); show("courier");
    } else if (r.screen === "collection") {
      showCollection(r);
    } else if (r.screen === "service") {
      state.mode = "service"; drawCabinet(r.cabinet); show("service");
    } else if (r.screen === "home") {
      reset();
    } else if (r.screen === "phone") {
      askPhone();
    } else if (r.screen === "error" && state.entry === "phone" && r.message !== "phone.invalid") {
      askCode(); // the pair was checked (and refused): the next entry is a code again
    }
    // error: stay where the person is, the message says what went wrong
  }

  // How many parcels a collection round would take, on the courier's button.
  function putAwaiting(count) {
    if (typeof count === "number") put($("courier-collect"), "courier.collect", { count });
  }
  async function refreshAwaiting() {
    const r = await api("GET", "/api/courier/awaiting");
    putAwaiting(r.awaiting);
  }

  // A collection round: the doors to empty, those that would not open, lit on the map.
  function showCollection(r) {
    const opened = Array.isArray(r.opened) ? r.opened : [], failed = Array.isArray(r.failed) ? r.failed : [];
    state.collecting = { opened, closed: [], failed };
    drawCollection();
    show("collection");
  }

  function drawCollection() {
    const c = state.collecting;
    const list = (box, ids, cls) => {
      box.replaceChildren(...ids.map((id) => {
        const li = document.createElement("li"); li.textContent = id; li.className = cls(id); return li;
      }));
      box.hidden = !ids.length; box.previousElementSibling.hidden = !ids.length;
    };
    list($("collect-opened"), c.opened, (id) => (c.closed.includes(id) ? "closed" : ""));
    list($("collect-failed"), c.failed, () => "");
    const map = $("collect-map");
    grid(map);
    for (const p of state.info.layout) {
      const open = c.opened.includes(p.id) && !c.closed.includes(p.id), failed = c.failed.includes(p.id);
      const cell = document.createElement("div");
      cell.className = "cell" + (open ? " lit" : "") + (failed ? " failed" : "");
      cell.style.gridRow = String(p.row); cell.style.gridColumn = String(p.column);
      if (open) cell.append(mark("arrow"));
      if (failed) cell.append(mark("fault"));
      const name = document.createElement("span"); name.textContent = p.id; cell.append(name);
      map.append(cell);
    }
  }

  // A door of the round closed: the server says "parcel.deposited" when the sensor still
  // sees a parcel, which here means it was left inside (it waits for the next round).
  function doorCollected(msg) {
    const c = state.collecting;
    if (!c || !c.opened.includes(msg.compartment)) return false;
    c.closed.push(msg.compartment);
    const left = msg.message === "parcel.deposited";
    say(left ? "collect.left_inside" : "door.closed", { compartment: msg.compartment }, left ? "bad" : "good");
    drawCollection();
    if (c.closed.length >= c.opened.length) {
      state.collecting = null;
      show("courier");
      refreshAwaiting().catch(() => {});
    }
    return true;
  }

  function putCount() { put($("courier-count"), "courier.count", { count: state.deposited }); }

  function place(id) { return state.info.layout.find((p) => p.id === id); }

  function grid(container) {
    const rows = Math.max(1, ...state.info.layout.map((p) => p.row));
    const cols = Math.max(1, ...state.info.layout.map((p) => p.column));
    container.style.gridTemplateColumns = "repeat(" + cols + ", minmax(0, 1fr))";
    container.style.gridTemplateRows = "repeat(" + rows + ", minmax(0, 1fr))";
    container.replaceChildren();
  }

  function span(key, values, cls) {
    const s = document.createElement("span");
    if (cls) s.className = cls;
    put(s, key, values);
    return s;
  }

  function mark(kind) { // a shape next to a word, so colour is never the only signal
    const m = document.createElement("span");
    m.className = "mark " + kind;
    m.setAttribute("aria-hidden", "true");
    return m;
  }

  // The door that opened, lit on a map of the cabinet's front and said in words.
  function showDoor(id) {
    $("door-compartment").textContent = id;
    const where = place(id);
    if (where) putPosition(id, where);
    else put($("door-position"), null);
    put($("door-next"), "door.next." + (state.mode || "pickup"));
    const map = $("door-map");
    grid(map);
    map.hidden = !where;
    for (const p of state.info.layout) {
      const cell = document.createElement("div");
      cell.className = "cell" + (p.id === id ? " lit" : "");
      cell.style.gridRow = String(p.row); cell.style.gridColumn = String(p.column);
      if (p.id === id) cell.append(mark("arrow"));
      const name = document.createElement("span"); name.textContent = p.id; cell.append(name);
      map.append(cell);
    }
    show("door_open");
  }

  // Several parcels, one pickup (issue 13): the doors open one after another, each when
  // the one before it is closed; the screen follows them.
  function startRound(r) {
    const then = Array.isArray(r.then) ? r.then.slice() : [];
    state.round = then.length ? { then, position: 1, count: r.count } : null;
    if (state.round) put($("door-next"), "door.next.round");
    markRound();
  }

  // The doors still to come are outlined on the map, so the person sees the way ahead.
  function markRound() {
    const coming = state.round ? state.round.then : [];
    for (const cell of $("door-map").children)
      cell.classList.toggle("coming", coming.includes(cell.lastChild && cell.lastChild.textContent));
  }

  function nextDoor() {
    const round = state.round;
    if (!round || !round.then.length) { state.round = null; return false; }
    const id = round.then.shift();
    round.position += 1;
    say("door.round_next", { compartment: id, position: round.position, count: round.count }, "good");
    showDoor(id);
    if (round.then.length) put($("door-next"), "door.next.round");
    markRound();
    return true;
  }

  // A waybill with no booking (issue 13): the courier picks a size; its compartment opens.
  function showSizes(r) {
    const box = $("unbooked-sizes");
    box.replaceChildren();
    for (const size of r.sizes || []) {
      const b = document.createElement("button");
      b.className = "medium"; b.dataset.size = size;
      put(b, "size." + size);
      b.onclick = () => api("POST", "/api/courier/unbooked", { barcode: r.barcode, size }).then(render);
      box.append(b);
    }
    show("unbooked_size");
  }

  // Where the door is: "row 2 from the top, column 3 from the left", or in accessible mode
  // spelled out: "door A06, bottom row, second from the left".
  function putPosition(id, where) {
    if (!state.accessible) { put($("door-position"), "door.position", { row: where.row, column: where.column }); return; }
    const rows = Math.max(1, ...state.info.layout.map((p) => p.row));
    const key = where.row === 1 ? "door.spelled.top" : where.row === rows ? "door.spelled.bottom" : "door.spelled.row";
    put($("door-position"), key, { compartment: id, row: where.row, column: where.column });
  }

  // Accessible mode: larger text, high contrast, a longer timeout, the door's place in words.
  function setAccessible(on, tell) {
    state.accessible = on;
    document.documentElement.classList.toggle("accessible", on);
    $("accessible-mode").setAttribute("aria-pressed", String(on));
    if (tell !== false) api("POST", "/api/accessible", { on }).catch(() => {});
    tick();
  }

  // Send a return: the label's QR code read by the scanner (any scan goes to the flows) or
  // typed into the field by a keyboard-emulation scanner.
  function showReturn() {
    state.mode = "return"; state.entry = "return";
    $("return-label").value = "";
    say("");
    show("return");
    ensureSession().catch(() => say("error.network", {}, "bad"));
  }

  function drawCabinet(cells) {
    state.cabinet = cells;
    const box = $("cabinet");
    grid(box);
    for (const c of cells) {
      const where = place(c.id) || { row: 1, column: 1 };
      const b = document.createElement("button");
      b.className = "cell";
      b.dataset.id = c.id;
      b.dataset.door = c.door; b.dataset.lock = c.lock; b.dataset.occupancy = c.occupancy || "none";
      b.dataset.fault = String(c.fault); b.dataset.inService = String(c.in_service);
      b.setAttribute("aria-pressed", String(state.selected === c.id));
      b.style.gridRow = String(where.row); b.style.gridColumn = String(where.column);
      const head = document.createElement("b");
      const name = document.createElement("span"); name.textContent = c.id;
      head.append(name, " ", span("size." + c.size));
      b.append(head, span("door.state." + c.door), span("lock.state." + c.lock));
      if (c.occupancy) { const o = span("occupancy." + c.occupancy); o.prepend(mark(c.occupancy)); b.append(o); }
      if (c.fault) { const f = span("cell.fault", null, "fault"); f.prepend(mark("fault")); b.append(f); }
      if (!c.in_service) b.append(span("cell.out", null, "out"));
      b.onclick = () => { state.selected = c.id; drawCabinet(state.cabinet); $("cabinet").querySelector("[data-id='" + c.id + "']").focus(); };
      box.append(b);
    }
    if (state.selected) put($("service-selected"), "service.selected", { compartment: state.selected });
    else put($("service-selected"), "service.hint");
  }

  const prompts = { pickup: "code.enter", dropoff: "code.dropoff", courier: "code.courier", service: "code.service" };
  prompts.deposit = "code.deposit"; // a courier's deposit code for one booking (issue 13)
  function go(mode) {
    if (mode === "return") { showReturn(); return; }
    state.mode = mode; state.entry = mode;
    $("code").value = "";
    put($("keypad-label"), prompts[mode]);
    // A courier at a cabinet with a badge reader may hold the badge instead (kiosk/badges.py).
    put($("keypad-hint"), "code.hint." + (mode === "courier" && state.info.badge_reader ? "courier_badge" : mode));
    say("");
    show("keypad");
    ensureSession().catch(() => say("error.network", {}, "bad"));
  }

  // The pickup's second factor: the same keys, now for the last 4 digits of the phone.
  function askPhone() {
    state.entry = "phone";
    $("code").value = "";
    put($("keypad-label"), "phone.label");
    put($("keypad-hint"), "phone.hint");
    show("keypad");
  }
  function askCode() {
    state.entry = "pickup";
    $("code").value = "";
    put($("keypad-label"), prompts.pickup);
    put($("keypad-hint"), "code.hint.pickup");
  }
  function longest() { return state.entry === "phone" ? 4 : 12; }

  async function submitCode(code) {
    const paths = { pickup: ["/api/pickup", { code }], dropoff: ["/api/dropoff", { code }],
                    courier: ["/api/courier/login", { code }], service: ["/api/service/login", { code }],
                    phone: ["/api/pickup", { phone_last4: code }],
                    deposit: ["/api/deposit", { code }] };
    const [path, body] = paths[state.entry] || paths.pickup;
    try { render(await api("POST", path, body)); }
    catch (e) { say("error.network", {}, "bad"); }
    $("code").value = "";
  }

  function reset() {
    state.mode = null; state.entry = null; state.selected = null; state.cabinet = null;
    state.round = null; state.collecting = null;
    $("code").value = ""; $("barcode").value = ""; $("return-label").value = "";
    show("home");
  }

  async function finish() {
    if (state.session) await api("DELETE", "/api/sessions").catch(() => {});
    if (state.ws) state.ws.close();
    state.session = null; setAccessible(false, false); reset(); say("");
  }

  document.addEventListener("click", (ev) => {
    const el = ev.target.closest("button");
    active();
    if (!el) return;
    if (el.dataset.go) go(el.dataset.go);
    else if (el.dataset.key) { if ($("code").value.length < longest()) $("code").value += el.dataset.key; }
    else if (el.id === "key-clear") $("code").value = "";
    else if (el.id === "key-ok") { if ($("code").value) submitCode($("code").value); }
    else if (el.dataset.problem) api("POST", "/api/courier/exception", { problem: el.dataset.problem }).then(render);
    else if (el.id === "courier-collect") api("POST", "/api/courier/collect", {}).then(render);
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
    else if (el.id === "accessible-mode") setAccessible(!state.accessible);
    else if (el.id === "return-send") {
      const label = $("return-label").value.trim();
      if (label) api("POST", "/api/return", { label }).then((r) => { $("return-label").value = ""; render(r); });
    }
    else if (el.dataset.lang) setLanguage(el.dataset.lang);
  });

  // A USB keypad or keyboard: digits type the code, Backspace erases, Enter in the code
  // field is OK; Tab and Enter reach and press every button.
  document.addEventListener("keydown", (ev) => {
    active();
    if (document.body.dataset.screen !== "keypad" || ev.target === $("barcode") || ev.target === $("return-label")) return;
    const code = $("code");
    if (/^[0-9]$/.test(ev.key)) { if (code.value.length < longest()) code.value += ev.key; ev.preventDefault(); }
    else if (ev.key === "Backspace") { code.value = code.value.slice(0, -1); ev.preventDefault(); }
    else if (ev.key === "Enter" && ev.target === code) { if (code.value) submitCode(code.value); ev.preventDefault(); }
  });
  $("barcode").addEventListener("keydown", (ev) => { if (ev.key === "Enter") $("courier-scan").click(); });
  $("return-label").addEventListener("keydown", (ev) => { if (ev.key === "Enter") $("return-send").click(); });
  setInterval(tick, 1000);

  // A door left open, named on every screen (idle too, so no session) until it closes.
  async function remindLeftOpen() {
    const doors = (await (await fetch("/api/reminders")).json()).left_open || [];
    const box = $("reminder");
    const values = { count: doors.length, doors: doors.join(", ") };
    // Only a change is written: an alert re-announces whatever is written into it.
    if (doors.length && box.dataset.i18nValues !== JSON.stringify(values)) put(box, "reminder.left_open", values);
    box.hidden = !doors.length;
  }
  setInterval(() => remindLeftOpen().catch(() => {}), 2000);

  async function start() {
    state.info = await (await fetch("/api/kiosk")).json();
    // All catalogues at once (a few kB each): each language button speaks its own language.
    await Promise.all(state.info.languages.map(async (lang) => {
      state.catalogues[lang] = await (await fetch("/i18n/" + lang + ".json")).json();
    }));
    for (const lang of state.info.languages) {
      const b = document.createElement("button");
      b.dataset.lang = lang; b.id = "lang-" + lang; b.lang = lang;
      b.dir = state.catalogues[lang].dir || "ltr";
      b.textContent = t("lang.name", {}, lang); // its name stays in its own language
      $("languages").append(b);
    }
    await setLanguage(state.info.default_language);
    document.body.dataset.ready = "true";
  }
  start().catch(() => say("error.network", {}, "bad"));
})();
