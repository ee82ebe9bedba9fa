/* api.c — the exported kernel API: validates arguments, then calls the kernel table.
 * Every check names the argument so the Python layer can pass the message on verbatim. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "internal.h"

static _Thread_local char tl_err[512];

odin_status odin_fail(odin_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_err, sizeof tl_err, fmt, ap);
    va_end(ap);
    return code;
}

const char *odin_last_error(void) { return tl_err; }
const char *odin_version(void) { return ODIN_VERSION; }
const char *odin_compiler(void) {
#if defined(__clang__)
    return "clang " __clang_version__;
#elif defined(__GNUC__)
    return "gcc " __VERSION__;
#else
    return "unknown compiler";
#endif
}

#define PTR ODIN_REQUIRE_PTR
/* int dimensions: > 0 and at most ODIN_DIM_MAX (the kernels form small multiples of them in
 * int); element counts n are size_t and only need to be > 0 */
#define POS(v, name) do { ODIN_REQUIRE_POS(v, name); ODIN_REQUIRE_DIM(v, name); } while (0)
#define POSN ODIN_REQUIRE_POS

/* ---- matmul ---------------------------------------------------------------- */
odin_status odin_matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                                int M, int K, int N) {
    PTR(out, "out"); PTR(inp, "inp"); PTR(weight, "weight");
    POS(M, "M"); POS(K, "K"); POS(N, "N");
    if (bias)
        for (int i = 0; i < M; i++) memcpy(out + (size_t)i * N, bias, sizeof(float) * (size_t)N);
    if (odin_gemm(M, N, K, inp, K, 1, weight, 1, K, bias != NULL, out, N))
        return odin_fail(ODIN_NO_MEMORY, "matmul: cannot allocate the packing buffers");
    return ODIN_OK;
}

odin_status odin_matmul_backward(float *dinp, float *dweight, float *dbias,
                                 const float *dout, const float *inp, const float *weight,
                                 int M, int K, int N) {
    PTR(dout, "dout");
    POS(M, "M"); POS(K, "K"); POS(N, "N");
    if (dinp) {
        PTR(weight, "weight");
        if (odin_gemm(M, K, N, dout, N, 1, weight, K, 1, 1, dinp, K)) goto oom;
    }
    if (dweight) {
        PTR(inp, "inp");
        if (odin_gemm(N, K, M, dout, 1, N, inp, K, 1, 1, dweight, K)) goto oom;
    }
    if (dbias)
        for (int i = 0; i < M; i++) odin_kern->axpy(dbias, 1.0f, dout + (size_t)i * N, N);
    return ODIN_OK;
oom:
    return odin_fail(ODIN_NO_MEMORY, "matmul backward: cannot allocate the packing buffers");
}

odin_status odin_sgemm(int M, int N, int K, const float *a, int rsa, int csa,
                       const float *b, int rsb, int csb, float beta, float *c, int ldc) {
    PTR(a, "a"); PTR(b, "b"); PTR(c, "c");
    POS(M, "M"); POS(N, "N");
    if (K < 0) return odin_fail(ODIN_BAD_SHAPE, "K must be >= 0 (got %d)", K);
    if (beta != 0.0f && beta != 1.0f) return odin_fail(ODIN_BAD_ARG, "beta must be 0 or 1 (got %g)", beta);
    if (ldc < N) return odin_fail(ODIN_BAD_SHAPE, "ldc must be >= N (%d), got %d", N, ldc);
    if (odin_gemm(M, N, K, a, rsa, csa, b, rsb, csb, beta == 1.0f, c, ldc))
        return odin_fail(ODIN_NO_MEMORY, "sgemm: cannot allocate the packing buffers");
    return ODIN_OK;
}

/* ---- normalisation ------------------------------------------------------------ */
odin_status odin_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                                   const float *weight, const float *bias, int N, int C, float eps) {
    PTR(out, "out"); PTR(inp, "inp"); PTR(weight, "weight"); PTR(bias, "bias");
    POS(N, "N"); POS(C, "C");
    if (!(eps >= 0.0f) || !isfinite(eps)) return odin_fail(ODIN_BAD_ARG, "eps must be a finite number >= 0 (got %g)", eps);
    odin_kern->layernorm_forward(out, mean, rstd, inp, weight, bias, N, C, eps);
    return ODIN_OK;
}

odin_status odin_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                    const float *inp, const float *weight, const float *mean,
                                    const float *rstd, int N, int C) {
    PTR(dinp, "dinp"); PTR(dweight, "dweight"); PTR(dbias, "dbias"); PTR(dout, "dout");
    PTR(inp, "inp"); PTR(weight, "weight"); PTR(mean, "mean"); PTR(rstd, "rstd");
    POS(N, "N"); POS(C, "C");
    odin_kern->layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
    return ODIN_OK;
}

odin_status odin_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight,
                                 int N, int C, float eps) {
    PTR(out, "out"); PTR(inp, "inp"); PTR(weight, "weight");
    POS(N, "N"); POS(C, "C");
    if (!(eps >= 0.0f) || !isfinite(eps)) return odin_fail(ODIN_BAD_ARG, "eps must be a finite number >= 0 (got %g)", eps);
    odin_kern->rmsnorm_forward(out, rstd, inp, weight, N, C, eps);
    return ODIN_OK;
}

odin_status odin_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                                  const float *weight, const float *rstd, int N, int C) {
    PTR(dinp, "dinp"); PTR(dweight, "dweight"); PTR(dout, "dout"); PTR(inp, "inp");
    PTR(weight, "weight"); PTR(rstd, "rstd");
    POS(N, "N"); POS(C, "C");
    odin_kern->rmsnorm_backward(dinp, dweight, dout, inp, weight, rstd, N, C);
    return ODIN_OK;
}

/* ---- elementwise ----------------------------------------------------------------- */
#define UNARY(fn, field)                                                    \
    odin_status fn(float *out, const float *inp, size_t n) {                \
        PTR(out, "out"); PTR(inp, "inp"); POSN(n, "n");                       \
        odin_kern->field(out, inp, n);                                       \
        return ODIN_OK;                                                      \
    }
UNARY(odin_gelu_forward, gelu_forward)
UNARY(odin_vexp, vexp)
UNARY(odin_vsigmoid, vsigmoid)
UNARY(odin_vtanh, vtanh)
#undef UNARY

odin_status odin_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
    PTR(dinp, "dinp"); PTR(inp, "inp"); PTR(dout, "dout"); POSN(n, "n");
    odin_kern->gelu_backward(dinp, inp, dout, n);
    return ODIN_OK;
}

/* ---- softmax and attention ---------------------------------------------------------- */
odin_status odin_softmax_forward(float *out, const float *inp, int N, int C) {
    PTR(out, "out"); PTR(inp, "inp"); POS(N, "N"); POS(C, "C");
    odin_kern->softmax_forward(out, inp, N, C);
    return ODIN_OK;
}

odin_status odin_softmax_backward(float *dinp, const float *out, const float *dout, int N, int C) {
    PTR(dinp, "dinp"); PTR(out, "out"); PTR(dout, "dout"); POS(N, "N"); POS(C, "C");
    odin_kern->softmax_backward(dinp, out, dout, N, C);
    return ODIN_OK;
}

static odin_status check_heads(int B, int T, int C, int NH) {
    POS(B, "B"); POS(T, "T"); POS(C, "C"); POS(NH, "NH");
    if (C % NH) return odin_fail(ODIN_BAD_SHAPE, "C (%d) must be divisible by NH (%d)", C, NH);
    return ODIN_OK;
}

size_t odin_attention_scratch_floats(int T, int C, int NH) {
    if (T <= 0 || C <= 0 || NH <= 0 || T > ODIN_DIM_MAX || C > ODIN_DIM_MAX || C % NH) return 0;
    return odin_att_scratch_floats(T, C / NH);
}

odin_status odin_attention_forward(float *out, float *att, float *scratch, const float *qkv,
                                   const float *slopes, int B, int T, int C, int NH) {
    PTR(out, "out"); PTR(att, "att"); PTR(scratch, "scratch"); PTR(qkv, "qkv");
    odin_status s = check_heads(B, T, C, NH);
    if (s) return s;
    odin_kern->attention_forward(out, att, scratch, qkv, slopes, B, T, C, NH);
    return ODIN_OK;
}

odin_status odin_attention_backward(float *dqkv, float *scratch, const float *dout, const float *qkv,
                                    const float *att, int B, int T, int C, int NH) {
    PTR(dqkv, "dqkv"); PTR(scratch, "scratch"); PTR(dout, "dout"); PTR(qkv, "qkv"); PTR(att, "att");
    odin_status s = check_heads(B, T, C, NH);
    if (s) return s;
    odin_kern->attention_backward(dqkv, scratch, dout, qkv, att, B, T, C, NH);
    return ODIN_OK;
}

/* ---- embedding ------------------------------------------------------------------------- */
static odin_status check_tokens(const int32_t *tokens, int B, int T, int V, int maxT) {
    POS(B, "B"); POS(T, "T"); POS(V, "V"); POS(maxT, "maxT");
    ODIN_REQUIRE_DIM((long long)B * T, "B * T");
    if (T > maxT) return odin_fail(ODIN_BAD_SHAPE, "T (%d) exceeds the position table length maxT (%d)", T, maxT);
    for (size_t i = 0; i < (size_t)B * T; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return odin_fail(ODIN_BAD_ARG, "tokens[%zu] = %d is outside the vocabulary [0, %d)", i, (int)tokens[i], V);
    return ODIN_OK;
}

odin_status odin_embedding_forward(float *out, const int32_t *tokens, const float *wte,
                                   const float *wpe, int B, int T, int C, int V, int maxT) {
    PTR(out, "out"); PTR(tokens, "tokens"); PTR(wte, "wte"); PTR(wpe, "wpe"); POS(C, "C");
    odin_status s = check_tokens(tokens, B, T, V, maxT);
    if (s) return s;
    odin_kern->embedding_forward(out, tokens, wte, wpe, B, T, C);
    return ODIN_OK;
}

odin_status odin_embedding_backward(float *dwte, float *dwpe, const float *dout,
                                    const int32_t *tokens, int B, int T, int C, int V, int maxT) {
    PTR(dout, "dout"); PTR(tokens, "tokens"); POS(C, "C");
    odin_status s = check_tokens(tokens, B, T, V, maxT);
    if (s) return s;
    odin_kern->embedding_backward(dwte, dwpe, dout, tokens, B, T, C);
    return ODIN_OK;
}

/* ---- loss --------------------------------------------------------------------------------- */
static odin_status check_targets(const int32_t *targets, const uint8_t *mask, int N, int V, int *count) {
    int n = 0;
    for (int i = 0; i < N; i++) {
        if (mask && !mask[i]) continue;
        if (targets[i] < 0 || targets[i] >= V)
            return odin_fail(ODIN_BAD_ARG, "targets[%d] = %d is outside the vocabulary [0, %d)", i, (int)targets[i], V);
        n++;
    }
    *count = n;
    return ODIN_OK;
}

odin_status odin_crossentropy_forward(float *mean_loss, float *losses, float *lse,
                                      const float *logits, const int32_t *targets,
                                      const uint8_t *mask, int N, int V) {
    PTR(mean_loss, "mean_loss"); PTR(losses, "losses"); PTR(lse, "lse"); PTR(logits, "logits");
    PTR(targets, "targets"); POS(N, "N"); POS(V, "V");
    int count = 0;
    odin_status s = check_targets(targets, mask, N, V, &count);
    if (s) return s;
    double total = odin_kern->crossentropy_forward(losses, lse, logits, targets, mask, N, V);
    *mean_loss = count ? (float)(total / count) : 0.0f;
    if (!isfinite(*mean_loss)) {
        for (int i = 0; i < N; i++)
            if (!isfinite(losses[i]))
                return odin_fail(ODIN_NAN_DETECTED, "loss is not finite: logits row %d contains NaN or Inf", i);
        return odin_fail(ODIN_NAN_DETECTED, "loss is not finite");
    }
    return ODIN_OK;
}

odin_status odin_crossentropy_backward(float *dlogits, const float *logits, const float *lse,
                                       const int32_t *targets, const uint8_t *mask,
                                       int N, int V, float dloss) {
    PTR(dlogits, "dlogits"); PTR(logits, "logits"); PTR(lse, "lse"); PTR(targets, "targets");
    POS(N, "N"); POS(V, "V");
    int count = 0;
    odin_status s = check_targets(targets, mask, N, V, &count);
    if (s) return s;
    if (count) odin_kern->crossentropy_backward(dlogits, logits, lse, targets, mask, N, V, dloss / (float)count);
    return ODIN_OK;
}

/* ---- RWKV-4 kernels ------------------------------------------------------------------------ */
static odin_status check_btc(int B, int T, int C) {
    POS(B, "B"); POS(T, "T"); POS(C, "C");
    return ODIN_OK;
}

odin_status odin_tokenshift_forward(float *out, const float *x, const float *mix, const float *prev,
                                    int B, int T, int C) {
    PTR(out, "out"); PTR(x, "x"); PTR(mix, "mix");
    odin_status s = check_btc(B, T, C);
    if (s) return s;
    odin_kern->tokenshift_forward(out, x, mix, prev, B, T, C);
    return ODIN_OK;
}

odin_status odin_tokenshift_backward(float *dx, float *dmix, const float *dout, const float *x,
                                     const float *mix, int B, int T, int C) {
    PTR(dx, "dx"); PTR(dmix, "dmix"); PTR(dout, "dout"); PTR(x, "x"); PTR(mix, "mix");
    odin_status s = check_btc(B, T, C);
    if (s) return s;
    odin_kern->tokenshift_backward(dx, dmix, dout, x, mix, B, T, C);
    return ODIN_OK;
}

odin_status odin_wkv_forward(float *y, const float *time_decay, const float *time_first,
                             const float *k, const float *v, int B, int T, int C) {
    PTR(y, "y"); PTR(time_decay, "time_decay"); PTR(time_first, "time_first"); PTR(k, "k"); PTR(v, "v");
    odin_status s = check_btc(B, T, C);
    if (s) return s;
    odin_kern->wkv_forward(y, NULL, time_decay, time_first, k, v, B, T, C);
    return ODIN_OK;
}

odin_status odin_wkv_backward(float *dtime_decay, float *dtime_first, float *dk, float *dv, float *scratch,
                              const float *time_decay, const float *time_first, const float *k,
                              const float *v, const float *dy, int B, int T, int C) {
    PTR(dtime_decay, "dtime_decay"); PTR(dtime_first, "dtime_first"); PTR(dk, "dk"); PTR(dv, "dv");
    PTR(scratch, "scratch"); PTR(time_decay, "time_decay"); PTR(time_first, "time_first");
    PTR(k, "k"); PTR(v, "v"); PTR(dy, "dy");
    odin_status s = check_btc(B, T, C);
    if (s) return s;
    odin_kern->wkv_backward(dtime_decay, dtime_first, dk, dv, scratch, time_decay, time_first, k, v, dy, B, T, C);
    return ODIN_OK;
}

odin_status odin_sqrelu_forward(float *out, const float *inp, size_t n) {
    PTR(out, "out"); PTR(inp, "inp"); POSN(n, "n");
    odin_kern->sqrelu_forward(out, inp, n);
    return ODIN_OK;
}

odin_status odin_sqrelu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
    PTR(dinp, "dinp"); PTR(inp, "inp"); PTR(dout, "dout"); POSN(n, "n");
    odin_kern->sqrelu_backward(dinp, inp, dout, n);
    return ODIN_OK;
}

odin_status odin_sigmoid_gate_forward(float *out, const float *a, const float *b, size_t n) {
    PTR(out, "out"); PTR(a, "a"); PTR(b, "b"); POSN(n, "n");
    odin_kern->sigmoid_gate_forward(out, a, b, n);
    return ODIN_OK;
}

odin_status odin_sigmoid_gate_backward(float *da, float *db, const float *dout, const float *a,
                                       const float *b, size_t n) {
    PTR(da, "da"); PTR(db, "db"); PTR(dout, "dout"); PTR(a, "a"); PTR(b, "b"); POSN(n, "n");
    odin_kern->sigmoid_gate_backward(da, db, dout, a, b, n);
    return ODIN_OK;
}

/* ---- optimiser --------------------------------------------------------------------------------- */
odin_status odin_adamw(float *params, const float *grads, float *m, float *v, size_t n,
                       float lr, float beta1, float beta2, float eps, float weight_decay, int t) {
    PTR(params, "params"); PTR(grads, "grads"); PTR(m, "m"); PTR(v, "v"); POSN(n, "n");
    if (t < 1) return odin_fail(ODIN_BAD_ARG, "t (the step number) must be >= 1 (got %d)", t);
    if (!(beta1 >= 0.0f && beta1 < 1.0f)) return odin_fail(ODIN_BAD_ARG, "beta1 must be in [0, 1) (got %g)", beta1);
    if (!(beta2 >= 0.0f && beta2 < 1.0f)) return odin_fail(ODIN_BAD_ARG, "beta2 must be in [0, 1) (got %g)", beta2);
    if (!(eps > 0.0f) || !isfinite(eps)) return odin_fail(ODIN_BAD_ARG, "eps must be a finite number > 0 (got %g)", eps);
    if (!(lr >= 0.0f) || !isfinite(lr)) return odin_fail(ODIN_BAD_ARG, "lr must be a finite number >= 0 (got %g)", lr);
    if (!(weight_decay >= 0.0f) || !isfinite(weight_decay))
        return odin_fail(ODIN_BAD_ARG, "weight_decay must be a finite number >= 0 (got %g)", weight_decay);
    float bc1 = odin_bias_correction(beta1, t), bc2 = odin_bias_correction(beta2, t);
    odin_kern->adamw(params, grads, m, v, n, lr, beta1, beta2, eps, weight_decay, bc1, bc2);
    return ODIN_OK;
}

odin_status odin_global_norm(float *out, const float *x, size_t n) {
    PTR(out, "out"); PTR(x, "x"); POSN(n, "n");
    *out = (float)sqrt(odin_kern->sumsq(x, n));
    return ODIN_OK;
}

odin_status odin_clip_by_norm(float *x, size_t n, float max_norm, float *norm_out) {
    PTR(x, "x"); POSN(n, "n");
    if (!(max_norm > 0.0f) || !isfinite(max_norm))
        return odin_fail(ODIN_BAD_ARG, "max_norm must be a finite number > 0 (got %g)", max_norm);
    double norm = sqrt(odin_kern->sumsq(x, n));
    if (norm_out) *norm_out = (float)norm;
    if (!isfinite(norm)) return odin_fail(ODIN_NAN_DETECTED, "gradient norm is not finite (NaN or Inf in the gradients)");
    if (norm > max_norm) odin_kern->scale(x, n, (float)(max_norm / norm));
    return ODIN_OK;
}

odin_status odin_scale(float *x, size_t n, float s) {
    PTR(x, "x"); POSN(n, "n");
    odin_kern->scale(x, n, s);
    return ODIN_OK;
}
