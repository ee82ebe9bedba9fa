// llama.cpp (the prebuilt binaries of node-llama-cpp, CPU only) reads a GGUF file and
// generates greedily, for tests/test_interchange_gguf.py.
//
//   node llama_check.mjs SPEC.json
//
// SPEC: {"model": PATH, "context": N, "prompts": [STR], "probe": [STR], "top": N}
// Prints one JSON line: {"bos": ID, "eos": ID, "results": [{"text", "prompt_ids",
// "ids", "completion", "eog", "top"}], "probe": [[ids]]} where "top" holds, for every
// generated step, the [token, probability] pairs llama.cpp gives its most likely tokens.
// Never builds or downloads anything: build "never", skipDownload, the installed prebuilt.
import fs from "node:fs";
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const spec = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const llama = await getLlama({
    gpu: false, build: "never", skipDownload: true, usePrebuiltBinaries: true,
    progressLogs: false, logLevel: LlamaLogLevel.error,
});
const model = await llama.loadModel({modelPath: spec.model, gpuLayers: 0});
// one slot beyond the model's context: node-llama-cpp shifts the context (drops early tokens)
// before it fills the last slot, and no position past the model's is ever fed
// f32 keys and values and no flash attention: llama.cpp's defaults (an f16 cache, and on some
// CPUs an f16 attention kernel) round activations that ODIN keeps in f32, by an amount that
// differs per CPU; without them the comparison checks the file, not llama.cpp's rounding
const context = await model.createContext({
    contextSize: spec.context + 1, batchSize: spec.context + 1, threads: 1,
    flashAttention: false, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32",
});
const sequence = context.getSequence();
const bos = model.tokens.bos;

// the probabilities of every token after a softmax at temperature 1 (no top-k / top-p cut)
const fullDistribution = {temperature: 1, topK: 0, topP: 1, minP: 0, seed: 0};

const results = [];
for (const text of spec.prompts) {
    const promptIds = [bos, ...model.tokenize(text, false)];
    await sequence.clearHistory();
    // greedy generation (temperature 0) until an end-of-generation token or, as odin-infer,
    // until the token predicted from a full context (it is emitted, never fed)
    const max = spec.context + 1 - promptIds.length;
    const ids = [];
    let eog = false;
    for await (const token of sequence.evaluate(promptIds, {temperature: 0, yieldEogToken: true})) {
        if (model.isEogToken(token)) { eog = true; ids.push(token); break; }
        ids.push(token);
        if (ids.length >= max) break;
    }
    // the distribution at every generated step: replay prompt + generation, asking for the
    // next-token probabilities after each token from the last prompt token on
    await sequence.clearHistory();
    const replay = [...promptIds, ...ids.slice(0, -1)];
    const input = replay.map((token, i) => i < promptIds.length - 1 ? token
        : [token, {generateNext: {probabilities: true, options: fullDistribution}}]);
    const top = [];
    const evaluated = await sequence.controlledEvaluate(input);
    for (const item of evaluated) {
        if (item?.next?.probabilities == null) continue;
        top.push([...item.next.probabilities.entries()].slice(0, spec.top ?? 5));
    }
    results.push({text, prompt_ids: promptIds, ids, eog,
                  completion: model.detokenize(ids.filter((t) => !model.isEogToken(t))), top});
}
const probe = (spec.probe ?? []).map((text) => model.tokenize(text, false));
console.log(JSON.stringify({bos, eos: model.tokens.eos, results, probe}));
await context.dispose();
await model.dispose();
await llama.dispose();
