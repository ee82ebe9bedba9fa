/* table.h — fills this ISA's odin_kernel_table from the functions that
 * kernel_body.h and gemm_kernel.h instantiated. Included last by each ISA file. */
#define ODIN_TABLE_NAME_(isa) odin_kernels_##isa
#define ODIN_TABLE_NAME(isa) ODIN_TABLE_NAME_(isa)
#define ODIN_STR_(x) #x
#define ODIN_STR(x) ODIN_STR_(x)

const odin_kernel_table ODIN_TABLE_NAME(ODIN_ISA_NAME) = {
    .name = ODIN_STR(ODIN_ISA_NAME),
    .mr = GEMM_MR, .nr = GEMM_NR, .mc = GEMM_MC, .kc = GEMM_KC, .nc = GEMM_NC,
    .gemm_ukernel = K(gemm_ukernel),
    .dot = K(dot),
    .axpy = K(axpy),
    .vexp = K(vexp_array),
    .vsigmoid = K(vsigmoid_array),
    .vtanh = K(vtanh_array),
    .gelu_forward = K(gelu_forward),
    .gelu_backward = K(gelu_backward),
    .layernorm_forward = K(layernorm_forward),
    .layernorm_backward = K(layernorm_backward),
    .rmsnorm_forward = K(rmsnorm_forward),
    .rmsnorm_backward = K(rmsnorm_backward),
    .softmax_forward = K(softmax_forward),
    .softmax_backward = K(softmax_backward),
    .attention_forward = K(attention_forward),
    .attention_backward = K(attention_backward),
    .embedding_forward = K(embedding_forward),
    .embedding_backward = K(embedding_backward),
    .crossentropy_forward = K(crossentropy_forward),
    .crossentropy_backward = K(crossentropy_backward),
    .tokenshift_forward = K(tokenshift_forward),
    .tokenshift_backward = K(tokenshift_backward),
    .wkv_forward = K(wkv_forward),
    .wkv_backward = K(wkv_backward),
    .sqrelu_forward = K(sqrelu_forward),
    .sqrelu_backward = K(sqrelu_backward),
    .sigmoid_gate_forward = K(sigmoid_gate_forward),
    .sigmoid_gate_backward = K(sigmoid_gate_backward),
    .adamw = K(adamw),
    .sumsq = K(sumsq),
    .scale = K(scale),
    .qmatvec = {[2] = K(qmatvec_q4_0), [3] = K(qmatvec_q4_1), [6] = K(qmatvec_q5_0), [7] = K(qmatvec_q5_1),
                [8] = K(qmatvec_q8_0)},
};
