// Building the page: elements from plain values, so text the user sent (file names, messages) is never HTML.

export function h(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value; // CSSOM, which the page's style-src policy allows
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function showNotice(text, { ok = false } = {}) {
  const notice = document.getElementById("notice");
  notice.textContent = text;
  notice.classList.toggle("ok", ok);
  notice.hidden = false;
}

export function clearNotice() {
  const notice = document.getElementById("notice");
  notice.hidden = true;
  notice.textContent = "";
}

export function when(unixSeconds) {
  if (!unixSeconds) return "—";
  return new Date(unixSeconds * 1000).toLocaleString();
}

export function timeOfDay(unixSeconds) {
  return new Date(unixSeconds * 1000).toLocaleTimeString();
}

// "in 3 min", "in 1 h 5 min", for an estimated finish.
export function fromNow(unixSeconds) {
  const seconds = Math.round(unixSeconds - Date.now() / 1000);
  if (seconds <= 0) return "any moment";
  if (seconds < 60) return `in ${seconds} s`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `in ${minutes} min`;
  return `in ${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function bytes(count) {
  if (count < 1024) return `${count} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = count;
  let unit = -1;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

export function count(value) {
  return value === null || value === undefined ? "—" : value.toLocaleString();
}

export function statusBadge(status) {
  return h("span", { class: `status ${status}` }, status);
}

export function strategyName(strategy) {
  return typeof strategy === "string" ? strategy : strategy.type;
}
