// The query explorer: any /query (or /session/query) with q, fq, sort, rows, start, fl and a
// JSON facet request, answered as a table of documents, facet buckets with bars, and the
// raw JSON. Everything it asks is in the URL, so an answer can be shared.

import { ApiError, AuthExpired, call, endpoint, formBody } from "../api.js";
import { barList, timeChart } from "../charts.js";
import { clear, fmtBucket, fmtInt, h } from "../dom.js";

const EXAMPLES = {
  "": "Insert an example…",
  terms: JSON.stringify(
    {
      pages: {
        type: "terms",
        field: "url.path",
        limit: 10,
        facet: { sessions: "unique(session.id)" },
      },
    },
    null,
    2,
  ),
  range: JSON.stringify(
    {
      perHour: {
        type: "range",
        field: "_m1.receivedUTC",
        start: "NOW/HOUR-23HOURS",
        end: "NOW/HOUR+1HOUR",
        gap: "+1HOUR",
        facet: { sessions: "unique(session.id)" },
      },
    },
    null,
    2,
  ),
  nested: JSON.stringify(
    {
      countries: {
        type: "terms",
        field: "_m1.geo.country_iso_code",
        limit: 5,
        facet: { pages: { type: "terms", field: "url.path", limit: 3 } },
      },
    },
    null,
    2,
  ),
  stats: JSON.stringify(
    {
      ended: {
        type: "query",
        q: "event.type:sessionTimeout",
        facet: { avgMs: "avg(session.durationMs)", p: "percentile(session.durationMs,50,90,99)" },
      },
    },
    null,
    2,
  ),
};

// Checks the facet editor's text: "" (no facets) or a JSON object. Returns [value, error].
export function checkFacetJson(text) {
  if (!text.trim()) return [null, ""];
  try {
    const value = JSON.parse(text);
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      return [null, 'The facet request must be a JSON object: {"name": {"type": ...}}.'];
    }
    return [value, ""];
  } catch (error) {
    return [null, `Not valid JSON: ${error.message}`];
  }
}

export class Explorer {
  constructor(root, app) {
    this.root = root;
    this.app = app;
    this.built = false;
    this.lastAnswer = null;
  }

  build() {
    if (this.built) return;
    this.built = true;
    const field = (id, label, input, hint) =>
      h(
        "div",
        { class: "field" },
        h("label", { for: id }, label),
        input,
        hint ? h("span", { class: "muted small" }, hint) : null,
      );
    this.store = h("select", { id: "x-store" });
    this.q = h("input", { id: "x-q", spellcheck: "false", placeholder: "*" });
    this.fqList = h("div", { class: "fq-list", id: "x-fq-list" });
    this.sort = h("input", {
      id: "x-sort",
      spellcheck: "false",
      placeholder: "_m1.receivedUTC desc",
    });
    this.rows = h("input", { id: "x-rows", type: "number", min: "0", max: "10000" });
    this.start = h("input", { id: "x-start", type: "number", min: "0" });
    this.fl = h("input", { id: "x-fl", spellcheck: "false", placeholder: "all fields" });
    this.json = h("textarea", {
      id: "x-json",
      rows: "6",
      spellcheck: "false",
      placeholder: '{"types": {"type": "terms", "field": "event.type"}}',
    });
    this.jsonError = h("p", {
      class: "error small",
      id: "x-json-error",
      role: "alert",
      hidden: true,
    });
    this.examples = h(
      "select",
      { id: "x-examples", "aria-label": "Insert an example facet" },
      Object.keys(EXAMPLES).map((k) => h("option", { value: k }, k ? k : EXAMPLES[k])),
    );
    this.status = h("p", { class: "muted small", id: "x-status", role: "status" });
    this.result = h("div", { class: "x-result", id: "x-result" });
    this.tabs = h(
      "div",
      { class: "segmented", role: "group", "aria-label": "Answer as" },
      ["table", "facets", "json"].map((tab) =>
        h(
          "button",
          { type: "button", dataset: { tab }, onclick: () => this.showTab(tab) },
          { table: "Documents", facets: "Facets", json: "Raw JSON" }[tab],
        ),
      ),
    );
    this.json.addEventListener("input", () => this.validate());
    this.examples.addEventListener("change", () => {
      if (this.examples.value) this.json.value = EXAMPLES[this.examples.value];
      this.examples.value = "";
      this.validate();
    });
    this.store.addEventListener("change", () => this.syncStoreKind());
    const form = h(
      "form",
      {
        class: "card explorer-form",
        id: "x-form",
        onsubmit: (e) => (e.preventDefault(), this.submit()),
      },
      h(
        "div",
        { class: "row2" },
        field("x-store", "Store", this.store),
        field("x-q", "q", this.q, "Solr syntax: event.type:view AND url.path:\\/pricing"),
      ),
      h(
        "div",
        { class: "field" },
        h("span", { class: "label" }, "fq (each must match)"),
        this.fqList,
        h(
          "button",
          { type: "button", class: "small-button", id: "x-fq-add", onclick: () => this.addFq("") },
          "+ filter",
        ),
      ),
      h(
        "div",
        { class: "row4" },
        field("x-sort", "sort", this.sort),
        field("x-rows", "rows", this.rows),
        field("x-start", "start", this.start),
        field("x-fl", "fl", this.fl),
      ),
      h(
        "div",
        { class: "field" },
        h(
          "div",
          { class: "label-row" },
          h("label", { for: "x-json" }, "JSON facets"),
          this.examples,
          h(
            "button",
            { type: "button", class: "small-button", onclick: () => this.format() },
            "Format",
          ),
        ),
        this.json,
        this.jsonError,
      ),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "submit", class: "primary", id: "x-run" }, "Run"),
        h("span", { class: "muted small" }, "Ctrl+Enter runs from any field"),
        h(
          "button",
          { type: "button", class: "small-button", id: "x-curl", onclick: () => this.copyCurl() },
          "Copy as curl",
        ),
      ),
    );
    form.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        this.submit();
      }
    });
    this.root.append(
      form,
      h(
        "section",
        { class: "card", "aria-label": "Answer" },
        h("div", { class: "card-head" }, h("h2", {}, "Answer"), this.tabs),
        this.status,
        this.result,
      ),
    );
  }

  // Fill the form from the state (a loaded or shared URL) and run it.
  show(state, stores, sessionStores) {
    this.build();
    const current = state.eStore || state.store || (stores[0] && stores[0].name) || "index";
    clear(this.store).append(
      h(
        "optgroup",
        { label: "Data stores (/query)" },
        stores.map((s) => h("option", { value: s.name }, s.name)),
      ),
      sessionStores.length
        ? h(
            "optgroup",
            { label: "Session stores (/session/query)" },
            sessionStores.map((s) => h("option", { value: `session:${s.name}` }, s.name)),
          )
        : null,
    );
    this.store.value = current;
    if (!this.store.value && this.store.options.length) this.store.selectedIndex = 0;
    this.q.value = state.q;
    clear(this.fqList);
    state.efq.forEach((fq) => this.addFq(fq));
    this.sort.value = state.sort;
    this.rows.value = String(state.rows);
    this.start.value = String(state.start);
    this.fl.value = state.fl;
    this.json.value = state.json;
    this.tab = state.tab;
    this.syncStoreKind();
    this.validate();
    this.run();
  }

  syncStoreKind() {
    const session = this.store.value.startsWith("session:");
    this.fl.disabled = session;
    this.fl.placeholder = session ? "whole documents (session stores)" : "all fields";
  }

  addFq(value) {
    const input = h("input", { spellcheck: "false", value, "aria-label": "Filter query" });
    const row = h(
      "div",
      { class: "fq-row" },
      input,
      h(
        "button",
        {
          type: "button",
          class: "small-button",
          "aria-label": "Remove this filter",
          onclick: () => row.remove(),
        },
        "×",
      ),
    );
    this.fqList.append(row);
    if (!value) input.focus();
  }

  validate() {
    const [, error] = checkFacetJson(this.json.value);
    this.jsonError.textContent = error;
    this.jsonError.hidden = !error;
    this.json.setAttribute("aria-invalid", String(Boolean(error)));
    return !error;
  }

  format() {
    const [value] = checkFacetJson(this.json.value);
    if (value) this.json.value = JSON.stringify(value, null, 2);
  }

  formState() {
    return {
      eStore: this.store.value,
      q: this.q.value.trim() || "*",
      efq: [...this.fqList.querySelectorAll("input")].map((i) => i.value.trim()).filter(Boolean),
      sort: this.sort.value.trim(),
      rows: Math.max(0, Number(this.rows.value) || 0),
      start: Math.max(0, Number(this.start.value) || 0),
      fl: this.fl.value.trim(),
      json: this.json.value.trim(),
      tab: this.tab,
    };
  }

  submit() {
    if (!this.validate()) return;
    this.app.update(this.formState(), { push: true });
  }

  request() {
    const s = this.formState();
    const [facet] = checkFacetJson(s.json);
    const session = s.eStore.startsWith("session:");
    const params = {
      store: session ? s.eStore.slice("session:".length) : s.eStore,
      q: s.q,
      fq: s.efq,
      rows: s.rows,
      start: s.start || null,
      sort: s.sort || null,
      fl: session ? null : s.fl || null,
      json: facet ? { facet } : null,
    };
    return { path: session ? "session/query" : "query", params };
  }

  async run() {
    if (!this.validate()) return;
    const { path, params } = this.request();
    this.status.textContent = "Asking…";
    this.root.dataset.state = "loading";
    try {
      const answer = await call(path, params);
      this.lastAnswer = answer;
      const found = path === "query" ? answer.body.response.numFound : answer.body.count;
      const qtime = path === "query" ? ` · QTime ${answer.body.responseHeader.QTime} ms` : "";
      this.status.textContent = `${fmtInt(found)} matches${qtime} · ${Math.round(answer.elapsedMs)} ms in all`;
      this.status.dataset.found = String(found);
      this.showTab(this.tab);
    } catch (error) {
      if (error instanceof AuthExpired) return this.app.authExpired();
      if (!(error instanceof ApiError)) throw error;
      this.lastAnswer = null;
      this.status.textContent = "";
      clear(this.result).append(
        h(
          "p",
          { class: "error", role: "alert" },
          `${error.status || ""} ${error.code ? `${error.code}: ` : ""}${error.message}`,
        ),
      );
    } finally {
      this.root.dataset.state = "ready";
    }
  }

  showTab(tab) {
    this.tab = tab;
    for (const button of this.tabs.querySelectorAll("button")) {
      button.setAttribute("aria-pressed", String(button.dataset.tab === tab));
    }
    if (!this.lastAnswer) return;
    const body = this.lastAnswer.body;
    clear(this.result);
    if (tab === "json") {
      this.result.append(h("pre", { class: "raw", id: "x-raw" }, JSON.stringify(body, null, 2)));
    } else if (tab === "facets") {
      const facets = body.facets;
      this.result.append(
        facets
          ? facetView(facets)
          : h("p", { class: "empty" }, "No facets asked: write some in JSON facets."),
      );
    } else {
      const docs = body.response
        ? body.response.docs
        : (body.items || []).map((item) => flatten(item));
      this.result.append(docsTable(docs));
    }
  }

  copyCurl() {
    const { path, params } = this.request();
    const lines = [`curl -s ${endpoint(path)} -H "m1-auth-token: $token"`];
    const quoteShell = (text) => `'${String(text).replace(/'/g, "'\\''")}'`;
    // The same encoding the page sends with (api.js formBody).
    for (const [name, value] of formBody(params)) {
      if (value !== "") lines.push(`--data-urlencode ${quoteShell(`${name}=${value}`)}`);
    }
    const text = lines.join(" \\\n  ");
    navigator.clipboard.writeText(text).then(
      () => (this.status.textContent = "curl command copied."),
      () => {
        clear(this.result).append(h("pre", { class: "raw" }, text));
      },
    );
  }
}

function flatten(value, prefix = "", out = {}) {
  for (const [key, item] of Object.entries(value)) {
    const name = prefix ? `${prefix}.${key}` : key;
    if (item && typeof item === "object" && !Array.isArray(item)) flatten(item, name, out);
    else out[name] = item;
  }
  return out;
}

function cell(value) {
  if (value == null) return "";
  return Array.isArray(value) || typeof value === "object" ? JSON.stringify(value) : String(value);
}

function docsTable(docs) {
  if (!docs.length)
    return h("p", { class: "empty" }, "No documents (rows is 0, or nothing matched).");
  const columns = [];
  const seen = new Set();
  for (const doc of docs) {
    for (const key of Object.keys(doc)) {
      if (!seen.has(key)) {
        seen.add(key);
        columns.push(key);
      }
    }
  }
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "table docs", id: "x-docs" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          columns.map((c) => h("th", { scope: "col" }, c)),
        ),
      ),
      h(
        "tbody",
        {},
        docs.map((doc) =>
          h(
            "tr",
            {},
            columns.map((c) => h("td", { class: "clip", title: cell(doc[c]) }, cell(doc[c]))),
          ),
        ),
      ),
    ),
  );
}

const DATE = /^\d{4}-\d{2}-\d{2}T/;

// Facet answers, recursively: stats as name/value pairs, bucket lists as bars (range facets
// over dates as a chart too), sub-facets of each bucket below it.
function facetView(facets, depth = 0) {
  const parts = [];
  const stats = [];
  for (const [name, value] of Object.entries(facets)) {
    if (value && typeof value === "object" && !Array.isArray(value)) {
      parts.push(facetBlock(name, value, depth));
    } else {
      stats.push(
        h(
          "div",
          { class: "stat" },
          h("span", { class: "muted small" }, name),
          h("strong", {}, cell(value)),
        ),
      );
    }
  }
  return h(
    "div",
    { class: "facets" },
    stats.length ? h("div", { class: "stats" }, stats) : null,
    parts,
  );
}

function facetBlock(name, value, depth) {
  const list = value.buckets;
  const block = h("section", { class: "facet", dataset: { facet: name } }, h("h3", {}, name));
  if (!Array.isArray(list)) {
    block.append(facetView(value, depth + 1));
    return block;
  }
  const dates = list.length && list.every((b) => typeof b.val === "string" && DATE.test(b.val));
  if (dates && list.length > 1) {
    const chart = h("div", { class: "chart-box" });
    block.append(chart);
    const starts = list.map((b) => Date.parse(b.val));
    const gap = starts[1] - starts[0];
    timeChart(chart, {
      buckets: list.map((b, i) => ({
        start: starts[i],
        label: fmtBucket(starts[i], gap, starts.at(-1) - starts[0]),
        values: { count: b.count },
      })),
      series: [{ key: "count", label: "count" }],
      height: 160,
      label: `${name} per bucket`,
    });
  } else {
    block.append(
      barList(
        list.map((b) => ({ key: cell(b.val), label: cell(b.val), value: b.count })),
        { empty: "No buckets." },
      ),
    );
  }
  const extra = ["missing", "allBuckets", "before", "after", "between", "numBuckets"].filter(
    (k) => k in value,
  );
  if (extra.length)
    block.append(
      h(
        "p",
        { class: "muted small" },
        extra
          .map((k) => `${k}: ${cell(k === "numBuckets" ? value[k] : value[k].count)}`)
          .join(" · "),
      ),
    );
  const detailed = list.filter((b) => Object.keys(b).some((k) => k !== "val" && k !== "count"));
  if (detailed.length && depth < 3) {
    block.append(
      h(
        "details",
        { class: "data" },
        h("summary", {}, "Statistics and sub-facets per bucket"),
        detailed.map((b) => {
          const rest = Object.fromEntries(
            Object.entries(b).filter(([k]) => k !== "val" && k !== "count"),
          );
          return h(
            "div",
            { class: "sub" },
            h("h4", {}, `${cell(b.val)} (${fmtInt(b.count)})`),
            facetView(rest, depth + 1),
          );
        }),
      ),
    );
  }
  return block;
}
