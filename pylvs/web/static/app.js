// lvsd status page: polls /api/status every second and redraws. Every value from lvsd reaches the page
// through textContent or an SVG attribute, never as markup.
"use strict";

const POLL_MS = 1000;
const HISTORY = 120;      // points in the overview charts (two minutes)
const SVC_HISTORY = 60;   // points in a service's chart
const STALE_S = 5;

const st = {
  prev: null,            // the previous snapshot with another `taken`
  rates: new Map(),      // key -> {cps, inB, outB}
  history: [],           // overview points
  svcHistory: new Map(), // service key -> [cps]
  dropsRate: 0,
  lastOk: 0,
  lastTaken: 0,
  error: "",
};

// -- DOM helpers ----------------------------------------------------------------------------------

function el(tag, cls, ...children) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function titled(node, title) {
  node.title = title;
  return node;
}

const SVGNS = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

function byId(id) {
  return document.getElementById(id);
}

// -- formatting -----------------------------------------------------------------------------------

function num(n) {
  return Number(n).toLocaleString("en-US");
}

function perSec(x) {
  if (!isFinite(x) || x <= 0) return "0";
  if (x < 10) return x.toFixed(1);
  return Math.round(x).toLocaleString("en-US");
}

function bytes(x, suffix = "B/s") {
  const units = ["", "k", "M", "G", "T"];
  let i = 0;
  let v = Math.max(0, x || 0);
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i += 1;
  }
  return `${v < 10 && i > 0 ? v.toFixed(1) : Math.round(v)} ${units[i]}${suffix}`;
}

function hostPort(addr, port) {
  return addr.includes(":") ? `[${addr}]:${port}` : `${addr}:${port}`;
}

function svcName(s) {
  return s.fwmark ? `fwmark ${s.fwmark}` : hostPort(s.addr, s.port);
}

function svcKey(s) {
  return s.fwmark ? `FWM ${s.fwmark}` : `${s.proto} ${hostPort(s.addr, s.port)}`;
}

function destKey(s, d) {
  return `${svcKey(s)} -> ${hostPort(d.addr, d.port)}`;
}

// node_exporter's backend labels, as lvsd gives them to health views
function backendLabels(s, addr, port) {
  if (s.fwmark) return ["", "0", addr, String(port), "FWM", s.fwmark.toString(16).toUpperCase().padStart(8, "0")];
  return [s.addr, String(s.port), addr, String(port), s.proto, ""];
}

// -- rates between two snapshots ---------------------------------------------------------------------

function delta(now, before, dt) {
  return now >= before ? (now - before) / dt : 0; // a zeroed counter (lvsadm -Z) restarts from 0
}

function trafficRate(cur, prev, dt) {
  if (!prev) return { cps: 0, inB: 0, outB: 0 };
  return {
    cps: delta(cur.conns, prev.conns, dt),
    inB: delta(cur.inbytes, prev.inbytes, dt),
    outB: delta(cur.outbytes, prev.outbytes, dt),
  };
}

function sumDrops(snap) {
  let n = 0;
  for (const d of snap.drops) n += d.count;
  for (const [, c] of snap.frame_errors) n += c;
  return n;
}

function activeTotals(snap) {
  return { active: snap.active, inactive: snap.inactive }; // of every service, drawn or not
}

function updateRates(snap) {
  const prev = st.prev;
  if (prev && prev.taken === snap.taken) return;
  const dt = prev ? Math.max(0.001, snap.taken - prev.taken) : 1;
  const prevSvc = new Map();
  if (prev) {
    for (const s of prev.services) {
      prevSvc.set(svcKey(s), s.traffic);
      for (const d of s.dests) prevSvc.set(destKey(s, d), d.traffic);
    }
  }
  const rates = new Map();
  rates.set("total", trafficRate(snap.total, prev && prev.total, dt));
  for (const s of snap.services) {
    const k = svcKey(s);
    const r = trafficRate(s.traffic, prevSvc.get(k), dt);
    rates.set(k, r);
    const h = st.svcHistory.get(k) || [];
    h.push(r.cps);
    if (h.length > SVC_HISTORY) h.shift();
    st.svcHistory.set(k, h);
    for (const d of s.dests) rates.set(destKey(s, d), trafficRate(d.traffic, prevSvc.get(destKey(s, d)), dt));
  }
  st.dropsRate = prev ? delta(sumDrops(snap), sumDrops(prev), dt) : 0;
  st.rates = rates;
  const total = rates.get("total");
  const conns = activeTotals(snap);
  st.history.push({ cps: total.cps, inB: total.inB, outB: total.outB, active: conns.active, drops: st.dropsRate });
  if (st.history.length > HISTORY) st.history.shift();
  st.prev = snap;
}

// -- charts ------------------------------------------------------------------------------------------

function sparkline(series, opts) {
  const w = opts.width || 240;
  const h = opts.height || 48;
  const pad = 2;
  const window = opts.points || HISTORY;
  const root = svg("svg", { viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: "none", class: "spark", "aria-hidden": "true" });
  let max = 0;
  for (const s of series) for (const v of s.values) max = Math.max(max, v);
  if (max <= 0) max = 1;
  root.append(svg("line", { x1: 0, x2: w, y1: h - pad, y2: h - pad, class: "base" }));
  for (const s of series) {
    const vals = s.values;
    if (vals.length === 0) continue;
    // Young history is spread over the whole width; once full, the chart scrolls (newest on the right).
    const n = Math.min(Math.max(vals.length, 2), window);
    const x = (i) => w - (vals.length - 1 - i) * (w / (n - 1));
    const y = (v) => h - pad - (v / max) * (h - 2 * pad - 2);
    let line = "";
    vals.forEach((v, i) => {
      line += `${i ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
    });
    if (s.fill) {
      const area = `${line}L${x(vals.length - 1).toFixed(1)},${h - pad}L${x(0).toFixed(1)},${h - pad}Z`;
      root.append(svg("path", { d: area, class: `area ${s.cls}` }));
    }
    root.append(svg("path", { d: line, class: `line ${s.cls}` }));
  }
  return root;
}

// -- sections ------------------------------------------------------------------------------------

function pill(text, cls, title) {
  const p = el("span", `pill ${cls || ""}`, text);
  if (title) p.title = title;
  return p;
}

function renderHeader(snap) {
  const when = new Date(snap.taken * 1000).toLocaleTimeString("en-GB");
  byId("who").textContent = `pylvs ${snap.version} on ${snap.host} · snapshot ${when}`;
  document.title = `lvsd · ${snap.host}`;
  const pills = [];
  pills.push(pill(`data path: ${snap.datapath}`, snap.datapath === "bpf" ? "good" : "", snap.datapath_reason));
  const running = snap.sync.filter((d) => d.running).map((d) => `${d.daemon} on ${d.interface}`);
  pills.push(pill(running.length ? `sync: ${running.join(", ")}` : "sync: off", running.length ? "good" : ""));
  if (snap.health === null) pills.push(pill("health checks: off", ""));
  else {
    const down = snap.health.filter((h) => !h.alive).length;
    pills.push(pill(down ? `${down} real server${down > 1 ? "s" : ""} down` : "all real servers up", down ? "bad" : "good"));
  }
  if (snap.standby) pills.push(pill("standing by", "warn", "a backup sync daemon runs with --backup-only"));
  byId("pills").replaceChildren(...pills);
}

function kpi(label, value, sub, chart, field) {
  const v = el("div", "value", value);
  v.dataset.kpi = field;
  return el("div", "card kpi", el("div", "label", label), v, el("div", "subline", ...sub), chart);
}

function renderKpis(snap) {
  const total = st.rates.get("total") || { cps: 0, inB: 0, outB: 0 };
  const conns = activeTotals(snap);
  const hist = st.history;
  const dropsTotal = sumDrops(snap);
  const cards = [
    kpi("New connections", `${perSec(total.cps)}/s`,
      [el("span", null, `${num(snap.total.conns)} since start`)],
      sparkline([{ values: hist.map((p) => p.cps), cls: "c1", fill: true }], {}), "cps"),
    kpi("Connections", num(conns.active + conns.inactive),
      [el("span", "c1t", `${num(conns.active)} active`), " · ", el("span", null, `${num(conns.inactive)} inactive`),
        " · ", el("span", null, `${num(snap.conn_entries)} table entries`)],
      sparkline([{ values: hist.map((p) => p.active), cls: "c1", fill: true }], {}), "conns"),
    kpi("Traffic", bytes(total.inB + total.outB),
      [el("span", "c2t", `in ${bytes(total.inB)}`), " · ", el("span", "c3t", `out ${bytes(total.outB)}`)],
      sparkline([{ values: hist.map((p) => p.inB), cls: "c2", fill: true }, { values: hist.map((p) => p.outB), cls: "c3" }], {}),
      "bytes"),
    kpi("Drops", `${perSec(st.dropsRate)}/s`, [el("span", null, `${num(dropsTotal)} frames in all`)],
      sparkline([{ values: hist.map((p) => p.drops), cls: "c4", fill: true }], {}), "drops"),
  ];
  if (st.dropsRate > 0) cards[3].classList.add("alert");
  byId("kpis").replaceChildren(...cards);
  byId("kpis").querySelector('[data-kpi="cps"]').dataset.total = String(snap.total.conns);
}

function healthIndex(snap) {
  const index = new Map();
  for (const h of snap.health || []) index.set(h.labels.join("|"), h);
  return index;
}

function lastCheck(h) {
  const run = h.checks.filter((c) => c.has_run);
  if (!h.checks.length) return { text: "no checker", cls: "muted", title: "" };
  if (!run.length) return { text: "not run yet", cls: "muted", title: "" };
  const failed = run.find((c) => c.last_ok === false);
  const c = failed || run[0];
  const text = c.last_ok === false ? (c.detail || `${c.kind} failed`) : `${c.kind} ok`;
  const title = h.checks.map((k) => `${k.kind} ${k.target}: ${k.last_ok === null ? "not run" : k.last_ok ? "ok" : k.detail || "failed"}`).join("\n");
  return { text, cls: c.last_ok === false ? "bad-text" : "", title };
}

function healthCell(h, withHealth) {
  if (!withHealth) return [];
  if (!h) return [el("td", null, pill("unchecked", "", "no keepalived checker for this real server")), el("td", "muted", "—")];
  const state = pill(h.alive ? "up" : "down", h.alive ? "good" : "bad",
    `${h.real_server} of ${h.virtual_server}; ${h.transitions} change${h.transitions === 1 ? "" : "s"} since start`);
  const last = lastCheck(h);
  return [el("td", null, state), titled(el("td", `check ${last.cls}`, last.text), last.title)];
}

function bar(share) {
  const outer = el("div", "bar");
  const inner = el("div", "fill");
  inner.style.width = `${Math.round(share * 100)}%`;
  outer.append(inner);
  return el("div", "share", outer, el("span", null, `${Math.round(share * 100)}%`));
}

function destRow(s, d, h, withHealth, totalConns) {
  const r = st.rates.get(destKey(s, d)) || { cps: 0, inB: 0, outB: 0 };
  const tags = [];
  if (d.weight === 0) tags.push(pill("quiesced", "warn", "weight 0: no new connections"));
  if (d.overloaded) tags.push(pill("overloaded", "warn", "upper connection threshold reached"));
  const tr = el("tr", `dest${h && !h.alive ? " down" : ""}`,
    el("td", "mono addr", hostPort(d.addr, d.port), ...tags),
    el("td", null, d.method),
    el("td", "num", num(d.weight)),
    ...healthCell(h, withHealth),
    el("td", "num strong", num(d.active)),
    el("td", "num", num(d.inactive)),
    el("td", "num", perSec(r.cps)),
    el("td", "num", bytes(r.inB)),
    el("td", "num", bytes(r.outB)),
    el("td", "share-col", bar(totalConns ? (d.active + d.inactive) / totalConns : 0)));
  tr.dataset.dest = hostPort(d.addr, d.port);
  return tr;
}

function removedRow(h, withHealth, cols) {
  const tr = el("tr", "dest removed",
    el("td", "mono addr", hostPort(h.labels[2], h.labels[3])),
    el("td", "muted", "—"), el("td", "num muted", num(h.weight)),
    ...healthCell(h, withHealth),
    titled(el("td", "muted", "removed from the pool by its health check"), ""));
  tr.lastChild.colSpan = cols - (tr.children.length - 1);
  tr.dataset.dest = hostPort(h.labels[2], h.labels[3]);
  return tr;
}

function renderServices(snap) {
  const box = byId("services");
  const withHealth = snap.health !== null;
  const health = healthIndex(snap);
  byId("svc-count").textContent = snap.services_total ? num(snap.services_total) : "";
  if (!snap.services.length) {
    box.replaceChildren(el("div", "card empty", "No virtual services yet. Add one with ",
      el("code", null, "lvsadm -A -t VIP:PORT"), " or start lvsd with --config or --keepalived."));
    return;
  }
  const cards = [];
  for (const s of snap.services) {
    const k = svcKey(s);
    const r = st.rates.get(k) || { cps: 0, inB: 0, outB: 0 };
    let active = 0;
    let inactive = 0;
    for (const d of s.dests) {
      active += d.active;
      inactive += d.inactive;
    }
    const head = el("div", "svc-head",
      el("div", "svc-title",
        el("span", "proto", s.proto), el("span", "mono vip", svcName(s)),
        pill(s.scheduler, "sched", "scheduler"),
        s.persistence ? pill(`persistent ${s.persistence} s`, "", "persistence timeout") : null),
      el("div", "svc-stats",
        stat("conn/s", perSec(r.cps)), stat("in", bytes(r.inB)), stat("out", bytes(r.outB)),
        stat("active", num(active)), stat("inactive", num(inactive)),
        sparkline([{ values: st.svcHistory.get(k) || [], cls: "c1", fill: true }], { width: 160, height: 34, points: SVC_HISTORY })));
    const cols = [["Real server"], ["Forward"], ["Weight", "num"], ...(withHealth ? [["Health"], ["Last check"]] : []),
      ["Active", "num"], ["Inactive", "num"], ["Conn/s", "num"], ["In", "num"], ["Out", "num"], ["Share of connections", "share-col"]];
    const thead = el("thead", null, el("tr", null, ...cols.map(([c, cls]) => el("th", cls, c))));
    const tbody = el("tbody");
    const seen = new Set();
    for (const d of s.dests) {
      const labels = backendLabels(s, d.addr, d.port).join("|");
      seen.add(labels);
      tbody.append(destRow(s, d, health.get(labels), withHealth, active + inactive));
    }
    const local = backendLabels(s, "", 0);
    for (const h of snap.health || []) {
      const key = h.labels.join("|");
      const mine = [0, 1, 4, 5].every((i) => h.labels[i] === local[i]);
      if (mine && !seen.has(key)) {
        seen.add(key);
        tbody.append(removedRow(h, withHealth, cols.length));
      }
    }
    if (!tbody.children.length) {
      const none = el("td", "muted", "no real servers");
      none.colSpan = cols.length;
      tbody.append(el("tr", null, none));
    }
    const card = el("div", "card svc", head, el("div", "table-wrap", el("table", "dests", thead, tbody)));
    card.dataset.service = k;
    cards.push(card);
  }
  if (snap.services_total > snap.services.length) {
    cards.push(el("div", "card empty", `${num(snap.services_total - snap.services.length)} more services not drawn `
      + "(lvsadm -L -n lists them all)."));
  }
  box.replaceChildren(...cards);
}

function stat(label, value) {
  return el("div", "stat", el("div", "v", value), el("div", "k", label));
}

function table(headers, rows, numeric) {
  return el("table", "mini",
    el("thead", null, el("tr", null, ...headers.map((h, i) => el("th", numeric.includes(i) ? "num" : null, h)))),
    el("tbody", null, ...rows.map((r) => el("tr", null, ...r.map((c, i) => el("td", numeric.includes(i) ? "num" : null, c))))));
}

function renderDrops(snap) {
  const rows = snap.drops.filter((d) => d.count > 0);
  const errors = snap.frame_errors.filter(([, c]) => c > 0);
  const box = byId("drops");
  if (!rows.length && !errors.length) {
    box.replaceChildren(el("div", "ok-note", "No frames dropped."));
    return;
  }
  const body = rows.map((d) => [el("span", "mono", d.reason), num(d.count), el("span", "muted", d.meaning)]);
  for (const [stage, c] of errors) body.push([el("span", "mono", `${stage} error`), num(c), el("span", "muted", "lost to an error (see lvsd's log)")]);
  box.replaceChildren(table(["Reason", "Frames", "Meaning"], body, [1]));
}

function renderSync(snap) {
  const rows = snap.sync.map((d) => [
    el("div", null, el("div", null, d.daemon),
      d.running ? el("div", "muted small", `${d.interface} · syncid ${d.syncid} · ${d.group}`) : null),
    pill(d.running ? "running" : "stopped", d.running ? "good" : ""),
    d.running ? num(d.messages) : "—",
    d.running ? num(d.conns) : "—",
  ]);
  const parts = [table(["Daemon", "State", "Messages", "Connections"], rows, [2, 3])];
  for (const d of snap.sync.filter((x) => x.running && x.problems.length)) {
    parts.push(el("div", "muted small", `${d.daemon}: ${d.problems.map(([k, v]) => `${k} ${num(v)}`).join(", ")}`));
  }
  byId("sync").replaceChildren(...parts);
}

function renderDatapath(snap) {
  const parts = [el("div", "dp-name", snap.datapath === "bpf" ? "kernel fast path (tc BPF) + Python" : "Python")];
  if (snap.datapath_reason) parts.push(el("div", "muted small", snap.datapath_reason));
  if (snap.datapath === "bpf") {
    parts.push(el("div", "small", `${num(snap.fastpath_conns)} connections in the kernel`));
    const rows = snap.fastpath.filter(([, c]) => c > 0).map(([k, c]) => [el("span", "mono", k), num(c)]);
    if (rows.length) parts.push(table(["Fast path packets", "Count"], rows, [1]));
  }
  byId("datapath").replaceChildren(...parts);
}

function renderRings(snap) {
  const rows = snap.rings.map((r) => [el("span", "mono", `${r.interface}/${r.ring}`), num(r.packets),
    el("span", r.drops ? "warn-text" : null, num(r.drops)), num(r.truncated), num(r.resyncs)]);
  byId("rings").replaceChildren(rows.length ? table(["Ring", "Frames", "Ring full", "Truncated", "Resyncs"], rows, [1, 2, 3, 4])
    : el("div", "muted", "no rings"));
}

function renderRequests(snap) {
  const ops = new Map();
  for (const [op, result, n] of snap.requests) {
    const e = ops.get(op) || { ok: 0, error: 0 };
    e[result === "ok" ? "ok" : "error"] += n;
    ops.set(op, e);
  }
  const rows = [...ops.entries()].sort((a, b) => b[1].ok + b[1].error - a[1].ok - a[1].error)
    .map(([op, e]) => [el("span", "mono", op), num(e.ok), el("span", e.error ? "warn-text" : null, num(e.error))]);
  byId("requests").replaceChildren(rows.length ? table(["Operation", "Answered", "Refused"], rows, [1, 2])
    : el("div", "muted", "none yet"));
}

function renderLive() {
  const live = byId("live");
  const age = st.lastOk ? (Date.now() - st.lastOk) / 1000 : Infinity;
  const stale = age > STALE_S;
  live.classList.toggle("stale", stale || !st.lastOk);
  let text;
  if (!st.lastOk) text = st.error ? `no answer: ${st.error}` : "waiting for the first snapshot";
  else if (stale) text = `no answer from lvsd for ${Math.round(age)} s`;
  else text = `live · snapshot ${Math.max(0, Date.now() / 1000 - st.lastTaken).toFixed(1)} s old`;
  byId("live-text").textContent = text;
}

function render(snap) {
  updateRates(snap);
  renderHeader(snap);
  renderKpis(snap);
  renderServices(snap);
  renderDrops(snap);
  renderSync(snap);
  renderDatapath(snap);
  renderRings(snap);
  renderRequests(snap);
}

async function poll() {
  try {
    const res = await fetch("/api/status", { cache: "no-store" });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const snap = await res.json();
    st.lastOk = Date.now();
    st.lastTaken = snap.taken;
    st.error = "";
    render(snap);
  } catch (e) {
    st.error = e.message || String(e);
  }
  renderLive();
  setTimeout(poll, POLL_MS);
}

setInterval(renderLive, 250);
poll();
