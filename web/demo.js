// demo.js — the demo page: load an exported model, stream answers, train in the page.
// Query parameters: ?model=URL (default model/), ?variant=simd128|scalar, ?cache=0 (skip IndexedDB).
import { loadModel, weightCache, OdinError } from './odin.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const MODEL_URL = params.get('model') || 'model/';
const VARIANT = params.get('variant') || 'auto';
const USE_CACHE = params.get('cache') !== '0';
const MiB = 1024 * 1024;

let model = null;
let busy = false;
let stopTraining = false;
const losses = [];

function showError(err) {
  console.error(err);
  $('error').textContent = String(err?.message ?? err);
}

// Generation speed in two parts: one short answer is mostly prefill (the prompt), so a single
// tokens/s over both would say little about either. A rate is shown only where time was measured.
function fmtStats(s, final) {
  const ms = (v) => (v < 10 ? v.toFixed(2) : v.toFixed(1));
  const rate = s.decodeTokensPerSecond;
  return `prefill: ${s.promptTokens} prompt tokens in ${ms(s.prefillMs)} ms · decode: ${s.decodeTokens} tokens in `
    + `${ms(s.decodeMs)} ms, ${rate === null ? '—' : Math.round(rate).toLocaleString('en-US')} tokens/s`
    + (final ? ` (${s.newTokens} tokens generated)` : '');
}

function fmtBytes(n) { return n >= MiB ? `${(n / MiB).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`; }

// answers trained least-significant digit first are shown in normal order
// (odin.data.arithmetic.answer_to_display)
function toDisplay(answer) {
  return model?.manifest.task?.reverse_answer ? answer.replace(/[0-9]+/g, (r) => [...r].reverse().join('')) : answer;
}

function expectedAnswer(prompt) {
  const m = /^(\d+)([+\-*/])(\d+)=$/.exec(prompt.trim());
  if (!m) return null;
  const a = BigInt(m[1]), b = BigInt(m[3]);
  switch (m[2]) {
    case '+': return String(a + b);
    case '-': return String(a - b);
    case '*': return String(a * b);
    case '/': return b === 0n ? null : `${a / b}r${a % b}`;
    default: return null;
  }
}

function updateMemory() {
  if (!model) return;
  const state = model.arch === 'rwkv'
    ? `recurrent state ${fmtBytes(model.generationStateBytes())}, the same at any length`
    : `KV cache ${fmtBytes(model.generationStateBytes())} for the ${model.context}-token context`;
  const w = model.weightSizes;
  const weights = model.quant
    ? `weights ${fmtBytes(w.bytes)}: ${model.weightFormat()} blocks ${fmtBytes(w.quantBytes)} + float32 ${fmtBytes(w.floatBytes)}`
    : `weights ${fmtBytes(w.bytes)} float32`;
  $('memory').textContent = `wasm memory: ${fmtBytes(model.memoryBytes())} (planned for this model: ${fmtBytes(model.plannedBytes)}; `
    + `${weights}; generation: ${state})`;
  $('memory').dataset.bytes = String(model.memoryBytes());
}

async function load() {
  const phaseNames = { manifest: 'fetching model.json', cache: 'looking in the IndexedDB cache', download: 'downloading weights',
    verify: 'checking sha256', wasm: 'compiling the wasm module', init: 'loading weights into wasm memory', ready: 'ready' };
  const onProgress = (p) => {
    $('load-phase').textContent = phaseNames[p.phase] ?? p.phase;
    if (p.total) { $('load-progress').max = p.total; $('load-progress').value = p.loaded; }
    $('load-detail').textContent = p.total ? `${fmtBytes(p.loaded)} / ${fmtBytes(p.total)}` : '';
  };
  model = await loadModel(MODEL_URL, { onProgress, variant: VARIANT, cache: USE_CACHE });
  const { odin, manifest, config } = model;
  const info = model.loadInfo;
  $('load-phase').textContent = 'ready';
  $('load-progress').max = 1; $('load-progress').value = 1;
  $('load-detail').textContent = info.fromCache ? `weights from the IndexedDB cache (${fmtBytes(info.bytes)}, no download)`
    : `downloaded ${fmtBytes(info.bytes)}`;
  $('load-detail').dataset.fromCache = String(info.fromCache);
  $('arch').textContent = model.impl.label;
  $('arch').dataset.arch = model.arch;
  $('arch').title = model.arch === 'rwkv'
    ? 'RWKV-4: a recurrent model. Generation carries a fixed-size state, so every token costs the same and there is no context limit.'
    : 'GPT: a transformer. Generation keeps a KV cache that grows with the sequence, up to the context length.';
  $('wformat').textContent = model.weightFormat();
  $('wformat').dataset.quant = String(!!model.quant);
  $('wformat').title = model.quant
    ? `weights in llama.cpp's ${model.quant.matrix} blocks (matrices) and ${model.quant.embed} (token embedding / output head), `
      + 'vectors float32: the page answers with them but does not train them'
    : 'float32 weights: the page answers and trains';
  $('engine').textContent = `ODIN ${odin.version()} · wasm ${odin.variant} · kernels ${odin.isa()} · `
    + `${model.nWeights.toLocaleString()} parameters (${model.describe()}) · weights ${model.weightFormat()} · `
    + `${model.tokenizer.kind} tokenizer · loaded in ${info.seconds.toFixed(2)} s`;
  if (model.maxLength === Infinity) $('maxtokens').removeAttribute('max');
  else $('maxtokens').max = String(model.maxLength);
  // room for the task's answers: a program's trace runs to a few hundred tokens, the
  // default 32 would cut it off (a quarter more than the longest exported answer)
  const longest = Math.max(0, ...(manifest.examples ?? []).map((e) => model.tokenizer.encode(e.answer).length + 1));
  const room = Math.min(model.maxLength, Math.ceil(longest * 1.25));
  if (room > Number($('maxtokens').value)) $('maxtokens').value = String(room);
  const chips = $('chips');
  for (const p of manifest.demo_prompts ?? []) {
    const b = document.createElement('button');
    b.textContent = p.replace(/\n/g, ' ⏎ ');  // a program's lines on one chip
    b.title = p;
    b.onclick = () => { setPrompt(p); solve(); };
    chips.append(b);
  }
  if (manifest.demo_prompts?.length) setPrompt(manifest.demo_prompts[0]);
  $('lr').value = '0.0001'; // a trained model: small steps (fresh AdamW moves every weight by ~lr at first)
  $('solve').disabled = false;
  $('train-btn').disabled = !(manifest.examples?.length) || !model.canTrain;
  $('random-btn').disabled = $('restore-btn').disabled = !model.canTrain;
  if (!model.canTrain) {
    $('train-stats').textContent = `a quantized model (${model.weightFormat()}) answers but does not train: `
      + 'export the checkpoint without --quant to train it here';
  } else if (!manifest.examples?.length) {
    $('train-stats').textContent = 'this export has no training examples (odin export web --examples N)';
  }
  updateMemory();
  drawPlot();
}

// The prompt box grows with its text: programs (the code recipe's prompts) have lines.
function fitPrompt() {
  const lines = $('prompt').value.split('\n');
  $('prompt').rows = Math.min(12, lines.length);
  $('prompt').cols = Math.min(72, Math.max(20, ...lines.map((l) => l.length + 1)));
}

function setPrompt(text) {
  $('prompt').value = text;
  fitPrompt();
}

async function solve(promptText) {
  if (!model || busy) return null;
  busy = true;
  $('solve').disabled = true;
  const prompt = promptText ?? $('prompt').value;
  $('answer').textContent = '';
  $('raw').textContent = '';
  try {
    let raw = '';
    const opts = {
      temperature: Number($('temperature').value), topK: Number($('topk').value), topP: Number($('topp').value),
      maxTokens: Number($('maxtokens').value), seed: Number($('seed').value),
    };
    const tokens = [];
    let s = null;
    for await (const t of model.stream(prompt, opts)) {
      tokens.push(t.token);
      raw += t.text;
      $('raw').textContent = `model output: ${raw}${t.token === model.special.end ? ' <end>' : ''}`;
      $('answer').textContent = prompt + toDisplay(raw);
      $('gen-stats').textContent = fmtStats(t.stats, false);
      s = t.stats;
    }
    const want = expectedAnswer(prompt);
    const shown = toDisplay(raw);
    const verdict = want === null ? '' : shown === want ? ' ✓' : ` ✗ (expected ${want})`;
    $('answer').innerHTML = '';
    $('answer').append(prompt + shown);
    if (verdict) {
      const v = document.createElement('span');
      v.className = shown === want ? 'ok' : 'bad';
      v.textContent = verdict;
      $('answer').append(v);
    }
    if (s) $('gen-stats').textContent = fmtStats(s, true);
    updateMemory();
    return { prompt, raw, display: shown, expected: want, correct: want === null ? null : shown === want, tokens, stats: s };
  } catch (err) {
    showError(err);
    throw err;
  } finally {
    busy = false;
    $('solve').disabled = false;
  }
}

function drawPlot() {
  const c = $('plot');
  const dpr = window.devicePixelRatio || 1;
  const W = c.clientWidth || 880, H = c.clientHeight || 220;
  c.width = W * dpr; c.height = H * dpr;
  const g = c.getContext('2d');
  g.scale(dpr, dpr);
  g.clearRect(0, 0, W, H);
  g.font = '12px system-ui, sans-serif';
  g.fillStyle = '#667085';
  const L = 48, R = 12, T = 12, B = 26;
  if (!losses.length) { g.fillText('loss per step appears here', L, H / 2); return; }
  const lo = Math.min(...losses), hi = Math.max(...losses);
  const span = hi - lo || Math.max(hi, 1e-3);
  const y = (v) => T + (H - T - B) * (1 - (v - lo) / span);
  const x = (i) => L + (W - L - R) * (losses.length === 1 ? 0.5 : i / (losses.length - 1));
  g.strokeStyle = '#d0d5dd';
  g.beginPath(); g.moveTo(L, T); g.lineTo(L, H - B); g.lineTo(W - R, H - B); g.stroke();
  g.fillText(hi.toPrecision(3), 4, T + 8);
  g.fillText(lo.toPrecision(3), 4, H - B);
  g.fillText(`step ${losses.length}`, W - R - 60, H - 8);
  g.fillText('loss', L + 4, T + 10);
  g.strokeStyle = '#2f6fde';
  g.lineWidth = 2;
  g.beginPath();
  losses.forEach((v, i) => (i ? g.lineTo(x(i), y(v)) : g.moveTo(x(i), y(v))));
  g.stroke();
}

async function train(nSteps) {
  if (!model || busy) return null;
  busy = true;
  stopTraining = false;
  $('train-btn').disabled = true; $('solve').disabled = true; $('stop-btn').disabled = false;
  const n = nSteps ?? Number($('steps').value);
  const batchSize = Number($('batch').value), lr = Number($('lr').value);
  const out = [];
  try {
    let tokens = 0, ms = 0;
    for (let i = 0; i < n && !stopTraining; i++) {
      const r = model.trainStep(model.manifest.examples, { batchSize, lr });
      if (!Number.isFinite(r.loss)) throw new OdinError(`loss is not finite at step ${r.step}`, 4);
      losses.push(r.loss);
      out.push(r);
      tokens += r.tokens; ms += r.ms;
      $('train-stats').textContent = `step ${r.step}: loss ${r.loss.toFixed(4)} · grad norm ${r.gradNorm.toFixed(3)} · `
        + `${(r.ms).toFixed(1)} ms/step · ${(tokens / (ms / 1000)).toFixed(0)} tokens/s (forward + backward + AdamW)`;
      drawPlot();
      await new Promise((resolve) => setTimeout(resolve, 0)); // let the page paint
    }
    updateMemory();
    return out;
  } catch (err) {
    showError(err);
    throw err;
  } finally {
    busy = false;
    $('train-btn').disabled = !model.canTrain; $('solve').disabled = false; $('stop-btn').disabled = true;
  }
}

$('solve').onclick = () => solve().catch(() => {});
$('prompt').addEventListener('keydown', (e) => {
  if (e.key !== 'Enter' || e.shiftKey) return;  // Shift+Enter: a new line of the prompt
  e.preventDefault();
  solve().catch(() => {});
});
$('prompt').addEventListener('input', fitPrompt);
$('train-btn').onclick = () => train().catch(() => {});
$('stop-btn').onclick = () => { stopTraining = true; };
$('steps').oninput = () => { $('train-btn').textContent = `Train ${$('steps').value} steps here`; };
function resetPlot(state) {
  losses.length = 0;
  drawPlot();
  $('train-stats').textContent = '';
  $('weights-state').textContent = `weights: ${state}`;
}
$('random-btn').onclick = () => {
  if (busy || !model) return;
  model.randomizeWeights(Date.now() % 100000);
  $('lr').value = String(model.manifest.train?.lr ?? 1e-3); // the run's learning rate, from scratch
  resetPlot('random (untrained): the answers are noise until it has trained a few hundred steps');
};
$('restore-btn').onclick = () => {
  if (busy || !model) return;
  model.restoreWeights();
  $('lr').value = '0.0001';
  resetPlot('as exported');
};
$('clear-cache').onclick = async () => { await weightCache.clear(); $('clear-cache').textContent = 'cache cleared'; };

const ready = load().catch((err) => {
  showError(err);
  if (/model\.json: HTTP 404/.test(String(err?.message))) {
    $('error').textContent += `\nNo exported model at ${MODEL_URL}: train one (odin train), export it with `
      + '`odin export web runs/arith-3digit/checkpoint web/model` and restart `odin serve-web` (or pass --model DIR).';
  }
  $('load-phase').textContent = 'failed';
  throw err;
});

// for scripted use and the end-to-end test (tests/test_wasm_browser.py)
window.odinDemo = { ready, solve, train, get model() { return model; }, losses };
