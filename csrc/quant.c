/* quant.c — quantized weights: the block formats' reference quantizer and dequantizer, and
 * the product of activations with a quantized (or float) weight matrix.
 *
 * Quantizing and dequantizing follow ggml's reference code operation for operation (and
 * gguf-py's numpy port of it): the same bytes for the same floats. This file is compiled
 * for the baseline ISA only (no FMA), so `d * q + m` is two roundings here as there.
 *
 * A product out[M, N] (+)= inp[M, K] W[N, K]^T with W quantized takes one of two paths:
 *  - M <= ODIN_QINT_MAX_M rows (decoding, short prompts): the activations are quantized to
 *    8 bits per block (odin_q8a) once, then every output is a sum of integer block dot
 *    products (the ISA's qmatvec): the weights are read once, as compact as they are stored.
 *  - more rows (prefill, batched evaluation): W is dequantized panel by panel into float32
 *    and multiplied by the float GEMM, so the result is dequantize-then-fp32.
 * Either way each output column depends on its own row of W only, so splitting the columns
 * over threads (pool.c) gives the same bits for any thread count.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#if !defined(__wasm__)
#include <pthread.h>
#endif

static const struct { const char *name; size_t block_bytes; } k_types[ODIN_QTYPE_SLOTS] = {
    [ODIN_TYPE_F32] = {"f32", 4 * ODIN_QK},
    [ODIN_TYPE_Q4_0] = {"q4_0", sizeof(odin_block_q4_0)},
    [ODIN_TYPE_Q4_1] = {"q4_1", sizeof(odin_block_q4_1)},
    [ODIN_TYPE_Q5_0] = {"q5_0", sizeof(odin_block_q5_0)},
    [ODIN_TYPE_Q5_1] = {"q5_1", sizeof(odin_block_q5_1)},
    [ODIN_TYPE_Q8_0] = {"q8_0", sizeof(odin_block_q8_0)},
};

int odin_qtype_known(int type) { return type >= 0 && type < ODIN_QTYPE_SLOTS && k_types[type].name; }

const char *odin_qtype_name(int type) { return odin_qtype_known(type) ? k_types[type].name : NULL; }

size_t odin_quant_row_bytes(int type, long long cols) {
    if (!odin_qtype_known(type) || cols <= 0 || cols % ODIN_QK || cols > (long long)ODIN_DIM_MAX) return 0;
    return (size_t)(cols / ODIN_QK) * k_types[type].block_bytes;
}

/* ------------------------------------------------------------------ reference blocks */
static void quantize_q8_0(const float *x, void *out) {
    odin_block_q8_0 *b = out;
    float amax = 0.0f;
    for (int j = 0; j < ODIN_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    b->d = odin_f32_to_fp16(d);
    for (int j = 0; j < ODIN_QK; j++) b->qs[j] = (int8_t)roundf(x[j] * id);
}

/* the value of largest magnitude, sign kept (the first of equals) */
static float signed_max(const float *x) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < ODIN_QK; j++)
        if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }
    return max;
}
static void min_max(const float *x, float *min, float *max) {
    *min = *max = x[0];
    for (int j = 1; j < ODIN_QK; j++) { *min = fminf(*min, x[j]); *max = fmaxf(*max, x[j]); }
}
static int clamp_q(float v, int top) { const int q = (int)v; return q < 0 ? 0 : q > top ? top : q; }
static void pack_nibbles(uint8_t qs[16], const int q[32]) {
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((q[j] & 0x0f) | (q[j + 16] & 0x0f) << 4);
}
static void pack_fifth_bits(uint8_t qh[4], const int q[32]) {
    uint32_t h = 0;
    for (int j = 0; j < 32; j++) h |= (uint32_t)((q[j] >> 4) & 1) << j;
    for (int i = 0; i < 4; i++) qh[i] = (uint8_t)(h >> (8 * i));
}

/* The 4- and 5-bit codes of a block, `levels` = 16 or 32 of them. "_0": the scale d maps the
 * value of largest magnitude to -levels/2 and codes are q = x / d + levels/2 (rounded by
 * truncating x / d + levels/2 + 0.5, as ggml); "_1": d spans [min, max] in levels - 1 steps,
 * q = (x - min) / d. Returns d (and the minimum). */
static float codes_centred(const float *x, int levels, int q[32]) {
    const float half = (float)(levels / 2), d = signed_max(x) / -half, id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < ODIN_QK; j++) q[j] = clamp_q(x[j] * id + (half + 0.5f), levels - 1);
    return d;
}
static float codes_from_min(const float *x, int levels, int q[32], float *min) {
    float max;
    min_max(x, min, &max);
    const float d = (max - *min) / (float)(levels - 1), id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < ODIN_QK; j++) q[j] = clamp_q((x[j] - *min) * id + 0.5f, levels - 1);
    return d;
}

static void quantize_q4_0(const float *x, void *out) {
    odin_block_q4_0 *b = out;
    int q[32];
    b->d = odin_f32_to_fp16(codes_centred(x, 16, q));
    pack_nibbles(b->qs, q);
}
static void quantize_q4_1(const float *x, void *out) {
    odin_block_q4_1 *b = out;
    int q[32];
    float min;
    b->d = odin_f32_to_fp16(codes_from_min(x, 16, q, &min));
    b->m = odin_f32_to_fp16(min);
    pack_nibbles(b->qs, q);
}
static void quantize_q5_0(const float *x, void *out) {
    odin_block_q5_0 *b = out;
    int q[32];
    b->d = odin_f32_to_fp16(codes_centred(x, 32, q));
    pack_fifth_bits(b->qh, q);
    pack_nibbles(b->qs, q);
}
static void quantize_q5_1(const float *x, void *out) {
    odin_block_q5_1 *b = out;
    int q[32];
    float min;
    b->d = odin_f32_to_fp16(codes_from_min(x, 32, q, &min));
    b->m = odin_f32_to_fp16(min);
    pack_fifth_bits(b->qh, q);
    pack_nibbles(b->qs, q);
}

static uint32_t fifth_bits(const uint8_t qh[4]) {
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}
static void dequantize_q8_0(const void *in, float *y) {
    const odin_block_q8_0 *b = in;
    const float d = odin_fp16_to_f32(b->d);
    for (int j = 0; j < ODIN_QK; j++) y[j] = (float)b->qs[j] * d;
}
static void dequantize_q4_0(const void *in, float *y) {
    const odin_block_q4_0 *b = in;
    const float d = odin_fp16_to_f32(b->d);
    for (int j = 0; j < 16; j++) {
        y[j] = (float)((b->qs[j] & 0x0f) - 8) * d;
        y[j + 16] = (float)((b->qs[j] >> 4) - 8) * d;
    }
}
static void dequantize_q4_1(const void *in, float *y) {
    const odin_block_q4_1 *b = in;
    const float d = odin_fp16_to_f32(b->d), m = odin_fp16_to_f32(b->m);
    for (int j = 0; j < 16; j++) {
        y[j] = (float)(b->qs[j] & 0x0f) * d + m;
        y[j + 16] = (float)(b->qs[j] >> 4) * d + m;
    }
}
static void dequantize_q5_0(const void *in, float *y) {
    const odin_block_q5_0 *b = in;
    const float d = odin_fp16_to_f32(b->d);
    const uint32_t h = fifth_bits(b->qh);
    for (int j = 0; j < 16; j++) {
        y[j] = (float)((int)((b->qs[j] & 0x0f) | ((h >> j) & 1) << 4) - 16) * d;
        y[j + 16] = (float)((int)((b->qs[j] >> 4) | ((h >> (j + 16)) & 1) << 4) - 16) * d;
    }
}
static void dequantize_q5_1(const void *in, float *y) {
    const odin_block_q5_1 *b = in;
    const float d = odin_fp16_to_f32(b->d), m = odin_fp16_to_f32(b->m);
    const uint32_t h = fifth_bits(b->qh);
    for (int j = 0; j < 16; j++) {
        y[j] = (float)((b->qs[j] & 0x0f) | ((h >> j) & 1) << 4) * d + m;
        y[j + 16] = (float)((b->qs[j] >> 4) | ((h >> (j + 16)) & 1) << 4) * d + m;
    }
}

typedef void (*quantize_fn)(const float *x, void *out);
typedef void (*dequantize_fn)(const void *in, float *y);
static const quantize_fn k_quantize[ODIN_QTYPE_SLOTS] = {
    [ODIN_TYPE_Q4_0] = quantize_q4_0, [ODIN_TYPE_Q4_1] = quantize_q4_1, [ODIN_TYPE_Q5_0] = quantize_q5_0,
    [ODIN_TYPE_Q5_1] = quantize_q5_1, [ODIN_TYPE_Q8_0] = quantize_q8_0};
static const dequantize_fn k_dequantize[ODIN_QTYPE_SLOTS] = {
    [ODIN_TYPE_Q4_0] = dequantize_q4_0, [ODIN_TYPE_Q4_1] = dequantize_q4_1, [ODIN_TYPE_Q5_0] = dequantize_q5_0,
    [ODIN_TYPE_Q5_1] = dequantize_q5_1, [ODIN_TYPE_Q8_0] = dequantize_q8_0};

void odin_dequantize_row(int type, const uint8_t *q, float *y, int cols) {
    const size_t bb = k_types[type].block_bytes;
    for (int i = 0; i < cols / ODIN_QK; i++) k_dequantize[type](q + (size_t)i * bb, y + (size_t)i * ODIN_QK);
}

/* ------------------------------------------------------------------ the public conversions */
static odin_status check_matrix(int type, long long rows, long long cols, int quantized_only) {
    if (!odin_qtype_known(type) || (quantized_only && type == ODIN_TYPE_F32))
        return odin_fail(ODIN_BAD_ARG, "unknown quantization type %d (expected q8_0 = 8, q4_0 = 2, q4_1 = 3, "
                                       "q5_0 = 6 or q5_1 = 7)", type);
    if (rows < 0) return odin_fail(ODIN_BAD_SHAPE, "rows must be >= 0 (got %lld)", rows);
    if (cols <= 0 || cols % ODIN_QK)
        return odin_fail(ODIN_BAD_SHAPE, "a row of %lld weights cannot be cut into %s blocks of %d: its length "
                                         "must be a positive multiple of %d", cols, k_types[type].name, ODIN_QK, ODIN_QK);
    if (odin_size_mul((size_t)rows, (size_t)cols) > ODIN_MAX_FLOATS || cols > ODIN_DIM_MAX)
        return odin_fail(ODIN_BAD_ARG, "a %lld x %lld matrix is too large", rows, cols);
    return ODIN_OK;
}

odin_status odin_quantize(int type, const float *x, void *out, long long rows, long long cols) {
    odin_status st = check_matrix(type, rows, cols, 1);
    if (st) return st;
    ODIN_REQUIRE_PTR(x, "x"); ODIN_REQUIRE_PTR(out, "out");
    const size_t n = (size_t)rows * (size_t)cols;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return odin_fail(ODIN_NAN_DETECTED, "x[%zu, %zu] is %s: a weight that is not a finite number cannot be "
                                                "quantized", i / (size_t)cols, i % (size_t)cols, isnan(x[i]) ? "NaN" : "Inf");
    const size_t bb = k_types[type].block_bytes;
    for (size_t b = 0; b < n / ODIN_QK; b++) k_quantize[type](x + b * ODIN_QK, (uint8_t *)out + b * bb);
    return ODIN_OK;
}

odin_status odin_dequantize(int type, const void *q, float *out, long long rows, long long cols) {
    odin_status st = check_matrix(type, rows, cols, 1);
    if (st) return st;
    ODIN_REQUIRE_PTR(q, "q"); ODIN_REQUIRE_PTR(out, "out");
    const size_t bb = k_types[type].block_bytes, n = (size_t)rows * (size_t)cols;
    for (size_t b = 0; b < n / ODIN_QK; b++) k_dequantize[type]((const uint8_t *)q + b * bb, out + b * ODIN_QK);
    return ODIN_OK;
}

/* 8-bit activations, 32 at a time: d = max|x| / 127, q = round(x / d), s = d * sum(q) */
void odin_quantize_act(odin_q8a *a, const float *x, int K) {
    for (int b = 0; b < K / ODIN_QK; b++, x += ODIN_QK) {
        float amax = 0.0f;
        for (int j = 0; j < ODIN_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < ODIN_QK; j++) {
            const int q = (int)roundf(x[j] * id);
            a[b].q[j] = (int8_t)q;
            sum += q;
        }
        a[b].d = d;
        a[b].s = d * (float)sum;
    }
}

/* ------------------------------------------------------------------ products */
/* Scratch per thread (activation blocks; dequantized panels), grown on first use and freed
 * at thread exit, as gemm.c's packing buffers: nothing is allocated per product. */
typedef struct { void *p; size_t cap; } scratch;
static _Thread_local scratch tl_act, tl_panel;
#if !defined(__wasm__)
static pthread_key_t g_act_key, g_panel_key;
static pthread_once_t g_keys_once = PTHREAD_ONCE_INIT;
static void keys_make(void) { pthread_key_create(&g_act_key, free); pthread_key_create(&g_panel_key, free); }
#endif
static void *scratch_get(scratch *s, size_t bytes, int which) {
    if (s->cap >= bytes) return s->p;
    void *p = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (!p) return NULL;
    free(s->p);
    s->p = p;
    s->cap = bytes;
#if !defined(__wasm__)
    pthread_once(&g_keys_once, keys_make);
    pthread_setspecific(which ? g_panel_key : g_act_key, p);
#else
    (void)which;
#endif
    return p;
}

#define ODIN_QINT_MAX_M 8
#define PANEL_FLOATS (1u << 17) /* 512 KiB of dequantized rows at a time: within L2 */

int odin_weight_prepare(odin_weight W, const float *inp, int M, int K, const odin_q8a **act) {
    *act = NULL;
    if (W.type == ODIN_TYPE_F32 || M > ODIN_QINT_MAX_M) return 0;
    const size_t nb = (size_t)(K / ODIN_QK);
    odin_q8a *a = scratch_get(&tl_act, (size_t)M * nb * sizeof(odin_q8a), 0);
    if (!a) return -1;
    for (int m = 0; m < M; m++) odin_quantize_act(a + (size_t)m * nb, inp + (size_t)m * K, K);
    *act = a;
    return 0;
}

int odin_weight_product(float *out, int ldo, const float *inp, const odin_q8a *act, odin_weight W, int M, int K,
                        int n0, int n1, int acc) {
    if (n1 <= n0) return 0;
    if (W.type == ODIN_TYPE_F32)
        return odin_gemm(M, n1 - n0, K, inp, K, 1, W.f + (size_t)n0 * K, 1, K, acc, out + n0, ldo);
    const uint8_t *rows = W.q + (size_t)n0 * W.row_bytes;
    if (act) {
        odin_kern->qmatvec[W.type](out + n0, ldo, rows, W.row_bytes, n1 - n0, act, K / ODIN_QK, M, acc);
        return 0;
    }
    int per_panel = (int)(PANEL_FLOATS / (size_t)K);
    per_panel = per_panel < 16 ? 16 : per_panel & ~15;
    float *panel = scratch_get(&tl_panel, (size_t)per_panel * K * sizeof(float), 1);
    if (!panel) return -1;
    for (int n = n0; n < n1; n += per_panel) {
        const int rows_here = n1 - n < per_panel ? n1 - n : per_panel;
        for (int r = 0; r < rows_here; r++)
            odin_dequantize_row(W.type, W.q + (size_t)(n + r) * W.row_bytes, panel + (size_t)r * K, K);
        if (odin_gemm(M, rows_here, K, inp, K, 1, panel, 1, K, acc, out + n, ldo)) return -1;
    }
    return 0;
}

int odin_linear(float *out, const float *inp, odin_weight W, const float *bias, int M, int K, int N, int acc) {
    const odin_q8a *act;
    if (odin_weight_prepare(W, inp, M, K, &act) || odin_weight_product(out, N, inp, act, W, M, K, 0, N, acc))
        return -1;
    if (bias)
        for (int r = 0; r < M; r++) odin_kern->axpy(out + (size_t)r * N, 1.0f, bias, N);
    return 0;
}

odin_status odin_qmatmul(int type, const void *weight, const float *inp, const float *bias, float *out, int M, int K,
                         int N) {
    ODIN_REQUIRE_PTR(weight, "weight"); ODIN_REQUIRE_PTR(inp, "inp"); ODIN_REQUIRE_PTR(out, "out");
    ODIN_REQUIRE_POS(M, "M"); ODIN_REQUIRE_POS(N, "N");
    ODIN_REQUIRE_DIM(M, "M"); ODIN_REQUIRE_DIM(N, "N");
    odin_status st = check_matrix(type, N, K, 0);
    if (st) return st;
    odin_weight W = {type == ODIN_TYPE_F32 ? weight : NULL, type == ODIN_TYPE_F32 ? NULL : weight, type,
                     odin_quant_row_bytes(type, K)};
    if (odin_linear(out, inp, W, bias, M, K, N, 0))
        return odin_fail(ODIN_NO_MEMORY, "qmatmul: cannot allocate its scratch buffers");
    return ODIN_OK;
}
