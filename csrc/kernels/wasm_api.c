/* wasm_api.c — helpers that only the WebAssembly module has (compiled by tools/build_wasm.py,
 * never by the native build: odin/_build_ffi.py skips this file, and it is empty off wasm).
 *
 * The module exports every function of odin.h except the kissing-spheres trainer
 * (spheres.c needs threads; a page trains single-threaded through odin_gpt_* / odin_rwkv_*), with the
 * same C signatures: tools/build_wasm.py reads the names from odin.h and passes
 * --export=NAME for each, so the header stays the one list. This file adds what a host
 * without a C toolchain needs on top: an allocator for its buffers, the memory size, one
 * call for a whole training step (per architecture), and what the module was built with.
 *
 * Memory model: wasm32, one linear memory that grows as malloc needs it (up to 4 GiB);
 * pointers are byte offsets into it. A host must re-create its typed-array views after any
 * call that may allocate (memory.grow detaches the old ArrayBuffer in JavaScript).
 *
 * The allocator: zig's wasi libc ships a power-of-two size-class allocator (its symbols are
 * weak) that rounds every large block up to a power of two and never merges freed blocks,
 * which can double the memory of a model (a 400 MB parameter block takes 512 MB, four of
 * them 2 GB). The malloc family below replaces it: boundary-tag blocks with immediate
 * coalescing, segregated free lists by power-of-two size, first fit; the memory grows by
 * what a request lacks and never shrinks. Single-threaded, like the module.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "../internal.h"

#if defined(__wasm__)

#define EXPORT(name) __attribute__((export_name(name), used))

/* ------------------------------------------------------------------ allocator
 * Block = 16-byte header + payload (payloads 16-byte aligned):
 *   size  total bytes of the block (header included), a multiple of 16; bit 0 = in use
 *   prev  size of the physically previous block (0 for the first of a region)
 * A free block keeps its free-list links in its payload. Every region (the memory from
 * __heap_base, then each grow) ends with a 16-byte "fence" block marked in use; a grow that
 * continues the region turns the fence into free space, a grow that does not (someone else
 * took pages in between) stretches the fence over the gap, so nothing ever merges across. */
typedef struct hblk { uint32_t size, prev, pad0, pad1; struct hblk *next_free, *prev_free; } hblk;
enum { HDR = 16, MIN_BLOCK = 32, N_BINS = 32, PAGE = 65536 };
extern unsigned char __heap_base;
static hblk *g_bins[N_BINS];
static uintptr_t g_top;      /* end of the heap (= memory end after each grow) */
static hblk *g_fence;        /* the last block: the fence */
static size_t g_in_use;      /* bytes in used blocks (headers included) */

#define BSIZE(b) ((b)->size & ~(uint32_t)15)
#define USED(b) ((b)->size & 1u)
static inline hblk *next_blk(hblk *b) { return (hblk *)((char *)b + BSIZE(b)); }
static inline int bin_of(uint32_t size) { return 31 - __builtin_clz(size); }

static void bin_insert(hblk *b) {
    int i = bin_of(BSIZE(b));
    b->prev_free = NULL;
    b->next_free = g_bins[i];
    if (g_bins[i]) g_bins[i]->prev_free = b;
    g_bins[i] = b;
}
static void bin_remove(hblk *b) {
    if (b->prev_free) b->prev_free->next_free = b->next_free;
    else g_bins[bin_of(BSIZE(b))] = b->next_free;
    if (b->next_free) b->next_free->prev_free = b->prev_free;
}

/* b (not in a bin) becomes free: merge with free neighbours, then bin it */
static void release(hblk *b) {
    hblk *n = next_blk(b);
    if (!USED(n)) { bin_remove(n); b->size = BSIZE(b) + BSIZE(n); }
    if (b->prev) {
        hblk *p = (hblk *)((char *)b - b->prev);
        if (!USED(p)) { bin_remove(p); p->size = BSIZE(p) + BSIZE(b); b = p; }
    }
    b->size &= ~(uint32_t)15;
    next_blk(b)->prev = BSIZE(b);
    bin_insert(b);
}

/* make [start, end) heap: a free block closed by an end fence; a region that continues the
 * previous one absorbs its fence, a region after a gap gets the gap fenced off */
static void add_region(uintptr_t start, uintptr_t end) {
    hblk *b;
    if (g_fence && start == g_top) { /* contiguous: the old fence becomes the new free block */
        b = g_fence;
        b->size = (uint32_t)(end - HDR - (uintptr_t)b) | 1u;
    } else {
        if (g_fence) g_fence->size = (uint32_t)(start - (uintptr_t)g_fence) | 1u; /* fence over the gap */
        b = (hblk *)start;
        b->prev = g_fence ? BSIZE(g_fence) : 0;
        b->size = (uint32_t)(end - HDR - start) | 1u;
    }
    g_fence = (hblk *)(end - HDR);
    g_fence->size = HDR | 1u;
    g_fence->prev = BSIZE(b);
    g_top = end;
    release(b);
}

/* add `pages` of memory to the heap; 0 on failure */
static int heap_grow(size_t pages) {
    size_t old = __builtin_wasm_memory_grow(0, pages);
    if (old == (size_t)-1) return 0;
    uintptr_t start = (uintptr_t)old * PAGE;
    add_region(start, start + pages * PAGE);
    return 1;
}

static void heap_init(void) {
    uintptr_t start = ((uintptr_t)&__heap_base + 15) & ~(uintptr_t)15;
    uintptr_t end = (uintptr_t)__builtin_wasm_memory_size(0) * PAGE;
    if (end - start >= MIN_BLOCK + HDR) {
        add_region(start, end); /* no fence yet: the plain first region */
    } else {
        g_top = 1; /* not contiguous with anything: the first grow opens a region */
    }
}

static hblk *find_fit(uint32_t need) {
    for (int i = bin_of(need); i < N_BINS; i++)
        for (hblk *b = g_bins[i]; b; b = b->next_free)
            if (BSIZE(b) >= need) return b;
    return NULL;
}

/* take `need` bytes at the start of free block b (in a bin); the rest stays free */
static void *carve(hblk *b, uint32_t need) {
    bin_remove(b);
    uint32_t size = BSIZE(b);
    if (size - need >= MIN_BLOCK) {
        hblk *r = (hblk *)((char *)b + need);
        r->size = size - need;
        r->prev = need;
        next_blk(r)->prev = r->size;
        bin_insert(r);
        size = need;
    }
    b->size = size | 1u;
    g_in_use += size;
    return (char *)b + HDR;
}

static void *heap_alloc(size_t n, size_t align) {
    if (!g_top) heap_init();
    if (n > 0xFFF00000u - 2 * (size_t)align) return NULL;
    uint32_t need = (uint32_t)((n + HDR + 15) & ~(size_t)15);
    if (need < MIN_BLOCK) need = MIN_BLOCK;
    /* over-alignment: room to move the payload to an aligned address, with the skipped
     * part at least a minimum block so that it can be given back */
    uint32_t ask = align > 16 ? need + (uint32_t)align + MIN_BLOCK : need;
    hblk *b = find_fit(ask);
    if (!b) {
        size_t last_free = (g_fence && g_fence->prev && !USED((hblk *)((char *)g_fence - g_fence->prev)))
                               ? g_fence->prev : 0;
        size_t want = ask + HDR > last_free ? ask + HDR - last_free : 1;
        if (!heap_grow((want + PAGE - 1) / PAGE)) return NULL;
        /* a grow that did not continue the heap (someone else took pages) cannot extend
         * the last free block: then grow by the whole request */
        if (!(b = find_fit(ask)) && (!heap_grow((ask + 2 * HDR + PAGE - 1) / PAGE) || !(b = find_fit(ask))))
            return NULL;
    }
    if (align > 16) {
        uintptr_t payload = (uintptr_t)b + HDR;
        uintptr_t aligned = (payload + MIN_BLOCK + align - 1) & ~(uintptr_t)(align - 1);
        if (payload % align == 0) aligned = payload;
        if (aligned != payload) { /* split off the front as a free block */
            bin_remove(b);
            uint32_t front = (uint32_t)(aligned - payload);
            hblk *a = (hblk *)((char *)b + front);
            a->size = BSIZE(b) - front;
            a->prev = front;
            next_blk(a)->prev = a->size;
            b->size = front;
            bin_insert(b);
            bin_insert(a);
            b = a;
        }
    }
    return carve(b, need);
}

void *malloc(size_t n) { return heap_alloc(n, 16); }
void free(void *p) {
    if (!p) return;
    hblk *b = (hblk *)((char *)p - HDR);
    g_in_use -= BSIZE(b);
    release(b);
}
void *calloc(size_t count, size_t size) {
    if (size && count > (size_t)-1 / size) return NULL;
    void *p = malloc(count * size);
    if (p) memset(p, 0, count * size);
    return p;
}
size_t malloc_usable_size(void *p) { return p ? BSIZE((hblk *)((char *)p - HDR)) - HDR : 0; }
void *realloc(void *p, size_t n) {
    if (!p) return malloc(n);
    if (!n) { free(p); return NULL; }
    size_t have = malloc_usable_size(p);
    if (n <= have) return p;
    void *q = malloc(n);
    if (q) { memcpy(q, p, have); free(p); }
    return q;
}
void *aligned_alloc(size_t align, size_t n) {
    if (!align || (align & (align - 1))) return NULL;
    return heap_alloc(n, align < 16 ? 16 : align);
}
void *memalign(size_t align, size_t n) { return aligned_alloc(align, n); }
int posix_memalign(void **out, size_t align, size_t n) {
    if (!align || (align & (align - 1)) || align % sizeof(void *)) return 22; /* EINVAL */
    void *p = aligned_alloc(align, n);
    if (!p) return 12; /* ENOMEM */
    *out = p;
    return 0;
}

/* 16-byte aligned; NULL when the memory cannot grow. */
EXPORT("malloc") void *odin_wasm_malloc(size_t bytes) { return malloc(bytes ? bytes : 1); }
EXPORT("free") void odin_wasm_free(void *p) { free(p); }

/* Bytes in allocated blocks (headers included): what the module uses of its memory. */
EXPORT("odin_wasm_heap_in_use") double odin_wasm_heap_in_use(void) { return (double)g_in_use; }

/* Current size of the linear memory in bytes (pages of 64 KiB). */
EXPORT("odin_wasm_memory_bytes") double odin_wasm_memory_bytes(void) {
    return (double)__builtin_wasm_memory_size(0) * 65536.0;
}

/* Make sure `bytes` more can be allocated without growing the memory again, so that a
 * model's memory is sized once, up front, instead of in many small grows: a block that
 * large is allocated and freed at once and stays, coalesced, in the allocator's pool (the
 * memory grows at most once, by what the pool lacks). Returns the memory size in bytes,
 * or -1 when the memory cannot grow that far. */
EXPORT("odin_wasm_reserve") double odin_wasm_reserve(double bytes) {
    if (bytes > 4294901760.0) return -1.0;
    static void *volatile block; /* volatile: the compiler may not elide the malloc/free pair */
    block = malloc(bytes > 0 ? (size_t)bytes : 1);
    if (!block) return -1.0;
    free(block);
    block = NULL;
    return (double)__builtin_wasm_memory_size(0) * 65536.0;
}

/* 1 when the module was built with SIMD128 (it then also contains the scalar kernels). */
EXPORT("odin_wasm_simd") int odin_wasm_simd(void) {
#if defined(__wasm_simd128__)
    return 1;
#else
    return 0;
#endif
}

/* One optimizer step on one batch: zero the gradients, forward (odin_gpt_forward_ex: ids are
 * the Abacus ids for models that have them, else NULL), backward (dloss = 1), clip + AdamW
 * (odin_gpt_adamw_step). *loss and *grad_norm receive the step's loss and gradient norm
 * (either may be NULL). The same calls Python's GPT makes, in one call. */
EXPORT("odin_wasm_gpt_train_step")
odin_status odin_wasm_gpt_train_step(odin_gpt *model, odin_gpt_ws *ws, const int32_t *tokens, const int32_t *ids,
                                     const int32_t *targets, const uint8_t *mask, int B, int T,
                                     float lr, float beta1, float beta2, float eps, float weight_decay,
                                     float grad_clip, int t, float *loss, float *grad_norm) {
    ODIN_REQUIRE_PTR(model, "model");
    ODIN_REQUIRE_PTR(targets, "targets");
    float l = 0.0f, n = 0.0f;
    odin_status s0 = odin_gpt_enable_training(model); /* the first step allocates the training blocks */
    if (s0) return s0;
    memset(odin_gpt_grads(model), 0, odin_gpt_num_params(model) * sizeof(float));
    odin_status s = odin_gpt_forward_ex(model, ws, tokens, ids, targets, mask, B, T, &l);
    if (loss) *loss = l;
    if (s) return s;
    if ((s = odin_gpt_backward(model, ws, odin_gpt_grads(model), 1.0f))) return s;
    s = odin_gpt_adamw_step(model, lr, beta1, beta2, eps, weight_decay, grad_clip, t, &n);
    if (grad_norm) *grad_norm = n;
    return s;
}

/* The same step for an RWKV-4 model (odin_rwkv_*; no Abacus ids). The workspace keeps
 * pointers to tokens/targets/mask between forward and backward: both happen inside this
 * call, so the host may free its buffers as soon as it returns. */
EXPORT("odin_wasm_rwkv_train_step")
odin_status odin_wasm_rwkv_train_step(odin_rwkv *model, odin_rwkv_ws *ws, const int32_t *tokens,
                                      const int32_t *targets, const uint8_t *mask, int B, int T,
                                      float lr, float beta1, float beta2, float eps, float weight_decay,
                                      float grad_clip, int t, float *loss, float *grad_norm) {
    ODIN_REQUIRE_PTR(model, "model");
    ODIN_REQUIRE_PTR(targets, "targets");
    float l = 0.0f, n = 0.0f;
    odin_status s0 = odin_rwkv_enable_training(model); /* the first step allocates the training blocks */
    if (s0) return s0;
    memset(odin_rwkv_grads(model), 0, odin_rwkv_num_params(model) * sizeof(float));
    odin_status s = odin_rwkv_forward(model, ws, tokens, targets, mask, B, T, &l);
    if (loss) *loss = l;
    if (s) return s;
    if ((s = odin_rwkv_backward(model, ws, odin_rwkv_grads(model), 1.0f))) return s;
    s = odin_rwkv_adamw_step(model, lr, beta1, beta2, eps, weight_decay, grad_clip, t, &n);
    if (grad_norm) *grad_norm = n;
    return s;
}
#endif /* __wasm__ */
