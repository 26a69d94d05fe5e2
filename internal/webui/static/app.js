// The link page: the links, refreshed after each link event and every
// 15 s while the page is visible; linking streams over a websocket that
// closing (Cancel, leaving the page) cancels.
"use strict";

const $ = (id) => document.getElementById(id);

// One linking at a time: its websocket and whether its last frame came.
let current = null;

function when(t) {
  const d = new Date(t);
  // Go's zero time: never set.
  return !t || d.getUTCFullYear() <= 1 ? "" : d.toLocaleString();
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

async function refresh() {
  let resp;
  try {
    resp = await fetch("/api/links", { cache: "no-store" });
  } catch (e) {
    problem("phonebridge does not answer; is it running?");
    return;
  }
  if (resp.status === 401) {
    location.reload(); // the session ended: show the sign-in form
    return;
  }
  const body = await resp.json();
  if (!resp.ok) {
    problem(body.error || `phonebridge answered ${resp.status}`);
    return;
  }
  problem("");
  const tbody = $("links").tBodies[0];
  tbody.replaceChildren();
  for (const l of body.links) {
    const row = tbody.insertRow();
    row.dataset.link = l.name;
    cell(row, l.name);
    cell(row, l.state.replaceAll("_", " "), "state state-" + l.state);
    cell(row, when(l.since));
    cell(row, l.who, "account");
    const until = when(l.until);
    cell(row, [l.detail, until && `until ${until}`].filter(Boolean).join("; "));
    const td = row.insertCell();
    if (l.can_link) {
      const b = document.createElement("button");
      b.textContent = "Link";
      b.className = "link";
      b.addEventListener("click", () => startLink(l.name, ""));
      td.append(b);
    }
  }
  $("no-links").hidden = body.links.length > 0;
}

function problem(text) {
  $("links-problem").textContent = text;
  $("links-problem").hidden = !text;
}

// stopLink closes the current websocket and resolves once the server has
// closed its side, which it does only after linking has stopped: a new
// link cannot then find the old one still holding the device.
function stopLink() {
  const c = current;
  current = null;
  if (!c || c.ws.readyState === WebSocket.CLOSED) return Promise.resolve();
  return new Promise((resolve) => {
    c.ws.addEventListener("close", () => resolve(), { once: true });
    c.ws.close(1000);
  });
}

async function startLink(name, phone) {
  await stopLink();
  $("linking").hidden = false;
  $("linking-name").textContent = name;
  $("qr-step").hidden = !!phone;
  $("code-step").hidden = true;
  $("qr").hidden = true;
  $("qr").removeAttribute("src");
  $("waiting").hidden = false;
  $("waiting").textContent = phone ? "" : "Waiting for a code from WhatsApp…";
  $("info").textContent = phone ? "Asking WhatsApp for a code…" : "";
  $("result").textContent = "";
  $("result").className = "";
  $("cancel").hidden = false;
  $("close").hidden = true;

  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  let url = `${proto}//${location.host}/api/link?link=${encodeURIComponent(name)}`;
  if (phone) url += `&phone=${encodeURIComponent(phone)}`;
  const c = { name, ws: new WebSocket(url), done: false };
  current = c;
  c.ws.addEventListener("message", (ev) => show(c, JSON.parse(ev.data)));
  c.ws.addEventListener("close", () => {
    if (!c.done && current === c) {
      finish(c, "The connection to phonebridge was lost; linking stopped.", true);
    }
  });
}

function show(c, f) {
  if (current !== c) return;
  switch (f.type) {
    case "qr":
      $("waiting").hidden = true;
      $("qr").src = f.image;
      $("qr").hidden = false;
      break;
    case "pairing_code":
      $("qr-step").hidden = true;
      $("code-step").hidden = false;
      $("info").textContent = "";
      $("pairing-code").textContent = f.code;
      break;
    case "info":
      $("info").textContent = f.message;
      break;
    case "linked":
      finish(c, `Linked to ${f.who}. phonebridge is relaying it now.`, false);
      break;
    case "failed":
      finish(c, f.message, true);
      break;
  }
}

function finish(c, text, failed) {
  c.done = true;
  $("qr-step").hidden = true;
  $("code-step").hidden = true;
  $("info").textContent = "";
  $("result").textContent = text;
  $("result").className = failed ? "problem" : "linked";
  $("cancel").hidden = true;
  $("close").hidden = false;
  refresh();
}

$("phone-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  if (current) startLink(current.name, $("phone").value);
});

$("cancel").addEventListener("click", async () => {
  const c = current;
  await stopLink();
  if (c && !c.done) {
    c.done = true;
    $("linking").hidden = true;
  }
});

$("close").addEventListener("click", () => {
  $("linking").hidden = true;
});

document.addEventListener("visibilitychange", () => {
  if (!document.hidden) refresh();
});
// Link states change on the phone's side too (logged out, reconnected).
setInterval(() => {
  if (!document.hidden) refresh();
}, 15000);
refresh();
