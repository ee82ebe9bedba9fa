/* spheres.c — the kissing-spheres trainer: a root and 12 worker spheres.
 *
 * One optimizer step:
 *   1. slots  : the global batch is cut into 12 micro-batch slots, one per sphere. Pool
 *               threads take slots from a shared counter and run forward + backward into
 *               a slot gradient buffer (dloss = slot tokens / batch tokens, so the sum of
 *               the slot gradients is the gradient of the global mean loss).
 *   2. reduce : the parameter range is cut into chunks (never crossing a tensor); each
 *               chunk adds the slot buffers into the gradient in slot order 0, 1, 2, ...
 *               Slots run in waves of as many slots as there are buffers (steps 1 and 2
 *               alternate), so a large model needs one buffer per thread, not 12: the
 *               additions are the same left fold g0 + g1 + ... whatever the waves, so the
 *               buffer count never changes a bit. Slots without rows (batch < 12) hold no
 *               buffer and add nothing. The last wave's reduce also takes each chunk's
 *               squared norm. A slot's backward writes its buffer (no zeroing pass) and
 *               the reduce, which reads the buffer anyway, takes the slot's squared norm
 *               per chunk while the chunk is in cache (the sphere's gradient norm).
 *   3. root   : global norm = chunk norms added in chunk order; NaN check; clip factor.
 *   4. update : AdamW per chunk (weight decay on matrices only).
 * Which thread ran a slot or chunk never changes a single rounding: every result is
 * computed by one fixed sequence of operations, so weights are bit-identical for any
 * thread count, including a count changed mid-run.
 *
 * Threads block on a condition variable between phases (never spin: these machines are
 * shared, and a spinning waiter steals the core a worker needs). The calling thread is
 * the root; it only orchestrates and does the O(chunks) bookkeeping.
 *
 * Statistics: per-sphere and root figures sit behind a sequence counter (seqlock) so a
 * reader on any thread gets a consistent copy without ever blocking a worker. Fields are
 * relaxed atomics so the race the seqlock tolerates is also well-defined C.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "internal.h"

#define NS ODIN_SPHERES_N
#define MAX_THREADS 64
#define CHUNK 16384 /* floats per reduce/update chunk: 64 KiB, a few L2 lines per slot */
#define HISTORY 8192
/* All slots get a gradient buffer when they fit in this many floats (256 MiB: the fewest
 * reduce passes); beyond it, one buffer per thread (the fewest that keep every thread busy). */
#define SLOT_BUDGET_FLOATS ((size_t)64 << 20)

typedef struct {
    atomic_uint seq;
    atomic_int state, rows;
    atomic_llong microbatches, tokens;
    _Atomic float last_loss, last_grad_norm;
    _Atomic double busy_seconds;
} sphere_live;

typedef struct { size_t start, len; int decay; } chunk_t;

typedef enum { PH_NONE, PH_SLOTS, PH_REDUCE, PH_NORM, PH_UPDATE, PH_EXIT } phase_t;

/* profiling: a worker's thread-time per part of a step (ns), and the root's wall time */
enum { PR_FWD_GEMM, PR_FWD_OTHER, PR_BWD_GEMM, PR_BWD_OTHER, PR_SLOT_BUFFERS, PR_REDUCE, PR_UPDATE, PR_N };
enum { PW_SLOTS, PW_REDUCE, PW_UPDATE, PW_STEPS, PW_N };

/* What the trainer needs from a model: its parameter layout and blocks, per-thread
 * workspaces, and forward/backward of one micro-batch into a caller's gradient buffer
 * (backward writes the buffer whole: it need not be zeroed).
 * GPT and RWKV each fill one table; nothing below depends on the architecture. */
typedef struct {
    const char *kind;
    size_t (*num_params)(const void *m);
    int (*num_tensors)(const void *m);
    odin_status (*tensor_info)(const void *m, int i, size_t *offset, int *rows, int *cols);
    float *(*params)(void *m);
    float *(*grads)(void *m);
    float *(*adam_m)(void *m);
    float *(*adam_v)(void *m);
    odin_status (*ws_create)(void **ws, const void *m, int B, int T);
    void (*ws_free)(void *ws);
    odin_status (*forward)(void *m, void *ws, const int32_t *tokens, const int32_t *ids,
                           const int32_t *targets, const uint8_t *mask, int B, int T, float *loss);
    odin_status (*backward)(void *m, void *ws, float *grads, float dloss);
} model_ops;

typedef struct worker {
    struct odin_spheres *sp;
    int id;
    pthread_t thread;
    void *ws;
    unsigned long long born;     /* the phase generation when it was started */
    uint64_t gemm_ns;            /* odin_gemm_clock points here while profiling */
    uint64_t prof[PR_N];
} worker_t;

struct odin_spheres {
    void *model;
    const model_ops *ops;
    int B, T, T_max, slot_rows[NS], slot_first[NS]; /* T: this run's length, <= T_max (workspaces) */
    size_t n_params;
    int n_work;                  /* slots with rows: 0 .. n_work-1 (min(B, 12)) */
    int n_bufs;                  /* slot gradient buffers, 1..n_work */
    int bufs_asked;              /* odin_spheres_set_slot_buffers: 0 = automatic */
    float *slot_grads;           /* [n_bufs, n_params]: buffer t holds slot wave_first + t */
    int wave_first, wave_count;  /* the slots of the current wave */
    int shard_lo, shard_hi;      /* odin_spheres_set_shard: this process's slots (default all) */
    int reduce_c0;               /* the first chunk of a reduce phase */
    int sumsq_ready;             /* chunk_sumsq holds the finished gradient's chunk norms */
    int shard_open;              /* a shard step's slots ran; fold/finish may follow */
    double step_t0;
    uint64_t step_tp;
    chunk_t *chunks;
    int n_chunks;
    double *chunk_sumsq;
    double *slot_sumsq;          /* [NS][n_chunks]: each slot's gradient, squared, per chunk */
    int norm_in_reduce;          /* the wave's reduce takes the slots' norms (not run_slot) */
    /* hyper-parameters */
    float lr_max, lr_min, beta1, beta2, eps, wd, clip;
    int warmup, total_steps;
    long long step;
    /* pool */
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv, pause_cv;
    worker_t workers[MAX_THREADS];
    int n_spawned;               /* threads created so far */
    int active;                  /* threads taking part in phases */
    atomic_int wanted_threads;
    phase_t phase;
    unsigned long long generation;
    atomic_int next_task;
    int n_tasks, checked_in;
    /* the current step's inputs */
    const int32_t *in, *ids, *tg;
    const uint8_t *mk;
    int slot_count[NS], total_count;
    float clip_scale, lr_now, bc1, bc2;
    /* per-slot outcome */
    float slot_loss[NS], slot_norm[NS];
    double slot_seconds[NS];
    int folded;                  /* chunks folded by odin_spheres_shard_fold this step */
    odin_status slot_status[NS];
    char slot_error[NS][256];
    /* control */
    atomic_int stop_req, pause_req, ckpt_req, running;
    /* live statistics */
    sphere_live live[NS];
    atomic_uint root_seq;
    atomic_llong r_step, r_tokens;
    _Atomic float r_lr, r_loss, r_norm;
    _Atomic double r_tps, r_step_s;
    atomic_int r_state, r_threads, r_paused, r_stopped;
    /* history ring, guarded by hist_mu (held only to copy one record) */
    pthread_mutex_t hist_mu;
    odin_spheres_record *hist;
    long long hist_count;
    /* profiling (odin_spheres_set_profiling): switched between runs only */
    int profiling;
    uint64_t wall[PW_N];
    long long prof_steps;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define RLX memory_order_relaxed

static void live_begin(sphere_live *l) { atomic_fetch_add_explicit(&l->seq, 1, memory_order_acq_rel); }
static void live_end(sphere_live *l) { atomic_fetch_add_explicit(&l->seq, 1, memory_order_release); }
static void set_state(odin_spheres *sp, int s, int st) {
    live_begin(&sp->live[s]);
    atomic_store_explicit(&sp->live[s].state, st, RLX);
    live_end(&sp->live[s]);
}

/* ---------------------------------------------------------------- phase work */
/* clock reads only while profiling */
static inline uint64_t prof_now(const odin_spheres *sp) { return sp->profiling ? odin_now_ns() : 0; }

/* Charge the time since t0 to `part`, of which the GEMM time since gemm0 to `gemm_part`. */
static void prof_split(const odin_spheres *sp, worker_t *w, uint64_t t0, uint64_t gemm0, int gemm_part, int part) {
    if (!sp->profiling) return;
    const uint64_t spent = odin_now_ns() - t0, gemm = w->gemm_ns - gemm0;
    w->prof[gemm_part] += gemm;
    w->prof[part] += spent - (gemm < spent ? gemm : spent);
}

static void run_slot(odin_spheres *sp, worker_t *w, int t) {
    const size_t P = sp->n_params;
    const int s = sp->wave_first + t;
    float *g = sp->slot_grads + (size_t)t * P;
    uint64_t tp;
    sp->slot_status[s] = ODIN_OK;
    sp->slot_loss[s] = 0.0f;
    sp->slot_norm[s] = 0.0f;
    const int rows = sp->slot_rows[s];
    double t0 = now_s();
    const size_t off = (size_t)sp->slot_first[s] * sp->T;
    set_state(sp, s, ODIN_SPHERE_FORWARD);
    float loss = 0.0f;
    uint64_t gemm0 = w->gemm_ns;
    tp = prof_now(sp);
    odin_status st = sp->ops->forward(sp->model, w->ws, sp->in + off, sp->ids ? sp->ids + off : NULL,
                                      sp->tg + off, sp->mk ? sp->mk + off : NULL, rows, sp->T, &loss);
    prof_split(sp, w, tp, gemm0, PR_FWD_GEMM, PR_FWD_OTHER);
    if (st == ODIN_OK && sp->slot_count[s] > 0) {
        set_state(sp, s, ODIN_SPHERE_BACKWARD);
        gemm0 = w->gemm_ns;
        tp = prof_now(sp);
        st = sp->ops->backward(sp->model, w->ws, g, (float)sp->slot_count[s] / (float)sp->total_count);
        prof_split(sp, w, tp, gemm0, PR_BWD_GEMM, PR_BWD_OTHER);
    }
    float norm = 0.0f;
    tp = prof_now(sp);
    if (st == ODIN_OK && sp->slot_count[s] == 0) memset(g, 0, P * sizeof(float)); /* no backward: a zero gradient */
    if (st == ODIN_OK && !sp->norm_in_reduce) {
        /* the slot gradient is the global-loss gradient's share; rescale its norm so it
         * reads as the gradient of this slot's own mean loss, comparable across spheres */
        double ss = odin_kern->sumsq(g, P);
        norm = sp->slot_count[s] ? (float)(sqrt(ss) * sp->total_count / sp->slot_count[s]) : 0.0f;
        if (!isfinite(ss)) st = odin_fail(ODIN_NAN_DETECTED, "its gradient contains NaN or Inf");
    }
    if (sp->profiling) w->prof[PR_SLOT_BUFFERS] += odin_now_ns() - tp;
    if (st != ODIN_OK) {
        strncpy(sp->slot_error[s], odin_last_error(), sizeof sp->slot_error[s] - 1);
        sp->slot_error[s][sizeof sp->slot_error[s] - 1] = 0;
    }
    sp->slot_status[s] = st;
    sp->slot_loss[s] = loss;
    sp->slot_norm[s] = norm;
    double dt = now_s() - t0;
    sp->slot_seconds[s] = dt;
    sphere_live *l = &sp->live[s];
    live_begin(l);
    atomic_store_explicit(&l->state, ODIN_SPHERE_WAITING, RLX);
    atomic_store_explicit(&l->microbatches, atomic_load_explicit(&l->microbatches, RLX) + 1, RLX);
    atomic_store_explicit(&l->tokens, atomic_load_explicit(&l->tokens, RLX) + (long long)rows * sp->T, RLX);
    atomic_store_explicit(&l->last_loss, loss, RLX);
    if (!sp->norm_in_reduce) atomic_store_explicit(&l->last_grad_norm, norm, RLX);
    atomic_store_explicit(&l->busy_seconds, atomic_load_explicit(&l->busy_seconds, RLX) + dt, RLX);
    live_end(l);
}

static void run_reduce(odin_spheres *sp, int c) {
    c += sp->reduce_c0;
    const chunk_t *ch = &sp->chunks[c];
    float *dst = sp->ops->grads(sp->model) + ch->start;
    const float *src = sp->slot_grads + ch->start;
    if (sp->norm_in_reduce) /* each sumsq pulls the chunk into cache for the addition after it */
        for (int t = 0; t < sp->wave_count; t++)
            sp->slot_sumsq[(size_t)(sp->wave_first + t) * sp->n_chunks + c] =
                odin_kern->sumsq(src + (size_t)t * sp->n_params, ch->len);
    int t = 0;
    if (sp->wave_first == 0) { /* slot 0 starts the sum */
        memcpy(dst, src, ch->len * sizeof(float));
        t = 1;
    }
    for (; t < sp->wave_count; t++) odin_kern->axpy(dst, 1.0f, src + (size_t)t * sp->n_params, (int)ch->len);
    if (sp->wave_first + sp->wave_count == sp->n_work) sp->chunk_sumsq[c] = odin_kern->sumsq(dst, ch->len);
}

/* A chunk's squared norm, for a gradient finished elsewhere (another process's fold). */
static void run_norm(odin_spheres *sp, int c) {
    const chunk_t *ch = &sp->chunks[c];
    sp->chunk_sumsq[c] = odin_kern->sumsq(sp->ops->grads(sp->model) + ch->start, ch->len);
}

static void run_update(odin_spheres *sp, int c) {
    const chunk_t *ch = &sp->chunks[c];
    void *m = sp->model;
    float *g = sp->ops->grads(m) + ch->start;
    if (sp->clip_scale != 1.0f) odin_kern->scale(g, ch->len, sp->clip_scale);
    odin_kern->adamw(sp->ops->params(m) + ch->start, g, sp->ops->adam_m(m) + ch->start,
                     sp->ops->adam_v(m) + ch->start, ch->len, sp->lr_now, sp->beta1, sp->beta2, sp->eps,
                     ch->decay ? sp->wd : 0.0f, sp->bc1, sp->bc2);
}

/* Every active worker checks in once per phase, after its last task claim; the root
 * waits for all of them, so no worker can still be claiming from a phase's counter when
 * the root resets it for the next one. */
static void *worker_main(void *arg) {
    worker_t *w = arg;
    odin_spheres *sp = w->sp;
    /* not 0: a thread started between runs would otherwise take the last phase as new and,
     * once counted active, claim a task of the next phase with the old phase's code */
    unsigned long long seen = w->born;
    pthread_mutex_lock(&sp->mu);
    for (;;) {
        while (sp->generation == seen) pthread_cond_wait(&sp->work_cv, &sp->mu);
        seen = sp->generation;
        const phase_t ph = sp->phase;
        if (ph == PH_EXIT) break;
        if (w->id >= sp->active) continue; /* parked: not a participant this phase */
        const int n_tasks = sp->n_tasks;
        pthread_mutex_unlock(&sp->mu);
        odin_gemm_clock = sp->profiling ? &w->gemm_ns : NULL;
        for (;;) {
            int t = atomic_fetch_add(&sp->next_task, 1);
            if (t >= n_tasks) break;
            const uint64_t tp = prof_now(sp);
            if (ph == PH_SLOTS) run_slot(sp, w, t);
            else if (ph == PH_REDUCE) run_reduce(sp, t);
            else if (ph == PH_NORM) run_norm(sp, t);
            else run_update(sp, t);
            if (sp->profiling && ph != PH_SLOTS) w->prof[ph == PH_UPDATE ? PR_UPDATE : PR_REDUCE] += odin_now_ns() - tp;
        }
        pthread_mutex_lock(&sp->mu);
        if (++sp->checked_in == sp->active) pthread_cond_signal(&sp->done_cv);
    }
    pthread_mutex_unlock(&sp->mu);
    return NULL;
}

/* Run one phase on the active threads and wait for it (root side). */
static void run_phase(odin_spheres *sp, phase_t ph, int n_tasks) {
    const uint64_t tp = prof_now(sp);
    pthread_mutex_lock(&sp->mu);
    sp->phase = ph;
    sp->n_tasks = n_tasks;
    sp->checked_in = 0;
    atomic_store(&sp->next_task, 0);
    sp->generation++;
    pthread_cond_broadcast(&sp->work_cv);
    while (sp->checked_in < sp->active) pthread_cond_wait(&sp->done_cv, &sp->mu);
    pthread_mutex_unlock(&sp->mu);
    if (sp->profiling) sp->wall[ph == PH_SLOTS ? PW_SLOTS : ph == PH_UPDATE ? PW_UPDATE : PW_REDUCE] += odin_now_ns() - tp;
}

/* (Re)allocate the slot gradient buffers for `threads` threads (see SLOT_BUDGET_FLOATS).
 * Root side, between steps. */
static odin_status ensure_slot_buffers(odin_spheres *sp, int threads) {
    int want = sp->n_work;
    if (sp->shard_lo > 0) {
        /* a shard that does not start the fold keeps all its slots until the partial sum
         * from the process before it arrives */
        want = sp->shard_hi - sp->shard_lo;
    } else if (sp->bufs_asked > 0) {
        if (sp->bufs_asked < want) want = sp->bufs_asked;
    } else if (odin_size_mul((size_t)sp->n_work, sp->n_params) > SLOT_BUDGET_FLOATS && threads < sp->n_work) {
        want = threads;
    }
    if (want == sp->n_bufs) return ODIN_OK;
    const size_t floats = odin_size_mul((size_t)want, sp->n_params);
    /* refused up front beyond RAM + swap: every slot writes its whole buffer, and writing an
     * overcommitted allocation gets the process killed instead of an error */
    float *bufs = floats > ODIN_MAX_FLOATS || !odin_fits_in_memory(floats * sizeof(float)) ? NULL
                  : aligned_alloc(64, ((floats * sizeof(float)) + 63) & ~(size_t)63);
    if (!bufs)
        return odin_fail(ODIN_NO_MEMORY, "cannot allocate %d slot gradient buffers (%.1f MiB)", want,
                         want * (double)sp->n_params * 4.0 / 1048576.0);
    free(sp->slot_grads);
    sp->slot_grads = bufs;
    sp->n_bufs = want;
    return ODIN_OK;
}

/* Start threads up to the wanted count; park the surplus. Root side, between steps. */
static odin_status apply_threads(odin_spheres *sp) {
    int want = atomic_load(&sp->wanted_threads);
    odin_status st = ensure_slot_buffers(sp, want);
    if (st) return st;
    while (sp->n_spawned < want) {
        worker_t *w = &sp->workers[sp->n_spawned];
        w->sp = sp;
        w->id = sp->n_spawned;
        w->born = sp->generation; /* only the root changes it, and this is the root */
        int rows_max = (sp->B + NS - 1) / NS;
        odin_status st = sp->ops->ws_create(&w->ws, sp->model, rows_max, sp->T_max);
        if (st) return st;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            sp->ops->ws_free(w->ws);
            w->ws = NULL;
            return odin_fail(ODIN_NO_MEMORY, "cannot start worker thread %d", sp->n_spawned);
        }
        sp->n_spawned++;
    }
    pthread_mutex_lock(&sp->mu);
    sp->active = want;
    pthread_mutex_unlock(&sp->mu);
    atomic_store_explicit(&sp->r_threads, want, RLX);
    return ODIN_OK;
}

/* ---------------------------------------------------------------- lifecycle */
/* ---------------------------------------------------------------- models */
static size_t gpt_num_params(const void *m) { return odin_gpt_num_params(m); }
static int gpt_num_tensors(const void *m) { return odin_gpt_num_tensors(m); }
static odin_status gpt_tensor_info(const void *m, int i, size_t *off, int *rows, int *cols) {
    return odin_gpt_tensor_info(m, i, NULL, off, rows, cols);
}
static float *gpt_params(void *m) { return odin_gpt_params(m); }
static float *gpt_grads(void *m) { return odin_gpt_grads(m); }
static float *gpt_adam_m(void *m) { return odin_gpt_adam_m(m); }
static float *gpt_adam_v(void *m) { return odin_gpt_adam_v(m); }
static odin_status gpt_ws_create(void **ws, const void *m, int B, int T) {
    return odin_gpt_ws_create((odin_gpt_ws **)ws, m, B, T);
}
static void gpt_ws_free(void *ws) { odin_gpt_ws_free(ws); }
static odin_status gpt_forward(void *m, void *ws, const int32_t *tok, const int32_t *ids, const int32_t *tg,
                               const uint8_t *mk, int B, int T, float *loss) {
    return odin_gpt_forward_ex(m, ws, tok, ids, tg, mk, B, T, loss);
}
static odin_status gpt_backward(void *m, void *ws, float *g, float dloss) {
    return odin_gpt_backward_overwrite(m, ws, g, dloss);
}
static const model_ops gpt_ops = {"GPT", gpt_num_params, gpt_num_tensors, gpt_tensor_info, gpt_params, gpt_grads,
                                  gpt_adam_m, gpt_adam_v, gpt_ws_create, gpt_ws_free, gpt_forward, gpt_backward};

static size_t rwkv_num_params(const void *m) { return odin_rwkv_num_params(m); }
static int rwkv_num_tensors(const void *m) { return odin_rwkv_num_tensors(m); }
static odin_status rwkv_tensor_info(const void *m, int i, size_t *off, int *rows, int *cols) {
    return odin_rwkv_tensor_info(m, i, NULL, off, rows, cols);
}
static float *rwkv_params(void *m) { return odin_rwkv_params(m); }
static float *rwkv_grads(void *m) { return odin_rwkv_grads(m); }
static float *rwkv_adam_m(void *m) { return odin_rwkv_adam_m(m); }
static float *rwkv_adam_v(void *m) { return odin_rwkv_adam_v(m); }
static odin_status rwkv_ws_create(void **ws, const void *m, int B, int T) {
    return odin_rwkv_ws_create((odin_rwkv_ws **)ws, m, B, T);
}
static void rwkv_ws_free(void *ws) { odin_rwkv_ws_free(ws); }
static odin_status rwkv_forward(void *m, void *ws, const int32_t *tok, const int32_t *ids, const int32_t *tg,
                                const uint8_t *mk, int B, int T, float *loss) {
    (void)ids; /* refused up front by odin_spheres_run_ex */
    return odin_rwkv_forward(m, ws, tok, tg, mk, B, T, loss);
}
static odin_status rwkv_backward(void *m, void *ws, float *g, float dloss) {
    return odin_rwkv_backward_overwrite(m, ws, g, dloss);
}
static const model_ops rwkv_ops = {"RWKV", rwkv_num_params, rwkv_num_tensors, rwkv_tensor_info, rwkv_params,
                                   rwkv_grads, rwkv_adam_m, rwkv_adam_v, rwkv_ws_create, rwkv_ws_free,
                                   rwkv_forward, rwkv_backward};

/* ---------------------------------------------------------------- lifecycle */
static odin_status spheres_create(odin_spheres **out, void *model, const model_ops *ops, int batch, int T,
                                  int threads) {
    ODIN_REQUIRE_PTR(out, "out"); ODIN_REQUIRE_PTR(model, "model");
    *out = NULL;
    ODIN_REQUIRE_POS(batch, "batch"); ODIN_REQUIRE_POS(T, "T");
    if (threads < 1 || threads > MAX_THREADS)
        return odin_fail(ODIN_BAD_ARG, "threads must be in [1, %d], got %d", MAX_THREADS, threads);
    /* the model's training blocks, allocated on first use: here, before any worker reads them */
    if (!ops->grads(model) || !ops->adam_m(model) || !ops->adam_v(model)) return ODIN_NO_MEMORY; /* message set */
    odin_spheres *sp = calloc(1, sizeof *sp);
    if (!sp) return odin_fail(ODIN_NO_MEMORY, "cannot allocate the trainer");
    sp->model = model;
    sp->ops = ops;
    sp->B = batch;
    sp->T = sp->T_max = T;
    sp->n_params = ops->num_params(model);
    for (int s = 0, first = 0; s < NS; s++) {
        sp->slot_rows[s] = batch / NS + (s < batch % NS);
        sp->slot_first[s] = first;
        first += sp->slot_rows[s];
    }
    /* chunks never cross a tensor, so each knows whether weight decay applies */
    size_t n_chunks = 0;
    for (int i = 0; i < ops->num_tensors(model); i++) {
        int rows, cols;
        ops->tensor_info(model, i, NULL, &rows, &cols);
        n_chunks = odin_size_add(n_chunks, odin_size_add(odin_size_mul((size_t)rows, (size_t)cols), CHUNK - 1) / CHUNK);
    }
    sp->n_work = batch < NS ? batch : NS;
    sp->shard_lo = 0;
    sp->shard_hi = sp->n_work;
    if (n_chunks > INT_MAX || sp->n_params > ODIN_MAX_FLOATS) {
        const size_t n_params = sp->n_params;
        free(sp);
        return odin_fail(ODIN_BAD_ARG, "model: %zu parameters are too many for the trainer", n_params);
    }
    sp->chunks = calloc(n_chunks, sizeof *sp->chunks);
    sp->chunk_sumsq = calloc(odin_size_mul(n_chunks, NS + 1), sizeof *sp->chunk_sumsq);
    sp->slot_sumsq = sp->chunk_sumsq ? sp->chunk_sumsq + n_chunks : NULL;
    sp->hist = calloc(HISTORY, sizeof *sp->hist);
    if (!sp->chunks || !sp->chunk_sumsq || !sp->hist) {
        free(sp->chunks); free(sp->chunk_sumsq); free(sp->hist); free(sp);
        return odin_fail(ODIN_NO_MEMORY, "cannot allocate the trainer's tables");
    }
    for (int i = 0; i < ops->num_tensors(model); i++) {
        size_t off;
        int rows, cols;
        ops->tensor_info(model, i, &off, &rows, &cols);
        size_t n = (size_t)rows * cols;
        for (size_t a = 0; a < n; a += CHUNK)
            sp->chunks[sp->n_chunks++] = (chunk_t){off + a, n - a < CHUNK ? n - a : CHUNK, cols > 1};
    }
    sp->lr_max = 1e-3f; sp->lr_min = 1e-4f; sp->warmup = 0; sp->total_steps = 0;
    sp->beta1 = 0.9f; sp->beta2 = 0.95f; sp->eps = 1e-8f; sp->wd = 0.0f; sp->clip = 1.0f;
    pthread_mutex_init(&sp->mu, NULL);
    pthread_mutex_init(&sp->hist_mu, NULL);
    pthread_cond_init(&sp->work_cv, NULL);
    pthread_cond_init(&sp->done_cv, NULL);
    pthread_cond_init(&sp->pause_cv, NULL);
    for (int s = 0; s < NS; s++) atomic_store(&sp->live[s].rows, sp->slot_rows[s]);
    atomic_store(&sp->wanted_threads, threads);
    odin_status st = apply_threads(sp);
    if (st) { odin_spheres_free(sp); return st; }
    *out = sp;
    return ODIN_OK;
}

odin_status odin_spheres_create(odin_spheres **out, odin_gpt *model, int batch, int T, int threads) {
    return spheres_create(out, model, &gpt_ops, batch, T, threads);
}

odin_status odin_spheres_create_rwkv(odin_spheres **out, odin_rwkv *model, int batch, int T, int threads) {
    return spheres_create(out, model, &rwkv_ops, batch, T, threads);
}

void odin_spheres_free(odin_spheres *sp) {
    if (!sp) return;
    pthread_mutex_lock(&sp->mu);
    sp->phase = PH_EXIT;
    sp->generation++;
    pthread_cond_broadcast(&sp->work_cv);
    pthread_mutex_unlock(&sp->mu);
    for (int i = 0; i < sp->n_spawned; i++) {
        pthread_join(sp->workers[i].thread, NULL);
        sp->ops->ws_free(sp->workers[i].ws);
    }
    pthread_mutex_destroy(&sp->mu);
    pthread_mutex_destroy(&sp->hist_mu);
    pthread_cond_destroy(&sp->work_cv);
    pthread_cond_destroy(&sp->done_cv);
    pthread_cond_destroy(&sp->pause_cv);
    free(sp->chunks); free(sp->chunk_sumsq); free(sp->slot_grads); free(sp->hist);
    free(sp);
}

odin_status odin_spheres_set_schedule(odin_spheres *sp, float lr_max, float lr_min, int warmup_steps, int total_steps) {
    ODIN_REQUIRE_PTR(sp, "trainer");
    if (!(lr_max >= 0.0f) || !isfinite(lr_max)) return odin_fail(ODIN_BAD_ARG, "lr_max must be finite and >= 0 (got %g)", lr_max);
    if (!(lr_min >= 0.0f && lr_min <= lr_max)) return odin_fail(ODIN_BAD_ARG, "lr_min must be in [0, lr_max] (got %g)", lr_min);
    if (warmup_steps < 0) return odin_fail(ODIN_BAD_ARG, "warmup_steps must be >= 0 (got %d)", warmup_steps);
    if (total_steps < 0) return odin_fail(ODIN_BAD_ARG, "total_steps must be >= 0 (got %d)", total_steps);
    sp->lr_max = lr_max; sp->lr_min = lr_min; sp->warmup = warmup_steps; sp->total_steps = total_steps;
    return ODIN_OK;
}

odin_status odin_spheres_set_optimizer(odin_spheres *sp, float beta1, float beta2, float eps, float weight_decay, float grad_clip) {
    ODIN_REQUIRE_PTR(sp, "trainer");
    if (!(beta1 >= 0.0f && beta1 < 1.0f)) return odin_fail(ODIN_BAD_ARG, "beta1 must be in [0, 1) (got %g)", beta1);
    if (!(beta2 >= 0.0f && beta2 < 1.0f)) return odin_fail(ODIN_BAD_ARG, "beta2 must be in [0, 1) (got %g)", beta2);
    if (!(eps > 0.0f) || !isfinite(eps)) return odin_fail(ODIN_BAD_ARG, "eps must be a finite number > 0 (got %g)", eps);
    if (!(weight_decay >= 0.0f) || !isfinite(weight_decay))
        return odin_fail(ODIN_BAD_ARG, "weight_decay must be a finite number >= 0 (got %g)", weight_decay);
    if (!(grad_clip >= 0.0f) || !isfinite(grad_clip))
        return odin_fail(ODIN_BAD_ARG, "grad_clip must be a finite number >= 0, 0 = off (got %g)", grad_clip);
    sp->beta1 = beta1; sp->beta2 = beta2; sp->eps = eps; sp->wd = weight_decay; sp->clip = grad_clip;
    return ODIN_OK;
}

odin_status odin_spheres_set_step(odin_spheres *sp, long long step) {
    ODIN_REQUIRE_PTR(sp, "trainer");
    if (step < 0) return odin_fail(ODIN_BAD_ARG, "step must be >= 0 (got %lld)", step);
    if (atomic_load(&sp->running)) return odin_fail(ODIN_STATE, "cannot set the step while training runs");
    sp->step = step;
    atomic_store_explicit(&sp->r_step, step, RLX);
    return ODIN_OK;
}

/* warmup: linear from lr_max/warmup; then cosine from lr_max to lr_min at total_steps */
static float schedule(const odin_spheres *sp, long long t) {
    if (sp->warmup > 0 && t <= sp->warmup) return sp->lr_max * (float)t / (float)sp->warmup;
    if (sp->total_steps <= sp->warmup) return sp->lr_max;
    if (t >= sp->total_steps) return sp->lr_min;
    double progress = (double)(t - sp->warmup) / (double)(sp->total_steps - sp->warmup);
    return sp->lr_min + (sp->lr_max - sp->lr_min) * (float)(0.5 * (1.0 + cos(M_PI * progress)));
}

static void set_root(odin_spheres *sp, int state) {
    atomic_fetch_add_explicit(&sp->root_seq, 1, memory_order_acq_rel);
    atomic_store_explicit(&sp->r_state, state, RLX);
    atomic_fetch_add_explicit(&sp->root_seq, 1, memory_order_release);
}

/* A step's inputs and the tokens each slot counts (every process of a distributed run
 * sees the whole batch, so all agree on the loss weights). */
static odin_status step_prepare(odin_spheres *sp, const int32_t *in, const int32_t *ids, const int32_t *tg,
                                const uint8_t *mk) {
    sp->step_t0 = now_s();
    sp->step_tp = prof_now(sp);
    const int T = sp->T;
    sp->in = in; sp->ids = ids; sp->tg = tg; sp->mk = mk;
    sp->total_count = 0;
    sp->sumsq_ready = 0;
    for (int s = 0; s < NS; s++) {
        int c = 0;
        const size_t a = (size_t)sp->slot_first[s] * T, n = (size_t)sp->slot_rows[s] * T;
        for (size_t i = 0; i < n; i++) c += mk ? (mk[a + i] != 0) : 1;
        sp->slot_count[s] = c;
        sp->total_count += c;
    }
    if (sp->total_count == 0)
        return odin_fail(ODIN_BAD_ARG, "step %lld: the batch has no token with loss_mask = 1", sp->step + 1);
    set_root(sp, ODIN_SPHERE_WAITING);
    for (int s = sp->n_work; s < NS; s++) { /* no rows: a zero gradient, nothing to add */
        sp->slot_status[s] = ODIN_OK;
        sp->slot_loss[s] = sp->slot_norm[s] = 0.0f;
        set_state(sp, s, ODIN_SPHERE_WAITING);
    }
    return ODIN_OK;
}

static void all_idle(odin_spheres *sp) {
    for (int s = 0; s < NS; s++) set_state(sp, s, ODIN_SPHERE_IDLE);
}

/* Slot s's gradient norm from its chunks' squares (in chunk order, so thread-independent),
 * rescaled to read as the gradient of the slot's own mean loss, comparable across spheres.
 * Root side, after the reduce of s's wave; the weights have not changed yet. */
static odin_status slot_norm_from_chunks(odin_spheres *sp, int s) {
    double ss = 0.0;
    const double *sq = sp->slot_sumsq + (size_t)s * sp->n_chunks;
    for (int c = 0; c < sp->n_chunks; c++) ss += sq[c];
    if (!isfinite(ss))
        return odin_fail(ODIN_NAN_DETECTED, "sphere %d failed at step %lld: its gradient contains NaN or Inf", s,
                         sp->step + 1);
    const float norm = sp->slot_count[s] ? (float)(sqrt(ss) * sp->total_count / sp->slot_count[s]) : 0.0f;
    sp->slot_norm[s] = norm;
    sphere_live *l = &sp->live[s];
    live_begin(l);
    atomic_store_explicit(&l->last_grad_norm, norm, RLX);
    live_end(l);
    return ODIN_OK;
}

/* Forward + backward of slots [lo, hi), in waves of as many slots as there are buffers.
 * lo == 0: each wave is added into the gradient as it finishes (the fold starts here);
 * lo > 0: the slots stay in their buffers (hi - lo of them) for odin_spheres_shard_fold. */
static odin_status step_slots(odin_spheres *sp, int lo, int hi) {
    const long long t = sp->step + 1;
    sp->norm_in_reduce = lo == 0; /* a shard from slot > 0 keeps its slots for the fold: run_slot norms them */
    for (int first = lo; first < hi; first += sp->n_bufs) {
        sp->wave_first = first;
        sp->wave_count = hi - first < sp->n_bufs ? hi - first : sp->n_bufs;
        set_root(sp, ODIN_SPHERE_WAITING);
        run_phase(sp, PH_SLOTS, sp->wave_count);
        for (int s = first; s < first + sp->wave_count; s++) {
            if (sp->slot_status[s] != ODIN_OK) {
                all_idle(sp);
                return odin_fail(sp->slot_status[s], "sphere %d failed at step %lld: %s", s, t, sp->slot_error[s]);
            }
        }
        if (lo > 0) break; /* all of them in one wave (ensure_slot_buffers) */
        set_root(sp, ODIN_SPHERE_REDUCING);
        for (int s = first; s < first + sp->wave_count; s++) set_state(sp, s, ODIN_SPHERE_REDUCING);
        sp->reduce_c0 = 0;
        run_phase(sp, PH_REDUCE, sp->n_chunks);
        if (first + sp->wave_count == sp->n_work) sp->sumsq_ready = 1;
        for (int s = first; s < first + sp->wave_count; s++) {
            odin_status st = slot_norm_from_chunks(sp, s);
            if (st) { all_idle(sp); return st; }
        }
    }
    return ODIN_OK;
}

/* The gradient is complete: global norm, clip, AdamW, statistics, history. */
static odin_status step_finish(odin_spheres *sp) {
    const long long t = sp->step + 1;
    const int T = sp->T;
    if (!sp->sumsq_ready) {
        sp->reduce_c0 = 0;
        run_phase(sp, PH_NORM, sp->n_chunks);
    }
    double ss = 0.0;
    for (int c = 0; c < sp->n_chunks; c++) ss += sp->chunk_sumsq[c];
    double norm = sqrt(ss);
    if (!isfinite(norm)) {
        all_idle(sp);
        return odin_fail(ODIN_NAN_DETECTED, "root: the reduced gradient norm is not finite at step %lld", t);
    }
    sp->clip_scale = (sp->clip > 0.0f && norm > sp->clip) ? (float)(sp->clip / norm) : 1.0f;
    sp->lr_now = schedule(sp, t);
    sp->bc1 = odin_bias_correction(sp->beta1, t);
    sp->bc2 = odin_bias_correction(sp->beta2, t);
    run_phase(sp, PH_UPDATE, sp->n_chunks);
    all_idle(sp);
    double loss = 0.0;
    for (int s = 0; s < NS; s++) loss += (double)sp->slot_loss[s] * sp->slot_count[s];
    loss /= sp->total_count;
    sp->step = t;
    double dt = now_s() - sp->step_t0, tps = (double)sp->B * T / (dt > 0 ? dt : 1e-9);
    /* publish root stats */
    atomic_fetch_add_explicit(&sp->root_seq, 1, memory_order_acq_rel);
    atomic_store_explicit(&sp->r_step, t, RLX);
    atomic_store_explicit(&sp->r_lr, sp->lr_now, RLX);
    atomic_store_explicit(&sp->r_loss, (float)loss, RLX);
    atomic_store_explicit(&sp->r_norm, (float)norm, RLX);
    atomic_store_explicit(&sp->r_tps, tps, RLX);
    atomic_store_explicit(&sp->r_step_s, dt, RLX);
    atomic_store_explicit(&sp->r_tokens, atomic_load_explicit(&sp->r_tokens, RLX) + (long long)sp->B * T, RLX);
    atomic_store_explicit(&sp->r_state, ODIN_SPHERE_IDLE, RLX);
    atomic_fetch_add_explicit(&sp->root_seq, 1, memory_order_release);
    odin_spheres_record rec = {t, (float)loss, (float)norm, sp->lr_now, tps, {0}, {0}};
    for (int s = 0; s < NS; s++) { rec.sphere_loss[s] = sp->slot_loss[s]; rec.sphere_grad_norm[s] = sp->slot_norm[s]; }
    pthread_mutex_lock(&sp->hist_mu);
    sp->hist[sp->hist_count % HISTORY] = rec;
    sp->hist_count++;
    pthread_mutex_unlock(&sp->hist_mu);
    if (sp->profiling) {
        sp->wall[PW_STEPS] += odin_now_ns() - sp->step_tp;
        sp->prof_steps++;
    }
    return ODIN_OK;
}

static odin_status one_step(odin_spheres *sp, const int32_t *in, const int32_t *ids, const int32_t *tg,
                            const uint8_t *mk) {
    odin_status st = step_prepare(sp, in, ids, tg, mk);
    if (!st) st = step_slots(sp, 0, sp->n_work);
    return st ? st : step_finish(sp);
}

odin_status odin_spheres_run(odin_spheres *sp, const int32_t *inputs, const int32_t *targets,
                             const uint8_t *mask, int n_steps, int *steps_done) {
    return odin_spheres_run_ex(sp, inputs, NULL, targets, mask, n_steps, steps_done);
}

odin_status odin_spheres_run_ex(odin_spheres *sp, const int32_t *inputs, const int32_t *ids,
                                const int32_t *targets, const uint8_t *mask, int n_steps, int *steps_done) {
    ODIN_REQUIRE_PTR(sp, "trainer"); ODIN_REQUIRE_PTR(inputs, "inputs"); ODIN_REQUIRE_PTR(targets, "targets");
    ODIN_REQUIRE_POS(n_steps, "n_steps");
    if (steps_done) *steps_done = 0;
    if (ids && sp->ops == &rwkv_ops)
        return odin_fail(ODIN_BAD_ARG, "ids must be NULL for an RWKV model (Abacus ids are a GPT option)");
    int expected = 0;
    if (!atomic_compare_exchange_strong(&sp->running, &expected, 1))
        return odin_fail(ODIN_STATE, "the trainer is already running on another thread");
    /* a stop request is consumed by the run that honours it, even one made between runs */
    atomic_store_explicit(&sp->r_stopped, 0, RLX);
    const size_t per = (size_t)sp->B * sp->T;
    odin_status st = ODIN_OK;
    int done = 0;
    for (int i = 0; i < n_steps; i++) {
        /* step boundary: honour pause / stop / thread changes */
        if (atomic_load(&sp->pause_req) && !atomic_load(&sp->stop_req)) {
            atomic_store_explicit(&sp->r_paused, 1, RLX);
            pthread_mutex_lock(&sp->mu);
            while (atomic_load(&sp->pause_req) && !atomic_load(&sp->stop_req)) pthread_cond_wait(&sp->pause_cv, &sp->mu);
            pthread_mutex_unlock(&sp->mu);
            atomic_store_explicit(&sp->r_paused, 0, RLX);
        }
        if (atomic_exchange(&sp->stop_req, 0)) { atomic_store_explicit(&sp->r_stopped, 1, RLX); break; }
        if (atomic_load(&sp->wanted_threads) != sp->active && (st = apply_threads(sp))) break;
        st = one_step(sp, inputs + i * per, ids ? ids + i * per : NULL, targets + i * per, mask ? mask + i * per : NULL);
        if (st) break;
        done++;
        if (atomic_load(&sp->ckpt_req)) break;
    }
    if (steps_done) *steps_done = done;
    set_root(sp, ODIN_SPHERE_IDLE);
    atomic_store(&sp->running, 0);
    return st;
}

odin_status odin_spheres_set_seq_len(odin_spheres *sp, int T) {
    ODIN_REQUIRE_PTR(sp, "trainer");
    if (T < 1 || T > sp->T_max)
        return odin_fail(ODIN_BAD_SHAPE, "T must be in [1, %d] (the length the trainer was created for), got %d",
                         sp->T_max, T);
    if (atomic_load(&sp->running))
        return odin_fail(ODIN_STATE, "the sequence length cannot change while a run is in progress");
    sp->T = T;
    return ODIN_OK;
}

odin_status odin_spheres_set_threads(odin_spheres *sp, int threads) {
    ODIN_REQUIRE_PTR(sp, "trainer");
    if (threads < 1 || threads > MAX_THREADS)
        return odin_fail(ODIN_BAD_ARG, "threads must be in [1, %d], got %d", MAX_THREADS, threads);
    atomic_store(&sp->wanted_threads, threads);
    return ODIN_OK;
}

void odin_spheres_pause(odin_spheres *sp) { if (sp) atomic_store(&sp->pause_req, 1); }
void odin_spheres_resume(odin_spheres *sp) {
    if (!sp) return;
    pthread_mutex_lock(&sp->mu);
    atomic_store(&sp->pause_req, 0);
    pthread_cond_broadcast(&sp->pause_cv);
    pthread_mutex_unlock(&sp->mu);
}
void odin_spheres_stop(odin_spheres *sp) {
    if (!sp) return;
    pthread_mutex_lock(&sp->mu);
    atomic_store(&sp->stop_req, 1);
    pthread_cond_broadcast(&sp->pause_cv);
    pthread_mutex_unlock(&sp->mu);
}
void odin_spheres_request_checkpoint(odin_spheres *sp) { if (sp) atomic_store(&sp->ckpt_req, 1); }
int odin_spheres_take_checkpoint_request(odin_spheres *sp) { return sp ? atomic_exchange(&sp->ckpt_req, 0) : 0; }

void odin_spheres_snapshot_get(odin_spheres *sp, odin_spheres_snapshot *o) {
    if (!sp || !o) return;
    unsigned a, b;
    do {
        while ((a = atomic_load_explicit(&sp->root_seq, memory_order_acquire)) & 1u) ;
        o->step = atomic_load_explicit(&sp->r_step, RLX);
        o->lr = atomic_load_explicit(&sp->r_lr, RLX);
        o->loss = atomic_load_explicit(&sp->r_loss, RLX);
        o->grad_norm = atomic_load_explicit(&sp->r_norm, RLX);
        o->tokens_per_s = atomic_load_explicit(&sp->r_tps, RLX);
        o->step_seconds = atomic_load_explicit(&sp->r_step_s, RLX);
        o->tokens = atomic_load_explicit(&sp->r_tokens, RLX);
        o->root_state = atomic_load_explicit(&sp->r_state, RLX);
        atomic_thread_fence(memory_order_acquire);
        b = atomic_load_explicit(&sp->root_seq, RLX);
    } while (a != b);
    o->threads = atomic_load_explicit(&sp->r_threads, RLX);
    o->running = atomic_load(&sp->running);
    o->paused = atomic_load_explicit(&sp->r_paused, RLX);
    o->stopped = atomic_load_explicit(&sp->r_stopped, RLX);
    for (int s = 0; s < NS; s++) {
        sphere_live *l = &sp->live[s];
        odin_sphere_stats *d = &o->spheres[s];
        do {
            while ((a = atomic_load_explicit(&l->seq, memory_order_acquire)) & 1u) ;
            d->state = atomic_load_explicit(&l->state, RLX);
            d->rows = atomic_load_explicit(&l->rows, RLX);
            d->microbatches = atomic_load_explicit(&l->microbatches, RLX);
            d->tokens = atomic_load_explicit(&l->tokens, RLX);
            d->last_loss = atomic_load_explicit(&l->last_loss, RLX);
            d->last_grad_norm = atomic_load_explicit(&l->last_grad_norm, RLX);
            d->busy_seconds = atomic_load_explicit(&l->busy_seconds, RLX);
            atomic_thread_fence(memory_order_acquire);
            b = atomic_load_explicit(&l->seq, RLX);
        } while (a != b);
    }
}

int odin_spheres_history(odin_spheres *sp, long long since_step, odin_spheres_record *out, int max) {
    if (!sp || !out || max <= 0) return 0;
    int n = 0;
    pthread_mutex_lock(&sp->hist_mu);
    long long first = sp->hist_count > HISTORY ? sp->hist_count - HISTORY : 0;
    for (long long i = first; i < sp->hist_count && n < max; i++) {
        const odin_spheres_record *r = &sp->hist[i % HISTORY];
        if (r->step > since_step) out[n++] = *r;
    }
    pthread_mutex_unlock(&sp->hist_mu);
    return n;
}

int odin_spheres_history_capacity(void) { return HISTORY; }

/* ---------------------------------------------------------------- profiling */
odin_status odin_spheres_set_profiling(odin_spheres *sp, int enabled) {
    ODIN_REQUIRE_PTR(sp, "trainer");
    if (atomic_load(&sp->running)) return odin_fail(ODIN_STATE, "cannot switch profiling while training runs");
    if (enabled) {
        for (int i = 0; i < MAX_THREADS; i++) {
            sp->workers[i].gemm_ns = 0;
            memset(sp->workers[i].prof, 0, sizeof sp->workers[i].prof);
        }
        memset(sp->wall, 0, sizeof sp->wall);
        sp->prof_steps = 0;
    }
    sp->profiling = enabled != 0;
    return ODIN_OK;
}

odin_status odin_spheres_profile_get(odin_spheres *sp, odin_spheres_profile *out) {
    ODIN_REQUIRE_PTR(sp, "trainer"); ODIN_REQUIRE_PTR(out, "out");
    if (atomic_load(&sp->running)) return odin_fail(ODIN_STATE, "the profile can be read between runs only");
    uint64_t part[PR_N] = {0};
    for (int i = 0; i < sp->n_spawned; i++)
        for (int k = 0; k < PR_N; k++) part[k] += sp->workers[i].prof[k];
    const double s = 1e-9;
    *out = (odin_spheres_profile){
        .steps = sp->prof_steps,
        .fwd_gemm = part[PR_FWD_GEMM] * s, .fwd_other = part[PR_FWD_OTHER] * s,
        .bwd_gemm = part[PR_BWD_GEMM] * s, .bwd_other = part[PR_BWD_OTHER] * s,
        .slot_buffers = part[PR_SLOT_BUFFERS] * s, .reduce = part[PR_REDUCE] * s, .update = part[PR_UPDATE] * s,
        .wall_slots = sp->wall[PW_SLOTS] * s, .wall_reduce = sp->wall[PW_REDUCE] * s,
        .wall_update = sp->wall[PW_UPDATE] * s, .wall_steps = sp->wall[PW_STEPS] * s,
    };
    return ODIN_OK;
}

odin_status odin_spheres_set_slot_buffers(odin_spheres *sp, int n) {
    ODIN_REQUIRE_PTR(sp, "trainer");
    if (n < 0 || n > NS) return odin_fail(ODIN_BAD_ARG, "slot buffers must be in [0, %d] (0 = automatic), got %d", NS, n);
    if (atomic_load(&sp->running)) return odin_fail(ODIN_STATE, "cannot change the slot buffers while training runs");
    const int before = sp->bufs_asked;
    sp->bufs_asked = n;
    odin_status st = ensure_slot_buffers(sp, sp->active);
    if (st) sp->bufs_asked = before;
    return st;
}

int odin_spheres_slot_buffers(odin_spheres *sp) { return sp ? sp->n_bufs : 0; }

/* ---------------------------------------------------------------- shards (odin/distributed) */
/* Claim the trainer for one call (as a run does); ODIN_STATE if a run holds it. */
static odin_status claim(odin_spheres *sp) {
    int expected = 0;
    if (!atomic_compare_exchange_strong(&sp->running, &expected, 1))
        return odin_fail(ODIN_STATE, "the trainer is already running on another thread");
    return ODIN_OK;
}

odin_status odin_spheres_set_shard(odin_spheres *sp, int lo, int hi) {
    ODIN_REQUIRE_PTR(sp, "trainer");
    if (!(lo >= 0 && lo < hi && hi <= sp->n_work))
        return odin_fail(ODIN_BAD_ARG, "the shard must be slots [lo, hi) with 0 <= lo < hi <= %d (the slots with "
                         "rows), got [%d, %d)", sp->n_work, lo, hi);
    odin_status st = claim(sp);
    if (st) return st;
    const int lo0 = sp->shard_lo, hi0 = sp->shard_hi;
    sp->shard_lo = lo;
    sp->shard_hi = hi;
    sp->shard_open = 0;
    st = ensure_slot_buffers(sp, sp->active);
    if (st) { sp->shard_lo = lo0; sp->shard_hi = hi0; ensure_slot_buffers(sp, sp->active); }
    atomic_store(&sp->running, 0);
    return st;
}

int odin_spheres_num_chunks(odin_spheres *sp) { return sp ? sp->n_chunks : 0; }

odin_status odin_spheres_chunk_span(odin_spheres *sp, int c0, int c1, size_t *start, size_t *end) {
    ODIN_REQUIRE_PTR(sp, "trainer"); ODIN_REQUIRE_PTR(start, "start"); ODIN_REQUIRE_PTR(end, "end");
    if (!(c0 >= 0 && c0 < c1 && c1 <= sp->n_chunks))
        return odin_fail(ODIN_BAD_ARG, "chunks must be [c0, c1) with 0 <= c0 < c1 <= %d, got [%d, %d)", sp->n_chunks, c0, c1);
    *start = sp->chunks[c0].start;
    *end = sp->chunks[c1 - 1].start + sp->chunks[c1 - 1].len;
    return ODIN_OK;
}

odin_status odin_spheres_shard_slots(odin_spheres *sp, const int32_t *inputs, const int32_t *ids,
                                     const int32_t *targets, const uint8_t *mask, odin_spheres_slot_report *own) {
    ODIN_REQUIRE_PTR(sp, "trainer"); ODIN_REQUIRE_PTR(inputs, "inputs"); ODIN_REQUIRE_PTR(targets, "targets");
    ODIN_REQUIRE_PTR(own, "own");
    if (ids && sp->ops == &rwkv_ops)
        return odin_fail(ODIN_BAD_ARG, "ids must be NULL for an RWKV model (Abacus ids are a GPT option)");
    odin_status st = claim(sp);
    if (st) return st;
    sp->shard_open = 0;
    sp->folded = 0;
    if (atomic_load(&sp->wanted_threads) != sp->active) st = apply_threads(sp);
    if (!st) st = step_prepare(sp, inputs, ids, targets, mask);
    if (!st) st = step_slots(sp, sp->shard_lo, sp->shard_hi);
    memset(own, 0, sizeof *own);
    for (int s = sp->shard_lo; s < sp->shard_hi && !st; s++) {
        own->loss[s] = sp->slot_loss[s];
        own->grad_norm[s] = sp->slot_norm[s];
        own->seconds[s] = sp->slot_seconds[s];
    }
    sp->shard_open = st == ODIN_OK;
    atomic_store(&sp->running, 0);
    return st;
}

odin_status odin_spheres_shard_fold(odin_spheres *sp, int c0, int c1) {
    ODIN_REQUIRE_PTR(sp, "trainer");
    if (!sp->shard_open || sp->shard_lo == 0)
        return odin_fail(ODIN_STATE, "fold: only after odin_spheres_shard_slots, on a shard that does not start at slot 0");
    if (!(c0 >= 0 && c0 < c1 && c1 <= sp->n_chunks))
        return odin_fail(ODIN_BAD_ARG, "chunks must be [c0, c1) with 0 <= c0 < c1 <= %d, got [%d, %d)", sp->n_chunks, c0, c1);
    odin_status st = claim(sp);
    if (st) return st;
    sp->wave_first = sp->shard_lo;
    sp->wave_count = sp->shard_hi - sp->shard_lo;
    sp->reduce_c0 = c0;
    sp->norm_in_reduce = 0; /* run_slot took these slots' norms */
    set_root(sp, ODIN_SPHERE_REDUCING);
    for (int s = sp->shard_lo; s < sp->shard_hi; s++) set_state(sp, s, ODIN_SPHERE_REDUCING);
    run_phase(sp, PH_REDUCE, c1 - c0);
    sp->folded += c1 - c0;
    if (sp->shard_hi == sp->n_work && sp->folded == sp->n_chunks) sp->sumsq_ready = 1;
    atomic_store(&sp->running, 0);
    return ODIN_OK;
}

odin_status odin_spheres_shard_finish(odin_spheres *sp, const odin_spheres_slot_report *all) {
    ODIN_REQUIRE_PTR(sp, "trainer"); ODIN_REQUIRE_PTR(all, "all");
    if (!sp->shard_open) return odin_fail(ODIN_STATE, "finish: only after odin_spheres_shard_slots");
    odin_status st = claim(sp);
    if (st) return st;
    for (int s = 0; s < sp->n_work; s++) {
        if (s >= sp->shard_lo && s < sp->shard_hi) continue;
        /* another process ran this slot: its outcome joins the statistics and the loss */
        sp->slot_loss[s] = all->loss[s];
        sp->slot_norm[s] = all->grad_norm[s];
        sphere_live *l = &sp->live[s];
        live_begin(l);
        atomic_store_explicit(&l->microbatches, atomic_load_explicit(&l->microbatches, RLX) + 1, RLX);
        atomic_store_explicit(&l->tokens, atomic_load_explicit(&l->tokens, RLX) + (long long)sp->slot_rows[s] * sp->T, RLX);
        atomic_store_explicit(&l->last_loss, all->loss[s], RLX);
        atomic_store_explicit(&l->last_grad_norm, all->grad_norm[s], RLX);
        atomic_store_explicit(&l->busy_seconds, atomic_load_explicit(&l->busy_seconds, RLX) + all->seconds[s], RLX);
        live_end(l);
    }
    st = step_finish(sp);
    sp->shard_open = 0;
    atomic_store(&sp->running, 0);
    return st;
}
