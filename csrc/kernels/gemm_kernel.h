/* gemm_kernel.h — the register-tiled GEMM micro-kernel, one per ISA.
 *
 * Included by each ISA file after its vector primitives (inside its target pragma).
 * Defines GEMM_MR/NR (register tile) and GEMM_MC/KC/NC (cache blocks, see gemm.c) and
 *
 *   K(gemm_ukernel)(kc, Ap, Bp, C, ldc, accumulate):
 *       C[MR,NR] (row stride ldc) = (accumulate ? C : 0) + sum_p Ap[p*MR+i] * Bp[p*NR+j]
 *
 * Ap is a packed MR-tall micro-panel of A (kc steps of MR floats), Bp a packed NR-wide
 * micro-panel of B (kc steps of NR floats). Any kc >= 1.
 */

#if defined(ODIN_ISA_AVX512) && !defined(ODIN_GEMM_GENERIC)
/* ---------------------------------------------------------------------------
 * AVX-512: an MR x (NV*16) tile held in MR*NV zmm accumulators; per k step NV vector
 * loads of B, MR broadcasts of A (folded into the FMAs' memory operands or one
 * vbroadcastss each), MR*NV FMAs.
 *
 * 8 x 32 (16 accumulators) measured best on the Zen 5 development machine (see
 * docs/performance.md): as fast as 12 x 32, 14 x 32, 6 x 64 and 8 x 48 on large
 * square products (all within noise, ~265 GFLOP/s, ~95% of the FMA peak) and the best
 * on transformer shapes, whose M (B*T, or 64 at generation/small batch) and N (multiples
 * of 32/64) it tiles without edge waste; 16 x 16 (one B load per 16 broadcasts) was
 * 10% slower. 16 accumulators keep 2 FMA pipes x 4 cycles latency busy.
 * Blocking: MC x KC = 192 x 256 floats of A (192 KiB) stay in L2, a KC x NR B
 * micro-panel (32 KiB) in L1, a KC x NC B block (4 MiB) in L3. KC from 128 to 512 and
 * MC from 128 to 384 measured within noise of each other; 256/192 was never worse.
 * G512_MR / G512_NV / GEMM_MC / GEMM_KC / GEMM_NC can be overridden with -D to tune.
 * ------------------------------------------------------------------------- */
#ifndef G512_MR
#define G512_MR 8
#endif
#ifndef G512_NV
#define G512_NV 2
#endif
#define GEMM_MR G512_MR
#define GEMM_NR (16 * G512_NV)
#ifndef GEMM_MC
#define GEMM_MC 192
#endif
#ifndef GEMM_KC
#define GEMM_KC 256
#endif
#ifndef GEMM_NC
#define GEMM_NC 4096
#endif

static void K(gemm_ukernel)(int kc, const float *restrict Ap, const float *restrict Bp, float *restrict C,
                            int ldc, int accumulate) {
    __m512 c[G512_MR][G512_NV];
#pragma GCC unroll 16
    for (int i = 0; i < G512_MR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < G512_NV; v++) c[i][v] = _mm512_setzero_ps();
#pragma GCC unroll 16
    for (int i = 0; i < G512_MR; i++) _mm_prefetch((const char *)(C + (size_t)i * ldc), _MM_HINT_T0);

#define G512_STEP(off)                                                                \
    do {                                                                               \
        __m512 b_[G512_NV];                                                            \
        _Pragma("GCC unroll 4") for (int v = 0; v < G512_NV; v++)                      \
            b_[v] = _mm512_loadu_ps(Bp + (off) * GEMM_NR + 16 * v);                    \
        _Pragma("GCC unroll 16") for (int i = 0; i < G512_MR; i++) {                   \
            __m512 a_ = _mm512_set1_ps(Ap[(off) * GEMM_MR + i]);                       \
            _Pragma("GCC unroll 4") for (int v = 0; v < G512_NV; v++)                  \
                c[i][v] = _mm512_fmadd_ps(a_, b_[v], c[i][v]);                         \
        }                                                                              \
    } while (0)

    int p = 0;
    for (; p + 4 <= kc; p += 4) {
        _mm_prefetch((const char *)(Bp + 8 * GEMM_NR), _MM_HINT_T0);
        _mm_prefetch((const char *)(Ap + 8 * GEMM_MR), _MM_HINT_T0);
        G512_STEP(0);
        G512_STEP(1);
        G512_STEP(2);
        G512_STEP(3);
        Ap += 4 * GEMM_MR;
        Bp += 4 * GEMM_NR;
    }
    for (; p < kc; p++) {
        G512_STEP(0);
        Ap += GEMM_MR;
        Bp += GEMM_NR;
    }
#undef G512_STEP
    if (accumulate) {
#pragma GCC unroll 16
        for (int i = 0; i < G512_MR; i++)
#pragma GCC unroll 4
            for (int v = 0; v < G512_NV; v++) {
                float *cp = C + (size_t)i * ldc + 16 * v;
                _mm512_storeu_ps(cp, _mm512_add_ps(_mm512_loadu_ps(cp), c[i][v]));
            }
    } else {
#pragma GCC unroll 16
        for (int i = 0; i < G512_MR; i++)
#pragma GCC unroll 4
            for (int v = 0; v < G512_NV; v++) _mm512_storeu_ps(C + (size_t)i * ldc + 16 * v, c[i][v]);
    }
}

#elif defined(ODIN_ISA_AVX2) && !defined(ODIN_GEMM_GENERIC)
/* ---------------------------------------------------------------------------
 * AVX2 + FMA: 6 x 16 tile in 12 ymm accumulators; 2 B loads + 6 broadcasts per k
 * (15 of the 16 ymm registers). Measured ~93% of single-thread OpenBLAS (Haswell
 * kernels) on the development machine. 4 x 24 was within noise (better on square
 * products, worse where N = 128 leaves 24-wide edge tiles); 8 x 8 and 3 x 32 were
 * 10-20% slower. MC/KC from 96..384 / 256..512 all measured within noise.
 * ------------------------------------------------------------------------- */
#ifndef G256_MR
#define G256_MR 6
#endif
#ifndef G256_NV
#define G256_NV 2
#endif
#define GEMM_MR G256_MR
#define GEMM_NR (8 * G256_NV)
#ifndef GEMM_MC
#define GEMM_MC 192
#endif
#ifndef GEMM_KC
#define GEMM_KC 256
#endif
#ifndef GEMM_NC
#define GEMM_NC 4096
#endif

static void K(gemm_ukernel)(int kc, const float *restrict Ap, const float *restrict Bp, float *restrict C,
                            int ldc, int accumulate) {
    __m256 c[G256_MR][G256_NV];
#pragma GCC unroll 16
    for (int i = 0; i < G256_MR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < G256_NV; v++) c[i][v] = _mm256_setzero_ps();
#pragma GCC unroll 16
    for (int i = 0; i < G256_MR; i++) _mm_prefetch((const char *)(C + (size_t)i * ldc), _MM_HINT_T0);

#define G256_STEP(off)                                                                \
    do {                                                                               \
        __m256 b_[G256_NV];                                                            \
        _Pragma("GCC unroll 4") for (int v = 0; v < G256_NV; v++)                      \
            b_[v] = _mm256_loadu_ps(Bp + (off) * GEMM_NR + 8 * v);                     \
        _Pragma("GCC unroll 16") for (int i = 0; i < G256_MR; i++) {                   \
            __m256 a_ = _mm256_broadcast_ss(Ap + (off) * GEMM_MR + i);                 \
            _Pragma("GCC unroll 4") for (int v = 0; v < G256_NV; v++)                  \
                c[i][v] = _mm256_fmadd_ps(a_, b_[v], c[i][v]);                         \
        }                                                                              \
    } while (0)

    int p = 0;
    for (; p + 4 <= kc; p += 4) {
        _mm_prefetch((const char *)(Bp + 8 * GEMM_NR), _MM_HINT_T0);
        _mm_prefetch((const char *)(Ap + 8 * GEMM_MR), _MM_HINT_T0);
        G256_STEP(0);
        G256_STEP(1);
        G256_STEP(2);
        G256_STEP(3);
        Ap += 4 * GEMM_MR;
        Bp += 4 * GEMM_NR;
    }
    for (; p < kc; p++) {
        G256_STEP(0);
        Ap += GEMM_MR;
        Bp += GEMM_NR;
    }
#undef G256_STEP
    if (accumulate) {
#pragma GCC unroll 16
        for (int i = 0; i < G256_MR; i++)
#pragma GCC unroll 4
            for (int v = 0; v < G256_NV; v++) {
                float *cp = C + (size_t)i * ldc + 8 * v;
                _mm256_storeu_ps(cp, _mm256_add_ps(_mm256_loadu_ps(cp), c[i][v]));
            }
    } else {
#pragma GCC unroll 16
        for (int i = 0; i < G256_MR; i++)
#pragma GCC unroll 4
            for (int v = 0; v < G256_NV; v++) _mm256_storeu_ps(C + (size_t)i * ldc + 8 * v, c[i][v]);
    }
}

#elif VL > 1
/* ---------------------------------------------------------------------------
 * Any other vector ISA (e.g. wasm simd128): the same register tile written with the
 * including file's primitives (vf, VL, vload, vset1, vfma, vadd, vstore), 4 x 3 vectors
 * (12 accumulators + 3 B vectors + 1 broadcast = 16 registers). Building the x86 files
 * with -DODIN_GEMM_GENERIC selects this branch for them too, which is how it is tested.
 * ------------------------------------------------------------------------- */
#ifndef GV_MR
#define GV_MR 4
#endif
#ifndef GV_NV
#define GV_NV 3
#endif
#define GEMM_MR GV_MR
#define GEMM_NR (VL * GV_NV)
#ifndef GEMM_MC
#define GEMM_MC 128
#endif
#ifndef GEMM_KC
#define GEMM_KC 256
#endif
#ifndef GEMM_NC
#define GEMM_NC 2048
#endif

static void K(gemm_ukernel)(int kc, const float *restrict Ap, const float *restrict Bp, float *restrict C,
                            int ldc, int accumulate) {
    vf c[GV_MR][GV_NV];
#pragma GCC unroll 16
    for (int i = 0; i < GV_MR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < GV_NV; v++) c[i][v] = vzero();
    for (int p = 0; p < kc; p++) {
        vf b[GV_NV];
#pragma GCC unroll 4
        for (int v = 0; v < GV_NV; v++) b[v] = vload(Bp + v * VL);
#pragma GCC unroll 16
        for (int i = 0; i < GV_MR; i++) {
            const vf a = vset1(Ap[i]);
#pragma GCC unroll 4
            for (int v = 0; v < GV_NV; v++) c[i][v] = vfma(a, b[v], c[i][v]);
        }
        Ap += GEMM_MR;
        Bp += GEMM_NR;
    }
#pragma GCC unroll 16
    for (int i = 0; i < GV_MR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < GV_NV; v++) {
            float *cp = C + (size_t)i * ldc + v * VL;
            vstore(cp, accumulate ? vadd(vload(cp), c[i][v]) : c[i][v]);
        }
}

#else
/* ---------------------------------------------------------------------------
 * Scalar: a 2 x 6 tile in 12 local floats (all of them live in registers alongside
 * the 6 B values: x86-64 has 16 xmm registers), plain multiply + add (no FMA assumed;
 * scalar.c compiles with auto-vectorisation off), so this is honest one-float-at-a-time
 * code: mulss/addss only. It runs at the scalar peak (2 mul + 2 add per cycle, ~17
 * GFLOP/s on the development machine). Measured alternatives: 4 x 4 spills 6
 * accumulators to the stack (11 GFLOP/s), 4 x 2 / 2 x 4 13-14, 3 x 4 9, 2 x 8 10.
 * ------------------------------------------------------------------------- */
#ifndef SCALAR_MR
#define SCALAR_MR 2
#endif
#ifndef SCALAR_NR
#define SCALAR_NR 6
#endif
#define GEMM_MR SCALAR_MR
#define GEMM_NR SCALAR_NR
#ifndef GEMM_MC
#define GEMM_MC 128
#endif
#ifndef GEMM_KC
#define GEMM_KC 256
#endif
#ifndef GEMM_NC
#define GEMM_NC 2048
#endif

static void K(gemm_ukernel)(int kc, const float *restrict Ap, const float *restrict Bp, float *restrict C,
                            int ldc, int accumulate) {
    float c[GEMM_MR][GEMM_NR];
#pragma GCC unroll 16
    for (int i = 0; i < GEMM_MR; i++)
#pragma GCC unroll 16
        for (int j = 0; j < GEMM_NR; j++) c[i][j] = 0.0f;
    for (int p = 0; p < kc; p++) {
        float b[GEMM_NR];
#pragma GCC unroll 16
        for (int j = 0; j < GEMM_NR; j++) b[j] = Bp[j];
#pragma GCC unroll 16
        for (int i = 0; i < GEMM_MR; i++) {
            const float a = Ap[i];
#pragma GCC unroll 16
            for (int j = 0; j < GEMM_NR; j++) c[i][j] += a * b[j];
        }
        Ap += GEMM_MR;
        Bp += GEMM_NR;
    }
#pragma GCC unroll 16
    for (int i = 0; i < GEMM_MR; i++)
#pragma GCC unroll 16
        for (int j = 0; j < GEMM_NR; j++) {
            float *cp = C + (size_t)i * ldc + j;
            *cp = accumulate ? *cp + c[i][j] : c[i][j];
        }
}
#endif

/* gemm.c computes edge tiles into a 1024-float buffer */
_Static_assert(GEMM_MR * GEMM_NR <= 1024, "GEMM_MR * GEMM_NR must fit gemm.c's edge tile (1024 floats)");
