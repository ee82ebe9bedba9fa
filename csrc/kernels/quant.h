/* quant.h — llama.cpp's 32-weight block formats (internal; the type ids are in odin.h).
 *
 * A quantized row of K weights (K a multiple of 32) is K / 32 blocks, byte for byte as
 * ggml lays them out, so the same bytes go into a GGUF file and come back from one:
 *
 *   q8_0  d (fp16), qs[32] int8                       w = d * q
 *   q4_0  d, qs[16]: q[j] | q[j+16] << 4              w = d * (q - 8)
 *   q4_1  d, m (fp16), qs[16]                          w = d * q + m
 *   q5_0  d, qh (32 fifth bits, little-endian), qs[16] w = d * (q - 16)
 *   q5_1  d, m, qh, qs[16]                             w = d * q + m
 *
 * Products at batch 1 (decoding) quantize the activations to 8 bits per 32 (odin_q8a, as
 * llama.cpp's q8_0 / q8_1) and take integer dot products, block by block; each ISA file
 * supplies the 32-lane integer primitives that quant_body.h is written over.
 */
#ifndef ODIN_QUANT_H
#define ODIN_QUANT_H
#include <stdint.h>
#include <string.h>

#define ODIN_QK 32          /* weights per block */
#define ODIN_QTYPE_SLOTS 9  /* type ids are ggml's (0 f32, 2 q4_0, 3 q4_1, 6 q5_0, 7 q5_1, 8 q8_0) */

typedef struct { uint16_t d; int8_t qs[32]; } odin_block_q8_0;                   /* 34 bytes */
typedef struct { uint16_t d; uint8_t qs[16]; } odin_block_q4_0;                  /* 18 */
typedef struct { uint16_t d, m; uint8_t qs[16]; } odin_block_q4_1;               /* 20 */
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } odin_block_q5_0;   /* 22 */
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } odin_block_q5_1; /* 24 */

/* 32 activations: x ~= d * q; s = d * sum(q) (what the "+ m" types need). */
typedef struct { float d, s; int8_t q[32]; } odin_q8a;

/* fp16 -> fp32, exact: the 15 low bits moved into a float's place and scaled by 2^112
 * (normals and subnormals alike); Inf/NaN keep an all-ones exponent. */
static inline float odin_fp16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, em = h & 0x7fffu;
    uint32_t bits;
    float f;
    if (em >= 0x7c00u) {
        bits = sign | 0x7f800000u | ((em & 0x3ffu) << 13);
        memcpy(&f, &bits, 4);
        return f;
    }
    bits = em << 13;
    memcpy(&f, &bits, 4);
    f *= 0x1p112f;
    memcpy(&bits, &f, 4);
    bits |= sign;
    memcpy(&f, &bits, 4);
    return f;
}

/* fp32 -> fp16, round to nearest even (as numpy's astype(float16) and ggml's reference). */
static inline uint16_t odin_f32_to_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds past 65504 */
    if (ax < 0x38800000u) {
        /* below 2^-14: a half subnormal, in units of 2^-24 = the ulp of 0.5f, so the FPU's
         * own round-to-nearest-even does it */
        float a;
        memcpy(&a, &ax, 4);
        a += 0.5f;
        uint32_t b;
        memcpy(&b, &a, 4);
        return (uint16_t)(sign | (b - 0x3f000000u));
    }
    const uint32_t odd = (ax >> 13) & 1u;
    return (uint16_t)(sign | ((ax + 0xc8000fffu + odd) >> 13)); /* rebias by -112, round */
}

#endif
