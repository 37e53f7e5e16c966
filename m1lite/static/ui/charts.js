// Small SVG charts, drawn at the container's real width (redrawn when it changes), so text
// keeps its size on a phone and on a desktop. No library: a sparkline, a time chart (line,
// area, stacked areas or stacked columns) and a horizontal bar list cover the dashboard.

import { clear, fmtCompact, h, svg } from "./dom.js";

const resizing = new ResizeObserver((entries) => {
  for (const entry of entries) {
    const target = entry.target;
    if (!target.isConnected) {
      // Removed from the page (the explorer draws new charts per answer): forget it.
      resizing.unobserve(target);
      continue;
    }
    const width = Math.round(entry.contentRect.width);
    if (target.drawChart && width && width !== target.drawnWidth) target.drawChart();
  }
});

// Draw `draw(width)` into `container` now and again whenever its width changes. A live
// refresh redraws every few seconds: a keyboard user whose focus was on a bucket keeps it
// (on the same bucket number), instead of being thrown back to the top of the page.
function responsive(container, draw) {
  container.drawChart = () => {
    const width = Math.max(120, Math.round(container.clientWidth || 600));
    const active = document.activeElement;
    const hadFocus = Boolean(active && active !== container && container.contains(active));
    container.drawnWidth = width;
    clear(container);
    draw(width);
    if (hadFocus) {
      const stop = container.querySelector('.hit[tabindex="0"]');
      if (stop) stop.focus({ preventScroll: true });
    }
  };
  container.drawChart();
  resizing.observe(container);
}

// A message instead of a chart (and no redraw of an earlier chart on resize).
export function noChart(container, text) {
  container.drawChart = null;
  clear(container).append(h("p", { class: "empty" }, text));
}

function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * power >= value) return step * power;
  }
  return 10 * power;
}

export function sparkline(values, { width = 160, height = 36, label = "" } = {}) {
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const points = values.map((v, i) => [i * step, height - 2 - (v / max) * (height - 4)]);
  const line = points
    .map(([x, y], i) => `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`)
    .join("");
  const area = points.length ? `${line}L${width},${height}L0,${height}Z` : "";
  return svg(
    "svg",
    {
      class: "sparkline",
      viewBox: `0 0 ${width} ${height}`,
      preserveAspectRatio: "none",
      role: "img",
      "aria-label": label,
    },
    svg("path", { class: "area s0", d: area }),
    svg("path", { class: "line s0", d: line, "vector-effect": "non-scaling-stroke" }),
  );
}

// Which bucket a keydown moves the focus to, from bucket `i` of `n`; -1 for other keys.
function keyTarget(key, i, n) {
  const page = Math.max(1, Math.round(n / 10));
  const moves = {
    ArrowLeft: i - 1,
    ArrowRight: i + 1,
    PageUp: i - page,
    PageDown: i + page,
    Home: 0,
    End: n - 1,
  };
  return key in moves ? Math.min(n - 1, Math.max(0, moves[key])) : -1;
}

// buckets: [{start, end, label, values: {key: number}}]; series: [{key, label}].
// kind: "area" (one or more overlaid), "stacked" (stacked areas), "columns" (stacked).
// onPick(bucket) is called when a bucket is clicked, or chosen with Enter or Space;
// onSeries(series) for a legend entry.
//
// Every bucket has a transparent target over the chart's height. The targets are one tab
// stop (a roving tabindex: the chart is one stop even with 720 buckets); the arrow keys,
// Page Up/Down, Home and End move between them. The chart listens once for all of them
// (pointer, click, keys, focus), so a redraw adds no listener per bucket.
export function timeChart(container, options) {
  const { buckets, series, kind = "area", height = 200, onPick, onSeries, readout } = options;
  responsive(container, (width) => {
    const pad = { left: 44, right: 10, top: 10, bottom: 24 };
    const innerW = width - pad.left - pad.right;
    const innerH = height - pad.top - pad.bottom;
    const stacked = kind !== "area";
    const totals = buckets.map((b) =>
      stacked
        ? series.reduce((sum, s) => sum + (b.values[s.key] || 0), 0)
        : Math.max(0, ...series.map((s) => b.values[s.key] || 0)),
    );
    const max = niceMax(Math.max(0, ...totals));
    const n = Math.max(1, buckets.length);
    const slot = innerW / n;
    const x = (i) => pad.left + i * slot + slot / 2;
    const y = (v) => pad.top + innerH - (v / max) * innerH;
    const label = options.label || "chart";
    // A group, not an image: an image's children are hidden from assistive technology,
    // and the buckets are controls. The drawing itself is hidden: the buckets say it all.
    const root = svg("svg", {
      class: "chart",
      width,
      height,
      viewBox: `0 0 ${width} ${height}`,
      role: "group",
      "aria-label": label,
    });
    const drawing = svg("g", { "aria-hidden": "true" });
    // Grid and y axis: 0, half, max.
    for (const value of [0, max / 2, max]) {
      drawing.append(
        svg("line", {
          class: "gridline",
          x1: pad.left,
          x2: width - pad.right,
          y1: y(value),
          y2: y(value),
        }),
        svg(
          "text",
          { class: "tick", x: pad.left - 6, y: y(value) + 4, "text-anchor": "end" },
          fmtCompact(value),
        ),
      );
    }
    // x labels: about one per 90 px.
    const every = Math.max(1, Math.ceil(n / Math.max(1, Math.floor(innerW / 90))));
    buckets.forEach((b, i) => {
      if (i % every === 0) {
        drawing.append(
          svg("text", { class: "tick", x: x(i), y: height - 6, "text-anchor": "middle" }, b.label),
        );
      }
    });
    // Series, bottom to top (none without buckets: an empty path is not a path).
    const base = buckets.map(() => 0);
    (buckets.length ? series : []).forEach((s, k) => {
      const tops = buckets.map((b, i) => (stacked ? base[i] : 0) + (b.values[s.key] || 0));
      if (kind === "columns") {
        buckets.forEach((b, i) => {
          const v = b.values[s.key] || 0;
          if (!v) return;
          const w = Math.max(1, slot * 0.7);
          drawing.append(
            svg("rect", {
              class: `bar s${k}`,
              x: x(i) - w / 2,
              y: y(tops[i]),
              width: w,
              height: Math.max(0.5, y(base[i]) - y(tops[i])),
            }),
          );
        });
      } else {
        const line = tops
          .map((v, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`)
          .join("");
        const lower = stacked ? base : buckets.map(() => 0);
        const back = lower
          .map((v, i) => `L${x(i).toFixed(1)},${y(v).toFixed(1)}`)
          .reverse()
          .join("");
        drawing.append(
          svg("path", { class: `area s${k}${stacked ? " solid" : ""}`, d: `${line}${back}Z` }),
        );
        drawing.append(svg("path", { class: `line s${k}`, d: line }));
      }
      if (stacked) tops.forEach((v, i) => (base[i] = v));
    });
    const marker = svg("line", {
      class: "marker",
      y1: pad.top,
      y2: pad.top + innerH,
      visibility: "hidden",
    });
    drawing.append(marker);
    root.append(drawing);

    // The targets: what hover and the readout show is each one's accessible name too.
    const texts = buckets.map(
      (b) =>
        `${b.title || b.label}: ${series
          .map((s) => `${s.label} ${(b.values[s.key] || 0).toLocaleString()}`)
          .join(", ")}`,
    );
    // The tab stop stays on the bucket the user last focused, across redraws.
    const stop = Math.min(container.focusIndex || 0, buckets.length - 1);
    const targets = buckets.map((b, i) =>
      svg(
        "rect",
        {
          class: onPick ? "hit pickable" : "hit",
          x: pad.left + i * slot,
          y: pad.top,
          width: Math.max(1, slot),
          height: innerH,
          role: onPick ? "button" : "img",
          tabindex: i === stop ? "0" : "-1",
          "aria-label": texts[i],
          dataset: { index: String(i) },
        },
        // A tooltip only where no readout line shows the same on hover.
        readout ? null : svg("title", {}, texts[i]),
      ),
    );
    if (targets.length) {
      const keys = onPick
        ? "arrow keys move between them, Enter filters by one"
        : "arrow keys move between them";
      root.append(
        svg(
          "g",
          {
            class: "targets",
            role: "group",
            "aria-label": `${label}: ${targets.length} time buckets; ${keys}`,
          },
          targets,
        ),
      );
    }
    const indexOf = (event) => {
      const target = event.target.closest ? event.target.closest(".hit") : null;
      return target ? Number(target.dataset.index) : -1;
    };
    const show = (i) => {
      marker.setAttribute("x1", x(i));
      marker.setAttribute("x2", x(i));
      marker.setAttribute("visibility", "visible");
      if (readout) readout.textContent = texts[i];
    };
    const hide = () => {
      marker.setAttribute("visibility", "hidden");
      if (readout) readout.textContent = options.hint || "";
    };
    const focused = () => indexOf({ target: document.activeElement });
    root.addEventListener("pointerover", (event) => {
      const i = indexOf(event);
      if (i >= 0) show(i);
    });
    root.addEventListener("pointerleave", () => {
      // Back to the focused bucket, if any, when the pointer leaves.
      const i = root.contains(document.activeElement) ? focused() : -1;
      if (i >= 0) show(i);
      else hide();
    });
    // Focus listeners on an SVG element make chromium put the element itself in the tab
    // order: they go on an HTML frame around the chart instead.
    const frame = h("div", { class: "chart-frame" }, root);
    frame.addEventListener("focusin", (event) => {
      const i = indexOf(event);
      if (i < 0) return;
      for (const other of root.querySelectorAll('.hit[tabindex="0"]')) {
        other.setAttribute("tabindex", "-1");
      }
      targets[i].setAttribute("tabindex", "0");
      container.focusIndex = i;
      show(i);
    });
    frame.addEventListener("focusout", (event) => {
      if (!frame.contains(event.relatedTarget)) hide();
    });
    if (onPick) {
      root.addEventListener("click", (event) => {
        const i = indexOf(event);
        if (i >= 0) onPick(buckets[i]);
      });
    }
    root.addEventListener("keydown", (event) => {
      const i = indexOf(event);
      if (i < 0 || event.altKey || event.ctrlKey || event.metaKey) return;
      if (onPick && (event.key === "Enter" || event.key === " ")) {
        event.preventDefault(); // Space would scroll the page
        onPick(buckets[i]);
        return;
      }
      const next = keyTarget(event.key, i, targets.length);
      if (next < 0) return;
      event.preventDefault();
      targets[next].focus();
    });
    container.append(frame);
    if (series.length > 1 || onSeries) {
      container.append(
        h(
          "div",
          { class: "legend" },
          series.map((s, k) =>
            onSeries
              ? h(
                  "button",
                  {
                    type: "button",
                    class: "key",
                    onclick: () => onSeries(s),
                    title: `Filter by ${s.label}`,
                  },
                  h("i", { class: `swatch s${k}` }),
                  s.label,
                )
              : h("span", { class: "key" }, h("i", { class: `swatch s${k}` }), s.label),
          ),
        ),
      );
    }
  });
}

// rows: [{key, label, value, note, title, onPick}] → a list of buttons with a bar behind.
export function barList(rows, { empty = "Nothing in this range.", unit = "" } = {}) {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  const max = Math.max(1, ...rows.map((r) => r.value));
  return h(
    "ol",
    { class: "bars" },
    rows.map((row) => {
      const bar = h("span", { class: "bar" });
      bar.style.width = `${((100 * row.value) / max).toFixed(1)}%`;
      const content = [
        bar,
        h("span", { class: "label", title: row.title || row.label }, row.label),
        row.note != null ? h("span", { class: "note" }, row.note) : null,
        h(
          "span",
          { class: "value", dataset: { value: String(row.value) } },
          row.display ?? row.value.toLocaleString(),
        ),
      ];
      const attrs = { class: "row", dataset: { key: row.key ?? "" } };
      return h(
        "li",
        {},
        row.onPick
          ? h(
              "button",
              {
                ...attrs,
                type: "button",
                onclick: row.onPick,
                "aria-label": `${row.label}: ${row.display ?? row.value} ${unit}. Filter by it.`,
              },
              content,
            )
          : h("div", attrs, content),
      );
    }),
  );
}
