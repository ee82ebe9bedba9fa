/* kernels.h — the per-ISA kernel table (internal; not exported to Python).
 *
 * Every instruction set is one file (scalar.c, avx2.c, avx512.c, wasm_simd128.c) that
 * defines a handful of vector primitives and then includes kernel_body.h and
 * gemm_kernel.h, which instantiate every kernel for that ISA and fill one
 * odin_kernel_table. Adding an ISA = one more such file + one line in dispatch.c.
 *
 * Kernels here do no argument checking: api.c validates at the boundary.
 * Backward kernels accumulate (+=). No kernel allocates.
 */
#ifndef ODIN_KERNELS_H
#define ODIN_KERNELS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include "quant.h"

/* The running maximum exponent of an empty WKV sum ("no term yet"): the pp row of an
 * empty RWKV state (wkv_forward's state[B,3,C] = aa, bb, pp). */
#define ODIN_WKV_EMPTY (-1e38f)

/* ln(x), the same bits on every platform, for the cross-entropy's log-sum-exp. libm's logf
 * is not: glibc picks an FMA variant at run time, wasi-libc has none, and the two differed
 * in the last bit for ~2% of rows, which kept wasm and native gradients from agreeing
 * exactly. x = m 2^e with m in [sqrt(1/2), sqrt(2)); ln m = 2 atanh(s), s = (m-1)/(m+1),
 * |s| < 0.172, by its series to s^15 (the next term is < 1e-13 of the result), all in
 * double and rounded once to float. x <= 0, inf and NaN go to libm (exact there). */
static inline float odin_logf(float x) {
    if (!(x > 0.0f) || isinf(x)) return logf(x);
    int e;
    double m = frexp((double)x, &e);
    if (m < 0.70710678118654752440) { m *= 2.0; e--; }
    double s = (m - 1.0) / (m + 1.0), s2 = s * s;
    double series = s2 * (1.0 / 3 + s2 * (1.0 / 5 + s2 * (1.0 / 7 + s2 * (1.0 / 9 + s2 * (1.0 / 11
                  + s2 * (1.0 / 13 + s2 * (1.0 / 15)))))));
    return (float)((double)e * 0.69314718055994530942 + (2.0 * s + 2.0 * s * series));
}

/* Attention scratch: a head's keys or values transposed into a [hs, Tp] panel (Tp = T
 * rounded up to the widest vector, so every ISA reads whole vectors), a dense copy of its
 * values or keys, two gradient panels and two rows. Forward and backward take the same size. */
static inline int odin_att_pad(int T) { return (T + 15) & ~15; }
static inline size_t odin_att_scratch_floats(int T, int hs) {
    return (size_t)odin_att_pad(T) * (4 * (size_t)hs + 2);
}

/* ALiBi (Press et al., 2022): a head's score of key j for query t gets slope * (j - t), a
 * penalty growing with distance, instead of position embeddings; the geometric slopes
 * 2^(-8(h+1)/NH) give each head its own reach. One function for the training kernel and the
 * decoder, so both add the same float. */
static inline float odin_alibi_slope(int h, int NH) {
    /* 2^-e = 2^-n * 2^-f, n = floor(e), f in [0, 1): 2^-f = exp(-f ln 2) by its series in
     * double (terms < 1e-17 after 20), so every platform gets the same bits without libm */
    const double e = 8.0 * (h + 1) / NH;
    const int n = (int)e;
    const double x = -(e - n) * 0.69314718055994530942;
    double term = 1.0, sum = 1.0;
    for (int k = 1; k <= 20; k++) sum += (term *= x / k);
    for (int k = 0; k < n; k++) sum *= 0.5;
    return (float)sum;
}
static inline float odin_alibi_bias(float slope, int j, int t) { return slope * (float)(j - t); }

typedef struct odin_kernel_table {
    const char *name;

    /* ---- GEMM building blocks (driven by gemm.c) ----
     * Register tile MR x NR; cache blocks MC (rows of A), KC (depth), NC (cols of B).
     * ukernel: C[MR,NR] (row stride ldc) = (accumulate ? C : 0) + Ap . Bp
     * Ap: packed A micro-panel, kc steps of MR floats; Bp: packed B, kc steps of NR floats. */
    int mr, nr, mc, kc, nc;
    void (*gemm_ukernel)(int kc, const float *Ap, const float *Bp, float *C, int ldc, int accumulate);
    /* vector helpers used by the small-shape gemm path and by models */
    float (*dot)(const float *a, const float *b, int n);
    void (*axpy)(float *y, float a, const float *x, int n);            /* y += a*x */

    /* ---- math ---- */
    void (*vexp)(float *out, const float *inp, size_t n);
    void (*vsigmoid)(float *out, const float *inp, size_t n);
    void (*vtanh)(float *out, const float *inp, size_t n);

    /* ---- layers (shapes as in odin.h) ---- */
    void (*gelu_forward)(float *out, const float *inp, size_t n);
    void (*gelu_backward)(float *dinp, const float *inp, const float *dout, size_t n);
    void (*layernorm_forward)(float *out, float *mean, float *rstd, const float *inp,
                              const float *weight, const float *bias, int N, int C, float eps);
    void (*layernorm_backward)(float *dinp, float *dweight, float *dbias, const float *dout,
                               const float *inp, const float *weight, const float *mean,
                               const float *rstd, int N, int C);
    void (*rmsnorm_forward)(float *out, float *rstd, const float *inp, const float *weight,
                            int N, int C, float eps);
    void (*rmsnorm_backward)(float *dinp, float *dweight, const float *dout, const float *inp,
                             const float *weight, const float *rstd, int N, int C);
    void (*softmax_forward)(float *out, const float *inp, int N, int C);
    void (*softmax_backward)(float *dinp, const float *out, const float *dout, int N, int C);
    void (*attention_forward)(float *out, float *att, float *scratch, const float *qkv,
                              const float *slopes, int B, int T, int C, int NH);
    void (*attention_backward)(float *dqkv, float *scratch, const float *dout, const float *qkv,
                               const float *att, int B, int T, int C, int NH);
    void (*embedding_forward)(float *out, const int32_t *tokens, const float *wte,
                              const float *wpe, int B, int T, int C);
    void (*embedding_backward)(float *dwte, float *dwpe, const float *dout,
                               const int32_t *tokens, int B, int T, int C);
    /* returns sum of unmasked losses (double for a fixed, accurate order) */
    double (*crossentropy_forward)(float *losses, float *lse, const float *logits,
                                   const int32_t *targets, const uint8_t *mask, int N, int V);
    /* scale = dloss / count */
    void (*crossentropy_backward)(float *dlogits, const float *logits, const float *lse,
                                  const int32_t *targets, const uint8_t *mask, int N, int V,
                                  float scale);

    /* ---- RWKV-4 (shapes as in odin.h; wkv lanes are channels) ---- */
    void (*tokenshift_forward)(float *out, const float *x, const float *mix, const float *prev,
                               int B, int T, int C);
    void (*tokenshift_backward)(float *dx, float *dmix, const float *dout, const float *x,
                                const float *mix, int B, int T, int C);
    /* state[B,3,C] (aa, bb, pp) in and out, or NULL for the empty state */
    void (*wkv_forward)(float *y, float *state, const float *time_decay, const float *time_first,
                        const float *k, const float *v, int B, int T, int C);
    /* scratch: 3*T*C floats */
    void (*wkv_backward)(float *dtime_decay, float *dtime_first, float *dk, float *dv, float *scratch,
                         const float *time_decay, const float *time_first, const float *k,
                         const float *v, const float *dy, int B, int T, int C);
    void (*sqrelu_forward)(float *out, const float *inp, size_t n);
    void (*sqrelu_backward)(float *dinp, const float *inp, const float *dout, size_t n);
    void (*sigmoid_gate_forward)(float *out, const float *a, const float *b, size_t n);   /* += */
    void (*sigmoid_gate_backward)(float *da, float *db, const float *dout, const float *a,
                                  const float *b, size_t n);

    /* ---- optimiser ---- */
    void (*adamw)(float *params, const float *grads, float *m, float *v, size_t n,
                  float lr, float beta1, float beta2, float eps, float weight_decay,
                  float bc1, float bc2);   /* bc = 1 - beta^t, precomputed */
    double (*sumsq)(const float *x, size_t n);
    void (*scale)(float *x, size_t n, float s);

    /* ---- quantized weights (quant.h; quant_body.h) ----
     * qmatvec[type]: out[m * ldo + n] (+)= row n of w (nb blocks of `type`, row_bytes apart)
     * . activations a[m * nb ...] for n < n_rows, m < M. NULL for f32 and unused ids. */
    void (*qmatvec[ODIN_QTYPE_SLOTS])(float *out, int ldo, const uint8_t *w, size_t row_bytes, int n_rows,
                                      const odin_q8a *a, int nb, int M, int acc);
} odin_kernel_table;

/* The table in use. Set once at start-up (ODIN_ISA or best available). */
extern const odin_kernel_table *odin_kern;

/* One table per compiled ISA. */
extern const odin_kernel_table odin_kernels_scalar;
#if defined(__x86_64__) || defined(_M_X64)
extern const odin_kernel_table odin_kernels_avx2;
extern const odin_kernel_table odin_kernels_avxvnni;
extern const odin_kernel_table odin_kernels_avx512;
extern const odin_kernel_table odin_kernels_avx512vnni;
#endif
#if defined(__wasm_simd128__)
extern const odin_kernel_table odin_kernels_wasm_simd128;
#endif

/* dispatch.c */
void odin_dispatch_init(void);  /* idempotent, thread-safe */

/* gemm.c: the blocked/packed driver over odin_kern->gemm_ukernel (see odin_sgemm). */
int odin_gemm(int M, int N, int K, const float *a, int rsa, int csa,
              const float *b, int rsb, int csb, int accumulate, float *c, int ldc);

#endif
