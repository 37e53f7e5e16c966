// The page's state lives in the URL's fragment, so a view can be reloaded, bookmarked and
// shared: #/overview?range=24h&fq=url.path%3A%22%2Fpricing%22 or #/explore?q=...
// Only values that differ from the defaults are written.

export const VIEWS = ["overview", "explore"];

export const DEFAULTS = Object.freeze({
  view: "overview",
  // overview
  range: "24h", // 1h, 24h, 7d, 30d or custom
  from: "", // custom range, local date-times (YYYY-MM-DDTHH:MM)
  to: "",
  fq: [], // filter chips: raw fq strings, applied to every query
  metric: "sessions", // the timeline's series
  by: "country", // concurrent visitors broken down by country or page
  hb: 5, // heartbeat interval in seconds (time on page, online-now window)
  live: true,
  store: "", // data store ("" = the first)
  ss: "", // session store ("" = the first that flushes into the data store)
  // explorer
  eStore: "",
  q: "*",
  efq: [],
  sort: "",
  rows: 10,
  start: 0,
  fl: "",
  json: "",
  tab: "table",
});

const LISTS = new Set(["fq", "efq"]);
const NUMBERS = new Set(["hb", "rows", "start"]);
const BOOLEANS = new Set(["live"]);

export function parseHash(hash) {
  const text = hash.replace(/^#/, "");
  const [path, query = ""] = text.split(/\?(.*)/s, 2);
  const state = structuredClone({ ...DEFAULTS, fq: [], efq: [] });
  const view = path.replace(/^\//, "");
  if (VIEWS.includes(view)) state.view = view;
  const params = new URLSearchParams(query);
  for (const [name, value] of params) {
    if (!(name in DEFAULTS) || name === "view") continue;
    if (LISTS.has(name)) {
      if (value.trim()) state[name].push(value);
    } else if (NUMBERS.has(name)) {
      const number = Number(value);
      if (Number.isFinite(number) && number >= 0) state[name] = number;
    } else if (BOOLEANS.has(name)) {
      state[name] = value !== "0" && value !== "false";
    } else {
      state[name] = value;
    }
  }
  if (!(state.hb > 0)) state.hb = DEFAULTS.hb;
  return state;
}

export function toHash(state) {
  const params = new URLSearchParams();
  for (const [name, fallback] of Object.entries(DEFAULTS)) {
    if (name === "view") continue;
    const value = state[name];
    if (LISTS.has(name)) {
      for (const item of value || []) params.append(name, item);
    } else if (BOOLEANS.has(name)) {
      if (value !== fallback) params.set(name, value ? "1" : "0");
    } else if (value !== fallback && value !== "" && value != null) {
      params.set(name, String(value));
    }
  }
  const query = params.toString();
  return `#/${state.view}${query ? `?${query}` : ""}`;
}

// Set the URL to `state`; `push` adds a history entry (Back undoes a filter click).
export function saveState(state, { push = false } = {}) {
  const hash = toHash(state);
  if (hash === location.hash) return;
  const url = `${location.pathname}${location.search}${hash}`;
  if (push) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
}
