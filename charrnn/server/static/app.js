// The page: generate with streamed text (server-sent events over fetch) and show the next-token
// probabilities at the prompt's cursor. Plain JavaScript, no build step, nothing from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const ui = {
  model: $("model"), label: $("label"), prompt: $("prompt"), temp: $("temperature"), tempRange: $("temperature-range"),
  length: $("length"), seed: $("seed"), generate: $("generate"), stop: $("stop"),
  status: $("status"), output: $("output"), next: $("next-list"), form: $("controls"),
};
let limits = { max_prompt: 2000, max_length: 2000 };
let models = [];
let running = null; // the AbortController of the generation in progress

function setStatus(state, text) {
  ui.status.dataset.state = state;
  ui.status.textContent = text;
}

async function api(path, body, signal) {
  const r = await fetch(path, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal,
  });
  if (!r.ok) {
    let message = `HTTP ${r.status}`;
    try {
      const e = (await r.json()).error;
      message = e.field ? `${e.field}: ${e.message}` : e.message;
    } catch (_) { /* not JSON: keep the status */ }
    throw new Error(message);
  }
  return r;
}

function modelName() { return ui.model.value || undefined; }
function labelName() { return ui.label.value || undefined; }

function showLabels() {
  // A labelled records model writes a record of the chosen label.
  const m = models.find((x) => x.name === ui.model.value) || models[0];
  const labels = (m && m.labels) || [];
  ui.label.replaceChildren(...labels.map((l) => Object.assign(document.createElement("option"), { value: l, textContent: l })));
  $("label-row").hidden = labels.length === 0;
}

async function loadModels() {
  const r = await fetch("/v1/models");
  const d = await r.json();
  limits = d.limits;
  models = d.models;
  ui.length.max = limits.max_length;
  for (const m of d.models) {
    const o = document.createElement("option");
    o.value = m.name;
    o.textContent = m.name;
    o.selected = m.default;
    ui.model.append(o);
  }
  $("model-row").hidden = d.models.length < 2;
  showLabels();
}

// ---------------------------------------------------------------- generation

function readSse(buffer, onEvent) {
  // Complete events end with a blank line; what is left is returned for the next read.
  let at;
  while ((at = buffer.indexOf("\n\n")) >= 0) {
    const block = buffer.slice(0, at);
    buffer = buffer.slice(at + 2);
    let event = "message", data = "";
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data += line.slice(5).trim();
    }
    onEvent(event, data ? JSON.parse(data) : null);
  }
  return buffer;
}

async function generate() {
  if (running) return;
  const body = {
    model: modelName(), label: labelName(), prompt: ui.prompt.value, stream: true,
    temperature: Number(ui.temp.value), length: Number(ui.length.value),
  };
  if (ui.seed.value !== "") body.seed = Number(ui.seed.value);
  running = new AbortController();
  ui.output.textContent = "";
  ui.output.dataset.events = "0";
  ui.output.setAttribute("aria-busy", "true");
  ui.generate.disabled = true;
  ui.stop.disabled = false;
  setStatus("generating", "Generating…");
  let ended = "done";
  try {
    const r = await api("/v1/sample", body, running.signal);
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer = readSse(buffer + value, (event, data) => {
        if (event === "message" && data.index === 0) {
          ui.output.append(data.text);
          ui.output.dataset.events = String(Number(ui.output.dataset.events) + 1);
        } else if (event === "done") {
          ui.seed.placeholder = `random (last: ${data.seed})`;
        } else if (event === "error") {
          throw new Error(data.error.message);
        }
      });
    }
    setStatus("done", `Done: ${ui.output.textContent.length} characters.`);
  } catch (e) {
    if (e.name === "AbortError") {
      ended = "stopped";
      setStatus("stopped", "Stopped.");
    } else {
      ended = "error";
      setStatus("error", `Error: ${e.message}`);
    }
  } finally {
    running = null;
    ui.output.setAttribute("aria-busy", "false");
    ui.output.dataset.ended = ended;
    ui.generate.disabled = false;
    ui.stop.disabled = true;
  }
}

// ---------------------------------------------------------------- next-token probabilities

const SHOW = { "\n": "⏎ newline", " ": "␣ space", "\t": "⇥ tab" };
let nextTimer = null, nextSeq = 0;

function scheduleNext() {
  clearTimeout(nextTimer);
  nextTimer = setTimeout(showNext, 120);
}

async function showNext() {
  const seq = ++nextSeq;
  // The text before the cursor; past the server's prompt limit, its tail (the view stays useful).
  const before = ui.prompt.value.slice(0, ui.prompt.selectionStart).slice(-limits.max_prompt);
  try {
    const t = Number(ui.temp.value);
    const r = await api("/v1/next", { model: modelName(), label: labelName(), prompt: before, k: 5, temperature: t >= 0 ? t : 1 });
    const d = await r.json();
    if (seq !== nextSeq) return; // a newer request has been sent
    ui.next.replaceChildren(...d.tokens.map(({ token, p }) => {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      const shown = SHOW[token] || token;
      b.textContent = `${shown} ${(100 * p).toFixed(1)}%`;
      b.setAttribute("aria-label", `Insert ${shown}, probability ${(100 * p).toFixed(1)} percent`);
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = `${Math.max(1, Math.round(40 * p))}px`;
      b.append(bar);
      b.addEventListener("click", () => insertAtCursor(token));
      li.append(b);
      return li;
    }));
  } catch (e) {
    if (seq === nextSeq) ui.next.replaceChildren(Object.assign(document.createElement("li"), { textContent: e.message }));
  }
}

function insertAtCursor(text) {
  const p = ui.prompt, at = p.selectionStart;
  p.setRangeText(text, at, p.selectionEnd, "end");
  p.focus();
  scheduleNext();
}

// ---------------------------------------------------------------- wiring

ui.form.addEventListener("submit", (e) => { e.preventDefault(); generate(); });
ui.stop.addEventListener("click", () => running && running.abort());
ui.prompt.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); generate(); }
});
for (const ev of ["input", "keyup", "click", "select"]) ui.prompt.addEventListener(ev, scheduleNext);
ui.tempRange.addEventListener("input", () => { ui.temp.value = ui.tempRange.value; scheduleNext(); });
ui.temp.addEventListener("input", () => { ui.tempRange.value = ui.temp.value; scheduleNext(); });
ui.model.addEventListener("change", () => { showLabels(); scheduleNext(); });
ui.label.addEventListener("change", scheduleNext);

loadModels().then(showNext).catch((e) => setStatus("error", `Error: ${e.message}`));
