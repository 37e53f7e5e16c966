// Filters are `fq` strings in Solr syntax (docs/query.md). Clicking a bucket makes one; a
// chip shows it in words and removes it. Values are always quoted, so any text a visitor
// sent (spaces, colons, quotes) stays one exact value.

export const TIME_FIELD = "_m1.receivedUTC";

export const FIELD_LABELS = {
  "url.path": "Page",
  "page.referrer": "Referrer",
  "_m1.geo.country_iso_code": "Country",
  "_m1.geo.subdivision_1_iso_code": "Region",
  "event.type": "Event type",
  "session.id": "Session",
  [TIME_FIELD]: "Time",
};

export function quote(value) {
  return `"${String(value).replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

function unquote(text) {
  return text.slice(1, -1).replace(/\\(.)/g, "$1");
}

// field:"value", or "no value" (-field:*) for a bucket of events without the field.
export function valueFilter(field, value) {
  return value === null ? `-${field}:*` : `${field}:${quote(value)}`;
}

export function timeFilter(startMs, endMs) {
  const from = new Date(startMs).toISOString();
  const to = new Date(endMs).toISOString();
  return `${TIME_FIELD}:[${quote(from)} TO ${quote(to)}}`;
}

export function regionFilter(country, region) {
  return `+_m1.geo.country_iso_code:${quote(country)} +_m1.geo.subdivision_1_iso_code:${quote(region)}`;
}

const VALUE = /^([+-]?)([\w.@-]+):("(?:[^"\\]|\\.)*")$/s;
const MISSING = /^-([\w.@-]+):\*$/;
const TIME = /^_m1\.receivedUTC:\[("(?:[^"\\]|\\.)*") TO ("(?:[^"\\]|\\.)*")\}$/;
const REGION =
  /^\+_m1\.geo\.country_iso_code:("(?:[^"\\]|\\.)*") \+_m1\.geo\.subdivision_1_iso_code:("(?:[^"\\]|\\.)*")$/;

function short(text, size = 48) {
  return text.length > size ? `${text.slice(0, size - 1)}…` : text;
}

// A chip's words: "Page is /pricing", "Time 14:00 – 15:00"; anything else as written.
export function describe(fq, fmtTime) {
  let match = TIME.exec(fq);
  if (match) {
    const from = Date.parse(unquote(match[1]));
    const to = Date.parse(unquote(match[2]));
    if (!Number.isNaN(from) && !Number.isNaN(to)) return `Time ${fmtTime(from)} – ${fmtTime(to)}`;
  }
  match = REGION.exec(fq);
  if (match) return `Region is ${unquote(match[1])}-${unquote(match[2])}`;
  match = MISSING.exec(fq);
  if (match) return `${FIELD_LABELS[match[1]] || match[1]} is not set`;
  match = VALUE.exec(fq);
  if (match) {
    const label = FIELD_LABELS[match[2]] || match[2];
    const value = unquote(match[3]);
    const shown = value === "" ? "(empty)" : short(value);
    return `${label} ${match[1] === "-" ? "is not" : "is"} ${shown}`;
  }
  return short(fq, 64);
}
