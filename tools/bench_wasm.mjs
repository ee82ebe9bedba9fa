// bench_wasm.mjs — kernel and GPT timings of the ODIN wasm modules in node (V8, the engine
// of Chromium). Driven by tools/bench_wasm.py, which passes the cases as JSON:
//   node tools/bench_wasm.mjs CASES.json   ->  one JSON object on stdout
// A case is {label, fn, args, flops}; an argument is a number, null, or an array spec
// {f32: n} / {u8: n} / {i32: [n, hi]} (uniform [0,1) floats, zero bytes, ints in [0, hi)).
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const spec = JSON.parse(await readFile(process.argv[2], 'utf8'));
const { loadOdin, OdinModel } = await import(path.join(here, '..', 'web', 'odin.js'));

function median(a) { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; }

function timeIt(fn, repeats, minMs) {
  fn(); fn(); // warm-up: V8 tiers up from Liftoff to TurboFan
  const per = [];
  for (let r = 0; r < repeats; r++) {
    let n = 0;
    const t0 = performance.now();
    let dt;
    do { fn(); n++; dt = performance.now() - t0; } while (dt < minMs);
    per.push(dt / n / 1000);
  }
  return median(per);
}

const result = { node: process.version, variants: {} };
for (const variant of spec.variants) {
  const odin = await loadOdin({ wasm: await readFile(path.join(spec.wasm_dir, `odin-${variant}.wasm`)) });
  const kernels = [];
  for (const c of spec.cases) {
    const ptrs = [];
    const args = c.args.map((a) => {
      if (a === null) return 0;
      if (typeof a === 'number') return a;
      if (a.f32 !== undefined) { const p = odin.malloc(4 * a.f32); odin.f32(p, a.f32).forEach((_, i, v) => { v[i] = Math.random(); }); ptrs.push(p); return p; }
      if (a.u8 !== undefined) { const p = odin.malloc(a.u8); odin.u8(p, a.u8).fill(0); ptrs.push(p); return p; }
      if (a.i32 !== undefined) { const [n, hi] = a.i32; const p = odin.malloc(4 * n); odin.i32(p, n).forEach((_, i, v) => { v[i] = Math.floor(Math.random() * hi); }); ptrs.push(p); return p; }
      throw new Error(`bad argument ${JSON.stringify(a)}`);
    });
    const f = odin.x[c.fn];
    const st = f(...args);
    if (st !== 0) throw new Error(`${variant} ${c.fn}: ${odin.lastError()}`);
    kernels.push({ label: c.label, seconds: timeIt(() => f(...args), spec.repeats, spec.min_ms) });
    for (const p of ptrs) odin.free(p);
  }
  // the GPT at the given shape, through the runtime's own API (OdinModel)
  const g = spec.gpt;
  const C = g.d_model, V = g.vocab_size, L = g.n_layer, T = g.context;
  const tensors = [];
  let off = 0;
  const add = (name, shape) => { tensors.push({ name, offset: off, shape }); off += shape.reduce((a, b) => a * b, 1); };
  add('wte', [V, C]); add('wpe', [T, C]);
  for (let l = 0; l < L; l++) {
    for (const [n, s] of [['ln1_w', [C]], ['ln1_b', [C]], ['qkv_w', [3 * C, C]], ['qkv_b', [3 * C]], ['attproj_w', [C, C]],
      ['attproj_b', [C]], ['ln2_w', [C]], ['ln2_b', [C]], ['fc_w', [4 * C, C]], ['fc_b', [4 * C]], ['fcproj_w', [C, 4 * C]], ['fcproj_b', [C]]]) add(`h.${l}.${n}`, s);
  }
  add('lnf_w', [C]); add('lnf_b', [C]);
  const vocab = ['<pad>', '<bos>', '<end>', ...Array.from({ length: V - 3 }, (_, i) => String.fromCodePoint(0x4e00 + i))];
  const manifest = { format: 'odin-web', model: { ...g, ln_eps: 1e-5, positions: 'learned', abacus: 0 }, n_params: off, tensors,
    tokenizer: { odin_kind: 'char', format_version: 1, vocab }, special: { pad: 0, bos: 1, end: 2 }, train: { lr: 1e-4 } };
  const model = new OdinModel(odin, manifest, new Float32Array(off), { trainBatch: g.batch });
  model.randomizeWeights(1);
  const Tt = g.seq, B = g.batch;
  const tokens = new Int32Array(B * (Tt + 1)).map(() => 3 + Math.floor(Math.random() * (V - 3)));
  const batch = { tokens, mask: new Uint8Array(B * Tt).fill(1), B, T: Tt };
  const train = timeIt(() => model.trainStep(batch, { lr: 1e-4 }), spec.repeats, spec.min_ms);
  const rates = [];
  for (let r = 0; r < spec.repeats; r++) {
    const out = await model.generate([1, 5], { temperature: 0, maxTokens: T - 2, stop: [] });
    rates.push(out.stats.tokensPerSecond);
  }
  result.variants[variant] = { isa: odin.isa(), kernels, gpt: { train_step_s: train, decode_tokens_per_s: median(rates) } };
  model.free();
}
console.log(JSON.stringify(result));
