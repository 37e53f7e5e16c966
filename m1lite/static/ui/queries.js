// The overview's questions, built from the documented /query and /session/query features
// (docs/dashboard.md lists them). One refresh sends these requests at once; each answers
// several panels, so the page needs few round trips:
//
//   overview     /query        counts, the timeline, the recent events
//   breakdowns   /query        pages, referrers, countries, regions, event types,
//                              sessionTimeout stats and exit pages, heartbeat pages
//   concurrency  /query        unique sessions per time bucket for the top countries/pages
//   now          /session/query (a live count) or /query (recent events)
//   storage      /query        events stored and per day, heartbeats among them (no filters)
//   stores       /store/list   disk used (stats=true)

import { TIME_FIELD, timeFilter } from "./filters.js";

const MINUTE = 60e3;
const HOUR = 3600e3;
const DAY = 86400e3;

export const RANGES = {
  "1h": { span: HOUR, gap: "+1MINUTE", gapMs: MINUTE, refreshS: 10 },
  "24h": { span: DAY, gap: "+1HOUR", gapMs: HOUR, refreshS: 30 },
  "7d": { span: 7 * DAY, gap: "+1HOUR", gapMs: HOUR, refreshS: 60 },
  "30d": { span: 30 * DAY, gap: "+1DAY", gapMs: DAY, refreshS: 300 },
  custom: {},
};

// Gaps a custom range may use, finest first; the first giving at most MAX_BUCKETS wins.
const GAPS = [
  ["+1MINUTE", MINUTE],
  ["+5MINUTES", 5 * MINUTE],
  ["+15MINUTES", 15 * MINUTE],
  ["+1HOUR", HOUR],
  ["+6HOURS", 6 * HOUR],
  ["+1DAY", DAY],
  ["+7DAYS", 7 * DAY],
];
const MAX_BUCKETS = 240;
const STORAGE_DAYS = 30;
const RECENT_ROWS = 12;
const TOP = 10;
const CONCURRENT_TOP = 5;
const RECENT_FIELDS = [
  TIME_FIELD,
  "event.type",
  "url.path",
  "_m1.geo.country_iso_code",
  "_m1.geo.city_name",
  "session.id",
];

function localMidnightAfter(ms) {
  const date = new Date(ms);
  return new Date(date.getFullYear(), date.getMonth(), date.getDate() + 1).getTime();
}

function floorTo(ms, gapMs) {
  return gapMs >= DAY ? localMidnightAfter(ms) - DAY : Math.floor(ms / gapMs) * gapMs;
}

// "2026-11-28T14:05" (an <input type=datetime-local> value) in local time, as epoch ms.
function parseLocal(text) {
  const ms = Date.parse(text);
  return Number.isNaN(ms) ? null : ms;
}

// The time window of a state at `now`: buckets aligned to the gap, the current one last.
export function timeWindow(state, now) {
  const preset = RANGES[state.range] || RANGES["24h"];
  if (state.range === "custom") {
    const from = parseLocal(state.from);
    const to = parseLocal(state.to);
    if (from != null && to != null && to > from) {
      const [gap, gapMs] = GAPS.find(([, ms]) => (to - from) / ms <= MAX_BUCKETS) || GAPS.at(-1);
      const start = floorTo(from, gapMs);
      const end = start + Math.ceil((to - start) / gapMs) * gapMs;
      return { start, end, gap, gapMs, live: end > now };
    }
  }
  const range = state.range === "custom" ? RANGES["24h"] : preset;
  const end =
    range.gapMs >= DAY
      ? localMidnightAfter(now)
      : Math.floor(now / range.gapMs) * range.gapMs + range.gapMs;
  return {
    start: end - range.span,
    end,
    gap: range.gap,
    gapMs: range.gapMs,
    live: true,
  };
}

export function windowFilter(win) {
  return timeFilter(win.start, win.end);
}

function timeBuckets(win, facet) {
  return {
    type: "range",
    field: TIME_FIELD,
    start: new Date(win.start).toISOString(),
    end: new Date(win.end).toISOString(),
    gap: win.gap,
    hardend: true,
    facet,
  };
}

const UNIQUE_SESSIONS = "unique(session.id)";
const VIEWS = { type: "query", q: "event.type:view" };
const HEARTBEATS = { type: "query", q: "event.type:heartbeat" };

export const BREAKDOWN_FIELDS = { country: "_m1.geo.country_iso_code", page: "url.path" };

// ctx: {store, win, filters, by, hb, sessionStore (null when heartbeats are counted), now}
export function overviewRequests(ctx) {
  const { store, win, filters } = ctx;
  const fq = [windowFilter(win), ...filters];
  const storageEnd = localMidnightAfter(ctx.now);
  const requests = [
    {
      id: "overview",
      path: "query",
      params: {
        store,
        q: "*",
        fq,
        rows: RECENT_ROWS,
        sort: `${TIME_FIELD} desc`,
        fl: RECENT_FIELDS.join(","),
        json: {
          facet: {
            visitors: "unique(user.id)",
            sessions: UNIQUE_SESSIONS,
            views: VIEWS,
            timeline: timeBuckets(win, { sessions: UNIQUE_SESSIONS, views: VIEWS }),
          },
        },
      },
    },
    // Storage is about the whole store: no range, no chips. (Its own request: when the
    // filters match nothing, an answer carries no facets at all, as in Solr.)
    {
      id: "storage",
      path: "query",
      params: {
        store,
        q: "*",
        rows: 0,
        json: {
          facet: {
            heartbeats: HEARTBEATS,
            daily: timeBuckets(
              { start: storageEnd - STORAGE_DAYS * DAY, end: storageEnd, gap: "+1DAY" },
              { heartbeats: HEARTBEATS },
            ),
          },
        },
      },
    },
    {
      id: "breakdowns",
      path: "query",
      params: {
        store,
        q: "*",
        fq,
        rows: 0,
        json: {
          facet: {
            pages: {
              type: "terms",
              field: "url.path",
              limit: TOP,
              domain: { filter: "event.type:view" },
              facet: { sessions: UNIQUE_SESSIONS },
            },
            referrers: {
              type: "terms",
              field: "page.referrer",
              limit: TOP,
              missing: true,
              domain: { filter: "event.type:sessionStart" },
            },
            countries: {
              type: "terms",
              field: "_m1.geo.country_iso_code",
              limit: TOP,
              missing: true,
              sort: "sessions desc",
              facet: { sessions: UNIQUE_SESSIONS },
            },
            regions: {
              type: "terms",
              field: "_m1.geo.subdivision_1_iso_code",
              limit: TOP,
              sort: "sessions desc",
              facet: {
                sessions: UNIQUE_SESSIONS,
                country: { type: "terms", field: "_m1.geo.country_iso_code", limit: 1 },
              },
            },
            types: { type: "terms", field: "event.type", limit: 20 },
            timeouts: {
              type: "query",
              q: "event.type:sessionTimeout",
              facet: {
                avgMs: "avg(session.durationMs)",
                medianMs: "percentile(session.durationMs,50)",
                exits: { type: "terms", field: "url.path", limit: TOP },
              },
            },
            heartbeats: {
              type: "query",
              q: "event.type:heartbeat",
              facet: {
                pages: {
                  type: "terms",
                  field: "url.path",
                  limit: TOP,
                  facet: { sessions: UNIQUE_SESSIONS },
                },
              },
            },
          },
        },
      },
    },
    {
      id: "concurrency",
      path: "query",
      params: {
        store,
        q: "*",
        fq,
        rows: 0,
        json: {
          facet: {
            by: {
              type: "terms",
              field: BREAKDOWN_FIELDS[ctx.by] || BREAKDOWN_FIELDS.country,
              limit: CONCURRENT_TOP,
              facet: { timeline: timeBuckets(win, { sessions: UNIQUE_SESSIONS }) },
            },
          },
        },
      },
    },
    nowRequest(ctx),
    { id: "stores", path: "store/list", params: { stats: "true" } },
  ];
  return requests;
}

export function onlineWindowSeconds(hb) {
  return Math.max(2 * hb, 2);
}

// Visitors online now: the live documents of the session store, or else the sessions
// that sent any event in the last two heartbeat intervals.
function nowRequest(ctx) {
  const current = {
    pages: { type: "terms", field: "url.path", limit: CONCURRENT_TOP },
    countries: { type: "terms", field: "_m1.geo.country_iso_code", limit: CONCURRENT_TOP },
  };
  if (ctx.sessionStore) {
    return {
      id: "now",
      path: "session/query",
      params: {
        store: ctx.sessionStore,
        q: "*",
        fq: ctx.filters,
        rows: 0,
        json: { facet: current },
      },
    };
  }
  const seconds = onlineWindowSeconds(ctx.hb);
  return {
    id: "now",
    path: "query",
    params: {
      store: ctx.store,
      q: "*",
      fq: [`${TIME_FIELD}:[NOW-${seconds}SECONDS TO *]`, ...ctx.filters],
      rows: 0,
      json: {
        facet: {
          online: UNIQUE_SESSIONS,
          pages: { ...current.pages, facet: { sessions: UNIQUE_SESSIONS } },
          countries: { ...current.countries, facet: { sessions: UNIQUE_SESSIONS } },
        },
      },
    },
  };
}
