// The page around cenet's wasm module: checks for WebGPU, runs the training loop one step
// at a time (yielding to the browser between steps), and draws the chart and the grid.
// Every call into the module goes through `serial`, so no two overlap.
//
// `?autotest=N` trains N steps of a small configuration at once and logs a verdict on the
// console ("cenet-autotest: PASS ..." or "cenet-autotest: FAIL ..."): the end-to-end test
// (tests/web/e2e.py) reads it.

import init, { Demo, Options } from "./pkg/web.js";

const params = new URLSearchParams(location.search);
const autotestSteps = Number(params.get("autotest") || 0);
const $ = (id) => document.getElementById(id);

let demo = null;
let running = false;
let prepared = false;
// Counts the sessions prepared: a training loop stops when its session is replaced.
let generation = 0;
let history = freshHistory();
let grid = null;
let modelName = "resnet";

function freshHistory() {
  return { steps: [], losses: [], smoothLoss: [], smoothTrain: [], tests: [], speed: [] };
}

// --- Calls into the module, one at a time ---------------------------------------------------

let queue = Promise.resolve();
function serial(task) {
  const result = queue.then(task);
  queue = result.catch(() => {});
  return result;
}

// A macrotask boundary: lets the browser handle input and paint between training steps.
function nextTask() {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => resolve();
    channel.port2.postMessage(0);
  });
}

// --- Messages ---------------------------------------------------------------------------------

function notice(kind, html) {
  const box = $("notice");
  box.className = kind;
  box.innerHTML = html;
  box.hidden = false;
}

function status(text) {
  $("status").textContent = text;
}

function autotestLog(line) {
  if (autotestSteps > 0) console.log(`cenet-autotest: ${line}`);
}

function fail(error) {
  running = false;
  const message = error && error.message ? error.message : String(error);
  console.error(`cenet demo: ${message}`);
  autotestLog(`FAIL ${message}`);
  notice("error", `<strong>Error:</strong> ${escapeHtml(message)}`);
  updateButtons();
}

function escapeHtml(text) {
  return text.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

window.addEventListener("error", (event) => fail(event.error || event.message));
window.addEventListener("unhandledrejection", (event) => fail(event.reason));

// --- Start-up ---------------------------------------------------------------------------------

const NO_WEBGPU = `<strong>This browser does not support WebGPU</strong>, which the demo needs to
  train on your GPU. Open this page in a recent <strong>Chrome or Edge</strong> (version 113 or
  later on Windows, macOS and ChromeOS; 121 or later on Android), in <strong>Safari 26</strong>
  or later on macOS and iOS, or in <strong>Firefox 141</strong> or later on Windows. On Linux,
  Chrome needs <code>chrome://flags/#enable-unsafe-webgpu</code> turned on.`;

const INSECURE = `<strong>WebGPU needs a secure page</strong>: open the demo through
  <code>https://</code> or from <code>localhost</code> (as <code>build.sh --serve</code> prints),
  not from a plain <code>http://</code> address of another host.`;

const NO_ADAPTER = `<strong>WebGPU is present but the browser offered no GPU adapter</strong>
  (WebGPU may be switched off, or this GPU or driver is on the browser's block list). Check
  <code>chrome://gpu</code>, update the graphics driver, or try another browser from the list
  at <a href="https://caniuse.com/webgpu">caniuse.com/webgpu</a>. On Linux, Chrome needs
  <code>chrome://flags/#enable-unsafe-webgpu</code> turned on.`;

async function main() {
  if (!navigator.gpu) {
    $("adapter").textContent = "No WebGPU.";
    notice("error", window.isSecureContext ? NO_WEBGPU : INSECURE);
    autotestLog("FAIL this browser has no WebGPU");
    return;
  }
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) {
    $("adapter").textContent = "No WebGPU adapter.";
    notice("error", NO_ADAPTER);
    autotestLog("FAIL WebGPU offered no adapter");
    return;
  }
  const info = adapter.info || {};
  const fallback = Boolean(info.isFallbackAdapter || adapter.isFallbackAdapter);

  await init();
  demo = await Demo.open();
  const software = fallback || demo.is_software();
  const described = [info.vendor, info.architecture, info.description || demo.adapter_name()]
    .filter((part) => part)
    .join(" ");
  $("adapter").textContent = `Adapter: ${described || "unnamed"} (WebGPU${software ? ", software fallback" : ""})`;
  console.log(`cenet demo: adapter ${described || "unnamed"}, fallback ${software}`);
  if (software) {
    notice("warning", `<strong>This is a software (fallback) adapter</strong>: the GPU work runs
      on the CPU, so training will be slow, seconds per step. A browser with hardware WebGPU
      (see <code>chrome://gpu</code>) trains hundreds of times faster.`);
  }

  $("app").hidden = false;
  wireControls();
  if (autotestSteps > 0 || software) {
    // Small enough for a software adapter: a few seconds a step.
    $("batch").value = "8";
  }
  await prepare();
  if (autotestSteps > 0) {
    autotestLog(`start: ${autotestSteps} steps`);
    start();
  }
}

// --- Settings ---------------------------------------------------------------------------------

function options() {
  const o = new Options();
  o.depth = Number($("depth").value);
  o.ce = $("ce").checked;
  o.batch_size = Number($("batch").value);
  o.lr = Number($("lr").value);
  o.augment = $("augment").checked;
  if (autotestSteps > 0) {
    o.synthetic_train = 512;
    o.synthetic_test = 64;
    o.grid_images = 8;
    o.eval_images = 8;
  } else if (demo.is_software()) {
    o.grid_images = 16;
    o.eval_images = 16;
  }
  return o;
}

async function prepare() {
  running = false;
  prepared = false;
  generation += 1;
  updateButtons();
  const useCifar = document.querySelector("input[name=data]:checked").value === "cifar";
  status("Preparing the data and the network…");
  const o = options();
  const described = await serial(() => {
    if (!useCifar) demo.clear_cifar_files();
    const line = demo.prepare(o);
    modelName = demo.model_name();
    grid = demo.grid();
    return line;
  });
  o.free();
  $("data-info").textContent = described;
  history = freshHistory();
  drawGrid(null);
  showStats();
  drawChart();
  prepared = true;
  status(`${modelName} ready. Press Start.`);
  updateButtons();
}

// --- Controls ---------------------------------------------------------------------------------

function wireControls() {
  $("start").onclick = start;
  $("pause").onclick = () => {
    running = false;
    updateButtons();
  };
  $("reset").onclick = () => prepare().catch(fail);
  $("download").onclick = () => download().catch(fail);
  for (const id of ["depth", "ce", "batch", "lr", "augment"]) {
    $(id).onchange = () => status("Press Reset to apply the new settings.");
  }
  for (const radio of document.querySelectorAll("input[name=data]")) {
    radio.onchange = () => prepare().catch(fail);
  }
  $("cifar-files").onchange = (event) => loadCifar(event.target.files).catch(fail);
}

function updateButtons() {
  $("start").disabled = !prepared || running;
  $("pause").disabled = !running;
  $("reset").disabled = !prepared;
  $("download").disabled = !prepared || history.steps.length === 0;
}

async function loadCifar(files) {
  if (files.length === 0) return;
  running = false;
  await serial(() => demo.clear_cifar_files());
  let images = 0;
  for (const file of files) {
    status(`Reading ${file.name}…`);
    const bytes = new Uint8Array(await file.arrayBuffer());
    images += await serial(() => demo.add_cifar_file(file.name, bytes));
  }
  const names = Array.from(files, (f) => f.name).join(", ");
  status(`${images} CIFAR-10 images in ${names}`);
  $("use-cifar").disabled = false;
  $("use-cifar").checked = true;
  await prepare();
}

async function download() {
  const bytes = await serial(() => demo.weights());
  const blob = new Blob([bytes], { type: "application/octet-stream" });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = `${modelName}-step${history.steps.at(-1) || 0}.safetensors`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  status(`Saved ${link.download} (${bytes.length} bytes): PyTorch's state-dict keys.`);
}

// --- The training loop ------------------------------------------------------------------------

// Seconds between evaluations of the test images, and the least number of steps between
// them, which keeps slow adapters training most of the time (steps, in the auto-test).
const EVALUATE_EVERY_SECONDS = 4;
const EVALUATE_AFTER_STEPS = 5;
const AUTOTEST_EVALUATE_EVERY = 10;
// Steps the throughput is averaged over.
const SPEED_WINDOW = 20;

function start() {
  if (running || !prepared) return;
  running = true;
  updateButtons();
  status("Training…");
  trainLoop().catch(fail);
}

async function trainLoop() {
  const mine = generation;
  const current = () => running && generation === mine;
  let lastEvaluation = performance.now();
  let evaluatedStep = 0;
  while (current()) {
    const began = performance.now();
    const report = await serial(() => demo.step());
    const seconds = (performance.now() - began) / 1000;
    if (generation !== mine) break;
    record(report, seconds);
    report.free();
    const step = history.steps.at(-1);
    autotestLog(`step ${step} loss ${history.losses.at(-1).toFixed(4)}`);

    const due = autotestSteps > 0
      ? step % AUTOTEST_EVALUATE_EVERY === 0 || step >= autotestSteps
      : performance.now() - lastEvaluation > EVALUATE_EVERY_SECONDS * 1000 &&
        step - evaluatedStep >= EVALUATE_AFTER_STEPS;
    if (due) {
      await evaluate(mine);
      lastEvaluation = performance.now();
      evaluatedStep = step;
    }
    scheduleDraw();
    if (autotestSteps > 0 && step >= autotestSteps) {
      running = false;
      await finishAutotest();
    }
    await nextTask();
  }
  if (generation !== mine) return;
  if (history.steps.length > 0 && evaluatedStep !== history.steps.at(-1)) {
    await evaluate(mine);
    scheduleDraw();
  }
  status(`Paused after ${history.steps.length} steps.`);
  updateButtons();
}

function record(report, seconds) {
  const h = history;
  h.steps.push(report.step);
  h.losses.push(report.loss);
  const smooth = (series, value) => series.push(series.length ? 0.9 * series.at(-1) + 0.1 * value : value);
  smooth(h.smoothLoss, report.loss);
  smooth(h.smoothTrain, report.correct / report.batch);
  h.speed.push({ images: report.batch, seconds });
  if (h.speed.length > SPEED_WINDOW) h.speed.shift();
  h.epoch = report.epoch;
  h.lastTrain = report.correct / report.batch;
}

async function evaluate(mine) {
  const result = await serial(() => (generation === mine ? demo.evaluate() : null));
  if (result === null) return;
  const e = { loss: result.loss, accuracy: result.accuracy, images: result.images, predictions: result.predictions };
  result.free();
  history.tests.push({ step: history.steps.at(-1), accuracy: e.accuracy });
  autotestLog(`test accuracy ${e.accuracy.toFixed(3)} on ${e.images} images`);
  drawGrid(e);
}

async function finishAutotest() {
  // The page as a user would find it once training pauses, before the test driver reads it.
  showStats();
  updateButtons();
  const losses = history.losses;
  const k = Math.min(5, Math.floor(losses.length / 2));
  const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const first = mean(losses.slice(0, k));
  const last = mean(losses.slice(-k));
  const bytes = await serial(() => demo.weights());
  // What the download button would save, kept for the test driver to check.
  window.cenetAutotestWeights = bytes;
  autotestLog(`weights ${bytes.length} bytes`);
  const finite = losses.every(Number.isFinite);
  if (finite && last < 0.9 * first && bytes.length > 0) {
    autotestLog(`PASS loss fell from ${first.toFixed(4)} to ${last.toFixed(4)} in ${losses.length} steps`);
  } else {
    autotestLog(`FAIL loss went from ${first.toFixed(4)} to ${last.toFixed(4)} in ${losses.length} steps`);
  }
}

// --- Drawing ----------------------------------------------------------------------------------

function showStats() {
  const h = history;
  const n = h.steps.length;
  $("stat-step").textContent = n ? h.steps.at(-1) : 0;
  $("stat-epoch").textContent = (h.epoch || 0).toFixed(2);
  $("stat-loss").textContent = n ? h.smoothLoss.at(-1).toFixed(3) : "–";
  $("stat-train").textContent = n ? `${(100 * h.smoothTrain.at(-1)).toFixed(1)} %` : "–";
  const test = h.tests.at(-1);
  $("stat-test").textContent = test ? `${(100 * test.accuracy).toFixed(1)} %` : "–";
  const images = h.speed.reduce((a, s) => a + s.images, 0);
  const seconds = h.speed.reduce((a, s) => a + s.seconds, 0);
  $("stat-speed").textContent = seconds > 0 ? (images / seconds).toFixed(images / seconds < 10 ? 1 : 0) : "–";
}

let drawPending = false;
function scheduleDraw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    showStats();
    drawChart();
    updateButtons();
  });
}

function drawChart() {
  const canvas = $("chart");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);

  const h = history;
  const pad = { left: 44, right: 44, top: 10, bottom: 24 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const lastStep = Math.max(10, h.steps.at(-1) || 0);
  const maxLoss = Math.max(2.5, ...h.losses.slice(-500)) * 1.05;
  const x = (step) => pad.left + (step / lastStep) * plotW;
  const yLoss = (loss) => pad.top + plotH * (1 - Math.min(loss, maxLoss) / maxLoss);
  const yAcc = (acc) => pad.top + plotH * (1 - acc);

  // Axes and grid lines.
  g.font = "11px system-ui, sans-serif";
  g.strokeStyle = "#e5e7eb";
  g.fillStyle = "#6b7280";
  g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = pad.top + (plotH * i) / 4;
    g.beginPath();
    g.moveTo(pad.left, y);
    g.lineTo(pad.left + plotW, y);
    g.stroke();
    g.textAlign = "right";
    g.fillText((maxLoss * (1 - i / 4)).toFixed(1), pad.left - 6, y + 4);
    g.textAlign = "left";
    g.fillText(`${100 - 25 * i}%`, pad.left + plotW + 6, y + 4);
  }
  g.textAlign = "center";
  for (let i = 0; i <= 5; i++) {
    const step = Math.round((lastStep * i) / 5);
    g.fillText(String(step), x(step), height - 6);
  }
  g.save();
  g.translate(11, pad.top + plotH / 2);
  g.rotate(-Math.PI / 2);
  g.fillText("loss", 0, 0);
  g.restore();

  const line = (steps, values, y, colour, widthPx) => {
    if (values.length === 0) return;
    g.strokeStyle = colour;
    g.lineWidth = widthPx;
    g.beginPath();
    values.forEach((v, i) => (i ? g.lineTo(x(steps[i]), y(v)) : g.moveTo(x(steps[i]), y(v))));
    g.stroke();
  };
  g.fillStyle = "rgba(37, 99, 235, 0.25)";
  h.losses.forEach((loss, i) => g.fillRect(x(h.steps[i]) - 1, yLoss(loss) - 1, 2, 2));
  line(h.steps, h.smoothLoss, yLoss, "#2563eb", 2);
  line(h.steps, h.smoothTrain, yAcc, "#ea580c", 2);
  const testSteps = h.tests.map((t) => t.step);
  line(testSteps, h.tests.map((t) => t.accuracy), yAcc, "#16a34a", 2);
  g.fillStyle = "#16a34a";
  for (const t of h.tests) {
    g.beginPath();
    g.arc(x(t.step), yAcc(t.accuracy), 3, 0, 2 * Math.PI);
    g.fill();
  }
}

function drawGrid(evaluation) {
  const box = $("grid");
  box.replaceChildren();
  const count = grid.labels.length;
  let right = 0;
  for (let i = 0; i < count; i++) {
    const figure = document.createElement("figure");
    const canvas = document.createElement("canvas");
    canvas.width = 32;
    canvas.height = 32;
    const pixels = new ImageData(new Uint8ClampedArray(grid.rgba.subarray(i * 4096, (i + 1) * 4096)), 32, 32);
    canvas.getContext("2d").putImageData(pixels, 0, 0);
    const caption = document.createElement("figcaption");
    const truth = grid.class_names[grid.labels[i]];
    const predicted = document.createElement("div");
    if (evaluation) {
      const p = evaluation.predictions[i];
      const ok = p === grid.labels[i];
      right += ok ? 1 : 0;
      predicted.className = `predicted ${ok ? "right" : "wrong"}`;
      predicted.textContent = `${ok ? "✓" : "✗"} ${grid.class_names[p]}`;
    } else {
      predicted.className = "predicted";
      predicted.textContent = "?";
    }
    const label = document.createElement("div");
    label.className = "truth";
    label.textContent = `true: ${truth}`;
    caption.append(predicted, label);
    figure.append(canvas, caption);
    box.append(figure);
  }
  $("grid-caption").textContent = evaluation
    ? `${right} of ${count} right at step ${history.steps.at(-1)}; test accuracy on ${evaluation.images} images: ${(100 * evaluation.accuracy).toFixed(1)} %`
    : "predictions appear after the first evaluation";
}

main().catch(fail);
