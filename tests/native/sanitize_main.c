/* sanitize_main.c — a short, self-checking workout of the ODIN C library for the
 * sanitizers (tools/sanitize.py builds it with -fsanitize=thread, and with
 * -fsanitize=address,undefined, linked straight against every csrc/ source — no Python).
 *
 * For every ISA this CPU runs (scalar, avx2, avx512):
 *   - kernels through the public API, with odd shapes so the GEMM's edge tiles,
 *     several MC/KC blocks, packing of every operand layout and the skinny path run;
 *     results are compared with a naive double-precision reference where cheap;
 *   - a tiny GPT trained by the kissing-spheres trainer on the main thread while a
 *     controller thread reads snapshots and the history ring in a loop, changes the
 *     thread count 2 -> 1 -> 3 -> 2 mid-run, pauses and resumes once, and stops;
 *     then a stop between runs, a checkpoint request and a NaN failure in a worker;
 *   - a direct forward / backward / AdamW step on a workspace, KV-cache decoding,
 *     sampling and batched greedy generation with prompts of different lengths.
 * Everything is freed, so LeakSanitizer sees nothing. Prints "OK" and exits 0, or a
 * message and exits 1.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "odin.h"

/* ------------------------------------------------------------------ helpers */
static const char *g_where = "start";

static void die(const char *what) {
    fprintf(stderr, "FAIL [%s, isa=%s]: %s\n", g_where, odin_current_isa(), what);
    fflush(stderr);
    exit(1);
}

#define CHECK(expr)                                                                       \
    do {                                                                                  \
        odin_status st_ = (expr);                                                         \
        if (st_ != ODIN_OK) {                                                             \
            char msg_[768];                                                               \
            snprintf(msg_, sizeof msg_, "%s:%d: %s -> status %d: %s", __FILE__, __LINE__, \
                     #expr, (int)st_, odin_last_error());                                 \
            die(msg_);                                                                    \
        }                                                                                 \
    } while (0)

#define EXPECT(cond)                                                                      \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            char msg_[512];                                                               \
            snprintf(msg_, sizeof msg_, "%s:%d: expected %s", __FILE__, __LINE__, #cond); \
            die(msg_);                                                                    \
        }                                                                                 \
    } while (0)

static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size);
    if (!p) die("out of memory");
    return p;
}

/* 64-bit LCG: deterministic, platform-independent */
static uint64_t g_lcg = 0x0123456789ABCDEFull;
static double uniform(void) { /* [0, 1) */
    g_lcg = g_lcg * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(g_lcg >> 11) * (1.0 / 9007199254740992.0);
}
static float gauss(float sd) { /* Irwin-Hall: sum of 12 uniforms - 6 ~ N(0, 1) */
    double s = 0.0;
    for (int i = 0; i < 12; i++) s += uniform();
    return (float)((s - 6.0) * sd);
}
static void fill(float *x, size_t n, float sd) { for (size_t i = 0; i < n; i++) x[i] = gauss(sd); }
static int all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) if (!isfinite(x[i])) return 0;
    return 1;
}
static void sleep_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* max |got - want| / (1 + |want|) */
static double max_rel_err(const float *got, const double *want, size_t n) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]) / (1.0 + fabs(want[i]));
        if (!(e <= worst)) worst = e; /* NaN propagates as "worst" */
    }
    return worst;
}

/* ------------------------------------------------------------------ kernels */
static void check_matmul(int M, int K, int N) {
    float *inp = xcalloc((size_t)M * K, sizeof(float)), *w = xcalloc((size_t)N * K, sizeof(float));
    float *bias = xcalloc((size_t)N, sizeof(float)), *out = xcalloc((size_t)M * N, sizeof(float));
    float *dout = xcalloc((size_t)M * N, sizeof(float)), *dinp = xcalloc((size_t)M * K, sizeof(float));
    float *dw = xcalloc((size_t)N * K, sizeof(float)), *db = xcalloc((size_t)N, sizeof(float));
    double *ref = xcalloc((size_t)(M > N ? M : N) * (K > N ? K : N), sizeof(double));
    fill(inp, (size_t)M * K, 1.0f); fill(w, (size_t)N * K, 0.5f); fill(bias, (size_t)N, 0.1f);
    fill(dout, (size_t)M * N, 1.0f);

    CHECK(odin_matmul_forward(out, inp, w, bias, M, K, N));
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = bias[j];
            for (int p = 0; p < K; p++) s += (double)inp[(size_t)i * K + p] * w[(size_t)j * K + p];
            ref[(size_t)i * N + j] = s;
        }
    EXPECT(max_rel_err(out, ref, (size_t)M * N) < 1e-4);
    CHECK(odin_matmul_forward(out, inp, w, NULL, M, K, N)); /* no bias: overwrite path */
    EXPECT(all_finite(out, (size_t)M * N));

    CHECK(odin_matmul_backward(dinp, dw, db, dout, inp, w, M, K, N));
    for (int i = 0; i < M; i++)
        for (int p = 0; p < K; p++) {
            double s = 0.0;
            for (int j = 0; j < N; j++) s += (double)dout[(size_t)i * N + j] * w[(size_t)j * K + p];
            ref[(size_t)i * K + p] = s;
        }
    EXPECT(max_rel_err(dinp, ref, (size_t)M * K) < 1e-4);
    for (int j = 0; j < N; j++)
        for (int p = 0; p < K; p++) {
            double s = 0.0;
            for (int i = 0; i < M; i++) s += (double)dout[(size_t)i * N + j] * inp[(size_t)i * K + p];
            ref[(size_t)j * K + p] = s;
        }
    EXPECT(max_rel_err(dw, ref, (size_t)N * K) < 1e-4);
    for (int j = 0; j < N; j++) {
        double s = 0.0;
        for (int i = 0; i < M; i++) s += dout[(size_t)i * N + j];
        ref[j] = s;
    }
    EXPECT(max_rel_err(db, ref, (size_t)N) < 1e-4);
    /* only one of the three gradients */
    CHECK(odin_matmul_backward(NULL, dw, NULL, dout, inp, NULL, M, K, N));
    CHECK(odin_matmul_backward(dinp, NULL, NULL, dout, NULL, w, M, K, N));
    free(inp); free(w); free(bias); free(out); free(dout); free(dinp); free(dw); free(db); free(ref);
}

/* C[M,N] (beta 0 then 1) = A B with A stored transposed (csa != 1) and B strided */
static void check_sgemm(int M, int N, int K) {
    const int lda = M + 3, ldb = 2 * N + 1, ldc = N + 5;
    float *at = xcalloc((size_t)K * lda, sizeof(float)); /* A(i,p) = at[p*lda + i] */
    float *b = xcalloc((size_t)K * ldb, sizeof(float));  /* B(p,j) = b[p*ldb + 2j] */
    float *c = xcalloc((size_t)M * ldc, sizeof(float));
    double *ref = xcalloc((size_t)M * N, sizeof(double));
    float *cc = xcalloc((size_t)M * N, sizeof(float));
    fill(at, (size_t)K * lda, 1.0f); fill(b, (size_t)K * ldb, 1.0f); fill(c, (size_t)M * ldc, 1.0f);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int p = 0; p < K; p++) s += (double)at[(size_t)p * lda + i] * b[(size_t)p * ldb + 2 * j];
            ref[(size_t)i * N + j] = s;
        }
    CHECK(odin_sgemm(M, N, K, at, 1, lda, b, ldb, 2, 0.0f, c, ldc));
    for (int i = 0; i < M; i++) memcpy(cc + (size_t)i * N, c + (size_t)i * ldc, N * sizeof(float));
    EXPECT(max_rel_err(cc, ref, (size_t)M * N) < 1e-4);
    CHECK(odin_sgemm(M, N, K, at, 1, lda, b, ldb, 2, 1.0f, c, ldc)); /* accumulate: 2x */
    for (int i = 0; i < M; i++) memcpy(cc + (size_t)i * N, c + (size_t)i * ldc, N * sizeof(float));
    for (size_t i = 0; i < (size_t)M * N; i++) ref[i] *= 2.0;
    EXPECT(max_rel_err(cc, ref, (size_t)M * N) < 1e-4);
    CHECK(odin_sgemm(M, N, 0, at, 1, lda, b, ldb, 2, 0.0f, c, ldc)); /* K = 0: C = 0 */
    EXPECT(c[0] == 0.0f && c[(size_t)(M - 1) * ldc + N - 1] == 0.0f);
    free(at); free(b); free(c); free(ref); free(cc);
}

static void check_kernels(void) {
    g_where = "kernels";
    /* GEMM: > MC rows, > KC depth, widths that are no multiple of any NR, the skinny path */
    check_matmul(197, 263, 37);
    check_matmul(37, 29, 23);
    check_matmul(3, 70, 45);
    check_matmul(1, 1, 1);
    check_sgemm(131, 53, 300);
    check_sgemm(5, 7, 3);

    /* layernorm / rmsnorm */
    const int N = 13, C = 37;
    float *x = xcalloc((size_t)N * C, sizeof(float)), *y = xcalloc((size_t)N * C, sizeof(float));
    float *dy = xcalloc((size_t)N * C, sizeof(float)), *dx = xcalloc((size_t)N * C, sizeof(float));
    float *w = xcalloc(C, sizeof(float)), *b = xcalloc(C, sizeof(float));
    float *dw = xcalloc(C, sizeof(float)), *db = xcalloc(C, sizeof(float));
    float *mean = xcalloc(N, sizeof(float)), *rstd = xcalloc(N, sizeof(float));
    fill(x, (size_t)N * C, 1.0f); fill(dy, (size_t)N * C, 1.0f); fill(b, C, 0.1f);
    for (int i = 0; i < C; i++) w[i] = 1.0f + gauss(0.1f);
    CHECK(odin_layernorm_forward(y, mean, rstd, x, w, b, N, C, 1e-5f));
    CHECK(odin_layernorm_backward(dx, dw, db, dy, x, w, mean, rstd, N, C));
    EXPECT(all_finite(y, (size_t)N * C) && all_finite(dx, (size_t)N * C) && all_finite(dw, C));
    CHECK(odin_rmsnorm_forward(y, rstd, x, w, N, C, 1e-5f));
    CHECK(odin_rmsnorm_backward(dx, dw, dy, x, w, rstd, N, C));
    EXPECT(all_finite(y, (size_t)N * C) && all_finite(dx, (size_t)N * C));

    /* elementwise, odd lengths for the vector tails */
    const size_t n = (size_t)N * C;
    CHECK(odin_gelu_forward(y, x, n));
    memset(dx, 0, n * sizeof(float));
    CHECK(odin_gelu_backward(dx, x, dy, n));
    CHECK(odin_vexp(y, x, n)); EXPECT(fabsf(y[5] - expf(x[5])) <= 1e-5f * expf(x[5]) + 1e-6f);
    CHECK(odin_vsigmoid(y, x, n)); CHECK(odin_vtanh(y, x, n));
    CHECK(odin_vexp(y, x, 1)); CHECK(odin_vtanh(y, x, 3));
    EXPECT(all_finite(y, n) && all_finite(dx, n));

    /* softmax */
    CHECK(odin_softmax_forward(y, x, N, C));
    double row = 0.0;
    for (int i = 0; i < C; i++) row += y[i];
    EXPECT(fabs(row - 1.0) < 1e-5);
    memset(dx, 0, n * sizeof(float));
    CHECK(odin_softmax_backward(dx, y, dy, N, C));

    /* attention B=2, T=7, C=12, NH=3 */
    {
        const int B = 2, T = 7, AC = 12, NH = 3;
        float *qkv = xcalloc((size_t)B * T * 3 * AC, sizeof(float)), *out = xcalloc((size_t)B * T * AC, sizeof(float));
        float *att = xcalloc((size_t)B * NH * T * T, sizeof(float)), *dout = xcalloc((size_t)B * T * AC, sizeof(float));
        float *dqkv = xcalloc((size_t)B * T * 3 * AC, sizeof(float)), *scratch = xcalloc(odin_attention_scratch_floats(T, AC, NH), sizeof(float));
        fill(qkv, (size_t)B * T * 3 * AC, 1.0f); fill(dout, (size_t)B * T * AC, 1.0f);
        CHECK(odin_attention_forward(out, att, scratch, qkv, NULL, B, T, AC, NH));
        CHECK(odin_attention_backward(dqkv, scratch, dout, qkv, att, B, T, AC, NH));
        EXPECT(all_finite(out, (size_t)B * T * AC) && all_finite(dqkv, (size_t)B * T * 3 * AC));
        EXPECT(att[1] == 0.0f && fabsf(att[0] - 1.0f) < 1e-6f); /* causal: row 0 sees only itself */
        free(qkv); free(out); free(att); free(dout); free(dqkv); free(scratch);
    }

    /* embedding + cross-entropy with a mask */
    {
        const int B = 3, T = 5, EC = 9, V = 11, maxT = 6;
        int32_t tok[15], tgt[15];
        uint8_t mask[15];
        for (int i = 0; i < B * T; i++) { tok[i] = (i * 7) % V; tgt[i] = (i * 5 + 1) % V; mask[i] = (uint8_t)(i % 3 != 0); }
        float *wte = xcalloc((size_t)V * EC, sizeof(float)), *wpe = xcalloc((size_t)maxT * EC, sizeof(float));
        float *dwte = xcalloc((size_t)V * EC, sizeof(float)), *dwpe = xcalloc((size_t)maxT * EC, sizeof(float));
        float *emb = xcalloc((size_t)B * T * EC, sizeof(float));
        fill(wte, (size_t)V * EC, 0.1f); fill(wpe, (size_t)maxT * EC, 0.1f);
        CHECK(odin_embedding_forward(emb, tok, wte, wpe, B, T, EC, V, maxT));
        CHECK(odin_embedding_backward(dwte, dwpe, emb, tok, B, T, EC, V, maxT));
        tok[4] = V; /* out of range: an error, nothing written */
        EXPECT(odin_embedding_forward(emb, tok, wte, wpe, B, T, EC, V, maxT) == ODIN_BAD_ARG);
        EXPECT(strlen(odin_last_error()) > 0);

        float *logits = xcalloc((size_t)B * T * V, sizeof(float)), *dlogits = xcalloc((size_t)B * T * V, sizeof(float));
        float losses[15], lse[15], mean_loss = 0.0f;
        fill(logits, (size_t)B * T * V, 1.0f);
        CHECK(odin_crossentropy_forward(&mean_loss, losses, lse, logits, tgt, mask, B * T, V));
        EXPECT(isfinite(mean_loss) && mean_loss > 0.0f && losses[0] == 0.0f);
        CHECK(odin_crossentropy_backward(dlogits, logits, lse, tgt, mask, B * T, V, 1.0f));
        CHECK(odin_crossentropy_forward(&mean_loss, losses, lse, logits, tgt, NULL, B * T, V));
        EXPECT(all_finite(dlogits, (size_t)B * T * V));
        free(wte); free(wpe); free(dwte); free(dwpe); free(emb); free(logits); free(dlogits);
    }

    /* optimiser helpers */
    {
        float *m = xcalloc(n, sizeof(float)), *v = xcalloc(n, sizeof(float)), norm = 0.0f, before = 0.0f;
        CHECK(odin_adamw(x, dy, m, v, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1));
        CHECK(odin_adamw(x, dy, m, v, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 2));
        CHECK(odin_global_norm(&norm, dy, n));
        CHECK(odin_clip_by_norm(dy, n, 0.5f * norm, &before));
        EXPECT(before == norm);
        CHECK(odin_global_norm(&norm, dy, n));
        EXPECT(fabsf(norm - 0.5f * before) < 1e-3f * before);
        CHECK(odin_scale(dy, n, 2.0f));
        EXPECT(all_finite(x, n));
        free(m); free(v);
    }
    /* argument errors come back as statuses */
    EXPECT(odin_matmul_forward(y, x, w, NULL, 0, C, C) == ODIN_BAD_SHAPE);
    EXPECT(odin_sgemm(2, 2, 2, x, 2, 1, x, 2, 1, 0.5f, y, 2) == ODIN_BAD_ARG);
    EXPECT(odin_layernorm_forward(NULL, mean, rstd, x, w, b, N, C, 1e-5f) == ODIN_BAD_ARG);
    free(x); free(y); free(dy); free(dx); free(w); free(b); free(dw); free(db); free(mean); free(rstd);
}

/* ------------------------------------------------------------------ GPT */
enum { V = 16, CTX = 16, LAYERS = 2, HEADS = 2, DM = 32, BATCH = 30, TT = 12, STEPS = 24 };

static odin_gpt *make_gpt(void) {
    odin_gpt *g = NULL;
    CHECK(odin_gpt_create(&g, V, CTX, LAYERS, HEADS, DM, 1e-5f));
    float *p = odin_gpt_params(g);
    for (int i = 0; i < odin_gpt_num_tensors(g); i++) {
        const char *name;
        size_t off;
        int rows, cols;
        CHECK(odin_gpt_tensor_info(g, i, &name, &off, &rows, &cols));
        const size_t n = (size_t)rows * cols;
        const size_t len = strlen(name);
        if (cols > 1) fill(p + off, n, 0.02f);                         /* matrices */
        else if (len >= 2 && strcmp(name + len - 2, "_w") == 0)         /* LayerNorm gains */
            for (size_t k = 0; k < n; k++) p[off + k] = 1.0f;
        else memset(p + off, 0, n * sizeof(float));                      /* biases */
    }
    EXPECT(odin_gpt_tensor_info(g, odin_gpt_num_tensors(g), NULL, NULL, NULL, NULL) == ODIN_BAD_ARG);
    return g;
}

typedef struct {
    odin_spheres *sp;
    atomic_int run_over;   /* set by the main thread when odin_spheres_run returned */
    int failed;
    char why[256];
    int paused_seen, snapshots, histories;
} controller_t;

static void ctl_fail(controller_t *c, const char *why) {
    if (!c->failed) { c->failed = 1; snprintf(c->why, sizeof c->why, "%s", why); }
}

/* One poll: a snapshot and the history, checked for consistency. */
static long long poll_once(controller_t *c, long long *last_step) {
    odin_spheres_snapshot s;
    odin_spheres_snapshot_get(c->sp, &s);
    c->snapshots++;
    if (s.step < *last_step) ctl_fail(c, "snapshot step went backwards");
    if (s.threads < 1 || s.threads > 3) ctl_fail(c, "snapshot thread count outside 1..3");
    for (int i = 0; i < ODIN_SPHERES_N; i++) {
        if (s.spheres[i].rows != (i < BATCH % ODIN_SPHERES_N ? 3 : 2)) ctl_fail(c, "sphere rows wrong");
        if (s.spheres[i].state < ODIN_SPHERE_IDLE || s.spheres[i].state > ODIN_SPHERE_REDUCING) ctl_fail(c, "bad sphere state");
        if (s.spheres[i].microbatches < 0 || s.spheres[i].busy_seconds < 0.0) ctl_fail(c, "bad sphere counters");
    }
    odin_spheres_record rec[8];
    long long since = s.step > 5 ? s.step - 5 : 0;
    int n = odin_spheres_history(c->sp, since, rec, 8);
    c->histories++;
    for (int i = 0; i < n; i++) {
        if (rec[i].step <= since) ctl_fail(c, "history returned an old record");
        if (i && rec[i].step != rec[i - 1].step + 1) ctl_fail(c, "history records not consecutive");
        if (!isfinite(rec[i].loss)) ctl_fail(c, "history loss not finite");
    }
    *last_step = s.step;
    if (s.paused) c->paused_seen = 1;
    return s.step;
}

/* Poll until the trainer reached `step` (or the run is over). */
static void wait_step(controller_t *c, long long step, long long *last) {
    while (poll_once(c, last) < step && !atomic_load(&c->run_over)) sleep_us(200);
}

static void *controller_main(void *arg) {
    controller_t *c = arg;
    long long last = 0;
    wait_step(c, 1, &last);
    if (odin_spheres_set_threads(c->sp, 1) != ODIN_OK) ctl_fail(c, "set_threads(1)");
    wait_step(c, 3, &last);
    if (odin_spheres_set_threads(c->sp, 3) != ODIN_OK) ctl_fail(c, "set_threads(3)");
    wait_step(c, 5, &last);
    odin_spheres_pause(c->sp);
    /* wait until the root parks at a step boundary, then check nothing moves */
    for (int i = 0; i < 20000 && !c->paused_seen && !atomic_load(&c->run_over); i++) {
        poll_once(c, &last);
        sleep_us(100);
    }
    if (c->paused_seen) {
        long long at = last;
        for (int i = 0; i < 10; i++) { poll_once(c, &last); sleep_us(1000); }
        if (last != at) ctl_fail(c, "steps advanced while paused");
    }
    odin_spheres_resume(c->sp);
    wait_step(c, last + 2, &last);
    if (odin_spheres_set_threads(c->sp, 2) != ODIN_OK) ctl_fail(c, "set_threads(2)");
    if (odin_spheres_set_threads(c->sp, 0) != ODIN_BAD_ARG) ctl_fail(c, "set_threads(0) accepted");
    wait_step(c, last + 2, &last);
    odin_spheres_stop(c->sp);
    while (!atomic_load(&c->run_over)) { poll_once(c, &last); sleep_us(200); }
    poll_once(c, &last);
    return NULL;
}

static void make_batches(int32_t *in, int32_t *tg, uint8_t *mk, int steps) {
    /* a learnable pattern: next token = (token + 1) mod V, with a random start per row */
    for (int s = 0; s < steps; s++)
        for (int b = 0; b < BATCH; b++) {
            int start = (int)(uniform() * V);
            for (int t = 0; t < TT; t++) {
                size_t i = ((size_t)s * BATCH + b) * TT + t;
                in[i] = (start + t) % V;
                tg[i] = (start + t + 1) % V;
                mk[i] = (uint8_t)(uniform() > 0.25);
            }
        }
}

static void check_spheres(void) {
    g_where = "spheres";
    odin_gpt *g = make_gpt();
    const size_t per = (size_t)BATCH * TT, P = odin_gpt_num_params(g);
    int32_t *in = xcalloc(per * STEPS, sizeof(int32_t)), *tg = xcalloc(per * STEPS, sizeof(int32_t));
    uint8_t *mk = xcalloc(per * STEPS, 1);
    make_batches(in, tg, mk, STEPS);

    odin_spheres *sp = NULL;
    EXPECT(odin_spheres_create(&sp, g, BATCH, TT, 0) == ODIN_BAD_ARG && sp == NULL);
    CHECK(odin_spheres_create(&sp, g, BATCH, TT, 2));
    CHECK(odin_spheres_set_schedule(sp, 3e-3f, 3e-4f, 2, STEPS));
    CHECK(odin_spheres_set_optimizer(sp, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f));
    EXPECT(odin_spheres_set_schedule(sp, -1.0f, 0.0f, 0, 0) == ODIN_BAD_ARG);

    /* 1. a run with a controller thread acting on it */
    controller_t ctl;
    memset(&ctl, 0, sizeof ctl);
    ctl.sp = sp;
    atomic_init(&ctl.run_over, 0);
    pthread_t th;
    if (pthread_create(&th, NULL, controller_main, &ctl) != 0) die("pthread_create");
    int done = -1;
    odin_status st = odin_spheres_run(sp, in, tg, mk, STEPS, &done);
    atomic_store(&ctl.run_over, 1);
    pthread_join(th, NULL);
    CHECK(st);
    if (ctl.failed) die(ctl.why);
    EXPECT(done >= 1 && done <= STEPS);
    odin_spheres_snapshot snap;
    odin_spheres_snapshot_get(sp, &snap);
    EXPECT(snap.step == done && !snap.running && !snap.paused);
    EXPECT(snap.stopped == (done < STEPS));
    EXPECT(isfinite(snap.loss) && snap.loss > 0.0f && all_finite(odin_gpt_params(g), P));
    fprintf(stderr, "  [%s] controlled run: %d/%d steps, %d snapshots, paused seen %d, loss %.4f\n",
            odin_current_isa(), done, STEPS, ctl.snapshots, ctl.paused_seen, snap.loss);

    /* 2. a stop made between runs ends the next run before its first step (and a pending
     *    one from the controller, if the run finished first, is consumed here too) */
    odin_spheres_stop(sp);
    CHECK(odin_spheres_run(sp, in, tg, mk, 2, &done));
    EXPECT(done == 0);
    odin_spheres_snapshot_get(sp, &snap);
    EXPECT(snap.stopped == 1);

    /* 3. a checkpoint request ends the run after one step; taken once */
    CHECK(odin_spheres_set_threads(sp, 3));
    odin_spheres_request_checkpoint(sp);
    CHECK(odin_spheres_run(sp, in, tg, mk, 2, &done));
    EXPECT(done == 1);
    EXPECT(odin_spheres_take_checkpoint_request(sp) == 1);
    EXPECT(odin_spheres_take_checkpoint_request(sp) == 0);
    EXPECT(odin_spheres_set_step(sp, snap.step + 1) == ODIN_OK);

    /* 4. NaN in the weights: a worker fails, the error names the sphere, weights unchanged */
    float *p = odin_gpt_params(g);
    float *saved = xcalloc(P, sizeof(float));
    const float keep = p[P - 40];
    p[P - 40] = NAN; /* inside the last fcproj / lnf tensors */
    memcpy(saved, p, P * sizeof(float));
    st = odin_spheres_run(sp, in, tg, mk, 1, &done);
    EXPECT(st == ODIN_NAN_DETECTED && done == 0);
    EXPECT(strstr(odin_last_error(), "sphere") != NULL || strstr(odin_last_error(), "root") != NULL);
    EXPECT(memcmp(saved, p, P * sizeof(float)) == 0);
    p[P - 40] = keep;
    /* 5. a mask with no counted token is an argument error */
    memset(mk, 0, per);
    EXPECT(odin_spheres_run(sp, in, tg, mk, 1, &done) == ODIN_BAD_ARG);
    /* 6. and training goes on afterwards */
    CHECK(odin_spheres_run(sp, in + per, tg + per, NULL, 2, &done));
    EXPECT(done == 2);
    odin_spheres_record rec[4];
    EXPECT(odin_spheres_history(sp, 0, rec, 4) == 4);

    odin_spheres_free(sp);
    free(saved); free(in); free(tg); free(mk);

    /* 7. a trainer freed without ever running (its threads only started and joined) */
    CHECK(odin_spheres_create(&sp, g, 5, TT, 4));
    odin_spheres_free(sp);
    odin_gpt_free(g);
}

/* ------------------------------------------------------------------ GPT direct + generation */
static void check_gpt_direct_and_generation(void) {
    g_where = "gpt";
    odin_gpt *g = make_gpt();
    const size_t P = odin_gpt_num_params(g);
    const int B = 3, T = 9;
    odin_gpt_ws *ws = NULL;
    EXPECT(odin_gpt_ws_create(&ws, g, B, CTX + 1) == ODIN_BAD_SHAPE);
    CHECK(odin_gpt_ws_create(&ws, g, B, T));
    EXPECT(odin_gpt_ws_bytes(ws) > 0);
    int32_t tok[27], tgt[27];
    uint8_t mask[27];
    for (int i = 0; i < B * T; i++) { tok[i] = (i * 3) % V; tgt[i] = (i * 3 + 1) % V; mask[i] = (uint8_t)(i % 4 != 1); }
    float loss = 0.0f, norm = 0.0f;
    memset(odin_gpt_grads(g), 0, P * sizeof(float));
    CHECK(odin_gpt_forward(g, ws, tok, tgt, mask, B, T, &loss));
    EXPECT(fabsf(loss - logf((float)V)) < 0.5f);
    CHECK(odin_gpt_backward(g, ws, odin_gpt_grads(g), 1.0f));
    CHECK(odin_gpt_adamw_step(g, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f, 1, &norm));
    EXPECT(isfinite(norm) && norm > 0.0f);
    /* smaller batch in the same workspace, no loss (logits only) */
    CHECK(odin_gpt_forward(g, ws, tok, NULL, NULL, 2, 5, NULL));
    EXPECT(all_finite(odin_gpt_ws_logits(ws), (size_t)2 * 5 * V));
    EXPECT(odin_gpt_backward(g, ws, odin_gpt_grads(g), 1.0f) == ODIN_STATE);
    tok[3] = -1;
    EXPECT(odin_gpt_forward(g, ws, tok, tgt, NULL, B, T, &loss) == ODIN_BAD_ARG);
    odin_gpt_ws_free(ws);

    /* KV-cache decoding, token by token */
    odin_gpt_cache *cache = NULL;
    CHECK(odin_gpt_cache_create(&cache, g, B));
    float *logits = xcalloc((size_t)B * V, sizeof(float));
    int32_t dtok[3] = {1, 2, 3}, dpos[3] = {0, 0, 0};
    for (int t = 0; t < 6; t++) {
        for (int b = 0; b < B; b++) dpos[b] = t;
        CHECK(odin_gpt_decode(g, cache, dtok, dpos, B, t % 2 ? NULL : logits));
        for (int b = 0; b < B; b++) dtok[b] = (dtok[b] + 1) % V;
    }
    EXPECT(all_finite(logits, (size_t)B * V));
    dpos[0] = CTX;
    EXPECT(odin_gpt_decode(g, cache, dtok, dpos, B, logits) == ODIN_BAD_ARG);
    EXPECT(odin_gpt_decode(g, cache, dtok, dpos, B + 1, logits) == ODIN_BAD_SHAPE);

    /* decoding threads (pool.c): a model wide enough to split its products, and the same
     * logits as one thread; an RWKV state too */
    {
        enum { WV = 300, WC = 256 };
        odin_gpt *w = NULL;
        CHECK(odin_gpt_create(&w, WV, 8, 1, 2, WC, 1e-5f));
        fill(odin_gpt_params(w), odin_gpt_num_params(w), 0.05f);
        odin_gpt_cache *c1 = NULL, *c3 = NULL;
        CHECK(odin_gpt_cache_create(&c1, w, 1));
        CHECK(odin_gpt_cache_create(&c3, w, 1));
        CHECK(odin_gpt_cache_set_threads(c3, 3));
        float *l1 = xcalloc(WV, sizeof(float)), *l3 = xcalloc(WV, sizeof(float));
        for (int t = 0; t < 5; t++) {
            int32_t tk = t + 1, ps = t;
            CHECK(odin_gpt_decode(w, c1, &tk, &ps, 1, l1));
            CHECK(odin_gpt_decode(w, c3, &tk, &ps, 1, l3));
            EXPECT(memcmp(l1, l3, WV * sizeof(float)) == 0);
        }
        EXPECT(odin_gpt_cache_set_threads(c3, 0) == ODIN_BAD_ARG);
        odin_gpt_cache_free(c1); odin_gpt_cache_free(c3); odin_gpt_free(w);
        odin_rwkv *r = NULL;
        CHECK(odin_rwkv_create(&r, WV, 1, WC, 4 * WC, 1e-5f));
        fill(odin_rwkv_params(r), odin_rwkv_num_params(r), 0.05f);
        odin_rwkv_state *s1 = NULL, *s3 = NULL;
        CHECK(odin_rwkv_state_create(&s1, r, 1));
        CHECK(odin_rwkv_state_create(&s3, r, 1));
        CHECK(odin_rwkv_state_set_threads(s3, 2));
        for (int t = 0; t < 5; t++) {
            int32_t tk = t + 1;
            CHECK(odin_rwkv_decode(r, s1, &tk, 1, l1));
            CHECK(odin_rwkv_decode(r, s3, &tk, 1, l3));
            EXPECT(memcmp(l1, l3, WV * sizeof(float)) == 0);
        }
        odin_rwkv_state_free(s1); odin_rwkv_state_free(s3); odin_rwkv_free(r);
        free(l1); free(l3);
    }

    /* sampling: greedy, top-k / top-p, and a vocabulary large enough to allocate */
    uint64_t rng = 42;
    int32_t s = -1;
    CHECK(odin_sample(logits, V, 0.0f, 0, 1.0f, &rng, &s)); EXPECT(s >= 0 && s < V);
    CHECK(odin_sample(logits, V, 0.8f, 5, 0.9f, &rng, &s)); EXPECT(s >= 0 && s < V);
    {
        const int bigV = 3000;
        float *big = xcalloc(bigV, sizeof(float));
        fill(big, bigV, 1.0f);
        CHECK(odin_sample(big, bigV, 1.0f, 0, 0.95f, &rng, &s)); EXPECT(s >= 0 && s < bigV);
        free(big);
    }

    /* batched greedy generation, prompts of different lengths (the shortest last) */
    enum { MAXP = 4, MAXNEW = 5 };
    int32_t prompts[3 * MAXP] = {1, 2, 3, 4, 5, 6, 0, 0, 7, 0, 0, 0};
    int32_t lens[3] = {4, 2, 1};
    int32_t *out = xcalloc((size_t)B * MAXNEW, sizeof(int32_t)); /* heap: ASan sees any overrun */
    int32_t *out_lens = xcalloc(B, sizeof(int32_t));
    CHECK(odin_gpt_generate_greedy(g, cache, prompts, lens, B, MAXP, MAXNEW, -1, out, out_lens));
    for (int b = 0; b < B; b++) {
        EXPECT(out_lens[b] == MAXNEW);
        for (int i = 0; i < MAXNEW; i++) EXPECT(out[b * MAXNEW + i] >= 0 && out[b * MAXNEW + i] < V);
    }
    /* stop at an end token: the first generated token of row 0 */
    const int32_t end = out[0];
    CHECK(odin_gpt_generate_greedy(g, cache, prompts, lens, B, MAXP, MAXNEW, end, out, out_lens));
    EXPECT(out_lens[0] == 1 && out[0] == end);
    lens[1] = CTX; /* longer than max_prompt */
    EXPECT(odin_gpt_generate_greedy(g, cache, prompts, lens, B, MAXP, MAXNEW, -1, out, out_lens) == ODIN_BAD_ARG);

    free(out); free(out_lens); free(logits);
    odin_gpt_cache_free(cache);
    odin_gpt_free(g);
}

/* quantized weights (quant.c): every type's quantize / dequantize / products on both paths
 * (awkward row counts: 1, 7, 33), quantized GPT and RWKV decoding on 1 and 3 threads (the same
 * logits), and the refusals (rows not whole blocks, unknown types, training a quantized model) */
static void check_quantized(void) {
    g_where = "quantized";
    const int types[] = {ODIN_TYPE_Q8_0, ODIN_TYPE_Q4_0, ODIN_TYPE_Q4_1, ODIN_TYPE_Q5_0, ODIN_TYPE_Q5_1};
    enum { K = 96, N = 33 };
    float *w = xcalloc((size_t)N * K, sizeof(float)), *back = xcalloc((size_t)N * K, sizeof(float));
    float *x = xcalloc(33 * K, sizeof(float)), *out = xcalloc(33 * N, sizeof(float)), *bias = xcalloc(N, sizeof(float));
    fill(w, (size_t)N * K, 0.5f); fill(x, 33 * K, 1.0f); fill(bias, N, 0.1f);
    for (int i = 0; i < 5; i++) {
        const size_t rb = odin_quant_row_bytes(types[i], K);
        EXPECT(rb > 0);
        uint8_t *q = xcalloc((size_t)N, rb); /* exactly N rows: ASan sees any overrun */
        CHECK(odin_quantize(types[i], w, q, N, K));
        CHECK(odin_dequantize(types[i], q, back, N, K));
        EXPECT(all_finite(back, (size_t)N * K));
        const int rows[] = {1, 7, 33};
        for (int r = 0; r < 3; r++) {
            CHECK(odin_qmatmul(types[i], q, x, bias, out, rows[r], K, N));
            EXPECT(all_finite(out, (size_t)rows[r] * N));
        }
        free(q);
    }
    EXPECT(odin_quant_row_bytes(ODIN_TYPE_Q8_0, 33) == 0 && odin_quant_row_bytes(5, 32) == 0);
    EXPECT(odin_quantize(ODIN_TYPE_Q8_0, w, out, 1, 33) == ODIN_BAD_SHAPE);
    EXPECT(odin_quantize(5, w, out, 1, 32) == ODIN_BAD_ARG);
    w[7] = NAN;
    EXPECT(odin_quantize(ODIN_TYPE_Q4_0, w, out, 1, 32) == ODIN_NAN_DETECTED);
    free(w); free(back); free(x); free(out); free(bias);

    enum { V = 100, C = 64 };
    float *l1 = xcalloc(V, sizeof(float)), *l3 = xcalloc(V, sizeof(float));
    odin_gpt *g = NULL;
    EXPECT(odin_gpt_create_q(&g, V, 16, 1, 2, 48, 1e-5f, 0, ODIN_TYPE_Q8_0, ODIN_TYPE_F32) == ODIN_BAD_SHAPE);
    EXPECT(odin_gpt_create_q(&g, V, 16, 1, 2, C, 1e-5f, 0, 4, ODIN_TYPE_F32) == ODIN_BAD_ARG);
    CHECK(odin_gpt_create_q(&g, V, 16, 2, 2, C, 1e-5f, 0, ODIN_TYPE_Q4_1, ODIN_TYPE_Q8_0));
    fill(odin_gpt_params(g), odin_gpt_num_params(g), 0.05f);
    for (int i = 0; i < odin_gpt_num_tensors(g); i++) {
        int type;
        const char *name;
        size_t off;
        int rows, cols;
        CHECK(odin_gpt_tensor_type(g, i, &type));
        CHECK(odin_gpt_tensor_info(g, i, &name, &off, &rows, &cols));
        if (type == ODIN_TYPE_F32) continue;
        float *t = xcalloc((size_t)rows * cols, sizeof(float));
        fill(t, (size_t)rows * cols, 0.05f);
        EXPECT(off + (size_t)rows * odin_quant_row_bytes(type, cols) <= odin_gpt_qbytes(g));
        CHECK(odin_quantize(type, t, odin_gpt_qblock(g) + off, rows, cols));
        free(t);
    }
    EXPECT(odin_gpt_enable_training(g) == ODIN_BAD_ARG && odin_gpt_grads(g) == NULL);
    odin_gpt_cache *c1 = NULL, *c3 = NULL;
    CHECK(odin_gpt_cache_create(&c1, g, 1));
    CHECK(odin_gpt_cache_create(&c3, g, 1));
    CHECK(odin_gpt_cache_set_threads(c3, 3));
    for (int t = 0; t < 5; t++) {
        int32_t tk = t + 1, ps = t;
        CHECK(odin_gpt_decode(g, c1, &tk, &ps, 1, l1));
        CHECK(odin_gpt_decode(g, c3, &tk, &ps, 1, l3));
        EXPECT(all_finite(l1, V) && memcmp(l1, l3, V * sizeof(float)) == 0);
    }
    odin_gpt_ws *ws = NULL;
    int32_t toks[2 * 9];
    for (int i = 0; i < 18; i++) toks[i] = i % V;
    float loss;
    CHECK(odin_gpt_ws_create(&ws, g, 2, 9));
    CHECK(odin_gpt_forward(g, ws, toks, toks, NULL, 2, 9, &loss)); /* 18 rows: the dequantizing path */
    EXPECT(isfinite(loss));
    odin_gpt_ws_free(ws);
    odin_gpt_cache_free(c1); odin_gpt_cache_free(c3); odin_gpt_free(g);

    odin_rwkv *r = NULL;
    EXPECT(odin_rwkv_create_q(&r, V, 1, C, 80, 1e-5f, ODIN_TYPE_Q5_0, ODIN_TYPE_F32) == ODIN_BAD_SHAPE);
    CHECK(odin_rwkv_create_q(&r, V, 2, C, 128, 1e-5f, ODIN_TYPE_Q5_0, ODIN_TYPE_Q4_0));
    fill(odin_rwkv_params(r), odin_rwkv_num_params(r), 0.05f);
    EXPECT(odin_rwkv_enable_training(r) == ODIN_BAD_ARG);
    odin_rwkv_state *s1 = NULL, *s3 = NULL;
    CHECK(odin_rwkv_state_create(&s1, r, 1));
    CHECK(odin_rwkv_state_create(&s3, r, 1));
    CHECK(odin_rwkv_state_set_threads(s3, 3));
    for (int t = 0; t < 5; t++) {
        int32_t tk = t + 1;
        CHECK(odin_rwkv_decode(r, s1, &tk, 1, l1));
        CHECK(odin_rwkv_decode(r, s3, &tk, 1, l3));
        EXPECT(all_finite(l1, V) && memcmp(l1, l3, V * sizeof(float)) == 0);
    }
    odin_rwkv_state_free(s1); odin_rwkv_state_free(s3); odin_rwkv_free(r);
    free(l1); free(l3);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("odin %s, %s; CPU %s; ISAs %s\n", odin_version(), odin_compiler(), odin_cpu_model(),
           odin_available_isas());
    const char *isas[] = {"scalar", "avx2", "avxvnni", "avx512", "avx512vnni"};
    int ran = 0;
    for (int i = 0; i < 5; i++) {
        odin_status st = odin_set_isa(isas[i]);
        if (st == ODIN_UNSUPPORTED_ISA) { printf("isa %s: not available here, skipped\n", isas[i]); continue; }
        CHECK(st);
        EXPECT(strcmp(odin_current_isa(), isas[i]) == 0);
        g_lcg = 0x0123456789ABCDEFull; /* same weights and data for every ISA */
        check_kernels();
        check_spheres();
        check_gpt_direct_and_generation();
        check_quantized();
        printf("isa %s: ok\n", isas[i]);
        ran++;
    }
    EXPECT(odin_set_isa("no-such-isa") == ODIN_UNSUPPORTED_ISA);
    EXPECT(odin_set_isa(NULL) == ODIN_BAD_ARG);
    EXPECT(ran >= 1);
    printf("OK\n");
    return 0;
}
