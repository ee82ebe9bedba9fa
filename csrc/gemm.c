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
 * Small or skinny products (generation: M of 1..a few rows) skip packing when the
 * operands are already contiguous along K: each output is one vectorised dot product.
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

/* Ap[panel][p][MR] for rows i0.., depth p0..p0+kc */
static void pack_a(float *Ap, const float *a, int rsa, int csa, int i0, int mc, int p0, int kc, int MR) {
    for (int ir = 0; ir < mc; ir += MR) {
        int mr = mc - ir < MR ? mc - ir : MR;
        float *dst = Ap + (size_t)ir * kc;
        if (mr < MR) memset(dst, 0, sizeof(float) * (size_t)kc * MR);
        for (int i = 0; i < mr; i++) {
            const float *src = a + (size_t)(i0 + ir + i) * rsa + (size_t)p0 * csa;
            for (int p = 0; p < kc; p++) dst[(size_t)p * MR + i] = src[(size_t)p * csa];
        }
    }
}

/* Bp[panel][p][NR] for columns j0.., depth p0..p0+kc */
static void pack_b(float *Bp, const float *b, int rsb, int csb, int j0, int nc, int p0, int kc, int NR) {
    for (int jr = 0; jr < nc; jr += NR) {
        int nr = nc - jr < NR ? nc - jr : NR;
        float *dst = Bp + (size_t)jr * kc;
        if (csb == 1) {
            for (int p = 0; p < kc; p++) {
                const float *src = b + (size_t)(p0 + p) * rsb + (size_t)(j0 + jr);
                float *d = dst + (size_t)p * NR;
                memcpy(d, src, sizeof(float) * (size_t)nr);
                for (int j = nr; j < NR; j++) d[j] = 0.0f;
            }
        } else {
            if (nr < NR) memset(dst, 0, sizeof(float) * (size_t)kc * NR);
            for (int j = 0; j < nr; j++) {
                const float *src = b + (size_t)p0 * rsb + (size_t)(j0 + jr + j) * csb;
                for (int p = 0; p < kc; p++) dst[(size_t)p * NR + j] = src[(size_t)p * rsb];
            }
        }
    }
}

/* Below this many multiply-adds, or for a handful of rows, packing costs more than it saves. */
#define SMALL_GEMM_FLOPS (32 * 32 * 32)
#define SKINNY_ROWS 4

int odin_gemm(int M, int N, int K, const float *a, int rsa, int csa,
              const float *b, int rsb, int csb, int accumulate, float *c, int ldc) {
    const odin_kernel_table *kt = odin_kern;
    if (M <= 0 || N <= 0) return 0;
    if (K <= 0) {
        if (!accumulate)
            for (int i = 0; i < M; i++) memset(c + (size_t)i * ldc, 0, sizeof(float) * (size_t)N);
        return 0;
    }
    if (csa == 1 && rsb == 1 && ((size_t)M * N * K <= SMALL_GEMM_FLOPS || M <= SKINNY_ROWS)) {
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
    const int MR = kt->mr, NR = kt->nr, MC = kt->mc, KC = kt->kc, NC = kt->nc;
    const size_t a_floats = (size_t)(MC + MR) * KC, b_floats = (size_t)(NC + NR) * KC;
    float *buf = pack_buffer(a_floats + b_floats);
    if (!buf) return -1;
    float *Ap = buf, *Bp = buf + a_floats;
    float tile[16 * 64]; /* edge tiles: MR*NR <= 1024 for every ISA */

    for (int jc = 0; jc < N; jc += NC) {
        int nc = N - jc < NC ? N - jc : NC;
        for (int pc = 0; pc < K; pc += KC) {
            int kc = K - pc < KC ? K - pc : KC;
            int acc = accumulate || pc > 0;
            pack_b(Bp, b, rsb, csb, jc, nc, pc, kc, NR);
            for (int ic = 0; ic < M; ic += MC) {
                int mc = M - ic < MC ? M - ic : MC;
                pack_a(Ap, a, rsa, csa, ic, mc, pc, kc, MR);
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
