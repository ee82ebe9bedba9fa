/* internal.h — helpers shared by the library's C files (not exported). */
#ifndef ODIN_INTERNAL_H
#define ODIN_INTERNAL_H
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include "odin.h"
#include "kernels/kernels.h"

#define ODIN_VERSION "0.1.0"

#if !defined(__wasm__)
/* Profiling a training step (odin_spheres_profile): while a thread's clock is set,
 * odin_gemm adds the nanoseconds it spends to it, so the trainer can split forward and
 * backward into GEMM and the rest. NULL (off) costs one thread-local load per GEMM. */
extern _Thread_local uint64_t *odin_gemm_clock;
#include <time.h>
static inline uint64_t odin_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
#endif

/* The trainer's backward: grads = (not +=) the micro-batch's gradient, without zeroing the
 * whole block first (the dW GEMMs write the weight matrices; only the rest is zeroed). */
odin_status odin_gpt_backward_overwrite(odin_gpt *g, odin_gpt_ws *w, float *grads, float dloss);
odin_status odin_rwkv_backward_overwrite(odin_rwkv *r, odin_rwkv_ws *w, float *grads, float dloss);

/* A weight matrix W[N, K]: float32 rows (f) or quantized ones (q, row_bytes apart, type). */
typedef struct { const float *f; const uint8_t *q; int type; size_t row_bytes; } odin_weight;
static inline odin_weight odin_weight_f32(const float *W) { odin_weight w = {W, NULL, 0, 0}; return w; }
/* quant.c: out[M, n0:n1] (row stride ldo) (+)= inp[M, K] W[n0:n1]^T. prepare (on the calling
 * thread, once per product) quantizes the activations when the integer path applies (*act is
 * NULL otherwise); product may then run on any thread for any column range. -1: no memory. */
int odin_weight_prepare(odin_weight W, const float *inp, int M, int K, const odin_q8a **act);
int odin_weight_product(float *out, int ldo, const float *inp, const odin_q8a *act, odin_weight W, int M, int K,
                        int n0, int n1, int acc);
/* both, single-threaded, + bias[N] */
int odin_linear(float *out, const float *inp, odin_weight W, const float *bias, int M, int K, int N, int acc);
int odin_qtype_known(int type);
void odin_dequantize_row(int type, const uint8_t *q, float *y, int cols);
void odin_quantize_act(odin_q8a *a, const float *x, int K);

/* Decoding threads (pool.c): out[M, N] (+)= inp[M, K] W[N, K]^T (+ bias[N]), its columns
 * split over the pool's threads (NULL: this thread alone); the same result for any count.
 * Returns nonzero when a GEMM packing buffer could not be allocated. */
typedef struct odin_pool odin_pool;
#if !defined(__wasm__)
odin_status odin_pool_create(odin_pool **out, int threads);
void odin_pool_free(odin_pool *pool);
/* *slot becomes a pool of `threads` (NULL for 1); the old one is freed. On failure it stays. */
odin_status odin_pool_set(odin_pool **slot, int threads);
int odin_pool_gemm(odin_pool *pool, float *out, const float *inp, odin_weight W, const float *bias, int M, int K,
                   int N, int acc);
#endif

/* Record a message for odin_last_error() (thread-local) and return code. */
odin_status odin_fail(odin_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* ---- size arithmetic that cannot wrap ----
 * Every size the library derives from its arguments (parameter counts, workspaces, caches,
 * buffers) is computed with these: on overflow the result saturates at SIZE_MAX, which
 * sticks through later products and sums, so a whole size expression is computed first and
 * checked once against ODIN_MAX_FLOATS (nothing larger can be allocated or indexed). */
static inline size_t odin_size_mul(size_t a, size_t b) {
    if (a == SIZE_MAX || b == SIZE_MAX) return SIZE_MAX;
    return (b != 0 && a > (SIZE_MAX - 1) / b) ? SIZE_MAX : a * b;
}
static inline size_t odin_size_add(size_t a, size_t b) {
    if (a == SIZE_MAX || b == SIZE_MAX) return SIZE_MAX;
    return a > SIZE_MAX - 1 - b ? SIZE_MAX : a + b;
}
static inline size_t odin_size_sum(const size_t *terms, size_t n) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total = odin_size_add(total, terms[i]);
    return total;
}
#define ODIN_MAX_FLOATS ((size_t)PTRDIFF_MAX / sizeof(float))
/* The kernels take dimensions as int and form small multiples of them (3C, 4C, B*T, the
 * GEMM's rounded-up blocks); capping every int dimension, and every int derived from the
 * arguments, at INT_MAX / 4 keeps those in range. */
#define ODIN_DIM_MAX (INT_MAX / 4)

#define ODIN_REQUIRE_PTR(p, name)                                                  \
    do { if (!(p)) return odin_fail(ODIN_BAD_ARG, "%s must not be NULL", name); } while (0)
#define ODIN_REQUIRE_POS(v, name)                                                  \
    do { if ((v) <= 0) return odin_fail(ODIN_BAD_SHAPE, "%s must be > 0 (got %lld)", name, (long long)(v)); } while (0)
/* An int dimension (or one derived from the arguments) at most ODIN_DIM_MAX. */
#define ODIN_REQUIRE_DIM(v, name)                                                  \
    do { if ((long long)(v) > ODIN_DIM_MAX)                                        \
             return odin_fail(ODIN_BAD_ARG, "%s is too large (%lld > %d)", name, (long long)(v), ODIN_DIM_MAX); \
    } while (0)

/* Adam's bias correction 1 - beta^t: beta^t by squaring in double, the same bits on every
 * platform, which libm's pow is not (see odin_logf in kernels.h); and in double because in
 * float the power's rounding (~6e-8) is divided by 1 - beta2^t (0.001 at t = 1 with
 * beta2 = 0.999), a 1e-4 relative error in vhat early on. */
static inline float odin_bias_correction(float beta, long long t) {
    double power = 1.0, square = beta;
    for (; t > 0; t >>= 1, square *= square)
        if (t & 1) power *= square;
    return (float)(1.0 - power);
}

/* ---- shared by the models (model_common.c) ---- */
/* One tensor of a model's parameter block: a named view; decay = 1 for matrices (weight
 * decay applies), 0 for vectors (biases, LayerNorm, RWKV decays / bonuses / mixes). */
typedef struct { const char *name; size_t offset; int rows, cols; int decay; int type; } odin_tensor_view;

/* Append the next tensor of a parameter block (rows x cols floats at *offset, which then
 * moves past it, with odin_size_mul/add); matrices (cols > 1) get weight decay. The caller
 * sized the table for *count + 1 entries: the models count their tensors before allocating. */
void odin_tensor_append(odin_tensor_view *tensors, int *count, size_t *offset, const char *name, int rows,
                        int cols);
/* The same for a tensor of `type`: a quantized one takes rows x row_bytes at *qoffset (bytes
 * in the model's quantized block) instead. */
void odin_tensor_append_typed(odin_tensor_view *tensors, int *count, size_t *offset, size_t *qoffset,
                              const char *name, int rows, int cols, int type);
/* Which tensors of a model with (matrix_type, embed_type) are quantized, checked: a known
 * type, rows a multiple of 32 long. what names the model for the error. */
odin_status odin_check_quant_types(int matrix_type, int embed_type);
/* 64-byte aligned, zeroed; NULL when out of memory. Free with free(). */
void *odin_zalloc(size_t bytes);  /* NULL also when bytes exceed the machine's RAM + swap */
int odin_fits_in_memory(size_t bytes);
/* The parameter, gradient and two AdamW moment blocks of n floats, zeroed; on failure none
 * is kept (all four NULL) and the error says how much was asked for. */
/* The parameter block of a new model; the training blocks (gradients, AdamW moments) are
 * allocated zeroed on first use, so a model that only answers never holds them. */
odin_status odin_alloc_params(size_t n, float **params);
odin_status odin_alloc_training_blocks(size_t n, float **grads, float **m, float **v);
/* ODIN_OK when n floats (a size from odin_size_mul/add) can be allocated and indexed, else
 * ODIN_BAD_ARG "<what> (<args>) would need ..." with args the caller's formatted arguments. */
odin_status odin_require_floats(size_t n, const char *what, const char *args);
/* Every t[i] (where mask is NULL or mask[i] != 0) in [0, V), else an error naming name[i]. */
odin_status odin_check_tokens(const int32_t *t, size_t n, int V, const char *name, const uint8_t *mask);
odin_status odin_tensor_info(const odin_tensor_view *tensors, int n_tensors, int index, const char **name,
                             size_t *offset, int *rows, int *cols);
/* Clip the gradient block to grad_clip (<= 0: no clipping), then AdamW tensor by tensor,
 * weight decay where the view says so. Non-finite norm: ODIN_NAN_DETECTED, nothing changes. */
odin_status odin_clip_adamw(const odin_tensor_view *tensors, int n_tensors, float *params, float *grads,
                            float *m, float *v, size_t n_params, float lr, float beta1, float beta2, float eps,
                            float weight_decay, float grad_clip, int t, float *grad_norm);
int odin_argmax(const float *x, int n);

#if defined(__wasm__) /* no threads in the page: decoding runs on the caller's thread */
static inline odin_status odin_pool_create(odin_pool **out, int threads) {
    *out = NULL;
    return threads == 1 ? ODIN_OK : odin_fail(ODIN_BAD_ARG, "threads must be 1 in WebAssembly (no threads), got %d", threads);
}
static inline void odin_pool_free(odin_pool *pool) { (void)pool; }
static inline odin_status odin_pool_set(odin_pool **slot, int threads) { return odin_pool_create(slot, threads); }
static inline int odin_pool_gemm(odin_pool *pool, float *out, const float *inp, odin_weight W, const float *bias,
                                 int M, int K, int N, int acc) {
    (void)pool;
    return odin_linear(out, inp, W, bias, M, K, N, acc);
}
#endif

#endif
