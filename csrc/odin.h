/* odin.h — the one public header of the ODIN native library.
 *
 * cffi reads this file (the part between ODIN_CDEF_BEGIN/END is fed to ffi.cdef),
 * so it must stay plain C declarations: no macros in signatures, no inline code.
 *
 * Conventions
 *  - Every exported function returns an odin_status. On failure odin_last_error()
 *    returns a message (thread-local) naming the offending argument.
 *  - Activations are row-major [rows, C]; weights [OC, C] row-major.
 *  - Backward functions ACCUMULATE (+=) into gradient buffers; callers zero them.
 *  - No function allocates except where its name says so (create/alloc) .
 *  - Kernels are single-threaded; parallelism lives above them (the spheres).
 */
#ifndef ODIN_H
#define ODIN_H

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ODIN_CDEF_BEGIN */
typedef enum {
    ODIN_OK = 0,
    ODIN_BAD_SHAPE = 1,
    ODIN_BAD_ARG = 2,
    ODIN_NO_MEMORY = 3,
    ODIN_NAN_DETECTED = 4,
    ODIN_UNSUPPORTED_ISA = 5,
    ODIN_IO = 6,
    ODIN_STATE = 7
} odin_status;

/* ---- library, CPU and dispatch ---------------------------------------- */
const char *odin_version(void);
const char *odin_last_error(void);
const char *odin_compiler(void);
/* Comma-separated features the CPU and OS offer, e.g. "sse2,avx,avx2,fma,avx512f,...". */
const char *odin_cpu_features(void);
const char *odin_cpu_model(void);
/* Comma-separated ISAs this build contains AND this CPU can run, best last. */
const char *odin_available_isas(void);
/* The ISA whose kernels are in use: "scalar", "avx2", "avxvnni", "avx512", "avx512vnni" (or
 * "wasm_simd128"); the VNNI rows differ from their base only in the quantized products. */
const char *odin_current_isa(void);
/* Switch the kernel table. Not to be called while another thread runs kernels. */
odin_status odin_set_isa(const char *name);

/* ---- matmul --------------------------------------------------------------
 * out[M,N] = inp[M,K] . W[N,K]^T + bias[N]        (bias may be NULL)
 * backward: dinp[M,K] += dout . W ; dW[N,K] += dout^T . inp ; dbias[N] += colsum(dout)
 * (any of dinp / dW / dbias may be NULL to skip it) */
odin_status odin_matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                                int M, int K, int N);
odin_status odin_matmul_backward(float *dinp, float *dweight, float *dbias,
                                 const float *dout, const float *inp, const float *weight,
                                 int M, int K, int N);
/* General single-precision GEMM on strided operands, the engine under matmul:
 * C(i,j) = beta*C(i,j) + sum_p A(i,p) B(p,j) with A(i,p)=a[i*rsa+p*csa], B(p,j)=b[p*rsb+j*csb],
 * C(i,j)=c[i*ldc+j]. beta must be 0 or 1. */
odin_status odin_sgemm(int M, int N, int K,
                       const float *a, int rsa, int csa,
                       const float *b, int rsb, int csb,
                       float beta, float *c, int ldc);

/* ---- normalisation ------------------------------------------------------ */
/* layernorm: out[N,C] = (inp-mean)*rstd*weight + bias ; mean[N], rstd[N] saved for backward */
odin_status odin_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                                   const float *weight, const float *bias, int N, int C, float eps);
odin_status odin_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                    const float *inp, const float *weight, const float *mean,
                                    const float *rstd, int N, int C);
/* rmsnorm: out[N,C] = inp*rstd*weight ; rstd[N] saved */
odin_status odin_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight,
                                 int N, int C, float eps);
odin_status odin_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                                  const float *weight, const float *rstd, int N, int C);

/* ---- elementwise -------------------------------------------------------- */
/* GELU, tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
odin_status odin_gelu_forward(float *out, const float *inp, size_t n);
odin_status odin_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n);
/* vectorised math, out[i] = f(inp[i]); max errors versus libm are documented in kernel_body.h */
odin_status odin_vexp(float *out, const float *inp, size_t n);
odin_status odin_vsigmoid(float *out, const float *inp, size_t n);
odin_status odin_vtanh(float *out, const float *inp, size_t n);

/* ---- softmax and attention ---------------------------------------------- */
/* row softmax: out[N,C] = softmax(inp) along C ; backward dinp += out*(dout - <dout,out>) */
odin_status odin_softmax_forward(float *out, const float *inp, int N, int C);
odin_status odin_softmax_backward(float *dinp, const float *out, const float *dout, int N, int C);
/* causal multi-head self-attention.
 * qkv[B,T,3C] holds q | k | v per token; head h uses columns h*hs .. (h+1)*hs-1 of each, hs = C/NH.
 * out[B,T,C]; att[B,NH,T,T] receives the softmax probabilities (upper triangle left 0).
 * slopes[NH] (may be NULL): ALiBi, head h adds slopes[h] * (j - t) to query t's score of key j.
 * backward: dqkv[B,T,3C] += ... (the same for either: it reads only att). Both take scratch
 * of odin_attention_scratch_floats(T, C, NH) floats (contents on entry do not matter). */
size_t odin_attention_scratch_floats(int T, int C, int NH);
odin_status odin_attention_forward(float *out, float *att, float *scratch, const float *qkv,
                                   const float *slopes, int B, int T, int C, int NH);
odin_status odin_attention_backward(float *dqkv, float *scratch, const float *dout,
                                    const float *qkv, const float *att,
                                    int B, int T, int C, int NH);

/* ---- embedding ---------------------------------------------------------- */
/* out[B,T,C] = wte[tokens[b,t]] + wpe[t] ; wte[V,C], wpe[maxT,C] with T <= maxT.
 * Any token outside [0,V) is an error (checked before anything is written). */
odin_status odin_embedding_forward(float *out, const int32_t *tokens, const float *wte,
                                   const float *wpe, int B, int T, int C, int V, int maxT);
odin_status odin_embedding_backward(float *dwte, float *dwpe, const float *dout,
                                    const int32_t *tokens, int B, int T, int C, int V, int maxT);

/* ---- loss --------------------------------------------------------------- */
/* Fused softmax + cross-entropy over logits[N,V] with targets[N] and mask[N] (1 = counts,
 * NULL = all count). losses[N] gets the per-token loss (0 where masked), lse[N] the
 * log-sum-exp saved for backward; *mean_loss = sum(losses)/count(mask). A target outside
 * [0,V) on a counted token is an error. */
odin_status odin_crossentropy_forward(float *mean_loss, float *losses, float *lse,
                                      const float *logits, const int32_t *targets,
                                      const uint8_t *mask, int N, int V);
/* dlogits[N,V] += dloss * mask[i]/count * (softmax(logits[i]) - onehot(targets[i])) */
odin_status odin_crossentropy_backward(float *dlogits, const float *logits, const float *lse,
                                       const int32_t *targets, const uint8_t *mask,
                                       int N, int V, float dloss);

/* ---- optimiser ---------------------------------------------------------- */
/* AdamW with decoupled weight decay, bias-corrected with step t >= 1:
 * m = b1 m + (1-b1) g ; v = b2 v + (1-b2) g^2
 * p -= lr * ( (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps) + wd * p ) */
odin_status odin_adamw(float *params, const float *grads, float *m, float *v, size_t n,
                       float lr, float beta1, float beta2, float eps, float weight_decay, int t);
/* *out = sqrt(sum x^2) accumulated in double in a fixed order */
odin_status odin_global_norm(float *out, const float *x, size_t n);
/* Scale x so its L2 norm is at most max_norm; *norm_out = norm before clipping. */
odin_status odin_clip_by_norm(float *x, size_t n, float max_norm, float *norm_out);
/* x *= s */
odin_status odin_scale(float *x, size_t n, float s);
/* ---- RWKV-4 kernels (the building blocks of rwkv.c, exported for direct testing) ----
 * Token shift: out[B,T,C] = xx + mix * (x - xx) with xx[b,t] = x[b,t-1] and xx[b,0] = prev[b]
 * (prev[B,C]: a recurrent state; NULL = zeros). backward (zeros before t = 0, the training form):
 * dx[B,T,C] += dout[t] mix + dout[t+1] (1 - mix) ; dmix[C] += sum dout[t] (x[t] - xx[t]). */
odin_status odin_tokenshift_forward(float *out, const float *x, const float *mix, const float *prev,
                                    int B, int T, int C);
odin_status odin_tokenshift_backward(float *dx, float *dmix, const float *dout, const float *x,
                                     const float *mix, int B, int T, int C);
/* WKV over k, v, y [B,T,C], each sequence from the empty state. time_decay[C] is the
 * PARAMETER (the decay is w = -exp(time_decay)), time_first[C] the bonus u:
 *   y[t] = (sum_{i<t} e^{(t-1-i)w + k[i]} v[i] + e^{u + k[t]} v[t]) / (same sums without v)
 * computed with a running maximum exponent (no overflow for any k). backward: the exact
 * gradient, accumulated: dtime_decay[C] += dL/dtime_decay (= dL/dw * w), dtime_first[C],
 * dk, dv [B,T,C] += ...; scratch must hold 3*T*C floats. */
odin_status odin_wkv_forward(float *y, const float *time_decay, const float *time_first,
                             const float *k, const float *v, int B, int T, int C);
odin_status odin_wkv_backward(float *dtime_decay, float *dtime_first, float *dk, float *dv, float *scratch,
                              const float *time_decay, const float *time_first, const float *k,
                              const float *v, const float *dy, int B, int T, int C);
/* Squared ReLU: out[n] = max(inp, 0)^2 ; dinp[n] += 2 max(inp, 0) dout */
odin_status odin_sqrelu_forward(float *out, const float *inp, size_t n);
odin_status odin_sqrelu_backward(float *dinp, const float *inp, const float *dout, size_t n);
/* Receptance gate: out[n] += sigmoid(a) * b (ACCUMULATES: fused with a residual add);
 * backward: da[n] += dout b s (1 - s), db[n] += dout s with s = sigmoid(a) */
odin_status odin_sigmoid_gate_forward(float *out, const float *a, const float *b, size_t n);
odin_status odin_sigmoid_gate_backward(float *da, float *db, const float *dout, const float *a,
                                       const float *b, size_t n);
/* ---- GPT model (gpt.c) ------------------------------------------------------
 * One contiguous float32 block holds every parameter; tensors are views into it in
 * this order: wte[V,C], wpe[maxT,C], per layer l: ln1_w[C], ln1_b[C], qkv_w[3C,C],
 * qkv_b[3C], attproj_w[C,C], attproj_b[C], ln2_w[C], ln2_b[C], fc_w[4C,C], fc_b[4C],
 * fcproj_w[C,4C], fcproj_b[C]; then lnf_w[C], lnf_b[C]. The LM head is tied to wte.
 * Gradient and AdamW moment blocks have the same layout. */
typedef struct odin_gpt odin_gpt;
typedef struct odin_gpt_ws odin_gpt_ws;
typedef struct odin_gpt_cache odin_gpt_cache;

odin_status odin_gpt_create(odin_gpt **out, int vocab, int max_t, int n_layer, int n_head,
                            int d_model, float ln_eps);
/* As odin_gpt_create, plus n_abacus > 0 digit-position ("Abacus") embeddings: a table
 * wab[n_abacus, C] appended after lnf_b; every token adds wab[ids[token]] to its
 * embedding (id 0 for non-digits, the digit's place in its number otherwise). */
odin_status odin_gpt_create_ex(odin_gpt **out, int vocab, int max_t, int n_layer, int n_head,
                               int d_model, float ln_eps, int n_abacus);
/* enabled = 0: no learned absolute positions ("NoPE"): wpe gets no gradient, so a zeroed
 * wpe stays exactly zero (AdamW moves nothing with zero gradient, moments and weight). */
odin_status odin_gpt_set_learned_positions(odin_gpt *model, int enabled);
/* enabled = 1: ALiBi attention biases (head h: slope 2^(-8(h+1)/NH) times the key's distance
 * back), in training and in decoding. Usually with learned positions off. */
odin_status odin_gpt_set_alibi(odin_gpt *model, int enabled);
void odin_gpt_free(odin_gpt *model);
size_t odin_gpt_num_params(const odin_gpt *model);
int odin_gpt_num_tensors(const odin_gpt *model);
/* name (static storage), offset into the block (floats), rows, cols (cols = 1 for 1-D) */
odin_status odin_gpt_tensor_info(const odin_gpt *model, int index, const char **name,
                                 size_t *offset, int *rows, int *cols);
float *odin_gpt_params(odin_gpt *model);
/* The training blocks (gradients, AdamW moments, zeroed) are allocated on first use: by this
 * call, the accessors below (NULL when that allocation fails: see odin_last_error), the AdamW
 * step or a trainer. A model that only answers holds its parameters alone. */
odin_status odin_gpt_enable_training(odin_gpt *model);
float *odin_gpt_grads(odin_gpt *model);
float *odin_gpt_adam_m(odin_gpt *model);
float *odin_gpt_adam_v(odin_gpt *model);

/* Activations for micro-batches of up to B x T tokens, sized once. */
odin_status odin_gpt_ws_create(odin_gpt_ws **out, const odin_gpt *model, int B, int T);
void odin_gpt_ws_free(odin_gpt_ws *ws);
size_t odin_gpt_ws_bytes(const odin_gpt_ws *ws);
/* tokens[B,T] inputs, targets[B,T], mask[B,T] (NULL = every token counts).
 * *loss = mean cross-entropy over counted tokens; targets may be NULL (no loss, logits only). */
odin_status odin_gpt_forward(odin_gpt *model, odin_gpt_ws *ws, const int32_t *tokens,
                             const int32_t *targets, const uint8_t *mask, int B, int T, float *loss);
/* ids[B,T] in [0, n_abacus): required when the model has Abacus embeddings, else NULL. */
odin_status odin_gpt_forward_ex(odin_gpt *model, odin_gpt_ws *ws, const int32_t *tokens, const int32_t *ids,
                                const int32_t *targets, const uint8_t *mask, int B, int T, float *loss);
/* Gradient of the last forward's mean loss, times dloss, ACCUMULATED into grads (n_params). */
odin_status odin_gpt_backward(odin_gpt *model, odin_gpt_ws *ws, float *grads, float dloss);
/* logits[B,T,V] of the last forward (owned by ws) */
float *odin_gpt_ws_logits(odin_gpt_ws *ws);
/* Clip grads (the model's gradient block) to grad_clip (<= 0: no clipping), then AdamW
 * with decoupled weight decay on matrices only (not biases, LayerNorm, which is standard).
 * *grad_norm = norm before clipping; a non-finite norm is ODIN_NAN_DETECTED and nothing changes. */
odin_status odin_gpt_adamw_step(odin_gpt *model, float lr, float beta1, float beta2, float eps,
                                float weight_decay, float grad_clip, int t, float *grad_norm);

/* Generation with a KV cache for B sequences; each sequence has its own position. */
odin_status odin_gpt_cache_create(odin_gpt_cache **out, const odin_gpt *model, int B);
void odin_gpt_cache_free(odin_gpt_cache *cache);
/* Decode with `threads` threads (1 = the caller alone, the default): each matrix-vector
 * product's output columns are split over them; the logits are the same for any count.
 * Unavailable (threads > 1) in WebAssembly. */
odin_status odin_gpt_cache_set_threads(odin_gpt_cache *cache, int threads);
/* Feed tokens[b] at position pos[b] (0-based, < maxT) for each of the B sequences;
 * logits[B,V] receives the next-token logits (may be NULL). */
odin_status odin_gpt_decode(odin_gpt *model, odin_gpt_cache *cache, const int32_t *tokens,
                            const int32_t *pos, int B, float *logits);
odin_status odin_gpt_decode_ex(odin_gpt *model, odin_gpt_cache *cache, const int32_t *tokens,
                               const int32_t *pos, const int32_t *ids, int B, float *logits);
/* Sample one token from logits[V]: temperature <= 0 -> argmax; top_k <= 0 -> off;
 * top_p >= 1 -> off. rng_state is advanced (xorshift64*). */
odin_status odin_sample(const float *logits, int V, float temperature, int top_k, float top_p,
                        uint64_t *rng_state, int32_t *out_token);
/* Greedy decoding of B prompts at once (prompts[B, max_prompt] with prompt_lens[B]):
 * out[B, max_new] receives generated tokens, out_lens[B] how many (stops after end_id,
 * which is included). */
odin_status odin_gpt_generate_greedy(odin_gpt *model, odin_gpt_cache *cache,
                                     const int32_t *prompts, const int32_t *prompt_lens,
                                     int B, int max_prompt, int max_new, int end_id,
                                     int32_t *out, int32_t *out_lens);
/* With Abacus embeddings: prompt_ids[B, max_prompt] give the prompt tokens' ids; each
 * generated token in [digit_first, digit_first + 10) gets the id of the digit before it
 * plus one (1 after a non-digit), others 0 — the count of a least-significant-first answer. */
odin_status odin_gpt_generate_greedy_ex(odin_gpt *model, odin_gpt_cache *cache,
                                        const int32_t *prompts, const int32_t *prompt_ids,
                                        const int32_t *prompt_lens, int B, int max_prompt, int max_new,
                                        int end_id, int digit_first, int32_t *out, int32_t *out_lens);
/* ---- quantized weights (quant.c) ----------------------------------------------
 * llama.cpp's block formats with ggml's type ids: a row of K weights (K a positive multiple
 * of 32) is K / 32 blocks of 32 weights with an fp16 scale (and an fp16 minimum for the
 * "_1" types), byte for byte as in a GGUF file. Quantizing rounds exactly as ggml's
 * reference code. Non-finite weights are refused (ODIN_NAN_DETECTED). */
typedef enum {
    ODIN_TYPE_F32 = 0,
    ODIN_TYPE_Q4_0 = 2,
    ODIN_TYPE_Q4_1 = 3,
    ODIN_TYPE_Q5_0 = 6,
    ODIN_TYPE_Q5_1 = 7,
    ODIN_TYPE_Q8_0 = 8
} odin_type;
/* Bytes of one row of `cols` weights; 0 for an unknown type or cols not a positive multiple of 32. */
size_t odin_quant_row_bytes(int type, long long cols);
/* "f32", "q8_0", "q4_0", ...; NULL for an unknown id. */
const char *odin_qtype_name(int type);
odin_status odin_quantize(int type, const float *x, void *out, long long rows, long long cols);
odin_status odin_dequantize(int type, const void *q, float *out, long long rows, long long cols);
/* out[M,N] = inp[M,K] . W[N,K]^T + bias[N] with W of `type` (f32 too). Up to 8 rows, the
 * activations are quantized to 8 bits per block and the products are integer dot products
 * (as llama.cpp); more rows, W is dequantized panel by panel into the float GEMM. */
odin_status odin_qmatmul(int type, const void *weight, const float *inp, const float *bias, float *out,
                         int M, int K, int N);
/* A GPT (as odin_gpt_create_ex) whose matrices (qkv_w, attproj_w, fc_w, fcproj_w) are of
 * matrix_type and whose token embedding (the tied head) is of embed_type; positions, norms,
 * biases and the Abacus table stay float32. With any quantized tensor the model answers but
 * does not train (enable_training, the AdamW step and backward refuse). Quantized tensors
 * live in a second block (odin_gpt_qblock); their tensor_info offset is in bytes there. */
odin_status odin_gpt_create_q(odin_gpt **out, int vocab, int max_t, int n_layer, int n_head, int d_model,
                              float ln_eps, int n_abacus, int matrix_type, int embed_type);
odin_status odin_gpt_tensor_type(const odin_gpt *model, int index, int *type);
uint8_t *odin_gpt_qblock(odin_gpt *model);
size_t odin_gpt_qbytes(const odin_gpt *model);

/* ---- RWKV-4 model (rwkv.c) ---------------------------------------------------
 * A second architecture beside GPT: no attention and no positions; each layer is a
 * time-mixing block (token shift, WKV recurrence with per-channel decay) and a
 * channel-mixing block. One contiguous float32 block holds every parameter, in order:
 * emb[V,C], ln0_w[C], ln0_b[C], per layer l: ln1_w[C], ln1_b[C], att_time_decay[C],
 * att_time_first[C], att_time_mix_k[C], att_time_mix_v[C], att_time_mix_r[C],
 * att_key_w[C,C], att_value_w[C,C], att_receptance_w[C,C], att_output_w[C,C],
 * ln2_w[C], ln2_b[C], ffn_time_mix_k[C], ffn_time_mix_r[C], ffn_key_w[F,C],
 * ffn_receptance_w[C,C], ffn_value_w[C,F]; then ln_out_w[C], ln_out_b[C].
 * The head is tied to emb. Decay per channel is w = -exp(att_time_decay), bonus
 * u = att_time_first. Gradient and AdamW moment blocks share the layout. */
typedef struct odin_rwkv odin_rwkv;
typedef struct odin_rwkv_ws odin_rwkv_ws;
typedef struct odin_rwkv_state odin_rwkv_state;

odin_status odin_rwkv_create(odin_rwkv **out, int vocab, int n_layer, int d_model, int d_ffn, float ln_eps);
/* As odin_gpt_create_q: the eight matrices per layer of matrix_type, emb (the tied head) of
 * embed_type, every vector float32. */
odin_status odin_rwkv_create_q(odin_rwkv **out, int vocab, int n_layer, int d_model, int d_ffn, float ln_eps,
                               int matrix_type, int embed_type);
odin_status odin_rwkv_tensor_type(const odin_rwkv *model, int index, int *type);
uint8_t *odin_rwkv_qblock(odin_rwkv *model);
size_t odin_rwkv_qbytes(const odin_rwkv *model);
void odin_rwkv_free(odin_rwkv *model);
size_t odin_rwkv_num_params(const odin_rwkv *model);
int odin_rwkv_num_tensors(const odin_rwkv *model);
/* name (static storage), offset into the block (floats), rows, cols (cols = 1 for 1-D) */
odin_status odin_rwkv_tensor_info(const odin_rwkv *model, int index, const char **name,
                                  size_t *offset, int *rows, int *cols);
float *odin_rwkv_params(odin_rwkv *model);
odin_status odin_rwkv_enable_training(odin_rwkv *model);  /* as odin_gpt_enable_training */
float *odin_rwkv_grads(odin_rwkv *model);
float *odin_rwkv_adam_m(odin_rwkv *model);
float *odin_rwkv_adam_v(odin_rwkv *model);
/* Activations for micro-batches of up to B x T tokens, sized once. */
odin_status odin_rwkv_ws_create(odin_rwkv_ws **out, const odin_rwkv *model, int B, int T);
void odin_rwkv_ws_free(odin_rwkv_ws *ws);
size_t odin_rwkv_ws_bytes(const odin_rwkv_ws *ws);
/* Parallel (training) form over tokens[B,T], every sequence starting from a zero state.
 * targets/mask/loss as in odin_gpt_forward. T is limited only by the workspace (no
 * position table). Writes only into ws: workspaces on one model may run concurrently. */
odin_status odin_rwkv_forward(odin_rwkv *model, odin_rwkv_ws *ws, const int32_t *tokens,
                              const int32_t *targets, const uint8_t *mask, int B, int T, float *loss);
/* Exact gradient of the last forward's mean loss, times dloss, ACCUMULATED into grads. */
odin_status odin_rwkv_backward(odin_rwkv *model, odin_rwkv_ws *ws, float *grads, float dloss);
float *odin_rwkv_ws_logits(odin_rwkv_ws *ws);
/* As odin_gpt_adamw_step (weight decay on matrices only). */
odin_status odin_rwkv_adamw_step(odin_rwkv *model, float lr, float beta1, float beta2, float eps,
                                 float weight_decay, float grad_clip, int t, float *grad_norm);
/* Recurrent (generation) form: the state of B sequences is, per layer, the time-mix and
 * channel-mix shift vectors and the WKV accumulators (num, den, max exponent) per channel:
 * constant in the sequence length. A new state is the zero state. state_bytes counts the
 * state proper, n_layer x B x 5 x d_model floats (not the per-step scratch). */
odin_status odin_rwkv_state_create(odin_rwkv_state **out, const odin_rwkv *model, int B);
void odin_rwkv_state_free(odin_rwkv_state *state);
/* As odin_gpt_cache_set_threads. */
odin_status odin_rwkv_state_set_threads(odin_rwkv_state *state, int threads);
size_t odin_rwkv_state_bytes(const odin_rwkv_state *state);
/* Back to the zero state: sequence b, or every sequence when b < 0. */
odin_status odin_rwkv_state_reset(odin_rwkv_state *state, int b);
/* Feed one token per sequence (tokens[B], B <= the state's batch: its first B sequences)
 * and advance each state; logits[B,V] (may be NULL). */
odin_status odin_rwkv_decode(odin_rwkv *model, odin_rwkv_state *state, const int32_t *tokens, int B,
                             float *logits);
/* Greedy decoding of B prompts from the zero state (rows 0..B-1 of the state are reset
 * first), as odin_gpt_generate_greedy but with no length limit. */
odin_status odin_rwkv_generate_greedy(odin_rwkv *model, odin_rwkv_state *state,
                                      const int32_t *prompts, const int32_t *prompt_lens,
                                      int B, int max_prompt, int max_new, int end_id,
                                      int32_t *out, int32_t *out_lens);
/* ---- the kissing-spheres trainer (spheres.c) -----------------------------------
 * A root and 12 worker spheres. Each global batch of B sequences is cut into 12
 * micro-batch slots (sizes differ by at most one row); N native threads (1..64,
 * changeable between steps) run the slots' forward + backward into slot gradient buffers
 * (one per slot with rows while they fit in 256 MiB, else one per thread, the slots then
 * running in waves); the slot gradients are added in slot order, clipped, and AdamW
 * applied with a warmup + cosine schedule. Results do not depend on the thread count. */
typedef struct odin_spheres odin_spheres;

enum { ODIN_SPHERES_N = 12 };
typedef enum { ODIN_SPHERE_IDLE = 0, ODIN_SPHERE_FORWARD = 1, ODIN_SPHERE_BACKWARD = 2,
               ODIN_SPHERE_WAITING = 3, ODIN_SPHERE_REDUCING = 4 } odin_sphere_state;

typedef struct {
    int state;
    int rows;                 /* sequences in this sphere's slot */
    long long microbatches;   /* slots completed */
    long long tokens;         /* tokens processed (B_slot x T per slot) */
    float last_loss;          /* mean loss of its last slot (0 if it had no counted token) */
    float last_grad_norm;     /* L2 norm of its last slot's gradient */
    double busy_seconds;      /* time spent in forward + backward */
} odin_sphere_stats;

typedef struct {
    long long step;           /* optimizer steps completed */
    float lr, loss, grad_norm;
    double tokens_per_s;      /* last step */
    double step_seconds;      /* last step */
    long long tokens;         /* total tokens trained on */
    int threads;              /* threads in use */
    int running, paused, stopped;
    int root_state;           /* odin_sphere_state of the root */
    odin_sphere_stats spheres[12];
} odin_spheres_snapshot;

typedef struct {
    long long step;
    float loss, grad_norm, lr;
    double tokens_per_s;
    float sphere_loss[12];
    float sphere_grad_norm[12];
} odin_spheres_record;

odin_status odin_spheres_create(odin_spheres **out, odin_gpt *model, int batch, int T, int threads);
/* The same trainer over an RWKV model (ids must then be NULL in odin_spheres_run_ex). */
odin_status odin_spheres_create_rwkv(odin_spheres **out, odin_rwkv *model, int batch, int T, int threads);
void odin_spheres_free(odin_spheres *sp);
odin_status odin_spheres_set_schedule(odin_spheres *sp, float lr_max, float lr_min, int warmup_steps, int total_steps);
odin_status odin_spheres_set_optimizer(odin_spheres *sp, float beta1, float beta2, float eps,
                                       float weight_decay, float grad_clip);
/* Completed steps so far (for resume): the next step is step + 1. */
odin_status odin_spheres_set_step(odin_spheres *sp, long long step);
/* Run up to n_steps optimizer steps on inputs/targets/mask [n_steps, batch, T] (mask may be
 * NULL). Returns early (ODIN_OK) after a stop or checkpoint request; *steps_done says how
 * many ran. NaN/Inf or allocation failure: an error naming the sphere and the step; the
 * parameters are left as they were before that step. */
odin_status odin_spheres_run(odin_spheres *sp, const int32_t *inputs, const int32_t *targets,
                             const uint8_t *mask, int n_steps, int *steps_done);
/* ids[n_steps, batch, T]: Abacus ids for models that have them (else NULL). */
odin_status odin_spheres_run_ex(odin_spheres *sp, const int32_t *inputs, const int32_t *ids,
                                const int32_t *targets, const uint8_t *mask, int n_steps, int *steps_done);
/* Sequence length T of the next runs' batches, 1..T given at creation: shorter batches cost
 * less (length-bucketed training). Between runs only (ODIN_STATE during one). */
odin_status odin_spheres_set_seq_len(odin_spheres *sp, int T);
/* Control, callable from any thread at any moment; effective at the next step boundary.
 * A stop request made while no run is in progress ends the next run before its first step. */
odin_status odin_spheres_set_threads(odin_spheres *sp, int threads);
void odin_spheres_pause(odin_spheres *sp);
void odin_spheres_resume(odin_spheres *sp);
void odin_spheres_stop(odin_spheres *sp);
void odin_spheres_request_checkpoint(odin_spheres *sp);
/* Returns 1 once per request (and clears it), else 0. */
int odin_spheres_take_checkpoint_request(odin_spheres *sp);
/* Consistent copy of the live statistics; never blocks training. */
void odin_spheres_snapshot_get(odin_spheres *sp, odin_spheres_snapshot *out);
/* Copy up to max records with step > since_step, oldest first; returns how many. */
int odin_spheres_history(odin_spheres *sp, long long since_step, odin_spheres_record *out, int max);
int odin_spheres_history_capacity(void);
/* How many slot gradient buffers the trainer keeps (memory: n x the parameters): 1..12, capped
 * at the slots with rows; 0 = automatic (all of them while they fit in 256 MiB, else one per
 * thread). Any count gives the same weights. Between runs only. */
odin_status odin_spheres_set_slot_buffers(odin_spheres *sp, int n);
int odin_spheres_slot_buffers(odin_spheres *sp);
/* Where the steps' time goes, counted while profiling is on. Thread-seconds summed over the
 * worker threads: forward and backward, each split into GEMM and the rest; the slot gradient
 * buffers (zeroing, the per-sphere norm); the reduce; clip + AdamW. Wall seconds of the root:
 * the slots, reduce and update phases and whole steps (the rest of a step is the root's own
 * work between phases). */
typedef struct {
    long long steps;
    double fwd_gemm, fwd_other, bwd_gemm, bwd_other, slot_buffers, reduce, update;
    double wall_slots, wall_reduce, wall_update, wall_steps;
} odin_spheres_profile;
/* enabled != 0: count from zero from the next step on; 0: stop counting (the figures stay).
 * Between runs only. Off, the cost is one thread-local load per GEMM call. */
odin_status odin_spheres_set_profiling(odin_spheres *sp, int enabled);
/* The figures so far; between runs only. */
odin_status odin_spheres_profile_get(odin_spheres *sp, odin_spheres_profile *out);
/* ---- shards: one process's part of a step (odin/distributed, MPI) ---------------------
 * A step over several processes: each runs the forward + backward of its slots [lo, hi)
 * (odin_spheres_shard_slots). The gradient is the same left fold g0 + g1 + ... as in one
 * process: the process with lo = 0 starts it; each next process receives the partial sum into
 * the model's gradient block and adds its own slots chunk range by chunk range
 * (odin_spheres_shard_fold, any ranges, each chunk once) before passing it on; the finished
 * gradient reaches every process, which then runs odin_spheres_shard_finish with every
 * slot's outcome (norm, clip, AdamW, statistics). Same weights, bit for bit, as
 * odin_spheres_run. A shard with lo > 0 keeps hi - lo slot gradient buffers. The transport
 * is the caller's. */
typedef struct {
    float loss[12];           /* each slot's mean loss (its sphere's statistics) */
    float grad_norm[12];      /* each slot's gradient norm */
    double seconds[12];       /* each slot's forward + backward time */
} odin_spheres_slot_report;
/* This process's slots: 0 <= lo < hi <= min(batch, 12). Default: all. Between runs only. */
odin_status odin_spheres_set_shard(odin_spheres *sp, int lo, int hi);
/* Reduce/update chunks (never crossing a tensor) and the parameter span [start, end) of chunks [c0, c1). */
int odin_spheres_num_chunks(odin_spheres *sp);
odin_status odin_spheres_chunk_span(odin_spheres *sp, int c0, int c1, size_t *start, size_t *end);
/* One step's own slots (inputs as one step of odin_spheres_run_ex); *own gets their outcome
 * (the other slots' entries 0). lo = 0: the gradient block then holds g0 + ... + g(hi-1). */
odin_status odin_spheres_shard_slots(odin_spheres *sp, const int32_t *inputs, const int32_t *ids,
                                     const int32_t *targets, const uint8_t *mask, odin_spheres_slot_report *own);
/* lo > 0: add the own slots to the partial sum in the gradient block, chunks [c0, c1). */
odin_status odin_spheres_shard_fold(odin_spheres *sp, int c0, int c1);
/* The gradient block holds the full gradient; *all: every slot's outcome. Completes the step. */
odin_status odin_spheres_shard_finish(odin_spheres *sp, const odin_spheres_slot_report *all);
/* ODIN_CDEF_END */


#ifdef __cplusplus
}
#endif
#endif /* ODIN_H */
