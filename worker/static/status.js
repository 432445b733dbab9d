// The worker's status page: reads /api/status every 2 s and fills the page. Plain JavaScript, no
// library, nothing fetched from elsewhere. Text goes through textContent only (never as HTML).
"use strict";

const REFRESH_MS = 2000;
const WEI_PER_ETH = 10n ** 18n;
const NRLC_PER_RLC = 10n ** 9n;
const FAILED = new Set(["FAILED", "ABORTED", "START_FAILED", "APP_DOWNLOAD_FAILED", "DATA_DOWNLOAD_FAILED",
  "COMPUTE_FAILED", "CONTRIBUTE_FAILED", "REVEAL_FAILED", "RESULT_UPLOAD_FAILED",
  "CONTRIBUTE_AND_FINALIZE_FAILED", "COMPLETE_FAILED"]);

function $(id) { return document.getElementById(id); }

function units(value, per, digits) {
  if (value === null || value === undefined) return "–";
  const big = BigInt(value);
  const whole = big / per;
  const frac = (big % per).toString().padStart(per.toString().length - 1, "0").slice(0, digits);
  return digits > 0 ? `${whole}.${frac}` : `${whole}`;
}

function seconds(value) {
  if (value === null || value === undefined) return "";
  if (value < 60) return `${value.toFixed(1)} s`;
  const m = Math.floor(value / 60), s = Math.round(value % 60);
  if (m < 60) return `${m} min ${s} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

function clock(unix) { return new Date(unix * 1000).toLocaleTimeString(); }

function cell(row, text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  if (text instanceof Node) td.appendChild(text); else td.textContent = text;
  row.appendChild(td);
  return td;
}

function code(text) { const c = document.createElement("code"); c.textContent = text; return c; }

function fill(tableId, emptyId, items, build) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...items.map(build));
  $(emptyId).hidden = items.length > 0;
  $(tableId).hidden = items.length === 0;
}

function replicateRow(r) {
  const tr = document.createElement("tr");
  tr.dataset.task = r.chainTaskId;
  tr.className = FAILED.has(r.status) ? "failed" : r.status === "COMPLETED" ? "done" : "running";
  cell(tr, code(r.chainTaskId), "task");
  cell(tr, r.cause ? `${r.status} (${r.cause})` : r.status, "status");
  cell(tr, seconds(r.elapsedSeconds), "elapsed");
  cell(tr, Object.entries(r.stages).map(([stage, s]) => `${stage} ${seconds(s)}`).join(" · "), "stages");
  const list = document.createElement("ol");
  list.className = "timeline";
  for (const step of r.timeline) {
    const li = document.createElement("li");
    const cause = step.cause ? ` (${step.cause})` : "";
    const spent = step.seconds === null ? "" : ` – ${seconds(step.seconds)}`;
    li.textContent = `${clock(step.at)} ${step.status}${cause}${spent}`;
    list.appendChild(li);
  }
  cell(tr, list, "timeline");
  return tr;
}

function transactionRow(t) {
  const tr = document.createElement("tr");
  tr.dataset.tx = t.txHash;
  cell(tr, code(t.chainTaskId), "task");
  cell(tr, t.kind);
  cell(tr, code(t.txHash));
  cell(tr, t.mined ? `${t.block}${t.succeeded ? "" : " (reverted)"}` : "pending");
  cell(tr, t.gasUsed === null ? "–" : `${t.gasUsed}`);
  cell(tr, t.feeWei === null ? "–" : `${units(t.feeWei, WEI_PER_ETH, 6)} ETH`, "fee");
  return tr;
}

function failureRow(f) {
  const tr = document.createElement("tr");
  cell(tr, clock(f.at));
  cell(tr, code(f.chainTaskId), "task");
  cell(tr, f.status, "status");
  cell(tr, f.cause || "");
  return tr;
}

function render(s) {
  const w = s.worker;
  $("name").textContent = w.name;
  $("version").textContent = w.version;
  $("wallet").textContent = w.wallet || "–";
  $("pool").textContent = w.pool;
  $("uptime").textContent = seconds(w.uptimeSeconds);
  const state = $("state");
  state.textContent = w.ready ? (w.outOfGas ? "out of gas" : "working") : w.stage;
  state.className = "badge " + (w.ready && !w.outOfGas ? "ready" : w.outOfGas ? "down" : "waiting");
  $("detail").textContent = w.ready ? "" : w.detail;
  $("problems").textContent = Object.entries(w.problems).map(([k, v]) => `${k}: ${v}`).join(" · ");
  const f = s.funds;
  $("eth").textContent = f ? `${units(f.ethWei, WEI_PER_ETH, 4)} ETH` : "–";
  $("stake").textContent = f && f.stakeNrlc !== null ? `${units(f.stakeNrlc, NRLC_PER_RLC, 2)} RLC` : "–";
  $("locked").textContent = f && f.lockedNrlc !== null ? `${units(f.lockedNrlc, NRLC_PER_RLC, 2)} RLC` : "–";
  $("gas").textContent = s.gas.priceWei === null ? "–" : `${units(s.gas.priceWei, 10n ** 9n, 2)} gwei`;
  $("gaspolicy").textContent = `× ${s.gas.multiplier}, cap ${units(s.gas.capWei, 10n ** 9n, 2)} gwei`;
  $("slots").textContent = s.slots ? `${s.slots.busy} / ${s.slots.total}` : "–";
  fill("replicates", "no-replicates", s.replicates, replicateRow);
  fill("transactions", "no-transactions", s.transactions, transactionRow);
  fill("failures", "no-failures", s.failures, failureRow);
  $("refreshed").textContent = `last refresh ${clock(s.generatedAt)}`;
}

async function refresh() {
  try {
    const response = await fetch("/api/status", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
  } catch (error) {
    const state = $("state");
    state.textContent = "worker unreachable";
    state.className = "badge down";
    $("detail").textContent = String(error);
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
