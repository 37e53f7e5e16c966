// DOM building and formatting. Every text that comes from events goes in as a text node
// or an attribute value, never as HTML: nothing a visitor sends can become markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function fill(node, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value == null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else if (name === "style") {
      // Through the CSSOM: the page's CSP refuses style attributes.
      Object.assign(node.style, value);
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// h("button", {class: "chip", onclick: f}, "label", ...) builds an element.
export function h(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

export function svg(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

export function byId(id) {
  return document.getElementById(id);
}

// -- numbers, durations, sizes, times ---------------------------------------------------

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
const oneDecimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

export function fmtInt(n) {
  return n == null || Number.isNaN(n) ? "—" : integer.format(n);
}

// "1 session", "12 sessions".
export function fmtCount(n, word) {
  return `${fmtInt(n)} ${word}${n === 1 ? "" : "s"}`;
}

export function fmtCompact(n) {
  return Math.abs(n) < 10000 ? integer.format(n) : compact.format(n);
}

export function fmtPercent(part, whole) {
  return whole ? `${oneDecimal.format((100 * part) / whole)} %` : "—";
}

export function fmtDuration(ms) {
  if (ms == null || Number.isNaN(ms)) return "—";
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  const hours = Math.floor(m / 60);
  return `${hours}h ${String(m % 60).padStart(2, "0")}m`;
}

export function fmtBytes(n) {
  if (n == null || Number.isNaN(n)) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = n;
  let unit = 0;
  while (Math.abs(value) >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${unit ? oneDecimal.format(value) : integer.format(value)} ${units[unit]}`;
}

const timeOfDay = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayAndTime = new Intl.DateTimeFormat(undefined, {
  weekday: "short",
  hour: "2-digit",
  minute: "2-digit",
});
const dateOnly = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
const full = new Intl.DateTimeFormat(undefined, {
  year: "numeric",
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});

// A bucket's label for a chart axis: finer gaps show the time, coarser ones the date.
export function fmtBucket(ms, gapMs, spanMs) {
  const date = new Date(ms);
  if (gapMs >= 86400e3) return dateOnly.format(date);
  if (spanMs > 86400e3) return dayAndTime.format(date);
  return timeOfDay.format(date);
}

export function fmtDateTime(value) {
  const date = typeof value === "number" ? new Date(value) : new Date(String(value));
  return Number.isNaN(date.getTime()) ? String(value) : full.format(date);
}

export function fmtShortDateTime(ms) {
  const date = new Date(ms);
  return `${dateOnly.format(date)} ${timeOfDay.format(date)}`;
}
