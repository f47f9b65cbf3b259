"use strict";
// git-scratch explore: one page over the JSON API that src/git_scratch/explore/server.py serves
// (docs/explore.md). Plain DOM calls, no framework and no build step: the page is served by the
// standard library and must work offline.

const $ = (id) => document.getElementById(id);

const state = {
  info: null,     // GET /api/info
  media: null,    // POST /api/upload's answer for the file on show
  current: null,  // the Seq (caption, beam or answer) whose tokens the strip shows
  token: 0,       // index into current.tokens
  grid: null,     // [gh, gw] and map of the drawn overlay, for the hover readout
  values: null,
  asked: 0,       // attention requests made; only the newest one's answer is drawn
  pending: new Set(),
};

// An "inferno"-like colour map: dark where a token does not look, bright where it does.
const STOPS = [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]];

function colour(t) {
  const x = Math.min(Math.max(t, 0), 1) * (STOPS.length - 1);
  const i = Math.min(Math.floor(x), STOPS.length - 2);
  const f = x - i;
  return STOPS[i].map((c, k) => Math.round(c + f * (STOPS[i + 1][k] - c)));
}

// ---- talking to the server -------------------------------------------------------------------

async function request(path, init) {
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new Error(`${path}: the explorer did not answer (${err.message}); is git-scratch explore still running?`);
  }
  if (response.ok && (response.headers.get("Content-Type") || "").startsWith("image/")) return response.blob();
  const text = await response.text();
  let data = null;
  try { data = JSON.parse(text); } catch (_) { data = null; }  // an error page that is not JSON
  if (!response.ok) throw new Error(data && data.error ? data.error : `${path}: HTTP ${response.status}`);
  return data;
}

function postJSON(path, body) {
  return request(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

// Every action goes through here: the status line says what is running, a failure shows the
// server's one-line error on the page.
async function act(label, work) {
  state.pending.add(label);
  showStatus();
  try {
    return await work();
  } catch (err) {
    showError(err.message);
  } finally {
    state.pending.delete(label);
    showStatus();
  }
}

function showStatus() {
  $("status").textContent = [...state.pending].map((label) => `${label}…`).join("  ");
  document.body.dataset.busy = state.pending.size ? "1" : "0";
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// Images through fetch rather than <img src>, so that a failure shows the server's message.
async function showImage(img, path) {
  const blob = await request(path);
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(blob);
  img.dataset.path = path;  // which picture this is: the blob: URL does not say
  await img.decode();
}

function formatBytes(n) {
  return n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(n % (1 << 20) ? 1 : 0)} MiB` : `${Math.ceil(n / 1024)} KiB`;
}

// ---- the model's description -----------------------------------------------------------------

async function loadInfo() {
  const info = await request("/api/info");
  state.info = info;
  const video = info.frames > 1 ? ` · videos as ${info.frames} frames` : "";
  $("model-line").textContent = `${info.model} · ${info.layers} decoder layers × ${info.heads} heads · `
    + `${info.grid[0]}×${info.grid[1]} patches of a ${info.image_size} px image${video}`;
  $("accepted").textContent = `(${info.accepted.join(" ")}; up to ${formatBytes(info.max_upload_bytes)})`;
  $("file-input").accept = info.accepted.join(",");
  const options = (select, values, chosen) => {
    select.replaceChildren(...values.map(([value, label]) => new Option(label, value, false, value === chosen)));
  };
  const layers = [...Array(info.layers).keys()].map((i) => [String(i), `${i}`]);
  options($("layer"), [...layers, ["rollout", "rollout"]], String(info.layers - 1));
  const heads = [...Array(info.heads).keys()].map((i) => [String(i), `${i}`]);
  options($("head"), [["mean", "mean"], ...heads], "mean");
  $("parity-button").hidden = !info.parity;
  $("parity-note").textContent = info.parity
    ? "Runs this image through our model and transformers' GitForCausalLM on the same weights and compares every stage."
    : `Not available for this checkpoint: ${info.parity_reason || "it has no transformers twin"}.`;
  $("ramp").style.background = `linear-gradient(to right, ${STOPS.map((c) => `rgb(${c})`).join(", ")})`;
}

// ---- media, captions, answers ----------------------------------------------------------------

async function upload(file) {
  clearError();
  const limit = state.info.max_upload_bytes;
  if (file.size > limit) {
    // The server refuses it too (413), but only after the browser has sent it all.
    throw new Error(`${file.name} is ${formatBytes(file.size)}, over the explorer's limit of ${formatBytes(limit)}; `
      + "shrink it, or restart git-scratch explore with a larger --max-upload-mb");
  }
  // Header values must be Latin-1, so the name travels percent-encoded; the server unquotes it.
  const media = await request("/api/upload", {
    method: "POST", body: file,
    headers: { "X-Filename": encodeURIComponent(file.name), "Content-Type": "application/octet-stream" },
  });
  state.media = media;
  state.current = null;
  $("answers").replaceChildren();
  $("parity-result").replaceChildren();
  clearOverlay();
  $("workspace").hidden = false;
  // A video's frames each have their own grid: the map and the picture under it follow the frame select.
  $("frame-control").hidden = media.kind !== "video";
  const frames = [...Array(media.frames).keys()];
  $("frame").replaceChildren(...frames.map((k) => new Option(`${k + 1} of ${media.frames}`, String(k))));
  await showImage($("preview"), media.preview);
  await caption();
}

async function caption() {
  const result = await postJSON("/api/caption", {
    media_id: state.media.media_id,
    num_beams: Number($("num-beams").value),
    max_new_tokens: Number($("max-tokens").value),
  });
  $("greedy").replaceChildren(seqItem(result.greedy));
  $("beams").replaceChildren(...result.beams.map((seq) => seqItem(seq)));
  await select(result.greedy);
}

async function ask(question) {
  const seq = await postJSON("/api/answer", {
    media_id: state.media.media_id, question, max_new_tokens: Number($("max-tokens").value),
  });
  $("answers").prepend(seqItem(seq, question));
  await select(seq);
}

function seqItem(seq, question) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "seq";
  button.dataset.sequenceId = seq.sequence_id;
  if (question !== undefined) button.append(span("question", question));
  button.append(span("text", seq.text || "(nothing generated)"), span("score", seq.score.toFixed(3)));
  button.title = "show this sequence's tokens, attention and mask";
  button.addEventListener("click", () => act("attention", () => select(seq)));
  const li = document.createElement("li");
  li.append(button);
  return li;
}

function span(className, text) {
  const node = document.createElement("span");
  node.className = className;
  node.textContent = text;
  return node;
}

async function select(seq) {
  state.current = seq;
  state.token = 0;
  for (const button of document.querySelectorAll(".seq")) {
    button.classList.toggle("current", button.dataset.sequenceId === seq.sequence_id);
  }
  const label = seq.prompt ? `“${seq.prompt}” → “${seq.text}”` : `“${seq.text}”`;
  $("seq-label").textContent = label;
  $("mask-label").textContent = label;
  renderTokens();
  await Promise.all([showAttention(), showImage($("mask"), `/api/mask/${encodeURIComponent(seq.sequence_id)}.png`)]);
}

// ---- tokens and their attention --------------------------------------------------------------

function renderTokens() {
  const seq = state.current;
  const strip = $("tokens");
  strip.dataset.sequenceId = seq.sequence_id;
  strip.replaceChildren(...seq.tokens.map((token, i) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = i === state.token ? "token current" : "token";
    button.dataset.index = String(i);
    button.textContent = token.text.trim() === "" ? "␣" : token.text;
    button.title = `token ${i}: id ${token.id}`;
    button.addEventListener("click", () => goTo(i));
    return button;
  }));
  if (!seq.tokens.length) strip.append(span("muted", "no tokens generated"));
  $("prev").disabled = state.token <= 0;
  $("next").disabled = state.token >= seq.tokens.length - 1;
}

function goTo(i) {
  const seq = state.current;
  if (!seq || i < 0 || i >= seq.tokens.length || i === state.token) return;
  state.token = i;
  renderTokens();
  scrollToToken(i);
  act("attention", showAttention);
}

function scrollToToken(i) {
  const button = $("tokens").querySelector(`[data-index="${i}"]`);
  if (button) button.scrollIntoView({ block: "nearest", inline: "nearest" });
}

function chosenLayer() {
  const value = $("layer").value;
  return value === "rollout" ? "rollout" : Number(value);
}

function chosenHead() {
  const value = $("head").value;
  return value === "mean" ? "mean" : Number(value);
}

async function showAttention() {
  const seq = state.current;
  if (!seq || !seq.tokens.length) { clearOverlay(); return; }
  // Rollout composes the head-averaged layers (tools/attention.py), so it has no head of its own.
  $("head").disabled = chosenLayer() === "rollout";
  if ($("head").disabled) $("head").value = "mean";
  const key = {
    sequence_id: seq.sequence_id, token: state.token, layer: chosenLayer(), head: chosenHead(),
    frame: Number($("frame").value),
  };
  const asked = ++state.asked;
  const result = await postJSON("/api/attention", key);
  if (asked !== state.asked) return;  // the user moved on while this one was computed
  drawOverlay(result, key);
}

// The map is drawn one canvas pixel per patch; CSS stretches the canvas over the image's box with
// `image-rendering: pixelated`, so each patch covers exactly the pixels the ViT cut it from.
function drawOverlay(result, key) {
  const [gh, gw] = result.grid;
  const values = result.map.flat();  // (gh * gw) row by row
  const max = Math.max(...values);
  const canvas = $("overlay");
  canvas.width = gw;
  canvas.height = gh;
  const ctx = canvas.getContext("2d");
  const pixels = ctx.createImageData(gw, gh);
  values.forEach((v, i) => {
    const t = max > 0 ? v / max : 0;
    pixels.data.set([...colour(t), Math.round(255 * (0.15 + 0.85 * t))], 4 * i);
  });
  ctx.putImageData(pixels, 0, 0);
  state.grid = [gh, gw];
  state.values = values;
  // What was drawn, for tests and for anyone reading the DOM: a checksum of the map and its key.
  Object.assign(canvas.dataset, {
    checksum: values.reduce((sum, v, i) => sum + v * (i + 1), 0).toFixed(6),
    sequenceId: key.sequence_id, token: String(key.token), layer: String(key.layer), head: String(key.head),
    frame: String(result.frame),
  });
  $("scale-max").textContent = max.toPrecision(3);
  $("share").textContent = `${(100 * result.image_share).toFixed(1)} %`;
}

function clearOverlay() {
  const canvas = $("overlay");
  canvas.width = canvas.height = 1;
  canvas.getContext("2d").clearRect(0, 0, 1, 1);
  for (const name of ["checksum", "sequenceId", "token", "layer", "head", "frame"]) delete canvas.dataset[name];
  state.grid = state.values = null;
  $("scale-max").textContent = "–";
  $("share").textContent = "–";
}

function readout(event) {
  if (!state.grid) return;
  const [gh, gw] = state.grid;
  const box = event.target.getBoundingClientRect();
  const row = Math.min(gh - 1, Math.floor(((event.clientY - box.top) / box.height) * gh));
  const col = Math.min(gw - 1, Math.floor(((event.clientX - box.left) / box.width) * gw));
  const value = state.values[row * gw + col];
  $("cell").textContent = `patch row ${row}, column ${col}: ${value.toPrecision(3)} of this token's attention`;
}

// ---- parity ----------------------------------------------------------------------------------

async function parity() {
  const result = await postJSON("/api/parity", { media_id: state.media.media_id });
  const table = document.createElement("table");
  table.dataset.testid = "parity-table";
  const head = table.createTHead().insertRow();
  for (const name of ["stage", "max abs diff", "max rel diff", "allowed", "result"]) head.append(cell("th", name));
  const body = table.createTBody();
  const number = (x, digits) => (x === null || x === undefined ? "–" : x === 0 ? "0" : x.toExponential(digits));
  for (const row of result.rows) {
    const tr = body.insertRow();
    tr.className = { true: "ok", false: "fail", null: "info" }[row.ok];
    // Token rows compare whole sequences: their ids say more than a number would.
    const values = row.tokens
      ? [cellSpan(row.tokens, 3)]
      : [number(row.max_abs_diff, 2), number(row.max_rel_diff, 2), number(row.tolerance, 1)].map((x) => cell("td", x));
    tr.append(cell("td", row.stage), ...values,
      cell("td", { true: "pass", false: "FAIL", null: "differs (half precision: not a failure)" }[row.ok]));
  }
  const failed = result.rows.filter((row) => row.ok === false).map((row) => row.stage);
  const summary = span(result.ok ? "verdict ok" : "verdict fail",
    result.ok ? `every stage within tolerance (${result.rows.length} rows)`
      : `FAILED from ${failed[0]} (${failed.length} rows fail)`);
  $("parity-result").replaceChildren(summary, table);
}

function cellSpan(text, columns) {
  const node = cell("td", text);
  node.colSpan = columns;
  node.className = "ids";
  return node;
}

function cell(tag, text) {
  const node = document.createElement(tag);
  node.textContent = text;
  return node;
}

// ---- wiring ----------------------------------------------------------------------------------

function wire() {
  const drop = $("drop");
  const take = (file) => { if (file) act("uploading and captioning", () => upload(file)); };
  $("file-input").addEventListener("change", (event) => { take(event.target.files[0]); event.target.value = ""; });
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    take(event.dataTransfer.files[0]);
  });
  // A file dropped beside the zone would otherwise replace the page with the file itself.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());

  $("caption-form").addEventListener("submit", (event) => {
    event.preventDefault();
    clearError();
    act("captioning", caption);
  });
  $("question-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const question = $("question").value.trim();
    if (!question) return;
    clearError();
    act("answering", () => ask(question));
  });
  for (const id of ["layer", "head"]) $(id).addEventListener("change", () => act("attention", showAttention));
  $("frame").addEventListener("change", () => act("attention", () => Promise.all([
    showImage($("preview"), `${state.media.preview}?frame=${$("frame").value}`), showAttention()])));
  $("opacity").addEventListener("input", (event) => { $("overlay").style.opacity = event.target.value; });
  $("overlay").addEventListener("mousemove", readout);
  $("prev").addEventListener("click", () => goTo(state.token - 1));
  $("next").addEventListener("click", () => goTo(state.token + 1));
  document.addEventListener("keydown", (event) => {
    if (["INPUT", "SELECT", "TEXTAREA"].includes(event.target.tagName)) return;  // arrows belong to the field
    if (event.key === "ArrowLeft") goTo(state.token - 1);
    if (event.key === "ArrowRight") goTo(state.token + 1);
  });
  $("parity-button").addEventListener("click", () => { clearError(); act("comparing with transformers", parity); });
}

wire();
act("loading", loadInfo);
