/* odin.js — the ODIN runtime for the browser (and node >= 18): an ES module, no dependencies.
 *
 *   import { loadModel } from './odin.js';
 *   const model = await loadModel('model/', { onProgress: p => console.log(p.phase, p.loaded, p.total) });
 *   for await (const t of model.stream('123+456=', { temperature: 0 })) output.textContent += t.text;
 *   const { loss } = model.trainStep(model.manifest.examples, { batchSize: 16 });
 *
 * What is where (docs/wasm.md has the full API):
 *   loadOdin()      fetch + instantiate the wasm module (SIMD128 build, or the scalar one where
 *                   the engine has no SIMD), with the few WASI functions it imports
 *   Odin            the instance: memory, malloc/free, status checks, ISA, the C exports (.x)
 *   loadModel()     fetch an `odin export web` directory (model.json + weights.bin) with
 *                   progress; the weights are cached in IndexedDB under their sha256. A
 *                   quantized export (`--quant q8_0|q4_0|...`) makes a quantized model
 *                   (odin_*_create_q): its blocks go into wasm memory as they are, and it
 *                   answers but does not train
 *   OdinModel       a GPT (csrc/gpt.c) or RWKV-4 (csrc/rwkv.c) model in wasm memory, by
 *                   model.json's arch (the ARCHS table): stream() / generate() with
 *                   temperature / top-k / top-p and stop tokens (GPT through its KV cache,
 *                   RWKV through its recurrent state, with no length limit); trainStep()
 *                   runs forward, backward and AdamW in the page. One model holds one
 *                   generation state: generations on it run one at a time, in call order
 *                   (a second stream() waits for the first to finish)
 *   CharTokenizer, BPETokenizer (byte-level BPE from a Hugging Face tokenizer.json)
 *
 * Types: odin.d.ts (TypeScript declarations of everything exported here).
 *
 * Pointers into wasm memory are byte offsets. Typed-array views of the memory are re-made
 * after every call that may allocate: growing the memory detaches the old ArrayBuffer.
 */

const STATUS_NAMES = ['OK', 'BAD_SHAPE', 'BAD_ARG', 'NO_MEMORY', 'NAN_DETECTED', 'UNSUPPORTED_ISA', 'IO', 'STATE'];
const MiB = 1024 * 1024;
const utf8 = new TextEncoder();
const utf8d = new TextDecoder('utf-8');

export class OdinError extends Error {
  constructor(message, status = -1) {
    super(message);
    this.name = 'OdinError';
    this.status = status;
    this.statusName = STATUS_NAMES[status] ?? String(status);
  }
}

/* ------------------------------------------------------------------ the wasm module */

// (module (func (result v128) v128.const i32x4 0 0 0 0)): validates only where SIMD128 is supported
const SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 22, 1, 20, 0,
  253, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 11]);

export function simdSupported() {
  try { return WebAssembly.validate(SIMD_PROBE); } catch { return false; }
}

function defaultFetch() {
  if (typeof globalThis.fetch !== 'function') throw new OdinError('no fetch() here: pass options.fetch');
  return globalThis.fetch.bind(globalThis);
}

/* The module is built for wasm32-wasi (wasi-libc provides malloc, printf, libm); it imports
 * only environ_get / environ_sizes_get (getenv("ODIN_ISA")) and proc_exit, but any WASI
 * function it could import is answered: known ones here, the rest with ENOSYS. */
function wasiImports(module, getMemory) {
  const ENOSYS = 52;
  const dv = () => new DataView(getMemory().buffer);
  const zeroCounts = (countPtr, sizePtr) => { dv().setUint32(countPtr, 0, true); dv().setUint32(sizePtr, 0, true); return 0; };
  const impl = {
    environ_sizes_get: zeroCounts,
    environ_get: () => 0,
    args_sizes_get: zeroCounts,
    args_get: () => 0,
    proc_exit: (code) => { throw new OdinError(`the wasm module called exit(${code})`); },
    fd_write: (fd, iovs, iovsLen, nwrittenPtr) => {
      const view = dv();
      const mem = new Uint8Array(getMemory().buffer);
      let text = '', n = 0;
      for (let i = 0; i < iovsLen; i++) {
        const p = view.getUint32(iovs + 8 * i, true), len = view.getUint32(iovs + 8 * i + 4, true);
        text += utf8d.decode(mem.subarray(p, p + len));
        n += len;
      }
      (fd === 2 ? console.error : console.log)(text.replace(/\n$/, ''));
      view.setUint32(nwrittenPtr, n, true);
      return 0;
    },
    clock_time_get: (id, precision, outPtr) => {
      const ns = BigInt(Math.round((id === 0 ? Date.now() : performance.now()) * 1e6));
      dv().setBigUint64(outPtr, ns, true);
      return 0;
    },
    random_get: (ptr, len) => { crypto.getRandomValues(new Uint8Array(getMemory().buffer, ptr, len)); return 0; },
  };
  const imports = {};
  for (const imp of WebAssembly.Module.imports(module)) {
    if (imp.kind !== 'function') continue;
    imports[imp.module] ??= {};
    imports[imp.module][imp.name] = impl[imp.name] ?? (() => ENOSYS);
  }
  return imports;
}

/**
 * Fetch, compile and instantiate the ODIN wasm module.
 * options: baseUrl (directory of odin-*.wasm; default ./wasm/ next to this file),
 *          variant ('auto' | 'simd128' | 'scalar'), wasm (bytes or a WebAssembly.Module to use
 *          instead of fetching), fetch (a fetch function), isa (kernel set to switch to).
 */
export async function loadOdin(options = {}) {
  const { baseUrl = new URL('./wasm/', import.meta.url), wasm, isa } = options;
  let variant = options.variant ?? 'auto';
  if (variant === 'auto') variant = simdSupported() ? 'simd128' : 'scalar';
  let module;
  if (wasm instanceof WebAssembly.Module) {
    module = wasm;
  } else if (wasm) {
    module = await WebAssembly.compile(wasm);
  } else {
    const fetchFn = options.fetch ?? defaultFetch();
    let tag = '';
    try { // the build manifest names the artifact's sha256: a changed module is a new URL
      const m = await (await fetchFn(new URL('odin-wasm.json', baseUrl))).json();
      tag = m.artifacts?.[variant]?.sha256?.slice(0, 16) ?? '';
    } catch { /* no manifest: fetch without a version tag */ }
    const url = new URL(`odin-${variant}.wasm${tag ? `?v=${tag}` : ''}`, baseUrl);
    const resp = await fetchFn(url);
    if (!resp.ok) throw new OdinError(`cannot fetch ${url}: HTTP ${resp.status}`);
    const streaming = typeof WebAssembly.compileStreaming === 'function'
      && (resp.headers?.get?.('content-type') ?? '').startsWith('application/wasm');
    module = streaming ? await WebAssembly.compileStreaming(resp) : await WebAssembly.compile(await resp.arrayBuffer());
  }
  let instance = null;
  const imports = wasiImports(module, () => instance.exports.memory);
  instance = await WebAssembly.instantiate(module, imports);
  instance.exports._initialize(); // C constructors: picks the kernel table
  const odin = new Odin(instance, variant);
  if (isa) odin.setIsa(isa);
  return odin;
}

export class Odin {
  constructor(instance, variant) {
    this.instance = instance;
    this.x = instance.exports; // the raw C functions (odin.h + malloc/free + odin_wasm_*)
    this.memory = this.x.memory;
    this.variant = variant;
  }

  // fresh views of the linear memory
  u8(ptr = 0, n) { return new Uint8Array(this.memory.buffer, ptr, n); }
  f32(ptr, n) { return new Float32Array(this.memory.buffer, ptr, n); }
  i32(ptr, n) { return new Int32Array(this.memory.buffer, ptr, n); }
  u32(ptr, n) { return new Uint32Array(this.memory.buffer, ptr, n); }
  dv() { return new DataView(this.memory.buffer); }

  malloc(bytes) {
    const p = this.x.malloc(Math.max(1, bytes)) >>> 0;
    if (!p) throw new OdinError(`out of wasm memory: malloc(${bytes}) with ${(this.memoryBytes() / MiB).toFixed(0)} MiB in use`, 3);
    return p;
  }
  free(p) { if (p) this.x.free(p); }
  /** copy a typed array into a new malloc block; returns its address */
  put(array) {
    const bytes = new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
    const p = this.malloc(bytes.length);
    this.u8(p, bytes.length).set(bytes);
    return p;
  }
  cstr(p) {
    const mem = this.u8();
    let end = p;
    while (mem[end]) end++;
    return utf8d.decode(mem.subarray(p, end));
  }
  withCString(s, fn) {
    const b = utf8.encode(s + '\0');
    const p = this.put(b);
    try { return fn(p); } finally { this.free(p); }
  }
  lastError() { return this.cstr(this.x.odin_last_error()); }
  check(status, where) {
    if (status !== 0) throw new OdinError(`${where}: ${this.lastError()}`, status);
  }

  version() { return this.cstr(this.x.odin_version()); }
  compiler() { return this.cstr(this.x.odin_compiler()); }
  isa() { return this.cstr(this.x.odin_current_isa()); }
  availableIsas() { return this.cstr(this.x.odin_available_isas()).split(',').filter(Boolean); }
  setIsa(name) { this.withCString(name, (p) => this.check(this.x.odin_set_isa(p), 'setIsa')); }
  simd() { return this.x.odin_wasm_simd() === 1; }
  /** bytes of wasm linear memory in use (it only grows) */
  memoryBytes() { return this.memory.buffer.byteLength; }
  /** make sure `bytes` more can be allocated without growing the memory again (one grow now) */
  reserve(bytes) {
    const r = this.x.odin_wasm_reserve(bytes);
    if (r < 0) throw new OdinError(`cannot grow the wasm memory by ${(bytes / MiB).toFixed(0)} MiB`, 3);
    return r;
  }
}

/* ------------------------------------------------------------------ tokenizers */

export class CharTokenizer {
  constructor(vocab) {
    this.kind = 'char';
    this.vocab = vocab;
    this.idOf = new Map(vocab.map((t, i) => [t, i]));
    this.padId = 0; this.bosId = 1; this.endId = 2;
    this.vocabSize = vocab.length;
    this.nSpecial = 3;
  }
  encode(text) {
    const out = [];
    let pos = 0;
    for (const ch of text) {
      const id = this.idOf.get(ch);
      if (id === undefined || id < this.nSpecial) {
        const cp = ch.codePointAt(0).toString(16).toUpperCase().padStart(4, '0');
        throw new OdinError(`character ${JSON.stringify(ch)} (U+${cp}) at position ${pos} is not in the char tokenizer vocabulary`, 2);
      }
      out.push(id);
      pos++;
    }
    return out;
  }
  decode(ids, skipSpecial = true) {
    let s = '';
    for (const id of ids) {
      if (id < 0 || id >= this.vocab.length) throw new OdinError(`token id ${id} is out of range for a vocabulary of ${this.vocab.length}`, 2);
      if (id < this.nSpecial && skipSpecial) continue;
      s += this.vocab[id];
    }
    return s;
  }
}

// GPT-2's byte <-> printable-character table, as in the HF ByteLevel pre-tokenizer
const BYTE_TO_CHAR = (() => {
  const bs = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) if (!bs.includes(b)) { bs.push(b); cs.push(256 + n); n++; }
  const table = new Array(256);
  bs.forEach((b, i) => { table[b] = String.fromCodePoint(cs[i]); });
  return table;
})();
const CHAR_TO_BYTE = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));
// the ByteLevel split (GPT-2's pattern)
const BYTELEVEL_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** Byte-level BPE from a Hugging Face tokenizer.json (what odin.tokenizers.BPETokenizer saves). */
export class BPETokenizer {
  constructor(json) {
    this.kind = 'bpe';
    const model = json.model;
    if (model?.type !== 'BPE') throw new OdinError(`unsupported tokenizer model ${model?.type}`, 2);
    this.vocabMap = new Map(Object.entries(model.vocab));
    this.vocabSize = 0;
    for (const id of this.vocabMap.values()) this.vocabSize = Math.max(this.vocabSize, id + 1);
    this.added = (json.added_tokens ?? []).map((t) => ({ id: t.id, content: t.content, special: !!t.special }));
    for (const t of this.added) this.vocabSize = Math.max(this.vocabSize, t.id + 1);
    this.idToToken = new Array(this.vocabSize);
    for (const [tok, id] of this.vocabMap) this.idToToken[id] = tok;
    for (const t of this.added) this.idToToken[t.id] = t.content;
    this.specialIds = new Set(this.added.filter((t) => t.special).map((t) => t.id));
    this.addedByLength = [...this.added].sort((a, b) => b.content.length - a.content.length);
    this.ranks = new Map();
    (model.merges ?? []).forEach((m, i) => {
      const [a, b] = Array.isArray(m) ? m : m.split(' ');
      this.ranks.set(a + '\u0000' + b, i);
    });
    this.ignoreMerges = !!model.ignore_merges;
    this.unkId = model.unk_token != null ? this.vocabMap.get(model.unk_token) : undefined;
    if (model.continuing_subword_prefix || model.end_of_word_suffix) throw new OdinError('BPE subword prefixes/suffixes are not supported', 2);
    // pre-tokenizer: ByteLevel (possibly inside a Sequence)
    const pts = json.pre_tokenizer?.type === 'Sequence' ? json.pre_tokenizer.pretokenizers : [json.pre_tokenizer];
    const bl = pts.find((p) => p?.type === 'ByteLevel');
    if (!bl || pts.some((p) => p && p.type !== 'ByteLevel')) throw new OdinError('only the ByteLevel pre-tokenizer is supported', 2);
    this.addPrefixSpace = !!bl.add_prefix_space;
    this.useRegex = bl.use_regex ?? true;
    const norm = json.normalizer;
    const forms = { NFC: 'NFC', NFD: 'NFD', NFKC: 'NFKC', NFKD: 'NFKD' };
    const norms = norm == null ? [] : norm.type === 'Sequence' ? norm.normalizers : [norm];
    for (const n of norms) if (!(n.type in forms) && n.type !== 'Lowercase') throw new OdinError(`unsupported normalizer ${n.type}`, 2);
    this.normalize = (s) => norms.reduce((acc, n) => (n.type === 'Lowercase' ? acc.toLowerCase() : acc.normalize(forms[n.type])), s);
    const id = (t) => { const v = this.vocabMap.get(t) ?? this.added.find((a) => a.content === t)?.id; if (v === undefined) throw new OdinError(`BPE tokenizer lacks the special token ${t}`, 2); return v; };
    this.padId = id('<pad>'); this.bosId = id('<bos>'); this.endId = id('<end>');
    this.cache = new Map();
  }

  encode(text) {
    const out = [];
    let start = 0;
    for (let i = 0; i < text.length;) {
      const hit = this.addedByLength.find((t) => t.content && text.startsWith(t.content, i));
      if (hit) {
        if (i > start) this.encodeOrdinary(text.slice(start, i), out);
        out.push(hit.id);
        i += hit.content.length;
        start = i;
      } else {
        i++;
      }
    }
    if (start < text.length) this.encodeOrdinary(text.slice(start), out);
    return out;
  }

  encodeOrdinary(text, out) {
    text = this.normalize(text);
    if (this.addPrefixSpace && !text.startsWith(' ')) text = ' ' + text;
    const words = this.useRegex ? (text.match(BYTELEVEL_SPLIT) ?? []) : [text];
    for (const w of words) {
      let mapped = '';
      for (const b of utf8.encode(w)) mapped += BYTE_TO_CHAR[b];
      for (const id of this.bpe(mapped)) out.push(id);
    }
  }

  bpe(word) {
    const hit = this.cache.get(word);
    if (hit) return hit;
    let ids;
    if (this.ignoreMerges && this.vocabMap.has(word)) {
      ids = [this.vocabMap.get(word)];
    } else {
      let parts = Array.from(word);
      while (parts.length > 1) {
        let best = -1, bestRank = Infinity;
        for (let i = 0; i < parts.length - 1; i++) {
          const r = this.ranks.get(parts[i] + '\u0000' + parts[i + 1]);
          if (r !== undefined && r < bestRank) { bestRank = r; best = i; }
        }
        if (best < 0) break;
        const a = parts[best], b = parts[best + 1], merged = [];
        for (let i = 0; i < parts.length;) {
          if (i < parts.length - 1 && parts[i] === a && parts[i + 1] === b) { merged.push(a + b); i += 2; } else { merged.push(parts[i]); i++; }
        }
        parts = merged;
      }
      ids = parts.map((p) => {
        const v = this.vocabMap.get(p) ?? this.unkId;
        if (v === undefined) throw new OdinError(`BPE: no token for ${JSON.stringify(p)} and no unk_token`, 2);
        return v;
      });
    }
    if (this.cache.size < 65536) this.cache.set(word, ids);
    return ids;
  }

  decode(ids, skipSpecial = true) {
    const bytes = [];
    for (const id of ids) {
      if (id < 0 || id >= this.vocabSize || this.idToToken[id] === undefined) throw new OdinError(`token id ${id} is out of range for a vocabulary of ${this.vocabSize}`, 2);
      if (skipSpecial && this.specialIds.has(id)) continue;
      for (const ch of this.idToToken[id]) {
        const b = CHAR_TO_BYTE.get(ch);
        if (b !== undefined) bytes.push(b); else bytes.push(...utf8.encode(ch));
      }
    }
    return utf8d.decode(new Uint8Array(bytes));
  }
}

export function makeTokenizer(json) {
  if (json?.odin_kind === 'char') return new CharTokenizer(json.vocab);
  if (json?.model) return new BPETokenizer(json);
  throw new OdinError('not a tokenizer: neither an odin char vocabulary nor a Hugging Face tokenizer.json', 2);
}

/* ------------------------------------------------------------------ memory, cache, fetch */

/** ggml's type ids of the block formats (odin.h's odin_type) and the bytes of one 32-weight block. */
export const QUANT_TYPES = Object.freeze({ f32: 0, q4_0: 2, q4_1: 3, q5_0: 6, q5_1: 7, q8_0: 8 });
const BLOCK_BYTES = { f32: 128, q4_0: 18, q4_1: 20, q5_0: 22, q5_1: 24, q8_0: 34 };

function quantTypeId(name, what) {
  const id = QUANT_TYPES[name];
  if (id === undefined) throw new OdinError(`${what}: unknown weight type ${JSON.stringify(name)} (one of ${Object.keys(QUANT_TYPES).join(', ')})`, 2);
  return id;
}

/** Bytes of a model's weights as the C side holds them: {floatParams, floatBytes, quantBytes,
 * bytes}. cfg: model.json's "model" (+ n_params: every weight) and `quant` ({matrix, embed}
 * block types, or null / absent for float32): the matrices and the token embedding in their
 * block types (32 weights of a row per block), every other tensor float32. */
export function weightBytes(cfg, quant = cfg.quant) {
  const arch = archOf(cfg);
  const total = cfg.n_params ?? arch.numParams(cfg);
  let quantWeights = 0, quantBytes = 0;
  if (quant) {
    for (const [kind, rows, cols, count] of arch.quantTensors(cfg)) {
      const type = kind === 'embed' ? quant.embed : quant.matrix;
      quantTypeId(type, 'quant');
      if (type === 'f32') continue;
      if (cols % 32) throw new OdinError(`a ${type} row must be whole blocks of 32 weights: ${cols} is not`, 1);
      quantWeights += count * rows * cols;
      quantBytes += count * rows * (cols / 32) * BLOCK_BYTES[type];
    }
  }
  const floatParams = total - quantWeights;
  return { floatParams, floatBytes: 4 * floatParams, quantBytes, bytes: 4 * floatParams + quantBytes };
}

/** Bytes the C side allocates for a model (its weights — float32, or the quantized blocks
 * and float32 vectors of cfg.quant; with `training`, also the gradients and both AdamW
 * moments of a float32 model: 4 parameter-sized blocks), a training workspace (batch x seq)
 * and the generation state of `cacheBatch` sequences — a KV cache of the whole context for
 * GPT, the recurrent state for RWKV — by the formulas of csrc/gpt.c and csrc/rwkv.c, plus the
 * GEMM packing buffer. cfg: model.json's "model" (+ n_params: every weight; + quant). */
export function estimateMemory(cfg, { batch = 0, seq = 0, cacheBatch = 1, training = true } = {}) {
  const arch = archOf(cfg);
  const w = weightBytes(cfg);
  const trainingFloats = training && !w.quantBytes ? 3 * w.floatParams : 0; // a quantized model never trains
  const floats = trainingFloats + (batch && seq ? arch.workspaceFloats(cfg, batch, seq) : 0)
    + (cacheBatch ? arch.generationFloats(cfg, cacheBatch) : 0);
  const packing = (132 * 256 + 2060 * 256) * 4; // gemm.c: (MC + MR) x KC + (NC + NR) x KC floats
  return w.bytes + floats * 4 + packing;
}

const IDB_NAME = 'odin-web', IDB_STORE = 'weights';

function idbOpen() {
  if (typeof indexedDB === 'undefined') return Promise.resolve(null);
  return new Promise((resolve) => {
    let req;
    try { req = indexedDB.open(IDB_NAME, 1); } catch { resolve(null); return; }
    req.onupgradeneeded = () => req.result.createObjectStore(IDB_STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => resolve(null);
    req.onblocked = () => resolve(null);
  });
}

function idbRequest(db, mode, fn) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(IDB_STORE, mode);
    const req = fn(tx.objectStore(IDB_STORE));
    tx.oncomplete = () => resolve(req?.result);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

/** The IndexedDB weight cache: entries are keyed "URL#sha256". */
export const weightCache = {
  async get(key) {
    const db = await idbOpen();
    if (!db) return null;
    try { const v = await idbRequest(db, 'readonly', (s) => s.get(key)); return v?.bytes ?? null; } catch { return null; } finally { db.close(); }
  },
  async put(key, bytes) {
    const db = await idbOpen();
    if (!db) return false;
    const url = key.split('#')[0];
    try {
      const keys = await idbRequest(db, 'readonly', (s) => s.getAllKeys());
      await idbRequest(db, 'readwrite', (s) => {
        for (const k of keys) if (String(k).split('#')[0] === url && k !== key) s.delete(k); // older versions
        return s.put({ bytes, savedAt: Date.now() }, key);
      });
      return true;
    } catch { return false; } finally { db.close(); }
  },
  async delete(key) {
    const db = await idbOpen();
    if (!db) return;
    try { await idbRequest(db, 'readwrite', (s) => s.delete(key)); } catch { /* ignore */ } finally { db.close(); }
  },
  async clear() {
    const db = await idbOpen();
    if (!db) return;
    try { await idbRequest(db, 'readwrite', (s) => s.clear()); } finally { db.close(); }
  },
};

async function sha256Hex(bytes) {
  if (!globalThis.crypto?.subtle) return null; // not a secure context: size check only
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(d, (b) => b.toString(16).padStart(2, '0')).join('');
}

async function fetchWithProgress(fetchFn, url, expected, onProgress) {
  const resp = await fetchFn(url);
  if (!resp.ok) throw new OdinError(`cannot fetch ${url}: HTTP ${resp.status}`, 6);
  const total = Number(resp.headers?.get?.('content-length')) || expected || 0;
  if (!resp.body?.getReader) {
    const buf = new Uint8Array(await resp.arrayBuffer());
    onProgress({ phase: 'download', loaded: buf.length, total: buf.length });
    return buf;
  }
  const reader = resp.body.getReader();
  let out = new Uint8Array(total || 1 << 20), got = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (got + value.length > out.length) { const bigger = new Uint8Array(Math.max(out.length * 2, got + value.length)); bigger.set(out.subarray(0, got)); out = bigger; }
    out.set(value, got);
    got += value.length;
    onProgress({ phase: 'download', loaded: got, total });
  }
  return got === out.length ? out : out.slice(0, got);
}

/**
 * Load an exported model (a directory URL with model.json + weights.bin, or model.json's URL).
 * options: odin (an Odin to reuse), onProgress({phase, loaded, total}), cache (IndexedDB, default
 *          true), fetch, wasmBaseUrl / variant (for loadOdin), trainBatch (workspace to reserve for).
 * Phases: 'manifest', 'cache', 'download', 'verify', 'wasm', 'init', 'ready'.
 */
export async function loadModel(modelUrl, options = {}) {
  const fetchFn = options.fetch ?? defaultFetch();
  const onProgress = options.onProgress ?? (() => {});
  const useCache = options.cache ?? true;
  const t0 = performance.now();
  const here = typeof location !== 'undefined' ? location.href : import.meta.url;
  let manifestUrl = new URL(modelUrl, here);
  if (!manifestUrl.pathname.endsWith('.json')) manifestUrl = new URL(manifestUrl.pathname.endsWith('/') ? 'model.json' : `${manifestUrl.pathname.split('/').pop()}/model.json`, manifestUrl);
  onProgress({ phase: 'manifest', loaded: 0, total: 0 });
  const mresp = await fetchFn(manifestUrl);
  if (!mresp.ok) throw new OdinError(`cannot fetch ${manifestUrl}: HTTP ${mresp.status}`, 6);
  const manifest = await mresp.json();
  if (manifest.format !== 'odin-web') throw new OdinError(`${manifestUrl} is not an ODIN web export`, 6);
  if (manifest.format_version > 2) throw new OdinError(`${manifestUrl}: format_version ${manifest.format_version} is newer than this runtime`, 6);
  const w = manifest.weights;
  const weightsUrl = new URL(w.file, manifestUrl);
  const key = `${weightsUrl.href.split('?')[0]}#${w.sha256}`;
  let bytes = null, fromCache = false;
  if (useCache) {
    onProgress({ phase: 'cache', loaded: 0, total: w.bytes });
    const cached = await weightCache.get(key);
    if (cached) {
      bytes = new Uint8Array(cached);
      const digest = bytes.length === w.bytes ? await sha256Hex(bytes) : 'wrong size';
      if (digest !== null && digest !== w.sha256) { bytes = null; await weightCache.delete(key); }
      if (bytes) { fromCache = true; onProgress({ phase: 'cache', loaded: w.bytes, total: w.bytes }); }
    }
  }
  if (!bytes) {
    bytes = await fetchWithProgress(fetchFn, new URL(`${w.file}?v=${w.sha256.slice(0, 16)}`, manifestUrl), w.bytes, onProgress);
    onProgress({ phase: 'verify', loaded: bytes.length, total: w.bytes });
    if (bytes.length !== w.bytes) throw new OdinError(`${weightsUrl}: ${bytes.length} bytes, model.json says ${w.bytes}`, 6);
    const digest = await sha256Hex(bytes);
    if (digest !== null && digest !== w.sha256) throw new OdinError(`${weightsUrl}: sha256 ${digest} does not match model.json`, 6);
    if (useCache) await weightCache.put(key, bytes.buffer.byteLength === bytes.length ? bytes.buffer : bytes.slice().buffer);
  }
  onProgress({ phase: 'wasm', loaded: 0, total: 0 });
  const odin = options.odin ?? await loadOdin({ baseUrl: options.wasmBaseUrl, variant: options.variant, fetch: options.fetch, isa: options.isa });
  onProgress({ phase: 'init', loaded: 0, total: 0 });
  const model = new OdinModel(odin, manifest, bytes, { trainBatch: options.trainBatch });
  model.loadInfo = { fromCache, bytes: bytes.length, seconds: (performance.now() - t0) / 1000, url: manifestUrl.href };
  onProgress({ phase: 'ready', loaded: w.bytes, total: w.bytes, fromCache });
  return model;
}

/* ------------------------------------------------------------------ architectures
 *
 * What differs between the models of odin.h (GPT in gpt.c, RWKV-4 in rwkv.c), in one table:
 * OdinModel calls its architecture's entry and is otherwise the same for both.
 *   fn            C names of the calls whose signatures the two share (handle, blocks,
 *                 training workspace, generation state)
 *   create / setup                        the model of model.json's "model" (create_q with
 *                                         the block types of a quantized export)
 *   q             C names of a quantized model's calls (create_q, qblock, qbytes, tensor_type)
 *   quantTensors(cfg)                     [kind, rows, cols, count] of the tensors a quantized
 *                                         model stores in blocks ('embed': the token embedding)
 *   decode(m, token, pos, abacusId)       feed one token to the generation state (genBuf
 *                                         layout: see OdinModel), logits at genBuf + 32
 *   resetGeneration(m)                    before a new prompt
 *   maxLength(cfg)                        prompt + generated tokens a state can hold
 *   trainStep(m, ws, p, B, T, h, out)     the one-call step of wasm_api.c
 *   numParams / workspaceFloats / generationFloats   the C allocation formulas
 *   init(m, name, view, rng)              a tensor's random initialisation (randomizeWeights)
 *   stateBytes(m)                         bytes of generation state (KV cache / recurrent state)
 *   describe(cfg)                         for the page
 */
const GPT = {
  name: 'gpt',
  label: 'GPT',
  fn: {
    free: 'odin_gpt_free', numParams: 'odin_gpt_num_params', params: 'odin_gpt_params', grads: 'odin_gpt_grads',
    adamM: 'odin_gpt_adam_m', adamV: 'odin_gpt_adam_v', wsCreate: 'odin_gpt_ws_create', wsFree: 'odin_gpt_ws_free',
    genCreate: 'odin_gpt_cache_create', genFree: 'odin_gpt_cache_free', trainStep: 'odin_wasm_gpt_train_step',
  },
  q: { create: 'odin_gpt_create_q', qblock: 'odin_gpt_qblock', qbytes: 'odin_gpt_qbytes', tensorType: 'odin_gpt_tensor_type',
    tensorInfo: 'odin_gpt_tensor_info' },
  create(x, out, c, types) {
    const eps = c.ln_eps ?? 1e-5;
    if (types) return x.odin_gpt_create_q(out, c.vocab_size, c.context, c.n_layer, c.n_head, c.d_model, eps, c.abacus || 0, types.matrix, types.embed);
    return c.abacus ? x.odin_gpt_create_ex(out, c.vocab_size, c.context, c.n_layer, c.n_head, c.d_model, eps, c.abacus)
      : x.odin_gpt_create(out, c.vocab_size, c.context, c.n_layer, c.n_head, c.d_model, eps);
  },
  setup(m) {
    const positions = m.config.positions ?? 'learned';
    if (positions === 'learned') return;
    if (positions !== 'none' && positions !== 'alibi') throw new OdinError(`unknown positions '${positions}'`, 2);
    for (const fn of positions === 'alibi' ? ['odin_gpt_set_learned_positions', 'odin_gpt_set_alibi'] : ['odin_gpt_set_learned_positions']) {
      if (!m.odin.x[fn]) throw new OdinError(`this wasm module has no ${fn}`, 5);
    }
    m.odin.check(m.odin.x.odin_gpt_set_learned_positions(m.h, 0), 'odin_gpt_set_learned_positions');
    if (positions === 'alibi') m.odin.check(m.odin.x.odin_gpt_set_alibi(m.h, 1), 'odin_gpt_set_alibi');
  },
  decode(m, token, pos, abacusId) {
    const { odin } = m, x = odin.x, b = m.genBuf;
    odin.i32(b, 2).set([token, pos]);
    if (!m.abacus) return x.odin_gpt_decode(m.h, m.gen, b, b + 4, 1, b + 32);
    odin.i32(b + 8, 1)[0] = abacusId;
    return x.odin_gpt_decode_ex(m.h, m.gen, b, b + 4, b + 8, 1, b + 32);
  },
  resetGeneration() {}, // positions restart at 0: the cache rows are overwritten
  stateBytes: (m) => 2 * m.config.n_layer * m.context * m.config.d_model * 4, // K and V of the whole context
  maxLength: (c) => c.context,
  trainStep: (m, ws, p, B, T, h, out) => m.odin.x.odin_wasm_gpt_train_step(m.h, ws, p.tokens, p.ids, p.targets, p.mask,
    B, T, ...h, out, out + 4),
  numParams: (c) => c.vocab_size * c.d_model + c.context * c.d_model + c.n_layer * (12 * c.d_model ** 2 + 13 * c.d_model)
    + 2 * c.d_model + (c.abacus || 0) * c.d_model,
  quantTensors: (c) => { const C = c.d_model, L = c.n_layer; // wte; qkv_w, attproj_w, fc_w, fcproj_w
    return [['embed', c.vocab_size, C, 1], ['matrix', 3 * C, C, L], ['matrix', C, C, L], ['matrix', 4 * C, C, L], ['matrix', C, 4 * C, L]]; },
  workspaceFloats(c, batch, seq) {
    const BT = batch * seq, C = c.d_model, V = c.vocab_size;
    const perLayer = BT * (16 * C + 4) + c.n_head * BT * seq;
    const attScratch = ((seq + 15) & ~15) * (4 * (C / c.n_head) + 2); // odin_att_scratch_floats
    return BT * C + c.n_layer * perLayer + BT * C + 4 * BT + BT * V + BT * 14 * C + BT * V + attScratch;
  },
  generationFloats(c, B) { // KV cache of the whole context + decode scratch
    const C = c.d_model;
    return 2 * c.n_layer * B * c.context * C + B * C * 3 + B * 3 * C + B * 8 * C + c.context + B * c.vocab_size;
  },
  init(m, name, view, rng) { // odin.model.GPT.init_weights
    const base = name.split('.').pop();
    if (base.endsWith('_b')) view.fill(0);
    else if (base === 'ln1_w' || base === 'ln2_w' || base === 'lnf_w') view.fill(1);
    else {
      const std = base === 'attproj_w' || base === 'fcproj_w' ? 0.02 / Math.sqrt(2 * m.config.n_layer) : 0.02;
      for (let i = 0; i < view.length; i++) view[i] = rng.normal() * std;
    }
  },
  describe: (c) => `GPT · ${c.n_layer} layers · d_model ${c.d_model} · ${c.n_head} heads · context ${c.context}`,
};

const RWKV = {
  name: 'rwkv',
  label: 'RWKV-4',
  fn: {
    free: 'odin_rwkv_free', numParams: 'odin_rwkv_num_params', params: 'odin_rwkv_params', grads: 'odin_rwkv_grads',
    adamM: 'odin_rwkv_adam_m', adamV: 'odin_rwkv_adam_v', wsCreate: 'odin_rwkv_ws_create', wsFree: 'odin_rwkv_ws_free',
    genCreate: 'odin_rwkv_state_create', genFree: 'odin_rwkv_state_free', trainStep: 'odin_wasm_rwkv_train_step',
  },
  q: { create: 'odin_rwkv_create_q', qblock: 'odin_rwkv_qblock', qbytes: 'odin_rwkv_qbytes', tensorType: 'odin_rwkv_tensor_type',
    tensorInfo: 'odin_rwkv_tensor_info' },
  create: (x, out, c, types) => (types
    ? x.odin_rwkv_create_q(out, c.vocab_size, c.n_layer, c.d_model, ffnWidth(c), c.ln_eps ?? 1e-5, types.matrix, types.embed)
    : x.odin_rwkv_create(out, c.vocab_size, c.n_layer, c.d_model, ffnWidth(c), c.ln_eps ?? 1e-5)),
  setup() {},
  decode(m, token) {
    const b = m.genBuf;
    m.odin.i32(b, 1)[0] = token;
    return m.odin.x.odin_rwkv_decode(m.h, m.gen, b, 1, b + 32);
  },
  resetGeneration: (m) => m.odin.check(m.odin.x.odin_rwkv_state_reset(m.gen, -1), 'odin_rwkv_state_reset'),
  stateBytes: (m) => m.odin.x.odin_rwkv_state_bytes(m._generationState()) >>> 0, // shift vectors + WKV accumulators
  maxLength: () => Infinity, // the state does not grow: a token costs the same at any length
  trainStep: (m, ws, p, B, T, h, out) => m.odin.x.odin_wasm_rwkv_train_step(m.h, ws, p.tokens, p.targets, p.mask,
    B, T, ...h, out, out + 4),
  numParams: (c) => { const C = c.d_model, F = ffnWidth(c); return c.vocab_size * C + 4 * C + c.n_layer * (5 * C * C + 2 * F * C + 11 * C); },
  quantTensors: (c) => { const C = c.d_model, F = ffnWidth(c), L = c.n_layer; // emb; att key/value/receptance/output, ffn key/receptance/value
    return [['embed', c.vocab_size, C, 1], ['matrix', C, C, 4 * L], ['matrix', F, C, L], ['matrix', C, C, L], ['matrix', C, F, L]]; },
  workspaceFloats(c, batch, seq) { // odin_rwkv_ws_create
    const BT = batch * seq, C = c.d_model, F = ffnWidth(c), V = c.vocab_size;
    return 2 * BT * C + 2 * BT + c.n_layer * BT * (10 * C + F + 4) + BT * C + 2 * BT + BT * V + 2 * BT
      + BT * (4 * C + F) + BT * (10 * C + F + V) + 3 * seq * C;
  },
  generationFloats(c, B) { // odin_rwkv_state_create: the state proper (L x 5 x C per sequence) + step scratch
    const C = c.d_model, F = ffnWidth(c);
    return c.n_layer * 5 * B * C + B * (12 * C + 2 * F + c.vocab_size) + 2 * B;
  },
  init(m, name, view, rng) { // odin.rwkv.RWKV.init_weights (RWKV-4 initialisation)
    const L = m.config.n_layer, C = m.config.d_model;
    const base = name.split('.').pop();
    const layer = name.startsWith('h.') ? Number(name.split('.')[1]) : 0;
    const r01 = L > 1 ? layer / (L - 1) : 0, q = 1 - layer / L;
    const perChannel = (f) => { for (let c = 0; c < view.length; c++) view[c] = f(c); };
    const ramp = (c) => c / C;
    if (base.endsWith('_b')) view.fill(0);
    else if (base.startsWith('ln') && base.endsWith('_w')) view.fill(1);
    else if (base === 'emb') for (let i = 0; i < view.length; i++) view[i] = (2 * rng.uniform() - 1) * 1e-4;
    else if (base === 'att_time_decay') perChannel((c) => -5 + 8 * (c / Math.max(C - 1, 1)) ** (0.7 + 1.3 * r01));
    else if (base === 'att_time_first') perChannel((c) => Math.log(0.3) + 0.5 * (((c + 1) % 3) - 1));
    else if (base === 'att_time_mix_k' || base === 'ffn_time_mix_k' || base === 'ffn_time_mix_r') perChannel((c) => ramp(c) ** q);
    else if (base === 'att_time_mix_v') perChannel((c) => ramp(c) ** q + 0.3 * r01);
    else if (base === 'att_time_mix_r') perChannel((c) => ramp(c) ** (0.5 * q));
    else {
      const std = base === 'att_output_w' || base === 'ffn_value_w' ? 0.02 / Math.sqrt(2 * L) : 0.02;
      for (let i = 0; i < view.length; i++) view[i] = rng.normal() * std;
    }
  },
  describe: (c) => `RWKV-4 · ${c.n_layer} layers · d_model ${c.d_model} · channel-mix ${ffnWidth(c)} · `
    + `training context ${c.context}, no limit when generating`,
};

export const ARCHS = { gpt: GPT, rwkv: RWKV };

function ffnWidth(c) { return c.d_ffn || 4 * c.d_model; }

function archOf(cfg) {
  const name = cfg.arch ?? 'gpt';
  const arch = ARCHS[name];
  if (!arch) throw new OdinError(`model.json: arch ${JSON.stringify(name)} is not one this runtime runs (${Object.keys(ARCHS).join(', ')})`, 2);
  return arch;
}

/* ------------------------------------------------------------------ the model */

function yieldToEventLoop() {
  if (typeof MessageChannel === 'function') {
    return new Promise((resolve) => {
      const ch = new MessageChannel();
      ch.port1.onmessage = () => { ch.port1.close(); resolve(); };
      ch.port2.postMessage(0);
    });
  }
  return new Promise((resolve) => setTimeout(resolve, 0));
}

const now = () => (typeof performance !== 'undefined' ? performance.now() : Date.now());

/** A small seeded PRNG (mulberry32) for batch sampling in the page. */
export function makeRng(seed = 1) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class OdinModel {
  /** odin: an Odin; manifest: model.json; weights: bytes of weights.bin (little-endian float32;
   * a quantized export: the float32 section, then the quantized blocks) */
  constructor(odin, manifest, weights, { trainBatch = 16 } = {}) {
    const cfg = manifest.model;
    this.odin = odin;
    this.manifest = manifest;
    this.config = cfg;
    this.impl = archOf(cfg); // the architecture's entry of ARCHS
    this.arch = this.impl.name;
    this.tokenizer = makeTokenizer(manifest.tokenizer);
    this.special = manifest.special ?? { pad: this.tokenizer.padId, bos: this.tokenizer.bosId, end: this.tokenizer.endId };
    this.abacus = cfg.abacus ? { n: cfg.abacus, ...manifest.abacus } : null;
    this.V = cfg.vocab_size;
    this.context = cfg.context;             // GPT: the position limit; RWKV: the training length
    this.maxLength = this.impl.maxLength(cfg); // prompt + generated tokens (Infinity for RWKV)
    this.step = 0; // optimizer steps taken in this page
    const x = odin.x;
    const missing = Object.values(this.impl.fn).filter((name) => typeof x[name] !== 'function');
    if (missing.length) throw new OdinError(`this wasm module cannot run ${this.impl.label} models (no ${missing.join(', ')}): rebuild it`, 5);
    // weights: float32, or quantized (the matrices and the token embedding in llama.cpp's
    // blocks, everything else float32): then the C model is made by create_q and holds a
    // second, byte block; it answers but never trains
    const q = manifest.quant ?? null;
    this.quant = q ? { matrix: q.matrix, embed: q.embed } : null;
    const types = q ? { matrix: quantTypeId(q.matrix, 'model.json quant.matrix'), embed: quantTypeId(q.embed, 'model.json quant.embed') } : null;
    if (q) {
      const qmissing = Object.values(this.impl.q).filter((name) => typeof x[name] !== 'function');
      if (qmissing.length) throw new OdinError(`this wasm module cannot run quantized models (no ${qmissing.join(', ')}): rebuild it`, 5);
    }
    this.nWeights = manifest.n_params; // every weight, float32 or quantized
    this.weightSizes = weightBytes({ ...cfg, n_params: manifest.n_params }, this.quant);
    // memory sized from the model: the weights and one generation state now; the training
    // blocks (gradients, AdamW moments: 3 x the weights) and a workspace for trainBatch of the
    // export's examples when it first trains (a page that only answers never holds them; a
    // longer batch grows the memory when it comes)
    this.trainSeq = this._exampleLength(manifest.examples ?? []);
    this.trainBatch = trainBatch;
    this.trained = false;
    // memory planned from what the C side will hold: a quantized model's blocks, not floats
    this.plannedBytes = estimateMemory({ ...cfg, n_params: manifest.n_params, quant: this.quant }, { cacheBatch: 1, training: false });
    odin.reserve(this.plannedBytes + 2 * MiB);
    this.scratch = odin.malloc(64); // out-parameters
    odin.check(this.impl.create(x, this.scratch, cfg, types), `${this.impl.name} create`);
    this.h = odin.u32(this.scratch, 1)[0];
    this.impl.setup(this);
    this.nParams = this._c('numParams', this.h) >>> 0; // floats in the parameter block
    const floatParams = q ? q.float_params : manifest.n_params;
    if (this.nParams !== floatParams) {
      const what = q ? 'float32 parameters' : 'parameters';
      throw new OdinError(`model.json has ${floatParams} ${what}, the wasm model ${this.nParams}`, 1);
    }
    const bytes = weights instanceof Uint8Array ? weights
      : new Uint8Array(weights.buffer ?? weights, weights.byteOffset ?? 0, weights.byteLength ?? undefined);
    const floatBytes = 4 * this.nParams;
    if (q) {
      const qbytes = this.odin.x[this.impl.q.qbytes](this.h) >>> 0;
      if (qbytes !== q.quant_bytes) throw new OdinError(`model.json has ${q.quant_bytes} bytes of ${q.matrix} blocks, the wasm model ${qbytes}`, 1);
      if (floatBytes !== q.float_bytes || bytes.length < floatBytes + qbytes) {
        throw new OdinError(`weights hold ${bytes.length} bytes, the model needs ${floatBytes} + ${qbytes}`, 1);
      }
      this._checkLayout(manifest.tensors);
      odin.u8(this._c('params', this.h) >>> 0, floatBytes).set(bytes.subarray(0, floatBytes));
      odin.u8(this.odin.x[this.impl.q.qblock](this.h) >>> 0, qbytes).set(bytes.subarray(floatBytes, floatBytes + qbytes));
      this.trainedWeights = null; // nothing changes a quantized model's weights in the page: no copy kept
    } else {
      const src = weights instanceof Float32Array ? weights
        : bytes.byteOffset % 4 === 0 ? new Float32Array(bytes.buffer, bytes.byteOffset, Math.floor(bytes.length / 4))
          : new Float32Array(bytes.slice().buffer);
      if (src.length < this.nParams) throw new OdinError(`weights hold ${src.length} floats, the model needs ${this.nParams}`, 1);
      this.params().set(src.subarray(0, this.nParams));
      this.trainedWeights = src.subarray(0, this.nParams); // for restoreWeights() (shares the download)
    }
    // generation: the state of one sequence (KV cache or recurrent state, made on first use)
    // and genBuf = token, position, Abacus id (+0, +4, +8), the sampler's xorshift64* state
    // (+16), the sampled token (+24), logits (+32)
    this.gen = 0;
    this.genBuf = odin.malloc(32 + 4 * this.V);
    this.ws = 0; this.wsShape = [0, 0];
    // genBuf and the generation state serve one sequence: generations take turns (a
    // promise chain, in call order); `generating` is true while one runs
    this._genTurn = Promise.resolve();
    this.generating = false;
    this.lastStats = null;
  }

  /** Wait for this model's earlier generations to finish; returns the function that ends this one's turn. */
  async _takeGenerationTurn() {
    let release;
    const mine = new Promise((resolve) => { release = resolve; });
    const before = this._genTurn;
    this._genTurn = before.then(() => mine);
    await before;
    if (!this.h) { release(); throw new OdinError('the model was freed', 7); }
    this.generating = true;
    return () => { this.generating = false; release(); };
  }

  /** Weights and buffers must not change under a running generation (its tokens would mix two models). */
  _refuseWhileGenerating(what) {
    if (this.generating) throw new OdinError(`${what} while a generation is running on this model: finish or stop it first (break out of stream(), or pass a signal)`, 7);
  }

  /** Positions a batch of these examples needs (makeBatch's T), at most the context; 0 without examples. */
  _exampleLength(examples) {
    let T = 0;
    try {
      for (const e of examples) T = Math.max(T, 1 + this.tokenizer.encode(e.prompt).length + this.tokenizer.encode(e.answer).length);
    } catch { T = this.context; } // not encodable: makeBatch will say so; plan for the context
    return Math.min(T, this.context);
  }

  /** A quantized export's tensor table (type and offset of each tensor, in order) must be the
   * wasm model's (odin_*_tensor_info / tensor_type): the bytes are copied blindly. */
  _checkLayout(tensors) {
    const { odin } = this, x = odin.x, s = this.scratch, q = this.impl.q;
    const n = this.odin.x[this.impl.name === 'gpt' ? 'odin_gpt_num_tensors' : 'odin_rwkv_num_tensors'](this.h);
    if (!Array.isArray(tensors) || tensors.length !== n) throw new OdinError(`model.json lists ${tensors?.length} tensors, the wasm model has ${n}`, 1);
    tensors.forEach((t, i) => {
      odin.check(x[q.tensorInfo](this.h, i, s, s + 4, s + 8, s + 12), q.tensorInfo);
      odin.check(x[q.tensorType](this.h, i, s + 16), q.tensorType);
      const [offset, , , type] = odin.u32(s + 4, 4);
      const name = odin.cstr(odin.u32(s, 1)[0]);
      const want = QUANT_TYPES[t.type ?? 'f32'];
      if (t.name.replace(/^h\.\d+\./, '') !== name || offset !== t.offset || type !== want) {
        throw new OdinError(`model.json tensor ${i} (${t.name}, ${t.type} at ${t.offset}) is not the wasm model's (${name}, type ${type} at ${offset})`, 1);
      }
    });
  }

  /** How the weights are stored: 'f32', or the matrices' block type ('q8_0'), with the token
   * embedding's when it differs ('q4_0 (embedding q8_0)'), as odin.model.WeightTypes.describe. */
  weightFormat() {
    if (!this.quant) return 'f32';
    const { matrix, embed } = this.quant;
    return matrix === embed ? matrix : `${matrix} (embedding ${embed})`;
  }

  /** Whether this model can train in the page (a quantized one answers only). */
  get canTrain() { return !this.quant; }

  _refuseQuantized(what) {
    if (this.quant) {
      const { matrix, embed } = this.quant;
      throw new OdinError(`${what}: this model's weights are quantized (${matrix}${embed !== matrix ? `, embedding ${embed}` : ''}): it answers but cannot train; `
        + 'export the float32 checkpoint (odin export web without --quant) to train in the page', 7);
    }
  }

  /** call the architecture's C function for a shared operation (see ARCHS) */
  _c(op, ...args) { return this.odin.x[this.impl.fn[op]](...args); }

  params() { return this.odin.f32(this._c('params', this.h) >>> 0, this.nParams); }
  /** The gradient block (allocated, with the AdamW moments, on first use). */
  grads() {
    const p = this._c('grads', this.h) >>> 0;
    if (!p) throw new OdinError(`${this.impl.fn.grads}: ${this.odin.lastError()}`, 3);
    return this.odin.f32(p, this.nParams);
  }

  /** Zero the AdamW moments and the step count (the next trainStep is step 1). A model that
   * has not trained holds no moments (the C side allocates gradients and moments, zeroed, at
   * the first trainStep): nothing to zero then. */
  resetOptimizer() {
    if (this.step > 0 || this.trained) {
      this.odin.f32(this._c('adamM', this.h) >>> 0, this.nParams).fill(0);
      this.odin.f32(this._c('adamV', this.h) >>> 0, this.nParams).fill(0);
    }
    this.step = 0;
  }

  /** Back to the exported weights (and a fresh optimizer). A quantized model's weights never
   * change in the page (it neither trains nor takes random weights): nothing to restore. */
  restoreWeights() {
    this._refuseWhileGenerating('restoreWeights()');
    if (this.trainedWeights) this.params().set(this.trainedWeights);
    this.resetOptimizer();
  }

  /** Fresh random weights, initialised as the native model's init_weights does (GPT-2's
   * scheme for GPT; RWKV-4's per-layer decay / bonus / token-shift curves for RWKV; the same
   * formulas, not the same random numbers), and a fresh optimizer: training from scratch. */
  randomizeWeights(seed = 1) {
    this._refuseQuantized('randomizeWeights()');
    this._refuseWhileGenerating('randomizeWeights()');
    const uniform = makeRng(seed);
    const rng = {
      uniform,
      normal: () => { const u = 1 - uniform(), v = uniform(); return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v); },
    };
    const p = this.params();
    for (const t of this.manifest.tensors) {
      const n = t.shape.reduce((a, b) => a * b, 1);
      this.impl.init(this, t.name, p.subarray(t.offset, t.offset + n), rng);
    }
    this.resetOptimizer();
  }
  memoryBytes() { return this.odin.memoryBytes(); }

  /** One line about the model for a page: architecture and shape. */
  describe() { return this.impl.describe(this.config); }

  /** Bytes of generation state for one sequence: the recurrent state for RWKV (the same at
   * any length), the KV cache of the whole context for GPT. */
  generationStateBytes() {
    return this.impl.stateBytes(this);
  }

  free() {
    this._refuseWhileGenerating('free()');
    const { odin } = this;
    if (this.ws) this._c('wsFree', this.ws);
    if (this.gen) this._c('genFree', this.gen);
    if (this.h) this._c('free', this.h);
    odin.free(this.genBuf);
    odin.free(this.scratch);
    this.h = this.ws = this.gen = this.genBuf = this.scratch = 0;
  }

  _generationState() {
    if (!this.gen) {
      this.odin.check(this._c('genCreate', this.scratch, this.h, 1), this.impl.fn.genCreate);
      this.gen = this.odin.u32(this.scratch, 1)[0];
    }
    return this.gen;
  }

  /** [<bos>] + encode(text): how the model saw prompts in training */
  encodePrompt(text) {
    // a model trained with zero-padded operands (dataset prompt_zeros) is asked in that form,
    // as odin.data.arithmetic.padded_operands writes it: "12+5=" -> "0012+0005=" for width 4
    const width = this.manifest.task?.prompt_width ?? 0;
    const m = width > 0 ? /^([0-9]+)([-+*/])([0-9]+)=$/.exec(text) : null;
    if (m) text = `${m[1].padStart(width, '0')}${m[2]}${m[3].padStart(width, '0')}=`;
    return [this.special.bos, ...this.tokenizer.encode(text)];
  }

  /** Abacus ids of a token row (odin/abacus.py: digit runs counted from the right before the
   * first separator, from the left after it; 0 elsewhere; with abacus.next the separator
   * carries 1 and the answer run right after it counts from 2). */
  abacusIds(tokens) {
    const { digit_first: d0, sep_id: sep, n } = this.abacus;
    const T = tokens.length, ids = new Int32Array(T);
    let split = tokens.indexOf(sep);
    if (split < 0) split = T;
    const coupled = !!this.abacus.next && split < T;
    if (coupled) ids[split] = 1;
    for (let s = 0; s < T;) {
      if (!(tokens[s] >= d0 && tokens[s] < d0 + 10)) { s++; continue; }
      let e = s;
      while (e < T && tokens[e] >= d0 && tokens[e] < d0 + 10) e++;
      const first = coupled && s === split + 1 ? 2 : 1;
      for (let i = s; i < e; i++) ids[i] = s < split ? e - i : i - s + first;
      s = e;
    }
    for (const v of ids) if (v >= n) throw new OdinError(`a number has more places (${v}) than the model's Abacus table (${n})`, 2);
    return ids;
  }

  /** feed one token to the generation state; returns the address of the next-token logits */
  _decode(token, pos, abacusId) {
    this.odin.check(this.impl.decode(this, token, pos, abacusId), `${this.impl.name} decode`);
    return this.genBuf + 32;
  }

  /**
   * Stream generated tokens: an async iterator of {token, text, index, stats}.
   * prompt: text (encoded as [<bos>] + prompt) or an array of token ids.
   * options: maxTokens (default: the model's context; GPT stops at the end of its context,
   *   RWKV has no length limit: its state is the same size at any length), temperature (0 = greedy),
   *   topK (0 = off), topP (1 = off), seed (sampler seed, as odin.model.Sampler), stop (token
   *   ids that end generation; default [<end>]; the stop token is yielded with text ''),
   *   stopStrings (texts that end generation), signal (an AbortSignal).
   * Generations on one model take turns: a stream started while another runs waits for it
   * (call order), so each gets exactly the tokens it would get alone. Finish a stream, or
   * leave it with break / return(), to let the next one run.
   * Speed comes in two parts (GenerationStats): prefill (the prompt's tokens through the
   * model, up to the first generated token) and decode (each further token), both timed
   * around the engine's calls only — not the consumer's work between tokens, not the waits
   * for the event loop. `stats` (per token) is the running count; the iterator's return
   * value (and this.lastStats, of the last generation to finish) the final one.
   */
  async *stream(prompt, options = {}) {
    const { odin } = this, x = odin.x;
    const { temperature = 0, topK = 0, topP = 1, seed = 0, signal, stopStrings = [] } = options;
    const stop = new Set(options.stop ?? [this.special.end]);
    const ids = Array.isArray(prompt) || ArrayBuffer.isView(prompt) ? Array.from(prompt) : this.encodePrompt(prompt);
    if (!ids.length) throw new OdinError('the prompt must hold at least one token', 2);
    if (ids.length > this.maxLength) throw new OdinError(`the prompt is ${ids.length} tokens, the context is ${this.context}`, 1);
    const maxTokens = Math.min(options.maxTokens ?? this.context, this.maxLength - ids.length + 1);
    const endTurn = await this._takeGenerationTurn();
    const generated = [];
    let prefillMs = 0, decodeMs = 0;
    const stats = () => {
      const decodeTokens = Math.max(0, generated.length - 1); // the first token comes out of prefill
      return { promptTokens: ids.length, prefillMs, newTokens: generated.length, decodeTokens, decodeMs,
        decodeTokensPerSecond: decodeTokens > 0 && decodeMs > 0 ? decodeTokens / (decodeMs / 1000) : null };
    };
    try {
      this._generationState();
      this.impl.resetGeneration(this);
      const rng = this.genBuf + 16, out = this.genBuf + 24;
      const s64 = BigInt(Math.trunc(Number(seed) || 0)); // seeded as odin.model.Sampler: seed * golden + 1 (mod 2^64)
      odin.dv().setBigUint64(rng, BigInt.asUintN(64, s64 * 0x9E3779B97F4A7C15n + 1n), true);
      let started = now();
      const promptIds = this.abacus ? this.abacusIds(ids) : null;
      let logits = 0;
      for (let p = 0; p < ids.length; p++) logits = this._decode(ids[p], p, promptIds ? promptIds[p] : 0);
      let lastYield = now(), pos = ids.length, text = '', emitted = 0, prevDigit = false;
      let lastId = promptIds ? promptIds[ids.length - 1] : 0;
      for (let i = 0; i < maxTokens; i++) {
        if (signal?.aborted) break;
        odin.check(x.odin_sample(logits, this.V, temperature, topK, topP, rng, out), 'odin_sample');
        const token = odin.i32(out, 1)[0];
        if (i === 0) prefillMs = now() - started; else decodeMs += now() - started;
        generated.push(token);
        const isStop = stop.has(token);
        let piece = '';
        if (!isStop) {
          const full = this.tokenizer.decode(generated);
          // hold back an incomplete UTF-8 sequence (a BPE token can end inside a character)
          const upto = full.endsWith('\uFFFD') ? full.length - 1 : full.length;
          piece = full.slice(emitted, upto);
          emitted = Math.max(emitted, upto);
          text += piece;
        }
        yield { token, text: piece, index: i, stats: stats() };
        if (isStop || pos >= this.maxLength) break;
        if (stopStrings.some((s) => s && text.endsWith(s))) break;
        let aid = 0;
        if (this.abacus) { // as the C decoder: digits count up along a run, the first from the prompt's last id
          const d0 = this.abacus.digit_first;
          const isDigit = token >= d0 && token < d0 + 10;
          const last = ids[ids.length - 1], promptDigit = last >= d0 && last < d0 + 10;
          const start = i === 0 ? (promptDigit ? 1 : lastId + 1) : (prevDigit ? lastId + 1 : 1);
          lastId = isDigit ? Math.min(start, this.abacus.n - 1) : 0;
          prevDigit = isDigit;
          aid = lastId;
        }
        if (now() - lastYield > 15) { await yieldToEventLoop(); lastYield = now(); }
        started = now();
        logits = this._decode(token, pos, aid);
        pos++;
      }
    } finally {
      endTurn();
    }
    this.lastStats = stats();
    return this.lastStats;
  }

  /** Whole generation: {text, tokens, stats}; options as stream(), plus onToken(t). */
  async generate(prompt, options = {}) {
    const tokens = [];
    let text = '';
    const it = this.stream(prompt, options);
    try {
      for (;;) {
        const r = await it.next();
        if (r.done) return { text, tokens, stats: r.value }; // this generation's stats, whatever ran after it
        tokens.push(r.value.token);
        text += r.value.text;
        options.onToken?.(r.value);
      }
    } catch (err) {
      await it.return(undefined); // onToken threw: end the stream, so the next generation gets its turn
      throw err;
    }
  }

  /** Greedy token ids after a prompt (stops after <end>, which is included), like
   * odin.model.GPT.generate_greedy for one prompt. */
  async greedy(promptIds, maxNew) {
    const out = [];
    for await (const t of this.stream(promptIds, { maxTokens: maxNew, temperature: 0 })) out.push(t.token);
    return out;
  }

  /** The next-token logits after a prompt (text, encoded as [<bos>] + text, or token ids),
   * a Float32Array of the vocabulary's size: the prompt is fed token by token through the
   * generation state, as stream() does. With {all: true}, the logits after every position
   * (an array of them: scoring a sequence in one pass). Takes its turn like a generation. */
  async logits(prompt, { all = false } = {}) {
    const ids = Array.isArray(prompt) || ArrayBuffer.isView(prompt) ? Array.from(prompt) : this.encodePrompt(prompt);
    if (!ids.length) throw new OdinError('the prompt must hold at least one token', 2);
    if (ids.length > this.maxLength) throw new OdinError(`the prompt is ${ids.length} tokens, the context is ${this.context}`, 1);
    const endTurn = await this._takeGenerationTurn();
    try {
      this._generationState();
      this.impl.resetGeneration(this);
      const abacusIds = this.abacus ? this.abacusIds(ids) : null;
      const every = [];
      let logits = 0;
      for (let p = 0; p < ids.length; p++) {
        logits = this._decode(ids[p], p, abacusIds ? abacusIds[p] : 0);
        if (all) every.push(this.odin.f32(logits, this.V).slice());
      }
      return all ? every : this.odin.f32(logits, this.V).slice();
    } finally {
      endTurn();
    }
  }

  /**
   * A batch from {prompt, answer} examples, laid out as odin/data/batching.py does:
   * tokens [B, T+1] = <bos> prompt answer <end> <pad>..., mask [B, T] = 1 on answer and
   * <end> targets. T is the longest example's length - 1 (at most the context for GPT;
   * RWKV has no position table: any length, the workspace grows to it).
   */
  makeBatch(examples) {
    const tk = this.tokenizer, seqs = [], promptLens = [];
    for (const e of examples) {
      const p = tk.encode(e.prompt), a = tk.encode(e.answer);
      seqs.push([this.special.bos, ...p, ...a, this.special.end]);
      promptLens.push(1 + p.length);
    }
    const T = Math.max(...seqs.map((s) => s.length)) - 1;
    if (T > this.maxLength) throw new OdinError(`an example needs ${T} positions, the context is ${this.context}`, 1);
    const B = seqs.length;
    const tokens = new Int32Array(B * (T + 1)).fill(this.special.pad);
    const mask = new Uint8Array(B * T);
    seqs.forEach((s, b) => {
      tokens.set(s, b * (T + 1));
      for (let t = promptLens[b] - 1; t < s.length - 1; t++) mask[b * T + t] = 1;
    });
    return { tokens, mask, B, T };
  }

  /**
   * One optimizer step (forward, backward, clip, AdamW) on `batchSize` examples drawn with
   * `rng` from `examples` (default: the export's training examples), or on a prepared
   * batch {tokens, mask, B, T}. Hyper-parameters default to the run's (model.json "train").
   * Returns {loss, gradNorm, step, tokens, ms}.
   */
  trainStep(examplesOrBatch = this.manifest.examples, options = {}) {
    this._refuseQuantized('trainStep()');
    const tr = this.manifest.train ?? {};
    const {
      batchSize = Math.min(16, tr.batch_size ?? 16), rng = (this._rng ??= makeRng(1234)),
      lr = tr.lr ?? 1e-3, beta1 = tr.beta1 ?? 0.9, beta2 = tr.beta2 ?? 0.95, eps = tr.eps ?? 1e-8,
      weightDecay = tr.weight_decay ?? 0.0, gradClip = tr.grad_clip ?? 1.0,
    } = options;
    let batch = examplesOrBatch;
    if (Array.isArray(examplesOrBatch)) {
      if (!examplesOrBatch.length) throw new OdinError('no training examples (export with --examples N)', 2);
      const pick = Array.from({ length: batchSize }, () => examplesOrBatch[Math.floor(rng() * examplesOrBatch.length)]);
      batch = this.makeBatch(pick);
    }
    const { tokens, mask, B, T } = batch;
    this._refuseWhileGenerating('trainStep()');
    const { odin } = this;
    const t0 = now();
    if (!this.trained) { // the first step: room for the training blocks and the workspace, at once
      const cfg = { ...this.config, n_params: this.nParams };
      const extra = 3 * 4 * this.nParams + 4 * this.impl.workspaceFloats(cfg, Math.max(B, this.trainBatch),
        Math.max(T, this.trainSeq || T));
      odin.reserve(extra);
      this.plannedBytes += extra;
    }
    if (!this.ws || B > this.wsShape[0] || T > this.wsShape[1]) {
      if (this.ws) { this._c('wsFree', this.ws); this.ws = 0; }
      const B2 = Math.max(B, this.wsShape[0]), T2 = Math.max(T, this.wsShape[1]);
      odin.check(this._c('wsCreate', this.scratch, this.h, B2, T2), this.impl.fn.wsCreate);
      this.ws = odin.u32(this.scratch, 1)[0];
      this.wsShape = [B2, T2];
    }
    const inp = new Int32Array(B * T), tgt = new Int32Array(B * T);
    for (let b = 0; b < B; b++) {
      inp.set(tokens.subarray(b * (T + 1), b * (T + 1) + T), b * T);
      tgt.set(tokens.subarray(b * (T + 1) + 1, (b + 1) * (T + 1)), b * T);
    }
    let ids = null;
    if (this.abacus) {
      ids = new Int32Array(B * T);
      for (let b = 0; b < B; b++) ids.set(this.abacusIds(inp.subarray(b * T, (b + 1) * T)), b * T);
    }
    const ptrs = { tokens: odin.put(inp), ids: ids ? odin.put(ids) : 0, targets: odin.put(tgt), mask: odin.put(mask) };
    try {
      const hyper = [lr, beta1, beta2, eps, weightDecay, gradClip, this.step + 1];
      odin.check(this.impl.trainStep(this, this.ws, ptrs, B, T, hyper, this.scratch + 8), 'trainStep');
    } finally {
      for (const p of Object.values(ptrs)) odin.free(p);
    }
    this.step += 1;
    this.trained = true;
    const res = odin.f32(this.scratch + 8, 2);
    let counted = 0;
    for (const m of mask) counted += m;
    return { loss: res[0], gradNorm: res[1], step: this.step, tokens: B * T, counted, ms: now() - t0 };
  }
}
