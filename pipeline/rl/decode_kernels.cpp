// Fused CPU kernels for the torch engine's decode step (one new token per row).
//
// At a small model's decode step the cost was the ~25 small torch ops per layer, not their arithmetic. Each
// kernel here replaces a run of them: RMSNorm with its residual add; RoPE, the KV-cache write and the masked
// softmax attention; SiLU with the gate product; the sampler's softmax and inverse-CDF draw. Layouts follow
// what makes the matmuls (MKL, called from Python) fastest: the residual stream and each projection's output
// are feature-major, [features, rows] (`weight @ x.T` writes that), and RMSNorm's and attention's outputs,
// the next projections' inputs, are token-major, [rows, features]. Keys are cached transposed,
// [B, KV, D, positions], so that a query's scores over the positions are contiguous multiply-adds.
// Built by pipeline/rl/decode_kernels.py; pipeline/rl/lean_decoder.py's torch path is the same maths, and
// tests/test_torch_engine.py checks one against the other and both against transformers.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

constexpr int64_t kMaxHeadDim = 512;

// exp(x) for x <= 0 by Cephes' range reduction and degree-6 polynomial (relative error ~1e-7), written as plain
// float arithmetic so that loops over it vectorise. x is clamped at -87 (exp(-87) ~ 1.6e-38 stands for 0); no
// upper clamp: a compiler splits a clamp into branches and computes each, and exp(88)'s branch turned SiLU's
// quotient denormal, a microcode assist per element (15x slower). Callers pass -|g| or a shifted score.
inline float exp_nonpositive(float x) {
  x = std::max(x, -87.0f);
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln 2)
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

void check_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous(), name,
              " must be a contiguous float32 CPU tensor (got ", t.scalar_type(), ", ", t.device(),
              t.is_contiguous() ? "" : ", non-contiguous", ")");
}

void add_rms_norm_columns(float* h, const float* delta, const float* weight, float* out, int64_t features,
                          int64_t rows, int64_t r0, int64_t r1, float eps) {
  std::vector<float> sum_sq(r1 - r0, 0.0f);
  float* ss = sum_sq.data() - r0;
  for (int64_t c = 0; c < features; ++c) {
    float* row = h + c * rows;
    if (delta != nullptr) {
      const float* d = delta + c * rows;
      for (int64_t r = r0; r < r1; ++r) row[r] += d[r];
    }
    for (int64_t r = r0; r < r1; ++r) ss[r] += row[r] * row[r];
  }
  for (int64_t r = r0; r < r1; ++r) ss[r] = 1.0f / std::sqrt(ss[r] / static_cast<float>(features) + eps);
  for (int64_t r = r0; r < r1; ++r) {  // out is token-major, [rows, features]
    float* o = out + r * features;
    const float inv = ss[r];
    for (int64_t c = 0; c < features; ++c) o[c] = h[c * rows + r] * inv * weight[c];
  }
}

void silu_mul_range(const float* gate, const float* up, float* out, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) {
    const float g = gate[i];
    const float e = exp_nonpositive(-std::fabs(g));  // sigmoid(g) = 1 / (1 + e) for g >= 0, else e / (1 + e)
    out[i] = g * up[i] * (g >= 0.0f ? 1.0f : e) / (1.0f + e);
  }
}

struct AttentionArgs {
  const float* qkv;          // [(H + 2 KV) * D, B]
  float* k_cache;            // [B, KV, D, total]
  float* v_cache;            // [B, KV, total, D]
  const float* cos;          // [positions, D]
  const float* sin;
  const int64_t* positions;  // [B]
  bool* key_valid;           // [B, total]
  float* out;                // [B, H * D]
  int64_t B, H, KV, D, total, start;
  float scale;
};

// Rotate x (strided by `stride`) by RoPE at one position: x * cos + rotate_half(x) * sin, as transformers does.
inline void rope(const float* x, int64_t stride, const float* cos, const float* sin, int64_t D, float* y) {
  const int64_t half = D / 2;
  for (int64_t d = 0; d < half; ++d) y[d] = x[d * stride] * cos[d] - x[(d + half) * stride] * sin[d];
  for (int64_t d = half; d < D; ++d) y[d] = x[d * stride] * cos[d] + x[(d - half) * stride] * sin[d];
}

// Register-blocked loops on 8-float vectors (GCC/Clang vector extensions; 256-bit registers where the CPU has
// them, pairs of 128-bit ones elsewhere): a block's accumulators stay in registers across the reduction.
typedef float float8 __attribute__((vector_size(32), aligned(4), may_alias));

inline float8 load8(const float* p) { return *reinterpret_cast<const float8*>(p); }

// s[t] = q . keys[:, t] for t < end; keys [D, total], a position's key is a column (columns up to `total` are
// readable: a block may run past `end`, and its extra lanes are dropped).
inline void query_key_scores(const float* q, const float* keys, int64_t D, int64_t total, int64_t end, float* s) {
  int64_t t0 = 0;
  for (; t0 + 32 <= end; t0 += 32) {
    float8 a0 = {}, a1 = {}, a2 = {}, a3 = {};
    for (int64_t d = 0; d < D; ++d) {
      const float qd = q[d];
      const float* k = keys + d * total + t0;
      a0 += qd * load8(k);
      a1 += qd * load8(k + 8);
      a2 += qd * load8(k + 16);
      a3 += qd * load8(k + 24);
    }
    std::memcpy(s + t0, &a0, 32);
    std::memcpy(s + t0 + 8, &a1, 32);
    std::memcpy(s + t0 + 16, &a2, 32);
    std::memcpy(s + t0 + 24, &a3, 32);
  }
  for (; t0 < end && t0 + 8 <= total; t0 += 8) {
    float8 a = {};
    for (int64_t d = 0; d < D; ++d) a += q[d] * load8(keys + d * total + t0);
    std::memcpy(s + t0, &a, sizeof(float) * std::min<int64_t>(8, end - t0));
  }
  for (; t0 < end; ++t0) {
    float acc = 0.0f;
    for (int64_t d = 0; d < D; ++d) acc += q[d] * keys[d * total + t0];
    s[t0] = acc;
  }
}

// ctx[d] = sum over t < end of p[t] * values[t, d]; values [total, D].
inline void weighted_values(const float* p, const float* values, int64_t D, int64_t end, float* ctx) {
  int64_t d0 = 0;
  for (; d0 + 32 <= D; d0 += 32) {
    float8 a0 = {}, a1 = {}, a2 = {}, a3 = {};
    for (int64_t t = 0; t < end; ++t) {
      const float pt = p[t];
      const float* v = values + t * D + d0;
      a0 += pt * load8(v);
      a1 += pt * load8(v + 8);
      a2 += pt * load8(v + 16);
      a3 += pt * load8(v + 24);
    }
    std::memcpy(ctx + d0, &a0, 32);
    std::memcpy(ctx + d0 + 8, &a1, 32);
    std::memcpy(ctx + d0 + 16, &a2, 32);
    std::memcpy(ctx + d0 + 24, &a3, 32);
  }
  for (; d0 + 8 <= D; d0 += 8) {
    float8 a = {};
    for (int64_t t = 0; t < end; ++t) a += p[t] * load8(values + t * D + d0);
    std::memcpy(ctx + d0, &a, 32);
  }
  for (; d0 < D; ++d0) {
    float acc = 0.0f;
    for (int64_t t = 0; t < end; ++t) acc += p[t] * values[t * D + d0];
    ctx[d0] = acc;
  }
}

void attention_tasks(const AttentionArgs& a, int64_t t0, int64_t t1) {
  const int64_t G = a.H / a.KV, D = a.D, B = a.B, total = a.total, end = a.start + 1;
  std::vector<float> scores(end), query(D), context(D);
  float* s = scores.data();
  float* q = query.data();
  float* ctx = context.data();
  float k_new[kMaxHeadDim];
  for (int64_t task = t0; task < t1; ++task) {
    const int64_t b = task / a.KV, kv = task % a.KV;
    const float* cos = a.cos + a.positions[b] * D;
    const float* sin = a.sin + a.positions[b] * D;
    float* keys = a.k_cache + (b * a.KV + kv) * D * total;    // [D, total]
    float* values = a.v_cache + (b * a.KV + kv) * total * D;  // [total, D]
    rope(a.qkv + (a.H * D + kv * D) * B + b, B, cos, sin, D, k_new);
    for (int64_t d = 0; d < D; ++d) keys[d * total + a.start] = k_new[d];
    const float* v_new = a.qkv + (a.H * D + a.KV * D + kv * D) * B + b;
    for (int64_t d = 0; d < D; ++d) values[a.start * D + d] = v_new[d * B];
    const uint8_t* valid = reinterpret_cast<const uint8_t*>(a.key_valid + b * total);  // bool: no vector type
    for (int64_t g = 0; g < G; ++g) {
      const int64_t head = kv * G + g;
      rope(a.qkv + head * D * B + b, B, cos, sin, D, q);
      for (int64_t d = 0; d < D; ++d) q[d] *= a.scale;
      query_key_scores(q, keys, D, total, end, s);
      float max_score = -std::numeric_limits<float>::infinity();
      for (int64_t t = 0; t < end; ++t) max_score = valid[t] ? std::max(max_score, s[t]) : max_score;
      for (int64_t t = 0; t < end; ++t) {
        const float p = exp_nonpositive(std::min(s[t] - max_score, 0.0f));  // > 0 only where masked
        s[t] = valid[t] ? p : 0.0f;
      }
      float denom = 0.0f;
#pragma omp simd reduction(+ : denom)
      for (int64_t t = 0; t < end; ++t) denom += s[t];
      weighted_values(s, values, D, end, ctx);
      const float inv = 1.0f / denom;
      float* o = a.out + (b * a.H + head) * D;
      for (int64_t d = 0; d < D; ++d) o[d] = ctx[d] * inv;
    }
  }
}

}  // namespace

// hidden [C, N] (updated in place: hidden += delta when delta is given); returns rms_norm(hidden) * weight
// token-major, [N, C]: the next projection, weight @ out.T, runs faster from that side.
at::Tensor add_rms_norm(at::Tensor hidden, c10::optional<at::Tensor> delta, const at::Tensor& weight,
                        double eps) {
  check_float(hidden, "hidden");
  check_float(weight, "weight");
  TORCH_CHECK(hidden.dim() == 2 && weight.numel() == hidden.size(0), "hidden must be [features, rows] and weight "
              "[features]; got ", hidden.sizes(), " and ", weight.sizes());
  const float* d = nullptr;
  if (delta.has_value()) {
    check_float(*delta, "delta");
    TORCH_CHECK(delta->sizes() == hidden.sizes(), "delta ", delta->sizes(), " must match hidden ", hidden.sizes());
    d = delta->data_ptr<float>();
  }
  const int64_t C = hidden.size(0), N = hidden.size(1);
  auto out = at::empty({N, C}, hidden.options());
  float* h = hidden.data_ptr<float>();
  const float* w = weight.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(8, (1 << 15) / std::max<int64_t>(C, 1));
  at::parallel_for(0, N, grain, [&](int64_t r0, int64_t r1) {
    add_rms_norm_columns(h, d, w, o, C, N, r0, r1, static_cast<float>(eps));
  });
  return out;
}

// gate_up [2F, N] (gate rows, then up rows) -> silu(gate) * up, [F, N].
at::Tensor silu_mul(const at::Tensor& gate_up) {
  check_float(gate_up, "gate_up");
  TORCH_CHECK(gate_up.dim() == 2 && gate_up.size(0) % 2 == 0, "gate_up must be [2F, rows]; got ", gate_up.sizes());
  const int64_t F = gate_up.size(0) / 2, N = gate_up.size(1);
  auto out = at::empty({F, N}, gate_up.options());
  const float* g = gate_up.data_ptr<float>();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, F * N, 1 << 14, [&](int64_t i0, int64_t i1) { silu_mul_range(g, g + F * N, o, i0, i1); });
  return out;
}

// weight [V, C] rows `tokens` [N], feature-major: [C, N].
at::Tensor embed(const at::Tensor& weight, const at::Tensor& tokens) {
  check_float(weight, "weight");
  TORCH_CHECK(tokens.scalar_type() == at::kLong && tokens.dim() == 1, "tokens must be a 1-D int64 tensor");
  auto ids = tokens.contiguous();
  const int64_t V = weight.size(0), C = weight.size(1), N = ids.numel();
  const int64_t* id = ids.data_ptr<int64_t>();
  for (int64_t r = 0; r < N; ++r) TORCH_CHECK(id[r] >= 0 && id[r] < V, "token id ", id[r], " outside [0, ", V, ")");
  auto out = at::empty({C, N}, weight.options());
  const float* w = weight.data_ptr<float>();
  float* o = out.data_ptr<float>();
  for (int64_t r = 0; r < N; ++r)
    for (int64_t c = 0; c < C; ++c) o[c * N + r] = w[id[r] * C + c];
  return out;
}

// One decode step's attention for every row: rotate the new token's q and k (RoPE at `positions`), write k and
// v at cache column `start` (marking it valid), and attend over the valid columns [0, start]. Returns the
// context token-major, [B, H * D] (the output projection runs faster from that side).
at::Tensor decode_attention(const at::Tensor& qkv, at::Tensor k_cache, at::Tensor v_cache, const at::Tensor& cos,
                            const at::Tensor& sin, const at::Tensor& positions, at::Tensor key_valid, int64_t heads,
                            int64_t start, double scale) {
  check_float(qkv, "qkv");
  check_float(k_cache, "k_cache");
  check_float(v_cache, "v_cache");
  check_float(cos, "cos");
  check_float(sin, "sin");
  TORCH_CHECK(k_cache.dim() == 4 && v_cache.dim() == 4, "caches must be [B, KV, D, total] and [B, KV, total, D]");
  const int64_t B = k_cache.size(0), KV = k_cache.size(1), D = k_cache.size(2), total = k_cache.size(3);
  TORCH_CHECK(v_cache.sizes() == at::IntArrayRef({B, KV, total, D}), "v_cache ", v_cache.sizes(),
              " does not match k_cache ", k_cache.sizes());
  TORCH_CHECK(D <= kMaxHeadDim && D % 2 == 0, "head_dim ", D, " must be even and at most ", kMaxHeadDim);
  TORCH_CHECK(heads % KV == 0, "heads ", heads, " not a multiple of KV heads ", KV);
  TORCH_CHECK(qkv.dim() == 2 && qkv.size(0) == (heads + 2 * KV) * D && qkv.size(1) == B, "qkv ", qkv.sizes(),
              " must be [(H + 2 KV) * D, B] = [", (heads + 2 * KV) * D, ", ", B, "]");
  TORCH_CHECK(start >= 0 && start < total, "cache column ", start, " outside [0, ", total, ")");
  TORCH_CHECK(cos.sizes() == sin.sizes() && cos.dim() == 2 && cos.size(1) == D, "RoPE tables must be [positions, D]");
  TORCH_CHECK(positions.scalar_type() == at::kLong && positions.is_contiguous() && positions.numel() == B,
              "positions must be a contiguous int64 tensor of B entries");
  TORCH_CHECK(key_valid.scalar_type() == at::kBool && key_valid.is_contiguous() &&
              key_valid.sizes() == at::IntArrayRef({B, total}), "key_valid must be a contiguous bool [B, total]");
  const int64_t* pos = positions.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    TORCH_CHECK(pos[b] >= 0 && pos[b] < cos.size(0), "position ", pos[b], " outside the RoPE table");
  auto out = at::empty({B, heads * D}, qkv.options());
  bool* valid = key_valid.data_ptr<bool>();
  for (int64_t b = 0; b < B; ++b) valid[b * total + start] = true;
  AttentionArgs a{qkv.data_ptr<float>(), k_cache.data_ptr<float>(), v_cache.data_ptr<float>(), cos.data_ptr<float>(),
                  sin.data_ptr<float>(), pos, valid, out.data_ptr<float>(), B, heads, KV, D, total, start,
                  static_cast<float>(scale)};
  at::parallel_for(0, B * KV, 1, [&](int64_t t0, int64_t t1) { attention_tasks(a, t0, t1); });
  return out;
}

// Draw one token per row from softmax(logits / temperature) by inverting the row's CDF at uniform[b] (the torch
// sampler's rule: the first token whose cumulative probability exceeds uniform * total). logits [V, B] (the
// head's feature-major output), uniform [B] float64 in [0, 1). Returns (tokens [B] int64, log-probs [B] float32).
// Rows are processed side by side: every loop over the vocabulary runs across B contiguous rows.
std::vector<at::Tensor> sample(const at::Tensor& logits, double temperature, const at::Tensor& uniform) {
  check_float(logits, "logits");
  TORCH_CHECK(temperature > 0, "temperature must be > 0 (greedy decoding takes the argmax instead)");
  TORCH_CHECK(logits.dim() == 2, "logits must be [V, B]");
  const int64_t V = logits.size(0), B = logits.size(1);
  TORCH_CHECK(uniform.scalar_type() == at::kDouble && uniform.is_contiguous() && uniform.numel() == B,
              "uniform must be a contiguous float64 tensor of B entries");
  const float* x = logits.data_ptr<float>();
  const double* u = uniform.data_ptr<double>();
  const float t = static_cast<float>(temperature);
  std::vector<float> max_(B, -std::numeric_limits<float>::max()), prob_(V * B);
  std::vector<double> sum_(B, 0.0), total_(B, 0.0), target_(B), cdf_(B, 0.0);
  std::vector<int64_t> count_(B, 0);
  float *m = max_.data(), *prob = prob_.data();
  double *sum = sum_.data(), *total = total_.data(), *target = target_.data(), *cdf = cdf_.data();
  int64_t* count = count_.data();
  for (int64_t v = 0; v < V; ++v)
    for (int64_t b = 0; b < B; ++b) m[b] = std::max(m[b], x[v * B + b] / t);
  for (int64_t v = 0; v < V; ++v)
    for (int64_t b = 0; b < B; ++b) sum[b] += exp_nonpositive(x[v * B + b] / t - m[b]);
  std::vector<float> lse_(B);
  float* lse = lse_.data();
  for (int64_t b = 0; b < B; ++b) lse[b] = m[b] + static_cast<float>(std::log(sum[b]));
  for (int64_t v = 0; v < V; ++v) {
    float* pv = prob + v * B;
    for (int64_t b = 0; b < B; ++b) pv[b] = exp_nonpositive(std::min(x[v * B + b] / t - lse[b], 0.0f));
    for (int64_t b = 0; b < B; ++b) total[b] += pv[b];
  }
  for (int64_t b = 0; b < B; ++b) target[b] = u[b] * total[b];
  for (int64_t v = 0; v < V; ++v) {  // tokens whose cumulative probability is <= the target come before the draw
    const float* pv = prob + v * B;
    for (int64_t b = 0; b < B; ++b) {
      cdf[b] += pv[b];
      count[b] += cdf[b] <= target[b];
    }
  }
  auto tokens = at::empty({B}, logits.options().dtype(at::kLong));
  auto logp = at::empty({B}, logits.options());
  int64_t* tok = tokens.data_ptr<int64_t>();
  float* lp = logp.data_ptr<float>();
  for (int64_t b = 0; b < B; ++b) {
    tok[b] = std::min(count[b], V - 1);
    lp[b] = x[tok[b] * B + b] / t - lse[b];
  }
  return {tokens, logp};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("add_rms_norm", &add_rms_norm, "hidden += delta; rms_norm(hidden) * weight (feature-major)");
  m.def("silu_mul", &silu_mul, "silu(gate) * up (feature-major)");
  m.def("embed", &embed, "embedding rows, feature-major");
  m.def("sample", &sample, "one token per row by inverse-CDF sampling at temperature, rows side by side");
  m.def("decode_attention", &decode_attention, "RoPE + KV-cache write + attention for one new token per row");
}
