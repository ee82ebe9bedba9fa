/* avx2.c — AVX2 + FMA kernels: 8-float vectors.
 * avx2_vnni.c compiles this file again with AVX-VNNI for the quantized products. */
#if defined(__x86_64__) || defined(_M_X64)
#ifndef ODIN_ISA_NAME
#define ODIN_ISA_NAME avx2
#define ODIN_ISA_TARGET "avx2,fma,f16c"
#define ODIN_QDOT_VNNI 0
#endif
#define ODIN_PRAGMA_(x) _Pragma(#x)
#if defined(__clang__)
#define ODIN_TARGET_PUSH(t) ODIN_PRAGMA_(clang attribute push(__attribute__((target(t))), apply_to = function))
#else
#define ODIN_TARGET_PUSH(t) ODIN_PRAGMA_(GCC target(t))
#endif
ODIN_TARGET_PUSH(ODIN_ISA_TARGET)
#include <immintrin.h>

#define ODIN_ISA_AVX2 1
#define VL 8
typedef __m256 vf;

static inline __m256i tail_mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline vf vload(const float *p) { return _mm256_loadu_ps(p); }
static inline void vstore(float *p, vf v) { _mm256_storeu_ps(p, v); }
static inline vf vload_n(const float *p, int n, float fill) {
    __m256i m = tail_mask(n);
    return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
}
static inline void vstore_n(float *p, vf v, int n) { _mm256_maskstore_ps(p, tail_mask(n), v); }
static inline vf vset1(float x) { return _mm256_set1_ps(x); }
static inline vf vzero(void) { return _mm256_setzero_ps(); }
static inline vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline vf vsub(vf a, vf b) { return _mm256_sub_ps(a, b); }
static inline vf vmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
static inline vf vdiv(vf a, vf b) { return _mm256_div_ps(a, b); }
static inline vf vmax(vf a, vf b) { return _mm256_max_ps(a, b); }
static inline vf vmin(vf a, vf b) { return _mm256_min_ps(a, b); }
static inline vf vfma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
static inline vf vfnma(vf a, vf b, vf c) { return _mm256_fnmadd_ps(a, b, c); }
static inline vf vsqrt(vf a) { return _mm256_sqrt_ps(a); }
static inline vf vabs(vf a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
static inline vf vcopysign(vf mag, vf sgn) {
    const vf m = _mm256_set1_ps(-0.0f);
    return _mm256_or_ps(_mm256_andnot_ps(m, mag), _mm256_and_ps(m, sgn));
}
static inline vf vround(vf a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
static inline vf vpow2i(vf n) {
    __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
}
static inline float vhsum(vf a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline float vhmax(vf a) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#include "kernel_body.h"
#include "gemm_kernel.h"
#include "quant.h"
#include "quant_x86.h"
#include "quant_body.h"
#include "table.h"

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
