/* quant_body.h — quantized matrix-vector products, written once over per-ISA primitives.
 *
 * Included by each ISA file after kernel_body.h. The file defines, for 32 int8 lanes:
 *   qv                 32 int8 lanes;  qacc: a float accumulator (one or more lanes)
 *   qv_load(p)         32 bytes
 *   qv_nibbles(p)      16 bytes -> 32 lanes in [0, 15]: the low nibbles, then the high ones
 *   qv_or_bit4(v, h)   lane j |= ((h >> j) & 1) << 4       (the fifth bits of q5 types)
 *   qv_sub(v, c)       lane j = v[j] - c
 *   qacc_zero()
 *   qacc_dot_us(a, u, s, scale)  a + scale * sum_j u[j] s[j], u in [0, 127], s in [-127, 127]
 *   qacc_dot_ss(a, x, y, scale)  the same for two signed operands in [-127, 127]
 *   qacc_sum(a)        the float total
 * Each type's row product sums its blocks in order (lane partial sums per ISA: results differ
 * between ISAs only in float summation order).
 *
 *   qmatvec_<type>(out, ldo, w, row_bytes, n_rows, a, nb, M, acc):
 *     out[m * ldo + n] (+)= row n of w (nb blocks)  .  activations a[m * nb .. (m + 1) * nb)
 *     for n < n_rows, m < M.
 */

static inline float K(qrow_q8_0)(const uint8_t *w, const odin_q8a *a, int nb) {
    const odin_block_q8_0 *b = (const odin_block_q8_0 *)w;
    qacc acc = qacc_zero();
    for (int i = 0; i < nb; i++)
        acc = qacc_dot_ss(acc, qv_load(b[i].qs), qv_load(a[i].q), odin_fp16_to_f32(b[i].d) * a[i].d);
    return qacc_sum(acc);
}

static inline float K(qrow_q4_0)(const uint8_t *w, const odin_q8a *a, int nb) {
    const odin_block_q4_0 *b = (const odin_block_q4_0 *)w;
    qacc acc = qacc_zero();
    for (int i = 0; i < nb; i++)
        acc = qacc_dot_ss(acc, qv_sub(qv_nibbles(b[i].qs), 8), qv_load(a[i].q), odin_fp16_to_f32(b[i].d) * a[i].d);
    return qacc_sum(acc);
}

static inline float K(qrow_q4_1)(const uint8_t *w, const odin_q8a *a, int nb) {
    const odin_block_q4_1 *b = (const odin_block_q4_1 *)w;
    qacc acc = qacc_zero();
    float mins = 0.0f;
    for (int i = 0; i < nb; i++) {
        acc = qacc_dot_us(acc, qv_nibbles(b[i].qs), qv_load(a[i].q), odin_fp16_to_f32(b[i].d) * a[i].d);
        mins += odin_fp16_to_f32(b[i].m) * a[i].s;
    }
    return qacc_sum(acc) + mins;
}

static inline uint32_t K(qh_bits)(const uint8_t qh[4]) {
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

static inline float K(qrow_q5_0)(const uint8_t *w, const odin_q8a *a, int nb) {
    const odin_block_q5_0 *b = (const odin_block_q5_0 *)w;
    qacc acc = qacc_zero();
    for (int i = 0; i < nb; i++) {
        const qv q = qv_sub(qv_or_bit4(qv_nibbles(b[i].qs), K(qh_bits)(b[i].qh)), 16);
        acc = qacc_dot_ss(acc, q, qv_load(a[i].q), odin_fp16_to_f32(b[i].d) * a[i].d);
    }
    return qacc_sum(acc);
}

static inline float K(qrow_q5_1)(const uint8_t *w, const odin_q8a *a, int nb) {
    const odin_block_q5_1 *b = (const odin_block_q5_1 *)w;
    qacc acc = qacc_zero();
    float mins = 0.0f;
    for (int i = 0; i < nb; i++) {
        const qv q = qv_or_bit4(qv_nibbles(b[i].qs), K(qh_bits)(b[i].qh));
        acc = qacc_dot_us(acc, q, qv_load(a[i].q), odin_fp16_to_f32(b[i].d) * a[i].d);
        mins += odin_fp16_to_f32(b[i].m) * a[i].s;
    }
    return qacc_sum(acc) + mins;
}

#define ODIN_QMATVEC(type)                                                                                      \
    static void K(qmatvec_##type)(float *out, int ldo, const uint8_t *w, size_t row_bytes, int n_rows,        \
                                  const odin_q8a *a, int nb, int M, int acc) {                                  \
        for (int n = 0; n < n_rows; n++) {                                                                     \
            const uint8_t *row = w + (size_t)n * row_bytes;                                                    \
            for (int m = 0; m < M; m++) {                                                                      \
                const float s = K(qrow_##type)(row, a + (size_t)m * nb, nb);                                   \
                float *o = out + (size_t)m * ldo + n;                                                          \
                *o = acc ? *o + s : s;                                                                         \
            }                                                                                                  \
        }                                                                                                      \
    }
ODIN_QMATVEC(q8_0)
ODIN_QMATVEC(q4_0)
ODIN_QMATVEC(q4_1)
ODIN_QMATVEC(q5_0)
ODIN_QMATVEC(q5_1)
#undef ODIN_QMATVEC
