// The page: generate with streamed text and show the next-token probabilities at the prompt's
// cursor. One page for two places: opened from an export (its weights.js defines the model) it
// samples in this browser with charrnn.js, in a worker; served by `charrnn serve` it uses the
// HTTP API (server-sent events over fetch). Plain JavaScript, no build step, nothing from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const ui = {
  model: $("model"), label: $("label"), prompt: $("prompt"), temp: $("temperature"), tempRange: $("temperature-range"),
  length: $("length"), seed: $("seed"), topK: $("top-k"), topP: $("top-p"), stopAt: $("stop-at"),
  generate: $("generate"), stop: $("stop"), status: $("status"), output: $("output"), next: $("next-list"),
  form: $("controls"), info: $("model-info"), copy: $("copy"), seedUsed: $("seed-used"), seedValue: $("seed-value"),
  reuse: $("reuse-seed"), nextTitle: $("next-title"),
};
let backend = null; // { models, limits, sample(body), next(body) }: the API's or this browser's
let running = null; // the generation in progress: { stop(), stopped }

function setStatus(state, text) {
  ui.status.dataset.state = state;
  ui.status.textContent = text;
}

function fieldError(e) {
  return e.field ? `${e.field}: ${e.message}` : e.message;
}

// ---------------------------------------------------------------- the two backends

// `charrnn serve`: the models of /v1/models, generation through /v1/sample with "stream": true.
async function httpBackend() {
  async function api(path, body, signal) {
    const r = await fetch(path, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal,
    });
    if (!r.ok) {
      let message = `HTTP ${r.status}`;
      try {
        message = fieldError((await r.json()).error);
      } catch (_) { /* not JSON: keep the status */ }
      throw new Error(message);
    }
    return r;
  }

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

  async function* stream(body, signal) {
    const r = await api("v1/sample", Object.assign({}, body, { stream: true }), signal);
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      const pieces = [];
      buffer = readSse(buffer + value, (event, data) => {
        if (event === "message" && data.index === 0) pieces.push(data.text);
        else if (event === "error") throw new Error(fieldError(data.error));
      });
      yield* pieces;
    }
  }

  const d = await (await fetch("v1/models")).json();
  return {
    local: false,
    models: d.models,
    limits: d.limits,
    sample(body) {
      const control = new AbortController();
      return { pieces: stream(body, control.signal), stop: () => control.abort() };
    },
    async next(body) {
      return (await (await api("v1/next", body)).json()).tokens;
    },
  };
}

// An export: the model in weights.js, run by charrnn.js in a worker.
async function localBackend() {
  const model = await charrnn.load();
  const name = model.info.name || "model";
  return {
    local: true,
    models: [Object.assign({ default: true }, model.info, { name })],
    limits: { max_prompt: Infinity, max_length: Infinity },
    sample(body) {
      const pieces = model.stream(body);
      return { pieces, stop: () => pieces.return() };
    },
    async next(body) {
      return model.nextTokenProbs(body.prompt, body.k, { temperature: body.temperature, label: body.label });
    },
  };
}

// ---------------------------------------------------------------- the model

function current() {
  return backend.models.find((m) => m.name === ui.model.value) || backend.models[0];
}

function describe(m) {
  const parts = [];
  if (m.corpus) parts.push(`trained on ${m.corpus}`);
  if (m.parameters) {
    const p = m.parameters;
    parts.push(`${p >= 1e6 ? (p / 1e6).toFixed(2) + "M" : p >= 1e3 ? Math.round(p / 1e3) + "k" : p} parameters`);
  }
  if (m.cell) parts.push(`${m.level || "char"}-level ${m.cell.toUpperCase()} ${m.layers}×${m.hidden}`);
  if (typeof m.best_val_loss === "number") {
    const per = m.level === "word" ? "token" : "char";
    parts.push(`validation loss ${m.best_val_loss.toFixed(3)} nats/${per} (${(m.best_val_loss / Math.LN2).toFixed(2)} bits/${per})`);
  }
  parts.push(backend.local ? "runs in this browser" : "served by charrnn serve");
  return parts.join(" · ");
}

function showModel() {
  const m = current();
  ui.info.replaceChildren(Object.assign(document.createElement("strong"), { textContent: m.name }), ` · ${describe(m)}`);
  document.title = `${m.name} · charrnn`;
  ui.nextTitle.textContent = m.level === "word" ? "Next word at the cursor" : "Next character at the cursor";
  // A labelled records model writes a record of the chosen label.
  const labels = m.labels || [];
  ui.label.replaceChildren(...labels.map((l) => Object.assign(document.createElement("option"), { value: l, textContent: l })));
  $("label-row").hidden = labels.length === 0;
}

async function start() {
  backend = typeof CHARRNN_WEIGHTS === "string" ? await localBackend() : await httpBackend();
  if (Number.isFinite(backend.limits.max_length)) ui.length.max = backend.limits.max_length;
  for (const m of backend.models) {
    ui.model.append(Object.assign(document.createElement("option"), { value: m.name, textContent: m.name, selected: m.default }));
  }
  $("model-row").hidden = backend.models.length < 2;
  showModel();
}

// ---------------------------------------------------------------- generation

function unescape(s) { // as the CLI reads --stop: \n a newline, \t a tab, \\ a backslash
  return s.replace(/\\(\\|n|t)/g, (_, c) => (c === "n" ? "\n" : c === "t" ? "\t" : "\\"));
}

function request() {
  // The form is not validated by the browser (a value off the inputs' steps would block Generate
  // without a word): the model checks every field and the status line names the one it refuses.
  const body = { model: ui.model.value || undefined, label: ui.label.value || undefined, prompt: ui.prompt.value };
  if (ui.temp.value !== "") body.temperature = Number(ui.temp.value);
  if (ui.length.value !== "") body.length = Number(ui.length.value);
  if (ui.topK.value !== "") body.top_k = Number(ui.topK.value);
  if (ui.topP.value !== "") body.top_p = Number(ui.topP.value);
  if (ui.stopAt.value !== "") body.stop = unescape(ui.stopAt.value);
  // The page picks the seed when none is given, so that it can show it from the start.
  const seed = ui.seed.value === "" ? Math.floor(Math.random() * 2 ** 31) : Number(ui.seed.value);
  if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`seed: give a whole number from 0 to ${Number.MAX_SAFE_INTEGER}`);
  body.seed = seed;
  return body;
}

async function generate() {
  if (running) return;
  let body;
  try {
    body = request();
  } catch (e) {
    setStatus("error", `Error: ${e.message}`);
    return;
  }
  ui.output.textContent = "";
  ui.output.dataset.events = "0";
  ui.output.setAttribute("aria-busy", "true");
  ui.generate.disabled = true;
  ui.stop.disabled = false;
  ui.copy.disabled = true;
  ui.seedValue.value = String(body.seed);
  ui.seedUsed.hidden = false;
  setStatus("generating", "Generating…");
  let ended = "done";
  const run = { stopped: false };
  running = run;
  try {
    const job = backend.sample(body);
    run.stop = () => { run.stopped = true; job.stop(); };
    for await (const piece of job.pieces) {
      ui.output.append(piece);
      ui.output.dataset.events = String(Number(ui.output.dataset.events) + 1);
    }
    if (run.stopped) throw Object.assign(new Error("stopped"), { name: "AbortError" });
    setStatus("done", `Done: ${ui.output.textContent.length} characters.`);
  } catch (e) {
    if (e.name === "AbortError" || run.stopped) {
      ended = "stopped";
      setStatus("stopped", "Stopped.");
    } else {
      ended = "error";
      setStatus("error", `Error: ${fieldError(e)}`);
    }
  } finally {
    running = null;
    ui.output.setAttribute("aria-busy", "false");
    ui.output.dataset.ended = ended;
    ui.generate.disabled = false;
    ui.stop.disabled = true;
    ui.copy.disabled = ui.output.textContent === "";
  }
}

async function copyOutput() {
  const text = ui.output.textContent;
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) { // no clipboard API here (an older browser, a page that is not focused)
    const range = document.createRange();
    range.selectNodeContents(ui.output);
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    document.execCommand("copy");
  }
  setStatus(ui.status.dataset.state, `Copied ${text.length} characters.`);
}

// ---------------------------------------------------------------- next-token probabilities

const SHOW = { "\n": "⏎ newline", " ": "␣ space", "\t": "⇥ tab" };
let nextTimer = null, nextSeq = 0;

function scheduleNext() {
  clearTimeout(nextTimer);
  nextTimer = setTimeout(showNext, 120);
}

async function showNext() {
  if (!backend) return;
  const seq = ++nextSeq;
  // The text before the cursor; past the server's prompt limit, its tail (the view stays useful).
  const limit = backend.limits.max_prompt;
  const before = ui.prompt.value.slice(0, ui.prompt.selectionStart);
  const prompt = Number.isFinite(limit) ? before.slice(-limit) : before;
  try {
    const t = Number(ui.temp.value);
    const tokens = await backend.next({
      model: ui.model.value || undefined, label: ui.label.value || undefined, prompt, k: 5, temperature: t >= 0 ? t : 1,
    });
    if (seq !== nextSeq) return; // a newer request has been sent
    ui.next.replaceChildren(...tokens.map(({ token, p }) => {
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
    if (seq === nextSeq) ui.next.replaceChildren(Object.assign(document.createElement("li"), { textContent: fieldError(e) }));
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
ui.stop.addEventListener("click", () => running && running.stop && running.stop());
ui.copy.addEventListener("click", copyOutput);
ui.reuse.addEventListener("click", () => { ui.seed.value = ui.seedValue.value; ui.seed.focus(); });
ui.prompt.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); generate(); }
});
for (const ev of ["input", "keyup", "click", "select"]) ui.prompt.addEventListener(ev, scheduleNext);
ui.tempRange.addEventListener("input", () => { ui.temp.value = ui.tempRange.value; scheduleNext(); });
ui.temp.addEventListener("input", () => { ui.tempRange.value = ui.temp.value; scheduleNext(); });
ui.model.addEventListener("change", () => { showModel(); scheduleNext(); });
ui.label.addEventListener("change", scheduleNext);

start().then(() => {
  // An export writes a first sample as soon as it opens; the server's page waits to be asked.
  if (backend.local) generate();
  showNext();
}).catch((e) => {
  ui.info.textContent = "No model.";
  setStatus("error", `Error: ${e.message}`);
});
