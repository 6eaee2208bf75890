#include "kernels/cuda/gemm.h"

#include <memory>
#include <utility>

namespace draftwise::cuda {

namespace {

constexpr size_t kWorkspaceBytes = 32u << 20;

Status cublas_status(cublasStatus_t status, const char* call) {
  if (status == CUBLAS_STATUS_SUCCESS) return {};
  return make_error("cuBLASLt error in {}: {} ({})", call, cublasLtGetStatusString(status),
                    cublasLtGetStatusName(status));
}

#define DW_CUBLAS_TRY(call) DW_TRY(cublas_status((call), #call))

// The largest power of two (at most 256) that divides the address: cuBLASLt assumes 256-byte
// aligned operands unless told otherwise, and slices of larger buffers may not be.
uint32_t alignment_of(const void* pointer) {
  const auto address = reinterpret_cast<uintptr_t>(pointer);
  uint32_t alignment = 256;
  while (alignment > 1 && address % alignment != 0) alignment /= 2;
  return alignment;
}

// RAII for the descriptors of one call.
struct MatmulDesc {
  cublasLtMatmulDesc_t desc = nullptr;
  ~MatmulDesc() {
    if (desc != nullptr) cublasLtMatmulDescDestroy(desc);
  }
};
struct Layout {
  cublasLtMatrixLayout_t layout = nullptr;
  ~Layout() {
    if (layout != nullptr) cublasLtMatrixLayoutDestroy(layout);
  }
};
struct Preference {
  cublasLtMatmulPreference_t preference = nullptr;
  ~Preference() {
    if (preference != nullptr) cublasLtMatmulPreferenceDestroy(preference);
  }
};

}  // namespace

Expected<Gemm> Gemm::create() {
  Gemm gemm;
  DW_CUBLAS_TRY(cublasLtCreate(&gemm.handle_));
  DW_ASSIGN_OR_RETURN(gemm.workspace_, DeviceBuffer::allocate(kWorkspaceBytes, "the cuBLASLt workspace"));
  return gemm;
}

Gemm::~Gemm() {
  if (handle_ != nullptr) cublasLtDestroy(handle_);
}

Gemm::Gemm(Gemm&& other) noexcept
    : handle_(std::exchange(other.handle_, nullptr)), workspace_(std::move(other.workspace_)) {}

Gemm& Gemm::operator=(Gemm&& other) noexcept {
  if (this != &other) {
    if (handle_ != nullptr) cublasLtDestroy(handle_);
    handle_ = std::exchange(other.handle_, nullptr);
    workspace_ = std::move(other.workspace_);
  }
  return *this;
}

Status Gemm::matmul(const bf16* x, const bf16* w, void* y, bool y_fp32, int64_t rows, int64_t in,
                    int64_t out, cudaStream_t stream) const {
  if (rows == 0 || out == 0) return {};
  // Column-major view: y (out × rows, ld out) = wᵀ-as-stored (w is in × out, ld in)ᵀ · x (in × rows).
  MatmulDesc desc;
  DW_CUBLAS_TRY(cublasLtMatmulDescCreate(&desc.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t transpose = CUBLAS_OP_T;
  DW_CUBLAS_TRY(cublasLtMatmulDescSetAttribute(desc.desc, CUBLASLT_MATMUL_DESC_TRANSA, &transpose,
                                               sizeof transpose));
  Layout a, b, d;
  DW_CUBLAS_TRY(cublasLtMatrixLayoutCreate(&a.layout, CUDA_R_16BF, static_cast<uint64_t>(in),
                                           static_cast<uint64_t>(out), in));
  DW_CUBLAS_TRY(cublasLtMatrixLayoutCreate(&b.layout, CUDA_R_16BF, static_cast<uint64_t>(in),
                                           static_cast<uint64_t>(rows), in));
  DW_CUBLAS_TRY(cublasLtMatrixLayoutCreate(&d.layout, y_fp32 ? CUDA_R_32F : CUDA_R_16BF,
                                           static_cast<uint64_t>(out), static_cast<uint64_t>(rows), out));
  Preference preference;
  DW_CUBLAS_TRY(cublasLtMatmulPreferenceCreate(&preference.preference));
  const size_t workspace_bytes = workspace_.bytes();
  DW_CUBLAS_TRY(cublasLtMatmulPreferenceSetAttribute(preference.preference,
                                                     CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                     &workspace_bytes, sizeof workspace_bytes));
  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  DW_CUBLAS_TRY(cublasLtMatmulAlgoGetHeuristic(handle_, desc.desc, a.layout, b.layout, d.layout,
                                               d.layout, preference.preference, 1, &heuristic, &found));
  if (found == 0) {
    return make_error("cuBLASLt has no algorithm for a bf16 matmul of [{}, {}] x [{}, {}]^T", rows, in,
                      out, in);
  }
  const float alpha = 1.0f;
  const float beta = 0.0f;
  DW_CUBLAS_TRY(cublasLtMatmul(handle_, desc.desc, &alpha, w, a.layout, x, b.layout, &beta, y,
                               d.layout, y, d.layout, &heuristic.algo, workspace_.data(),
                               workspace_bytes, stream));
  return {};
}

Status Gemm::product(Operand a, Operand b, bool inputs_fp32, void* c, bool c_fp32, int64_t m, int64_t n, int64_t k,
                     float beta, cudaStream_t stream) const {
  if (m == 0 || n == 0) return {};
  // Row-major c [m, n] is column-major cᵀ [n, m] = op(b)ᵀ · op(a)ᵀ. A row-major [r, c] matrix read
  // column-major is its transpose [c, r] with leading dimension c: so op(b)ᵀ is b's column-major
  // view as it is (b not transposed: [n, k], ld n) or transposed (b stored [n, k]: view [k, n],
  // ld k); likewise for a.
  const cudaDataType_t input_type = inputs_fp32 ? CUDA_R_32F : CUDA_R_16BF;
  MatmulDesc desc;
  DW_CUBLAS_TRY(cublasLtMatmulDescCreate(&desc.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t first_op = b.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t second_op = a.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  DW_CUBLAS_TRY(cublasLtMatmulDescSetAttribute(desc.desc, CUBLASLT_MATMUL_DESC_TRANSA, &first_op, sizeof first_op));
  DW_CUBLAS_TRY(cublasLtMatmulDescSetAttribute(desc.desc, CUBLASLT_MATMUL_DESC_TRANSB, &second_op, sizeof second_op));
  const auto u = [](int64_t value) { return static_cast<uint64_t>(value); };
  Layout first, second, d;
  if (b.transposed) {
    DW_CUBLAS_TRY(cublasLtMatrixLayoutCreate(&first.layout, input_type, u(k), u(n), k));
  } else {
    DW_CUBLAS_TRY(cublasLtMatrixLayoutCreate(&first.layout, input_type, u(n), u(k), n));
  }
  if (a.transposed) {
    DW_CUBLAS_TRY(cublasLtMatrixLayoutCreate(&second.layout, input_type, u(m), u(k), m));
  } else {
    DW_CUBLAS_TRY(cublasLtMatrixLayoutCreate(&second.layout, input_type, u(k), u(m), k));
  }
  DW_CUBLAS_TRY(cublasLtMatrixLayoutCreate(&d.layout, c_fp32 ? CUDA_R_32F : CUDA_R_16BF, u(n), u(m), n));
  Preference preference;
  DW_CUBLAS_TRY(cublasLtMatmulPreferenceCreate(&preference.preference));
  const size_t workspace_bytes = workspace_.bytes();
  DW_CUBLAS_TRY(cublasLtMatmulPreferenceSetAttribute(preference.preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                     &workspace_bytes, sizeof workspace_bytes));
  // cuBLASLt's A is our b, its B our a; C and D are c.
  const uint32_t alignments[] = {alignment_of(b.data), alignment_of(a.data), alignment_of(c), alignment_of(c)};
  const cublasLtMatmulPreferenceAttributes_t alignment_attributes[] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  for (int i = 0; i < 4; ++i) {
    DW_CUBLAS_TRY(cublasLtMatmulPreferenceSetAttribute(preference.preference, alignment_attributes[i], &alignments[i],
                                                       sizeof alignments[i]));
  }
  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  DW_CUBLAS_TRY(cublasLtMatmulAlgoGetHeuristic(handle_, desc.desc, first.layout, second.layout, d.layout, d.layout,
                                               preference.preference, 1, &heuristic, &found));
  if (found == 0) {
    return make_error("cuBLASLt has no algorithm for a {} product [{}, {}] x [{}, {}]", inputs_fp32 ? "fp32" : "bf16",
                      m, k, k, n);
  }
  const float alpha = 1.0f;
  DW_CUBLAS_TRY(cublasLtMatmul(handle_, desc.desc, &alpha, b.data, first.layout, a.data, second.layout, &beta, c,
                               d.layout, c, d.layout, &heuristic.algo, workspace_.data(), workspace_bytes, stream));
  return {};
}

}  // namespace draftwise::cuda
