// gemv: linear layers for decode and verification steps (up to 8 rows), where the weight
// matrix is read once per step and memory bandwidth is the bound.
//
// A block of 256 threads first starts the loads of its first weight rows, which do not depend
// on the kernels before it: with programmatic dependent launch (launch.cuh) they overlap the
// previous kernel's tail. It then waits for that kernel and puts its input rows in shared
// memory as bf16: either copied,
// or RMS-normed from the fp32 residual stream (residual + delta, optionally gathered rows),
// which spares a norm kernel and its launch per layer; block 0 also stores residual + delta
// for the next layer. Each warp then takes a pair of weight rows at a time (two consecutive
// rows, or row i of the gate and of the up half for SwiGLU) and streams them with 16-byte
// non-caching loads, four chunks in flight per row per lane, accumulating fp32 dot products
// for every input row; a shuffle reduction ends the pair, and lane r writes row r's result.
// The grid is one wave of blocks looping over the pairs. For a qkv projection the pairs are
// the two rows of each RoPE pair (j, j + head_dim/2), so the epilogue can rotate q and k and
// write k and v to their cache slots (no separate RoPE kernel). For a greedy LM head the
// epilogue keeps each row's best argmax key (argmax.cuh) and each block ends with one
// atomicMax per row: no logits are stored and no argmax kernel follows.
// Everything no kernel of the step writes (norm weights, biases, RoPE frequencies, positions,
// cache slots and gathered row indices, which come with the step's plan) is loaded with the
// first weights, before the wait, so that it is off the chain of dependent loads.
#include <algorithm>

#include "kernels/cuda/argmax.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/reduce.cuh"

namespace draftwise::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// 16-byte chunks per row per lane in flight: eight for one input row (decode), so that the
// loads issued before the wait cover whole rows of up to 2048 features; four otherwise
// (registers).
template <int R>
constexpr int kUnroll = R == 1 ? 8 : 4;
constexpr int64_t kMaxSharedBytes = 100 * 1024;
constexpr int64_t kMaxRows = 4;
// Normed inputs: the first kCached elements of each thread stay in registers between the two
// passes of the norm.
constexpr int kCached = 4;

struct GemvParams {
  LinearSource source;
  int rows;
  const bf16* w;
  const bf16* bias;
  int in;
  int out;
  GemvEpilogue epilogue;
  void* y;
  int y_fp32;
  RopeCacheWrite rope;
};

// The two weight rows of pair `pair`; false when the pair does not exist.
struct PairRows {
  int a;
  int b;
  bool has_b;
};
__device__ __forceinline__ PairRows pair_rows(const GemvParams& p, int pair) {
  switch (p.epilogue) {
    case GemvEpilogue::kSwiglu:
      return {pair, pair + p.out / 2, true};
    case GemvEpilogue::kRopeWriteKv: {
      const int head_dim = static_cast<int>(p.rope.head_dim);
      const int half = head_dim / 2;
      const int rotated = static_cast<int>(p.rope.heads + p.rope.kv_heads) * half;
      if (pair < rotated) {
        const int a = (pair / half) * head_dim + pair % half;
        return {a, a + half, true};
      }
      const int a = static_cast<int>(p.rope.heads + p.rope.kv_heads) * head_dim + 2 * (pair - rotated);
      return {a, a + 1, a + 1 < p.out};
    }
    default:
      return {2 * pair, 2 * pair + 1, 2 * pair + 1 < p.out};
  }
}

// kRopeWriteKv: (heads + kv_heads)·half rotation pairs and kv_dim / 2 value pairs, (out + 1) / 2 too.
__host__ __device__ inline int pair_count(GemvEpilogue epilogue, int out) {
  return epilogue == GemvEpilogue::kSwiglu ? out / 2 : (out + 1) / 2;
}

// The epilogue's inputs for one pair, none of them written by a kernel of the step.
struct EpilogueInputs {
  float bias_a = 0.0f;
  float bias_b = 0.0f;
  float inv_freq = 0.0f;  // kRopeWriteKv rotation pairs: the pair's frequency
  int32_t position = 0;   // kRopeWriteKv: the position and cache slot of this lane's row
  int32_t slot = 0;
};
__device__ __forceinline__ EpilogueInputs load_epilogue_inputs(const GemvParams& p, const PairRows& rows, int lane) {
  EpilogueInputs e;
  if (p.bias != nullptr) {
    e.bias_a = __bfloat162float(p.bias[rows.a]);
    if (rows.has_b) e.bias_b = __bfloat162float(p.bias[rows.b]);
  }
  if (p.epilogue == GemvEpilogue::kRopeWriteKv) {
    const int head_dim = static_cast<int>(p.rope.head_dim);
    if (rows.a / head_dim < p.rope.heads + p.rope.kv_heads) e.inv_freq = p.rope.inv_freq[rows.a % head_dim];
    if (lane < p.rows) {
      e.position = p.rope.positions[lane];
      e.slot = p.rope.slots[lane];
    }
  }
  return e;
}

// The norm's inputs that no kernel of the step writes.
template <int R>
struct NormInputs {
  float weight[kCached];  // of this thread's first kCached elements
  int64_t source_row[R];  // the residual row of each input row
};
template <int R>
__device__ __forceinline__ NormInputs<R> load_norm_inputs(const GemvParams& p) {
  NormInputs<R> n;
  const LinearSource& s = p.source;
#pragma unroll
  for (int r = 0; r < R; ++r) n.source_row[r] = r < p.rows ? (s.row_index != nullptr ? s.row_index[r] : r) : 0;
#pragma unroll
  for (int k = 0; k < kCached; ++k) {
    const int i = threadIdx.x + k * kThreads;
    n.weight[k] = s.x == nullptr && i < p.in ? s.norm_weight[i] : 0.0f;
  }
  return n;
}

__device__ __forceinline__ uint4 load_streaming(const uint4* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

__device__ __forceinline__ float dot8(uint4 w, uint4 x, float acc) {
  const __nv_bfloat162* wp = reinterpret_cast<const __nv_bfloat162*>(&w);
  const __nv_bfloat162* xp = reinterpret_cast<const __nv_bfloat162*>(&x);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 a = __bfloat1622float2(wp[i]);
    const float2 b = __bfloat1622float2(xp[i]);
    acc = fmaf(a.x, b.x, acc);
    acc = fmaf(a.y, b.y, acc);
  }
  return acc;
}

// Fills xs[R][in] (bf16) with the block's input rows; rows past p.rows are zero.
template <int R>
__device__ __forceinline__ void load_input(const GemvParams& p, const NormInputs<R>& norm, bf16* xs) {
  const int in = p.in;
  const LinearSource& s = p.source;
  if (s.x != nullptr) {
    const int chunks = in / 8;
    for (int i = threadIdx.x; i < R * chunks; i += kThreads) {
      const int r = i / chunks;
      const int c = i % chunks;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (r < p.rows) v = *reinterpret_cast<const uint4*>(s.x + static_cast<int64_t>(r) * in + 8 * c);
      *reinterpret_cast<uint4*>(xs + r * in + 8 * c) = v;
    }
    return;
  }
  __shared__ float partial[kWarps][R];
  const int64_t (&source_row)[R] = norm.source_row;
  float cached[R][kCached];
  float squares[R];
#pragma unroll
  for (int r = 0; r < R; ++r) squares[r] = 0.0f;
#pragma unroll
  for (int k = 0; k < kCached; ++k) {
    const int i = threadIdx.x + k * kThreads;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      float v = 0.0f;
      if (i < in && r < p.rows) {
        v = s.residual[source_row[r] * in + i];
        if (s.delta != nullptr) v += __bfloat162float(s.delta[source_row[r] * in + i]);
      }
      cached[r][k] = v;
      squares[r] += v * v;
    }
  }
  for (int i = threadIdx.x + kCached * kThreads; i < in; i += kThreads) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (r >= p.rows) continue;
      float v = s.residual[source_row[r] * in + i];
      if (s.delta != nullptr) v += __bfloat162float(s.delta[source_row[r] * in + i]);
      squares[r] += v * v;
    }
  }
  const int warp = threadIdx.x / 32;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const float sum = warp_sum(squares[r]);
    if (threadIdx.x % 32 == 0) partial[warp][r] = sum;
  }
  __syncthreads();
  float inverse_rms[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    float total = 0.0f;
    for (int w = 0; w < kWarps; ++w) total += partial[w][r];
    inverse_rms[r] = rsqrtf(total / static_cast<float>(in) + s.eps);
  }
  const bool store_sum = s.residual_out != nullptr && blockIdx.x == 0;
#pragma unroll
  for (int k = 0; k < kCached; ++k) {
    const int i = threadIdx.x + k * kThreads;
    if (i >= in) break;
    const float weight = norm.weight[k];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (r >= p.rows) {
        xs[r * in + i] = __float2bfloat16(0.0f);
        continue;
      }
      if (store_sum) s.residual_out[source_row[r] * in + i] = cached[r][k];
      xs[r * in + i] = __float2bfloat16(weight * (cached[r][k] * inverse_rms[r]));
    }
  }
  for (int i = threadIdx.x + kCached * kThreads; i < in; i += kThreads) {
    const float weight = s.norm_weight[i];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (r >= p.rows) {
        xs[r * in + i] = __float2bfloat16(0.0f);
        continue;
      }
      float v = s.residual[source_row[r] * in + i];
      if (s.delta != nullptr) v += __bfloat162float(s.delta[source_row[r] * in + i]);
      if (store_sum) s.residual_out[source_row[r] * in + i] = v;
      xs[r * in + i] = __float2bfloat16(weight * (v * inverse_rms[r]));
    }
  }
}

// Row r's results for one pair (lane r writes them).
__device__ __forceinline__ void write_pair(const GemvParams& p, int r, int pair, const PairRows& rows,
                                           const EpilogueInputs& extra, float a, float b) {
  if (p.epilogue == GemvEpilogue::kSwiglu) {
    const float value = a / (1.0f + expf(-a)) * b;
    static_cast<bf16*>(p.y)[static_cast<int64_t>(r) * (p.out / 2) + pair] = __float2bfloat16(value);
    return;
  }
  if (p.bias != nullptr) {
    a += extra.bias_a;
    b += extra.bias_b;
  }
  const int64_t row_start = static_cast<int64_t>(r) * p.out;
  if (p.y_fp32) {
    float* y = static_cast<float*>(p.y) + row_start;
    y[rows.a] = a;
    if (rows.has_b) y[rows.b] = b;
    return;
  }
  bf16* y = static_cast<bf16*>(p.y) + row_start;
  bf16 x0 = __float2bfloat16(a);
  bf16 x1 = __float2bfloat16(b);
  if (p.epilogue == GemvEpilogue::kRopeWriteKv) {
    const RopeCacheWrite& rope = p.rope;
    const int head_dim = static_cast<int>(rope.head_dim);
    const int half = head_dim / 2;
    const int64_t kv_dim = rope.kv_heads * rope.head_dim;
    const int64_t slot = extra.slot;
    const int head = rows.a / head_dim;
    if (head < rope.heads + rope.kv_heads) {
      // rope_and_write_kv's rotation of the bf16 values, bit for bit.
      const int j = rows.a % head_dim;
      const float angle = static_cast<float>(extra.position) * extra.inv_freq;
      float s;
      float c;
      sincosf(angle, &s, &c);
      const float u = __bfloat162float(x0);
      const float v = __bfloat162float(x1);
      x0 = __float2bfloat16(u * c - v * s);
      x1 = __float2bfloat16(v * c + u * s);
      if (head >= rope.heads) {
        bf16* k = rope.k_cache + slot * kv_dim + (head - rope.heads) * head_dim;
        k[j] = x0;
        k[j + half] = x1;
      }
    } else {
      const int64_t column = rows.a - (rope.heads + rope.kv_heads) * head_dim;
      rope.v_cache[slot * kv_dim + column] = x0;
      if (rows.has_b) rope.v_cache[slot * kv_dim + column + 1] = x1;
    }
  }
  y[rows.a] = x0;
  if (rows.has_b) y[rows.b] = x1;
}

template <int R>
__global__ void __launch_bounds__(kThreads) gemv_kernel(GemvParams p) {
  extern __shared__ __align__(16) unsigned char shared_raw[];
  bf16* xs = reinterpret_cast<bf16*>(shared_raw);
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int in = p.in;
  const int chunks = in / 8;
  const int pairs = pair_count(p.epilogue, p.out);
  int pair = blockIdx.x * kWarps + warp;

  // The first chunks of this warp's first pair, its epilogue's inputs and the norm's weights:
  // nothing a kernel of the step writes, so before the wait.
  uint4 va[kUnroll<R>];
  uint4 vb[kUnroll<R>];
  PairRows rows{0, 0, false};
  EpilogueInputs extra;
  if (pair < pairs) {
    rows = pair_rows(p, pair);
    extra = load_epilogue_inputs(p, rows, lane);
    const uint4* wa = reinterpret_cast<const uint4*>(p.w + static_cast<int64_t>(rows.a) * in);
    const uint4* wb = reinterpret_cast<const uint4*>(p.w + static_cast<int64_t>(rows.has_b ? rows.b : rows.a) * in);
#pragma unroll
    for (int k = 0; k < kUnroll<R>; ++k) {
      const int c = lane + 32 * k;
      if (c < chunks) {
        va[k] = load_streaming(wa + c);
        vb[k] = load_streaming(wb + c);
      }
    }
  }
  const NormInputs<R> norm = load_norm_inputs<R>(p);
  release_next_grid();
  wait_for_prior_grid();
  load_input<R>(p, norm, xs);
  __syncthreads();

  uint64_t best = 0;  // kArgmax: the best key of this lane's row so far
  bool prefetched = true;
  for (; pair < pairs; pair += gridDim.x * kWarps) {
    if (!prefetched) {
      rows = pair_rows(p, pair);
      extra = load_epilogue_inputs(p, rows, lane);
    }
    const uint4* wa = reinterpret_cast<const uint4*>(p.w + static_cast<int64_t>(rows.a) * in);
    const uint4* wb = reinterpret_cast<const uint4*>(p.w + static_cast<int64_t>(rows.has_b ? rows.b : rows.a) * in);
    float acc_a[R];
    float acc_b[R];
#pragma unroll
    for (int r = 0; r < R; ++r) acc_a[r] = acc_b[r] = 0.0f;
    for (int base = lane; base < chunks; base += 32 * kUnroll<R>) {
      if (!prefetched) {
#pragma unroll
        for (int k = 0; k < kUnroll<R>; ++k) {
          const int c = base + 32 * k;
          if (c < chunks) {
            va[k] = load_streaming(wa + c);
            vb[k] = load_streaming(wb + c);
          }
        }
      }
      prefetched = false;
#pragma unroll
      for (int k = 0; k < kUnroll<R>; ++k) {
        const int c = base + 32 * k;
        if (c >= chunks) continue;
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const uint4 xv = *reinterpret_cast<const uint4*>(xs + r * in + 8 * c);
          acc_a[r] = dot8(va[k], xv, acc_a[r]);
          acc_b[r] = dot8(vb[k], xv, acc_b[r]);
        }
      }
    }
    prefetched = false;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      acc_a[r] = warp_sum(acc_a[r]);
      acc_b[r] = warp_sum(acc_b[r]);
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (lane != r || r >= p.rows) continue;
      if (p.epilogue == GemvEpilogue::kArgmax) {
        best = key_max(best, argmax_key(acc_a[r], rows.a));
        if (rows.has_b) best = key_max(best, argmax_key(acc_b[r], rows.b));
      } else {
        write_pair(p, r, pair, rows, extra, acc_a[r], acc_b[r]);
      }
    }
  }
  if (p.epilogue == GemvEpilogue::kArgmax) {
    // Lane r of each warp holds row r's best: the block's best per row, then one atomic.
    __shared__ uint64_t winners[kWarps][R];
    if (lane < R) winners[warp][lane] = best;
    __syncthreads();
    if (threadIdx.x < p.rows) {
      uint64_t key = 0;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) key = key_max(key, winners[w][threadIdx.x]);
      if (key != 0) atomicMax(reinterpret_cast<unsigned long long*>(static_cast<uint64_t*>(p.y) + threadIdx.x), key);
    }
  }
}

int row_bucket(int64_t rows) { return rows <= 1 ? 1 : rows <= 2 ? 2 : 4; }

template <int R>
cudaError_t launch_gemv(const GemvParams& p, cudaStream_t stream) {
  const size_t shared = static_cast<size_t>(R) * p.in * sizeof(bf16);
  if (shared > 48 * 1024) {
    if (const cudaError_t set = cudaFuncSetAttribute(gemv_kernel<R>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                     static_cast<int>(kMaxSharedBytes));
        set != cudaSuccess) {
      return set;
    }
  }
  int device = 0;
  int multiprocessors = 0;
  int per_multiprocessor = 0;
  if (const cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) return e;
  if (const cudaError_t e = cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device);
      e != cudaSuccess) {
    return e;
  }
  if (const cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_multiprocessor, gemv_kernel<R>,
                                                                          kThreads, shared);
      e != cudaSuccess) {
    return e;
  }
  const int64_t pairs = pair_count(p.epilogue, p.out);
  const int64_t wanted = (pairs + kWarps - 1) / kWarps;
  const int64_t wave = static_cast<int64_t>(std::max(per_multiprocessor, 1)) * multiprocessors;
  const unsigned blocks = static_cast<unsigned>(std::max<int64_t>(1, std::min(wanted, wave)));
  return launch(gemv_kernel<R>, dim3(blocks), dim3(kThreads), shared, stream, p);
}

}  // namespace

bool gemv_supported(int64_t rows, int64_t in) {
  return rows >= 1 && rows <= kMaxRows && in > 0 && in % 8 == 0 &&
         static_cast<int64_t>(row_bucket(rows)) * in * static_cast<int64_t>(sizeof(bf16)) <= kMaxSharedBytes;
}

cudaError_t gemv(const LinearSource& source, int64_t rows, const bf16* w, const bf16* bias,
                 int64_t in, int64_t out, GemvEpilogue epilogue, void* y, bool y_fp32,
                 cudaStream_t stream, const RopeCacheWrite* rope) {
  if (rows == 0 || out == 0) return cudaSuccess;
  if (!gemv_supported(rows, in)) return cudaErrorInvalidValue;
  const bool swiglu = epilogue == GemvEpilogue::kSwiglu;
  if (swiglu && (out % 2 != 0 || bias != nullptr || y_fp32)) return cudaErrorInvalidValue;
  const bool rotate = epilogue == GemvEpilogue::kRopeWriteKv;
  if (rotate != (rope != nullptr)) return cudaErrorInvalidValue;
  if (rotate && (y_fp32 || rope->head_dim % 2 != 0 || (rope->heads + 2 * rope->kv_heads) * rope->head_dim != out ||
                 (rope->kv_heads * rope->head_dim) % 2 != 0)) {
    return cudaErrorInvalidValue;
  }
  if (epilogue == GemvEpilogue::kArgmax && (bias != nullptr || y_fp32)) return cudaErrorInvalidValue;
  if (source.x == nullptr && (source.residual == nullptr || source.norm_weight == nullptr)) return cudaErrorInvalidValue;
  if (source.residual_out != nullptr && source.residual_out == source.residual) return cudaErrorInvalidValue;
  const GemvParams p{source, static_cast<int>(rows), w, bias, static_cast<int>(in), static_cast<int>(out),
                     epilogue, y, y_fp32 ? 1 : 0, rope != nullptr ? *rope : RopeCacheWrite{}};
  switch (row_bucket(rows)) {
    case 1: return launch_gemv<1>(p, stream);
    case 2: return launch_gemv<2>(p, stream);
    default: return launch_gemv<4>(p, stream);
  }
}

}  // namespace draftwise::cuda
