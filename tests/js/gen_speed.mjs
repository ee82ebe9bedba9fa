// gen_speed.mjs — generation speed of web/odin.js under node, for docs/wasm.md (not a test).
// usage: node tests/js/gen_speed.mjs EXPORT_DIR [EXPORT_DIR ...] [--tokens N] [--window W] [--repeat R]
// For each export: greedy generation of N tokens after "<bos>1" with no stop token, through
// OdinModel.stream() (what the page uses), after a warm-up; prints one JSON line per export
// with the overall tokens/s and the tokens/s of each W-token window (best of R runs).
import { readFile } from 'node:fs/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';

const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); if (i < 0) return dflt; const v = Number(args[i + 1]); args.splice(i, 2); return v; };
const N = opt('--tokens', 1024), W = opt('--window', 128), R = opt('--repeat', 3);
const here = new URL('../../web/', import.meta.url);
const { loadModel, loadOdin } = await import(new URL('odin.js', here).href);

async function fileFetch(url) {
  const u = new URL(url);
  const data = await readFile(fileURLToPath(u));
  const type = u.pathname.endsWith('.wasm') ? 'application/wasm' : 'application/octet-stream';
  return new Response(data, { headers: { 'content-length': String(data.length), 'content-type': type } });
}

for (const dir of args) {
  const odin = await loadOdin({ baseUrl: new URL('wasm/', here), fetch: fileFetch });
  const model = await loadModel(pathToFileURL(dir + '/').href, { odin, fetch: fileFetch });
  const prompt = [model.special.bos, ...model.tokenizer.encode('1')];
  const n = Math.min(N, model.maxLength - prompt.length + 1);
  const run = async () => {
    const stamps = [];
    const t0 = performance.now();
    for await (const t of model.stream(prompt, { maxTokens: n, temperature: 0, stop: [] })) stamps.push(performance.now());
    return { t0, stamps };
  };
  await run(); // warm-up: V8 tiers the module up
  let best = null;
  for (let r = 0; r < R; r++) {
    const { t0, stamps } = await run();
    const total = n / ((stamps.at(-1) - t0) / 1000);
    const windows = [];
    for (let s = 0; s + W <= stamps.length; s += W) {
      const start = s === 0 ? t0 : stamps[s - 1];
      windows.push(Math.round(W / ((stamps[s + W - 1] - start) / 1000)));
    }
    if (!best || total > best.total) best = { total, windows };
  }
  console.log(JSON.stringify({ dir, arch: model.arch, describe: model.describe(), n_params: model.nParams, tokens: n,
    isa: odin.isa(), tokens_per_s: Math.round(best.total), window: W, window_tokens_per_s: best.windows,
    state_bytes: model.generationStateBytes() }));
  model.free();
}
