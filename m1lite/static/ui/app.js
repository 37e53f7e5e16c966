// The dashboard's entry point: login, the URL state, the overview's refresh loop and the
// explorer. Panels draw themselves (panels/*.js) from the answers of queries.js.

import { ApiError, AuthExpired, call, forget, login, session } from "./api.js";
import { byId, clear, fmtShortDateTime, h } from "./dom.js";
import { describe } from "./filters.js";
import { Explorer } from "./panels/explorer.js";
import {
  renderBreakdowns,
  renderConcurrency,
  renderNow,
  renderOverview,
  renderStorage,
  renderStores,
} from "./panels/overview.js";
import { RANGES, overviewRequests, timeWindow } from "./queries.js";
import { parseHash, saveState } from "./state.js";

const RENDER = {
  overview: renderOverview,
  breakdowns: renderBreakdowns,
  concurrency: renderConcurrency,
  now: renderNow,
  storage: renderStorage,
  stores: renderStores,
};

const app = {
  state: parseHash(location.hash),
  stores: [],
  sessionStores: [],
  sessionQueryDenied: false,
  discovered: false,
  generation: 0,
  timer: 0,
  inFlight: false,
  loadedAt: 0,
  explorer: null,
  update,
  authExpired: () => onAuthExpired(),
};

// -- login ---------------------------------------------------------------------------------

function showLogin(message) {
  clearTimeout(app.timer);
  app.discovered = false;
  byId("app").hidden = true;
  byId("login").hidden = false;
  const noteEl = byId("login-note");
  noteEl.textContent = message || "";
  noteEl.hidden = !message;
  byId("login-error").hidden = true;
  byId("login-password").value = "";
  const user = byId("login-user");
  (user.value ? byId("login-password") : user).focus();
}

async function onLogin(event) {
  event.preventDefault();
  const username = byId("login-user").value.trim();
  const password = byId("login-password").value;
  const error = byId("login-error");
  if (!username || !password) {
    error.textContent = "Enter a username and a password.";
    error.hidden = false;
    return;
  }
  const button = byId("login-submit");
  button.disabled = true;
  error.hidden = true;
  try {
    await login(username, password);
    await enterApp();
  } catch (failure) {
    error.textContent =
      failure instanceof ApiError && (failure.status === 401 || failure.status === 403)
        ? "Wrong username or password."
        : `Could not log in: ${failure.message}`;
    error.hidden = false;
    byId("login-password").select();
  } finally {
    button.disabled = false;
  }
}

function onAuthExpired() {
  forget();
  showLogin("Your session has ended (the token expired or was revoked). Log in again to carry on.");
}

// -- the app -----------------------------------------------------------------------------

async function enterApp() {
  const current = session();
  if (!current) return showLogin();
  byId("login").hidden = true;
  byId("app").hidden = false;
  byId("who").textContent = current.user;
  try {
    await discover();
  } catch (error) {
    if (error instanceof AuthExpired) return onAuthExpired();
    banner(
      error.status === 403
        ? `${error.message}. The dashboard needs a user with the get right.`
        : error.message,
    );
    return;
  }
  route();
}

// Which data stores and session stores exist (the user has the get right for both lists).
async function discover() {
  const [stores, sessionStores] = await Promise.all([
    call("store/list", {}),
    call("session/list", {}),
  ]);
  app.stores = stores.body || [];
  app.sessionStores = sessionStores.body || [];
  app.discovered = true;
}

function dataStore() {
  const names = app.stores.map((s) => s.name);
  return names.includes(app.state.store) ? app.state.store : names[0] || "index";
}

function sessionStore(store) {
  if (app.sessionQueryDenied || !app.sessionStores.length) return null;
  const chosen = app.sessionStores.find((s) => s.name === app.state.ss);
  if (chosen) return chosen.name;
  return (app.sessionStores.find((s) => s.flushStore === store) || app.sessionStores[0]).name;
}

function banner(message) {
  const el = byId("banner");
  el.textContent = message || "";
  el.hidden = !message;
}

function update(patch, { push = false } = {}) {
  app.state = { ...app.state, ...patch };
  saveState(app.state, { push });
  route();
}

function addFilter(fq) {
  if (app.state.fq.includes(fq)) return;
  update({ fq: [...app.state.fq, fq] }, { push: true });
}

function route() {
  if (!app.discovered) return;
  const { view } = app.state;
  byId("overview").hidden = view !== "overview";
  byId("explore").hidden = view !== "explore";
  byId("overview-controls").hidden = view !== "overview";
  byId("overview-subbar").hidden = view !== "overview";
  for (const name of ["overview", "explore"]) {
    const tab = byId(`tab-${name}`);
    if (name === view) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
  }
  clearTimeout(app.timer);
  if (view === "explore") {
    app.explorer = app.explorer || new Explorer(byId("explore"), app);
    app.explorer.show(app.state, app.stores, app.sessionStores);
    return;
  }
  syncControls();
  refresh();
}

// -- overview controls -----------------------------------------------------------------------

function syncControls() {
  const { state } = app;
  byId("range").value = RANGES[state.range] ? state.range : "24h";
  const custom = byId("custom-range");
  custom.hidden = state.range !== "custom";
  if (state.range === "custom") {
    byId("custom-from").value = state.from;
    byId("custom-to").value = state.to;
  }
  const store = dataStore();
  fillSelect(
    byId("store"),
    app.stores.map((s) => s.name),
    store,
  );
  const ss = sessionStore(store);
  fillSelect(
    byId("ss"),
    app.sessionStores.map((s) => s.name),
    ss,
  );
  byId("ss-choice").hidden = app.sessionStores.length < 2 || !ss;
  const live = byId("live");
  live.setAttribute("aria-pressed", String(state.live));
  byId("hb").value = String(state.hb);
  const chips = clear(byId("chips"));
  if (state.fq.length) {
    chips.append(h("span", { class: "muted small" }, "Filters:"));
    state.fq.forEach((fq, i) => {
      const label = describe(fq, fmtShortDateTime);
      chips.append(
        h(
          "button",
          {
            type: "button",
            class: "chip",
            title: `${fq}\nClick to remove`,
            "aria-label": `Remove filter: ${label}`,
            dataset: { fq },
            onclick: () => update({ fq: state.fq.filter((_, j) => j !== i) }, { push: true }),
          },
          label,
          h("span", { class: "x", "aria-hidden": "true" }, "×"),
        ),
      );
    });
    if (state.fq.length > 1) {
      chips.append(
        h(
          "button",
          {
            type: "button",
            class: "link small",
            onclick: () => update({ fq: [] }, { push: true }),
          },
          "Clear all",
        ),
      );
    }
  }
}

// A select that is shown only when there is a choice to make.
function fillSelect(select, names, current) {
  if (select.dataset.names !== names.join("\n")) {
    clear(select).append(...names.map((name) => h("option", { value: name }, name)));
    select.dataset.names = names.join("\n");
  }
  select.value = current || "";
  select.hidden = names.length < 2;
}

function localInput(ms) {
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function wireControls() {
  byId("login-form").addEventListener("submit", onLogin);
  byId("logout").addEventListener("click", () => {
    forget();
    showLogin("You have logged out.");
  });
  byId("range").addEventListener("change", (e) => {
    const range = e.target.value;
    if (range === "custom") {
      const now = Date.now();
      update(
        {
          range,
          from: app.state.from || localInput(now - 86400e3),
          to: app.state.to || localInput(now),
        },
        { push: true },
      );
    } else {
      update({ range, from: "", to: "" }, { push: true });
    }
  });
  byId("custom-range").addEventListener("submit", (e) => {
    e.preventDefault();
    update(
      { range: "custom", from: byId("custom-from").value, to: byId("custom-to").value },
      { push: true },
    );
  });
  byId("live").addEventListener("click", () => update({ live: !app.state.live }));
  byId("store").addEventListener("change", (e) =>
    update({ store: e.target.value }, { push: true }),
  );
  byId("ss").addEventListener("change", (e) => update({ ss: e.target.value }, { push: true }));
  byId("refresh").addEventListener("click", () => refresh());
  byId("hb").addEventListener("change", (e) => {
    const hb = Number(e.target.value);
    if (hb > 0) update({ hb });
  });
  for (const button of document.querySelectorAll("[data-metric-choice]")) {
    button.addEventListener("click", () => update({ metric: button.dataset.metricChoice }));
  }
  for (const button of document.querySelectorAll("[data-by-choice]")) {
    button.addEventListener("click", () => update({ by: button.dataset.byChoice }));
  }
  window.addEventListener("hashchange", () => {
    app.state = parseHash(location.hash);
    route();
  });
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      clearTimeout(app.timer);
    } else if (app.state.view === "overview" && app.discovered) {
      const win = timeWindow(app.state, Date.now());
      const stale = Date.now() - app.loadedAt > refreshSeconds(win) * 1000;
      if (stale && app.state.live && win.live) refresh();
      else schedule(win);
    }
  });
}

// -- the refresh loop ----------------------------------------------------------------------

function refreshSeconds(win) {
  const preset = RANGES[app.state.range] || RANGES["24h"];
  // A custom range refreshes like the preset of about its length.
  if (app.state.range !== "custom") return preset.refreshS;
  const span = win.end - win.start;
  return span <= 3600e3 ? 10 : span <= 86400e3 ? 30 : 60;
}

function schedule(win) {
  clearTimeout(app.timer);
  if (!app.state.live || !win.live || document.hidden || app.state.view !== "overview") return;
  app.timer = setTimeout(
    () => {
      if (!app.inFlight) refresh();
      else schedule(win);
    },
    refreshSeconds(win) * 1000,
  );
}

function showWindow(win) {
  const el = byId("window");
  el.dataset.from = new Date(win.start).toISOString();
  el.dataset.to = new Date(win.end).toISOString();
  el.dataset.gap = win.gap;
  const bucket = win.gap.replace(/^\+1?/, "").toLowerCase();
  el.textContent = `${fmtShortDateTime(win.start)} – ${fmtShortDateTime(win.end)} · one bucket per ${bucket}`;
}

async function refresh() {
  if (app.state.view !== "overview" || !app.discovered) return;
  const generation = ++app.generation;
  const now = Date.now();
  const win = timeWindow(app.state, now);
  const store = dataStore();
  const view = {
    state: app.state,
    win,
    store,
    sessionStore: sessionStore(store),
    filter: addFilter,
  };
  showWindow(win);
  const requests = overviewRequests({
    store,
    win,
    filters: app.state.fq,
    by: app.state.by,
    hb: app.state.hb,
    sessionStore: view.sessionStore,
    now,
  });
  app.inFlight = true;
  document.body.dataset.loading = "true";
  const started = performance.now();
  const results = await Promise.allSettled(
    requests.map(async (request) => {
      const answer = await call(request.path, request.params);
      if (generation !== app.generation) return;
      RENDER[request.id](answer.body, view);
    }),
  );
  if (generation !== app.generation) return;
  app.inFlight = false;
  const elapsed = performance.now() - started;
  const failures = [];
  let denied = false;
  results.forEach((result, i) => {
    if (result.status !== "rejected") return;
    failures.push(result.reason);
    denied ||= requests[i].path === "session/query" && result.reason.status === 403;
  });
  if (failures.some((e) => e instanceof AuthExpired)) return onAuthExpired();
  if (denied && !app.sessionQueryDenied) {
    // No sessionQuery right: count recent events instead of the session store's documents.
    app.sessionQueryDenied = true;
    return refresh();
  }
  if (failures.length) {
    const first = failures[0];
    banner(
      `Some panels could not load: ${first instanceof ApiError ? first.message : String(first)}`,
    );
    if (!(first instanceof ApiError)) console.error(first);
  } else {
    banner("");
  }
  app.loadedAt = Date.now();
  document.body.dataset.loading = "false";
  document.body.dataset.loaded = String(generation);
  document.body.dataset.loadMs = String(Math.round(elapsed));
  byId("status").textContent =
    `Updated ${new Date().toLocaleTimeString()} · ${requests.length} requests in ${Math.round(elapsed)} ms` +
    (app.sessionQueryDenied ? " · no sessionQuery right: online now counts recent events" : "");
  schedule(win);
}

wireControls();
if (session()) enterApp();
else showLogin();
