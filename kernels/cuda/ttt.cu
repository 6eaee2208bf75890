// TTT layer kernels (kernels/cuda/ttt.h). ttt_linear_steps keeps one head's state (W, b and
// their gradient sums, loaded once per launch and stored at its end) and the current stretch of
// a mini-batch (queries, keys, targets, inner gradients, outputs, the stretch's Q·K products) in
// shared memory.
#include <cmath>

#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/ttt.h"

namespace draftwise::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kMaxConvKernel = 8;
constexpr float kInnerNormEps = 1e-6f;
constexpr int kLinearThreads = 512;
constexpr int kLinearWarps = kLinearThreads / 32;
// Dynamic shared memory the linear kernel may ask for (sm_86 and later allow 99 KiB a block).
constexpr size_t kSharedLimit = 99 * 1024;

__global__ void rms_norm_kernel(const float* x, const float* weight, float* out, int64_t dim, float eps) {
  const float* row = x + blockIdx.x * dim;
  float squares = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) squares += row[i] * row[i];
  squares = block_sum<kThreads>(squares);
  const float scale = rsqrtf(squares / static_cast<float>(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) out[blockIdx.x * dim + i] = row[i] * scale * weight[i];
}

// One thread per (row, channel): the inputs before row 0 come from the window.
__global__ void causal_conv_kernel(const float* in, int64_t in_stride, CausalConv conv, const float* window,
                                   int64_t rows, int64_t channels, int kernel) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e >= rows * channels) return;
  const int64_t r = e / channels, c = e % channels;
  const int past = kernel - 1;
  float sum0 = conv.bias0 != nullptr ? conv.bias0[c] : 0.0f;
  float sum1 = conv.out1 != nullptr && conv.bias1 != nullptr ? conv.bias1[c] : 0.0f;
  for (int m = 0; m < kernel; ++m) {
    const int64_t t = r - past + m;  // the input's row; negative: the window's
    const float u = t >= 0 ? in[t * in_stride + c] : window[(past + t) * channels + c];
    sum0 += conv.weight0[c * kernel + m] * u;
    if (conv.out1 != nullptr) sum1 += conv.weight1[c * kernel + m] * u;
  }
  if (conv.accumulate) {
    conv.out0[r * channels + c] += sum0;
  } else {
    conv.out0[r * channels + c] = sum0;
  }
  if (conv.out1 != nullptr) conv.out1[r * channels + c] = sum1;
}

// The window after the new inputs: the last kernel − 1 of (window, inputs).
__global__ void conv_window_kernel(const float* in, int64_t in_stride, float* window, int64_t rows, int64_t channels,
                                   int kernel) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= channels) return;
  const int past = kernel - 1;
  float kept[kMaxConvKernel];
  for (int m = 0; m < past; ++m) {
    const int64_t t = rows - past + m;  // row of the combined sequence, window first
    kept[m] = t >= 0 ? in[t * in_stride + c] : window[(past + t) * channels + c];
  }
  for (int m = 0; m < past; ++m) window[m * channels + c] = kept[m];
}

// One block per (row, head); one thread per RoPE pair.
__global__ void prepare_kernel(TttProjected in, const float* lr_bias, float* Q, float* K, float* V, float* lr,
                               int64_t heads, int64_t f, int64_t first_index, int64_t mini_batch, double theta,
                               float base_lr) {
  const int64_t r = blockIdx.x / heads, h = blockIdx.x % heads;
  const int64_t index = (first_index + r) % mini_batch;
  const int64_t width = heads * f;
  for (int64_t j = threadIdx.x; j < f / 2; j += blockDim.x) {
    const double angle = static_cast<double>(index) * pow(theta, -2.0 * static_cast<double>(j) / static_cast<double>(f));
    const double cs = cos(angle), sn = sin(angle);
    const int64_t at = h * f + 2 * j;
    const double q0 = in.q[r * in.qk_stride + at], q1 = in.q[r * in.qk_stride + at + 1];
    const double k0 = in.k[r * in.qk_stride + at], k1 = in.k[r * in.qk_stride + at + 1];
    Q[r * width + at] = static_cast<float>(q0 * cs - q1 * sn);
    Q[r * width + at + 1] = static_cast<float>(q0 * sn + q1 * cs);
    K[r * width + at] = static_cast<float>(k0 * cs - k1 * sn);
    K[r * width + at + 1] = static_cast<float>(k0 * sn + k1 * cs);
    V[r * width + at] = in.v[r * in.v_stride + at];
    V[r * width + at + 1] = in.v[r * in.v_stride + at + 1];
  }
  if (threadIdx.x == 0) {
    const float logit = in.lr_logit[r * in.v_stride + h] + lr_bias[h];
    lr[r * heads + h] = base_lr / (1.0f + expf(-logit)) / static_cast<float>(f);
  }
}

size_t linear_shared_bytes(int64_t f, int64_t mini_batch) {
  return static_cast<size_t>(2 * f * f + 2 * f + 5 * mini_batch * f + mini_batch * mini_batch + 2 * mini_batch) *
         sizeof(float);
}

// Mean and 1/σ of a row of f values in shared memory, by one warp.
__device__ void warp_moments(const float* row, int64_t f, float& mean, float& inv_std) {
  const int lane = threadIdx.x % 32;
  float sum = 0.0f;
  for (int64_t o = lane; o < f; o += 32) sum += row[o];
  mean = warp_sum(sum) / static_cast<float>(f);
  float var = 0.0f;
  for (int64_t o = lane; o < f; o += 32) var += (row[o] - mean) * (row[o] - mean);
  inv_std = rsqrtf(warp_sum(var) / static_cast<float>(f) + kInnerNormEps);
}

__global__ void linear_steps_kernel(const float* Q, const float* K, const float* V, const float* lr,
                                    const float* token_idx, const float* norm_weight, const float* norm_bias,
                                    TttLinearState state, float* out, int64_t rows, int64_t heads, int64_t f,
                                    int64_t first_index, int64_t mini_batch) {
  extern __shared__ float shared[];
  const int64_t h = blockIdx.x;
  const int64_t n = mini_batch;
  float* W = shared;         // [f, f]
  float* GW = W + f * f;     // [f, f]
  float* b = GW + f * f;     // [f]
  float* Gb = b + f;         // [f]
  float* qs = Gb + f;        // [n, f]
  float* ks = qs + n * f;    // [n, f]
  float* ts = ks + n * f;    // [n, f] targets V − K
  float* gs = ts + n * f;    // [n, f] ∂ℓ/∂Z
  float* zs = gs + n * f;    // [n, f] Z, then Z̄
  float* att = zs + n * f;   // [n, n] Q_i · K_j
  float* rate = att + n * n; // [n] lr
  float* tok = rate + n;     // [n] token factors
  float* W_out = state.W + h * f * f;
  float* GW_out = state.GW + h * f * f;
  float* b_out = state.b + h * f;
  float* Gb_out = state.Gb + h * f;
  for (int64_t e = threadIdx.x; e < f * f; e += blockDim.x) {
    W[e] = W_out[e];
    GW[e] = GW_out[e];
  }
  for (int64_t o = threadIdx.x; o < f; o += blockDim.x) {
    b[o] = b_out[o];
    Gb[o] = Gb_out[o];
  }
  const float* gain = norm_weight + h * f;
  const float* beta = norm_bias + h * f;
  const int64_t width = heads * f;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  for (int64_t r0 = 0; r0 < rows;) {
    const int64_t first = (first_index + r0) % n;
    const int64_t count = min(rows - r0, n - first);
    for (int64_t e = threadIdx.x; e < count * f; e += blockDim.x) {
      const int64_t i = e / f, m = e % f;
      const int64_t at = (r0 + i) * width + h * f + m;
      qs[e] = Q[at];
      ks[e] = K[at];
      ts[e] = V[at] - K[at];
    }
    for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
      rate[i] = lr[(r0 + i) * heads + h];
      tok[i] = fmaxf(0.0f, 1.0f / static_cast<float>(first + i + 1) + token_idx[first + i]);
    }
    __syncthreads();
    // Z = K W + b at the mini-batch's start weights.
    for (int64_t e = threadIdx.x; e < count * f; e += blockDim.x) {
      const int64_t i = e / f, o = e % f;
      float z = b[o];
      for (int64_t m = 0; m < f; ++m) z += ks[i * f + m] * W[m * f + o];
      zs[e] = z;
    }
    __syncthreads();
    // G = ∂(½‖LN(Z) − T‖²)/∂Z, a warp per row.
    for (int64_t i = warp; i < count; i += kLinearWarps) {
      const float* z = zs + i * f;
      float mean, inv;
      warp_moments(z, f, mean, inv);
      float sum_d = 0.0f, sum_dh = 0.0f;
      for (int64_t o = lane; o < f; o += 32) {
        const float hat = (z[o] - mean) * inv;
        const float d = (hat * gain[o] + beta[o] - ts[i * f + o]) * gain[o];
        sum_d += d;
        sum_dh += d * hat;
      }
      const float mean_d = warp_sum(sum_d) / static_cast<float>(f);
      const float mean_dh = warp_sum(sum_dh) / static_cast<float>(f);
      for (int64_t o = lane; o < f; o += 32) {
        const float hat = (z[o] - mean) * inv;
        const float d = (hat * gain[o] + beta[o] - ts[i * f + o]) * gain[o];
        gs[i * f + o] = inv * (d - mean_d - hat * mean_dh);
      }
    }
    for (int64_t e = threadIdx.x; e < count * count; e += blockDim.x) {
      const int64_t i = e / count, j = e % count;
      float a = 0.0f;
      if (j <= i) {
        for (int64_t m = 0; m < f; ++m) a += qs[i * f + m] * ks[j * f + m];
      }
      att[i * n + j] = a;
    }
    __syncthreads();
    // Z̄_i = Q_i (W − tok_i GW) + b − tok_i Gb − tok_i Σ_{j≤i} lr_j (Q_i·K_j + 1) G_j
    for (int64_t e = threadIdx.x; e < count * f; e += blockDim.x) {
      const int64_t i = e / f, o = e % f;
      const float t = tok[i];
      float z = b[o] - t * Gb[o];
      for (int64_t m = 0; m < f; ++m) z += qs[i * f + m] * (W[m * f + o] - t * GW[m * f + o]);
      for (int64_t j = 0; j <= i; ++j) z -= t * rate[j] * (att[i * n + j] + 1.0f) * gs[j * f + o];
      zs[e] = z;
    }
    __syncthreads();
    for (int64_t i = warp; i < count; i += kLinearWarps) {
      const float* z = zs + i * f;
      float mean, inv;
      warp_moments(z, f, mean, inv);
      for (int64_t o = lane; o < f; o += 32) {
        out[(r0 + i) * width + h * f + o] = qs[i * f + o] + (z[o] - mean) * inv * gain[o] + beta[o];
      }
    }
    // The gradient sums grow by this stretch; a mini-batch's end commits them.
    const bool commit = first + count == n;
    const float last = tok[count - 1];
    for (int64_t e = threadIdx.x; e < f * f; e += blockDim.x) {
      const int64_t m = e / f, o = e % f;
      float g = GW[e];
      for (int64_t j = 0; j < count; ++j) g += rate[j] * ks[j * f + m] * gs[j * f + o];
      if (commit) {
        W[e] -= last * g;
        GW[e] = 0.0f;
      } else {
        GW[e] = g;
      }
    }
    for (int64_t o = threadIdx.x; o < f; o += blockDim.x) {
      float g = Gb[o];
      for (int64_t j = 0; j < count; ++j) g += rate[j] * gs[j * f + o];
      if (commit) {
        b[o] -= last * g;
        Gb[o] = 0.0f;
      } else {
        Gb[o] = g;
      }
    }
    __syncthreads();
    r0 += count;
  }
  for (int64_t e = threadIdx.x; e < f * f; e += blockDim.x) {
    W_out[e] = W[e];
    GW_out[e] = GW[e];
  }
  for (int64_t o = threadIdx.x; o < f; o += blockDim.x) {
    b_out[o] = b[o];
    Gb_out[o] = Gb[o];
  }
}


__device__ float gelu_tanh(float x) {
  return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}

__device__ float gelu_tanh_derivative(float x) {
  const float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
  const float t = tanhf(u);
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * 0.7978845608028654f * (1.0f + 3.0f * 0.044715f * x * x);
}

size_t mlp_shared_bytes(int64_t f, int64_t mini_batch) {
  const int64_t a = 4 * f;
  return static_cast<size_t>(5 * mini_batch * f + 4 * mini_batch * a + mini_batch * mini_batch + 2 * mini_batch) *
         sizeof(float);
}

__global__ void mlp_steps_kernel(const float* Q, const float* K, const float* V, const float* lr, const float* token_idx,
                                 const float* norm_weight, const float* norm_bias, TttMlpState state, float* out,
                                 int64_t rows, int64_t heads, int64_t f, int64_t first_index, int64_t mini_batch) {
  extern __shared__ float shared[];
  const int64_t h = blockIdx.x, n = mini_batch, A = 4 * f;
  float* qs = shared;          // [n, f]
  float* ks = qs + n * f;      // [n, f]
  float* ts = ks + n * f;      // [n, f] targets V − K
  float* g2 = ts + n * f;      // [n, f] ∂ℓ/∂Z2
  float* z2 = g2 + n * f;      // [n, f] Z2, then Z̄2
  float* z1 = z2 + n * f;      // [n, A] Z1
  float* x2 = z1 + n * A;      // [n, A] GELU(Z1)
  float* g1 = x2 + n * A;      // [n, A] ∂ℓ/∂Z1
  float* x2bar = g1 + n * A;   // [n, A] Z̄1, then GELU(Z̄1)
  float* att = x2bar + n * A;  // [n, n]
  float* rate = att + n * n;   // [n]
  float* tok = rate + n;       // [n]
  float* W1 = state.W1 + h * f * A;
  float* GW1 = state.GW1 + h * f * A;
  float* b1 = state.b1 + h * A;
  float* Gb1 = state.Gb1 + h * A;
  float* W2 = state.W2 + h * A * f;
  float* GW2 = state.GW2 + h * A * f;
  float* b2 = state.b2 + h * f;
  float* Gb2 = state.Gb2 + h * f;
  const float* gain = norm_weight + h * f;
  const float* beta = norm_bias + h * f;
  const int64_t width = heads * f;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int64_t r0 = 0; r0 < rows;) {
    const int64_t first = (first_index + r0) % n;
    const int64_t count = min(rows - r0, n - first);
    for (int64_t e = threadIdx.x; e < count * f; e += blockDim.x) {
      const int64_t i = e / f, m = e % f;
      const int64_t at = (r0 + i) * width + h * f + m;
      qs[e] = Q[at];
      ks[e] = K[at];
      ts[e] = V[at] - K[at];
    }
    for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
      rate[i] = lr[(r0 + i) * heads + h];
      tok[i] = fmaxf(0.0f, 1.0f / static_cast<float>(first + i + 1) + token_idx[first + i]);
    }
    __syncthreads();
    // The inner model at the start weights on K: Z1, X2 = GELU(Z1), then Z2.
    for (int64_t e = threadIdx.x; e < count * A; e += blockDim.x) {
      const int64_t i = e / A, a = e % A;
      float z = b1[a];
      for (int64_t m = 0; m < f; ++m) z += ks[i * f + m] * W1[m * A + a];
      z1[e] = z;
      x2[e] = gelu_tanh(z);
    }
    for (int64_t e = threadIdx.x; e < count * count; e += blockDim.x) {
      const int64_t i = e / count, j = e % count;
      float dot = 0.0f;
      if (j <= i) {
        for (int64_t m = 0; m < f; ++m) dot += qs[i * f + m] * ks[j * f + m];
      }
      att[i * n + j] = dot;
    }
    __syncthreads();
    for (int64_t e = threadIdx.x; e < count * f; e += blockDim.x) {
      const int64_t i = e / f, o = e % f;
      float z = b2[o];
      for (int64_t a = 0; a < A; ++a) z += x2[i * A + a] * W2[a * f + o];
      z2[e] = z;
    }
    __syncthreads();
    // G2 = ∂(½‖LN(Z2) − T‖²)/∂Z2, a warp per row.
    for (int64_t i = warp; i < count; i += kLinearWarps) {
      const float* z = z2 + i * f;
      float mean, inv;
      warp_moments(z, f, mean, inv);
      float sum_d = 0.0f, sum_dh = 0.0f;
      for (int64_t o = lane; o < f; o += 32) {
        const float hat = (z[o] - mean) * inv;
        const float d = (hat * gain[o] + beta[o] - ts[i * f + o]) * gain[o];
        sum_d += d;
        sum_dh += d * hat;
      }
      const float mean_d = warp_sum(sum_d) / static_cast<float>(f);
      const float mean_dh = warp_sum(sum_dh) / static_cast<float>(f);
      for (int64_t o = lane; o < f; o += 32) {
        const float hat = (z[o] - mean) * inv;
        const float d = (hat * gain[o] + beta[o] - ts[i * f + o]) * gain[o];
        g2[i * f + o] = inv * (d - mean_d - hat * mean_dh);
      }
    }
    __syncthreads();
    // G1 = (G2 W2ᵀ) ⊙ GELU′(Z1); Z̄1 from the queries.
    for (int64_t e = threadIdx.x; e < count * A; e += blockDim.x) {
      const int64_t i = e / A, a = e % A;
      float d = 0.0f;
      for (int64_t o = 0; o < f; ++o) d += W2[a * f + o] * g2[i * f + o];
      g1[e] = d * gelu_tanh_derivative(z1[e]);
    }
    __syncthreads();
    for (int64_t e = threadIdx.x; e < count * A; e += blockDim.x) {
      const int64_t i = e / A, a = e % A;
      const float t = tok[i];
      float z = b1[a] - t * Gb1[a];
      for (int64_t m = 0; m < f; ++m) z += qs[i * f + m] * (W1[m * A + a] - t * GW1[m * A + a]);
      for (int64_t j = 0; j <= i; ++j) z -= t * rate[j] * (att[i * n + j] + 1.0f) * g1[j * A + a];
      x2bar[e] = gelu_tanh(z);
    }
    __syncthreads();
    // X̄2 · X2 products, then Z̄2.
    for (int64_t e = threadIdx.x; e < count * count; e += blockDim.x) {
      const int64_t i = e / count, j = e % count;
      float dot = 0.0f;
      if (j <= i) {
        for (int64_t a = 0; a < A; ++a) dot += x2bar[i * A + a] * x2[j * A + a];
      }
      att[i * n + j] = dot;
    }
    __syncthreads();
    for (int64_t e = threadIdx.x; e < count * f; e += blockDim.x) {
      const int64_t i = e / f, o = e % f;
      const float t = tok[i];
      float z = b2[o] - t * Gb2[o];
      for (int64_t a = 0; a < A; ++a) z += x2bar[i * A + a] * (W2[a * f + o] - t * GW2[a * f + o]);
      for (int64_t j = 0; j <= i; ++j) z -= t * rate[j] * (att[i * n + j] + 1.0f) * g2[j * f + o];
      z2[e] = z;
    }
    __syncthreads();
    for (int64_t i = warp; i < count; i += kLinearWarps) {
      const float* z = z2 + i * f;
      float mean, inv;
      warp_moments(z, f, mean, inv);
      for (int64_t o = lane; o < f; o += 32) {
        out[(r0 + i) * width + h * f + o] = qs[i * f + o] + (z[o] - mean) * inv * gain[o] + beta[o];
      }
    }
    // The sums grow by this stretch; a mini-batch's end commits them.
    const bool commit = first + count == n;
    const float last = tok[count - 1];
    const auto step = [&](float* w, float* g, float add) {
      const float sum = *g + add;
      if (commit) {
        *w -= last * sum;
        *g = 0.0f;
      } else {
        *g = sum;
      }
    };
    for (int64_t e = threadIdx.x; e < f * A; e += blockDim.x) {
      const int64_t m = e / A, a = e % A;
      float add = 0.0f;
      for (int64_t j = 0; j < count; ++j) add += rate[j] * ks[j * f + m] * g1[j * A + a];
      step(&W1[e], &GW1[e], add);
    }
    for (int64_t a = threadIdx.x; a < A; a += blockDim.x) {
      float add = 0.0f;
      for (int64_t j = 0; j < count; ++j) add += rate[j] * g1[j * A + a];
      step(&b1[a], &Gb1[a], add);
    }
    for (int64_t e = threadIdx.x; e < A * f; e += blockDim.x) {
      const int64_t a = e / f, o = e % f;
      float add = 0.0f;
      for (int64_t j = 0; j < count; ++j) add += rate[j] * x2[j * A + a] * g2[j * f + o];
      step(&W2[e], &GW2[e], add);
    }
    for (int64_t o = threadIdx.x; o < f; o += blockDim.x) {
      float add = 0.0f;
      for (int64_t j = 0; j < count; ++j) add += rate[j] * g2[j * f + o];
      step(&b2[o], &Gb2[o], add);
    }
    __syncthreads();
    r0 += count;
  }
}

__global__ void post_norm_gate_kernel(const float* x, const float* weight, const float* bias, const float* gate,
                                      int64_t gate_stride, __nv_bfloat16* out, int64_t dim, float eps) {
  const float* row = x + blockIdx.x * dim;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) sum += row[i];
  const float mean = block_sum<kThreads>(sum) / static_cast<float>(dim);
  float var = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) var += (row[i] - mean) * (row[i] - mean);
  const float inv = rsqrtf(block_sum<kThreads>(var) / static_cast<float>(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    float y = (row[i] - mean) * inv * weight[i] + bias[i];
    if (gate != nullptr) y *= gelu_tanh(gate[blockIdx.x * gate_stride + i]);
    out[blockIdx.x * dim + i] = __float2bfloat16(y);
  }
}

}  // namespace

cudaError_t ttt_rms_norm(const float* x, const float* weight, float* out, int64_t rows, int64_t dim, float eps,
                         cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  rms_norm_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, weight, out, dim, eps);
  return cudaGetLastError();
}

cudaError_t ttt_causal_conv(const float* in, int64_t in_stride, const CausalConv& conv, float* window, int64_t rows,
                            int64_t channels, int64_t kernel, cudaStream_t stream) {
  if (kernel < 1 || kernel > kMaxConvKernel) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  // The outputs read the window before the second kernel moves it (the stream orders them).
  const int64_t elements = rows * channels;
  causal_conv_kernel<<<static_cast<unsigned>((elements + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      in, in_stride, conv, window, rows, channels, static_cast<int>(kernel));
  if (const cudaError_t launched = cudaGetLastError(); launched != cudaSuccess) return launched;
  conv_window_kernel<<<static_cast<unsigned>((channels + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      in, in_stride, window, rows, channels, static_cast<int>(kernel));
  return cudaGetLastError();
}

cudaError_t ttt_prepare(const TttProjected& in, const float* lr_bias, float* Q, float* K, float* V, float* lr,
                        int64_t rows, int64_t heads, int64_t head_dim, int64_t first_index, int64_t mini_batch,
                        float rope_theta, float base_lr, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  const int threads = static_cast<int>(std::min<int64_t>(128, std::max<int64_t>(32, head_dim / 2)));
  prepare_kernel<<<static_cast<unsigned>(rows * heads), threads, 0, stream>>>(
      in, lr_bias, Q, K, V, lr, heads, head_dim, first_index, mini_batch, static_cast<double>(rope_theta), base_lr);
  return cudaGetLastError();
}

bool ttt_linear_supported(int64_t head_dim, int64_t mini_batch) {
  return head_dim > 0 && mini_batch > 0 && linear_shared_bytes(head_dim, mini_batch) <= kSharedLimit;
}

cudaError_t ttt_linear_steps(const float* Q, const float* K, const float* V, const float* lr, const float* token_idx,
                             const float* norm_weight, const float* norm_bias, const TttLinearState& state, float* out,
                             int64_t rows, int64_t heads, int64_t head_dim, int64_t first_index, int64_t mini_batch,
                             cudaStream_t stream) {
  if (!ttt_linear_supported(head_dim, mini_batch)) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  const size_t shared = linear_shared_bytes(head_dim, mini_batch);
  if (shared > 48 * 1024) {
    const cudaError_t raised = cudaFuncSetAttribute(linear_steps_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                    static_cast<int>(shared));
    if (raised != cudaSuccess) return raised;
  }
  linear_steps_kernel<<<static_cast<unsigned>(heads), kLinearThreads, shared, stream>>>(
      Q, K, V, lr, token_idx, norm_weight, norm_bias, state, out, rows, heads, head_dim, first_index, mini_batch);
  return cudaGetLastError();
}

bool ttt_mlp_supported(int64_t head_dim, int64_t mini_batch) {
  return head_dim > 0 && mini_batch > 0 && mlp_shared_bytes(head_dim, mini_batch) <= kSharedLimit;
}

cudaError_t ttt_mlp_steps(const float* Q, const float* K, const float* V, const float* lr, const float* token_idx,
                          const float* norm_weight, const float* norm_bias, const TttMlpState& state, float* out,
                          int64_t rows, int64_t heads, int64_t head_dim, int64_t first_index, int64_t mini_batch,
                          cudaStream_t stream) {
  if (!ttt_mlp_supported(head_dim, mini_batch)) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  const size_t shared = mlp_shared_bytes(head_dim, mini_batch);
  if (shared > 48 * 1024) {
    const cudaError_t raised =
        cudaFuncSetAttribute(mlp_steps_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared));
    if (raised != cudaSuccess) return raised;
  }
  mlp_steps_kernel<<<static_cast<unsigned>(heads), kLinearThreads, shared, stream>>>(
      Q, K, V, lr, token_idx, norm_weight, norm_bias, state, out, rows, heads, head_dim, first_index, mini_batch);
  return cudaGetLastError();
}

cudaError_t ttt_post_norm_gate(const float* x, const float* weight, const float* bias, const float* gate,
                               int64_t gate_stride, __nv_bfloat16* out, int64_t rows, int64_t dim, float eps,
                               cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  post_norm_gate_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, weight, bias, gate, gate_stride, out,
                                                                            dim, eps);
  return cudaGetLastError();
}

}  // namespace draftwise::cuda
