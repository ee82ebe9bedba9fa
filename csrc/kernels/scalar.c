/* scalar.c — portable kernels, one float at a time. Compiled everywhere.
 * Auto-vectorisation is switched off so that "scalar" means scalar: it is the
 * reference the SIMD files are measured against, and the path for CPUs without them. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-tree-vectorize")
#endif
#include <stdint.h>
#include <string.h>

#define ODIN_ISA_NAME scalar
#define ODIN_ISA_SCALAR 1
#define VL 1
typedef float vf;

static inline vf vload(const float *p) { return *p; }
static inline void vstore(float *p, vf v) { *p = v; }
static inline vf vload_n(const float *p, int n, float fill) { (void)p; (void)n; return fill; }
static inline void vstore_n(float *p, vf v, int n) { (void)p; (void)v; (void)n; }
static inline vf vset1(float x) { return x; }
static inline vf vzero(void) { return 0.0f; }
static inline vf vadd(vf a, vf b) { return a + b; }
static inline vf vsub(vf a, vf b) { return a - b; }
static inline vf vmul(vf a, vf b) { return a * b; }
static inline vf vdiv(vf a, vf b) { return a / b; }
static inline vf vmax(vf a, vf b) { return a > b ? a : b; }
static inline vf vmin(vf a, vf b) { return a < b ? a : b; }
/* Unfused on purpose: a portable build cannot assume an FMA unit. */
static inline vf vfma(vf a, vf b, vf c) { return a * b + c; }
static inline vf vfnma(vf a, vf b, vf c) { return c - a * b; }
static inline vf vsqrt(vf a) { return __builtin_sqrtf(a); }
static inline vf vabs(vf a) { return __builtin_fabsf(a); }
static inline vf vcopysign(vf mag, vf sgn) { return __builtin_copysignf(mag, sgn); }
/* round-to-nearest-even without libm: valid for |a| < 2^22, all the exp path needs */
static inline vf vround(vf a) {
    volatile float big = 12582912.0f; /* 1.5 * 2^23; volatile keeps the compiler from folding */
    return (a + big) - big;
}
static inline vf vpow2i(vf n) {
    /* n is an integer in [-126, 128], or NaN for a NaN input (the polynomial carries
     * NaN to the result anyway): convert NaN as 0 and shift unsigned, so no UB */
    int32_t i = n == n ? (int32_t)n : 0;
    uint32_t e = (uint32_t)(i + 127) << 23;
    float r;
    memcpy(&r, &e, sizeof r);
    return r;
}
static inline float vhsum(vf a) { return a; }
static inline float vhmax(vf a) { return a; }

/* quant_body.h's primitives: 32 lanes as bytes, an exact int32 sum per block */
#include "quant.h"
typedef struct { int8_t v[32]; } qv;
typedef float qacc;
static inline qv qv_load(const void *p) { qv r; memcpy(r.v, p, 32); return r; }
static inline qv qv_nibbles(const uint8_t *p) {
    qv r;
    for (int j = 0; j < 16; j++) { r.v[j] = (int8_t)(p[j] & 0x0f); r.v[j + 16] = (int8_t)(p[j] >> 4); }
    return r;
}
static inline qv qv_or_bit4(qv v, uint32_t h) {
    for (int j = 0; j < 32; j++) v.v[j] = (int8_t)(v.v[j] | (((h >> j) & 1u) << 4));
    return v;
}
static inline qv qv_sub(qv v, int c) { for (int j = 0; j < 32; j++) v.v[j] = (int8_t)(v.v[j] - c); return v; }
static inline qacc qacc_zero(void) { return 0.0f; }
static inline qacc qacc_dot_ss(qacc acc, qv x, qv y, float scale) {
    int32_t sum = 0;
    for (int j = 0; j < 32; j++) sum += (int32_t)x.v[j] * y.v[j];
    return acc + (float)sum * scale;
}
static inline qacc qacc_dot_us(qacc acc, qv u, qv s, float scale) { return qacc_dot_ss(acc, u, s, scale); }
static inline qacc qacc_add(qacc a, qacc b) { return a + b; }
static inline float qacc_sum(qacc a) { return a; }

#include "kernel_body.h"
#include "gemm_kernel.h"
#include "quant_body.h"
#include "table.h"
