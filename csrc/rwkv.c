/* rwkv.c — RWKV-4 on the ODIN kernels: forward, backward, AdamW step, and the recurrent
 * (generation) form whose state does not grow with the sequence.
 *
 * On the residual stream x[B,T,C], layer l is
 *   time mixing     a = ln1(x); xk, xv, xr = tokenshift(a) with mix_k, mix_v, mix_r
 *                   k = xk Wk^T, v = xv Wv^T, r = xr Wr^T
 *                   x += (sigmoid(r) * wkv(k, v)) Wo^T
 *   channel mixing  c = ln2(x); xk, xr = tokenshift(c) with mix_k, mix_r
 *                   x += sigmoid(xr Wr^T) * (relu(xk Wk^T)^2 Wv^T)
 * with x = ln0(emb[tokens]) below the first layer and logits = ln_out(x) emb^T on top.
 *
 * Parameters live in one contiguous block (layout in odin.h). A workspace holds the
 * activations of one micro-batch, so several workspaces train the same parameters at once
 * from different threads: forward and backward write only into the workspace and the
 * caller's gradient block. Activations that are cheap to recompute (the token-shift mixes,
 * the gated products, relu^2) are not kept per layer: backward computes them again.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

enum { R_EMB, R_LN0W, R_LN0B,
       R_LN1W, R_LN1B, R_TD, R_TF, R_AMK, R_AMV, R_AMR, R_AKW, R_AVW, R_ARW, R_AOW,
       R_LN2W, R_LN2B, R_FMK, R_FMR, R_FKW, R_FRW, R_FVW,
       R_LNOW, R_LNOB, R_KINDS };
static const char *k_names[R_KINDS] = {
    "emb", "ln0_w", "ln0_b",
    "ln1_w", "ln1_b", "att_time_decay", "att_time_first", "att_time_mix_k", "att_time_mix_v",
    "att_time_mix_r", "att_key_w", "att_value_w", "att_receptance_w", "att_output_w",
    "ln2_w", "ln2_b", "ffn_time_mix_k", "ffn_time_mix_r", "ffn_key_w", "ffn_receptance_w", "ffn_value_w",
    "ln_out_w", "ln_out_b"};
#define FIRST_LAYER_KIND R_LN1W
#define PER_LAYER (R_LNOW - R_LN1W) /* 18 */


struct odin_rwkv {
    int V, L, C, F;
    float eps;
    size_t n_params;
    int n_tensors;
    odin_tensor_view *tensors;
    float *params, *grads, *m, *v;
    uint8_t *qblock;  /* the quantized tensors (NULL: none) */
    size_t qbytes;
    int quant_type;   /* the first quantized tensor's type, for messages (0: none) */
};

static inline int tensor_index(const odin_rwkv *r, int kind, int l) {
    return kind < FIRST_LAYER_KIND ? kind
         : kind < R_LNOW ? FIRST_LAYER_KIND + l * PER_LAYER + (kind - FIRST_LAYER_KIND)
                         : FIRST_LAYER_KIND + r->L * PER_LAYER + (kind - R_LNOW);
}
/* Pointer to float32 tensor `kind` of layer `l` inside a block with the parameter layout. */
static inline float *view(const odin_rwkv *r, float *block, int kind, int l) {
    return block + r->tensors[tensor_index(r, kind, l)].offset;
}
/* A weight matrix of the model, float32 or quantized. */
static inline odin_weight wview(const odin_rwkv *r, int kind, int l) {
    const odin_tensor_view *t = &r->tensors[tensor_index(r, kind, l)];
    if (t->type == ODIN_TYPE_F32) return odin_weight_f32(r->params + t->offset);
    odin_weight w = {NULL, r->qblock + t->offset, t->type, odin_quant_row_bytes(t->type, t->cols)};
    return w;
}
/* out[n, C] = emb[tokens[n]] whatever emb's type */
static void embed(const odin_rwkv *r, float *out, const int32_t *tokens, int n) {
    const odin_weight emb = wview(r, R_EMB, 0);
    if (emb.type == ODIN_TYPE_F32) {
        odin_kern->embedding_forward(out, tokens, emb.f, NULL, 1, n, r->C);
        return;
    }
    for (int i = 0; i < n; i++)
        odin_dequantize_row(emb.type, emb.q + (size_t)tokens[i] * emb.row_bytes, out + (size_t)i * r->C, r->C);
}
static odin_status refuse_quantized(const odin_rwkv *r) {
    return odin_fail(ODIN_BAD_ARG, "this model's weights are quantized (%s): it answers but cannot train; train the "
                     "float32 model it was made from", odin_qtype_name(r->quant_type));
}

odin_status odin_rwkv_create(odin_rwkv **out, int vocab, int n_layer, int d_model, int d_ffn, float ln_eps) {
    return odin_rwkv_create_q(out, vocab, n_layer, d_model, d_ffn, ln_eps, ODIN_TYPE_F32, ODIN_TYPE_F32);
}

odin_status odin_rwkv_create_q(odin_rwkv **out, int vocab, int n_layer, int d_model, int d_ffn, float ln_eps,
                               int matrix_type, int embed_type) {
    ODIN_REQUIRE_PTR(out, "out");
    *out = NULL;
    ODIN_REQUIRE_POS(vocab, "vocab"); ODIN_REQUIRE_POS(n_layer, "n_layer");
    ODIN_REQUIRE_POS(d_model, "d_model"); ODIN_REQUIRE_POS(d_ffn, "d_ffn");
    ODIN_REQUIRE_DIM(vocab, "vocab"); ODIN_REQUIRE_DIM(d_model, "d_model"); ODIN_REQUIRE_DIM(d_ffn, "d_ffn");
    /* the tensor table has 3 + 18 L + 2 entries, counted in int */
    if (n_layer > (ODIN_DIM_MAX - 5) / PER_LAYER)
        return odin_fail(ODIN_BAD_ARG, "n_layer is too large (%d > %d)", n_layer, (ODIN_DIM_MAX - 5) / PER_LAYER);
    if (!(ln_eps > 0.0f) || !isfinite(ln_eps))
        return odin_fail(ODIN_BAD_ARG, "ln_eps must be a finite number > 0 (got %g)", ln_eps);
    odin_status st = odin_check_quant_types(matrix_type, embed_type);
    if (st) return st;
    if ((matrix_type || embed_type) && d_model % ODIN_QK)
        return odin_fail(ODIN_BAD_SHAPE, "d_model (%d) must be a multiple of %d for %s weights: a block holds %d weights "
                         "of a row", d_model, ODIN_QK, odin_qtype_name(matrix_type ? matrix_type : embed_type), ODIN_QK);
    if (matrix_type && d_ffn % ODIN_QK)
        return odin_fail(ODIN_BAD_SHAPE, "d_ffn (%d) must be a multiple of %d for %s weights: a block holds %d weights "
                         "of a row", d_ffn, ODIN_QK, odin_qtype_name(matrix_type), ODIN_QK);
    const int C = d_model, F = d_ffn;
    const int rows[R_KINDS] = {vocab, C, C, C, C, C, C, C, C, C, C, C, C, C, C, C, C, C, F, C, C, C, C};
    const int cols[R_KINDS] = {C, 1, 1, 1, 1, 1, 1, 1, 1, 1, C, C, C, C, 1, 1, 1, 1, C, C, F, 1, 1};
    /* count the parameters before allocating anything for them */
    size_t per_layer = 0, n_params = 0;
    for (int kind = 0; kind < R_KINDS; kind++) {
        const size_t n = odin_size_mul((size_t)rows[kind], (size_t)cols[kind]);
        if (kind >= FIRST_LAYER_KIND && kind < R_LNOW) per_layer = odin_size_add(per_layer, n);
        else n_params = odin_size_add(n_params, n);
    }
    n_params = odin_size_add(n_params, odin_size_mul((size_t)n_layer, per_layer));
    char args[128];
    snprintf(args, sizeof args, "vocab=%d, n_layer=%d, d_model=%d, d_ffn=%d", vocab, n_layer, d_model, d_ffn);
    st = odin_require_floats(n_params, "the model's parameters", args);
    if (st) return st;
    odin_rwkv *r = calloc(1, sizeof *r);
    if (!r) return odin_fail(ODIN_NO_MEMORY, "cannot allocate the model");
    r->V = vocab; r->L = n_layer; r->C = d_model; r->F = d_ffn; r->eps = ln_eps;
    r->n_tensors = FIRST_LAYER_KIND + n_layer * PER_LAYER + 2;
    r->tensors = calloc((size_t)r->n_tensors, sizeof *r->tensors);
    if (!r->tensors) { free(r); return odin_fail(ODIN_NO_MEMORY, "cannot allocate the tensor table"); }
    size_t off = 0, qoff = 0;
    int idx = 0;
    int types[R_KINDS] = {0};
    types[R_EMB] = embed_type;
    types[R_AKW] = types[R_AVW] = types[R_ARW] = types[R_AOW] = matrix_type;
    types[R_FKW] = types[R_FRW] = types[R_FVW] = matrix_type;
    r->quant_type = matrix_type ? matrix_type : embed_type;
#define ADD(kind) odin_tensor_append_typed(r->tensors, &idx, &off, &qoff, k_names[kind], rows[kind], cols[kind], types[kind])
    for (int kind = R_EMB; kind < FIRST_LAYER_KIND; kind++) ADD(kind);
    for (int l = 0; l < n_layer; l++)
        for (int kind = FIRST_LAYER_KIND; kind < R_LNOW; kind++) ADD(kind);
    ADD(R_LNOW);
    ADD(R_LNOB);
#undef ADD
    r->n_params = off;
    r->qbytes = qoff;
    st = odin_alloc_params(off, &r->params);
    if (!st && qoff && !(r->qblock = odin_zalloc(qoff)))
        st = odin_fail(ODIN_NO_MEMORY, "cannot allocate %.1f MiB of quantized weights", qoff / 1048576.0);
    if (st) {
        odin_rwkv_free(r);
        return st;
    }
    *out = r;
    return ODIN_OK;
}

void odin_rwkv_free(odin_rwkv *r) {
    if (!r) return;
    free(r->params); free(r->grads); free(r->m); free(r->v); free(r->tensors); free(r->qblock);
    free(r);
}

odin_status odin_rwkv_tensor_type(const odin_rwkv *r, int index, int *type) {
    ODIN_REQUIRE_PTR(r, "model"); ODIN_REQUIRE_PTR(type, "type");
    if (index < 0 || index >= r->n_tensors)
        return odin_fail(ODIN_BAD_ARG, "tensor index %d is outside [0, %d)", index, r->n_tensors);
    *type = r->tensors[index].type;
    return ODIN_OK;
}
uint8_t *odin_rwkv_qblock(odin_rwkv *r) { return r ? r->qblock : NULL; }
size_t odin_rwkv_qbytes(const odin_rwkv *r) { return r ? r->qbytes : 0; }

size_t odin_rwkv_num_params(const odin_rwkv *r) { return r ? r->n_params : 0; }
int odin_rwkv_num_tensors(const odin_rwkv *r) { return r ? r->n_tensors : 0; }
float *odin_rwkv_params(odin_rwkv *r) { return r ? r->params : NULL; }
odin_status odin_rwkv_enable_training(odin_rwkv *r) {
    ODIN_REQUIRE_PTR(r, "model");
    if (r->qblock) return refuse_quantized(r);
    return odin_alloc_training_blocks(r->n_params, &r->grads, &r->m, &r->v);
}
float *odin_rwkv_grads(odin_rwkv *r) { return r && !odin_rwkv_enable_training(r) ? r->grads : NULL; }
float *odin_rwkv_adam_m(odin_rwkv *r) { return r && !odin_rwkv_enable_training(r) ? r->m : NULL; }
float *odin_rwkv_adam_v(odin_rwkv *r) { return r && !odin_rwkv_enable_training(r) ? r->v : NULL; }

odin_status odin_rwkv_tensor_info(const odin_rwkv *r, int index, const char **name, size_t *offset,
                                  int *rows, int *cols) {
    ODIN_REQUIRE_PTR(r, "model");
    return odin_tensor_info(r->tensors, r->n_tensors, index, name, offset, rows, cols);
}

/* ------------------------------------------------------------------ workspace */
typedef struct {
    float *ln1, *ln1_mean, *ln1_rstd, *k, *v, *r, *wkv, *res2; /* time mixing; r before its sigmoid */
    float *ln2, *ln2_mean, *ln2_rstd, *fk, *fkv, *fr, *res3;   /* channel mixing; fk before relu^2,
                                                                  fr before its sigmoid */
} layer_acts;

struct odin_rwkv_ws {
    int Bmax, Tmax, B, T;
    size_t bytes;
    float *block;
    float *emb, *x0, *x0_mean, *x0_rstd;   /* emb[tokens] [B,T,C] and ln0 of it */
    layer_acts *layers;                    /* L of them */
    float *lno, *lno_mean, *lno_rstd, *logits, *losses, *lse;
    /* shared by all layers, forward and backward: token-shift mixes, gated product, relu^2 */
    float *mk, *mv, *mr, *gated, *fkk;
    /* backward scratch (the kernels accumulate: zeroed per use) */
    float *dres, *dln, *dmk, *dmv, *dmr, *dk, *dv, *dr, *dwkv, *dgated, *dfkk, *dlogits, *wkv_scratch;
    const int32_t *tokens;                 /* inputs of the last forward (caller-owned, must outlive backward) */
    const int32_t *targets;
    const uint8_t *mask;
    int count;                             /* counted tokens of the last forward */
    int has_loss;
};

odin_status odin_rwkv_ws_create(odin_rwkv_ws **out, const odin_rwkv *r, int B, int T) {
    ODIN_REQUIRE_PTR(out, "out"); ODIN_REQUIRE_PTR(r, "model");
    *out = NULL;
    ODIN_REQUIRE_POS(B, "B"); ODIN_REQUIRE_POS(T, "T");
    ODIN_REQUIRE_DIM((long long)B * T, "B * T");
    const size_t BT = (size_t)B * T, C = (size_t)r->C, F = (size_t)r->F, V = (size_t)r->V, L = (size_t)r->L;
    /* per token and layer: ln1, k, v, r, wkv, res2, ln2, fkv, fr, res3 = 10 C, fk = F, 2 (mean, rstd) pairs */
    const size_t per_layer = odin_size_mul(BT, 10 * C + F + 4);
    const size_t terms[] = {odin_size_mul(BT, 2 * C), 2 * BT, odin_size_mul(L, per_layer), odin_size_mul(BT, C),
                            2 * BT, odin_size_mul(BT, V), 2 * BT,                          /* forward */
                            odin_size_mul(BT, 4 * C + F),                                  /* shared */
                            odin_size_mul(BT, 10 * C + F), odin_size_mul(BT, V),
                            odin_size_mul(3 * (size_t)T, C)};                              /* backward */
    const size_t total = odin_size_sum(terms, sizeof terms / sizeof *terms);
    char args[64];
    snprintf(args, sizeof args, "B=%d, T=%d", B, T);
    odin_status st = odin_require_floats(total, "the workspace", args);
    if (st) return st;
    odin_rwkv_ws *w = calloc(1, sizeof *w);
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
    TAKE(w->emb, BT * C); TAKE(w->x0, BT * C); TAKE(w->x0_mean, BT); TAKE(w->x0_rstd, BT);
    for (size_t l = 0; l < L; l++) {
        layer_acts *a = &w->layers[l];
        TAKE(a->ln1, BT * C); TAKE(a->ln1_mean, BT); TAKE(a->ln1_rstd, BT);
        TAKE(a->k, BT * C); TAKE(a->v, BT * C); TAKE(a->r, BT * C); TAKE(a->wkv, BT * C); TAKE(a->res2, BT * C);
        TAKE(a->ln2, BT * C); TAKE(a->ln2_mean, BT); TAKE(a->ln2_rstd, BT);
        TAKE(a->fk, BT * F); TAKE(a->fkv, BT * C); TAKE(a->fr, BT * C); TAKE(a->res3, BT * C);
    }
    TAKE(w->lno, BT * C); TAKE(w->lno_mean, BT); TAKE(w->lno_rstd, BT); TAKE(w->logits, BT * V);
    TAKE(w->losses, BT); TAKE(w->lse, BT);
    TAKE(w->mk, BT * C); TAKE(w->mv, BT * C); TAKE(w->mr, BT * C); TAKE(w->gated, BT * C); TAKE(w->fkk, BT * F);
    TAKE(w->dres, BT * C); TAKE(w->dln, BT * C); TAKE(w->dmk, BT * C); TAKE(w->dmv, BT * C); TAKE(w->dmr, BT * C);
    TAKE(w->dk, BT * C); TAKE(w->dv, BT * C); TAKE(w->dr, BT * C); TAKE(w->dwkv, BT * C); TAKE(w->dgated, BT * C);
    TAKE(w->dfkk, BT * F); TAKE(w->dlogits, BT * V); TAKE(w->wkv_scratch, 3 * (size_t)T * C);
#undef TAKE
    *out = w;
    return ODIN_OK;
}

void odin_rwkv_ws_free(odin_rwkv_ws *w) {
    if (!w) return;
    free(w->block); free(w->layers); free(w);
}

size_t odin_rwkv_ws_bytes(const odin_rwkv_ws *w) { return w ? w->bytes : 0; }
float *odin_rwkv_ws_logits(odin_rwkv_ws *w) { return w ? w->logits : NULL; }

/* out[M,N] (+)= inp[M,K] W[N,K]^T */
static int mm_fwd(float *out, const float *inp, odin_weight W, int M, int K, int N, int acc) {
    return odin_linear(out, inp, W, NULL, M, K, N, acc);
}

/* dinp[M,K] = dout W ; dW[N,K] (+)= dout^T inp (dinp written: every caller's is fresh scratch) */
static int mm_bwd(float *dinp, float *dW, const float *dout, const float *inp, const float *W, int M, int K, int N,
                  int acc_w) {
    if (dinp && odin_gemm(M, K, N, dout, N, 1, W, K, 1, 0, dinp, K)) return -1;
    return odin_gemm(N, K, M, dout, 1, N, inp, K, 1, acc_w, dW, K);
}

odin_status odin_rwkv_forward(odin_rwkv *r, odin_rwkv_ws *w, const int32_t *tokens, const int32_t *targets,
                              const uint8_t *mask, int B, int T, float *loss) {
    ODIN_REQUIRE_PTR(r, "model"); ODIN_REQUIRE_PTR(w, "ws"); ODIN_REQUIRE_PTR(tokens, "tokens");
    ODIN_REQUIRE_POS(B, "B"); ODIN_REQUIRE_POS(T, "T");
    if (B > w->Bmax || T > w->Tmax)
        return odin_fail(ODIN_BAD_SHAPE, "batch B=%d, T=%d does not fit the workspace (B<=%d, T<=%d)", B, T, w->Bmax, w->Tmax);
    const size_t BT = (size_t)B * T;
    odin_status s = odin_check_tokens(tokens, BT, r->V, "tokens", NULL);
    if (s) return s;
    if (targets && (s = odin_check_tokens(targets, BT, r->V, "targets", mask))) return s;
    /* the workspace was laid out for Tmax; a smaller batch reuses it with a denser stride */
    w->B = B; w->T = T;
    w->tokens = tokens; w->targets = targets; w->mask = mask; w->has_loss = 0;
    const int C = r->C, F = r->F, V = r->V, M = (int)BT;
    const odin_kernel_table *k = odin_kern;
    float *P = r->params;

    embed(r, w->emb, tokens, M);
    k->layernorm_forward(w->x0, w->x0_mean, w->x0_rstd, w->emb, view(r, P, R_LN0W, 0), view(r, P, R_LN0B, 0), M, C, r->eps);
    const float *res = w->x0;
    for (int l = 0; l < r->L; l++) {
        layer_acts *a = &w->layers[l];
        /* time mixing */
        k->layernorm_forward(a->ln1, a->ln1_mean, a->ln1_rstd, res, view(r, P, R_LN1W, l), view(r, P, R_LN1B, l), M, C, r->eps);
        k->tokenshift_forward(w->mk, a->ln1, view(r, P, R_AMK, l), NULL, B, T, C);
        k->tokenshift_forward(w->mv, a->ln1, view(r, P, R_AMV, l), NULL, B, T, C);
        k->tokenshift_forward(w->mr, a->ln1, view(r, P, R_AMR, l), NULL, B, T, C);
        if (mm_fwd(a->k, w->mk, wview(r, R_AKW, l), M, C, C, 0)) goto oom;
        if (mm_fwd(a->v, w->mv, wview(r, R_AVW, l), M, C, C, 0)) goto oom;
        if (mm_fwd(a->r, w->mr, wview(r, R_ARW, l), M, C, C, 0)) goto oom;
        k->wkv_forward(a->wkv, NULL, view(r, P, R_TD, l), view(r, P, R_TF, l), a->k, a->v, B, T, C);
        memset(w->gated, 0, BT * C * sizeof(float));
        k->sigmoid_gate_forward(w->gated, a->r, a->wkv, BT * C);
        memcpy(a->res2, res, BT * C * sizeof(float)); /* the residual add, fused into the GEMM's accumulate */
        if (mm_fwd(a->res2, w->gated, wview(r, R_AOW, l), M, C, C, 1)) goto oom;
        /* channel mixing */
        k->layernorm_forward(a->ln2, a->ln2_mean, a->ln2_rstd, a->res2, view(r, P, R_LN2W, l), view(r, P, R_LN2B, l), M, C, r->eps);
        k->tokenshift_forward(w->mk, a->ln2, view(r, P, R_FMK, l), NULL, B, T, C);
        k->tokenshift_forward(w->mr, a->ln2, view(r, P, R_FMR, l), NULL, B, T, C);
        if (mm_fwd(a->fk, w->mk, wview(r, R_FKW, l), M, C, F, 0)) goto oom;
        k->sqrelu_forward(w->fkk, a->fk, BT * F);
        if (mm_fwd(a->fkv, w->fkk, wview(r, R_FVW, l), M, F, C, 0)) goto oom;
        if (mm_fwd(a->fr, w->mr, wview(r, R_FRW, l), M, C, C, 0)) goto oom;
        memcpy(a->res3, a->res2, BT * C * sizeof(float));
        k->sigmoid_gate_forward(a->res3, a->fr, a->fkv, BT * C);
        res = a->res3;
    }
    k->layernorm_forward(w->lno, w->lno_mean, w->lno_rstd, res, view(r, P, R_LNOW, 0), view(r, P, R_LNOB, 0), M, C, r->eps);
    if (mm_fwd(w->logits, w->lno, wview(r, R_EMB, 0), M, C, V, 0)) goto oom;
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

#define ZERO(p, n) memset((p), 0, (size_t)(n) * sizeof(float))

/* The weight matrices, whose gradients the dW GEMMs write whole (emb's first, by the tied
 * head: the embedding scatter adds to it at the end). */
static int gemm_written(const odin_rwkv *r, int i) {
    if (i == R_EMB) return 1;
    if (i < FIRST_LAYER_KIND || i >= FIRST_LAYER_KIND + r->L * PER_LAYER) return 0;
    const int kind = FIRST_LAYER_KIND + (i - FIRST_LAYER_KIND) % PER_LAYER;
    return kind == R_AKW || kind == R_AVW || kind == R_ARW || kind == R_AOW || kind == R_FKW || kind == R_FRW ||
           kind == R_FVW;
}

/* overwrite = 0: grads += the gradient; 1: grads = the gradient (as gpt.c: only the tensors
 * no GEMM writes whole are zeroed first). */
static odin_status rwkv_backward(odin_rwkv *r, odin_rwkv_ws *w, float *grads, float dloss, int overwrite) {
    ODIN_REQUIRE_PTR(r, "model"); ODIN_REQUIRE_PTR(w, "ws"); ODIN_REQUIRE_PTR(grads, "grads");
    if (r->qblock) return refuse_quantized(r);
    if (!w->has_loss) return odin_fail(ODIN_STATE, "backward needs a forward pass with targets first");
    const int B = w->B, T = w->T, C = r->C, F = r->F, V = r->V, M = B * T;
    const size_t BT = (size_t)M;
    const odin_kernel_table *k = odin_kern;
    float *P = r->params, *G = grads;
    const int acc = !overwrite;
    if (w->count == 0) { /* nothing counted: the loss is a constant 0 */
        if (overwrite) ZERO(G, r->n_params);
        return ODIN_OK;
    }
    if (overwrite)
        for (int i = 0; i < r->n_tensors; i++)
            if (!gemm_written(r, i)) ZERO(G + r->tensors[i].offset, (size_t)r->tensors[i].rows * r->tensors[i].cols);

    /* head (tied to emb) and ln_out */
    ZERO(w->dlogits, BT * V);
    k->crossentropy_backward(w->dlogits, w->logits, w->lse, w->targets, w->mask, M, V, dloss / (float)w->count);
    if (mm_bwd(w->dln, view(r, G, R_EMB, 0), w->dlogits, w->lno, view(r, P, R_EMB, 0), M, C, V, acc)) goto oom;
    const float *res_last = w->layers[r->L - 1].res3;
    ZERO(w->dres, BT * C);
    k->layernorm_backward(w->dres, view(r, G, R_LNOW, 0), view(r, G, R_LNOB, 0), w->dln, res_last,
                          view(r, P, R_LNOW, 0), w->lno_mean, w->lno_rstd, M, C);
    for (int l = r->L - 1; l >= 0; l--) {
        layer_acts *a = &w->layers[l];
        const float *res_in = l ? w->layers[l - 1].res3 : w->x0;
        /* channel mixing: res3 = res2 + sigmoid(fr) * fkv; dres flows straight through to res2 */
        ZERO(w->dr, BT * C); ZERO(w->dgated, BT * C);
        k->sigmoid_gate_backward(w->dr, w->dgated, w->dres, a->fr, a->fkv, BT * C);
        k->tokenshift_forward(w->mk, a->ln2, view(r, P, R_FMK, l), NULL, B, T, C);
        k->tokenshift_forward(w->mr, a->ln2, view(r, P, R_FMR, l), NULL, B, T, C);
        k->sqrelu_forward(w->fkk, a->fk, BT * F);
        if (mm_bwd(w->dfkk, view(r, G, R_FVW, l), w->dgated, w->fkk, view(r, P, R_FVW, l), M, F, C, acc)) goto oom;
        ZERO(w->fkk, BT * F); /* relu^2 is used up: its buffer takes d(fk) */
        k->sqrelu_backward(w->fkk, a->fk, w->dfkk, BT * F);
        if (mm_bwd(w->dmk, view(r, G, R_FKW, l), w->fkk, w->mk, view(r, P, R_FKW, l), M, C, F, acc)) goto oom;
        if (mm_bwd(w->dmr, view(r, G, R_FRW, l), w->dr, w->mr, view(r, P, R_FRW, l), M, C, C, acc)) goto oom;
        ZERO(w->dln, BT * C);
        k->tokenshift_backward(w->dln, view(r, G, R_FMK, l), w->dmk, a->ln2, view(r, P, R_FMK, l), B, T, C);
        k->tokenshift_backward(w->dln, view(r, G, R_FMR, l), w->dmr, a->ln2, view(r, P, R_FMR, l), B, T, C);
        k->layernorm_backward(w->dres, view(r, G, R_LN2W, l), view(r, G, R_LN2B, l), w->dln, a->res2,
                              view(r, P, R_LN2W, l), a->ln2_mean, a->ln2_rstd, M, C);
        /* time mixing: res2 = res_in + (sigmoid(r) * wkv) Wo^T */
        ZERO(w->gated, BT * C);
        k->sigmoid_gate_forward(w->gated, a->r, a->wkv, BT * C);
        if (mm_bwd(w->dgated, view(r, G, R_AOW, l), w->dres, w->gated, view(r, P, R_AOW, l), M, C, C, acc)) goto oom;
        ZERO(w->dr, BT * C); ZERO(w->dwkv, BT * C);
        k->sigmoid_gate_backward(w->dr, w->dwkv, w->dgated, a->r, a->wkv, BT * C);
        ZERO(w->dk, BT * C); ZERO(w->dv, BT * C);
        k->wkv_backward(view(r, G, R_TD, l), view(r, G, R_TF, l), w->dk, w->dv, w->wkv_scratch,
                        view(r, P, R_TD, l), view(r, P, R_TF, l), a->k, a->v, w->dwkv, B, T, C);
        k->tokenshift_forward(w->mk, a->ln1, view(r, P, R_AMK, l), NULL, B, T, C);
        k->tokenshift_forward(w->mv, a->ln1, view(r, P, R_AMV, l), NULL, B, T, C);
        k->tokenshift_forward(w->mr, a->ln1, view(r, P, R_AMR, l), NULL, B, T, C);
        if (mm_bwd(w->dmk, view(r, G, R_AKW, l), w->dk, w->mk, view(r, P, R_AKW, l), M, C, C, acc)) goto oom;
        if (mm_bwd(w->dmv, view(r, G, R_AVW, l), w->dv, w->mv, view(r, P, R_AVW, l), M, C, C, acc)) goto oom;
        if (mm_bwd(w->dmr, view(r, G, R_ARW, l), w->dr, w->mr, view(r, P, R_ARW, l), M, C, C, acc)) goto oom;
        ZERO(w->dln, BT * C);
        k->tokenshift_backward(w->dln, view(r, G, R_AMK, l), w->dmk, a->ln1, view(r, P, R_AMK, l), B, T, C);
        k->tokenshift_backward(w->dln, view(r, G, R_AMV, l), w->dmv, a->ln1, view(r, P, R_AMV, l), B, T, C);
        k->tokenshift_backward(w->dln, view(r, G, R_AMR, l), w->dmr, a->ln1, view(r, P, R_AMR, l), B, T, C);
        k->layernorm_backward(w->dres, view(r, G, R_LN1W, l), view(r, G, R_LN1B, l), w->dln, res_in,
                              view(r, P, R_LN1W, l), a->ln1_mean, a->ln1_rstd, M, C);
    }
    /* ln0 and the embedding */
    ZERO(w->dln, BT * C);
    k->layernorm_backward(w->dln, view(r, G, R_LN0W, 0), view(r, G, R_LN0B, 0), w->dres, w->emb,
                          view(r, P, R_LN0W, 0), w->x0_mean, w->x0_rstd, M, C);
    k->embedding_backward(view(r, G, R_EMB, 0), NULL, w->dln, w->tokens, B, T, C);
    return ODIN_OK;
oom:
    return odin_fail(ODIN_NO_MEMORY, "backward: cannot allocate the GEMM packing buffers");
}

odin_status odin_rwkv_backward(odin_rwkv *r, odin_rwkv_ws *w, float *grads, float dloss) {
    return rwkv_backward(r, w, grads, dloss, 0);
}
odin_status odin_rwkv_backward_overwrite(odin_rwkv *r, odin_rwkv_ws *w, float *grads, float dloss) {
    return rwkv_backward(r, w, grads, dloss, 1);
}

/* weight decay on matrices only: not on LayerNorms, decays, bonuses or mix vectors */
odin_status odin_rwkv_adamw_step(odin_rwkv *r, float lr, float beta1, float beta2, float eps,
                                 float weight_decay, float grad_clip, int t, float *grad_norm) {
    ODIN_REQUIRE_PTR(r, "model");
    odin_status st = odin_rwkv_enable_training(r);
    if (st) return st;
    return odin_clip_adamw(r->tensors, r->n_tensors, r->params, r->grads, r->m, r->v, r->n_params, lr, beta1, beta2,
                           eps, weight_decay, grad_clip, t, grad_norm);
}

/* ------------------------------------------------------------------ recurrent form */
struct odin_rwkv_state {
    int B;
    int L, C, F, V;  /* the model shape it was made for */
    size_t state_floats;
    float *state;   /* per layer: att_shift[B,C], ffn_shift[B,C], wkv[B,3,C] (aa, bb, pp) */
    float *x, *ln, *mk, *mv, *mr, *k, *v, *r, *wkv, *gated, *fk, *fkk, *fkv, *fr, *logits; /* step scratch */
    int32_t *tok;   /* greedy decoding: the token each sequence feeds next, and whether it is done */
    int32_t *done;
    float *block;
    odin_pool *pool;   /* decoding threads (NULL: the caller's alone) */
};

#define LAYER_STATE(st, l) ((st)->state + (size_t)(l) * 5 * (st)->B * (st)->C)

odin_status odin_rwkv_state_create(odin_rwkv_state **out, const odin_rwkv *r, int B) {
    ODIN_REQUIRE_PTR(out, "out"); ODIN_REQUIRE_PTR(r, "model");
    *out = NULL;
    ODIN_REQUIRE_POS(B, "B"); ODIN_REQUIRE_DIM(B, "B");
    const size_t C = (size_t)r->C, F = (size_t)r->F, Bs = (size_t)B;
    const size_t n_state = odin_size_mul(odin_size_mul((size_t)r->L * 5, Bs), C);
    const size_t terms[] = {n_state, odin_size_mul(Bs, 12 * C + 2 * F + (size_t)r->V), 2 * Bs};
    const size_t total = odin_size_sum(terms, sizeof terms / sizeof *terms);
    char args[32];
    snprintf(args, sizeof args, "B=%d", B);
    odin_status st = odin_require_floats(total, "the recurrent state", args);
    if (st) return st;
    odin_rwkv_state *s = calloc(1, sizeof *s);
    if (!s) return odin_fail(ODIN_NO_MEMORY, "cannot allocate the recurrent state");
    s->block = odin_zalloc(total * sizeof(float));
    if (!s->block) { free(s); return odin_fail(ODIN_NO_MEMORY, "cannot allocate %.1f MiB of recurrent state", total * 4.0 / 1048576.0); }
    s->B = B; s->L = r->L; s->C = r->C; s->F = r->F; s->V = r->V; s->state_floats = n_state;
    float *p = s->block;
#define TAKE(dst, n) do { (dst) = p; p += (n); } while (0)
    TAKE(s->state, n_state);
    TAKE(s->x, B * C); TAKE(s->ln, B * C); TAKE(s->mk, B * C); TAKE(s->mv, B * C); TAKE(s->mr, B * C);
    TAKE(s->k, B * C); TAKE(s->v, B * C); TAKE(s->r, B * C); TAKE(s->wkv, B * C); TAKE(s->gated, B * C);
    TAKE(s->fkv, B * C); TAKE(s->fr, B * C); TAKE(s->fk, B * F); TAKE(s->fkk, B * F); TAKE(s->logits, B * (size_t)r->V);
#undef TAKE
    s->tok = (int32_t *)p;
    s->done = s->tok + B;
    odin_rwkv_state_reset(s, -1);
    *out = s;
    return ODIN_OK;
}

void odin_rwkv_state_free(odin_rwkv_state *s) {
    if (!s) return;
    odin_pool_free(s->pool);
    free(s->block); free(s);
}

odin_status odin_rwkv_state_set_threads(odin_rwkv_state *s, int threads) {
    ODIN_REQUIRE_PTR(s, "state");
    return odin_pool_set(&s->pool, threads);
}

/* The recurrent state proper (shift vectors and WKV accumulators), not the step scratch. */
size_t odin_rwkv_state_bytes(const odin_rwkv_state *s) { return s ? s->state_floats * sizeof(float) : 0; }

odin_status odin_rwkv_state_reset(odin_rwkv_state *s, int b) {
    ODIN_REQUIRE_PTR(s, "state");
    if (b >= s->B) return odin_fail(ODIN_BAD_ARG, "b (%d) must be < the state's batch (%d), or < 0 for all", b, s->B);
    const int lo = b < 0 ? 0 : b, hi = b < 0 ? s->B : b + 1, C = s->C, Bn = s->B;
    for (int l = 0; l < s->L; l++) {
        float *ls = LAYER_STATE(s, l);
        for (int i = lo; i < hi; i++) {
            memset(ls + (size_t)i * C, 0, C * sizeof(float));                     /* att shift */
            memset(ls + ((size_t)Bn + i) * C, 0, C * sizeof(float));              /* ffn shift */
            float *wkv = ls + 2 * (size_t)Bn * C + (size_t)i * 3 * C;
            memset(wkv, 0, 2 * C * sizeof(float));                                /* aa, bb */
            for (int c = 0; c < C; c++) wkv[2 * C + c] = ODIN_WKV_EMPTY;               /* pp: no term yet */
        }
    }
    return ODIN_OK;
}

odin_status odin_rwkv_decode(odin_rwkv *r, odin_rwkv_state *s, const int32_t *tokens, int B, float *logits) {
    ODIN_REQUIRE_PTR(r, "model"); ODIN_REQUIRE_PTR(s, "state"); ODIN_REQUIRE_PTR(tokens, "tokens");
    ODIN_REQUIRE_POS(B, "B");
    if (B > s->B) return odin_fail(ODIN_BAD_SHAPE, "B (%d) exceeds the state's batch (%d)", B, s->B);
    if (s->L != r->L || s->C != r->C || s->F != r->F || s->V != r->V)
        return odin_fail(ODIN_BAD_ARG, "state was created for another model shape (n_layer %d, d_model %d, d_ffn %d, "
                         "vocab %d; the model has %d, %d, %d, %d)", s->L, s->C, s->F, s->V, r->L, r->C, r->F, r->V);
    odin_status st = odin_check_tokens(tokens, (size_t)B, r->V, "tokens", NULL);
    if (st) return st;
    const int C = r->C, F = r->F, V = r->V, Bn = s->B;
    const size_t BC = (size_t)B * C;
    const odin_kernel_table *k = odin_kern;
    float *P = r->params;
    embed(r, s->ln, tokens, B);
    k->layernorm_forward(s->x, NULL, NULL, s->ln, view(r, P, R_LN0W, 0), view(r, P, R_LN0B, 0), B, C, r->eps);
    for (int l = 0; l < r->L; l++) {
        float *ls = LAYER_STATE(s, l), *att_shift = ls, *ffn_shift = ls + (size_t)Bn * C, *wkv_state = ls + 2 * (size_t)Bn * C;
        k->layernorm_forward(s->ln, NULL, NULL, s->x, view(r, P, R_LN1W, l), view(r, P, R_LN1B, l), B, C, r->eps);
        k->tokenshift_forward(s->mk, s->ln, view(r, P, R_AMK, l), att_shift, B, 1, C);
        k->tokenshift_forward(s->mv, s->ln, view(r, P, R_AMV, l), att_shift, B, 1, C);
        k->tokenshift_forward(s->mr, s->ln, view(r, P, R_AMR, l), att_shift, B, 1, C);
        memcpy(att_shift, s->ln, BC * sizeof(float));
        if (odin_pool_gemm(s->pool, s->k, s->mk, wview(r, R_AKW, l), NULL, B, C, C, 0)) goto oom;
        if (odin_pool_gemm(s->pool, s->v, s->mv, wview(r, R_AVW, l), NULL, B, C, C, 0)) goto oom;
        if (odin_pool_gemm(s->pool, s->r, s->mr, wview(r, R_ARW, l), NULL, B, C, C, 0)) goto oom;
        k->wkv_forward(s->wkv, wkv_state, view(r, P, R_TD, l), view(r, P, R_TF, l), s->k, s->v, B, 1, C);
        memset(s->gated, 0, BC * sizeof(float));
        k->sigmoid_gate_forward(s->gated, s->r, s->wkv, BC);
        if (odin_pool_gemm(s->pool, s->x, s->gated, wview(r, R_AOW, l), NULL, B, C, C, 1)) goto oom;
        k->layernorm_forward(s->ln, NULL, NULL, s->x, view(r, P, R_LN2W, l), view(r, P, R_LN2B, l), B, C, r->eps);
        k->tokenshift_forward(s->mk, s->ln, view(r, P, R_FMK, l), ffn_shift, B, 1, C);
        k->tokenshift_forward(s->mr, s->ln, view(r, P, R_FMR, l), ffn_shift, B, 1, C);
        memcpy(ffn_shift, s->ln, BC * sizeof(float));
        if (odin_pool_gemm(s->pool, s->fk, s->mk, wview(r, R_FKW, l), NULL, B, C, F, 0)) goto oom;
        k->sqrelu_forward(s->fkk, s->fk, (size_t)B * F);
        if (odin_pool_gemm(s->pool, s->fkv, s->fkk, wview(r, R_FVW, l), NULL, B, F, C, 0)) goto oom;
        if (odin_pool_gemm(s->pool, s->fr, s->mr, wview(r, R_FRW, l), NULL, B, C, C, 0)) goto oom;
        k->sigmoid_gate_forward(s->x, s->fr, s->fkv, BC);
    }
    k->layernorm_forward(s->ln, NULL, NULL, s->x, view(r, P, R_LNOW, 0), view(r, P, R_LNOB, 0), B, C, r->eps);
    if (odin_pool_gemm(s->pool, logits ? logits : s->logits, s->ln, wview(r, R_EMB, 0), NULL, B, C, V, 0)) goto oom;
    return ODIN_OK;
oom:
    return odin_fail(ODIN_NO_MEMORY, "decode: cannot allocate the GEMM packing buffers");
}

odin_status odin_rwkv_generate_greedy(odin_rwkv *r, odin_rwkv_state *s, const int32_t *prompts,
                                      const int32_t *prompt_lens, int B, int max_prompt, int max_new,
                                      int end_id, int32_t *out, int32_t *out_lens) {
    ODIN_REQUIRE_PTR(r, "model"); ODIN_REQUIRE_PTR(s, "state"); ODIN_REQUIRE_PTR(prompts, "prompts");
    ODIN_REQUIRE_PTR(prompt_lens, "prompt_lens"); ODIN_REQUIRE_PTR(out, "out"); ODIN_REQUIRE_PTR(out_lens, "out_lens");
    ODIN_REQUIRE_POS(B, "B"); ODIN_REQUIRE_POS(max_prompt, "max_prompt"); ODIN_REQUIRE_POS(max_new, "max_new");
    if (B > s->B) return odin_fail(ODIN_BAD_SHAPE, "B (%d) exceeds the state's batch (%d)", B, s->B);
    int longest = 0;
    for (int b = 0; b < B; b++) {
        if (prompt_lens[b] < 1 || prompt_lens[b] > max_prompt)
            return odin_fail(ODIN_BAD_ARG, "prompt_lens[%d] = %d must be in [1, %d]", b, (int)prompt_lens[b], max_prompt);
        odin_status st = odin_check_tokens(prompts + (size_t)b * max_prompt, (size_t)prompt_lens[b], r->V, "prompts", NULL);
        if (st) return st;
        if (prompt_lens[b] > longest) longest = prompt_lens[b];
    }
    for (int b = 0; b < B; b++) { out_lens[b] = 0; s->done[b] = 0; odin_rwkv_state_reset(s, b); }
    /* Sequences advance in lock-step, one token per step: each reads its prompt until it
     * runs out, then feeds back its own argmax. A finished row keeps feeding its last token
     * (its output is frozen) so the batch stays one GEMM wide; the state makes each step
     * cost the same whatever the length so far. */
    const int V = r->V;
    const long long steps = (long long)longest + max_new - 1; /* in int this wraps for a max_new near INT_MAX */
    for (long long step = 0; step < steps; step++) {
        int active = 0;
        for (int b = 0; b < B; b++) {
            const int L = prompt_lens[b];
            if (step < L) s->tok[b] = prompts[(size_t)b * max_prompt + step];
            else s->tok[b] = out[(size_t)b * max_new + (out_lens[b] - 1)];
            if (!s->done[b]) active = 1;
        }
        if (!active) break;
        odin_status st = odin_rwkv_decode(r, s, s->tok, B, s->logits);
        if (st) return st;
        for (int b = 0; b < B; b++) {
            if (s->done[b] || step < prompt_lens[b] - 1) continue;
            const int best = odin_argmax(s->logits + (size_t)b * V, V);
            out[(size_t)b * max_new + out_lens[b]] = best;
            out_lens[b]++;
            if (best == end_id || out_lens[b] >= max_new) s->done[b] = 1;
        }
    }
    return ODIN_OK;
}
