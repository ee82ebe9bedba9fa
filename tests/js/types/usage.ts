// usage.ts — uses every part of web/odin.js's API the way a TypeScript program would, so that
// `tsc --noEmit --strict` (tests/test_web_types.py) checks web/odin.d.ts: it must compile, and
// each @ts-expect-error line must be an error (a declaration loosened to `any` would not be).
import {
  ARCHS, BPETokenizer, CharTokenizer, estimateMemory, loadModel, loadOdin, makeRng, makeTokenizer, Odin, OdinError,
  OdinModel, QUANT_TYPES, simdSupported, weightBytes, weightCache,
} from '../../../web/odin.js';
import type {
  Batch, GeneratedToken, GenerationResult, GenerationStats, LoadProgress, ModelManifest, QuantInfo, QuantTypes, Tokenizer,
  TrainStepResult, WeightSizes, WeightType,
} from '../../../web/odin.js';

export async function demo(url: string, signal: AbortSignal): Promise<string> {
  const simd: boolean = simdSupported();
  const odin: Odin = await loadOdin({ variant: simd ? 'simd128' : 'scalar', isa: 'scalar' });
  const isa: string = odin.isa();
  const phases: string[] = [];
  const model: OdinModel = await loadModel(url, {
    odin, cache: false, trainBatch: 8, onProgress: (p: LoadProgress) => { phases.push(`${p.phase} ${p.loaded}/${p.total}`); },
  });
  const manifest: ModelManifest = model.manifest;
  const demoPrompt: string = manifest.demo_prompts?.[0] ?? '1+2=';

  // streaming, with the speed in two parts
  let answer = '';
  let last: GenerationStats | null = null;
  for await (const t of model.stream(demoPrompt, { temperature: 0.8, topK: 40, topP: 0.95, seed: 1, maxTokens: 16, signal })) {
    const piece: GeneratedToken = t;
    answer += piece.text;
    last = piece.stats;
  }
  const prefill: string = last ? `${last.promptTokens} tokens in ${last.prefillMs.toFixed(2)} ms` : '';
  const rate: number | null = last ? last.decodeTokensPerSecond : null;

  // whole answers, several at once: they take turns on one model
  const [a, b]: GenerationResult[] = await Promise.all([
    model.generate('12+34=', { stop: [model.special.end], onToken: (t) => { void t.index; } }),
    model.generate(model.encodePrompt('7+8='), { stopStrings: ['\n'] }),
  ]);
  const decodeMs: number = a.stats.decodeMs + b.stats.decodeMs;
  const greedy: number[] = await model.greedy(model.encodePrompt('1+1='), 4);
  const logits: Float32Array = await model.logits('1+1=');
  const scored: Float32Array[] = await model.logits([1, 5, 6], { all: true });

  // quantized weights: the export's block types, their sizes; such a model answers only
  const quant: QuantInfo | null | undefined = manifest.quant;
  const types: QuantTypes | null = model.quant;
  const format: string = model.weightFormat();
  const sizes: WeightSizes = model.weightSizes;
  const q4: WeightSizes = weightBytes(model.config, { matrix: 'q4_0', embed: 'q8_0' });
  const q8Id: number = QUANT_TYPES.q8_0;
  const firstType: WeightType | undefined = manifest.tensors[0]?.type;
  const planned: number = estimateMemory({ ...model.config, n_params: model.nWeights, quant: types }, { training: false });
  const trains: boolean = model.canTrain;

  // training in the page
  const batch: Batch = model.makeBatch([{ prompt: '1+2=', answer: '3' }]);
  const step: TrainStepResult = model.trainStep(batch, { lr: 1e-4, weightDecay: 0, gradClip: 1 });
  const drawn: TrainStepResult = model.trainStep(manifest.examples ?? [], { batchSize: 4, rng: makeRng(3) });
  model.randomizeWeights(7);
  model.restoreWeights();
  model.resetOptimizer();
  const weights: Float32Array = model.params();

  // tokenizers, memory, the cache, the architectures
  const tokenizer: Tokenizer = makeTokenizer(manifest.tokenizer);
  const ids: number[] = tokenizer.encode('hello');
  const text: string = tokenizer.decode(ids, false);
  const char = new CharTokenizer(['<pad>', '<bos>', '<end>', 'a']);
  const kind: 'char' = char.kind;
  if (tokenizer instanceof BPETokenizer) { const k: 'bpe' = tokenizer.kind; void k; }
  const bytes: number = estimateMemory(model.config, { batch: 16, seq: 32, cacheBatch: 1 });
  const gptParams: number = ARCHS.gpt.numParams(model.config);
  await weightCache.clear();
  const generating: boolean = model.generating;

  try {
    model.free();
  } catch (error) {
    if (error instanceof OdinError) { const code: number = error.status; void code; throw error; }
  }
  // @ts-expect-error temperature is a number
  void model.stream('1+2=', { temperature: 'hot' });
  // @ts-expect-error the stats have no single tokens/s over prefill and decode
  void (last as GenerationStats).tokensPerSecond;
  // @ts-expect-error generate() takes a prompt
  void model.generate();
  // @ts-expect-error not a block type
  void weightBytes(model.config, { matrix: 'q3_k', embed: 'q8_0' });
  // @ts-expect-error an unknown load phase
  const phase: LoadProgress['phase'] = 'compiling';
  void phase;
  return [isa, phases.join(), answer, prefill, rate, decodeMs, greedy, step.loss, drawn.gradNorm, weights.length,
    text, kind, bytes, gptParams, generating, logits.length, scored.length, quant?.source, format, sizes.quantBytes, q4.bytes, q8Id,
    firstType, planned, trains].join(' ');
}
