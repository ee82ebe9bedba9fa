/* gemm.c — BLIS-style single-precision GEMM around the per-ISA micro-kernel.
 *
 *   C(i,j) (+)= sum_p A(i,p) B(p,j),  A(i,p) = a[i*rsa + p*csa],  B(p,j) = b[p*rsb + j*csb]
 *
 * Loop nest (outside in): NC columns of B -> KC deep slice -> pack B slice into NR-wide
 * panels (kept in L3) -> MC rows of A -> pack into MR-tall panels (kept in L2) ->
 * MR x NR register tiles computed by odin_kern->gemm_ukernel (streams from L1).
 * Strides make one routine serve the forward product and both backward products
 * (transposes become strides; packing absorbs them).
 *
 * Block sizes are the ISA's MC/KC/NC, balanced so that no block is a sliver.
 * Skinny products (generation: M of 1..a few rows) skip packing when the operands are
 * already contiguous along K: each output is one vectorised dot product.
 *
 * Pack buffers: one per thread, allocated on that thread's first packed call and
 * freed at thread exit (never inside the loops). Kernel-level code stays allocation-free.
 */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#if !defined(__wasm__)
#include <pthread.h>
static pthread_key_t g_pack_key;
static pthread_once_t g_pack_once = PTHREAD_ONCE_INIT;
static void pack_key_make(void) { pthread_key_create(&g_pack_key, free); }
#endif

static _Thread_local float *tl_pack;
static _Thread_local size_t tl_pack_cap;

static float *pack_buffer(size_t floats) {
    if (tl_pack_cap >= floats) return tl_pack;
    if (floats > ODIN_MAX_FLOATS) return NULL; /* the blocking bounds it; kept checked all the same */
    size_t bytes = ((floats * sizeof(float)) + 63) & ~(size_t)63;
    float *p = (float *)aligned_alloc(64, bytes);
    if (!p) return NULL;
    free(tl_pack);
    tl_pack = p;
    tl_pack_cap = floats;
#if !defined(__wasm__)
    pthread_once(&g_pack_once, pack_key_make);
    pthread_setspecific(g_pack_key, p);
#endif
    return p;
}

/* ---- packing --------------------------------------------------------------
 * Both operands are packed into micro-panels of R interleaved lines (R = MR for A,
 * NR for B): dst[p*R + l] = line l at depth p, lines past the edge zero-filled so
 * the micro-kernel always runs full tiles. Source layouts met in practice:
 *   lines contiguous along p  (A of forward/dinp, B of forward = W rows):  a transpose,
 *                              done in 4x4 register blocks;
 *   depth contiguous per line (A of dW = dout columns, B of dinp/dW):       row copies.
 */
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* dst[p*R + l] = src[l*ld + p], l < n <= R, p < kc */
static void pack_lines(float *restrict dst, const float *restrict src, size_t ld, int n, int kc, int R) {
    int l = 0;
#if defined(__SSE2__)
    for (; l + 4 <= n; l += 4) {
        const float *s0 = src + (size_t)l * ld, *s1 = s0 + ld, *s2 = s1 + ld, *s3 = s2 + ld;
        float *d = dst + l;
        int p = 0;
        for (; p + 4 <= kc; p += 4) {
            __m128 r0 = _mm_loadu_ps(s0 + p), r1 = _mm_loadu_ps(s1 + p);
            __m128 r2 = _mm_loadu_ps(s2 + p), r3 = _mm_loadu_ps(s3 + p);
            _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
            _mm_storeu_ps(d + (size_t)(p + 0) * R, r0);
            _mm_storeu_ps(d + (size_t)(p + 1) * R, r1);
            _mm_storeu_ps(d + (size_t)(p + 2) * R, r2);
            _mm_storeu_ps(d + (size_t)(p + 3) * R, r3);
        }
        for (; p < kc; p++) {
            float *dp = d + (size_t)p * R;
            dp[0] = s0[p]; dp[1] = s1[p]; dp[2] = s2[p]; dp[3] = s3[p];
        }
    }
#endif
    for (; l < n; l++) {
        const float *s = src + (size_t)l * ld;
        for (int p = 0; p < kc; p++) dst[(size_t)p * R + l] = s[p];
    }
    if (n < R)
        for (int p = 0; p < kc; p++)
            for (int j = n; j < R; j++) dst[(size_t)p * R + j] = 0.0f;
}

/* dst[p*R + l] = src[p*ld + l], l < n <= R, p < kc. Full panels of the usual widths get
 * a copy loop with a constant trip count (straight vector moves, no call per row). */
#define PACK_ROWS_FIXED(W)                                                          \
    case W:                                                                         \
        for (int p = 0; p < kc; p++) {                                              \
            const float *s = src + (size_t)p * ld;                                  \
            float *d = dst + (size_t)p * W;                                         \
            for (int l = 0; l < W; l++) d[l] = s[l];                                \
        }                                                                           \
        return;
static void pack_rows(float *restrict dst, const float *restrict src, size_t ld, int n, int kc, int R) {
    if (n == R) {
        switch (R) {
            PACK_ROWS_FIXED(4)
            PACK_ROWS_FIXED(6)
            PACK_ROWS_FIXED(8)
            PACK_ROWS_FIXED(12)
            PACK_ROWS_FIXED(16)
            PACK_ROWS_FIXED(32)
            PACK_ROWS_FIXED(48)
            PACK_ROWS_FIXED(64)
            default: break;
        }
    }
    for (int p = 0; p < kc; p++) {
        const float *s = src + (size_t)p * ld;
        float *d = dst + (size_t)p * R;
        for (int l = 0; l < n; l++) d[l] = s[l];
        for (int l = n; l < R; l++) d[l] = 0.0f;
    }
}
#undef PACK_ROWS_FIXED

/* general strides: dst[p*R + l] = src[l*ls + p*ps] */
static void pack_strided(float *restrict dst, const float *restrict src, size_t ls, size_t ps, int n, int kc, int R) {
    for (int p = 0; p < kc; p++) {
        float *d = dst + (size_t)p * R;
        for (int l = 0; l < n; l++) d[l] = src[(size_t)l * ls + (size_t)p * ps];
        for (int l = n; l < R; l++) d[l] = 0.0f;
    }
}

/* Pack `len` lines (rows of A or columns of B) starting at `base` into R-line panels.
 * ls: stride between lines, ps: stride along depth. */
static void pack_panels(float *dst, const float *base, size_t ls, size_t ps, int len, int kc, int R) {
    for (int r = 0; r < len; r += R) {
        int n = len - r < R ? len - r : R;
        float *d = dst + (size_t)r * kc;
        const float *s = base + (size_t)r * ls;
        if (ps == 1)
            pack_lines(d, s, ls, n, kc, R);
        else if (ls == 1)
            pack_rows(d, s, ps, n, kc, R);
        else
            pack_strided(d, s, ls, ps, n, kc, R);
    }
}

/* Skinny products (generation: a handful of rows against a weight matrix) skip packing:
 * each output is one vectorised dot product and W streams through the cache once per row.
 * Measured crossover (K=N=768, forward layout): the packed path wins from M=5 with the
 * SIMD kernels and from M=2 with the scalar one. For every other small shape the packed
 * path measured as fast or faster, down to 8x8x8, so there is no "tiny" shortcut. */
#ifndef SKINNY_ROWS
#define SKINNY_ROWS 4
#endif

static int ceil_div(int a, int b) { return (a + b - 1) / b; }
static int round_up(int a, int m) { return ceil_div(a, m) * m; }

/* Split n into ceil(n/block) nearly equal steps, each rounded up to a multiple of unit
 * (K=257 becomes 129+128 instead of 256+1; M=200 with MC=192 becomes 104+96). */
static int balanced_step(int n, int block, int unit) {
    return round_up(ceil_div(n, ceil_div(n, block)), unit);
}

static int gemm_run(int M, int N, int K, const float *a, int rsa, int csa,
                    const float *b, int rsb, int csb, int accumulate, float *c, int ldc) {
    const odin_kernel_table *kt = odin_kern;
    if (M <= 0 || N <= 0) return 0;
    if (K <= 0) {
        if (!accumulate)
            for (int i = 0; i < M; i++) memset(c + (size_t)i * ldc, 0, sizeof(float) * (size_t)N);
        return 0;
    }
    const int skinny = kt == &odin_kernels_scalar ? 1 : SKINNY_ROWS;
    if (csa == 1 && rsb == 1 && M <= skinny) {
        for (int i = 0; i < M; i++) {
            const float *ai = a + (size_t)i * rsa;
            float *ci = c + (size_t)i * ldc;
            for (int j = 0; j < N; j++) {
                float d = kt->dot(ai, b + (size_t)j * csb, K);
                ci[j] = accumulate ? ci[j] + d : d;
            }
        }
        return 0;
    }
    const int MR = kt->mr, NR = kt->nr;
    /* Block sizes: at most the ISA's MC/KC/NC (plus one MR/NR for rounding), balanced. */
    const int MC = balanced_step(M, kt->mc, MR), KC = balanced_step(K, kt->kc, 1);
    const int NC = balanced_step(N, kt->nc, NR);
    /* Pack space for this call's blocks (MC, NC are at most round_up(M, MR), round_up(N, NR)
     * and the ISA's MC+MR-1 / NC+NR-1: ~4.4 MB with the AVX-512 blocking at most, far less
     * for transformer-sized products). The per-thread buffer only ever grows, so
     * steady-state training allocates nothing. */
    const size_t a_floats = (odin_size_mul((size_t)MC, (size_t)KC) + 15) & ~(size_t)15; /* keeps Bp 64-byte aligned */
    const size_t b_floats = odin_size_mul((size_t)NC, (size_t)KC);
    float *buf = pack_buffer(odin_size_add(a_floats, b_floats));
    if (!buf) return -1;
    float *Ap = buf, *Bp = buf + a_floats;
    _Alignas(64) float tile[1024]; /* edge tiles: MR*NR <= 1024 for every ISA */

    for (int jc = 0; jc < N; jc += NC) {
        int nc = N - jc < NC ? N - jc : NC;
        for (int pc = 0; pc < K; pc += KC) {
            int kc = K - pc < KC ? K - pc : KC;
            int acc = accumulate || pc > 0;
            pack_panels(Bp, b + (size_t)pc * rsb + (size_t)jc * csb, (size_t)csb, (size_t)rsb, nc, kc, NR);
            for (int ic = 0; ic < M; ic += MC) {
                int mc = M - ic < MC ? M - ic : MC;
                pack_panels(Ap, a + (size_t)ic * rsa + (size_t)pc * csa, (size_t)rsa, (size_t)csa, mc, kc, MR);
                for (int jr = 0; jr < nc; jr += NR) {
                    int nr = nc - jr < NR ? nc - jr : NR;
                    const float *bp = Bp + (size_t)jr * kc;
                    for (int ir = 0; ir < mc; ir += MR) {
                        int mr = mc - ir < MR ? mc - ir : MR;
                        const float *ap = Ap + (size_t)ir * kc;
                        float *cij = c + (size_t)(ic + ir) * ldc + (jc + jr);
                        if (mr == MR && nr == NR) {
                            kt->gemm_ukernel(kc, ap, bp, cij, ldc, acc);
                        } else {
                            kt->gemm_ukernel(kc, ap, bp, tile, NR, 0);
                            for (int i = 0; i < mr; i++)
                                for (int j = 0; j < nr; j++)
                                    cij[(size_t)i * ldc + j] = (acc ? cij[(size_t)i * ldc + j] : 0.0f) + tile[i * NR + j];
                        }
                    }
                }
            }
        }
    }
    return 0;
}

#if !defined(__wasm__)
_Thread_local uint64_t *odin_gemm_clock;
#endif

int odin_gemm(int M, int N, int K, const float *a, int rsa, int csa,
              const float *b, int rsb, int csb, int accumulate, float *c, int ldc) {
#if !defined(__wasm__)
    uint64_t *clock = odin_gemm_clock; /* set only while the trainer profiles (spheres.c) */
    if (clock) {
        const uint64_t t0 = odin_now_ns();
        const int r = gemm_run(M, N, K, a, rsa, csa, b, rsb, csb, accumulate, c, ldc);
        *clock += odin_now_ns() - t0;
        return r;
    }
#endif
    return gemm_run(M, N, K, a, rsa, csa, b, rsb, csb, accumulate, c, ldc);
}
