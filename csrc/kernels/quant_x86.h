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
