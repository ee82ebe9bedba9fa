/* gemm_kernel.h — TEMPORARY naive micro-kernel so the tree builds; being replaced. */
#define GEMM_MR 4
#define GEMM_NR 4
#define GEMM_MC 64
#define GEMM_KC 256
#define GEMM_NC 1024
static void K(gemm_ukernel)(int kc, const float *Ap, const float *Bp, float *C, int ldc, int accumulate) {
    float acc[GEMM_MR][GEMM_NR] = {{0}};
    for (int p = 0; p < kc; p++)
        for (int i = 0; i < GEMM_MR; i++)
            for (int j = 0; j < GEMM_NR; j++) acc[i][j] += Ap[p * GEMM_MR + i] * Bp[p * GEMM_NR + j];
    for (int i = 0; i < GEMM_MR; i++)
        for (int j = 0; j < GEMM_NR; j++) C[i * ldc + j] = (accumulate ? C[i * ldc + j] : 0.0f) + acc[i][j];
}
