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

#include "kernel_body.h"
#include "gemm_kernel.h"
#include "table.h"
