// qTTT kernels (kernels/cuda/qttt.h).
//
// add_query_delta: one block of 128 threads per (row, head). The block norms its row into
// shared memory, computes the head's head_dim outputs of ΔW_Q n (a warp per output, lanes
// striding over the hidden size; at low rank first u = A n, then B u), rotates them as RoPE
// rotates q, and adds them to q. Rows without an adaptation return at once, so the launch
// serves batches that mix adapted and plain sequences.
// attention_query_backward: one block of four warps per (query row, head). A warp takes every
// fourth key; a key's dot products are head_dim / 32 elements per lane (rounded up, the lanes
// past head_dim adding zeros) and a shuffle reduction.
// Pass 1 finds each warp's running maximum and sum of exp (online softmax), merged across the
// warps; pass 2 accumulates P_j (do·v_j − do·o) k_j in registers (head_dim / 32 per lane),
// summed across the warps in shared memory at the end.
// The rest are row-per-block reductions (loss, RMSNorm backward) or elementwise loops.
#include <cfloat>

#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/qttt.h"

namespace draftwise::cuda {

namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t count) {
  const int64_t blocks = (count + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65535 * 16 ? blocks : 65535 * 16);
}

__device__ __forceinline__ float warp_sum(float value) {
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(0xFFFFFFFFu, value, offset);
  return value;
}

__device__ __forceinline__ float warp_max(float value) {
  for (int offset = 16; offset > 0; offset /= 2) value = fmaxf(value, __shfl_xor_sync(0xFFFFFFFFu, value, offset));
  return value;
}

// The sum of `value` over the block (blockDim.x a multiple of 32, at most 1024); every thread
// gets it. `scratch` holds 32 floats.
__device__ float block_sum(float value, float* scratch) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  value = warp_sum(value);
  __syncthreads();
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) total += scratch[w];
  return total;
}

__device__ float block_max(float value, float* scratch) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  value = warp_max(value);
  __syncthreads();
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  float most = -FLT_MAX;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) most = fmaxf(most, scratch[w]);
  return most;
}

constexpr int kDeltaThreads = 128;
constexpr int kMaxDeltaRank = 256;

__global__ void add_query_delta_kernel(const float* residual, const float* norm_weight, float eps,
                                       const QueryDeltaRow* deltas, const int32_t* positions, const float* inv_freq,
                                       int64_t layer, int64_t hidden, int64_t heads, int64_t head_dim, bf16* q,
                                       int64_t q_stride) {
  wait_for_prior_grid();
  const int64_t row = blockIdx.x;
  const int64_t head = blockIdx.y;
  const QueryDeltaRow delta = deltas[row];
  if (delta.parameters == nullptr) return;
  extern __shared__ float shared[];
  float* normed = shared;                       // [hidden]
  float* down = normed + hidden;                // [rank]
  float* out = down + kMaxDeltaRank;            // [head_dim]
  __shared__ float scratch[32];
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int warps = blockDim.x / 32;

  const float* x = residual + row * hidden;
  float squares = 0.0f;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) squares += x[i] * x[i];
  const float inverse_rms = rsqrtf(block_sum(squares, scratch) / static_cast<float>(hidden) + eps);
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) normed[i] = x[i] * inverse_rms * norm_weight[i];
  __syncthreads();

  const int64_t q_dim = heads * head_dim;
  const int64_t rank = delta.rank;
  const int64_t layer_size = rank == 0 ? q_dim * hidden : rank * (hidden + q_dim);
  const float* parameters = delta.parameters + layer * layer_size;
  if (rank > 0) {
    // u = A n, A [rank, hidden].
    for (int64_t r = warp; r < rank; r += warps) {
      float sum = 0.0f;
      for (int64_t i = lane; i < hidden; i += 32) sum += parameters[r * hidden + i] * normed[i];
      sum = warp_sum(sum);
      if (lane == 0) down[r] = sum;
    }
    __syncthreads();
  }
  for (int64_t o = warp; o < head_dim; o += warps) {
    const int64_t output = head * head_dim + o;
    float sum = 0.0f;
    if (rank == 0) {
      for (int64_t i = lane; i < hidden; i += 32) sum += parameters[output * hidden + i] * normed[i];
    } else {
      const float* b = parameters + rank * hidden;  // [q_dim, rank]
      for (int64_t r = lane; r < rank; r += 32) sum += b[output * rank + r] * down[r];
    }
    sum = warp_sum(sum);
    if (lane == 0) out[o] = sum;
  }
  __syncthreads();
  const int64_t half = head_dim / 2;
  bf16* target = q + row * q_stride + head * head_dim;
  for (int64_t j = threadIdx.x; j < half; j += blockDim.x) {
    const float angle = static_cast<float>(positions[row]) * inv_freq[j];
    float s;
    float c;
    sincosf(angle, &s, &c);
    const float a = out[j];
    const float b = out[j + half];
    target[j] = __float2bfloat16(__bfloat162float(target[j]) + (a * c - b * s));
    target[j + half] = __float2bfloat16(__bfloat162float(target[j + half]) + (b * c + a * s));
  }
}

__global__ void add_f32_to_bf16_kernel(bf16* y, int64_t y_stride, const float* x, int64_t rows, int64_t cols) {
  wait_for_prior_grid();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < rows * cols;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    bf16& out = y[(i / cols) * y_stride + i % cols];
    out = __float2bfloat16(__bfloat162float(out) + x[i]);
  }
}

__global__ void rotate_rows_kernel(float* x, int64_t rows, int64_t heads, int64_t head_dim, int64_t first_position,
                                   const float* inv_freq, float sign) {
  wait_for_prior_grid();
  const int64_t half = head_dim / 2;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < rows * heads * half;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = i % half;
    const int64_t h = (i / half) % heads;
    const int64_t r = i / (half * heads);
    const float angle = static_cast<float>(first_position + r) * inv_freq[j];
    float s;
    float c;
    sincosf(angle, &s, &c);
    s *= sign;
    float* head = x + (r * heads + h) * head_dim;
    const float a = head[j];
    const float b = head[j + half];
    head[j] = a * c - b * s;
    head[j + half] = b * c + a * s;
  }
}

__global__ void next_token_loss_kernel(const float* logits, const int32_t* targets, int64_t vocab, float scale,
                                       float* row_losses, bf16* gradients) {
  wait_for_prior_grid();
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const float* values = logits + row * vocab;
  float most = -FLT_MAX;
  for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) most = fmaxf(most, values[v]);
  most = block_max(most, scratch);
  float total = 0.0f;
  for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) total += expf(values[v] - most);
  total = block_sum(total, scratch);
  const float log_total = logf(total) + most;
  const int32_t target = targets[row];
  if (threadIdx.x == 0) row_losses[row] = log_total - values[target];
  if (gradients == nullptr) return;
  for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) {
    const float probability = expf(values[v] - log_total);
    gradients[row * vocab + v] = __float2bfloat16(scale * (probability - (v == target ? 1.0f : 0.0f)));
  }
}

__global__ void rms_norm_backward_kernel(const float* x, const float* weight, const float* dy, float* dx, int64_t dim,
                                         float eps, bool accumulate) {
  wait_for_prior_grid();
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const float* in = x + row * dim;
  const float* grad = dy + row * dim;
  float* result = dx + row * dim;
  float squares = 0.0f;
  float weighted = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    squares += in[i] * in[i];
    weighted += weight[i] * grad[i] * in[i];
  }
  squares = block_sum(squares, scratch);
  weighted = block_sum(weighted, scratch);
  const float inverse_rms = rsqrtf(squares / static_cast<float>(dim) + eps);
  const float correction = weighted * inverse_rms * inverse_rms * inverse_rms / static_cast<float>(dim);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float value = inverse_rms * weight[i] * grad[i] - correction * in[i];
    result[i] = accumulate ? result[i] + value : value;
  }
}

__global__ void swiglu_backward_kernel(const bf16* gate_up, const float* d_out, bf16* d_gate_up, int64_t rows,
                                       int64_t ffn) {
  wait_for_prior_grid();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < rows * ffn;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / ffn;
    const int64_t c = i % ffn;
    const float gate = __bfloat162float(gate_up[r * 2 * ffn + c]);
    const float up = __bfloat162float(gate_up[r * 2 * ffn + ffn + c]);
    const float sigmoid = 1.0f / (1.0f + expf(-gate));
    d_gate_up[r * 2 * ffn + c] = __float2bfloat16(d_out[i] * up * sigmoid * (1.0f + gate * (1.0f - sigmoid)));
    d_gate_up[r * 2 * ffn + ffn + c] = __float2bfloat16(d_out[i] * gate * sigmoid);
  }
}

constexpr int kBackwardWarps = 4;

// kPerLane = ceil(head_dim / 32) elements of a head per lane; lanes past head_dim hold zeros.
template <int kPerLane>
__global__ void attention_query_backward_kernel(const bf16* q, const bf16* out, const float* d_out,
                                                const bf16* k_cache, const bf16* v_cache, const int32_t* block_table,
                                                int64_t first_position, int64_t heads, int64_t kv_heads,
                                                int64_t head_dim, int64_t block_size, float scale, int64_t window,
                                                float* d_q) {
  wait_for_prior_grid();
  constexpr int kMaxHeadDim = 32 * kPerLane;
  __shared__ float warp_max_scores[kBackwardWarps];
  __shared__ float warp_sums[kBackwardWarps];
  __shared__ float partial[kBackwardWarps][kMaxHeadDim];
  const int64_t row = blockIdx.x;
  const int64_t head = blockIdx.y;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int64_t kv_head = head / (heads / kv_heads);
  const int64_t kv_dim = kv_heads * head_dim;
  const int64_t position = first_position + row;
  const int64_t first_key = window > 0 ? max(static_cast<int64_t>(0), position - window + 1) : 0;
  const int64_t at = (row * heads + head) * head_dim;
  const auto inside = [&](int e) { return lane + 32 * e < head_dim; };

  float query[kPerLane], grad[kPerLane];
  float out_grad = 0.0f;  // do·o
  for (int e = 0; e < kPerLane; ++e) {
    const int d = lane + 32 * e;
    query[e] = inside(e) ? __bfloat162float(q[at + d]) : 0.0f;
    grad[e] = inside(e) ? d_out[at + d] : 0.0f;
    if (inside(e)) out_grad += grad[e] * __bfloat162float(out[at + d]);
  }
  out_grad = warp_sum(out_grad);
  const auto key_row = [&](int64_t j) {
    const int64_t slot = static_cast<int64_t>(block_table[j / block_size]) * block_size + j % block_size;
    return slot * kv_dim + kv_head * head_dim;
  };
  // Σ over the head of x · cache[offset + d], lanes past head_dim adding nothing.
  const auto dot_with = [&](const float* x, const bf16* cache, int64_t offset) {
    float sum = 0.0f;
    for (int e = 0; e < kPerLane; ++e) {
      if (inside(e)) sum += x[e] * __bfloat162float(cache[offset + lane + 32 * e]);
    }
    return warp_sum(sum);
  };

  float most = -FLT_MAX;
  float total = 0.0f;
  for (int64_t j = first_key + warp; j <= position; j += kBackwardWarps) {
    const float s = dot_with(query, k_cache, key_row(j)) * scale;
    const float next = fmaxf(most, s);
    total = total * expf(most - next) + expf(s - next);
    most = next;
  }
  if (lane == 0) {
    warp_max_scores[warp] = most;
    warp_sums[warp] = total;
  }
  __syncthreads();
  float block_most = -FLT_MAX;
  for (int w = 0; w < kBackwardWarps; ++w) block_most = fmaxf(block_most, warp_max_scores[w]);
  float block_total = 0.0f;
  for (int w = 0; w < kBackwardWarps; ++w) {
    if (warp_sums[w] > 0.0f) block_total += warp_sums[w] * expf(warp_max_scores[w] - block_most);
  }
  const float inverse_total = 1.0f / block_total;

  float accumulated[kPerLane] = {};
  for (int64_t j = first_key + warp; j <= position; j += kBackwardWarps) {
    const int64_t offset = key_row(j);
    const float probability = expf(dot_with(query, k_cache, offset) * scale - block_most) * inverse_total;
    const float value_grad = dot_with(grad, v_cache, offset);
    const float weight = probability * (value_grad - out_grad) * scale;
    for (int e = 0; e < kPerLane; ++e) {
      if (inside(e)) accumulated[e] += weight * __bfloat162float(k_cache[offset + lane + 32 * e]);
    }
  }
  for (int e = 0; e < kPerLane; ++e) partial[warp][lane + 32 * e] = accumulated[e];
  __syncthreads();
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float sum = 0.0f;
    for (int w = 0; w < kBackwardWarps; ++w) sum += partial[w][d];
    d_q[at + d] = sum;
  }
}

__global__ void optimizer_kernel(float* parameters, const float* gradient, float* first_moment, float* second_moment,
                                 int64_t count, float learning_rate, bool adam, AdamStep step) {
  wait_for_prior_grid();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = gradient[i];
    if (!adam) {
      parameters[i] -= learning_rate * g;
      continue;
    }
    const float m = step.beta1 * first_moment[i] + (1.0f - step.beta1) * g;
    const float v = step.beta2 * second_moment[i] + (1.0f - step.beta2) * g * g;
    first_moment[i] = m;
    second_moment[i] = v;
    parameters[i] -= learning_rate * (m / step.correction1) / (sqrtf(v / step.correction2) + step.epsilon);
  }
}

}  // namespace

cudaError_t add_query_delta(const float* residual, const float* norm_weight, float eps, const QueryDeltaRow* deltas,
                            const int32_t* positions, const float* inv_freq, int64_t rows, int64_t layer,
                            int64_t hidden, int64_t heads, int64_t head_dim, bf16* q, int64_t q_stride,
                            cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  if (hidden > kMaxQttHidden || head_dim % 2 != 0 || head_dim > 1024) return cudaErrorInvalidValue;
  const size_t shared = static_cast<size_t>(hidden + kMaxDeltaRank + head_dim) * sizeof(float);
  // The static scratch counts against the same 48 KiB.
  if (shared + 32 * sizeof(float) > 48 * 1024) {
    const cudaError_t raised =
        cudaFuncSetAttribute(add_query_delta_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared));
    if (raised != cudaSuccess) return raised;
  }
  return launch(add_query_delta_kernel, dim3(static_cast<unsigned>(rows), static_cast<unsigned>(heads)),
                dim3(kDeltaThreads), shared, stream, residual, norm_weight, eps, deltas, positions, inv_freq, layer,
                hidden, heads, head_dim, q, q_stride);
}

cudaError_t add_f32_to_bf16(bf16* y, int64_t y_stride, const float* x, int64_t rows, int64_t cols,
                            cudaStream_t stream) {
  if (rows * cols == 0) return cudaSuccess;
  return launch(add_f32_to_bf16_kernel, dim3(blocks_for(rows * cols)), dim3(kThreads), 0, stream, y, y_stride, x,
                rows, cols);
}

cudaError_t rotate_rows_f32(float* x, int64_t rows, int64_t heads, int64_t head_dim, int64_t first_position,
                            const float* inv_freq, float sign, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  return launch(rotate_rows_kernel, dim3(blocks_for(rows * heads * head_dim / 2)), dim3(kThreads), 0, stream, x, rows,
                heads, head_dim, first_position, inv_freq, sign);
}

cudaError_t next_token_loss(const float* logits, const int32_t* targets, int64_t rows, int64_t vocab, float scale,
                            float* row_losses, bf16* gradients, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  return launch(next_token_loss_kernel, dim3(static_cast<unsigned>(rows)), dim3(kThreads), 0, stream, logits, targets,
                vocab, scale, row_losses, gradients);
}

cudaError_t rms_norm_backward(const float* x, const float* weight, const float* dy, float* dx, int64_t rows,
                              int64_t dim, float eps, bool accumulate, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  return launch(rms_norm_backward_kernel, dim3(static_cast<unsigned>(rows)), dim3(kThreads), 0, stream, x, weight, dy,
                dx, dim, eps, accumulate);
}

cudaError_t swiglu_backward(const bf16* gate_up, const float* d_out, bf16* d_gate_up, int64_t rows, int64_t ffn,
                            cudaStream_t stream) {
  if (rows * ffn == 0) return cudaSuccess;
  return launch(swiglu_backward_kernel, dim3(blocks_for(rows * ffn)), dim3(kThreads), 0, stream, gate_up, d_out,
                d_gate_up, rows, ffn);
}

cudaError_t attention_query_backward(const bf16* q, const bf16* out, const float* d_out, const bf16* k_cache,
                                     const bf16* v_cache, const int32_t* block_table, int64_t rows,
                                     int64_t first_position, const AttentionGeometry& geometry, float* d_q,
                                     cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(geometry.num_heads));
  const dim3 block(32 * kBackwardWarps);
  const auto run = [&](auto kernel) {
    return launch(kernel, grid, block, 0, stream, q, out, d_out, k_cache, v_cache, block_table, first_position,
                  geometry.num_heads, geometry.num_kv_heads, geometry.head_dim, geometry.block_size, geometry.scale,
                  geometry.window, d_q);
  };
  switch ((geometry.head_dim + 31) / 32) {
    case 1: return run(attention_query_backward_kernel<1>);
    case 2: return run(attention_query_backward_kernel<2>);
    case 3: return run(attention_query_backward_kernel<3>);
    case 4: return run(attention_query_backward_kernel<4>);
    case 5: return run(attention_query_backward_kernel<5>);
    case 6: return run(attention_query_backward_kernel<6>);
    case 7: return run(attention_query_backward_kernel<7>);
    case 8: return run(attention_query_backward_kernel<8>);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t qtt_optimizer_step(float* parameters, const float* gradient, float* first_moment, float* second_moment,
                               int64_t count, float learning_rate, const AdamStep* adam, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  return launch(optimizer_kernel, dim3(blocks_for(count)), dim3(kThreads), 0, stream, parameters, gradient,
                first_moment, second_moment, count, learning_rate, adam != nullptr,
                adam != nullptr ? *adam : AdamStep{});
}

}  // namespace draftwise::cuda
