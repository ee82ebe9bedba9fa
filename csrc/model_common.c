/* model_common.c — what the GPT and RWKV models share: the tensor table of a parameter
 * block, the clip + AdamW step over it, token checks, aligned zeroed allocation and argmax.
 * Each model keeps only what is its own (layout, forward, backward, generation). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/sysinfo.h>
#endif
#include "internal.h"

/* RAM + swap of the machine (0 where unknown). An allocation past it may still succeed on a
 * Linux that overcommits, and the process is then killed while the block is being zeroed:
 * refusing it up front turns that into an error the caller can report. */
static size_t machine_memory_bytes(void) {
#if defined(__linux__)
    struct sysinfo info;
    if (sysinfo(&info) != 0) return 0;
    return odin_size_mul(odin_size_add((size_t)info.totalram, (size_t)info.totalswap), (size_t)info.mem_unit);
#else
    return 0;
#endif
}

int odin_fits_in_memory(size_t bytes) {
    size_t total = machine_memory_bytes();
    return total == 0 || bytes <= total;
}

void *odin_zalloc(size_t bytes) {
    if (!odin_fits_in_memory(bytes)) return NULL;
    void *p = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (p) memset(p, 0, bytes);
    return p;
}

void odin_tensor_append(odin_tensor_view *tensors, int *count, size_t *offset, const char *name, int rows,
                        int cols) {
    tensors[(*count)++] = (odin_tensor_view){name, *offset, rows, cols, cols > 1, ODIN_TYPE_F32};
    *offset = odin_size_add(*offset, odin_size_mul((size_t)rows, (size_t)cols));
}

void odin_tensor_append_typed(odin_tensor_view *tensors, int *count, size_t *offset, size_t *qoffset,
                              const char *name, int rows, int cols, int type) {
    if (type == ODIN_TYPE_F32) {
        odin_tensor_append(tensors, count, offset, name, rows, cols);
        return;
    }
    tensors[(*count)++] = (odin_tensor_view){name, *qoffset, rows, cols, cols > 1, type};
    *qoffset = odin_size_add(*qoffset, odin_size_mul((size_t)rows, odin_quant_row_bytes(type, cols)));
}

odin_status odin_check_quant_types(int matrix_type, int embed_type) {
    if (!odin_qtype_known(matrix_type))
        return odin_fail(ODIN_BAD_ARG, "matrix_type %d is not a known type (0 f32, 8 q8_0, 2 q4_0, 3 q4_1, 6 q5_0, "
                                       "7 q5_1)", matrix_type);
    if (!odin_qtype_known(embed_type))
        return odin_fail(ODIN_BAD_ARG, "embed_type %d is not a known type (0 f32, 8 q8_0, 2 q4_0, 3 q4_1, 6 q5_0, "
                                       "7 q5_1)", embed_type);
    return ODIN_OK;
}

odin_status odin_require_floats(size_t n, const char *what, const char *args) {
    if (n <= ODIN_MAX_FLOATS) return ODIN_OK;
    return odin_fail(ODIN_BAD_ARG, "%s (%s) would need more memory than can be addressed", what, args);
}

odin_status odin_alloc_params(size_t n, float **params) {
    *params = NULL;
    if (n > ODIN_MAX_FLOATS) return odin_fail(ODIN_BAD_ARG, "the parameter count would overflow");
    const size_t bytes = odin_size_mul(n, sizeof(float));
    if (!odin_fits_in_memory(bytes))
        return odin_fail(ODIN_NO_MEMORY, "%zu parameters need %.1f GiB: more than this machine's memory and swap "
                         "(%.1f GiB)", n, bytes / 1073741824.0, machine_memory_bytes() / 1073741824.0);
    *params = odin_zalloc(bytes);
    if (!*params) return odin_fail(ODIN_NO_MEMORY, "cannot allocate %zu parameters (%.1f MiB)", n, n * 4.0 / 1048576.0);
    return ODIN_OK;
}

odin_status odin_alloc_training_blocks(size_t n, float **grads, float **m, float **v) {
    if (*grads && *m && *v) return ODIN_OK;
    const size_t bytes = odin_size_mul(n, 3 * sizeof(float)); /* gradients, two AdamW moments */
    if (!odin_fits_in_memory(bytes))
        return odin_fail(ODIN_NO_MEMORY, "training %zu parameters needs %.1f GiB more (gradients, AdamW moments): "
                         "more than this machine's memory and swap (%.1f GiB)", n, bytes / 1073741824.0,
                         machine_memory_bytes() / 1073741824.0);
    float *g = odin_zalloc(n * sizeof(float)), *a = odin_zalloc(n * sizeof(float)), *b = odin_zalloc(n * sizeof(float));
    if (!g || !a || !b) {
        free(g); free(a); free(b);
        return odin_fail(ODIN_NO_MEMORY, "cannot allocate the gradients and AdamW moments of %zu parameters "
                         "(3 blocks of %.1f MiB)", n, n * 4.0 / 1048576.0);
    }
    *grads = g; *m = a; *v = b;
    return ODIN_OK;
}

odin_status odin_check_tokens(const int32_t *t, size_t n, int V, const char *name, const uint8_t *mask) {
    for (size_t i = 0; i < n; i++) {
        if (mask && !mask[i]) continue;
        if (t[i] < 0 || t[i] >= V)
            return odin_fail(ODIN_BAD_ARG, "%s[%zu] = %d is outside the vocabulary [0, %d)", name, i, (int)t[i], V);
    }
    return ODIN_OK;
}

odin_status odin_tensor_info(const odin_tensor_view *tensors, int n_tensors, int index, const char **name,
                             size_t *offset, int *rows, int *cols) {
    if (index < 0 || index >= n_tensors)
        return odin_fail(ODIN_BAD_ARG, "index must be in [0, %d), got %d", n_tensors, index);
    const odin_tensor_view *t = &tensors[index];
    if (name) *name = t->name;
    if (offset) *offset = t->offset;
    if (rows) *rows = t->rows;
    if (cols) *cols = t->cols;
    return ODIN_OK;
}

odin_status odin_clip_adamw(const odin_tensor_view *tensors, int n_tensors, float *params, float *grads,
                            float *m, float *v, size_t n_params, float lr, float beta1, float beta2, float eps,
                            float weight_decay, float grad_clip, int t, float *grad_norm) {
    if (t < 1) return odin_fail(ODIN_BAD_ARG, "t (the step number) must be >= 1 (got %d)", t);
    if (!(beta1 >= 0.0f && beta1 < 1.0f)) return odin_fail(ODIN_BAD_ARG, "beta1 must be in [0, 1) (got %g)", beta1);
    if (!(beta2 >= 0.0f && beta2 < 1.0f)) return odin_fail(ODIN_BAD_ARG, "beta2 must be in [0, 1) (got %g)", beta2);
    if (!(eps > 0.0f) || !isfinite(eps)) return odin_fail(ODIN_BAD_ARG, "eps must be a finite number > 0 (got %g)", eps);
    if (!(weight_decay >= 0.0f) || !isfinite(weight_decay))
        return odin_fail(ODIN_BAD_ARG, "weight_decay must be a finite number >= 0 (got %g)", weight_decay);
    if (!isfinite(grad_clip)) return odin_fail(ODIN_BAD_ARG, "grad_clip must be finite, <= 0 = off (got %g)", grad_clip);
    if (!(lr >= 0.0f) || !isfinite(lr)) return odin_fail(ODIN_BAD_ARG, "lr must be a finite number >= 0 (got %g)", lr);
    const odin_kernel_table *k = odin_kern;
    double norm = sqrt(k->sumsq(grads, n_params));
    if (grad_norm) *grad_norm = (float)norm;
    if (!isfinite(norm)) return odin_fail(ODIN_NAN_DETECTED, "gradient norm is not finite (NaN or Inf in the gradients)");
    if (grad_clip > 0.0f && norm > grad_clip) k->scale(grads, n_params, (float)(grad_clip / norm));
    float bc1 = odin_bias_correction(beta1, t), bc2 = odin_bias_correction(beta2, t);
    for (int i = 0; i < n_tensors; i++) {
        const odin_tensor_view *tv = &tensors[i];
        k->adamw(params + tv->offset, grads + tv->offset, m + tv->offset, v + tv->offset,
                 (size_t)tv->rows * tv->cols, lr, beta1, beta2, eps, tv->decay ? weight_decay : 0.0f, bc1, bc2);
    }
    return ODIN_OK;
}

int odin_argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[best]) best = i;
    return best;
}
