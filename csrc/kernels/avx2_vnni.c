/* avx2_vnni.c — the AVX2 kernels with AVX-VNNI (VEX-encoded) dot products in the quantized
 * matrix-vector products, for CPUs that have AVX-VNNI but not AVX-512 (the float kernels
 * are avx2.c's, compiled again). */
#define ODIN_ISA_NAME avxvnni
#define ODIN_ISA_TARGET "avx2,fma,f16c,avxvnni"
#define ODIN_QDOT_VNNI 2
#include "avx2.c"
