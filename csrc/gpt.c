/* gpt.c — GPT-2 style decoder on the ODIN kernels: forward, backward, AdamW step,
 * and token-by-token generation with a KV cache.
 *
 * Parameters live in one contiguous block (layout in odin.h); a workspace holds the
 * activations of one micro-batch (sized once for B x T), so several workspaces can
 * train on the same parameters at once (the spheres trainer gives one to each sphere).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

enum { T_WTE, T_WPE, T_LN1W, T_LN1B, T_QKVW, T_QKVB, T_PROJW, T_PROJB, T_LN2W, T_LN2B,
       T_FCW, T_FCB, T_FCPW, T_FCPB, T_LNFW, T_LNFB, T_WAB, T_KINDS };
static const char *k_names[T_KINDS] = {"wte", "wpe", "ln1_w", "ln1_b", "qkv_w", "qkv_b", "attproj_w",
                                       "attproj_b", "ln2_w", "ln2_b", "fc_w", "fc_b", "fcproj_w",
                                       "fcproj_b", "lnf_w", "lnf_b", "wab"};
#define PER_LAYER 12 /* kinds T_LN1W .. T_FCPB */


struct odin_gpt {
    int V, maxT, L, NH, C;
    int n_abacus; /* digit-position embeddings (0 = none); wab is the last tensor */
    int no_wpe;   /* 1: wpe is frozen (kept at zero by the caller): no gradient */
    float *alibi; /* [NH] ALiBi slopes, NULL = no attention bias */
    float eps;
    size_t n_params;
    int n_tensors;
    odin_tensor_view *tensors;
    float *params, *grads, *m, *v;
    uint8_t *qblock;  /* the quantized tensors (NULL: none) */
    size_t qbytes;
    int quant_type;   /* the first quantized tensor's type, for messages (0: none) */
};

static inline int tensor_index(const odin_gpt *g, int kind, int l) {
    /* T_WAB follows lnf_w, lnf_b, so the last formula also lands on it */
    return kind < T_LN1W ? kind : kind < T_LNFW ? 2 + l * PER_LAYER + (kind - T_LN1W)
                                                 : 2 + g->L * PER_LAYER + (kind - T_LNFW);
}
/* Pointer to float32 tensor `kind` of layer `l` inside a block with the parameter layout. */
static inline float *view(const odin_gpt *g, float *block, int kind, int l) {
    return block + g->tensors[tensor_index(g, kind, l)].offset;
}
/* A weight matrix of the model, float32 or quantized. */
static inline odin_weight wview(const odin_gpt *g, int kind, int l) {
    const odin_tensor_view *t = &g->tensors[tensor_index(g, kind, l)];
    if (t->type == ODIN_TYPE_F32) return odin_weight_f32(g->params + t->offset);
    odin_weight w = {NULL, g->qblock + t->offset, t->type, odin_quant_row_bytes(t->type, t->cols)};
    return w;
}
/* out[n, C] = wte[tokens[n]] (+ wpe[pos[n]]) whatever wte's type */
static void embed(const odin_gpt *g, float *out, const int32_t *tokens, const int32_t *pos, int B, int T) {
    const odin_weight wte = wview(g, T_WTE, 0);
    const float *wpe = g->params + g->tensors[T_WPE].offset;
    const int C = g->C;
    if (wte.type == ODIN_TYPE_F32 && !pos) {
        odin_kern->embedding_forward(out, tokens, wte.f, wpe, B, T, C);
        return;
    }
    for (int i = 0; i < B * T; i++) {
        float *o = out + (size_t)i * C;
        const int p = pos ? pos[i] : i % T;
        if (wte.type == ODIN_TYPE_F32) memcpy(o, wte.f + (size_t)tokens[i] * C, C * sizeof(float));
        else odin_dequantize_row(wte.type, wte.q + (size_t)tokens[i] * wte.row_bytes, o, C);
        for (int c = 0; c < C; c++) o[c] += wpe[(size_t)p * C + c];
    }
}
static odin_status refuse_quantized(const odin_gpt *g) {
    return odin_fail(ODIN_BAD_ARG, "this model's weights are quantized (%s): it answers but cannot train; train the "
                     "float32 model it was made from", odin_qtype_name(g->quant_type));
}

odin_status odin_gpt_create(odin_gpt **out, int vocab, int max_t, int n_layer, int n_head,
                            int d_model, float ln_eps) {
    return odin_gpt_create_ex(out, vocab, max_t, n_layer, n_head, d_model, ln_eps, 0);
}

odin_status odin_gpt_create_ex(odin_gpt **out, int vocab, int max_t, int n_layer, int n_head,
                               int d_model, float ln_eps, int n_abacus) {
    return odin_gpt_create_q(out, vocab, max_t, n_layer, n_head, d_model, ln_eps, n_abacus, ODIN_TYPE_F32,
                             ODIN_TYPE_F32);
}

odin_status odin_gpt_create_q(odin_gpt **out, int vocab, int max_t, int n_layer, int n_head, int d_model,
                              float ln_eps, int n_abacus, int matrix_type, int embed_type) {
    ODIN_REQUIRE_PTR(out, "out");
    *out = NULL;
    ODIN_REQUIRE_POS(vocab, "vocab"); ODIN_REQUIRE_POS(max_t, "max_t");
    ODIN_REQUIRE_POS(n_layer, "n_layer"); ODIN_REQUIRE_POS(n_head, "n_head"); ODIN_REQUIRE_POS(d_model, "d_model");
    ODIN_REQUIRE_DIM(vocab, "vocab"); ODIN_REQUIRE_DIM(max_t, "max_t"); ODIN_REQUIRE_DIM(n_head, "n_head");
    ODIN_REQUIRE_DIM(d_model, "d_model"); ODIN_REQUIRE_DIM(n_abacus, "n_abacus");
    /* the tensor table has 2 + 12 L + 2 (+ 1) entries, counted in int */
    if (n_layer > (ODIN_DIM_MAX - 5) / PER_LAYER)
        return odin_fail(ODIN_BAD_ARG, "n_layer is too large (%d > %d)", n_layer, (ODIN_DIM_MAX - 5) / PER_LAYER);
    if (d_model % n_head)
        return odin_fail(ODIN_BAD_SHAPE, "d_model (%d) must be divisible by n_head (%d)", d_model, n_head);
    if (!(ln_eps > 0.0f) || !isfinite(ln_eps))
        return odin_fail(ODIN_BAD_ARG, "ln_eps must be a finite number > 0 (got %g)", ln_eps);
    if (n_abacus < 0) return odin_fail(ODIN_BAD_ARG, "n_abacus must be >= 0 (got %d)", n_abacus);
    odin_status st = odin_check_quant_types(matrix_type, embed_type);
    if (st) return st;
    if ((matrix_type || embed_type) && d_model % ODIN_QK)
        return odin_fail(ODIN_BAD_SHAPE, "d_model (%d) must be a multiple of %d for %s weights: a block holds %d weights "
                         "of a row", d_model, ODIN_QK, odin_qtype_name(matrix_type ? matrix_type : embed_type), ODIN_QK);
    const int C = d_model;
    const int rows[T_KINDS] = {vocab, max_t, C, C, 3 * C, 3 * C, C, C, C, C, 4 * C, 4 * C, C, C, C, C, n_abacus};
    const int cols[T_KINDS] = {C, C, 1, 1, C, 1, C, 1, 1, 1, C, 1, 4 * C, 1, 1, 1, C};
    /* count the parameters before allocating anything for them */
    size_t per_layer = 0, n_params = 0;
    for (int kind = T_LN1W; kind < T_LNFW; kind++)
        per_layer = odin_size_add(per_layer, odin_size_mul((size_t)rows[kind], (size_t)cols[kind]));
    for (int kind = 0; kind < T_KINDS; kind++)
        if (kind < T_LN1W || kind >= T_LNFW)
            n_params = odin_size_add(n_params, odin_size_mul((size_t)rows[kind], (size_t)cols[kind]));
    n_params = odin_size_add(n_params, odin_size_mul((size_t)n_layer, per_layer));
    char args[128];
    snprintf(args, sizeof args, "vocab=%d, max_t=%d, n_layer=%d, d_model=%d, n_abacus=%d", vocab, max_t, n_layer,
             d_model, n_abacus);
    st = odin_require_floats(n_params, "the model's parameters", args);
    if (st) return st;
    odin_gpt *g = calloc(1, sizeof *g);
    if (!g) return odin_fail(ODIN_NO_MEMORY, "cannot allocate the model");
    g->V = vocab; g->maxT = max_t; g->L = n_layer; g->NH = n_head; g->C = d_model; g->eps = ln_eps;
    g->n_abacus = n_abacus;
    g->n_tensors = 2 + n_layer * PER_LAYER + 2 + (n_abacus > 0);
    g->tensors = calloc((size_t)g->n_tensors, sizeof *g->tensors);
    if (!g->tensors) { free(g); return odin_fail(ODIN_NO_MEMORY, "cannot allocate the tensor table"); }
    size_t off = 0, qoff = 0;
    int idx = 0;
    int types[T_KINDS] = {0};
    types[T_WTE] = embed_type;
    types[T_QKVW] = types[T_PROJW] = types[T_FCW] = types[T_FCPW] = matrix_type;
    g->quant_type = matrix_type ? matrix_type : embed_type;
#define ADD(kind) odin_tensor_append_typed(g->tensors, &idx, &off, &qoff, k_names[kind], rows[kind], cols[kind], types[kind])
    ADD(T_WTE);
    ADD(T_WPE);
    for (int l = 0; l < n_layer; l++)
        for (int kind = T_LN1W; kind < T_LNFW; kind++) ADD(kind);
    ADD(T_LNFW);
    ADD(T_LNFB);
    if (n_abacus > 0) ADD(T_WAB);
#undef ADD
    g->n_params = off;
    g->qbytes = qoff;
    st = odin_alloc_params(off, &g->params);
    if (!st && qoff && !(g->qblock = odin_zalloc(qoff)))
        st = odin_fail(ODIN_NO_MEMORY, "cannot allocate %.1f MiB of quantized weights", qoff / 1048576.0);
    if (st) {
        odin_gpt_free(g);
        return st;
    }
    *out = g;
    return ODIN_OK;
}

void odin_gpt_free(odin_gpt *g) {
    if (!g) return;
    free(g->params); free(g->grads); free(g->m); free(g->v); free(g->tensors); free(g->alibi); free(g->qblock);
    free(g);
}

odin_status odin_gpt_tensor_type(const odin_gpt *g, int index, int *type) {
    ODIN_REQUIRE_PTR(g, "model"); ODIN_REQUIRE_PTR(type, "type");
    if (index < 0 || index >= g->n_tensors)
        return odin_fail(ODIN_BAD_ARG, "tensor index %d is outside [0, %d)", index, g->n_tensors);
    *type = g->tensors[index].type;
    return ODIN_OK;
}
uint8_t *odin_gpt_qblock(odin_gpt *g) { return g ? g->qblock : NULL; }
size_t odin_gpt_qbytes(const odin_gpt *g) { return g ? g->qbytes : 0; }

size_t odin_gpt_num_params(const odin_gpt *g) { return g ? g->n_params : 0; }

odin_status odin_gpt_set_learned_positions(odin_gpt *g, int enabled) {
    ODIN_REQUIRE_PTR(g, "model");
    g->no_wpe = !enabled;
    return ODIN_OK;
}
odin_status odin_gpt_set_alibi(odin_gpt *g, int enabled) {
    ODIN_REQUIRE_PTR(g, "model");
    if (!enabled) {
        free(g->alibi);
        g->alibi = NULL;
        return ODIN_OK;
    }
    if (!g->alibi && !(g->alibi = malloc(sizeof(float) * (size_t)g->NH)))
        return odin_fail(ODIN_NO_MEMORY, "cannot allocate the ALiBi slopes");
    for (int h = 0; h < g->NH; h++) g->alibi[h] = odin_alibi_slope(h, g->NH);
    return ODIN_OK;
}

int odin_gpt_num_tensors(const odin_gpt *g) { return g ? g->n_tensors : 0; }
float *odin_gpt_params(odin_gpt *g) { return g->params; }
odin_status odin_gpt_enable_training(odin_gpt *g) {
    ODIN_REQUIRE_PTR(g, "model");
    if (g->qblock) return refuse_quantized(g);
    return odin_alloc_training_blocks(g->n_params, &g->grads, &g->m, &g->v);
}
float *odin_gpt_grads(odin_gpt *g) { return g && !odin_gpt_enable_training(g) ? g->grads : NULL; }
float *odin_gpt_adam_m(odin_gpt *g) { return g && !odin_gpt_enable_training(g) ? g->m : NULL; }
float *odin_gpt_adam_v(odin_gpt *g) { return g && !odin_gpt_enable_training(g) ? g->v : NULL; }

odin_status odin_gpt_tensor_info(const odin_gpt *g, int index, const char **name, size_t *offset,
                                 int *rows, int *cols) {
    ODIN_REQUIRE_PTR(g, "model");
    return odin_tensor_info(g->tensors, g->n_tensors, index, name, offset, rows, cols);
}

/* ------------------------------------------------------------------ workspace */
typedef struct {
    float *ln1, *ln1_mean, *ln1_rstd, *qkv, *atty, *att, *res2, *ln2, *ln2_mean, *ln2_rstd,
          *fch, *fch_gelu, *res3;
} layer_acts;

struct odin_gpt_ws {
    int Bmax, Tmax, B, T;
    size_t bytes;
    float *block;
    float *encoded;            /* [B,T,C] */
    layer_acts *layers;        /* L of them */
    float *lnf, *lnf_mean, *lnf_rstd, *logits, *losses, *lse;
    /* backward scratch, shared by all layers (backward kernels accumulate: zeroed per use);
     * att_scratch also serves the forward attention */
    float *dres, *dln, *dqkv, *datty, *dfch, *dfch_gelu, *dlogits, *att_scratch;
    const int32_t *tokens;     /* inputs of the last forward (caller-owned, must outlive backward) */
    const int32_t *ids;        /* Abacus ids of the last forward (NULL without Abacus) */
    const int32_t *targets;
    const uint8_t *mask;
    int count;                 /* counted tokens of the last forward */
    int has_loss;
};

odin_status odin_gpt_ws_create(odin_gpt_ws **out, const odin_gpt *g, int B, int T) {
    ODIN_REQUIRE_PTR(out, "out"); ODIN_REQUIRE_PTR(g, "model");
    *out = NULL;
    ODIN_REQUIRE_POS(B, "B"); ODIN_REQUIRE_POS(T, "T");
    if (T > g->maxT) return odin_fail(ODIN_BAD_SHAPE, "T (%d) exceeds the model's context (%d)", T, g->maxT);
    ODIN_REQUIRE_DIM((long long)B * T, "B * T");
    const size_t BT = (size_t)B * T, C = (size_t)g->C, NH = (size_t)g->NH, V = (size_t)g->V, L = (size_t)g->L;
    /* per token and layer: ln1, qkv(3), atty, res2, ln2, fch(4), fch_gelu(4), res3 = 16 C,
     * two (mean, rstd) pairs, and NH x T attention probabilities */
    const size_t per_layer = odin_size_add(odin_size_mul(BT, 16 * C + 4), odin_size_mul(odin_size_mul(NH, BT), (size_t)T));
    const size_t att_scratch = odin_size_mul((size_t)odin_att_pad(T), 4 * (C / NH) + 2);
    const size_t terms[] = {odin_size_mul(BT, C), odin_size_mul(L, per_layer), odin_size_mul(BT, C), 2 * BT,
                            odin_size_mul(BT, V), 2 * BT,                                   /* forward */
                            odin_size_mul(BT, 14 * C), odin_size_mul(BT, V), att_scratch}; /* backward */
    const size_t total = odin_size_sum(terms, sizeof terms / sizeof *terms);
    char args[64];
    snprintf(args, sizeof args, "B=%d, T=%d", B, T);
    odin_status st = odin_require_floats(total, "the workspace", args);
    if (st) return st;
    odin_gpt_ws *w = calloc(1, sizeof *w);
    if (!w) return odin_fail(ODIN_NO_MEMORY, "cannot allocate the workspace");
    w->layers = calloc(L, sizeof *w->layers);
    w->block = odin_zalloc(total * sizeof(float));
    if (!w->layers || !w->block) {
        free(w->layers); free(w->block); free(w);
        return odin_fail(ODIN_NO_MEMORY, "cannot allocate %.1f MiB of activations for B=%d, T=%d",
                         total * 4.0 / 1048576.0, B, T);
    }
    w->Bmax = B; w->Tmax = T; w->bytes = total * sizeof(float);
    float *p = w->block;
#define TAKE(dst, n) do { (dst) = p; p += (n); } while (0)
    TAKE(w->encoded, BT * C);
    for (size_t l = 0; l < L; l++) {
        layer_acts *a = &w->layers[l];
        TAKE(a->ln1, BT * C); TAKE(a->ln1_mean, BT); TAKE(a->ln1_rstd, BT); TAKE(a->qkv, BT * 3 * C);
        TAKE(a->atty, BT * C); TAKE(a->att, NH * BT * T); TAKE(a->res2, BT * C); TAKE(a->ln2, BT * C);
        TAKE(a->ln2_mean, BT); TAKE(a->ln2_rstd, BT); TAKE(a->fch, BT * 4 * C); TAKE(a->fch_gelu, BT * 4 * C);
        TAKE(a->res3, BT * C);
    }
    TAKE(w->lnf, BT * C); TAKE(w->lnf_mean, BT); TAKE(w->lnf_rstd, BT); TAKE(w->logits, BT * V);
    TAKE(w->losses, BT); TAKE(w->lse, BT);
    TAKE(w->dres, BT * C); TAKE(w->dln, BT * C); TAKE(w->datty, BT * C); TAKE(w->dqkv, BT * 3 * C);
    TAKE(w->dfch, BT * 4 * C); TAKE(w->dfch_gelu, BT * 4 * C); TAKE(w->dlogits, BT * V);
    TAKE(w->att_scratch, odin_att_scratch_floats(T, (int)(C / NH)));
#undef TAKE
    *out = w;
    return ODIN_OK;
}

void odin_gpt_ws_free(odin_gpt_ws *w) {
    if (!w) return;
    free(w->block); free(w->layers); free(w);
}

size_t odin_gpt_ws_bytes(const odin_gpt_ws *w) { return w ? w->bytes : 0; }
float *odin_gpt_ws_logits(odin_gpt_ws *w) { return w->logits; }

/* out[M,N] (+)= inp[M,K] W[N,K]^T (+ bias) */
static int mm_fwd(float *out, const float *inp, odin_weight W, const float *bias, int M, int K, int N, int acc) {
    return odin_linear(out, inp, W, bias, M, K, N, acc);
}

/* dinp = dout W ; dW (+)= dout^T inp ; dbias += colsum dout
 * dinp is written, not added to: every caller's dinp is a fresh scratch buffer, and a write
 * saves zeroing it and the GEMM reading it back. dW is added to (acc_w) or written. */
static int mm_bwd(float *dinp, float *dW, float *dbias, const float *dout, const float *inp, const float *W,
                  int M, int K, int N, int acc_w) {
    if (dinp && odin_gemm(M, K, N, dout, N, 1, W, K, 1, 0, dinp, K)) return -1;
    if (odin_gemm(N, K, M, dout, 1, N, inp, K, 1, acc_w, dW, K)) return -1;
    if (dbias)
        for (int i = 0; i < M; i++) odin_kern->axpy(dbias, 1.0f, dout + (size_t)i * N, N);
    return 0;
}

odin_status odin_gpt_forward(odin_gpt *g, odin_gpt_ws *w, const int32_t *tokens, const int32_t *targets,
                             const uint8_t *mask, int B, int T, float *loss) {
    return odin_gpt_forward_ex(g, w, tokens, NULL, targets, mask, B, T, loss);
}

/* Abacus ids must be given exactly when the model has the table, and lie in range. */
static odin_status check_ids(const odin_gpt *g, const int32_t *ids, size_t n) {
    if (g->n_abacus == 0) {
        if (ids) return odin_fail(ODIN_BAD_ARG, "ids given but the model has no Abacus embeddings (n_abacus = 0)");
        return ODIN_OK;
    }
    if (!ids) return odin_fail(ODIN_BAD_ARG, "ids must not be NULL: the model has Abacus embeddings (n_abacus = %d)", g->n_abacus);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= g->n_abacus)
            return odin_fail(ODIN_BAD_ARG, "ids[%zu] = %d is outside [0, n_abacus = %d)", i, (int)ids[i], g->n_abacus);
    return ODIN_OK;
}

/* out[n,C] += wab[ids[n]] */
static void add_abacus(const odin_gpt *g, float *out, const int32_t *ids, size_t n) {
    const float *wab = g->params + g->tensors[g->n_tensors - 1].offset;
    for (size_t i = 0; i < n; i++) odin_kern->axpy(out + i * g->C, 1.0f, wab + (size_t)ids[i] * g->C, g->C);
}

odin_status odin_gpt_forward_ex(odin_gpt *g, odin_gpt_ws *w, const int32_t *tokens, const int32_t *ids,
                                const int32_t *targets, const uint8_t *mask, int B, int T, float *loss) {
    ODIN_REQUIRE_PTR(g, "model"); ODIN_REQUIRE_PTR(w, "ws"); ODIN_REQUIRE_PTR(tokens, "tokens");
    ODIN_REQUIRE_POS(B, "B"); ODIN_REQUIRE_POS(T, "T");
    if (B > w->Bmax || T > w->Tmax)
        return odin_fail(ODIN_BAD_SHAPE, "batch B=%d, T=%d does not fit the workspace (B<=%d, T<=%d)", B, T, w->Bmax, w->Tmax);
    const size_t BT = (size_t)B * T;
    odin_status s = odin_check_tokens(tokens, BT, g->V, "tokens", NULL);
    if (s) return s;
    if (targets && (s = odin_check_tokens(targets, BT, g->V, "targets", mask))) return s;
    if ((s = check_ids(g, ids, BT))) return s;
    /* the workspace was laid out for Tmax; a smaller T reuses it with a denser stride */
    w->B = B; w->T = T;
    w->tokens = tokens; w->ids = ids; w->targets = targets; w->mask = mask; w->has_loss = 0;
    const int C = g->C, NH = g->NH, V = g->V, M = (int)BT;
    const odin_kernel_table *k = odin_kern;

    embed(g, w->encoded, tokens, NULL, B, T);
    if (ids) add_abacus(g, w->encoded, ids, BT);
    const float *res = w->encoded;
    for (int l = 0; l < g->L; l++) {
        layer_acts *a = &w->layers[l];
        float *P = g->params;
        k->layernorm_forward(a->ln1, a->ln1_mean, a->ln1_rstd, res, view(g, P, T_LN1W, l), view(g, P, T_LN1B, l), M, C, g->eps);
        if (mm_fwd(a->qkv, a->ln1, wview(g, T_QKVW, l), view(g, P, T_QKVB, l), M, C, 3 * C, 0)) goto oom;
        k->attention_forward(a->atty, a->att, w->att_scratch, a->qkv, g->alibi, B, T, C, NH);
        /* res2 = res + atty Wproj^T + b : the residual add is fused into the GEMM's accumulate */
        memcpy(a->res2, res, BT * C * sizeof(float));
        if (mm_fwd(a->res2, a->atty, wview(g, T_PROJW, l), view(g, P, T_PROJB, l), M, C, C, 1)) goto oom;
        k->layernorm_forward(a->ln2, a->ln2_mean, a->ln2_rstd, a->res2, view(g, P, T_LN2W, l), view(g, P, T_LN2B, l), M, C, g->eps);
        if (mm_fwd(a->fch, a->ln2, wview(g, T_FCW, l), view(g, P, T_FCB, l), M, C, 4 * C, 0)) goto oom;
        k->gelu_forward(a->fch_gelu, a->fch, BT * 4 * C);
        memcpy(a->res3, a->res2, BT * C * sizeof(float));
        if (mm_fwd(a->res3, a->fch_gelu, wview(g, T_FCPW, l), view(g, P, T_FCPB, l), M, 4 * C, C, 1)) goto oom;
        res = a->res3;
    }
    k->layernorm_forward(w->lnf, w->lnf_mean, w->lnf_rstd, res, view(g, g->params, T_LNFW, 0),
                         view(g, g->params, T_LNFB, 0), M, C, g->eps);
    if (mm_fwd(w->logits, w->lnf, wview(g, T_WTE, 0), NULL, M, C, V, 0)) goto oom;
    if (targets) {
        int count = 0;
        for (size_t i = 0; i < BT; i++) count += mask ? (mask[i] != 0) : 1;
        double total = k->crossentropy_forward(w->losses, w->lse, w->logits, targets, mask, M, V);
        w->count = count;
        w->has_loss = 1;
        float mean = count ? (float)(total / count) : 0.0f;
        if (loss) *loss = mean;
        if (!isfinite(mean)) return odin_fail(ODIN_NAN_DETECTED, "loss is not finite (NaN or Inf in the forward pass)");
    }
    return ODIN_OK;
oom:
    return odin_fail(ODIN_NO_MEMORY, "forward: cannot allocate the GEMM packing buffers");
}

/* The weight matrices, whose gradients the dW GEMMs write whole (the head's, tied to wte,
 * first of all: the embedding scatter adds to it afterwards). */
static int gemm_written(const odin_gpt *g, int i) {
    if (i == 0) return 1; /* wte */
    if (i < 2 || i >= 2 + g->L * PER_LAYER) return 0;
    const int kind = T_LN1W + (i - 2) % PER_LAYER;
    return kind == T_QKVW || kind == T_PROJW || kind == T_FCW || kind == T_FCPW;
}

/* overwrite = 0: grads += the gradient; 1: grads = the gradient, without first zeroing the
 * block: only the tensors no GEMM writes whole are zeroed (vectors, wpe, wab), which spares
 * the trainer's slot buffers a write pass and the dW GEMMs a read of their output. */
static odin_status gpt_backward(odin_gpt *g, odin_gpt_ws *w, float *grads, float dloss, int overwrite) {
    ODIN_REQUIRE_PTR(g, "model"); ODIN_REQUIRE_PTR(w, "ws"); ODIN_REQUIRE_PTR(grads, "grads");
    if (g->qblock) return refuse_quantized(g);
    if (!w->has_loss) return odin_fail(ODIN_STATE, "backward needs a forward pass with targets first");
    const int B = w->B, T = w->T, C = g->C, NH = g->NH, V = g->V, M = B * T;
    const size_t BT = (size_t)M;
    const odin_kernel_table *k = odin_kern;
    float *P = g->params, *G = grads;
    const int acc = !overwrite;
    if (w->count == 0) { /* nothing counted: the loss is a constant 0 */
        if (overwrite) memset(G, 0, g->n_params * sizeof(float));
        return ODIN_OK;
    }
    if (overwrite)
        for (int i = 0; i < g->n_tensors; i++)
            if (!gemm_written(g, i))
                memset(G + g->tensors[i].offset, 0, (size_t)g->tensors[i].rows * g->tensors[i].cols * sizeof(float));

    memset(w->dlogits, 0, BT * V * sizeof(float));
    k->crossentropy_backward(w->dlogits, w->logits, w->lse, w->targets, w->mask, M, V, dloss / (float)w->count);
    if (mm_bwd(w->dln, G + g->tensors[T_WTE].offset, NULL, w->dlogits, w->lnf, P + g->tensors[T_WTE].offset, M, C, V, acc)) goto oom;
    const float *res_last = g->L ? w->layers[g->L - 1].res3 : w->encoded;
    memset(w->dres, 0, BT * C * sizeof(float));
    k->layernorm_backward(w->dres, view(g, G, T_LNFW, 0), view(g, G, T_LNFB, 0), w->dln, res_last,
                          view(g, P, T_LNFW, 0), w->lnf_mean, w->lnf_rstd, M, C);
    for (int l = g->L - 1; l >= 0; l--) {
        layer_acts *a = &w->layers[l];
        const float *res_in = l ? w->layers[l - 1].res3 : w->encoded;
        /* res3 = res2 + mlp(ln2(res2)): dres flows straight through to res2 */
        if (mm_bwd(w->dfch_gelu, view(g, G, T_FCPW, l), view(g, G, T_FCPB, l), w->dres, a->fch_gelu, view(g, P, T_FCPW, l), M, 4 * C, C, acc)) goto oom;
        memset(w->dfch, 0, BT * 4 * C * sizeof(float));
        k->gelu_backward(w->dfch, a->fch, w->dfch_gelu, BT * 4 * C);
        if (mm_bwd(w->dln, view(g, G, T_FCW, l), view(g, G, T_FCB, l), w->dfch, a->ln2, view(g, P, T_FCW, l), M, C, 4 * C, acc)) goto oom;
        k->layernorm_backward(w->dres, view(g, G, T_LN2W, l), view(g, G, T_LN2B, l), w->dln, a->res2,
                              view(g, P, T_LN2W, l), a->ln2_mean, a->ln2_rstd, M, C);
        /* res2 = res_in + proj(attn(ln1(res_in))) */
        if (mm_bwd(w->datty, view(g, G, T_PROJW, l), view(g, G, T_PROJB, l), w->dres, a->atty, view(g, P, T_PROJW, l), M, C, C, acc)) goto oom;
        memset(w->dqkv, 0, BT * 3 * C * sizeof(float));
        k->attention_backward(w->dqkv, w->att_scratch, w->datty, a->qkv, a->att, B, T, C, NH);
        if (mm_bwd(w->dln, view(g, G, T_QKVW, l), view(g, G, T_QKVB, l), w->dqkv, a->ln1, view(g, P, T_QKVW, l), M, C, 3 * C, acc)) goto oom;
        k->layernorm_backward(w->dres, view(g, G, T_LN1W, l), view(g, G, T_LN1B, l), w->dln, res_in,
                              view(g, P, T_LN1W, l), a->ln1_mean, a->ln1_rstd, M, C);
    }
    k->embedding_backward(G + g->tensors[T_WTE].offset, g->no_wpe ? NULL : G + g->tensors[T_WPE].offset, w->dres,
                          w->tokens, B, T, C);
    if (w->ids) {
        float *dwab = G + g->tensors[g->n_tensors - 1].offset;
        for (size_t i = 0; i < BT; i++) k->axpy(dwab + (size_t)w->ids[i] * C, 1.0f, w->dres + i * C, C);
    }
    return ODIN_OK;
oom:
    return odin_fail(ODIN_NO_MEMORY, "backward: cannot allocate the GEMM packing buffers");
}

odin_status odin_gpt_backward(odin_gpt *g, odin_gpt_ws *w, float *grads, float dloss) {
    return gpt_backward(g, w, grads, dloss, 0);
}
odin_status odin_gpt_backward_overwrite(odin_gpt *g, odin_gpt_ws *w, float *grads, float dloss) {
    return gpt_backward(g, w, grads, dloss, 1);
}

odin_status odin_gpt_adamw_step(odin_gpt *g, float lr, float beta1, float beta2, float eps,
                                float weight_decay, float grad_clip, int t, float *grad_norm) {
    ODIN_REQUIRE_PTR(g, "model");
    odin_status st = odin_gpt_enable_training(g);
    if (st) return st;
    return odin_clip_adamw(g->tensors, g->n_tensors, g->params, g->grads, g->m, g->v, g->n_params, lr, beta1, beta2,
                           eps, weight_decay, grad_clip, t, grad_norm);
}

/* ------------------------------------------------------------------ generation */
struct odin_gpt_cache {
    int B;
    float *k, *v;                       /* [L, B, maxT, C] */
    float *x, *ln, *qkv, *atty, *fch, *fch_gelu, *scores, *logits; /* step scratch */
    float *block;
    odin_pool *pool;                    /* decoding threads (NULL: the caller's alone) */
};

odin_status odin_gpt_cache_create(odin_gpt_cache **out, const odin_gpt *g, int B) {
    ODIN_REQUIRE_PTR(out, "out"); ODIN_REQUIRE_PTR(g, "model");
    *out = NULL;
    ODIN_REQUIRE_POS(B, "B"); ODIN_REQUIRE_DIM(B, "B");
    const size_t C = (size_t)g->C, Bs = (size_t)B;
    const size_t kv = odin_size_mul(odin_size_mul(odin_size_mul((size_t)g->L, Bs), (size_t)g->maxT), C);
    const size_t terms[] = {kv, kv, odin_size_mul(Bs, 14 * C), (size_t)g->maxT, odin_size_mul(Bs, (size_t)g->V)};
    const size_t total = odin_size_sum(terms, sizeof terms / sizeof *terms);
    char args[32];
    snprintf(args, sizeof args, "B=%d", B);
    odin_status st = odin_require_floats(total, "the KV cache", args);
    if (st) return st;
    odin_gpt_cache *c = calloc(1, sizeof *c);
    if (!c) return odin_fail(ODIN_NO_MEMORY, "cannot allocate the KV cache");
    c->block = odin_zalloc(total * sizeof(float));
    if (!c->block) { free(c); return odin_fail(ODIN_NO_MEMORY, "cannot allocate %.1f MiB of KV cache", total * 4.0 / 1048576.0); }
    float *p = c->block;
    c->B = B;
    c->k = p; p += kv; c->v = p; p += kv;
    c->x = p; p += B * C; c->ln = p; p += B * C; c->atty = p; p += B * C; c->qkv = p; p += B * 3 * C;
    c->fch = p; p += B * 4 * C; c->fch_gelu = p; p += B * 4 * C; c->scores = p; p += g->maxT; c->logits = p;
    *out = c;
    return ODIN_OK;
}

void odin_gpt_cache_free(odin_gpt_cache *c) {
    if (!c) return;
    odin_pool_free(c->pool);
    free(c->block); free(c);
}

odin_status odin_gpt_cache_set_threads(odin_gpt_cache *c, int threads) {
    ODIN_REQUIRE_PTR(c, "cache");
    return odin_pool_set(&c->pool, threads);
}

odin_status odin_gpt_decode(odin_gpt *g, odin_gpt_cache *c, const int32_t *tokens, const int32_t *pos,
                            int B, float *logits) {
    return odin_gpt_decode_ex(g, c, tokens, pos, NULL, B, logits);
}

odin_status odin_gpt_decode_ex(odin_gpt *g, odin_gpt_cache *c, const int32_t *tokens, const int32_t *pos,
                               const int32_t *ids, int B, float *logits) {
    ODIN_REQUIRE_PTR(g, "model"); ODIN_REQUIRE_PTR(c, "cache"); ODIN_REQUIRE_PTR(tokens, "tokens"); ODIN_REQUIRE_PTR(pos, "pos");
    ODIN_REQUIRE_POS(B, "B");
    if (B > c->B) return odin_fail(ODIN_BAD_SHAPE, "B (%d) exceeds the cache's batch (%d)", B, c->B);
    const int C = g->C, NH = g->NH, hs = C / NH, V = g->V, maxT = g->maxT;
    for (int b = 0; b < B; b++) {
        if (tokens[b] < 0 || tokens[b] >= V)
            return odin_fail(ODIN_BAD_ARG, "tokens[%d] = %d is outside the vocabulary [0, %d)", b, (int)tokens[b], V);
        if (pos[b] < 0 || pos[b] >= maxT)
            return odin_fail(ODIN_BAD_ARG, "pos[%d] = %d is outside the context [0, %d)", b, (int)pos[b], maxT);
    }
    odin_status st = check_ids(g, ids, (size_t)B);
    if (st) return st;
    const odin_kernel_table *k = odin_kern;
    float *P = g->params;
    embed(g, c->x, tokens, pos, B, 1);
    if (ids) add_abacus(g, c->x, ids, (size_t)B);
    const float scale = 1.0f / sqrtf((float)hs);
    for (int l = 0; l < g->L; l++) {
        k->layernorm_forward(c->ln, NULL, NULL, c->x, view(g, P, T_LN1W, l), view(g, P, T_LN1B, l), B, C, g->eps);
        if (odin_pool_gemm(c->pool, c->qkv, c->ln, wview(g, T_QKVW, l), view(g, P, T_QKVB, l), B, C, 3 * C, 0)) goto oom;
        for (int b = 0; b < B; b++) {
            float *kc = c->k + (((size_t)l * c->B + b) * maxT) * C, *vc = c->v + (((size_t)l * c->B + b) * maxT) * C;
            const float *q = c->qkv + (size_t)b * 3 * C;
            memcpy(kc + (size_t)pos[b] * C, q + C, C * sizeof(float));
            memcpy(vc + (size_t)pos[b] * C, q + 2 * C, C * sizeof(float));
            float *o = c->atty + (size_t)b * C;
            memset(o, 0, C * sizeof(float));
            const int n = pos[b] + 1;
            for (int h = 0; h < NH; h++) {
                for (int t = 0; t < n; t++) {
                    float s = k->dot(q + h * hs, kc + (size_t)t * C + h * hs, hs) * scale;
                    c->scores[t] = g->alibi ? s + odin_alibi_bias(g->alibi[h], t, pos[b]) : s;
                }
                k->softmax_forward(c->scores, c->scores, 1, n); /* in place: one row of n */
                for (int t = 0; t < n; t++) k->axpy(o + h * hs, c->scores[t], vc + (size_t)t * C + h * hs, hs);
            }
        }
        if (odin_pool_gemm(c->pool, c->x, c->atty, wview(g, T_PROJW, l), view(g, P, T_PROJB, l), B, C, C, 1)) goto oom;
        k->layernorm_forward(c->ln, NULL, NULL, c->x, view(g, P, T_LN2W, l), view(g, P, T_LN2B, l), B, C, g->eps);
        if (odin_pool_gemm(c->pool, c->fch, c->ln, wview(g, T_FCW, l), view(g, P, T_FCB, l), B, C, 4 * C, 0)) goto oom;
        k->gelu_forward(c->fch_gelu, c->fch, (size_t)B * 4 * C);
        if (odin_pool_gemm(c->pool, c->x, c->fch_gelu, wview(g, T_FCPW, l), view(g, P, T_FCPB, l), B, 4 * C, C, 1)) goto oom;
    }
    k->layernorm_forward(c->ln, NULL, NULL, c->x, view(g, P, T_LNFW, 0), view(g, P, T_LNFB, 0), B, C, g->eps);
    if (odin_pool_gemm(c->pool, logits ? logits : c->logits, c->ln, wview(g, T_WTE, 0), NULL, B, C, V, 0)) goto oom;
    return ODIN_OK;
oom:
    return odin_fail(ODIN_NO_MEMORY, "decode: cannot allocate the GEMM packing buffers");
}

/* xorshift64* — small, fast, and reproducible across platforms */
static inline uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static int cmp_desc(const void *a, const void *b) {
    float x = ((const float *)a)[0], y = ((const float *)b)[0];
    if (x > y) return -1;
    if (x < y) return 1;
    int i = (int)((const float *)a)[1], j = (int)((const float *)b)[1];
    return i - j;
}

odin_status odin_sample(const float *logits, int V, float temperature, int top_k, float top_p,
                        uint64_t *rng_state, int32_t *out_token) {
    ODIN_REQUIRE_PTR(logits, "logits"); ODIN_REQUIRE_PTR(out_token, "out_token"); ODIN_REQUIRE_POS(V, "V");
    if (isnan(temperature) || isinf(temperature) || temperature < 0.0f)
        return odin_fail(ODIN_BAD_ARG, "temperature must be a finite number >= 0 (got %g)", temperature);
    /* -inf is a masked-out token; NaN anywhere, or no finite maximum, has no answer */
    int best = 0;
    for (int i = 0; i < V; i++) {
        if (isnan(logits[i])) return odin_fail(ODIN_NAN_DETECTED, "logits[%d] is NaN", i);
        if (logits[i] > logits[best]) best = i;
    }
    if (!isfinite(logits[best])) return odin_fail(ODIN_NAN_DETECTED, "logits contain +Inf, or only -Inf");
    if (temperature == 0.0f || top_k == 1) { *out_token = best; return ODIN_OK; }
    ODIN_REQUIRE_PTR(rng_state, "rng_state");
    if (!(top_p > 0.0f)) return odin_fail(ODIN_BAD_ARG, "top_p must be > 0 (got %g)", top_p);
    /* (prob, index) pairs sorted by probability: V is a vocabulary, small enough to sort per token */
    float pairs_stack[2 * 1024];
    float *pairs = V <= 1024 ? pairs_stack : malloc(sizeof(float) * 2 * (size_t)V);
    if (!pairs) return odin_fail(ODIN_NO_MEMORY, "cannot allocate sampling buffer");
    for (int i = 0; i < V; i++) {
        pairs[2 * i] = (float)exp((double)(logits[i] - logits[best]) / temperature);
        pairs[2 * i + 1] = (float)i;
    }
    qsort(pairs, (size_t)V, 2 * sizeof(float), cmp_desc);
    int keep = (top_k > 0 && top_k < V) ? top_k : V;
    double kept = 0.0;
    for (int i = 0; i < keep; i++) kept += pairs[2 * i];
    if (top_p < 1.0f) {
        double acc = 0.0;
        for (int i = 0; i < keep; i++) {
            acc += pairs[2 * i];
            if (acc >= top_p * kept) { keep = i + 1; break; }
        }
        kept = 0.0;
        for (int i = 0; i < keep; i++) kept += pairs[2 * i];
    }
    double u = (double)(rng_next(rng_state) >> 11) * (1.0 / 9007199254740992.0) * kept, acc = 0.0;
    int chosen = (int)pairs[2 * (keep - 1) + 1];
    for (int i = 0; i < keep; i++) {
        acc += pairs[2 * i];
        if (u < acc) { chosen = (int)pairs[2 * i + 1]; break; }
    }
    if (pairs != pairs_stack) free(pairs);
    *out_token = chosen;
    return ODIN_OK;
}

odin_status odin_gpt_generate_greedy(odin_gpt *g, odin_gpt_cache *c, const int32_t *prompts,
                                     const int32_t *prompt_lens, int B, int max_prompt, int max_new,
                                     int end_id, int32_t *out, int32_t *out_lens) {
    return odin_gpt_generate_greedy_ex(g, c, prompts, NULL, prompt_lens, B, max_prompt, max_new, end_id, 0, out,
                                       out_lens);
}

odin_status odin_gpt_generate_greedy_ex(odin_gpt *g, odin_gpt_cache *c, const int32_t *prompts,
                                        const int32_t *prompt_ids, const int32_t *prompt_lens, int B,
                                        int max_prompt, int max_new, int end_id, int digit_first,
                                        int32_t *out, int32_t *out_lens) {
    ODIN_REQUIRE_PTR(g, "model");
    if ((g->n_abacus > 0) != (prompt_ids != NULL))
        return odin_fail(ODIN_BAD_ARG, g->n_abacus ? "prompt_ids must not be NULL: the model has Abacus embeddings"
                                                   : "prompt_ids given but the model has no Abacus embeddings"); ODIN_REQUIRE_PTR(c, "cache"); ODIN_REQUIRE_PTR(prompts, "prompts");
    ODIN_REQUIRE_PTR(prompt_lens, "prompt_lens"); ODIN_REQUIRE_PTR(out, "out"); ODIN_REQUIRE_PTR(out_lens, "out_lens");
    ODIN_REQUIRE_POS(B, "B"); ODIN_REQUIRE_POS(max_prompt, "max_prompt"); ODIN_REQUIRE_POS(max_new, "max_new");
    if (B > c->B) return odin_fail(ODIN_BAD_SHAPE, "B (%d) exceeds the cache's batch (%d)", B, c->B);
    for (int b = 0; b < B; b++) {
        if (prompt_lens[b] < 1 || prompt_lens[b] > max_prompt)
            return odin_fail(ODIN_BAD_ARG, "prompt_lens[%d] = %d must be in [1, %d]", b, (int)prompt_lens[b], max_prompt);
        if ((long long)prompt_lens[b] + max_new - 1 > g->maxT) /* in int this wraps for a max_new near INT_MAX */
            return odin_fail(ODIN_BAD_ARG, "prompt %d (%d tokens) + max_new (%d) exceeds the context (%d)",
                             b, (int)prompt_lens[b], max_new, g->maxT);
    }
    /* Sequences advance in lock-step; each reads its prompt until it runs out, then
     * feeds back its own argmax. Rows that finished keep running harmlessly (their
     * output is frozen) so the batch stays one GEMM wide. */
    int32_t tok[256], pos[256], ids[256];
    if (B > 256) return odin_fail(ODIN_BAD_ARG, "B must be <= 256 for batched greedy decoding (got %d)", B);
    int done[256];
    for (int b = 0; b < B; b++) { out_lens[b] = 0; done[b] = 0; }
    int longest = 0;
    for (int b = 0; b < B; b++) if (prompt_lens[b] > longest) longest = prompt_lens[b];
    const int V = g->V;
    for (int step = 0; step < longest + max_new - 1; step++) {
        int active = 0;
        for (int b = 0; b < B; b++) {
            int L = prompt_lens[b];
            if (step < L) {
                tok[b] = prompts[(size_t)b * max_prompt + step];
                if (prompt_ids) ids[b] = prompt_ids[(size_t)b * max_prompt + step];
            } else {
                /* a row that finished early keeps feeding its last token: step - L can
                 * run past out_lens[b], and past max_new (out of bounds), for such a row */
                int i = step - L < out_lens[b] ? step - L : out_lens[b] - 1;
                tok[b] = out[(size_t)b * max_new + i];
                if (prompt_ids) {
                    /* generated digits count up along a run (least significant first): from 1,
                     * or, for the first token after the prompt, from the last prompt token's id
                     * + 1 (0 + 1 normally; 1 + 1 when the separator carries place 1 because each
                     * answer token carries the place it predicts, odin/abacus.py) */
                    const int32_t prev = i > 0 ? out[(size_t)b * max_new + i - 1] : prompts[(size_t)b * max_prompt + L - 1];
                    const int is_digit = tok[b] >= digit_first && tok[b] < digit_first + 10;
                    const int prev_is_digit = prev >= digit_first && prev < digit_first + 10;
                    int id = !is_digit ? 0 : i > 0 ? (prev_is_digit ? ids[b] + 1 : 1) : (prev_is_digit ? 1 : ids[b] + 1);
                    ids[b] = id < g->n_abacus ? id : g->n_abacus - 1;
                }
            }
            pos[b] = step < g->maxT ? step : g->maxT - 1;
            if (!done[b]) active = 1;
        }
        if (!active) break;
        odin_status s = odin_gpt_decode_ex(g, c, tok, pos, prompt_ids ? ids : NULL, B, c->logits);
        if (s) return s;
        for (int b = 0; b < B; b++) {
            int L = prompt_lens[b];
            if (done[b] || step < L - 1) continue;
            const int best = odin_argmax(c->logits + (size_t)b * V, V);
            out[(size_t)b * max_new + out_lens[b]] = best;
            out_lens[b]++;
            if (best == end_id || out_lens[b] >= max_new) done[b] = 1;
        }
    }
    return ODIN_OK;
}
