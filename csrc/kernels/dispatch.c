/* dispatch.c — finds what the CPU (and the OS) can run and picks the kernel table.
 *
 * AVX and AVX-512 need OS support for their register state as well as CPU support:
 * CPUID says what the silicon has, XGETBV (XCR0) says which register files the OS
 * saves on a context switch. Using zmm registers the OS does not save would corrupt
 * other processes' state, so both are checked.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../internal.h"

const odin_kernel_table *odin_kern = &odin_kernels_scalar;

typedef struct {
    int sse2, sse41, avx, fma, f16c, avx2, avx512f, avx512bw, avx512vl, avx512dq, avx512vnni, avxvnni, os_avx, os_avx512;
    char model[64];
} cpu_info;

static cpu_info g_cpu;
static char g_features[256];
static char g_isas[64];

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
static unsigned long long read_xcr0(void) {
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

static void detect(cpu_info *c) {
    unsigned int a, b, cx, d, maxleaf = __get_cpuid_max(0, NULL);
    if (maxleaf >= 1 && __get_cpuid(1, &a, &b, &cx, &d)) {
        c->sse2 = (d >> 26) & 1;
        c->sse41 = (cx >> 19) & 1;
        c->fma = (cx >> 12) & 1;
        c->f16c = (cx >> 29) & 1;
        c->avx = (cx >> 28) & 1;
        int osxsave = (cx >> 27) & 1;
        if (osxsave) {
            unsigned long long xcr0 = read_xcr0();
            c->os_avx = (xcr0 & 0x6) == 0x6;          /* xmm + ymm state */
            c->os_avx512 = (xcr0 & 0xe6) == 0xe6;     /* + opmask, zmm hi256, hi16 zmm */
        }
    }
    if (maxleaf >= 7) {
        __cpuid_count(7, 0, a, b, cx, d);
        c->avx2 = (b >> 5) & 1;
        c->avx512f = (b >> 16) & 1;
        c->avx512dq = (b >> 17) & 1;
        c->avx512bw = (b >> 30) & 1;
        c->avx512vl = (b >> 31) & 1;
        c->avx512vnni = (cx >> 11) & 1;
        if (a >= 1) {
            unsigned int a1, b1, c1, d1;
            __cpuid_count(7, 1, a1, b1, c1, d1);
            c->avxvnni = (a1 >> 4) & 1;
        }
    }
    unsigned int ext = __get_cpuid_max(0x80000000, NULL);
    if (ext >= 0x80000004) {
        unsigned int *w = (unsigned int *)c->model;
        for (unsigned int leaf = 0; leaf < 3; leaf++)
            __get_cpuid(0x80000002 + leaf, &w[leaf * 4], &w[leaf * 4 + 1], &w[leaf * 4 + 2], &w[leaf * 4 + 3]);
        c->model[48] = 0;
        /* brand strings are often padded with leading spaces */
        char *s = c->model;
        while (*s == ' ') s++;
        memmove(c->model, s, strlen(s) + 1);
    } else {
        strcpy(c->model, "unknown x86-64");
    }
}
static int can_avx2(void) { return g_cpu.avx && g_cpu.avx2 && g_cpu.fma && g_cpu.f16c && g_cpu.os_avx; }
static int can_avx512(void) {
    return can_avx2() && g_cpu.avx512f && g_cpu.avx512bw && g_cpu.avx512vl && g_cpu.avx512dq && g_cpu.os_avx512;
}
/* VNNI changes only the quantized products (avx2_vnni.c, avx512_vnni.c) */
static int can_avxvnni(void) { return can_avx2() && g_cpu.avxvnni; }
static int can_avx512vnni(void) { return can_avx512() && g_cpu.avx512vnni; }
#else
static void detect(cpu_info *c) { strcpy(c->model, "non-x86 CPU"); }
#endif

/* Table of every ISA this build knows, best last. */
typedef struct { const char *name; const odin_kernel_table *table; int (*usable)(void); } isa_entry;
static int always(void) { return 1; }
static const isa_entry g_entries[] = {
    {"scalar", &odin_kernels_scalar, always},
#if defined(__x86_64__) || defined(_M_X64)
    {"avx2", &odin_kernels_avx2, can_avx2},
    {"avxvnni", &odin_kernels_avxvnni, can_avxvnni},
    {"avx512", &odin_kernels_avx512, can_avx512},
    {"avx512vnni", &odin_kernels_avx512vnni, can_avx512vnni},
#endif
#if defined(__wasm_simd128__)
    {"wasm_simd128", &odin_kernels_wasm_simd128, always},
#endif
};
#define N_ENTRIES ((int)(sizeof g_entries / sizeof g_entries[0]))

static void append(char *buf, size_t cap, const char *s) {
    size_t n = strlen(buf);
    if (n && n + 1 < cap) { buf[n++] = ','; buf[n] = 0; }
    strncat(buf, s, cap - n - 1);
}

static int g_ready;

void odin_dispatch_init(void) {
    if (g_ready) return;
    detect(&g_cpu);
    g_features[0] = 0;
#define F(flag, name) if (g_cpu.flag) append(g_features, sizeof g_features, name)
    F(sse2, "sse2"); F(sse41, "sse4.1"); F(avx, "avx"); F(fma, "fma"); F(f16c, "f16c"); F(avx2, "avx2");
    F(avx512f, "avx512f"); F(avx512bw, "avx512bw"); F(avx512vl, "avx512vl"); F(avx512dq, "avx512dq");
    F(avx512vnni, "avx512vnni"); F(avxvnni, "avxvnni");
    F(os_avx, "os-ymm-state"); F(os_avx512, "os-zmm-state");
#undef F
    g_isas[0] = 0;
    const odin_kernel_table *best = &odin_kernels_scalar;
    for (int i = 0; i < N_ENTRIES; i++)
        if (g_entries[i].usable()) { append(g_isas, sizeof g_isas, g_entries[i].name); best = g_entries[i].table; }
    odin_kern = best;
    g_ready = 1;
    /* ODIN_ISA overrides the choice; a bad value keeps the best ISA here and is
     * reported as an error by the Python package at import (odin_set_isa). */
    const char *env = getenv("ODIN_ISA");
    if (env && *env) (void)odin_set_isa(env);
}

#if defined(__GNUC__)
__attribute__((constructor)) static void odin_dispatch_ctor(void) { odin_dispatch_init(); }
#endif

odin_status odin_set_isa(const char *name) {
    odin_dispatch_init();
    if (!name) return odin_fail(ODIN_BAD_ARG, "isa must not be NULL");
    for (int i = 0; i < N_ENTRIES; i++) {
        if (strcmp(g_entries[i].name, name) != 0) continue;
        if (!g_entries[i].usable())
            return odin_fail(ODIN_UNSUPPORTED_ISA,
                             "ISA '%s' is not supported by this CPU/OS (CPU: %s; features: %s; usable: %s)",
                             name, g_cpu.model, g_features, g_isas);
        odin_kern = g_entries[i].table;
        return ODIN_OK;
    }
    return odin_fail(ODIN_UNSUPPORTED_ISA, "unknown ISA '%s' (this build knows: %s%s)", name, "scalar",
#if defined(__x86_64__) || defined(_M_X64)
                     ", avx2, avxvnni, avx512, avx512vnni"
#elif defined(__wasm_simd128__)
                     ", wasm_simd128"
#else
                     ""
#endif
    );
}

const char *odin_current_isa(void) { odin_dispatch_init(); return odin_kern->name; }
const char *odin_available_isas(void) { odin_dispatch_init(); return g_isas; }
const char *odin_cpu_features(void) { odin_dispatch_init(); return g_features; }
const char *odin_cpu_model(void) { odin_dispatch_init(); return g_cpu.model; }
