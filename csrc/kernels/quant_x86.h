/* quant_x86.h — quant_body.h's primitives for AVX2 and AVX-512 (one 256-bit register per
 * block of 32). Integer products: maddubs (u8 x s8 -> pairs of i16) then madd into i32,
 * or, where the CPU has VNNI, one dpbusd (u8 x s8, four products into each i32):
 * ODIN_QDOT_VNNI 1 = AVX512-VNNI (EVEX, with AVX512VL), 2 = AVX-VNNI (VEX). Signed x signed
 * goes through |x| and sign(y, x). Operands stay within [-127, 127], so no pair saturates. */
#define QF16(h) _cvtsh_ss(h) /* F16C: every AVX2 CPU has it (dispatch.c checks) */
typedef __m256i qv;
typedef __m256 qacc;

static inline qv qv_load(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
static inline qv qv_nibbles(const uint8_t *p) {
    const __m128i t = _mm_loadu_si128((const __m128i *)p);
    const __m256i both = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
}
static inline qv qv_or_bit4(qv v, uint32_t h) {
    /* byte j gets byte j / 8 of h, then its own bit j % 8 of it */
    const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32((int)h),
                                               _mm256_setr_epi64x(0, 0x0101010101010101LL, 0x0202020202020202LL,
                                                                  0x0303030303030303LL));
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    return _mm256_or_si256(v, _mm256_and_si256(set, _mm256_set1_epi8(0x10)));
}
static inline qv qv_sub(qv v, int c) { return _mm256_sub_epi8(v, _mm256_set1_epi8((char)c)); }
static inline qacc qacc_zero(void) { return _mm256_setzero_ps(); }
static inline qacc qacc_dot_us(qacc acc, qv u, qv s, float scale) {
#if ODIN_QDOT_VNNI == 1
    const __m256i sum = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#elif ODIN_QDOT_VNNI == 2
    const __m256i sum = _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s);
#else
    const __m256i sum = _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(scale), acc);
}
static inline qacc qacc_dot_ss(qacc acc, qv x, qv y, float scale) {
    return qacc_dot_us(acc, _mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x), scale);
}
static inline qacc qacc_add(qacc a, qacc b) { return _mm256_add_ps(a, b); }
static inline float qacc_sum(qacc a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* ---- eight rows at once (QROWS8, see quant_body.h) -----------------------------------------
 * Per block, each row's integer products stay in an 8-lane i32 vector; three rounds of hadd
 * reduce eight rows' vectors to one vector of their eight sums, whose lanes then meet the
 * eight rows' scales (gathered, converted from fp16 together) in one multiply-add. The order
 * of the lanes after the hadds is r0 r2 r4 r6 | r1 r3 r5 r7 for the nibble types (two rows per
 * register) and r0..r7 for q8_0; the scales are gathered in the same order, and the sums
 * restored to row order once at the end. */
static inline __m256i q8_dot(__m256i u, __m256i s) {
#if ODIN_QDOT_VNNI == 1
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#elif ODIN_QDOT_VNNI == 2
    return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}
/* Eight rows are eight streams through memory, which the hardware prefetchers follow poorly:
 * a matrix beyond the L3 (GPT-2's 41 MB q8_0 head) ran at 8 GB/s, against 17 GB/s row by row.
 * So block step i of a group also asks for the i-th nb-th of the next group's 8 rows (one
 * contiguous 8 x row_bytes region): the whole next group arrives while this one computes. */
static inline void q8_prefetch_next(const uint8_t *w, size_t rb, int i, size_t block_bytes) {
    const uint8_t *p = w + 8 * rb + (size_t)i * 8 * block_bytes;
    for (size_t j = 0; j < 8 * block_bytes; j += 64) _mm_prefetch((const char *)(p + j), _MM_HINT_T0);
}
/* eight fp16 values at p + index[i] (bytes) as floats */
static inline __m256 q8_gather_f16(const uint8_t *p, __m256i index) {
    const __m256i words = _mm256_i32gather_epi32((const int *)p, index, 1);
    const __m256i low = _mm256_shuffle_epi8(words, _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1,
                                                                     -1, -1, 0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1,
                                                                     -1, -1, -1, -1));
    const __m128i packed = _mm_unpacklo_epi64(_mm256_castsi256_si128(low), _mm256_extracti128_si256(low, 1));
    return _mm256_cvtph_ps(packed);
}
/* the four 8-lane vectors of row pairs (2p | 2p+1, four lanes each) -> r0 r2 r4 r6 | r1 r3 r5 r7 */
static inline __m256i q8_reduce_pairs(__m256i p0, __m256i p1, __m256i p2, __m256i p3) {
    return _mm256_hadd_epi32(_mm256_hadd_epi32(p0, p1), _mm256_hadd_epi32(p2, p3));
}
static inline void q8_store_pairs(float *s, __m256 v) { /* r0 r2 r4 r6 | r1 r3 r5 r7 -> r0..r7 */
    _mm256_storeu_ps(s, _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}
/* rows 2p and 2p+1 of a nibble block at byte offset off: their low and high nibbles */
static inline void q8_nibble_pair(const uint8_t *w, size_t rb, int p, size_t off, __m256i *lo, __m256i *hi) {
    const __m256i v = _mm256_loadu2_m128i((const __m128i *)(w + (2 * p + 1) * rb + off),
                                          (const __m128i *)(w + 2 * p * rb + off));
    const __m256i m = _mm256_set1_epi8(0x0f);
    *lo = _mm256_and_si256(v, m);
    *hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m);
}

static void qrows8_q8_0(float *s, const uint8_t *w, size_t rb, const odin_q8a *a, int nb) {
    const int rb_i = (int)rb;
    const __m256i rows = _mm256_setr_epi32(0, rb_i, 2 * rb_i, 3 * rb_i, 4 * rb_i, 5 * rb_i, 6 * rb_i, 7 * rb_i);
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < nb; i++) {
        const size_t off = (size_t)i * sizeof(odin_block_q8_0);
        q8_prefetch_next(w, rb, i, sizeof(odin_block_q8_0));
        const __m256i q = _mm256_loadu_si256((const __m256i *)a[i].q);
        __m256i p[8];
        for (int r = 0; r < 8; r++) {
            const __m256i x = _mm256_loadu_si256((const __m256i *)(w + r * rb + off + 2));
            p[r] = q8_dot(_mm256_sign_epi8(x, x), _mm256_sign_epi8(q, x));
        }
        /* eight 8-lane vectors -> r0..r3 | r0..r3 (lane halves), then the halves added */
        const __m256i h0 = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
        const __m256i h1 = _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7]));
        const __m256i sum = _mm256_add_epi32(_mm256_permute2x128_si256(h0, h1, 0x20),
                                             _mm256_permute2x128_si256(h0, h1, 0x31));
        const __m256 d = q8_gather_f16(w + off, rows);
        acc = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(a[i].d)), d, acc);
    }
    _mm256_storeu_ps(s, acc);
}
/* q5 types: rows 2p and 2p+1's fifth bits (qh at byte offset qh_off) set in the pair's low and
 * high halves: the low register holds both rows' weights 0..15, the high one 16..31 */
static inline void q8_fifth_bits_pair(const uint8_t *w, size_t rb, int p, size_t qh_off, __m256i *lo, __m256i *hi) {
    uint32_t a, b;
    memcpy(&a, w + 2 * p * rb + qh_off, 4);
    memcpy(&b, w + (2 * p + 1) * rb + qh_off, 4);
    *lo = qv_or_bit4(*lo, (a & 0xffffu) | (b << 16));
    *hi = qv_or_bit4(*hi, (a >> 16) | (b & 0xffff0000u));
}

/* The 4- and 5-bit types, one body: a block of block_bytes holds d at 0, then (the "_1"
 * types) m at 2, then (the 5-bit types) the fifth bits at qh_off, then the nibbles at qs_off.
 * "_0" types: d (sum u a da - offset sa); "_1" types: d sum u a da + m sa. The arguments are
 * constants at each call below, so each type gets its own loop. */
static inline void qrows8_nibbles(float *s, const uint8_t *w, size_t rb, const odin_q8a *a, int nb,
                                  size_t block_bytes, size_t qs_off, int qh_off, int has_min, float offset) {
    const int rb_i = (int)rb;
    const __m256i rows = _mm256_setr_epi32(0, 2 * rb_i, 4 * rb_i, 6 * rb_i, rb_i, 3 * rb_i, 5 * rb_i, 7 * rb_i);
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < nb; i++) {
        const size_t off = (size_t)i * block_bytes;
        q8_prefetch_next(w, rb, i, block_bytes);
        const __m256i a_lo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)a[i].q));
        const __m256i a_hi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(a[i].q + 16)));
        __m256i p[4];
        for (int k = 0; k < 4; k++) {
            __m256i lo, hi;
            q8_nibble_pair(w, rb, k, off + qs_off, &lo, &hi);
            if (qh_off >= 0) q8_fifth_bits_pair(w, rb, k, off + (size_t)qh_off, &lo, &hi);
            p[k] = _mm256_add_epi32(q8_dot(lo, a_lo), q8_dot(hi, a_hi));
        }
        const __m256 sums = _mm256_cvtepi32_ps(q8_reduce_pairs(p[0], p[1], p[2], p[3]));
        const __m256 d = q8_gather_f16(w + off, rows);
        if (has_min) {
            acc = _mm256_fmadd_ps(_mm256_mul_ps(sums, _mm256_set1_ps(a[i].d)), d, acc);
            acc = _mm256_fmadd_ps(q8_gather_f16(w + off + 2, rows), _mm256_set1_ps(a[i].s), acc);
        } else {
            const __m256 t = _mm256_fmsub_ps(sums, _mm256_set1_ps(a[i].d), _mm256_set1_ps(offset * a[i].s));
            acc = _mm256_fmadd_ps(t, d, acc);
        }
    }
    q8_store_pairs(s, acc);
}
static void qrows8_q4_0(float *s, const uint8_t *w, size_t rb, const odin_q8a *a, int nb) {
    qrows8_nibbles(s, w, rb, a, nb, sizeof(odin_block_q4_0), offsetof(odin_block_q4_0, qs), -1, 0, 8.0f);
}
static void qrows8_q4_1(float *s, const uint8_t *w, size_t rb, const odin_q8a *a, int nb) {
    qrows8_nibbles(s, w, rb, a, nb, sizeof(odin_block_q4_1), offsetof(odin_block_q4_1, qs), -1, 1, 0.0f);
}
static void qrows8_q5_0(float *s, const uint8_t *w, size_t rb, const odin_q8a *a, int nb) {
    qrows8_nibbles(s, w, rb, a, nb, sizeof(odin_block_q5_0), offsetof(odin_block_q5_0, qs),
                   (int)offsetof(odin_block_q5_0, qh), 0, 16.0f);
}
static void qrows8_q5_1(float *s, const uint8_t *w, size_t rb, const odin_q8a *a, int nb) {
    qrows8_nibbles(s, w, rb, a, nb, sizeof(odin_block_q5_1), offsetof(odin_block_q5_1, qs),
                   (int)offsetof(odin_block_q5_1, qh), 1, 0.0f);
}
#define QROWS8_q5_0 qrows8_q5_0
#define QROWS8_q5_1 qrows8_q5_1
#define QROWS8_q8_0 qrows8_q8_0
#define QROWS8_q4_0 qrows8_q4_0
#define QROWS8_q4_1 qrows8_q4_1
