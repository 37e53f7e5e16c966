// The overview's panels: each takes the answer of one request (see queries.js) and draws
// itself. `view` carries the state, the time window and `filter(fq)` (adds a chip).

import { barList, noChart, sparkline, timeChart } from "../charts.js";
import {
  byId,
  clear,
  fmtBucket,
  fmtCount,
  fmtBytes,
  fmtDateTime,
  fmtDuration,
  fmtInt,
  fmtPercent,
  h,
} from "../dom.js";
import { regionFilter, timeFilter, valueFilter } from "../filters.js";
import { BREAKDOWN_FIELDS, onlineWindowSeconds } from "../queries.js";

const DAY = 86400e3;
const regionNames = (() => {
  try {
    return new Intl.DisplayNames(undefined, { type: "region" });
  } catch {
    return null;
  }
})();

function countryName(code) {
  if (!code) return "Unknown";
  try {
    return (regionNames && regionNames.of(code)) || code;
  } catch {
    return code;
  }
}

function body(panelId) {
  return clear(byId(panelId).querySelector(".body"));
}

function setMetric(name, text, value) {
  const node = document.querySelector(`[data-metric="${name}"]`);
  node.textContent = text;
  if (value == null) delete node.dataset.value;
  else node.dataset.value = String(value);
}

function note(text) {
  return h("p", { class: "explain" }, text);
}

function buckets(facet) {
  return (facet && facet.buckets) || [];
}

// -- overview: counts, timeline, storage per day, recent events -------------------------

export function renderOverview(answer, view) {
  const facets = answer.facets || {};
  setMetric("events", fmtInt(answer.response.numFound), answer.response.numFound);
  setMetric("sessions", fmtInt(facets.sessions || 0), facets.sessions || 0);
  setMetric("visitors", fmtInt(facets.visitors || 0), facets.visitors || 0);
  setMetric(
    "views",
    fmtInt(facets.views ? facets.views.count : 0),
    facets.views ? facets.views.count : 0,
  );
  renderTimeline(facets.timeline, view);
  renderRecent(answer.response.docs, view);
}

// Every bucket of the window, from the answer where it has them: a filter that matches
// nothing leaves no range facet in the answer (Solr leaves out an empty domain's facets).
function timelineBuckets(facet, view) {
  const { win } = view;
  const found = new Map(buckets(facet).map((b) => [Date.parse(b.val), b]));
  const rows = [];
  for (let start = win.start; start < win.end; start += win.gapMs) {
    const b = found.get(start) || { count: 0 };
    rows.push({
      start,
      end: start + win.gapMs,
      label: fmtBucket(start, win.gapMs, win.end - win.start),
      title: fmtDateTime(start),
      values: { sessions: b.sessions || 0, views: b.views ? b.views.count : 0, events: b.count },
    });
  }
  return rows;
}

const METRICS = [
  { key: "sessions", label: "Sessions" },
  { key: "views", label: "Views" },
  { key: "events", label: "Events" },
];

function renderTimeline(facet, view) {
  const rows = timelineBuckets(facet, view);
  view.timelineRows = rows;
  const metric = METRICS.find((m) => m.key === view.state.metric) || METRICS[0];
  for (const button of document.querySelectorAll("[data-metric-choice]")) {
    button.setAttribute("aria-pressed", String(button.dataset.metricChoice === metric.key));
  }
  timeChart(byId("timeline-chart"), {
    buckets: rows,
    series: [metric],
    label: `${metric.label} over time`,
    readout: byId("timeline-readout"),
    hint: "Click a bucket (or Tab to it, arrow keys, Enter) to filter by its time.",
    onPick: (b) => view.filter(timeFilter(b.start, b.end)),
  });
  byId("online-spark").replaceChildren(
    sparkline(
      rows.map((r) => r.values.sessions),
      { label: "Sessions per time bucket over the range" },
    ),
  );
  const table = h(
    "table",
    { class: "table" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { scope: "col" }, "Time"),
        METRICS.map((m) => h("th", { scope: "col", class: "num" }, m.label)),
      ),
    ),
    h(
      "tbody",
      {},
      rows.map((r) =>
        h(
          "tr",
          { dataset: { start: new Date(r.start).toISOString() } },
          h("td", {}, r.title),
          METRICS.map((m) =>
            h("td", { class: "num", dataset: { metric: m.key } }, fmtInt(r.values[m.key])),
          ),
        ),
      ),
    ),
  );
  byId("timeline-table").replaceChildren(table);
}

// -- breakdowns ----------------------------------------------------------------------------

export function renderBreakdowns(answer, view) {
  const f = answer.facets || {};
  renderPages(f.pages, view);
  renderReferrers(f.referrers, view);
  renderCountries(f.countries, view);
  renderRegions(f.regions, view);
  renderTypes(f.types, view);
  renderSessionEnds(f.timeouts, view);
  renderTimeOnPage(f.heartbeats, view);
}

function renderPages(facet, view) {
  body("panel-pages").append(
    barList(
      buckets(facet).map((b) => ({
        key: String(b.val),
        label: String(b.val),
        value: b.count,
        note: fmtCount(b.sessions || 0, "session"),
        onPick: () => view.filter(valueFilter("url.path", b.val)),
      })),
      { empty: "No views in this range.", unit: "views" },
    ),
  );
}

function referrerLabel(value) {
  if (value === "") return "(none: typed, bookmarked or private)";
  try {
    const url = new URL(value);
    return url.host + (url.pathname === "/" ? "" : url.pathname);
  } catch {
    return value;
  }
}

function withMissing(facet, make) {
  const rows = buckets(facet).map((b) => make(b, b.val));
  if (facet && facet.missing && facet.missing.count) rows.push(make(facet.missing, null));
  return rows;
}

function renderReferrers(facet, view) {
  const rows = withMissing(facet, (b, value) => ({
    key: value === null ? "(missing)" : String(value),
    label: value === null ? "(not sent)" : referrerLabel(String(value)),
    title: value === null ? "sessionStart events without page.referrer" : String(value),
    value: b.count,
    onPick: () => view.filter(valueFilter("page.referrer", value)),
  }));
  body("panel-referrers").append(
    barList(rows, { empty: "No sessions started in this range.", unit: "sessions" }),
  );
}

function renderCountries(facet, view) {
  const rows = withMissing(facet, (b, value) => ({
    key: value === null ? "(missing)" : String(value),
    label: value === null ? "Unknown (no geo data)" : `${countryName(String(value))} (${value})`,
    value: b.sessions || 0,
    note: fmtCount(b.count, "event"),
    onPick: () => view.filter(valueFilter("_m1.geo.country_iso_code", value)),
  }));
  body("panel-countries").append(
    barList(rows, { empty: "No events in this range.", unit: "sessions" }),
  );
}

function renderRegions(facet, view) {
  const rows = buckets(facet).map((b) => {
    const country = buckets(b.country)[0];
    const code =
      b.val === ""
        ? `${country ? country.val : ""} (no region)`.trim()
        : country
          ? `${country.val}-${b.val}`
          : String(b.val);
    return {
      key: code,
      label: code,
      value: b.sessions || 0,
      note: fmtCount(b.count, "event"),
      onPick: () =>
        view.filter(
          country
            ? regionFilter(country.val, b.val)
            : valueFilter("_m1.geo.subdivision_1_iso_code", b.val),
        ),
    };
  });
  body("panel-regions").append(
    barList(rows, {
      empty: "No regions: the geo database gives none for these addresses.",
      unit: "sessions",
    }),
  );
}

function renderTypes(facet, view) {
  body("panel-types").append(
    barList(
      buckets(facet).map((b) => ({
        key: String(b.val),
        label: String(b.val),
        value: b.count,
        onPick: () => view.filter(valueFilter("event.type", b.val)),
      })),
      { unit: "events" },
    ),
  );
}

function renderSessionEnds(facet, view) {
  const ended = facet ? facet.count : 0;
  const avg = ended ? facet.avgMs : null;
  setMetric(
    "avg-session",
    avg == null ? "—" : fmtDuration(avg),
    avg == null ? null : Math.round(avg),
  );
  byId("avg-session-note").textContent = ended
    ? `median ${fmtDuration(facet.medianMs)} · ${fmtCount(ended, "session")} ended`
    : "no sessionTimeout events in range";
  const panel = body("panel-exits");
  if (!ended) {
    panel.append(
      note(
        "No sessionTimeout events in this range. A session store's flusher writes one when a " +
          "visitor stops sending heartbeats, holding the last page seen. Without a session " +
          "store there are none: the heartbeats then show where visitors spend their time.",
      ),
    );
    return;
  }
  panel.append(
    barList(
      buckets(facet.exits).map((b) => ({
        key: String(b.val),
        label: String(b.val),
        value: b.count,
        note: fmtPercent(b.count, ended),
        onPick: () => view.filter(valueFilter("url.path", b.val)),
      })),
      { unit: "sessions" },
    ),
  );
}

function renderTimeOnPage(facet, view) {
  const panel = body("panel-timeonpage");
  const hb = view.state.hb;
  if (!facet || !facet.count) {
    panel.append(
      note(
        view.sessionStore
          ? "No heartbeat events in this range: heartbeats go to the session store " +
              `"${view.sessionStore}", which keeps one live document per visitor and stores no ` +
              "event per heartbeat, so time per page cannot be summed here. What can be shown: " +
              "who is on which page right now, session durations and the last page of each " +
              "session (from sessionTimeout events)."
          : "No heartbeat events in this range. Pages send one every few seconds while visible " +
              "(data-heartbeat-ms); each counts as that interval spent on its page.",
      ),
    );
    return;
  }
  panel.append(
    barList(
      buckets(facet.pages).map((b) => ({
        key: String(b.val),
        label: String(b.val),
        value: b.count,
        display: fmtDuration(b.count * hb * 1000),
        note: `${fmtCount(b.sessions || 0, "session")} · ${fmtDuration((b.count * hb * 1000) / Math.max(1, b.sessions || 1))} each`,
        onPick: () => view.filter(valueFilter("url.path", b.val)),
      })),
      { unit: "heartbeats" },
    ),
    h("p", { class: "muted small" }, `Heartbeats × ${hb} s (the interval set above).`),
  );
}

// -- concurrency ----------------------------------------------------------------------------

export function renderConcurrency(answer, view) {
  const field = BREAKDOWN_FIELDS[view.state.by] || BREAKDOWN_FIELDS.country;
  for (const button of document.querySelectorAll("[data-by-choice]")) {
    button.setAttribute(
      "aria-pressed",
      String(button.dataset.byChoice === (view.state.by === "page" ? "page" : "country")),
    );
  }
  const groups = buckets(answer.facets && answer.facets.by);
  const { win } = view;
  const series = groups.map((g, k) => ({ key: `s${k}`, label: String(g.val), value: g.val }));
  const starts = buckets(groups[0] && groups[0].timeline).map((b) => Date.parse(b.val));
  const rows = starts.map((start, i) => {
    const values = {};
    groups.forEach((g, k) => {
      const b = buckets(g.timeline)[i];
      values[`s${k}`] = b ? b.sessions || 0 : 0;
    });
    return {
      start,
      end: start + win.gapMs,
      label: fmtBucket(start, win.gapMs, win.end - win.start),
      title: fmtDateTime(start),
      values,
    };
  });
  const chart = byId("concurrency-chart");
  if (!groups.length) {
    noChart(chart, "No events in this range.");
  } else {
    timeChart(chart, {
      buckets: rows,
      series,
      kind: "stacked",
      label: "Concurrent visitors over time",
      readout: byId("concurrency-readout"),
      hint: "Unique sessions with events in each time bucket, for the top five.",
      onPick: (b) => view.filter(timeFilter(b.start, b.end)),
      onSeries: (s) => view.filter(valueFilter(field, s.value)),
    });
  }
  byId("concurrency-note").textContent = view.sessionStore
    ? "With a session store, heartbeats are not events: a visitor counts in a bucket only " +
      "when they sent a view or another event in it, so idle readers are missing here."
    : "";
  byId("concurrency-table").replaceChildren(
    h(
      "table",
      { class: "table" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { scope: "col" }, "Time"),
          series.map((s) => h("th", { scope: "col", class: "num" }, s.label)),
        ),
      ),
      h(
        "tbody",
        {},
        rows.map((r) =>
          h(
            "tr",
            {},
            h("td", {}, r.title),
            series.map((s) => h("td", { class: "num" }, fmtInt(r.values[s.key]))),
          ),
        ),
      ),
    ),
  );
}

// -- now -----------------------------------------------------------------------------------

export function renderNow(answer, view) {
  const live = Boolean(view.sessionStore);
  const count = live ? answer.count : (answer.facets && answer.facets.online) || 0;
  setMetric("online", fmtInt(count), count);
  const source = live
    ? `live sessions in "${view.sessionStore}"`
    : `sessions with events in the last ${onlineWindowSeconds(view.state.hb)} s`;
  byId("online-source").textContent = source;
  byId("now-source").textContent = source;
  const facets = answer.facets || {};
  const rows = (facet, field, label) =>
    buckets(facet).map((b) => ({
      key: String(b.val),
      label: label(String(b.val)),
      value: live ? b.count : b.sessions || 0,
      onPick: () => view.filter(valueFilter(field, b.val)),
    }));
  const panel = body("panel-now");
  if (!count) {
    panel.append(h("p", { class: "empty" }, "Nobody is on the site right now."));
    return;
  }
  panel.append(
    h("h3", {}, "Pages"),
    barList(
      rows(facets.pages, "url.path", (v) => v),
      { unit: "visitors" },
    ),
    h("h3", {}, "Countries"),
    barList(
      rows(facets.countries, "_m1.geo.country_iso_code", (v) => `${countryName(v)} (${v})`),
      { unit: "visitors" },
    ),
  );
}

// -- storage ---------------------------------------------------------------------------------

export function renderStorage(answer, view) {
  const facets = answer.facets || {};
  const stored = {
    count: answer.response.numFound,
    heartbeats: facets.heartbeats ? facets.heartbeats.count : 0,
  };
  const rows = buckets(facets.daily).map((b) => {
    const start = Date.parse(b.val);
    const heartbeats = b.heartbeats ? b.heartbeats.count : 0;
    return {
      start,
      label: fmtBucket(start, DAY, 30 * DAY),
      title: fmtBucket(start, DAY, 30 * DAY),
      values: { heartbeats, other: b.count - heartbeats },
    };
  });
  view.storage = { stored, rows };
  timeChart(byId("storage-chart"), {
    buckets: rows,
    series: [
      { key: "other", label: "Other events" },
      { key: "heartbeats", label: "Heartbeats" },
    ],
    kind: "columns",
    height: 160,
    label: "Events stored per day",
    readout: byId("storage-readout"),
    hint: "Events stored per day, heartbeats and the rest, last 30 days.",
  });
  renderStorageStats(view);
}

export function renderStores(answer, view) {
  const list = Array.isArray(answer) ? answer : [];
  view.storeStats = list.find((s) => s.name === view.store) || list[0] || null;
  renderStorageStats(view);
}

function stat(label, value, detail, metric) {
  return h(
    "div",
    { class: "stat" },
    h("span", { class: "muted small" }, label),
    h("strong", { dataset: metric ? { metric } : {} }, value),
    detail ? h("span", { class: "muted small" }, detail) : null,
  );
}

// Runs when either of its two answers arrives (the facets or /store/list), with what is known.
function renderStorageStats(view) {
  const storage = view.storage;
  const disk = view.storeStats;
  if (!storage) return;
  const { count: stored, heartbeats } = storage.stored;
  // The last seven whole days (the current day is still filling).
  const whole = storage.rows.slice(-8, -1);
  const perDay = whole.length
    ? whole.reduce((s, r) => s + r.values.heartbeats + r.values.other, 0) / whole.length
    : 0;
  const hbPerDay = whole.length
    ? whole.reduce((s, r) => s + r.values.heartbeats, 0) / whole.length
    : 0;
  const bytesPerEvent = disk && disk.events ? disk.diskBytes / disk.events : null;
  const items = [
    stat("Events stored", fmtInt(stored), `${fmtPercent(heartbeats, stored)} heartbeats`, "stored"),
    stat(
      "Disk used",
      disk ? fmtBytes(disk.diskBytes) : "—",
      bytesPerEvent ? `≈ ${fmtBytes(bytesPerEvent)} per event` : "",
      "disk",
    ),
    stat(
      "Events per day",
      fmtInt(Math.round(perDay)),
      perDay ? "average of the last 7 whole days" : "no events before today yet",
      "per-day",
    ),
    stat(
      "Growth",
      bytesPerEvent ? `≈ ${fmtBytes(perDay * bytesPerEvent)}/day` : "—",
      bytesPerEvent ? `heartbeats ≈ ${fmtBytes(hbPerDay * bytesPerEvent)}/day` : "",
      "growth",
    ),
  ];
  byId("storage-stats").replaceChildren(...items);
  byId("storage-note").textContent = heartbeats
    ? "Heartbeats stored as events cost disk every few seconds per visitor; a session store " +
      "keeps one live document per visitor instead and writes one sessionTimeout event per session."
    : "";
}

// -- recent events -----------------------------------------------------------------------------

function place(doc) {
  const parts = [doc["_m1.geo.city_name"], doc["_m1.geo.country_iso_code"]].filter(Boolean);
  return parts.join(", ");
}

function renderRecent(docs, view) {
  const panel = body("panel-recent");
  if (!docs.length) {
    panel.append(h("p", { class: "empty" }, "No events in this range."));
    return;
  }
  panel.append(
    h(
      "table",
      { class: "table recent" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["Time", "Type", "Page", "Place", "Session"].map((t) => h("th", { scope: "col" }, t)),
        ),
      ),
      h(
        "tbody",
        {},
        docs.map((doc) => {
          const session = doc["session.id"] == null ? "" : String(doc["session.id"]);
          return h(
            "tr",
            { dataset: { key: String(doc._m1key) } },
            h("td", { class: "nowrap" }, fmtDateTime(doc["_m1.receivedUTC"])),
            h("td", {}, doc["event.type"] == null ? "" : String(doc["event.type"])),
            h("td", { class: "clip" }, doc["url.path"] == null ? "" : String(doc["url.path"])),
            h("td", {}, place(doc)),
            h(
              "td",
              {},
              session
                ? h(
                    "button",
                    {
                      type: "button",
                      class: "link mono",
                      title: `Filter by session ${session}`,
                      onclick: () => view.filter(valueFilter("session.id", session)),
                    },
                    session.slice(0, 8),
                  )
                : "",
            ),
          );
        }),
      ),
    ),
  );
}
