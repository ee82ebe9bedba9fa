/* avx512.c — AVX-512 (F/BW/VL/DQ + FMA) kernels: 16-float vectors.
 * Only this file (and avx512_vnni.c, which compiles it again with AVX512-VNNI for the
 * quantized products) is compiled for AVX-512; the target pragma confines EVEX code to it. */
#if defined(__x86_64__) || defined(_M_X64)
#ifndef ODIN_ISA_NAME
#define ODIN_ISA_NAME avx512
#define ODIN_ISA_TARGET "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"
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

#define ODIN_ISA_AVX512 1
#define VL 16
typedef __m512 vf;

static inline vf vload(const float *p) { return _mm512_loadu_ps(p); }
static inline void vstore(float *p, vf v) { _mm512_storeu_ps(p, v); }
static inline vf vload_n(const float *p, int n, float fill) {
    __mmask16 k = (__mmask16)((1u << n) - 1u);
    return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), k, p);
}
static inline void vstore_n(float *p, vf v, int n) {
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1u), v);
}
static inline vf vset1(float x) { return _mm512_set1_ps(x); }
static inline vf vzero(void) { return _mm512_setzero_ps(); }
static inline vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf vsub(vf a, vf b) { return _mm512_sub_ps(a, b); }
static inline vf vmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
static inline vf vdiv(vf a, vf b) { return _mm512_div_ps(a, b); }
static inline vf vmax(vf a, vf b) { return _mm512_max_ps(a, b); }
static inline vf vmin(vf a, vf b) { return _mm512_min_ps(a, b); }
static inline vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }    /* a*b+c */
static inline vf vfnma(vf a, vf b, vf c) { return _mm512_fnmadd_ps(a, b, c); }  /* c-a*b */
static inline vf vsqrt(vf a) { return _mm512_sqrt_ps(a); }
static inline vf vabs(vf a) { return _mm512_abs_ps(a); }
static inline vf vcopysign(vf mag, vf sgn) {
    const __m512i m = _mm512_set1_epi32(0x80000000);
    return _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_andnot_si512(m, _mm512_castps_si512(mag)),
        _mm512_and_si512(m, _mm512_castps_si512(sgn))));
}
static inline vf vround(vf a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
/* 2^n for integer-valued n in [-126, 127] */
static inline vf vpow2i(vf n) {
    __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
}
static inline float vhsum(vf a) { return _mm512_reduce_add_ps(a); }
static inline float vhmax(vf a) { return _mm512_reduce_max_ps(a); }

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
