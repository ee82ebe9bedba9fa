/* pool.c — threads for decoding: one token's matrix-vector products split by output columns.
 *
 * Generating one sequence is a chain of small products out[B, N] = inp[B, K] W[N, K]^T: too
 * small for the spheres (whose unit is a micro-batch), big enough (a GPT-2 layer's MLP is 2.4M
 * multiply-adds) that one core leaves the memory bus half idle. The pool cuts N into one
 * contiguous range per thread; each range is an ordinary odin_gemm on a column slice, so every
 * output element is the same sequence of operations as on one thread: the logits, hence the
 * tokens, do not depend on the thread count. The caller computes the first range itself.
 * Between products a worker stays awake for SPIN_NS (a token's products come back to back,
 * and waking a sleeping thread costs tens of microseconds on a VM: measured, 2 threads were
 * slower than 1 without it), then blocks on a condition variable: no long spins on a shared
 * machine.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include "internal.h"

#define POOL_MAX 64
#define MIN_MACS_PER_THREAD (1u << 16) /* below this, waking a thread costs more than it saves */
#define COLUMN_ALIGN 32                /* ranges start on whole micro-tiles and cache lines */
#define SPIN_NS 50000                  /* a token's products come back to back: wait this long awake */

typedef struct {
    float *out;
    const float *inp, *bias;
    odin_weight W;
    const odin_q8a *act; /* the activations quantized once, by the caller (quantized W, few rows) */
    int M, K, N, acc, parts;
} pool_job;

struct odin_pool {
    int threads;
    pthread_t tid[POOL_MAX];
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    atomic_ullong generation;
    atomic_int pending;
    int failed, exiting;
    pool_job job;
};

typedef struct { odin_pool *pool; int index; } worker_arg;

/* Columns [n0, n1) of part `i` of `parts`. */
static void part_range(int N, int parts, int i, int *n0, int *n1) {
    const int tiles = (N + COLUMN_ALIGN - 1) / COLUMN_ALIGN;
    *n0 = (int)((long long)tiles * i / parts) * COLUMN_ALIGN;
    *n1 = (int)((long long)tiles * (i + 1) / parts) * COLUMN_ALIGN;
    if (*n0 > N) *n0 = N;
    if (*n1 > N) *n1 = N;
}

/* out[M, n0:n1] (+)= inp W[n0:n1]^T (+ bias[n0:n1]): a column slice, ld N. */
static int run_part(const pool_job *j, int i) {
    int n0, n1;
    part_range(j->N, j->parts, i, &n0, &n1);
    if (n1 <= n0) return 0;
    if (odin_weight_product(j->out, j->N, j->inp, j->act, j->W, j->M, j->K, n0, n1, j->acc)) return -1;
    if (j->bias)
        for (int r = 0; r < j->M; r++) odin_kern->axpy(j->out + (size_t)r * j->N + n0, 1.0f, j->bias + n0, n1 - n0);
    return 0;
}

static inline void relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause(); /* a spinning core yields its pipeline to its sibling */
#endif
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *worker_main(void *arg) {
    worker_arg *w = arg;
    odin_pool *p = w->pool;
    const int index = w->index;
    free(w);
    unsigned long long seen = 0;
    for (;;) {
        const uint64_t until = now_ns() + SPIN_NS;
        while (atomic_load(&p->generation) == seen && now_ns() < until) relax();
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->generation) == seen && !p->exiting) pthread_cond_wait(&p->work_cv, &p->mu);
        if (p->exiting) { pthread_mutex_unlock(&p->mu); break; }
        seen = atomic_load(&p->generation);
        const pool_job job = p->job;
        pthread_mutex_unlock(&p->mu);
        const int bad = index < job.parts ? run_part(&job, index) : 0;
        pthread_mutex_lock(&p->mu);
        p->failed |= bad;
        if (atomic_fetch_sub(&p->pending, 1) == 1) pthread_cond_signal(&p->done_cv);
        pthread_mutex_unlock(&p->mu);
    }
    return NULL;
}

odin_status odin_pool_create(odin_pool **out, int threads) {
    ODIN_REQUIRE_PTR(out, "out");
    *out = NULL;
    if (threads < 1 || threads > POOL_MAX)
        return odin_fail(ODIN_BAD_ARG, "threads must be in [1, %d], got %d", POOL_MAX, threads);
    odin_pool *p = calloc(1, sizeof *p);
    if (!p) return odin_fail(ODIN_NO_MEMORY, "cannot allocate the decoding threads");
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    p->threads = 1; /* the caller; the workers are indices 1..threads-1 */
    for (int i = 1; i < threads; i++) {
        worker_arg *w = malloc(sizeof *w);
        if (!w || pthread_create(&p->tid[i], NULL, worker_main, (*w = (worker_arg){p, i}, w)) != 0) {
            free(w);
            odin_pool_free(p);
            return odin_fail(ODIN_NO_MEMORY, "cannot start decoding thread %d", i);
        }
        p->threads = i + 1;
    }
    *out = p;
    return ODIN_OK;
}

void odin_pool_free(odin_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->exiting = 1;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->threads; i++) pthread_join(p->tid[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->done_cv);
    free(p);
}

odin_status odin_pool_set(odin_pool **slot, int threads) {
    odin_pool *pool = NULL;
    odin_status st = threads == 1 ? ODIN_OK : odin_pool_create(&pool, threads);
    if (st) return st; /* the old pool stays */
    odin_pool_free(*slot);
    *slot = pool;
    return ODIN_OK;
}

int odin_pool_gemm(odin_pool *p, float *out, const float *inp, odin_weight W, const float *bias, int M, int K, int N,
                   int acc) {
    int parts = p ? p->threads : 1;
    const size_t macs = (size_t)M * K * N;
    while (parts > 1 && macs / (size_t)parts < MIN_MACS_PER_THREAD) parts--;
    const int tiles = (N + COLUMN_ALIGN - 1) / COLUMN_ALIGN;
    if (parts > tiles) parts = tiles;
    const odin_q8a *act;
    if (odin_weight_prepare(W, inp, M, K, &act)) return -1;
    pool_job job = {out, inp, bias, W, act, M, K, N, acc, parts > 1 ? parts : 1};
    if (job.parts == 1) return run_part(&job, 0);
    pthread_mutex_lock(&p->mu);
    p->job = job;
    atomic_store(&p->pending, p->threads - 1); /* every worker checks in, with or without a part */
    p->failed = 0;
    atomic_fetch_add(&p->generation, 1);
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    int bad = run_part(&job, 0);
    const uint64_t until = now_ns() + SPIN_NS;
    while (atomic_load(&p->pending) > 0 && now_ns() < until) relax();
    pthread_mutex_lock(&p->mu);
    while (atomic_load(&p->pending) > 0) pthread_cond_wait(&p->done_cv, &p->mu);
    bad |= p->failed;
    pthread_mutex_unlock(&p->mu);
    return bad;
}
