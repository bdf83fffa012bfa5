// The console's only script (the Content Security Policy allows no other): the dashboard's live
// figures (server-sent events, a short poll without EventSource), the map's pan and zoom, and a
// confirmation before forms that say so, and a refused form filled again with what was typed. Pages work
// without it.
"use strict";

function swapFigures(live, html) {
  // Server-rendered by the same autoescaping templates as the page itself.
  const fresh = new DOMParser().parseFromString(html, "text/html");
  live.replaceChildren(...fresh.body.childNodes);
  live.dataset.refreshedAt = String(Date.now());
}

function liveDashboard() {
  const live = document.querySelector("[data-live]");
  if (!live) return;
  if (!window.EventSource || !live.dataset.events) { pollDashboard(live); return; }
  const stream = new EventSource(live.dataset.events);
  live.dataset.stream = "connecting";
  stream.addEventListener("open", () => { live.dataset.stream = "open"; });
  stream.addEventListener("figures", (event) => swapFigures(live, event.data));
  stream.addEventListener("signed_out", () => { stream.close(); window.location.assign("/login?expired=1"); });
  // A stream the server refused (no session: a redirect to the sign-in page) is closed by the browser.
  stream.addEventListener("error", () => { if (stream.readyState === EventSource.CLOSED) pollDashboard(live); });
}

function pollDashboard(live) {
  const seconds = Number(document.body.dataset.pollS || "15");
  const refresh = async () => {
    try {
      const answer = await fetch(live.dataset.live, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } });
      if (answer.status === 401) { window.location.assign("/login?expired=1"); return; }
      if (answer.ok) swapFigures(live, await answer.text());
    } catch (e) { /* keep the last figures; try again next time */ }
  };
  window.setInterval(refresh, seconds * 1000);
}

function panZoomMap() {
  const map = document.getElementById("map");
  if (!map) return;
  let [x, y, w, h] = map.getAttribute("viewBox").split(/\s+/).map(Number);
  const home = map.dataset.home.split(/\s+/).map(Number);
  const apply = () => map.setAttribute("viewBox", `${x.toFixed(1)} ${y.toFixed(1)} ${w.toFixed(1)} ${h.toFixed(1)}`);
  const zoom = (factor, cx = x + w / 2, cy = y + h / 2) => {
    const nw = Math.min(Math.max(w * factor, home[2] / 40), home[2] * 4);
    const k = nw / w;
    x = cx - (cx - x) * k; y = cy - (cy - y) * k; w = nw; h = h * k; apply();
  };
  const pan = (dx, dy) => { x += dx * w; y += dy * h; apply(); };
  document.querySelectorAll("[data-map]").forEach((button) => button.addEventListener("click", () => {
    const what = button.dataset.map;
    if (what === "in") zoom(0.7); else if (what === "out") zoom(1 / 0.7);
    else { [x, y, w, h] = home; apply(); }
  }));
  map.addEventListener("wheel", (event) => {
    event.preventDefault();
    const box = map.getBoundingClientRect();
    const cx = x + ((event.clientX - box.left) / box.width) * w;
    const cy = y + ((event.clientY - box.top) / box.height) * h;
    zoom(event.deltaY < 0 ? 0.85 : 1 / 0.85, cx, cy);
  }, { passive: false });
  let drag = null;
  map.addEventListener("pointerdown", (event) => {
    if (event.target.closest("a")) return;
    drag = { px: event.clientX, py: event.clientY };
    map.setPointerCapture(event.pointerId);
  });
  map.addEventListener("pointermove", (event) => {
    if (!drag) return;
    const box = map.getBoundingClientRect();
    x -= ((event.clientX - drag.px) / box.width) * w;
    y -= ((event.clientY - drag.py) / box.height) * h;
    drag = { px: event.clientX, py: event.clientY };
    apply();
  });
  map.addEventListener("pointerup", () => { drag = null; });
  map.addEventListener("keydown", (event) => {
    const keys = { ArrowLeft: [-0.1, 0], ArrowRight: [0.1, 0], ArrowUp: [0, -0.1], ArrowDown: [0, 0.1] };
    if (keys[event.key]) { pan(...keys[event.key]); event.preventDefault(); }
    else if (event.key === "+" || event.key === "=") { zoom(0.7); event.preventDefault(); }
    else if (event.key === "-") { zoom(1 / 0.7); event.preventDefault(); }
  });
}

function confirmForms() {
  document.querySelectorAll("form[data-confirm]").forEach((form) => form.addEventListener("submit", (event) => {
    if (!window.confirm(form.dataset.confirm)) event.preventDefault();
  }));
}

function refillRefusedForm() {
  // A service refused this page's form: the server sent back what was typed (never a password), to put back
  // in the form it came from. Hidden fields (CSRF, idempotency keys) keep the page's own values.
  const holder = document.getElementById("refill");
  if (!holder) return;
  let refused;
  try { refused = JSON.parse(holder.dataset.refill || ""); } catch (e) { return; }
  const form = [...document.querySelectorAll("form[method=post]")].find((f) => f.getAttribute("action") === refused.action);
  if (!form) return;
  for (const element of form.elements) {
    if (!element.name || ["hidden", "password", "file", "submit", "button"].includes(element.type)) continue;
    const sent = Object.prototype.hasOwnProperty.call(refused.fields, element.name) ? refused.fields[element.name] : null;
    if (element.type === "checkbox" || element.type === "radio") element.checked = sent !== null && sent === element.value;
    else if (sent !== null) element.value = sent;
  }
  form.dataset.refilled = "true";
}

document.addEventListener("DOMContentLoaded", () => { liveDashboard(); panZoomMap(); confirmForms(); refillRefusedForm(); });
