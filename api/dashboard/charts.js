// Line charts drawn as SVG, with nothing fetched from elsewhere: one chart per quantity, step on the x axis.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 640;
const HEIGHT = 260;
const MARGIN = { top: 12, right: 16, bottom: 36, left: 56 };

function element(name, attributes = {}, text = null) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

// "Nice" tick values covering [low, high].
function ticks(low, high, count = 5) {
  if (!(high > low)) {
    const pad = Math.abs(low) * 0.1 || 1;
    return ticks(low - pad, high + pad, count);
  }
  const raw = (high - low) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
  const values = [];
  const last = Math.ceil(high / step - 1e-9) * step; // the axis reaches past the highest value
  for (let value = Math.floor(low / step + 1e-9) * step; value <= last + step * 1e-9; value += step) {
    values.push(Number(value.toPrecision(12)));
  }
  values.decimals = Math.max(0, -Math.floor(Math.log10(step)));
  return values;
}

// A tick label with as many decimals as the ticks' spacing needs, so neighbouring ticks never read the same.
function tickLabel(value, decimals) {
  return value.toLocaleString(undefined, { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
}

function format(value) {
  if (value === 0) return "0";
  const size = Math.abs(value);
  if (size >= 1000) return value.toLocaleString(undefined, { maximumFractionDigits: 0 });
  if (size >= 1) return value.toLocaleString(undefined, { maximumFractionDigits: 2 });
  return value.toPrecision(2);
}

// A chart of `series` ([{name, kind: "train"|"valid", points: [[step, value], …]}]) in `container`.
// Redraws the whole chart: it is a few hundred points at most, and a redraw keeps the code plain.
export class LineChart {
  constructor(container, { title, yLabel, totalSteps = null }) {
    this.container = container;
    this.title = title;
    this.yLabel = yLabel;
    this.totalSteps = totalSteps;
    this.series = new Map();
    this.draw();
  }

  add(name, kind, step, value) {
    if (!Number.isFinite(value)) return;
    if (!this.series.has(name)) this.series.set(name, { name, kind, points: [] });
    const points = this.series.get(name).points;
    const last = points[points.length - 1];
    if (last && last[0] === step) last[1] = value;
    else points.push([step, value]);
    points.sort((a, b) => a[0] - b[0]);
  }

  pointCount() {
    let count = 0;
    for (const series of this.series.values()) count += series.points.length;
    return count;
  }

  draw() {
    const all = [...this.series.values()].flatMap((series) => series.points);
    const figure = document.createElement("figure");
    figure.className = "chart";
    figure.dataset.points = String(all.length);
    const caption = document.createElement("figcaption");
    caption.innerHTML = `<h2>${this.title}</h2>`;
    figure.append(caption);
    if (all.length === 0) {
      const empty = document.createElement("p");
      empty.className = "empty";
      empty.textContent = "No points yet; they appear as the job trains.";
      figure.append(empty);
      this.container.replaceChildren(figure);
      return;
    }
    const steps = all.map((point) => point[0]);
    const values = all.map((point) => point[1]);
    const xTicks = ticks(0, Math.max(this.totalSteps || 0, ...steps, 1));
    xTicks.decimals = 0;
    const yTicks = ticks(Math.min(...values), Math.max(...values));
    const [x0, x1] = [xTicks[0], xTicks[xTicks.length - 1]];
    const [y0, y1] = [yTicks[0], yTicks[yTicks.length - 1]];
    const plotWidth = WIDTH - MARGIN.left - MARGIN.right;
    const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
    const x = (step) => MARGIN.left + ((step - x0) / (x1 - x0 || 1)) * plotWidth;
    const y = (value) => MARGIN.top + (1 - (value - y0) / (y1 - y0 || 1)) * plotHeight;

    const svg = element("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img" });
    svg.append(element("title", {}, `${this.title}, by training step`));
    svg.append(element("desc", {}, this.describe()));
    const axes = element("g", { class: "axis" });
    for (const value of yTicks) {
      axes.append(element("line", { class: "gridline", x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(value), y2: y(value) }));
      axes.append(element("text", { x: MARGIN.left - 6, y: y(value) + 4, "text-anchor": "end" }, tickLabel(value, yTicks.decimals)));
    }
    for (const value of xTicks) {
      axes.append(element("text", { x: x(value), y: HEIGHT - MARGIN.bottom + 16, "text-anchor": "middle" }, tickLabel(value, xTicks.decimals)));
    }
    axes.append(element("path", { d: `M${MARGIN.left},${MARGIN.top}V${HEIGHT - MARGIN.bottom}H${WIDTH - MARGIN.right}`, fill: "none" }));
    axes.append(element("text", { x: MARGIN.left + plotWidth / 2, y: HEIGHT - 4, "text-anchor": "middle" }, "step"));
    axes.append(
      element("text", { x: 12, y: MARGIN.top + plotHeight / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${MARGIN.top + plotHeight / 2})` }, this.yLabel),
    );
    svg.append(axes);
    for (const series of this.series.values()) {
      const path = series.points.map(([step, value], index) => `${index ? "L" : "M"}${x(step).toFixed(1)},${y(value).toFixed(1)}`).join("");
      svg.append(element("path", { class: `series-${series.kind}`, d: path, "data-series": series.name }));
      if (series.kind === "valid") {
        for (const [step, value] of series.points) svg.append(element("circle", { class: "point-valid", cx: x(step), cy: y(value), r: 3.5 }));
      }
    }
    figure.append(svg);
    const legend = document.createElement("ul");
    legend.className = "legend";
    for (const series of this.series.values()) {
      const item = document.createElement("li");
      const latest = series.points[series.points.length - 1];
      item.innerHTML = `<span class="swatch ${series.kind}" aria-hidden="true"></span>`;
      item.append(`${series.name}: ${format(latest[1])} at step ${latest[0]}`);
      legend.append(item);
    }
    figure.append(legend);
    this.container.replaceChildren(figure);
  }

  describe() {
    return [...this.series.values()]
      .map((series) => {
        const latest = series.points[series.points.length - 1];
        return `${series.name}: ${series.points.length} points, latest ${format(latest[1])} at step ${latest[0]}`;
      })
      .join("; ");
  }
}
