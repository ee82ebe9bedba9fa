/* wasm_simd128.c — WebAssembly SIMD128 kernels: 4-float vectors (<wasm_simd128.h>).
 *
 * Compiled only into the WebAssembly module (tools/build_wasm.py, -msimd128); the native
 * build skips this file (odin/_build_ffi.py). Like avx2.c it defines the vector
 * primitives and then includes kernel_body.h (every non-GEMM kernel), gemm_kernel.h
 * (its generic "other vector ISA" register tile: 4 x 3 vectors) and table.h.
 *
 * Semantics chosen to match the x86 files where it matters:
 *  - vfma is mul + add (two roundings). SIMD128 has no FMA; relaxed-simd's madd may or
 *    may not fuse depending on the host, which would make results machine-dependent.
 *    So wasm results differ from the native FMA kernels by ~1 ulp per multiply-add
 *    (tests/test_wasm_kernels.py states the tolerances), but are the same on every host.
 *  - vmax/vmin use pmax/pmin with swapped operands, which is exactly x86 maxps/minps
 *    (`a > b ? a : b`; the second operand when either is NaN): kernel_body.h relies on
 *    that for NaN to survive the exp clamp, and engines lower pmax/pmin to one
 *    maxps/minps (f32x4.max/min need a NaN/-0 fix-up sequence on x86).
 *  - tails use the lane loads/stores of SIMD128 (load32_lane / load64_lane, ...), so no
 *    byte past the end of an array is ever read or written.
 */
#if defined(__wasm_simd128__)
#include <stdint.h>
#include <wasm_simd128.h>

#define ODIN_ISA_NAME wasm_simd128
#define ODIN_ISA_WASM_SIMD128 1
#define VL 4
typedef v128_t vf;

static inline vf vset1(float x) { return wasm_f32x4_splat(x); }
static inline vf vzero(void) { return wasm_f32x4_const_splat(0.0f); }
static inline vf vload(const float *p) { return wasm_v128_load(p); }
static inline void vstore(float *p, vf v) { wasm_v128_store(p, v); }

/* n in [1, VL): the first n lanes from p, the others `fill` */
static inline vf vload_n(const float *p, int n, float fill) {
    vf v = wasm_f32x4_splat(fill);
    switch (n) {
        case 1: return wasm_v128_load32_lane(p, v, 0);
        case 2: return wasm_v128_load64_lane(p, v, 0);
        case 3: return wasm_v128_load32_lane(p + 2, wasm_v128_load64_lane(p, v, 0), 2);
        default: return n >= VL ? wasm_v128_load(p) : v;
    }
}
/* store the first n lanes, n in [1, VL) */
static inline void vstore_n(float *p, vf v, int n) {
    switch (n) {
        case 1: wasm_v128_store32_lane(p, v, 0); break;
        case 2: wasm_v128_store64_lane(p, v, 0); break;
        case 3: wasm_v128_store64_lane(p, v, 0); wasm_v128_store32_lane(p + 2, v, 2); break;
        default: if (n >= VL) wasm_v128_store(p, v); break;
    }
}

static inline vf vadd(vf a, vf b) { return wasm_f32x4_add(a, b); }
static inline vf vsub(vf a, vf b) { return wasm_f32x4_sub(a, b); }
static inline vf vmul(vf a, vf b) { return wasm_f32x4_mul(a, b); }
static inline vf vdiv(vf a, vf b) { return wasm_f32x4_div(a, b); }
/* pmax(b, a) = (b < a) ? a : b = x86 maxps(a, b); likewise pmin */
static inline vf vmax(vf a, vf b) { return wasm_f32x4_pmax(b, a); }
static inline vf vmin(vf a, vf b) { return wasm_f32x4_pmin(b, a); }
/* no FMA in SIMD128: multiply, then add (see the note at the top) */
static inline vf vfma(vf a, vf b, vf c) { return wasm_f32x4_add(wasm_f32x4_mul(a, b), c); }
static inline vf vfnma(vf a, vf b, vf c) { return wasm_f32x4_sub(c, wasm_f32x4_mul(a, b)); }
static inline vf vsqrt(vf a) { return wasm_f32x4_sqrt(a); }
static inline vf vabs(vf a) { return wasm_f32x4_abs(a); }
static inline vf vcopysign(vf mag, vf sgn) {
    const vf m = wasm_f32x4_const_splat(-0.0f);
    return wasm_v128_bitselect(sgn, mag, m); /* sign bit from sgn, the rest from mag */
}
/* round to nearest, ties to even (as _MM_FROUND_TO_NEAREST_INT) */
static inline vf vround(vf a) { return wasm_f32x4_nearest(a); }
/* 2^n for integral n in [-126, 128]; NaN converts to 0 (saturating), as in scalar.c */
static inline vf vpow2i(vf n) {
    v128_t e = wasm_i32x4_add(wasm_i32x4_trunc_sat_f32x4(n), wasm_i32x4_splat(127));
    return wasm_i32x4_shl(e, 23);
}
static inline float vhsum(vf a) {
    vf s = wasm_f32x4_add(a, wasm_i32x4_shuffle(a, a, 2, 3, 0, 1));
    s = wasm_f32x4_add(s, wasm_i32x4_shuffle(s, s, 1, 0, 3, 2));
    return wasm_f32x4_extract_lane(s, 0);
}
static inline float vhmax(vf a) {
    vf s = vmax(a, wasm_i32x4_shuffle(a, a, 2, 3, 0, 1));
    s = vmax(s, wasm_i32x4_shuffle(s, s, 1, 0, 3, 2));
    return wasm_f32x4_extract_lane(s, 0);
}

/* GEMM register tile for gemm_kernel.h's generic branch: 4 rows x 2 vectors (8 float32x4
 * accumulators + 2 B vectors + 1 broadcast = 11 of x86's 16 xmm registers). Its default,
 * 4 x 3, needs all 16, but V8 keeps one xmm register as scratch and spills: measured in node
 * 20 on the development machine (256^3 and the GPT's 224 x 128 x 384 / 224 x 512 x 128
 * products), 4 x 2 ran at 35-50 GFLOP/s, 3 x 3 and 3 x 2 close behind, 4 x 3 at 18-25,
 * 6 x 2 and 5 x 2 at 15-20, 8 x 1 at 12. */
#ifndef GV_MR
#define GV_MR 4
#endif
#ifndef GV_NV
#define GV_NV 2
#endif

/* quant_body.h's primitives: a block is two v128 of 16 lanes; products widen to i16 and
 * i32x4.dot_i16x8_s adds them in pairs (exact), four i32 lanes of partial sums per block */
#include "quant.h"
typedef struct { v128_t lo, hi; } qv;
typedef v128_t qacc;
static inline qv qv_load(const void *p) { qv r = {wasm_v128_load(p), wasm_v128_load((const uint8_t *)p + 16)}; return r; }
static inline qv qv_nibbles(const uint8_t *p) {
    const v128_t t = wasm_v128_load(p);
    qv r = {wasm_v128_and(t, wasm_i8x16_splat(0x0f)), wasm_u8x16_shr(t, 4)};
    return r;
}
static inline v128_t qv_bits16(uint32_t h16) {
    /* lane j: bit j of the 16 bits, as 0x10 or 0 */
    const v128_t spread = wasm_i8x16_swizzle(wasm_i32x4_splat((int32_t)h16),
                                             wasm_i8x16_const(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1));
    const v128_t bit = wasm_u8x16_const(1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128);
    return wasm_v128_and(wasm_i8x16_eq(wasm_v128_and(spread, bit), bit), wasm_i8x16_splat(0x10));
}
static inline qv qv_or_bit4(qv v, uint32_t h) {
    qv r = {wasm_v128_or(v.lo, qv_bits16(h & 0xffffu)), wasm_v128_or(v.hi, qv_bits16(h >> 16))};
    return r;
}
static inline qv qv_sub(qv v, int c) {
    const v128_t k = wasm_i8x16_splat((int8_t)c);
    qv r = {wasm_i8x16_sub(v.lo, k), wasm_i8x16_sub(v.hi, k)};
    return r;
}
static inline qacc qacc_zero(void) { return wasm_f32x4_const_splat(0.0f); }
static inline v128_t qdot16(v128_t x, v128_t y) {
    return wasm_i32x4_add(wasm_i32x4_dot_i16x8(wasm_i16x8_extend_low_i8x16(x), wasm_i16x8_extend_low_i8x16(y)),
                          wasm_i32x4_dot_i16x8(wasm_i16x8_extend_high_i8x16(x), wasm_i16x8_extend_high_i8x16(y)));
}
static inline qacc qacc_dot_ss(qacc acc, qv x, qv y, float scale) {
    const v128_t sum = wasm_i32x4_add(qdot16(x.lo, y.lo), qdot16(x.hi, y.hi));
    return wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(sum), wasm_f32x4_splat(scale)));
}
static inline qacc qacc_dot_us(qacc acc, qv u, qv s, float scale) { return qacc_dot_ss(acc, u, s, scale); }
static inline qacc qacc_add(qacc a, qacc b) { return wasm_f32x4_add(a, b); }
static inline float qacc_sum(qacc a) { return vhsum(a); }

#include "kernel_body.h"
#include "gemm_kernel.h"
#include "quant_body.h"
#include "table.h"
#endif
