/* kernel_body.h — every non-GEMM kernel, written once over the vector primitives
 * (vf, VL, vload, vfma, ...) that the including ISA file defines. Each ISA file
 * includes this header once, so each kernel exists once per ISA with that ISA's
 * intrinsics in its hot loop; names get the ISA as suffix via K().
 *
 * Tails (n not a multiple of VL) go through vload_n/vstore_n so every element is
 * computed by the same vector code, whatever its position.
 */
#include <math.h>
#include <string.h>
#include "kernels.h"

#define K_CAT_(a, b) a##_##b
#define K_CAT(a, b) K_CAT_(a, b)
#define K(name) K_CAT(name, ODIN_ISA_NAME)

/* ------------------------------------------------------------------------------
 * exp / sigmoid / tanh
 * exp: x = n ln2 + r, |r| <= ln2/2, exp(r) by its degree-7 Taylor polynomial
 * (truncation < 6e-9 relative), 2^n built in the exponent field.
 * Input clamped to [-87.336, 88.376]: results below ~1.18e-38 come out as the
 * smallest normal float (1.1755e-38) instead of denormal/0; above, the result saturates
 * at 2.41e38 (finite: x in (88.376, 88.72] is under-estimated, x > 88.72 and +inf give
 * 2.41e38 instead of inf). NaN in gives NaN out.
 * Measured max error versus float64 numpy, same for scalar/avx2/avx512, on a dense grid
 * of [-87, 88] plus random floats of every exponent (tests/test_math.py asserts the
 * bounds in brackets):
 *   exp      1.31 ulp, relative 1.19e-7                   [<= 2 ulp, 1.5e-7]
 *   sigmoid  3.2 ulp,  relative 1.92e-7                   [<= 4 ulp, 2.5e-7]
 *   tanh     absolute 1.48e-7                             [<= 2e-7 absolute]
 *            relative 1.73e-7 for |x| >= 0.5              [<= 2.5e-7]
 *            (tanh = 1 - 2/(exp(2|x|)+1) loses relative accuracy for small |x|, ~1.5e-7/|x|,
 *            and gives 0 for |x| < ~9e-8; the absolute error is what GELU needs)
 *   gelu     absolute 1.22e-7 |x| on [-10, 10]            [<= 2e-7 |x|]
 *            relative 2.2e-7 for x > 0.1                  [<= 3e-7]
 * --------------------------------------------------------------------------- */
static inline vf K(v_exp)(vf x) {
    /* Clamp with the constant first: x86 max/min return their SECOND operand when
     * either is NaN (and the scalar a>b?a:b does too), so NaN stays NaN instead of
     * being clamped to a finite bound (which hid NaN logits from the loss check). */
    x = vmin(vset1(88.37626f), vmax(vset1(-87.33654f), x));
    vf n = vround(vmul(x, vset1(1.44269504088896341f)));
    /* ln2 split in two so n*ln2_hi is exact */
    vf r = vfnma(n, vset1(0.693359375f), x);
    r = vfnma(n, vset1(-2.12194440e-4f), r);
    vf p = vset1(1.0f / 5040.0f);
    p = vfma(p, r, vset1(1.0f / 720.0f));
    p = vfma(p, r, vset1(1.0f / 120.0f));
    p = vfma(p, r, vset1(1.0f / 24.0f));
    p = vfma(p, r, vset1(1.0f / 6.0f));
    p = vfma(p, r, vset1(0.5f));
    p = vfma(p, vmul(r, r), vadd(r, vset1(1.0f)));
    return vmul(p, vpow2i(n));
}

static inline vf K(v_sigmoid)(vf x) {
    const vf one = vset1(1.0f);
    return vdiv(one, vadd(one, K(v_exp)(vsub(vzero(), x))));
}

static inline vf K(v_tanh)(vf x) {
    const vf one = vset1(1.0f);
    vf e = K(v_exp)(vmul(vabs(x), vset1(2.0f)));
    vf t = vsub(one, vdiv(vset1(2.0f), vadd(e, one)));
    return vcopysign(t, x);
}

/* Apply a vf->vf function over an array, tail included. */
#define K_MAP(fn, out, inp, n)                                              \
    do {                                                                    \
        size_t i_ = 0;                                                      \
        for (; i_ + VL <= (n); i_ += VL) vstore((out) + i_, fn(vload((inp) + i_))); \
        if (i_ < (n)) {                                                     \
            int r_ = (int)((n) - i_);                                       \
            vstore_n((out) + i_, fn(vload_n((inp) + i_, r_, 0.0f)), r_);    \
        }                                                                   \
    } while (0)

static void K(vexp_array)(float *out, const float *inp, size_t n) { K_MAP(K(v_exp), out, inp, n); }
static void K(vsigmoid_array)(float *out, const float *inp, size_t n) { K_MAP(K(v_sigmoid), out, inp, n); }
static void K(vtanh_array)(float *out, const float *inp, size_t n) { K_MAP(K(v_tanh), out, inp, n); }

/* ------------------------------------------------------------------------------
 * dot / axpy: four accumulators so the FMA latency is hidden
 * --------------------------------------------------------------------------- */
static float K(dot)(const float *a, const float *b, int n) {
    vf s0 = vzero(), s1 = vzero(), s2 = vzero(), s3 = vzero();
    int i = 0;
    for (; i + 4 * VL <= n; i += 4 * VL) {
        s0 = vfma(vload(a + i), vload(b + i), s0);
        s1 = vfma(vload(a + i + VL), vload(b + i + VL), s1);
        s2 = vfma(vload(a + i + 2 * VL), vload(b + i + 2 * VL), s2);
        s3 = vfma(vload(a + i + 3 * VL), vload(b + i + 3 * VL), s3);
    }
    for (; i + VL <= n; i += VL) s0 = vfma(vload(a + i), vload(b + i), s0);
    if (i < n) s1 = vfma(vload_n(a + i, n - i, 0.0f), vload_n(b + i, n - i, 0.0f), s1);
    return vhsum(vadd(vadd(s0, s1), vadd(s2, s3)));
}

static void K(axpy)(float *y, float a, const float *x, int n) {
    vf va = vset1(a);
    int i = 0;
    for (; i + VL <= n; i += VL) vstore(y + i, vfma(va, vload(x + i), vload(y + i)));
    if (i < n) vstore_n(y + i, vfma(va, vload_n(x + i, n - i, 0.0f), vload_n(y + i, n - i, 0.0f)), n - i);
}

static float K(sum)(const float *x, int n) {
    vf s0 = vzero(), s1 = vzero();
    int i = 0;
    for (; i + 2 * VL <= n; i += 2 * VL) {
        s0 = vadd(s0, vload(x + i));
        s1 = vadd(s1, vload(x + i + VL));
    }
    for (; i + VL <= n; i += VL) s0 = vadd(s0, vload(x + i));
    if (i < n) s1 = vadd(s1, vload_n(x + i, n - i, 0.0f));
    return vhsum(vadd(s0, s1));
}

static float K(maxval)(const float *x, int n) {
    vf m = vset1(-INFINITY);
    int i = 0;
    for (; i + VL <= n; i += VL) m = vmax(m, vload(x + i));
    if (i < n) m = vmax(m, vload_n(x + i, n - i, -INFINITY));
    return vhmax(m);
}

/* ------------------------------------------------------------------------------
 * GELU (tanh form)
 * --------------------------------------------------------------------------- */
#define GELU_S 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_C 0.044715f

static inline vf K(v_gelu)(vf x) {
    vf x3 = vmul(vmul(x, x), x);
    vf t = K(v_tanh)(vmul(vset1(GELU_S), vfma(vset1(GELU_C), x3, x)));
    return vmul(vmul(vset1(0.5f), x), vadd(vset1(1.0f), t));
}

/* out[n] = gelu(inp[n]) */
static void K(gelu_forward)(float *out, const float *inp, size_t n) { K_MAP(K(v_gelu), out, inp, n); }

/* dinp[n] += gelu'(inp) * dout */
static inline vf K(v_gelu_grad)(vf x) {
    vf x2 = vmul(x, x);
    vf t = K(v_tanh)(vmul(vset1(GELU_S), vfma(vmul(vset1(GELU_C), x2), x, x)));
    vf sech2 = vfnma(t, t, vset1(1.0f));
    vf du = vmul(vset1(GELU_S), vfma(vset1(3.0f * GELU_C), x2, vset1(1.0f)));
    /* 0.5 (1 + t) + 0.5 x sech^2 du */
    return vmul(vset1(0.5f), vadd(vadd(vset1(1.0f), t), vmul(vmul(x, sech2), du)));
}

static void K(gelu_backward)(float *dinp, const float *inp, const float *dout, size_t n) {
    size_t i = 0;
    for (; i + VL <= n; i += VL)
        vstore(dinp + i, vfma(K(v_gelu_grad)(vload(inp + i)), vload(dout + i), vload(dinp + i)));
    if (i < n) {
        int r = (int)(n - i);
        vf g = K(v_gelu_grad)(vload_n(inp + i, r, 0.0f));
        vstore_n(dinp + i, vfma(g, vload_n(dout + i, r, 0.0f), vload_n(dinp + i, r, 0.0f)), r);
    }
}

/* ------------------------------------------------------------------------------
 * LayerNorm
 * --------------------------------------------------------------------------- */
/* out[N,C] = (inp - mean) * rstd * weight + bias ; mean[N], rstd[N] */
static void K(layernorm_forward)(float *out, float *mean, float *rstd, const float *inp,
                                 const float *weight, const float *bias, int N, int C, float eps) {
    for (int r = 0; r < N; r++) {
        const float *x = inp + (size_t)r * C;
        float *o = out + (size_t)r * C;
        float m = K(sum)(x, C) / (float)C;
        vf vm = vset1(m), acc = vzero();
        int i = 0;
        for (; i + VL <= C; i += VL) { vf d = vsub(vload(x + i), vm); acc = vfma(d, d, acc); }
        if (i < C) { vf d = vsub(vload_n(x + i, C - i, m), vm); acc = vfma(d, d, acc); }
        float s = 1.0f / sqrtf(vhsum(acc) / (float)C + eps);
        vf vs = vset1(s);
        for (i = 0; i + VL <= C; i += VL) {
            vf nrm = vmul(vsub(vload(x + i), vm), vs);
            vstore(o + i, vfma(nrm, vload(weight + i), vload(bias + i)));
        }
        if (i < C) {
            int t = C - i;
            vf nrm = vmul(vsub(vload_n(x + i, t, 0.0f), vm), vs);
            vstore_n(o + i, vfma(nrm, vload_n(weight + i, t, 0.0f), vload_n(bias + i, t, 0.0f)), t);
        }
        if (mean) mean[r] = m;
        if (rstd) rstd[r] = s;
    }
}

/* dinp[N,C] += ..., dweight[C] += sum_r dout*norm, dbias[C] += sum_r dout */
static void K(layernorm_backward)(float *dinp, float *dweight, float *dbias, const float *dout,
                                  const float *inp, const float *weight, const float *mean,
                                  const float *rstd, int N, int C) {
    for (int r = 0; r < N; r++) {
        const float *x = inp + (size_t)r * C, *dy = dout + (size_t)r * C;
        float *dx = dinp + (size_t)r * C;
        vf vm = vset1(mean[r]), vs = vset1(rstd[r]);
        /* pass 1: mean(dnorm), mean(dnorm * norm); also the parameter gradients */
        vf a_dn = vzero(), a_dnn = vzero();
        int i = 0;
        for (; i + VL <= C; i += VL) {
            vf nrm = vmul(vsub(vload(x + i), vm), vs), g = vload(dy + i);
            vf dn = vmul(vload(weight + i), g);
            a_dn = vadd(a_dn, dn);
            a_dnn = vfma(dn, nrm, a_dnn);
            vstore(dbias + i, vadd(vload(dbias + i), g));
            vstore(dweight + i, vfma(nrm, g, vload(dweight + i)));
        }
        if (i < C) {
            int t = C - i;
            vf nrm = vmul(vsub(vload_n(x + i, t, mean[r]), vm), vs), g = vload_n(dy + i, t, 0.0f);
            vf dn = vmul(vload_n(weight + i, t, 0.0f), g);
            a_dn = vadd(a_dn, dn);
            a_dnn = vfma(dn, nrm, a_dnn);
            vstore_n(dbias + i, vadd(vload_n(dbias + i, t, 0.0f), g), t);
            vstore_n(dweight + i, vfma(nrm, g, vload_n(dweight + i, t, 0.0f)), t);
        }
        vf m_dn = vset1(vhsum(a_dn) / (float)C), m_dnn = vset1(vhsum(a_dnn) / (float)C);
        /* pass 2: dx += (dnorm - mean(dnorm) - norm * mean(dnorm*norm)) * rstd */
        for (i = 0; i + VL <= C; i += VL) {
            vf nrm = vmul(vsub(vload(x + i), vm), vs);
            vf dn = vmul(vload(weight + i), vload(dy + i));
            vf v = vfnma(nrm, m_dnn, vsub(dn, m_dn));
            vstore(dx + i, vfma(v, vs, vload(dx + i)));
        }
        if (i < C) {
            int t = C - i;
            vf nrm = vmul(vsub(vload_n(x + i, t, mean[r]), vm), vs);
            vf dn = vmul(vload_n(weight + i, t, 0.0f), vload_n(dy + i, t, 0.0f));
            vf v = vfnma(nrm, m_dnn, vsub(dn, m_dn));
            vstore_n(dx + i, vfma(v, vs, vload_n(dx + i, t, 0.0f)), t);
        }
    }
}

/* ------------------------------------------------------------------------------
 * RMSNorm
 * --------------------------------------------------------------------------- */
/* out[N,C] = inp * rstd * weight, rstd = 1/sqrt(mean(inp^2) + eps) */
static void K(rmsnorm_forward)(float *out, float *rstd, const float *inp, const float *weight,
                               int N, int C, float eps) {
    for (int r = 0; r < N; r++) {
        const float *x = inp + (size_t)r * C;
        float *o = out + (size_t)r * C;
        float s = 1.0f / sqrtf(K(dot)(x, x, C) / (float)C + eps);
        vf vs = vset1(s);
        int i = 0;
        for (; i + VL <= C; i += VL) vstore(o + i, vmul(vmul(vload(x + i), vs), vload(weight + i)));
        if (i < C) {
            int t = C - i;
            vstore_n(o + i, vmul(vmul(vload_n(x + i, t, 0.0f), vs), vload_n(weight + i, t, 0.0f)), t);
        }
        if (rstd) rstd[r] = s;
    }
}

static void K(rmsnorm_backward)(float *dinp, float *dweight, const float *dout, const float *inp,
                                const float *weight, const float *rstd, int N, int C) {
    for (int r = 0; r < N; r++) {
        const float *x = inp + (size_t)r * C, *dy = dout + (size_t)r * C;
        float *dx = dinp + (size_t)r * C;
        vf vs = vset1(rstd[r]), acc = vzero();
        int i = 0;
        for (; i + VL <= C; i += VL) {
            vf nrm = vmul(vload(x + i), vs), g = vload(dy + i);
            acc = vfma(vmul(vload(weight + i), g), nrm, acc);
            vstore(dweight + i, vfma(nrm, g, vload(dweight + i)));
        }
        if (i < C) {
            int t = C - i;
            vf nrm = vmul(vload_n(x + i, t, 0.0f), vs), g = vload_n(dy + i, t, 0.0f);
            acc = vfma(vmul(vload_n(weight + i, t, 0.0f), g), nrm, acc);
            vstore_n(dweight + i, vfma(nrm, g, vload_n(dweight + i, t, 0.0f)), t);
        }
        vf m_dnn = vset1(vhsum(acc) / (float)C);
        /* dx += rstd * (dnorm - norm * mean(dnorm * norm)) */
        for (i = 0; i + VL <= C; i += VL) {
            vf nrm = vmul(vload(x + i), vs);
            vf dn = vmul(vload(weight + i), vload(dy + i));
            vstore(dx + i, vfma(vfnma(nrm, m_dnn, dn), vs, vload(dx + i)));
        }
        if (i < C) {
            int t = C - i;
            vf nrm = vmul(vload_n(x + i, t, 0.0f), vs);
            vf dn = vmul(vload_n(weight + i, t, 0.0f), vload_n(dy + i, t, 0.0f));
            vstore_n(dx + i, vfma(vfnma(nrm, m_dnn, dn), vs, vload_n(dx + i, t, 0.0f)), t);
        }
    }
}

/* ------------------------------------------------------------------------------
 * Row softmax
 * --------------------------------------------------------------------------- */
/* o[n] = exp(x[n] - shift) ; returns sum o */
static float K(exp_shifted)(float *o, const float *x, int n, float shift) {
    vf vsh = vset1(shift), acc = vzero();
    int i = 0;
    for (; i + VL <= n; i += VL) {
        vf e = K(v_exp)(vsub(vload(x + i), vsh));
        vstore(o + i, e);
        acc = vadd(acc, e);
    }
    if (i < n) {
        /* padded lanes load -inf, whose exp (clamped, ~1e-38) cannot move the sum */
        vf e = K(v_exp)(vsub(vload_n(x + i, n - i, -INFINITY), vsh));
        vstore_n(o + i, e, n - i);
        acc = vadd(acc, e);
    }
    return vhsum(acc);
}

static void K(scale_row)(float *x, int n, float s) {
    vf vs = vset1(s);
    int i = 0;
    for (; i + VL <= n; i += VL) vstore(x + i, vmul(vload(x + i), vs));
    if (i < n) vstore_n(x + i, vmul(vload_n(x + i, n - i, 0.0f), vs), n - i);
}

/* out[N,C] = softmax(inp[N,C]) along C */
static void K(softmax_forward)(float *out, const float *inp, int N, int C) {
    for (int r = 0; r < N; r++) {
        const float *x = inp + (size_t)r * C;
        float *o = out + (size_t)r * C;
        float s = K(exp_shifted)(o, x, C, K(maxval)(x, C));
        K(scale_row)(o, C, 1.0f / s);
    }
}

/* dinp[N,C] += out * (dout - <dout, out>) */
static void K(softmax_backward)(float *dinp, const float *out, const float *dout, int N, int C) {
    for (int r = 0; r < N; r++) {
        const float *y = out + (size_t)r * C, *dy = dout + (size_t)r * C;
        float *dx = dinp + (size_t)r * C;
        vf d = vset1(K(dot)(y, dy, C));
        int i = 0;
        for (; i + VL <= C; i += VL)
            vstore(dx + i, vfma(vload(y + i), vsub(vload(dy + i), d), vload(dx + i)));
        if (i < C) {
            int t = C - i;
            vf yy = vload_n(y + i, t, 0.0f);
            vstore_n(dx + i, vfma(yy, vsub(vload_n(dy + i, t, 0.0f), d), vload_n(dx + i, t, 0.0f)), t);
        }
    }
}

/* ------------------------------------------------------------------------------
 * Causal multi-head self-attention
 * qkv[B,T,3C] -> out[B,T,C], att[B,NH,T,T] (probabilities; entries t2 > t are 0)
 * scratch: odin_att_scratch_floats(T, C/NH) floats; slopes[NH] or NULL: ALiBi, head h's
 * score of key j for query t gets slopes[h] * (j - t) added before the softmax
 *
 * Per head, keys (forward) and values (backward) are first transposed into a [hs, Tp]
 * panel, so a query's scores against VL keys at once are hs broadcast FMAs with no
 * horizontal sums; the key and value gradients gather in transposed panels the same way
 * and are added to dqkv once per head. Rows go in pairs (t, t+1), so each key vector or
 * gradient-panel vector loaded serves two rows; every sum keeps the order of one row at a
 * time. Outputs and query gradients are weighted sums of
 * rows, accumulated in registers over the keys, from a dense copy of the head's values
 * (forward) or keys (backward): read in place, each row is its own cache line 3C floats
 * from the next, and the loads stall.
 * --------------------------------------------------------------------------- */
/* pan[d*Tp + t] = src[t*ld + d] for d < hs, t < T; columns T..Tp-1 zero */
static void K(head_transpose)(float *pan, const float *src, int ld, int T, int hs, int Tp) {
    for (int d = 0; d < hs; d++) {
        float *row = pan + (size_t)d * Tp;
        for (int t = 0; t < T; t++) row[t] = src[(size_t)t * ld + d];
        for (int t = T; t < Tp; t++) row[t] = 0.0f;
    }
}

/* rows[t*hs + d] = src[t*ld + d] */
static void K(head_rows)(float *rows, const float *src, int ld, int T, int hs) {
    for (int t = 0; t < T; t++) memcpy(rows + (size_t)t * hs, src + (size_t)t * ld, sizeof(float) * (size_t)hs);
}

/* dst[t*ld + d] += pan[d*Tp + t] */
static void K(head_untranspose_add)(float *dst, int ld, const float *pan, int T, int hs, int Tp) {
    for (int t = 0; t < T; t++) {
        float *row = dst + (size_t)t * ld;
        for (int d = 0; d < hs; d++) row[d] += pan[(size_t)d * Tp + t];
    }
}

/* s[j] = scale * <x, column j of pan[hs, Tp]> for j < n (four key blocks in flight so
 * the FMA chains overlap); lanes up to the next multiple of VL below Tp are computed and
 * dropped */
static void K(head_scores)(float *s, const float *x, const float *pan, int n, int hs, int Tp, float scale) {
    const vf vs = vset1(scale);
    int j = 0;
    for (; j + 4 * VL <= n; j += 4 * VL) {
        vf a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
        for (int d = 0; d < hs; d++) {
            const float *p = pan + (size_t)d * Tp + j;
            vf xd = vset1(x[d]);
            a0 = vfma(xd, vload(p), a0);
            a1 = vfma(xd, vload(p + VL), a1);
            a2 = vfma(xd, vload(p + 2 * VL), a2);
            a3 = vfma(xd, vload(p + 3 * VL), a3);
        }
        vstore(s + j, vmul(a0, vs));
        vstore(s + j + VL, vmul(a1, vs));
        vstore(s + j + 2 * VL, vmul(a2, vs));
        vstore(s + j + 3 * VL, vmul(a3, vs));
    }
    for (; j < n; j += VL) {
        vf a0 = vzero();
        for (int d = 0; d < hs; d++) a0 = vfma(vset1(x[d]), vload(pan + (size_t)d * Tp + j), a0);
        if (j + VL <= n) vstore(s + j, vmul(a0, vs));
        else vstore_n(s + j, vmul(a0, vs), n - j);
    }
}

/* The pair (t, t+1): s0[j] for j < n and s1[j] for j <= n (n = t + 1 keys for row t), two
 * key blocks of both rows in flight */
static void K(head_scores2)(float *s0, float *s1, const float *x0, const float *x1, const float *pan,
                            int n, int hs, int Tp, float scale) {
    const vf vs = vset1(scale);
    int j = 0;
    for (; j + 2 * VL <= n; j += 2 * VL) {
        vf a0 = vzero(), a1 = vzero(), b0 = vzero(), b1 = vzero();
        for (int d = 0; d < hs; d++) {
            const float *p = pan + (size_t)d * Tp + j;
            const vf k0 = vload(p), k1 = vload(p + VL), u = vset1(x0[d]), w = vset1(x1[d]);
            a0 = vfma(u, k0, a0);
            a1 = vfma(u, k1, a1);
            b0 = vfma(w, k0, b0);
            b1 = vfma(w, k1, b1);
        }
        vstore(s0 + j, vmul(a0, vs));
        vstore(s0 + j + VL, vmul(a1, vs));
        vstore(s1 + j, vmul(b0, vs));
        vstore(s1 + j + VL, vmul(b1, vs));
    }
    for (; j <= n; j += VL) {
        vf a0 = vzero(), b0 = vzero();
        for (int d = 0; d < hs; d++) {
            const vf k0 = vload(pan + (size_t)d * Tp + j);
            a0 = vfma(vset1(x0[d]), k0, a0);
            b0 = vfma(vset1(x1[d]), k0, b0);
        }
        if (j + VL <= n) vstore(s0 + j, vmul(a0, vs));
        else if (j < n) vstore_n(s0 + j, vmul(a0, vs), n - j);
        if (j + VL <= n + 1) vstore(s1 + j, vmul(b0, vs));
        else vstore_n(s1 + j, vmul(b0, vs), n + 1 - j);
    }
}

/* o[hs] (+)= sum_{j<n} w[j] rows[j*ld .. +hs]; four partial sums per vector of o */
static void K(head_mix)(float *o, const float *w, const float *rows, int ld, int n, int hs, int accumulate) {
    for (int c = 0; c < hs; c += VL) {
        const int m = hs - c < VL ? hs - c : VL;
        vf a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
        const float *r = rows + c;
        int j = 0;
        if (m == VL) {
            for (; j + 4 <= n; j += 4, r += 4 * (size_t)ld) {
                a0 = vfma(vset1(w[j]), vload(r), a0);
                a1 = vfma(vset1(w[j + 1]), vload(r + ld), a1);
                a2 = vfma(vset1(w[j + 2]), vload(r + 2 * (size_t)ld), a2);
                a3 = vfma(vset1(w[j + 3]), vload(r + 3 * (size_t)ld), a3);
            }
            for (; j < n; j++, r += ld) a0 = vfma(vset1(w[j]), vload(r), a0);
        } else {
            for (; j < n; j++, r += ld) a0 = vfma(vset1(w[j]), vload_n(r, m, 0.0f), a0);
        }
        vf sum = vadd(vadd(a0, a1), vadd(a2, a3));
        if (m == VL) vstore(o + c, accumulate ? vadd(vload(o + c), sum) : sum);
        else vstore_n(o + c, accumulate ? vadd(vload_n(o + c, m, 0.0f), sum) : sum, m);
    }
}

/* pan[d*Tp + j] += x[d] * y[j] for d < hs, j < n */
static void K(head_outer)(float *pan, const float *x, const float *y, int n, int hs, int Tp) {
    for (int d = 0; d < hs; d++) {
        float *p = pan + (size_t)d * Tp;
        vf xd = vset1(x[d]);
        int j = 0;
        for (; j + VL <= n; j += VL) vstore(p + j, vfma(xd, vload(y + j), vload(p + j)));
        if (j < n) vstore_n(p + j, vfma(xd, vload_n(y + j, n - j, 0.0f), vload_n(p + j, n - j, 0.0f)), n - j);
    }
}

/* The pair (t, t+1): pan[d*Tp + j] += x0[d] y0[j] (j < n), then += x1[d] y1[j] (j <= n) */
static void K(head_outer2)(float *pan, const float *x0, const float *y0, const float *x1, const float *y1,
                           int n, int hs, int Tp) {
    for (int d = 0; d < hs; d++) {
        float *p = pan + (size_t)d * Tp;
        const vf u = vset1(x0[d]), w = vset1(x1[d]);
        int j = 0;
        for (; j + VL <= n; j += VL) vstore(p + j, vfma(w, vload(y1 + j), vfma(u, vload(y0 + j), vload(p + j))));
        const int m = n + 1 - j; /* 1..VL columns left, the last one row t+1's only */
        if (m == VL) {
            vstore(p + j, vfma(w, vload(y1 + j), vfma(u, vload_n(y0 + j, m - 1, 0.0f), vload(p + j))));
        } else {
            vf acc = vfma(u, vload_n(y0 + j, m - 1, 0.0f), vload_n(p + j, m, 0.0f));
            vstore_n(p + j, vfma(w, vload_n(y1 + j, m, 0.0f), acc), m);
        }
    }
}

/* one row of the softmax backward in place: g = a (g - <g, a>) scale over n keys */
static void K(softmax_row_backward)(float *g, const float *a, int n, float scale) {
    const vf dsum = vset1(K(dot)(g, a, n)), vs = vset1(scale);
    int j = 0;
    for (; j + VL <= n; j += VL) vstore(g + j, vmul(vmul(vload(a + j), vsub(vload(g + j), dsum)), vs));
    if (j < n) vstore_n(g + j, vmul(vmul(vload_n(a + j, n - j, 0.0f), vsub(vload_n(g + j, n - j, 0.0f), dsum)), vs), n - j);
}

static void K(attention_forward)(float *out, float *att, float *scratch, const float *qkv,
                                 const float *slopes, int B, int T, int C, int NH) {
    const int hs = C / NH, C3 = 3 * C, Tp = odin_att_pad(T);
    const float scale = 1.0f / sqrtf((float)hs);
    float *kt = scratch, *vr = kt + (size_t)hs * Tp; /* [hs, Tp] keys, [T, hs] values of one head */
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *base = qkv + (size_t)b * T * C3 + h * hs;
            K(head_transpose)(kt, base + C, C3, T, hs, Tp);
            K(head_rows)(vr, base + 2 * C, C3, T, hs);
            float *rows = att + ((size_t)b * NH + h) * T * T;
            for (int t = 0; t < T; t++) {
                float *a = rows + (size_t)t * T;
                if (t % 2 == 0 && t + 1 < T) /* scores of this row and the next */
                    K(head_scores2)(a, a + T, base + (size_t)t * C3, base + (size_t)(t + 1) * C3, kt, t + 1, hs, Tp, scale);
                else if (t % 2 == 0)
                    K(head_scores)(a, base + (size_t)t * C3, kt, t + 1, hs, Tp, scale);
                if (slopes)
                    for (int j = 0; j <= t; j++) a[j] += odin_alibi_bias(slopes[h], j, t);
                float sum = K(exp_shifted)(a, a, t + 1, K(maxval)(a, t + 1));
                K(scale_row)(a, t + 1, 1.0f / sum);
                if (t + 1 < T) memset(a + t + 1, 0, sizeof(float) * (size_t)(T - t - 1));
                K(head_mix)(out + ((size_t)b * T + t) * C + h * hs, a, vr, hs, t + 1, hs, 0);
            }
        }
}

/* dqkv[B,T,3C] += d/dqkv of the above */
static void K(attention_backward)(float *dqkv, float *scratch, const float *dout, const float *qkv,
                                  const float *att, int B, int T, int C, int NH) {
    const int hs = C / NH, C3 = 3 * C, Tp = odin_att_pad(T);
    const float scale = 1.0f / sqrtf((float)hs);
    const size_t panel = (size_t)hs * Tp;
    float *vt = scratch, *dkt = vt + panel, *dvt = dkt + panel, *kr = dvt + panel, *g = kr + panel; /* g[2, Tp] */
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *base = qkv + (size_t)b * T * C3 + h * hs;
            float *dbase = dqkv + (size_t)b * T * C3 + h * hs;
            K(head_transpose)(vt, base + 2 * C, C3, T, hs, Tp);
            K(head_rows)(kr, base + C, C3, T, hs);
            memset(dkt, 0, sizeof(float) * 2 * panel);
            const float *rows = att + ((size_t)b * NH + h) * T * T;
            const float *dys = dout + (size_t)b * T * C + h * hs;
            for (int t = 0; t < T; t += 2) {
                const int pair = t + 1 < T, n = t + 1;
                const float *a = rows + (size_t)t * T, *dy = dys + (size_t)t * C, *q = base + (size_t)t * C3;
                /* g = datt = <dy, v_j>; then through the softmax; dq += g K */
                if (pair) K(head_scores2)(g, g + Tp, dy, dy + C, vt, n, hs, Tp, 1.0f);
                else K(head_scores)(g, dy, vt, n, hs, Tp, 1.0f);
                for (int r = 0; r <= pair; r++) {
                    K(softmax_row_backward)(g + r * Tp, a + (size_t)r * T, n + r, scale);
                    K(head_mix)(dbase + (size_t)(t + r) * C3, g + r * Tp, kr, hs, n + r, hs, 1);
                }
                if (pair) {                                                  /* dk_j += g_j q ; dv_j += a_j dy */
                    K(head_outer2)(dkt, q, g, q + C3, g + Tp, n, hs, Tp);
                    K(head_outer2)(dvt, dy, a, dy + C, a + T, n, hs, Tp);
                } else {
                    K(head_outer)(dkt, q, g, n, hs, Tp);
                    K(head_outer)(dvt, dy, a, n, hs, Tp);
                }
            }
            K(head_untranspose_add)(dbase + C, C3, dkt, T, hs, Tp);
            K(head_untranspose_add)(dbase + 2 * C, C3, dvt, T, hs, Tp);
        }
}

/* ------------------------------------------------------------------------------
 * Embedding: out[B,T,C] = wte[tokens] + wpe[t] (wpe may be NULL) ; tokens already range-checked
 * --------------------------------------------------------------------------- */
static void K(embedding_forward)(float *out, const int32_t *tokens, const float *wte,
                                 const float *wpe, int B, int T, int C) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *o = out + ((size_t)b * T + t) * C;
            const float *te = wte + (size_t)tokens[b * T + t] * C;
            if (!wpe) { /* no position table (RWKV): a plain gather */
                memcpy(o, te, sizeof(float) * (size_t)C);
                continue;
            }
            const float *pe = wpe + (size_t)t * C;
            int i = 0;
            for (; i + VL <= C; i += VL) vstore(o + i, vadd(vload(te + i), vload(pe + i)));
            if (i < C) vstore_n(o + i, vadd(vload_n(te + i, C - i, 0.0f), vload_n(pe + i, C - i, 0.0f)), C - i);
        }
}

/* dwte[tokens] += dout ; dwpe[t] += dout   (in a fixed order: b, then t) */
static void K(embedding_backward)(float *dwte, float *dwpe, const float *dout,
                                  const int32_t *tokens, int B, int T, int C) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *g = dout + ((size_t)b * T + t) * C;
            if (dwte) K(axpy)(dwte + (size_t)tokens[b * T + t] * C, 1.0f, g, C);
            if (dwpe) K(axpy)(dwpe + (size_t)t * C, 1.0f, g, C);
        }
}

/* ------------------------------------------------------------------------------
 * Fused softmax + cross-entropy with a per-token mask
 * --------------------------------------------------------------------------- */
/* losses[N] (0 where masked), lse[N]; returns the sum of unmasked losses */
static double K(crossentropy_forward)(float *losses, float *lse, const float *logits,
                                      const int32_t *targets, const uint8_t *mask, int N, int V) {
    double total = 0.0;
    for (int r = 0; r < N; r++) {
        if (mask && !mask[r]) { losses[r] = 0.0f; lse[r] = 0.0f; continue; }
        const float *x = logits + (size_t)r * V;
        float mx = K(maxval)(x, V);
        /* sum exp(x - mx) without storing: reuse exp_shifted's math in registers */
        vf vsh = vset1(mx), acc = vzero();
        int i = 0;
        for (; i + VL <= V; i += VL) acc = vadd(acc, K(v_exp)(vsub(vload(x + i), vsh)));
        if (i < V) acc = vadd(acc, K(v_exp)(vsub(vload_n(x + i, V - i, -INFINITY), vsh)));
        float l = mx + odin_logf(vhsum(acc));
        lse[r] = l;
        losses[r] = l - x[targets[r]];
        total += losses[r];
    }
    return total;
}

/* dlogits[N,V] += scale * mask * (softmax(logits) - onehot(target)) */
static void K(crossentropy_backward)(float *dlogits, const float *logits, const float *lse,
                                     const int32_t *targets, const uint8_t *mask, int N, int V,
                                     float scale) {
    vf vsc = vset1(scale);
    for (int r = 0; r < N; r++) {
        if (mask && !mask[r]) continue;
        const float *x = logits + (size_t)r * V;
        float *dx = dlogits + (size_t)r * V;
        vf vl = vset1(lse[r]);
        int i = 0;
        for (; i + VL <= V; i += VL)
            vstore(dx + i, vfma(K(v_exp)(vsub(vload(x + i), vl)), vsc, vload(dx + i)));
        if (i < V) {
            int t = V - i;
            vf p = K(v_exp)(vsub(vload_n(x + i, t, 0.0f), vl));
            vstore_n(dx + i, vfma(p, vsc, vload_n(dx + i, t, 0.0f)), t);
        }
        dx[targets[r]] -= scale;
    }
}

/* ------------------------------------------------------------------------------
 * AdamW, norms
 * --------------------------------------------------------------------------- */
static inline vf K(v_adamw)(vf p, vf g, vf *m, vf *v, vf b1, vf b2, vf ib1, vf ib2,
                            vf ibc1, vf ibc2, vf lr, vf eps, vf wd) {
    *m = vfma(b1, *m, vmul(ib1, g));
    *v = vfma(b2, *v, vmul(ib2, vmul(g, g)));
    vf mhat = vmul(*m, ibc1), vhat = vmul(*v, ibc2);
    vf upd = vfma(wd, p, vdiv(mhat, vadd(vsqrt(vhat), eps)));
    return vfnma(lr, upd, p);
}

static void K(adamw)(float *params, const float *grads, float *m, float *v, size_t n,
                     float lr, float beta1, float beta2, float eps, float weight_decay,
                     float bc1, float bc2) {
    vf b1 = vset1(beta1), b2 = vset1(beta2), ib1 = vset1(1.0f - beta1), ib2 = vset1(1.0f - beta2);
    vf ibc1 = vset1(1.0f / bc1), ibc2 = vset1(1.0f / bc2), vlr = vset1(lr), veps = vset1(eps);
    vf wd = vset1(weight_decay);
    size_t i = 0;
    for (; i + VL <= n; i += VL) {
        vf mm = vload(m + i), vv = vload(v + i);
        vf p = K(v_adamw)(vload(params + i), vload(grads + i), &mm, &vv, b1, b2, ib1, ib2, ibc1, ibc2, vlr, veps, wd);
        vstore(params + i, p);
        vstore(m + i, mm);
        vstore(v + i, vv);
    }
    if (i < n) {
        int t = (int)(n - i);
        vf mm = vload_n(m + i, t, 0.0f), vv = vload_n(v + i, t, 0.0f);
        vf p = K(v_adamw)(vload_n(params + i, t, 0.0f), vload_n(grads + i, t, 0.0f), &mm, &vv,
                          b1, b2, ib1, ib2, ibc1, ibc2, vlr, veps, wd);
        vstore_n(params + i, p, t);
        vstore_n(m + i, mm, t);
        vstore_n(v + i, vv, t);
    }
}

/* sum x^2: float vectors over blocks of 4096, blocks added in double, in order.
 * A block whose float sum overflows (|x| above ~1.8e19 or many values near it) is
 * summed again in double, so a large but finite gradient gives a finite norm instead
 * of inf (which clip_by_norm would report as NaN/Inf in the gradients). */
static double K(sumsq)(const float *x, size_t n) {
    double total = 0.0;
    for (size_t start = 0; start < n; start += 4096) {
        int len = (int)((n - start) < 4096 ? (n - start) : 4096);
        float s = K(dot)(x + start, x + start, len);
        if (s <= 3.0e38f) {
            total += (double)s;
        } else { /* inf or NaN: redo in double; NaN/Inf in x stay NaN/Inf */
            double d = 0.0;
            for (int i = 0; i < len; i++) d += (double)x[start + i] * (double)x[start + i];
            total += d;
        }
    }
    return total;
}

static void K(scale)(float *x, size_t n, float s) {
    for (size_t start = 0; start < n; start += (1u << 30))
        K(scale_row)(x + start, (int)((n - start) < (1u << 30) ? (n - start) : (1u << 30)), s);
}

/* ------------------------------------------------------------------------------
 * RWKV-4: token shift, WKV recurrence, squared ReLU, sigmoid gate
 * --------------------------------------------------------------------------- */
/* the first n lanes (n in [1, VL]) from p, the others `fill`; and the matching store */
static inline vf K(vld)(const float *p, int n, float fill) { return n == VL ? vload(p) : vload_n(p, n, fill); }
static inline void K(vst)(float *p, vf v, int n) {
    if (n == VL) vstore(p, v);
    else vstore_n(p, v, n);
}

/* exp with underflow to exactly 0: v_exp floors at the smallest normal float (~1.2e-38),
 * and the WKV sums must not see that floor as a weight (a decay of e^-1e13 is 0; kept as
 * 1e-38 and multiplied by w = -1e13 in the chain rule it would become a gradient).
 * Equal to v_exp for x > -87, 0 for x <= -87; NaN stays NaN. */
static inline vf K(v_exp0)(vf x) {
    vf keep = vmin(vset1(1.0f), vmax(vzero(), vmul(vadd(x, vset1(87.0f)), vset1(1e30f))));
    return vmul(K(v_exp)(x), keep);
}

/* out[B,T,C] = xx + mix * (x - xx), xx = the previous token's row: x[b,t-1], and at t = 0
 * prev[b] (the recurrent state) or 0 when prev is NULL */
static void K(tokenshift_forward)(float *out, const float *x, const float *mix, const float *prev,
                                  int B, int T, int C) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const size_t row = ((size_t)b * T + t) * C;
            const float *xc = x + row, *xp = t ? xc - C : prev ? prev + (size_t)b * C : NULL;
            float *o = out + row;
            for (int i = 0; i < C; i += VL) {
                const int n = C - i < VL ? C - i : VL;
                vf p = xp ? K(vld)(xp + i, n, 0.0f) : vzero();
                K(vst)(o + i, vfma(K(vld)(mix + i, n, 0.0f), vsub(K(vld)(xc + i, n, 0.0f), p), p), n);
            }
        }
}

/* dx[B,T,C] += dout[t] mix + dout[t+1] (1 - mix) ; dmix[C] += sum_{b,t} dout[t] (x[t] - x[t-1])
 * (the training form: zero before t = 0) */
static void K(tokenshift_backward)(float *dx, float *dmix, const float *dout, const float *x,
                                   const float *mix, int B, int T, int C) {
    const vf one = vset1(1.0f);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const size_t row = ((size_t)b * T + t) * C;
            const float *xc = x + row, *xp = t ? xc - C : NULL;
            const float *g = dout + row, *gn = t + 1 < T ? g + C : NULL;
            float *d = dx + row;
            for (int i = 0; i < C; i += VL) {
                const int n = C - i < VL ? C - i : VL;
                vf m = K(vld)(mix + i, n, 0.0f), gi = K(vld)(g + i, n, 0.0f);
                vf acc = vfma(gi, m, K(vld)(d + i, n, 0.0f));
                if (gn) acc = vfma(K(vld)(gn + i, n, 0.0f), vsub(one, m), acc);
                K(vst)(d + i, acc, n);
                vf diff = K(vld)(xc + i, n, 0.0f);
                if (xp) diff = vsub(diff, K(vld)(xp + i, n, 0.0f));
                K(vst)(dmix + i, vfma(gi, diff, K(vld)(dmix + i, n, 0.0f)), n);
            }
        }
}

/* y[B,T,C] = wkv(k, v) per channel c, with w = -exp(time_decay[c]), u = time_first[c]:
 *   y_t = (sum_{i<t} e^{(t-1-i)w + k_i} v_i + e^{u+k_t} v_t) / (sum_{i<t} e^{(t-1-i)w + k_i} + e^{u+k_t})
 * Stable form: the two sums are kept as (aa, bb) times e^pp, pp the largest exponent of
 * their terms, so every exp() below has an argument <= 0.
 * state[B,3,C] (aa, bb, pp rows per sequence) is the state before t = 0 and receives the
 * state after t = T-1; NULL = start empty and keep nothing. Lanes are channels. */
static void K(wkv_forward)(float *y, float *state, const float *time_decay, const float *time_first,
                           const float *k, const float *v, int B, int T, int C) {
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c += VL) {
            const int n = C - c < VL ? C - c : VL;
            const vf w = vsub(vzero(), K(v_exp)(K(vld)(time_decay + c, n, 0.0f)));
            const vf u = K(vld)(time_first + c, n, 0.0f);
            float *st = state ? state + (size_t)b * 3 * C + c : NULL;
            vf aa = st ? K(vld)(st, n, 0.0f) : vzero();
            vf bb = st ? K(vld)(st + C, n, 0.0f) : vzero();
            vf pp = st ? K(vld)(st + 2 * C, n, ODIN_WKV_EMPTY) : vset1(ODIN_WKV_EMPTY);
            for (int t = 0; t < T; t++) {
                const size_t o = ((size_t)b * T + t) * C + c;
                vf kt = K(vld)(k + o, n, 0.0f), vt = K(vld)(v + o, n, 0.0f);
                /* output: the sums so far plus the current token with its bonus u */
                vf ww = vadd(u, kt), p = vmax(pp, ww);
                vf e1 = K(v_exp0)(vsub(pp, p)), e2 = K(v_exp0)(vsub(ww, p));
                K(vst)(y + o, vdiv(vfma(e1, aa, vmul(e2, vt)), vfma(e1, bb, e2)), n);
                /* state: decay the sums by e^w, add the current token */
                ww = vadd(w, pp);
                p = vmax(ww, kt);
                e1 = K(v_exp0)(vsub(ww, p));
                e2 = K(v_exp0)(vsub(kt, p));
                aa = vfma(e1, aa, vmul(e2, vt));
                bb = vfma(e1, bb, e2);
                pp = p;
            }
            if (st) {
                K(vst)(st, aa, n);
                K(vst)(st + C, bb, n);
                K(vst)(st + 2 * C, pp, n);
            }
        }
}

/* Exact gradient of wkv_forward from the empty state, two passes over t per channel:
 *  1. forward in time: the forward recurrence again, plus ga, gb = d(aa, bb)/dw in the same
 *     scale e^pp; gives dw = sum_t dy_t dy_t/dw and du; saves q_t = dy_t / den_t (den_t the
 *     scaled denominator, >= 1), its exponent p_t and y_t in scratch[3][T][C];
 *  2. backward in time: s1, s2 = sums over later outputs t > i of e^{(t-1-i)w - p_t} q_t
 *     (times y_t for s2), scaled by e^r with their own running maximum exponent r; then
 *       dv_i += e^{u+k_i-p_i} q_i + e^{k_i+r} s1
 *       dk_i += e^{u+k_i-p_i} q_i (v_i - y_i) + e^{k_i+r} (v_i s1 - s2)
 *     where k_i + r <= 0 because p_t >= k_i + (t-1-i)w: no exp() argument is positive.
 * dtime_decay[C] += dw * w (the chain through w = -exp(time_decay)), dtime_first[C] += du. */
static void K(wkv_backward)(float *dtime_decay, float *dtime_first, float *dk, float *dv, float *scratch,
                            const float *time_decay, const float *time_first, const float *k,
                            const float *v, const float *dy, int B, int T, int C) {
    float *sq = scratch, *sp = scratch + (size_t)T * C, *sy = scratch + 2 * (size_t)T * C;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c += VL) {
            const int n = C - c < VL ? C - c : VL;
            const vf w = vsub(vzero(), K(v_exp)(K(vld)(time_decay + c, n, 0.0f)));
            const vf u = K(vld)(time_first + c, n, 0.0f);
            vf aa = vzero(), bb = vzero(), pp = vset1(ODIN_WKV_EMPTY), ga = vzero(), gb = vzero();
            vf gw = vzero(), gu = vzero();
            for (int t = 0; t < T; t++) {
                const size_t o = ((size_t)b * T + t) * C + c, s = (size_t)t * C + c;
                vf kt = K(vld)(k + o, n, 0.0f), vt = K(vld)(v + o, n, 0.0f);
                vf ww = vadd(u, kt), p = vmax(pp, ww);
                vf e1 = K(v_exp0)(vsub(pp, p)), e2 = K(v_exp0)(vsub(ww, p));
                vf den = vfma(e1, bb, e2);
                vf yt = vdiv(vfma(e1, aa, vmul(e2, vt)), den);
                vf q = vdiv(K(vld)(dy + o, n, 0.0f), den);
                gw = vfma(vmul(vfnma(gb, yt, ga), e1), q, gw); /* dy/dw = (ga - y gb) e1 / den */
                gu = vfma(vmul(vsub(vt, yt), e2), q, gu);      /* dy/du = (v - y) e2 / den */
                K(vst)(sq + s, q, n);
                K(vst)(sp + s, p, n);
                K(vst)(sy + s, yt, n);
                ww = vadd(w, pp);
                p = vmax(ww, kt);
                e1 = K(v_exp0)(vsub(ww, p));
                e2 = K(v_exp0)(vsub(kt, p));
                ga = vmul(e1, vadd(aa, ga));
                gb = vmul(e1, vadd(bb, gb));
                aa = vfma(e1, aa, vmul(e2, vt));
                bb = vfma(e1, bb, e2);
                pp = p;
            }
            K(vst)(dtime_decay + c, vfma(gw, w, K(vld)(dtime_decay + c, n, 0.0f)), n);
            K(vst)(dtime_first + c, vadd(gu, K(vld)(dtime_first + c, n, 0.0f)), n);
            vf s1 = vzero(), s2 = vzero(), r = vset1(ODIN_WKV_EMPTY);
            for (int t = T - 1; t >= 0; t--) {
                const size_t o = ((size_t)b * T + t) * C + c, s = (size_t)t * C + c;
                vf kt = K(vld)(k + o, n, 0.0f), vt = K(vld)(v + o, n, 0.0f);
                vf q = K(vld)(sq + s, n, 0.0f), p = K(vld)(sp + s, n, 0.0f), yt = K(vld)(sy + s, n, 0.0f);
                vf later = K(v_exp0)(vadd(kt, r));                      /* e^{k_t + r} */
                vf now = vmul(K(v_exp0)(vsub(vadd(u, kt), p)), q);      /* e^{u+k_t-p_t} q_t */
                K(vst)(dv + o, vadd(K(vld)(dv + o, n, 0.0f), vfma(later, s1, now)), n);
                vf gk = vfma(now, vsub(vt, yt), vmul(later, vsub(vmul(vt, s1), s2)));
                K(vst)(dk + o, vadd(K(vld)(dk + o, n, 0.0f), gk), n);
                /* fold output t into s1, s2 for the tokens before it */
                vf mp = vsub(vzero(), p), wr = vadd(w, r), r2 = vmax(wr, mp);
                vf g1 = K(v_exp0)(vsub(wr, r2)), g2 = vmul(K(v_exp0)(vsub(mp, r2)), q);
                s1 = vfma(g1, s1, g2);
                s2 = vfma(g1, s2, vmul(g2, yt));
                r = r2;
            }
        }
}

/* out[n] = max(x, 0)^2 (the channel-mix key) */
static inline vf K(v_sqrelu)(vf x) {
    vf r = vmax(vzero(), x); /* NaN stays NaN: max returns its second operand on NaN */
    return vmul(r, r);
}
static void K(sqrelu_forward)(float *out, const float *inp, size_t n) { K_MAP(K(v_sqrelu), out, inp, n); }

/* dinp[n] += 2 max(x, 0) dout */
static void K(sqrelu_backward)(float *dinp, const float *inp, const float *dout, size_t n) {
    const vf two = vset1(2.0f);
    for (size_t i = 0; i < n; i += VL) {
        const int m = n - i < VL ? (int)(n - i) : VL;
        vf g = vmul(two, vmax(vzero(), K(vld)(inp + i, m, 0.0f)));
        K(vst)(dinp + i, vfma(g, K(vld)(dout + i, m, 0.0f), K(vld)(dinp + i, m, 0.0f)), m);
    }
}

/* out[n] += sigmoid(a) * b (the receptance gate; accumulates: fused with the residual add) */
static void K(sigmoid_gate_forward)(float *out, const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i += VL) {
        const int m = n - i < VL ? (int)(n - i) : VL;
        vf s = K(v_sigmoid)(K(vld)(a + i, m, 0.0f));
        K(vst)(out + i, vfma(s, K(vld)(b + i, m, 0.0f), K(vld)(out + i, m, 0.0f)), m);
    }
}

/* s = sigmoid(a): da[n] += dout b s (1 - s) ; db[n] += dout s */
static void K(sigmoid_gate_backward)(float *da, float *db, const float *dout, const float *a, const float *b,
                                     size_t n) {
    for (size_t i = 0; i < n; i += VL) {
        const int m = n - i < VL ? (int)(n - i) : VL;
        vf s = K(v_sigmoid)(K(vld)(a + i, m, 0.0f)), g = K(vld)(dout + i, m, 0.0f);
        vf ds = vfnma(s, s, s); /* s (1 - s) */
        K(vst)(da + i, vfma(vmul(g, K(vld)(b + i, m, 0.0f)), ds, K(vld)(da + i, m, 0.0f)), m);
        K(vst)(db + i, vfma(g, s, K(vld)(db + i, m, 0.0f)), m);
    }
}
