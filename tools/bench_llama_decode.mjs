// bench_llama_decode.mjs — llama.cpp's batch-1 decode speed on a GGUF file, through the
// prebuilt CPU binaries of node-llama-cpp in tests/js/llama/node_modules (install them with
// `cd tests/js/llama && npm ci --omit=optional --ignore-scripts`), for comparing ODIN and
// llama.cpp on the same file at the same thread count. Not a test.
//
//   node tools/bench_llama_decode.mjs MODEL.gguf [--threads T] [--tokens N] [--prompt TEXT]
//        [--repeat R] [--kv f16|f32] [--flash-attention auto|on|off]
//
// After a warm-up, R times (default 3): clear the sequence, evaluate <bos> + the prompt
// (default "1"), then generate N tokens greedily (default 128), never stopping at an
// end-of-generation token. Decode time runs from the first generated token to the N+1-th, so
// it holds exactly N single-token decode steps (each with its greedy sampling over the
// vocabulary) and no prompt processing. Prints one JSON line on stdout:
//   {"tokens_per_s": best of the R runs, "threads": T, "n": N, "runs": [...], ...}
// The KV cache and flash attention are llama.cpp's defaults (an f16 cache, flash attention as
// the build decides) unless asked otherwise; ODIN keeps its cache in f32 (--kv f32 for that).
import fs from "node:fs";
import os from "node:os";

const args = process.argv.slice(2);
function option(name, fallback, parse = Number) {
    const i = args.indexOf(name);
    if (i < 0) return fallback;
    if (i + 1 >= args.length) fail(`${name} needs a value`);
    const value = parse(args[i + 1]);
    args.splice(i, 2);
    return value;
}
function fail(message) {
    console.error(`bench_llama_decode: error: ${message}`);
    process.exit(2);
}

const threads = option("--threads", Math.min(4, os.availableParallelism()));
const n = option("--tokens", 128);
const repeat = option("--repeat", 3);
const promptText = option("--prompt", "1", String);
const kv = option("--kv", "f16", String).toLowerCase();
const flash = option("--flash-attention", "auto", String).toLowerCase();
if (args.length !== 1 || args[0].startsWith("--")) {
    fail("usage: node tools/bench_llama_decode.mjs MODEL.gguf [--threads T] [--tokens N] [--prompt TEXT] " +
         "[--repeat R] [--kv f16|f32] [--flash-attention auto|on|off]");
}
const modelPath = args[0];
for (const [name, value] of [["--threads", threads], ["--tokens", n], ["--repeat", repeat]]) {
    if (!Number.isInteger(value) || value < 1) fail(`${name} must be a positive integer, got ${value}`);
}
if (!["f16", "f32"].includes(kv)) fail(`--kv must be f16 or f32, got ${kv}`);
if (!["auto", "on", "off"].includes(flash)) fail(`--flash-attention must be auto, on or off, got ${flash}`);
if (!fs.existsSync(modelPath)) fail(`${modelPath}: no such file`);

const lib = new URL("../tests/js/llama/node_modules/node-llama-cpp/dist/index.js", import.meta.url);
if (!fs.existsSync(lib)) {
    fail("node-llama-cpp is not installed: cd tests/js/llama && npm ci --omit=optional --ignore-scripts");
}
const {getLlama, LlamaLogLevel} = await import(lib.href);

// nothing is built or downloaded: the installed prebuilt CPU binaries, up to `threads` threads
const llama = await getLlama({
    gpu: false, build: "never", skipDownload: true, usePrebuiltBinaries: true,
    progressLogs: false, logLevel: LlamaLogLevel.error, maxThreads: threads,
});
const model = await llama.loadModel({modelPath, gpuLayers: 0});
const bos = model.tokens.bos;
const promptIds = [...(bos == null ? [] : [bos]), ...model.tokenize(promptText, false)];
const slots = promptIds.length + n + 1;
if (slots > model.trainContextSize) {
    fail(`the prompt (${promptIds.length} tokens) and ${n} generated tokens do not fit the model's context ` +
         `(${model.trainContextSize})`);
}
const contextOptions = {contextSize: slots, batchSize: Math.max(promptIds.length, 1), threads};
if (flash !== "auto") contextOptions.flashAttention = flash === "on";
if (kv === "f32") Object.assign(contextOptions, {experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32"});
const context = await model.createContext(contextOptions);
const sequence = context.getSequence();

// one run: prefill, then `count` greedy decode steps timed from the first generated token
async function run(count) {
    await sequence.clearHistory();
    const stamps = [];
    const start = performance.now();
    for await (const token of sequence.evaluate(promptIds, {temperature: 0, yieldEogToken: true})) {
        stamps.push(performance.now());
        if (stamps.length > count) break;
    }
    const decode = (stamps[count] - stamps[0]) / 1000;
    return {prefill_s: (stamps[0] - start) / 1000, decode_s: decode, tokens_per_s: count / decode};
}

const load = os.loadavg()[0];
await run(Math.min(n, 8)); // warm-up: the weights paged in, llama.cpp's buffers made
const runs = [];
for (let r = 0; r < repeat; r++) runs.push(await run(n));
const best = runs.reduce((a, b) => (b.tokens_per_s > a.tokens_per_s ? b : a));
const round = (x, digits = 4) => Number(x.toPrecision(digits));
console.log(JSON.stringify({
    tokens_per_s: round(best.tokens_per_s), threads: context.idealThreads, n, model: modelPath,
    prompt_tokens: promptIds.length, kv_cache: kv, flash_attention: flash,
    runs: runs.map((x) => ({tokens_per_s: round(x.tokens_per_s), prefill_s: round(x.prefill_s)})),
    node_llama_cpp: JSON.parse(fs.readFileSync(new URL("../package.json", lib), "utf8")).version,
    llama_cpp_features: llama.systemInfo.trim(), cpu: os.cpus()[0]?.model ?? null,
    load_1m: round(load, 3), // the 1-minute load average before the runs: other work skews the numbers
}));
await context.dispose();
await model.dispose();
await llama.dispose();
