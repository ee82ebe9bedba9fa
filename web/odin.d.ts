// odin.d.ts — TypeScript declarations for odin.js, the ODIN runtime for the browser and
// node >= 18 (an ES module). Every export of odin.js is declared here; tests/test_web_types.py
// checks that with the TypeScript compiler (tsc --noEmit --strict).
//
//   import { loadModel } from './odin.js';
//   const model = await loadModel('model/');
//   const { text, stats } = await model.generate('123+456=', { temperature: 0 });

/* ------------------------------------------------------------------ errors */

/** Status names of odin.h, by code (0 = OK). */
export type OdinStatusName =
  | 'OK' | 'BAD_SHAPE' | 'BAD_ARG' | 'NO_MEMORY' | 'NAN_DETECTED' | 'UNSUPPORTED_ISA' | 'IO' | 'STATE';

/** Every error the runtime throws: the C status (or -1 for a runtime-side error) and its name. */
export class OdinError extends Error {
  constructor(message: string, status?: number);
  readonly name: 'OdinError';
  /** odin.h status code: 1 BAD_SHAPE, 2 BAD_ARG, 3 NO_MEMORY, 4 NAN_DETECTED, 5 UNSUPPORTED_ISA, 6 IO, 7 STATE; -1 otherwise. */
  status: number;
  statusName: OdinStatusName | string;
}

/* ------------------------------------------------------------------ the wasm module */

/** Whether this engine validates WebAssembly SIMD128 code. */
export function simdSupported(): boolean;

/** A fetch function: the global fetch, or one that serves file:// URLs in node. */
export type FetchFunction = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

export type WasmVariant = 'simd128' | 'scalar';

export interface LoadOdinOptions {
  /** Directory of odin-*.wasm (default: ./wasm/ next to odin.js). */
  baseUrl?: string | URL;
  /** Which build; 'auto' (default) picks simd128 where the engine has SIMD. */
  variant?: WasmVariant | 'auto';
  /** Module bytes or a compiled module to use instead of fetching. */
  wasm?: BufferSource | WebAssembly.Module;
  fetch?: FetchFunction;
  /** Kernel set to switch to after loading (see Odin.availableIsas()). */
  isa?: string;
}

/** Fetch, compile and instantiate the ODIN wasm module. */
export function loadOdin(options?: LoadOdinOptions): Promise<Odin>;

/** The raw C exports (odin.h, malloc/free, odin_wasm_*): numbers in, numbers out. */
export type OdinExports = WebAssembly.Exports & {
  readonly memory: WebAssembly.Memory;
  readonly [name: string]: any;
};

/** One instance of the wasm module: its memory, allocation, status checks and ISA. */
export class Odin {
  constructor(instance: WebAssembly.Instance, variant: WasmVariant);
  readonly instance: WebAssembly.Instance;
  /** The raw C functions. */
  readonly x: OdinExports;
  readonly memory: WebAssembly.Memory;
  readonly variant: WasmVariant;
  /** Fresh views of the linear memory (re-make them after any call that may allocate). */
  u8(ptr?: number, n?: number): Uint8Array;
  f32(ptr: number, n: number): Float32Array;
  i32(ptr: number, n: number): Int32Array;
  u32(ptr: number, n: number): Uint32Array;
  dv(): DataView;
  /** Allocate `bytes` in wasm memory (throws OdinError NO_MEMORY); returns the address. */
  malloc(bytes: number): number;
  free(ptr: number): void;
  /** Copy a typed array into a new malloc block; returns its address. */
  put(array: ArrayBufferView): number;
  /** The NUL-terminated UTF-8 string at `ptr`. */
  cstr(ptr: number): string;
  withCString<T>(text: string, fn: (ptr: number) => T): T;
  lastError(): string;
  /** Throw an OdinError naming `where` unless `status` is 0. */
  check(status: number, where: string): void;
  version(): string;
  compiler(): string;
  /** The kernel set in use ('wasm_simd128' or 'scalar'). */
  isa(): string;
  availableIsas(): string[];
  setIsa(name: string): void;
  simd(): boolean;
  /** Bytes of wasm linear memory in use (it only grows). */
  memoryBytes(): number;
  /** Make sure `bytes` more can be allocated without growing the memory again. */
  reserve(bytes: number): number;
}

/* ------------------------------------------------------------------ tokenizers */

interface TokenizerBase {
  readonly padId: number;
  readonly bosId: number;
  readonly endId: number;
  readonly vocabSize: number;
  /** Token ids of `text` (no <bos>); throws OdinError for text the tokenizer cannot encode. */
  encode(text: string): number[];
  /** Text of `ids`; special tokens are left out unless skipSpecial is false. */
  decode(ids: Iterable<number>, skipSpecial?: boolean): string;
}

/** tokenizer.json of odin.tokenizers.CharTokenizer. */
export interface CharTokenizerJSON {
  odin_kind: 'char';
  format_version?: number;
  vocab: string[];
}

/** A Hugging Face tokenizer.json (byte-level BPE), as odin.tokenizers.BPETokenizer saves it. */
export interface BPETokenizerJSON {
  model: { type: 'BPE'; vocab: Record<string, number>; merges?: Array<string | [string, string]>;
    unk_token?: string | null; ignore_merges?: boolean; continuing_subword_prefix?: string | null;
    end_of_word_suffix?: string | null; [key: string]: unknown };
  added_tokens?: Array<{ id: number; content: string; special?: boolean; [key: string]: unknown }>;
  pre_tokenizer?: { type: string; [key: string]: unknown } | null;
  normalizer?: { type: string; [key: string]: unknown } | null;
  [key: string]: unknown;
}

export type TokenizerJSON = CharTokenizerJSON | BPETokenizerJSON;

/** One token per character over a fixed vocabulary (odin.tokenizers.CharTokenizer). */
export class CharTokenizer implements TokenizerBase {
  constructor(vocab: string[]);
  readonly kind: 'char';
  readonly vocab: string[];
  readonly idOf: Map<string, number>;
  readonly padId: number;
  readonly bosId: number;
  readonly endId: number;
  readonly vocabSize: number;
  readonly nSpecial: number;
  encode(text: string): number[];
  decode(ids: Iterable<number>, skipSpecial?: boolean): string;
}

/** Byte-level BPE from a Hugging Face tokenizer.json. */
export class BPETokenizer implements TokenizerBase {
  constructor(json: BPETokenizerJSON);
  readonly kind: 'bpe';
  readonly padId: number;
  readonly bosId: number;
  readonly endId: number;
  readonly vocabSize: number;
  encode(text: string): number[];
  /** Encode text that holds no added (special) tokens, appending the ids to `out`. */
  encodeOrdinary(text: string, out: number[]): void;
  /** Token ids of one pre-tokenized word (its bytes as GPT-2's printable characters). */
  bpe(word: string): number[];
  decode(ids: Iterable<number>, skipSpecial?: boolean): string;
}

export type Tokenizer = CharTokenizer | BPETokenizer;

/** The tokenizer a tokenizer.json describes. */
export function makeTokenizer(json: TokenizerJSON): Tokenizer;

/* ------------------------------------------------------------------ model.json */

/** model.json's "model": the run's [model] table (odin.config.ModelConfig) plus d_ffn. */
export interface ModelConfig {
  arch?: 'gpt' | 'rwkv';
  vocab_size: number;
  context: number;
  n_layer: number;
  n_head: number;
  d_model: number;
  d_ffn?: number;
  ln_eps?: number;
  abacus?: number;
  abacus_answer?: 'place' | 'next';
  positions?: 'learned' | 'none' | 'alibi';
  /** Every weight (estimateMemory / weightBytes; default: the shape's formula). */
  n_params?: number;
  /** Block types of a quantized model (estimateMemory / weightBytes); null / absent: float32. */
  quant?: QuantTypes | null;
  [key: string]: unknown;
}

export interface Example {
  prompt: string;
  answer: string;
}

/** What the model was trained on, from the checkpoint's dataset settings (null: not recorded). */
export interface TaskInfo {
  kind: string;
  reverse_answer?: boolean;
  /** Operands are asked with leading zeros to this many digits (0: as typed). */
  prompt_width?: number;
  [key: string]: unknown;
}

/** A block format of llama.cpp (32 weights per block, ggml's layout) or float32. */
export type WeightType = 'f32' | 'q8_0' | 'q4_0' | 'q4_1' | 'q5_0' | 'q5_1';

/** The block types of a quantized model: its matrices, and its token embedding (the tied head). */
export interface QuantTypes {
  matrix: WeightType;
  embed: WeightType;
}

/** model.json's "quant" (a quantized export, `odin export web --quant TYPE`, format_version 2). */
export interface QuantInfo extends QuantTypes {
  /** float32 parameters (the first section of weights.bin, what odin_*_params holds). */
  float_params: number;
  float_bytes: number;
  /** bytes of the quantized blocks (the second section, what odin_*_qblock holds). */
  quant_bytes: number;
  source: 'quantized at export' | 'quantized checkpoint';
}

/** model.json, written by `odin export web`. */
export interface ModelManifest {
  format: 'odin-web';
  format_version: number;
  odin_version?: string;
  created?: string;
  source?: { checkpoint: string; step: number | null };
  model: ModelConfig;
  /** Every weight of the model, float32 or quantized. */
  n_params: number;
  /** offset: in floats into the float32 section; for a quantized tensor (type not 'f32') in
   * bytes into the quantized section. */
  tensors: Array<{ name: string; offset: number; shape: number[]; type?: WeightType }>;
  weights: { file: string; dtype: 'float32' | 'quantized'; byte_order: 'little'; bytes: number; sha256: string };
  /** null / absent: float32 weights. */
  quant?: QuantInfo | null;
  tokenizer: TokenizerJSON;
  special?: { pad: number; bos: number; end: number };
  abacus?: { digit_first: number; sep_id: number; next: boolean } | null;
  train?: { lr?: number; beta1?: number; beta2?: number; eps?: number; weight_decay?: number;
    grad_clip?: number; batch_size?: number; loss_on?: string };
  task?: TaskInfo | null;
  examples?: Example[];
  demo_prompts?: string[];
}

/* ------------------------------------------------------------------ memory, cache, loading */

export interface MemoryShape {
  /** Training batch and sequence length of a workspace (0: none). */
  batch?: number;
  seq?: number;
  /** Sequences of generation state (KV cache or recurrent state). */
  cacheBatch?: number;
  /** Count the training blocks (gradients, AdamW moments: 3 x the parameters); default true. */
  training?: boolean;
}

/** Bytes the C side allocates for a model (float32 or quantized by cfg.quant), a training
 * workspace and generation state. */
export function estimateMemory(cfg: ModelConfig, shape?: MemoryShape): number;

/** Sizes of a model's weights as the C side holds them. */
export interface WeightSizes {
  /** float32 parameters (all of them for a float32 model). */
  floatParams: number;
  floatBytes: number;
  /** Bytes of quantized blocks (0 for a float32 model). */
  quantBytes: number;
  bytes: number;
}

/** The weights' sizes for a shape and block types (default cfg.quant; null: float32). */
export function weightBytes(cfg: ModelConfig, quant?: QuantTypes | null): WeightSizes;

/** ggml's type ids (odin.h's odin_type). */
export const QUANT_TYPES: Readonly<Record<WeightType, number>>;

/** The IndexedDB weight cache; keys are "URL#sha256". Without IndexedDB every call is a no-op. */
export const weightCache: {
  get(key: string): Promise<ArrayBuffer | Uint8Array | null>;
  put(key: string, bytes: ArrayBuffer): Promise<boolean>;
  delete(key: string): Promise<void>;
  clear(): Promise<void>;
};

export type LoadPhase = 'manifest' | 'cache' | 'download' | 'verify' | 'wasm' | 'init' | 'ready';

export interface LoadProgress {
  phase: LoadPhase;
  loaded: number;
  total: number;
  /** On 'ready': whether the weights came from the IndexedDB cache. */
  fromCache?: boolean;
}

export interface LoadModelOptions {
  /** An Odin to reuse (else one is loaded with wasmBaseUrl / variant / isa). */
  odin?: Odin;
  onProgress?: (progress: LoadProgress) => void;
  /** Use the IndexedDB weight cache (default true). */
  cache?: boolean;
  fetch?: FetchFunction;
  wasmBaseUrl?: string | URL;
  variant?: WasmVariant | 'auto';
  isa?: string;
  /** Batch size to reserve a training workspace for (default 16). */
  trainBatch?: number;
}

/** Load an exported model (a directory URL with model.json + weights.bin, or model.json's URL). */
export function loadModel(modelUrl: string | URL, options?: LoadModelOptions): Promise<OdinModel>;

/* ------------------------------------------------------------------ architectures */

/** One architecture's entry of ARCHS: the C names and formulas OdinModel uses. */
export interface ArchImpl {
  readonly name: 'gpt' | 'rwkv';
  readonly label: string;
  readonly fn: Readonly<Record<'free' | 'numParams' | 'params' | 'grads' | 'adamM' | 'adamV' | 'wsCreate' | 'wsFree'
    | 'genCreate' | 'genFree' | 'trainStep', string>>;
  /** C names of a quantized model's calls. */
  readonly q: Readonly<Record<'create' | 'qblock' | 'qbytes' | 'tensorType' | 'tensorInfo', string>>;
  /** Makes the model (odin_*_create_q with `types`: ggml type ids); returns the C status. */
  create(x: OdinExports, out: number, cfg: ModelConfig, types?: { matrix: number; embed: number } | null): number;
  /** [kind, rows, cols, count] of the tensors a quantized model holds in blocks. */
  quantTensors(cfg: ModelConfig): Array<['embed' | 'matrix', number, number, number]>;
  setup(model: OdinModel): void;
  decode(model: OdinModel, token: number, pos: number, abacusId: number): number;
  resetGeneration(model: OdinModel): void;
  stateBytes(model: OdinModel): number;
  maxLength(cfg: ModelConfig): number;
  trainStep(model: OdinModel, ws: number, ptrs: { tokens: number; ids: number; targets: number; mask: number },
    B: number, T: number, hyper: number[], out: number): number;
  numParams(cfg: ModelConfig): number;
  workspaceFloats(cfg: ModelConfig, batch: number, seq: number): number;
  generationFloats(cfg: ModelConfig, batch: number): number;
  init(model: OdinModel, name: string, view: Float32Array, rng: { uniform: () => number; normal: () => number }): void;
  describe(cfg: ModelConfig): string;
}

export const ARCHS: { readonly gpt: ArchImpl; readonly rwkv: ArchImpl };

/** A small seeded PRNG (mulberry32): numbers in [0, 1). */
export function makeRng(seed?: number): () => number;

/* ------------------------------------------------------------------ generation and training */

export interface GenerationOptions {
  /** Most tokens to generate (default: the context; GPT also stops at the end of its context). */
  maxTokens?: number;
  /** 0 (default) = greedy. */
  temperature?: number;
  /** 0 (default) = off. */
  topK?: number;
  /** 1 (default) = off. */
  topP?: number;
  /** Sampler seed, as odin.model.Sampler (the same seed gives the same tokens as odin-infer). */
  seed?: number;
  /** Token ids that end generation (default [<end>]); the stop token is yielded with text ''. */
  stop?: number[];
  /** Texts that end generation. */
  stopStrings?: string[];
  signal?: AbortSignal;
}

/**
 * Speed of one generation, in two parts: prefill (the prompt through the model, up to the
 * first generated token) and decode (each further token). Times are the engine's calls
 * only, not the consumer's work between tokens.
 */
export interface GenerationStats {
  /** Tokens fed in prefill, <bos> included. */
  promptTokens: number;
  prefillMs: number;
  /** Tokens generated (a final stop token included). */
  newTokens: number;
  /** newTokens - 1: the first token comes out of prefill. */
  decodeTokens: number;
  decodeMs: number;
  /** decodeTokens per second of decodeMs; null when nothing was decoded or no time was measured. */
  decodeTokensPerSecond: number | null;
}

export interface GeneratedToken {
  token: number;
  /** The new text (may be '' while a UTF-8 character is incomplete, and for a stop token). */
  text: string;
  index: number;
  /** The stats so far. */
  stats: GenerationStats;
}

export interface GenerationResult {
  text: string;
  tokens: number[];
  stats: GenerationStats;
}

export interface TrainStepOptions {
  /** Examples drawn per step (default min(16, the run's batch_size)). */
  batchSize?: number;
  /** Draws the batch (default a makeRng(1234) kept on the model). */
  rng?: () => number;
  lr?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  gradClip?: number;
}

/** A batch laid out as odin/data/batching.py does. */
export interface Batch {
  /** [B, T+1]: <bos> prompt answer <end> <pad>... */
  tokens: Int32Array;
  /** [B, T]: 1 on answer and <end> targets. */
  mask: Uint8Array;
  B: number;
  T: number;
}

export interface TrainStepResult {
  loss: number;
  gradNorm: number;
  step: number;
  tokens: number;
  /** Target positions the loss counted. */
  counted: number;
  ms: number;
}

export interface LoadInfo {
  fromCache: boolean;
  bytes: number;
  seconds: number;
  url: string;
}

/**
 * A GPT or RWKV-4 model in wasm memory. One model holds one generation state: generations
 * on it take turns in call order (a stream started while another runs waits for it), and
 * trainStep / randomizeWeights / restoreWeights / free throw an OdinError (STATE) while a
 * generation is running.
 */
export class OdinModel {
  constructor(odin: Odin, manifest: ModelManifest, weights: ArrayBuffer | ArrayBufferView, options?: { trainBatch?: number });
  readonly odin: Odin;
  readonly manifest: ModelManifest;
  readonly config: ModelConfig;
  readonly impl: ArchImpl;
  readonly arch: 'gpt' | 'rwkv';
  readonly tokenizer: Tokenizer;
  readonly special: { pad: number; bos: number; end: number };
  readonly abacus: { n: number; digit_first: number; sep_id: number; next: boolean } | null;
  /** Vocabulary size. */
  readonly V: number;
  /** GPT: the position limit; RWKV: the training length. */
  readonly context: number;
  /** Prompt + generated tokens one generation can hold (Infinity for RWKV). */
  readonly maxLength: number;
  /** Floats in the C parameter block (for a quantized model: its float32 tensors only). */
  readonly nParams: number;
  /** Every weight of the model (model.json's n_params). */
  readonly nWeights: number;
  /** The block types of a quantized model; null for float32. */
  readonly quant: QuantTypes | null;
  /** What the weights take in wasm memory. */
  readonly weightSizes: WeightSizes;
  /** False for a quantized model: it answers, but trainStep / randomizeWeights throw. */
  readonly canTrain: boolean;
  /** Optimizer steps taken here. */
  step: number;
  /** Bytes planned for this model: the weights and one generation state when it was made, plus
   * the training blocks and workspace once it trains. */
  readonly plannedBytes: number;
  /** Whether it has trained here (its gradients and AdamW moments exist then). */
  readonly trained: boolean;
  readonly trainSeq: number;
  /** Set by loadModel. */
  loadInfo?: LoadInfo;
  /** True while a generation runs on this model. */
  readonly generating: boolean;
  /** Stats of the last generation to finish (null before the first). */
  lastStats: GenerationStats | null;
  /** Wasm addresses of the C objects (0 once freed). */
  readonly h: number;
  readonly scratch: number;
  readonly wsShape: [number, number];

  /** Views of the parameters and gradients in wasm memory. */
  params(): Float32Array;
  grads(): Float32Array;
  /** Zero the AdamW moments and the step count. */
  resetOptimizer(): void;
  /** Back to the exported weights (and a fresh optimizer). */
  restoreWeights(): void;
  /** Fresh random weights, initialised as the native model's init_weights does (throws for a quantized model). */
  randomizeWeights(seed?: number): void;
  /** 'f32', or the matrices' block type with the embedding's when it differs: 'q4_0 (embedding q8_0)'. */
  weightFormat(): string;
  memoryBytes(): number;
  /** One line about the model: architecture and shape. */
  describe(): string;
  /** Bytes of generation state for one sequence. */
  generationStateBytes(): number;
  /** Free the model's wasm memory (throws while a generation runs). */
  free(): void;
  /** [<bos>] + encode(text), operands zero-padded as the model was trained. */
  encodePrompt(text: string): number[];
  /** Abacus position ids of a token row. */
  abacusIds(tokens: ArrayLike<number>): Int32Array;
  /** Call the architecture's C function for a shared operation. */
  _c(op: keyof ArchImpl['fn'], ...args: number[]): number;
  /** Stream generated tokens; the return value is the final GenerationStats. */
  stream(prompt: string | number[] | ArrayLike<number>, options?: GenerationOptions):
    AsyncGenerator<GeneratedToken, GenerationStats, undefined>;
  /** Whole generation; onToken sees each token as stream() yields it. */
  generate(prompt: string | number[] | ArrayLike<number>,
    options?: GenerationOptions & { onToken?: (token: GeneratedToken) => void }): Promise<GenerationResult>;
  /** Greedy token ids after prompt ids (stops after <end>, which is included). */
  greedy(promptIds: number[], maxNew?: number): Promise<number[]>;
  /** Next-token logits after a prompt (text or ids), fed token by token; takes its turn like a generation. */
  logits(prompt: string | number[] | ArrayLike<number>, options?: { all?: false }): Promise<Float32Array>;
  /** The logits after every position of the prompt. */
  logits(prompt: string | number[] | ArrayLike<number>, options: { all: true }): Promise<Float32Array[]>;
  /** A training batch from examples. */
  makeBatch(examples: Example[]): Batch;
  /** One optimizer step on `batchSize` examples (default: the export's) or on a prepared batch
   * (throws an OdinError, STATE, for a quantized model). */
  trainStep(examplesOrBatch?: Example[] | Batch, options?: TrainStepOptions): TrainStepResult;
}
