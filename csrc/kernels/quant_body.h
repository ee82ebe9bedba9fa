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
 *   qacc_add(a, b)     lane-wise sum of two accumulators
 *   qacc_sum(a)        the float total
 *   QF16(h)            fp16 -> float (exact; odin_fp16_to_f32 unless the ISA has an instruction)
 * Each type's row product sums its blocks in order (lane partial sums per ISA: results differ
 * between ISAs only in float summation order). The "_0" 4- and 5-bit types are taken as
 * unsigned codes u with w = d (u - 8) (or 16): sum w a = d (sum u a - 8 sum a), and sum a is
 * the activation block's s / d, so they need no signed products (which cost two sign ops). 
 *
 *   qmatvec_<type>(out, ldo, w, row_bytes, n_rows, a, nb, M, acc):
 *     out[m * ldo + n] (+)= row n of w (nb blocks)  .  activations a[m * nb .. (m + 1) * nb)
 *     for n < n_rows, m < M.
 */

#ifndef QF16
#define QF16(h) odin_fp16_to_f32(h)
#endif

/* Two accumulators, even and odd blocks: a block's scaled add waits on the previous one's
 * (an FMA's latency), so one chain would leave the integer units idle half the time. */
#define ROWS_TWO_CHAINS(STEP)                          \
    qacc acc0 = qacc_zero(), acc1 = qacc_zero();       \
    int i = 0;                                         \
    for (; i + 2 <= nb; i += 2) {                      \
        STEP(acc0, i);                                 \
        STEP(acc1, i + 1);                             \
    }                                                  \
    if (i < nb) STEP(acc0, i)
static inline float K(qrow_q8_0)(const uint8_t *w, const odin_q8a *a, int nb) {
    const odin_block_q8_0 *b = (const odin_block_q8_0 *)w;
#define STEP(acc, i) acc = qacc_dot_ss(acc, qv_load(b[i].qs), qv_load(a[i].q), QF16(b[i].d) * a[i].d)
    ROWS_TWO_CHAINS(STEP);
#undef STEP
    return qacc_sum(qacc_add(acc0, acc1));
}

/* The "_0" types with the offset taken off at the end (see the top), the "_1" types with
 * their minimum: both add a scalar per block, d (or m) times the activations' s. */
static inline float K(qrow_q4_0)(const uint8_t *w, const odin_q8a *a, int nb) {
    const odin_block_q4_0 *b = (const odin_block_q4_0 *)w;
    float mins = 0.0f;
#define STEP(acc, i)                                                                   \
    do {                                                                               \
        const float d_ = QF16(b[i].d);                                                 \
        acc = qacc_dot_us(acc, qv_nibbles(b[i].qs), qv_load(a[i].q), d_ * a[i].d);     \
        mins += d_ * a[i].s;                                                           \
    } while (0)
    ROWS_TWO_CHAINS(STEP);
#undef STEP
    return qacc_sum(qacc_add(acc0, acc1)) - 8.0f * mins;
}

static inline float K(qrow_q4_1)(const uint8_t *w, const odin_q8a *a, int nb) {
    const odin_block_q4_1 *b = (const odin_block_q4_1 *)w;
    float mins = 0.0f;
#define STEP(acc, i)                                                                         \
    do {                                                                                     \
        acc = qacc_dot_us(acc, qv_nibbles(b[i].qs), qv_load(a[i].q), QF16(b[i].d) * a[i].d); \
        mins += QF16(b[i].m) * a[i].s;                                                       \
    } while (0)
    ROWS_TWO_CHAINS(STEP);
#undef STEP
    return qacc_sum(qacc_add(acc0, acc1)) + mins;
}

static inline uint32_t K(qh_bits)(const uint8_t qh[4]) {
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

static inline float K(qrow_q5_0)(const uint8_t *w, const odin_q8a *a, int nb) {
    const odin_block_q5_0 *b = (const odin_block_q5_0 *)w;
    float mins = 0.0f;
#define STEP(acc, i)                                                                                   \
    do {                                                                                               \
        const float d_ = QF16(b[i].d);                                                                 \
        const qv q_ = qv_or_bit4(qv_nibbles(b[i].qs), K(qh_bits)(b[i].qh));                            \
        acc = qacc_dot_us(acc, q_, qv_load(a[i].q), d_ * a[i].d);                                      \
        mins += d_ * a[i].s;                                                                           \
    } while (0)
    ROWS_TWO_CHAINS(STEP);
#undef STEP
    return qacc_sum(qacc_add(acc0, acc1)) - 16.0f * mins;
}

static inline float K(qrow_q5_1)(const uint8_t *w, const odin_q8a *a, int nb) {
    const odin_block_q5_1 *b = (const odin_block_q5_1 *)w;
    float mins = 0.0f;
#define STEP(acc, i)                                                                                   \
    do {                                                                                               \
        const qv q_ = qv_or_bit4(qv_nibbles(b[i].qs), K(qh_bits)(b[i].qh));                            \
        acc = qacc_dot_us(acc, q_, qv_load(a[i].q), QF16(b[i].d) * a[i].d);                            \
        mins += QF16(b[i].m) * a[i].s;                                                                 \
    } while (0)
    ROWS_TWO_CHAINS(STEP);
#undef STEP
    return qacc_sum(qacc_add(acc0, acc1)) + mins;
}

/* An ISA may also give QROWS8_<type>(s[8], w, row_bytes, a, nb): eight rows' products at
 * once (quant_x86.h: the eight rows' per-block scales and sums handled as vectors); the
 * rows past the last whole eight take the one-row path. */
#ifndef QROWS8_q8_0
#define QROWS8_q8_0 NULL
#endif
#ifndef QROWS8_q4_0
#define QROWS8_q4_0 NULL
#endif
#ifndef QROWS8_q4_1
#define QROWS8_q4_1 NULL
#endif
#ifndef QROWS8_q5_0
#define QROWS8_q5_0 NULL
#endif
#ifndef QROWS8_q5_1
#define QROWS8_q5_1 NULL
#endif
typedef void (*K(qrows8_fn))(float *s, const uint8_t *w, size_t row_bytes, const odin_q8a *a, int nb);

#define ODIN_QMATVEC(type)                                                                                      \
    static void K(qmatvec_##type)(float *out, int ldo, const uint8_t *w, size_t row_bytes, int n_rows,        \
                                  const odin_q8a *a, int nb, int M, int acc) {                                  \
        int n = 0;                                                                                             \
        const K(qrows8_fn) rows8 = QROWS8_##type;                                                              \
        if (rows8)                                                                                             \
            for (; n + 8 <= n_rows; n += 8)                                                                    \
                for (int m = 0; m < M; m++) {                                                                  \
                    float s[8];                                                                                \
                    rows8(s, w + (size_t)n * row_bytes, row_bytes, a + (size_t)m * nb, nb);                    \
                    float *o = out + (size_t)m * ldo + n;                                                      \
                    for (int r = 0; r < 8; r++) o[r] = acc ? o[r] + s[r] : s[r];                               \
                }                                                                                              \
        for (; n < n_rows; n++) {                                                                              \
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
#undef ROWS_TWO_CHAINS
