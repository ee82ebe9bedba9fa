/* avx512_vnni.c — the AVX-512 kernels with AVX512-VNNI dot products in the quantized
 * matrix-vector products (the float kernels are avx512.c's, compiled again). */
#define ODIN_ISA_NAME avx512vnni
#define ODIN_ISA_TARGET "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c"
#define ODIN_QDOT_VNNI 1
#include "avx512.c"
