// node_check.mjs — drives web/odin.js under node for tests/test_wasm_node.py.
// usage: node node_check.mjs SPEC.json   (prints one JSON object with the results)
import { readFile } from 'node:fs/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';

const spec = JSON.parse(await readFile(process.argv[2], 'utf8'));
const { loadModel, loadOdin, makeTokenizer, makeRng, estimateMemory, ARCHS } = await import(pathToFileURL(spec.runtime).href);

// fetch for file:// URLs (node's fetch only speaks http)
async function fileFetch(url) {
  const u = new URL(url);
  if (u.protocol !== 'file:') return fetch(url);
  try {
    const data = await readFile(fileURLToPath(u));
    const type = u.pathname.endsWith('.wasm') ? 'application/wasm' : u.pathname.endsWith('.json') ? 'application/json' : 'application/octet-stream';
    return new Response(data, { headers: { 'content-length': String(data.length), 'content-type': type } });
  } catch {
    return new Response(null, { status: 404 });
  }
}

const out = {};
const progress = [];
const odin = await loadOdin({ baseUrl: pathToFileURL(spec.wasm_dir + '/'), variant: spec.variant, fetch: fileFetch });
out.isa = odin.isa();
out.version = odin.version();
if (spec.model_dir) {
  const model = await loadModel(pathToFileURL(spec.model_dir + '/').href, {
    odin, fetch: fileFetch, onProgress: (p) => progress.push(p.phase),
  });
  out.phases = [...new Set(progress)];
  out.arch = model.arch;
  out.describe = model.describe();
  out.max_length = model.maxLength === Infinity ? null : model.maxLength;
  out.n_params = model.nParams;
  out.from_cache = model.loadInfo.fromCache;
  out.greedy = [];
  for (const p of spec.prompts ?? []) out.greedy.push(await model.greedy(model.encodePrompt(p), spec.max_new));
  if (spec.greedy_ids) out.greedy_ids = await model.greedy(spec.greedy_ids, spec.max_new);
  if (spec.logits_prompts) { // next-token logits after each prompt (token ids), as base64 float32
    out.logits = [];
    for (const ids of spec.logits_prompts) {
      const l = await model.logits(ids);
      out.logits.push(Buffer.from(l.buffer, l.byteOffset, l.byteLength).toString('base64'));
    }
  }
  out.quant = model.quant;
  out.c_qbytes = odin.x[ARCHS[model.arch].q.qbytes](model.h) >>> 0; // what the C model holds
  out.c_float_params = model.nParams;
  out.estimate_loaded = estimateMemory({ ...model.config, n_params: model.nWeights, quant: model.quant }, { cacheBatch: 0, training: false });
  out.weight_format = model.weightFormat();
  out.weight_sizes = model.weightSizes;
  out.can_train = model.canTrain;
  out.n_weights = model.nWeights;
  if (spec.try_train) { // a quantized model refuses to train (and to take random weights), in one line
    out.refused_train = {};
    for (const [name, call] of [['trainStep', () => model.trainStep(spec.try_train, { batchSize: 2 })],
      ['randomizeWeights', () => model.randomizeWeights(3)]]) {
      const before = odin.memoryBytes();
      try { call(); out.refused_train[name] = null; } catch (e) {
        out.refused_train[name] = { name: e.name, status: e.status, message: e.message, grew: odin.memoryBytes() - before };
      }
    }
    out.restored = (() => { try { model.restoreWeights(); return true; } catch (e) { return e.message; } })();
    out.after_refusal = await model.greedy(spec.greedy_ids ?? model.encodePrompt(spec.prompts[0]), spec.max_new);
  }
  if (spec.sample) {
    const s = spec.sample;
    const r = await model.generate(s.prompt, { temperature: s.temperature, topK: s.top_k, topP: s.top_p, seed: s.seed,
      maxTokens: s.max_new, stop: [] });
    out.sampled = r.tokens;
    out.sampled_text = r.text;
    out.sampled_stats = r.stats;
  }
  if (spec.concurrent) { // generations on one model at once: each must get what it gets alone
    const opts = (r) => ({ temperature: r.temperature, topK: r.top_k, topP: r.top_p, seed: r.seed, maxTokens: r.max_new, stop: [] });
    const runs = spec.concurrent;
    out.alone = [];
    for (const r of runs) out.alone.push((await model.generate(r.prompt, opts(r))).tokens);
    const together = await Promise.all(runs.map((r) => model.generate(r.prompt, opts(r))));
    out.together = together.map((g) => g.tokens);
    out.together_stats = together.map((g) => g.stats);
    // streams driven by hand: the second waits for its turn until the first ends
    const first = model.stream(runs[0].prompt, opts(runs[0])), second = model.stream(runs[1].prompt, opts(runs[1]));
    const firstTokens = [(await first.next()).value.token];
    let secondStarted = false;
    const secondFirst = second.next().then((r) => { secondStarted = true; return r; });
    out.refused = {};
    for (const [name, call] of [['trainStep', () => model.trainStep(spec.train_examples, { batchSize: 2 })],
      ['randomizeWeights', () => model.randomizeWeights(3)], ['restoreWeights', () => model.restoreWeights()],
      ['free', () => model.free()]]) {
      try { call(); out.refused[name] = null; } catch (e) { out.refused[name] = `${e.name}: ${e.message}`; }
    }
    for (let r = await first.next(); !r.done; r = await first.next()) {
      firstTokens.push(r.value.token);
      if (secondStarted) out.second_ran_early = true;
    }
    const secondTokens = [(await secondFirst).value.token];
    for await (const t of second) secondTokens.push(t.token);
    out.by_hand = [firstTokens, secondTokens];
    // a stream left early (break) hands the turn on; then the model trains again
    for await (const t of model.stream(runs[0].prompt, opts(runs[0]))) { if (t.index === 1) break; }
    out.after_break = (await model.generate(runs[1].prompt, opts(runs[1]))).tokens;
    out.train_after = Number.isFinite(model.trainStep(spec.train_examples, { batchSize: 2 }).loss);
  }
  if (spec.train_examples) {
    const b = model.makeBatch(spec.train_examples);
    out.batch = { tokens: Array.from(b.tokens), mask: Array.from(b.mask), B: b.B, T: b.T };
    out.train = [];
    for (let i = 0; i < (spec.train_steps ?? 1); i++) {
      const r = model.trainStep(b, spec.train_options ?? {});
      out.train.push({ loss: r.loss, grad_norm: r.gradNorm, step: r.step });
    }
  }
  if (spec.randomize) { // fresh weights (the runtime's own init), then learn from them
    const r = spec.randomize;
    model.randomizeWeights(r.seed);
    const p = model.params();
    out.random_params = Buffer.from(p.buffer, p.byteOffset, p.byteLength).toString('base64');
    const rng = makeRng(7);
    out.random_losses = [];
    for (let i = 0; i < r.steps; i++) out.random_losses.push(model.trainStep(spec.train_examples, { batchSize: r.batch_size, lr: r.lr, rng }).loss);
  }
  if (spec.size_checks) { // heap taken by one workspace / generation state vs the ARCHS formulas
    const x = odin.x, heap = () => x.odin_wasm_heap_in_use(), arch = ARCHS[model.arch];
    out.sizes = [];
    for (const [B, T] of spec.size_checks) {
      for (const [what, create, free, floats] of [['ws', 'wsCreate', 'wsFree', arch.workspaceFloats(model.config, B, T)],
        ['gen', 'genCreate', 'genFree', arch.generationFloats(model.config, B)]]) {
        const h0 = heap();
        odin.check(what === 'ws' ? model._c(create, model.scratch, model.h, B, T) : model._c(create, model.scratch, model.h, B), create);
        const handle = odin.u32(model.scratch, 1)[0];
        out.sizes.push({ what, B, T, heap: heap() - h0, formula: floats * 4 });
        model._c(free, handle);
      }
    }
  }
  out.state_bytes = model.generationStateBytes();
  out.memory_bytes = model.memoryBytes();
  out.planned_bytes = model.plannedBytes;
  out.heap_in_use = odin.x.odin_wasm_heap_in_use();
  // the estimate for what was actually made: the workspace's shape, one generation state
  out.estimate_used = estimateMemory({ ...model.config, n_params: model.nWeights, quant: model.quant },
    { batch: model.wsShape[0], seq: model.wsShape[1], cacheBatch: model.gen ? 1 : 0, training: model.trained });
  out.trained = model.trained;
  model.free();
  out.heap_after_free = odin.x.odin_wasm_heap_in_use();
}
if (spec.tokenizer_cases) {
  out.tokenize = spec.tokenizer_cases.map((c) => {
    const tok = makeTokenizer(c.tokenizer);
    return c.texts.map((t) => { const ids = tok.encode(t); return [ids, tok.decode(ids), tok.decode(ids, false)]; });
  });
}
console.log(JSON.stringify(out));
