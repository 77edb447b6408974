import assert from "node:assert/strict";
import { fetchNodeTests } from "../tools/fetch_onnx_tests.ts";
import { conformanceReport } from "../tools/onnx_conformance_report.ts";
import { runCase } from "./onnx_conformance.ts";
import { isOpName as hasNativeOp } from "../lib/ops/dispatch.ts";

/** Node tests that must pass (two per op type, plus the fusions' and resize's corner cases). */
const CI_CASES = [
  "test_abs",
  "test_add",
  "test_add_bcast",
  "test_batchnorm_epsilon",
  "test_batchnorm_example",
  "test_cast_FLOAT_to_DOUBLE",
  "test_clip",
  "test_clip_default_inbounds",
  "test_clip_min_greater_than_max",
  "test_concat_1d_axis_0",
  "test_concat_1d_axis_negative_1",
  "test_constant",
  "test_constant_pad",
  "test_constant_pad_axes",
  "test_edge_pad",
  "test_reflect_pad",
  "test_constantofshape_float_ones",
  "test_constantofshape_int_shape_zero",
  "test_div",
  "test_div_bcast",
  "test_dropout_default",
  "test_equal",
  "test_equal_bcast",
  "test_erf",
  "test_exp",
  "test_expand_dim_changed",
  "test_expand_dim_unchanged",
  "test_cumsum_1d_int32_exclusive",
  "test_cumsum_2d_int32",
  "test_elu",
  "test_elu_default",
  "test_elu_example",
  "test_flatten_axis0",
  "test_flatten_axis1",
  "test_flatten_negative_axis1",
  "test_gather_0",
  "test_gather_1",
  "test_gelu_default_1",
  "test_gelu_tanh_1",
  "test_gemm_all_attributes",
  "test_gemm_alpha",
  "test_gemm_default_single_elem_vector_bias",
  "test_globalaveragepool",
  "test_globalmaxpool",
  "test_greater",
  "test_greater_equal_bcast",
  "test_gru_batchwise",
  "test_gru_defaults",
  "test_gru_seq_length",
  "test_gru_with_initial_bias",
  "test_hardsigmoid",
  "test_hardsigmoid_default",
  "test_hardswish",
  "test_identity",
  "test_if",
  "test_layer_normalization_2d_axis_negative_1",
  "test_leakyrelu",
  "test_leakyrelu_default",
  "test_less_bcast",
  "test_less_equal",
  "test_loop11",
  "test_log",
  "test_logsoftmax_axis_0",
  "test_lstm_batchwise",
  "test_lstm_defaults",
  "test_lstm_with_initial_bias",
  "test_lstm_with_peepholes",
  "test_matmul_1d_1d",
  "test_matmul_2d",
  "test_matmul_3d",
  "test_matmul_4d",
  "test_max_float32",
  "test_min_float32",
  "test_mul_bcast",
  "test_neg",
  "test_pow",
  "test_pow_bcast_array",
  "test_pow_types_float32_int64",
  "test_reduce_max_default_axes_keepdims_random",
  "test_reduce_mean_default_axes_keepdims_random",
  "test_reduce_min_default_axes_keepdims_random",
  "test_reduce_sum_default_axes_keepdims_random",
  "test_relu",
  "test_range_int32_type_negative_delta",
  "test_reshape_allowzero_reordered",
  "test_reshape_extended_dims",
  "test_reshape_negative_dim",
  "test_resize_downsample_scales_linear",
  "test_resize_downsample_scales_linear_align_corners",
  "test_resize_upsample_scales_nearest",
  "test_resize_upsample_scales_linear",
  "test_rnn_seq_length",
  "test_shape",
  "test_scan9_sum",
  "test_scan_sum",
  "test_shape_clip_end",
  "test_shape_start_negative_1",
  "test_sigmoid",
  "test_simple_rnn_batchwise",
  "test_simple_rnn_defaults",
  "test_simple_rnn_with_initial_bias",
  "test_size",
  "test_slice",
  "test_slice_default_axes",
  "test_softmax_axis_0",
  "test_softmax_axis_1",
  "test_sqrt",
  "test_squeeze",
  "test_squeeze_negative_axes",
  "test_sub_bcast",
  "test_tanh",
  "test_transpose_all_permutations_1",
  "test_transpose_default",
  "test_unsqueeze_axis_0",
  "test_unsqueeze_axis_1",
  "test_upsample_nearest",
  "test_where_example",
  "test_where_long_example",
];

/** Cases that need the conv branch's native ops; they run once conv2d etc. exist. */
const CONV_CASES = [
  "test_conv_with_strides_padding",
  "test_conv_with_autopad_same",
  "test_convtranspose",
  "test_maxpool_2d_default",
  "test_averagepool_2d_default",
  "test_basic_conv_with_padding",
  // Pads above half the kernel, and asymmetric SAME pads padded explicitly with -Infinity.
  "test_maxpool_2d_pads",
  "test_averagepool_2d_pads_count_include_pad",
  "test_maxpool_2d_same_upper",
  "test_maxpool_2d_same_lower",
  "test_conv_with_strides_and_asymmetric_padding",
];

Deno.test("ONNX node tests: the CI list passes", async () => {
  const root = await fetchNodeTests();
  const failures = CI_CASES.map((name) => runCase(`${root}/${name}`)).filter((r) => r.status !== "pass");
  assert.ok(failures.length === 0, failures.map((f) => `${f.name}: ${f.status} ${f.message}`).join("\n"));
});

Deno.test({
  name: "ONNX node tests: conv and pooling cases pass",
  ignore: !hasNativeOp("conv2d"),
  fn: async () => {
    const root = await fetchNodeTests();
    const failures = CONV_CASES.map((name) => runCase(`${root}/${name}`)).filter((r) => r.status !== "pass");
    assert.ok(failures.length === 0, failures.map((f) => `${f.name}: ${f.status} ${f.message}`).join("\n"));
  },
});
if (!hasNativeOp("conv2d")) {
  console.log("onnx conformance: conv/pool cases skipped (this build has no native conv2d op)");
}

Deno.test("ONNX node tests: report the pass rate over every implemented case", async () => {
  const report = await conformanceReport();
  const rate = (100 * report.passed / report.implemented).toFixed(1);
  console.log(
    `ONNX node tests: ${report.passed}/${report.implemented} (${rate}%) of the cases whose ops Spindle implements pass ` +
      `(${report.failed.length} fail, ${report.unsupported.length} need unsupported features)`,
  );
  assert.ok(report.implemented > 0, "no node tests found");
});
