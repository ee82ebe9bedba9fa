/* overflow_main.c — shapes whose sizes overflow int or size_t, straight into the C API (no
 * Python in front to catch them): each must come back as a clean error naming an argument,
 * with nothing allocated from a wrapped size. tools/sanitize.py runs it under ASan + UBSan
 * (tests/test_sanitizers.py); a heap overflow or a signed overflow there is a report.
 * Prints one line per case and OK at the end; exits 1 on the first wrong answer. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "odin.h"

static int failures;

static void expect(const char *what, odin_status got, odin_status want, const char *word) {
    const char *msg = odin_last_error();
    const int ok = got == want && (!word || strstr(msg, word));
    printf("%s: %s (status %d, \"%s\")\n", what, ok ? "ok" : "WRONG", (int)got, got ? msg : "");
    if (!ok) failures++;
}

int main(void) {
    odin_gpt *g = NULL;
    odin_rwkv *r = NULL;
    /* the tensor count of these wraps a 32-bit int (issue 18 item 16) */
    expect("gpt n_layer=357913942", odin_gpt_create_ex(&g, 10, 8, 357913942, 1, 8, 1e-5f, 0), ODIN_BAD_ARG, "n_layer");
    expect("rwkv n_layer=238609295", odin_rwkv_create(&r, 10, 238609295, 8, 32, 1e-5f), ODIN_BAD_ARG, "n_layer");
    expect("gpt n_layer=INT_MAX", odin_gpt_create_ex(&g, 10, 8, 2147483647, 1, 8, 1e-5f, 0), ODIN_BAD_ARG, "n_layer");
    /* 4 * d_model and 3 * d_model wrap an int */
    expect("gpt d_model=2^30", odin_gpt_create_ex(&g, 10, 8, 1, 1, 1 << 30, 1e-5f, 0), ODIN_BAD_ARG, "d_model");
    expect("rwkv d_ffn=2^31-1", odin_rwkv_create(&r, 10, 1, 8, 2147483647, 1e-5f), ODIN_BAD_ARG, "d_ffn");
    /* products that overflow size_t: n_layer * 12 d_model^2, vocab * d_model * ... */
    expect("gpt params overflow", odin_gpt_create_ex(&g, 1 << 28, 1 << 28, 40000000, 1, 1 << 28, 1e-5f, 0),
           ODIN_BAD_ARG, "n_layer=40000000");
    expect("rwkv params overflow", odin_rwkv_create(&r, 1 << 28, 29000000, 1 << 28, 1 << 28, 1e-5f), ODIN_BAD_ARG,
           "d_model=268435456");
    expect("gpt ln_eps=inf", odin_gpt_create_ex(&g, 10, 8, 1, 1, 8, INFINITY, 0), ODIN_BAD_ARG, "ln_eps");
    expect("rwkv ln_eps=nan", odin_rwkv_create(&r, 10, 1, 8, 32, NAN), ODIN_BAD_ARG, "ln_eps");
    expect("gpt n_layer=-1", odin_gpt_create_ex(&g, 10, 8, -1, 1, 8, 1e-5f, 0), ODIN_BAD_SHAPE, "n_layer");
    if (g || r) { printf("a model was created from a bad shape\n"); return 1; }

    /* a small model: workspaces and caches whose sizes overflow */
    expect("gpt small", odin_gpt_create_ex(&g, 16, 8, 1, 2, 8, 1e-5f, 0), ODIN_OK, NULL);
    expect("rwkv small", odin_rwkv_create(&r, 16, 1, 8, 32, 1e-5f), ODIN_OK, NULL);
    odin_gpt_ws *gw = NULL;
    odin_rwkv_ws *rw = NULL;
    odin_gpt_cache *gc = NULL;
    odin_rwkv_state *rs = NULL;
    expect("gpt ws B*T wraps", odin_gpt_ws_create(&gw, g, 1 << 30, 8), ODIN_BAD_ARG, "B * T");
    expect("rwkv ws B*T wraps", odin_rwkv_ws_create(&rw, r, 65536, 65536), ODIN_BAD_ARG, "B * T");
    expect("gpt cache B=2^31-1", odin_gpt_cache_create(&gc, g, 2147483647), ODIN_BAD_ARG, "B");
    expect("rwkv state B=2^31-1", odin_rwkv_state_create(&rs, r, 2147483647), ODIN_BAD_ARG, "B");
    if (gw || rw || gc || rs) { printf("a buffer was created from a bad size\n"); return 1; }

    /* greedy generation with max_new near INT_MAX: prompt length + max_new wrapped an int */
    int32_t prompt[2] = {1, 2}, prompt_len = 2, gen[2] = {-1, -1}, gen_len = 0;
    expect("gpt greedy cache", odin_gpt_cache_create(&gc, g, 1), ODIN_OK, NULL);
    expect("gpt greedy max_new=INT_MAX",
           odin_gpt_generate_greedy(g, gc, prompt, &prompt_len, 1, 2, 2147483647, 0, gen, &gen_len), ODIN_BAD_ARG,
           "context");
    expect("rwkv greedy state", odin_rwkv_state_create(&rs, r, 1), ODIN_OK, NULL);
    /* zero weights: every logit equal, argmax 0 = end_id, so one token is written */
    expect("rwkv greedy max_new=INT_MAX",
           odin_rwkv_generate_greedy(r, rs, prompt, &prompt_len, 1, 2, 2147483647, 0, gen, &gen_len), ODIN_OK, NULL);
    if (gen_len != 1 || gen[0] != 0) { printf("rwkv greedy wrote %d tokens\n", (int)gen_len); failures++; }
    odin_gpt_cache_free(gc);
    odin_rwkv_state_free(rs);

    /* the sampler: NaN anywhere in the logits, a NaN temperature */
    float logits[4] = {0.0f, NAN, 1.0f, 2.0f};
    uint64_t rng = 1;
    int32_t token = -1;
    expect("sample NaN logit", odin_sample(logits, 4, 0.0f, 0, 1.0f, &rng, &token), ODIN_NAN_DETECTED, "NaN");
    logits[1] = 0.5f;
    expect("sample NaN temperature", odin_sample(logits, 4, NAN, 0, 1.0f, &rng, &token), ODIN_BAD_ARG, "temperature");
    expect("sample ok", odin_sample(logits, 4, 0.0f, 0, 1.0f, &rng, &token), ODIN_OK, NULL);
    odin_gpt_free(g);
    odin_rwkv_free(r);
    if (failures) return 1;
    printf("OK\n");
    return 0;
}
