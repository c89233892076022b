// The step loops (forward and backward) of the LSTM family (the Greff cells, lstm, dglstm), the GRU
// family (gru; gru_cho, MUT1-3) and the Elman cells and clockwork, for CPU tensors.
//
// The Python kernels in ../lstm.py run one recurrent GEMM per step (addmm_ into the gate
// buffer) and then about ten elementwise torch ops; on a CPU each of those is a separate
// pass over the (B, G*H) buffer and a separate parallel region. This file does the whole
// elementwise part of one step in one pass per row (rows in parallel), with the same
// equations and the same buffers, so the hand-written backward in lstm.py is unchanged:
//
//   a (b, G*H)  in: pre-activations, blocks in internal order (o, i, f, g), present ones only
//               out: activations o, i, f (sigmoid) and g (tanh, or identity without an
//                    input activation) -- what the backward pass reads
//   c_prev (b, H) in; c (b, H) out: c = f * c_prev + i * g (+ d * below for dglstm)
//   tc (b, H) out, optional: h(c) (tanh c) when the output activation is present
//   h (b, H) out: o * h(c)
//   peepholes p_if (k, H) on c_prev for i and f, p_o (H) on c for o (Greff et al. 2015, eq. 1-6)
//   depth gate (Yao et al. 2015): d (b, H) in: its input projection, out: the gate;
//   below (b, H): the layer below's cell; w_cd, w_ld (H): its weights.
//
// The forward of the LSTM family (float, double; every cell, fgr included) goes further: fused_step below
// computes the recurrent GEMM itself, panel by panel of hidden units, and runs this elementwise part on
// each tile while it is in registers (see "the recurrent GEMM fused with the elementwise step"). Its
// backward does the same with dh_t += da_{t+1} W_hh and the elementwise backward (gemv_tiles,
// lstm_units_backward), as do the GRU family's and the Elman/clockwork loops further down (their bfloat16/half
// loops run the GEMMs through ATen and one or two elementwise passes per row and step).
//
// Compiled on first use by ../native.py (torch.utils.cpp_extension, -O3 -ffast-math so that
// tanh vectorises through glibc's libmvec; -fopenmp, without which at::parallel_for runs
// serially). A NaN input stays NaN: the row loops contain no comparison that -ffinite-math-only
// could fold, and the fused kernel's vector tanh restores NaN through integer ops. Float, double,
// bfloat16 and half tensors; the arithmetic runs in float (double for double).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

namespace {

enum Flags : int64_t {
  kInputGate = 1,
  kForgetGate = 2,
  kOutputGate = 4,
  kInputActivation = 8,
  kOutputActivation = 16,
  kCoupled = 32,
};

template <typename acc_t>
void sigmoid_(acc_t* x, int64_t n) {
  // sigma(x) = (1 + tanh(x / 2)) / 2: libmvec's vector tanh saturates without leaving its vector
  // path, where exp(-x) overflows for x < -88 and drops to a scalar slow path (about 8x slower)
  for (int64_t j = 0; j < n; ++j) x[j] = acc_t(0.5) + acc_t(0.5) * std::tanh(acc_t(0.5) * x[j]);
}

template <typename acc_t>
void tanh_(acc_t* x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) x[j] = std::tanh(x[j]);
}

// tanh of one vector of 16 floats: the rational approximation of Eigen's generic_fast_tanh_float
// (odd degree-13 numerator, even degree-6 denominator on x clamped to [-7.905, 7.905], where
// tanh rounds to +-1 in float; error a few ulp). A NaN input is put back at the end through the
// bits (integer ops that -ffast-math cannot fold), so NaN stays NaN as in std::tanh.
typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));

__attribute__((always_inline)) inline v16f tanh_v16(v16f a) {
  const float c = 7.90531110763549805f;
  v16f x = a < -c ? -c : a;
  x = x > c ? c : x;
  const v16f x2 = x * x;
  v16f p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f;
  p = x2 * p + -8.60467152213735e-11f;
  p = x2 * p + 5.12229709037114e-08f;
  p = x2 * p + 1.48572235717979e-05f;
  p = x2 * p + 6.37261928875436e-04f;
  p = x2 * p + 4.89352455891786e-03f;
  p = x * p;
  v16f q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f;
  q = x2 * q + 2.26843463243900e-03f;
  q = x2 * q + 4.89352518554385e-03f;
  const v16f r = p / q;
  v16i ab, rb;
  __builtin_memcpy(&ab, &a, sizeof(ab));
  __builtin_memcpy(&rb, &r, sizeof(rb));
  const v16i nan = (ab & 0x7fffffff) > 0x7f800000;  // -1 where a is NaN
  rb = (rb & ~nan) | (ab & nan);
  v16f out;
  __builtin_memcpy(&out, &rb, sizeof(out));
  return out;
}

template <typename scalar_t, typename acc_t>
void load(acc_t* dst, const scalar_t* src, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<acc_t>(src[j]);
}

template <typename scalar_t, typename acc_t>
void store(scalar_t* dst, const acc_t* src, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<scalar_t>(src[j]);
}

// Runs fn(row, scratch) for rows [0, b) in parallel; scratch: `scratch` values of acc_t per task.
// The grain gives each task about 8k values of `width` columns, enough to pay for a parallel region.
template <typename acc_t, typename F>
void for_rows(int64_t b, int64_t width, int64_t scratch, const F& fn) {
  const int64_t grain = std::max<int64_t>(1, 8192 / std::max<int64_t>(width, 1));
  at::parallel_for(0, b, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf(scratch);
    for (int64_t r = begin; r < end; ++r) fn(r, buf.data());
  });
}

// One step's rows: raw pointers and row strides (the loop below computes them, no tensor views).
template <typename scalar_t>
struct LstmStep {
  scalar_t* a;  // (b, GH) gate buffer, row stride sa
  const scalar_t* c_prev;
  scalar_t* c;
  scalar_t* tc;  // h(c), or null
  scalar_t* h;
  scalar_t* d;  // depth gate (row stride sd), or null
  const scalar_t* below;
  int64_t b, sa, sd;
};

// Constants of a layer: sizes, variant flags and the per-unit weights.
template <typename scalar_t>
struct LstmConsts {
  int64_t H, GH, kif;
  bool ig, fg, og, ia, oa, coupled;
  const scalar_t* p_if;  // (kif, H) peepholes of i and f, or null
  const scalar_t* p_o;   // (H,) peephole of o, or null
  const scalar_t* w_cd;  // depth gate weights (H,), or null
  const scalar_t* w_ld;
  // the input projection's bias (both biases folded in), blocks of stride H like p_if: the G gate blocks
  // then the depth gate's; added to the pre-activations by the fused kernel's epilogue, which lets the
  // input projection be a plain GEMM (addmm would first copy the bias into every row of the buffer).
  // Null where the projection already holds it (the bfloat16/half loop).
  const scalar_t* bias = nullptr;
  // where internal block q's pre-activations sit in the gate buffer (block blk[q] of stride H): q itself, or,
  // in the inference loop, the block of the cell's own layout, whose weights it then uses without reordering
  int64_t blk[4] = {0, 1, 2, 3};
};

// A layer's constants from the ops' arguments (flags: the k* bits above; per-unit weights contiguous, or absent)
template <typename scalar_t>
LstmConsts<scalar_t> lstm_consts(int64_t H, int64_t GH, int64_t flags, const c10::optional<at::Tensor>& p_if,
                                 const c10::optional<at::Tensor>& p_o, const c10::optional<at::Tensor>& w_cd,
                                 const c10::optional<at::Tensor>& w_ld) {
  auto ptr = [](const c10::optional<at::Tensor>& t) { return t.has_value() ? t->data_ptr<scalar_t>() : nullptr; };
  return LstmConsts<scalar_t>{H, GH, p_if.has_value() ? p_if->size(0) : 0, bool(flags & kInputGate),
                              bool(flags & kForgetGate), bool(flags & kOutputGate), bool(flags & kInputActivation),
                              bool(flags & kOutputActivation), bool(flags & kCoupled), ptr(p_if), ptr(p_o),
                              ptr(w_cd), ptr(w_ld)};
}

// The elementwise part of one step for the units [u0, u0 + U) of one row. X: those units' gate
// pre-activations, block q of the present ones (internal order o, i, f, g) at X + q * ws; on return
// the activations. c_prev, c, tc, h, d, below point at the row's unit u0; work: 6 * U values.
template <typename scalar_t, typename acc_t>
void lstm_units(const LstmConsts<scalar_t>& k, acc_t* X, int64_t ws, int64_t U, int64_t u0,
                const scalar_t* c_prev, scalar_t* c, scalar_t* tc, scalar_t* h, scalar_t* d,
                const scalar_t* below, acc_t* work) {
  const int64_t H = k.H;
  const bool ig = k.ig, fg = k.fg, og = k.og, ia = k.ia, oa = k.oa, coupled = k.coupled;
  // internal order o, i, f, g
  int64_t off = 0;
  const int64_t so = og ? (off += ws) - ws : -1;
  const int64_t si = ig ? (off += ws) - ws : -1;
  const int64_t sf = fg ? (off += ws) - ws : -1;
  const int64_t sg = off;
  acc_t* cp = work;    // c_prev
  acc_t* cn = cp + U;  // c
  acc_t* hc = cn + U;  // h(c)
  acc_t* dd = hc + U;  // depth gate
  acc_t* bl = dd + U;  // below
  acc_t* tmp = bl + U;
  load(cp, c_prev, U);
  if (k.bias)
    for (int64_t q = 0; q * ws < sg + ws; ++q)
      for (int64_t j = 0; j < U; ++j) X[q * ws + j] += acc_t(k.bias[q * H + u0 + j]);
  // peepholes of i and f on c_{t-1}
  for (int64_t q = 0; q < k.kif; ++q) {
    acc_t* x = X + (og ? ws : 0) + q * ws;
    const scalar_t* p = k.p_if + q * H + u0;
    for (int64_t j = 0; j < U; ++j) x[j] += acc_t(p[j]) * cp[j];
  }
  // the sigmoid gates (o after c when it peeks at c_t); g below
  for (int64_t q = (k.p_o ? ws : 0); q < sg; q += ws) sigmoid_(X + q, U);
  acc_t* g = X + sg;
  if (ia) tanh_(g, U);
  // c = f * c_prev + i * g, and the variants
  if (fg && ig) {
    const acc_t *f = X + sf, *i = X + si;
    for (int64_t j = 0; j < U; ++j) cn[j] = f[j] * cp[j] + i[j] * g[j];
  } else if (fg) {
    const acc_t* f = X + sf;
    for (int64_t j = 0; j < U; ++j) cn[j] = f[j] * cp[j] + g[j];
  } else if (coupled) {  // f = 1 - i
    const acc_t* i = X + si;
    for (int64_t j = 0; j < U; ++j) cn[j] = cp[j] + i[j] * (g[j] - cp[j]);
  } else if (ig) {
    const acc_t* i = X + si;
    for (int64_t j = 0; j < U; ++j) cn[j] = cp[j] + i[j] * g[j];
  } else {
    for (int64_t j = 0; j < U; ++j) cn[j] = cp[j] + g[j];
  }
  if (d) {  // c += sigma(xd + w_cd c_prev + w_ld below) * below
    load(dd, d, U);
    load(bl, below, U);
    const scalar_t *wcd = k.w_cd + u0, *wld = k.w_ld + u0;
    if (k.bias)
      for (int64_t j = 0; j < U; ++j) dd[j] += acc_t(k.bias[(sg / ws + 1) * H + u0 + j]);
    for (int64_t j = 0; j < U; ++j) dd[j] += acc_t(wcd[j]) * cp[j] + acc_t(wld[j]) * bl[j];
    sigmoid_(dd, U);
    for (int64_t j = 0; j < U; ++j) cn[j] += dd[j] * bl[j];
    store(d, dd, U);
  }
  if (k.p_o) {
    acc_t* o = X + so;
    const scalar_t* po = k.p_o + u0;
    for (int64_t j = 0; j < U; ++j) o[j] += acc_t(po[j]) * cn[j];
    sigmoid_(o, U);
  }
  for (int64_t j = 0; j < U; ++j) hc[j] = cn[j];
  if (oa) tanh_(hc, U);
  if (og) {
    const acc_t* o = X + so;
    for (int64_t j = 0; j < U; ++j) tmp[j] = o[j] * hc[j];
  } else {
    for (int64_t j = 0; j < U; ++j) tmp[j] = hc[j];
  }
  store(c, cn, U);
  if (tc) store(tc, hc, U);
  store(h, tmp, U);
}

// One step's elementwise part, row by row (rows in parallel), after the recurrent GEMM.
template <typename scalar_t>
void lstm_step_impl(const LstmConsts<scalar_t>& k, const LstmStep<scalar_t>& st) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = k.H, GH = k.GH;
  for_rows<acc_t>(st.b, GH, GH + 6 * H, [&](int64_t r, acc_t* X) {  // X: the gate row (GH), then work
    scalar_t* ar = st.a + r * st.sa;
    load(X, ar, GH);
    lstm_units<scalar_t, acc_t>(k, X, H, H, 0, st.c_prev + r * H, st.c + r * H, st.tc ? st.tc + r * H : nullptr,
                                st.h + r * H, st.d ? st.d + r * st.sd : nullptr,
                                st.d ? st.below + r * H : nullptr, X + GH);
    store(ar, X, GH);
  });
}

inline v16f ld16(const float* p) {
  v16f v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
inline void st16(float* p, v16f v) { __builtin_memcpy(p, &v, sizeof(v)); }
inline v16f sigmoid_v16(v16f x) { return 0.5f + 0.5f * tanh_v16(0.5f * x); }

// lstm_units for 16 float units held in vector registers (the fused kernel's full panels): X[q] the
// gate pre-activations of block q (present ones, order o, i, f, g), activations on return; the row
// pointers point at unit u0, with 16 valid values each.
__attribute__((always_inline)) inline void lstm_units_v16(const LstmConsts<float>& k, v16f* X, int64_t u0, const float* c_prev, float* c,
                           float* tc, float* h, float* d, const float* below) {
  int q = 0;
  const int qo = k.og ? q++ : -1, qi = k.ig ? q++ : -1, qf = k.fg ? q++ : -1, qg = q;
  if (k.bias)
    for (int j = 0; j <= qg; ++j) X[j] += ld16(k.bias + j * k.H + u0);
  const v16f cp = ld16(c_prev);
  if (k.kif) {  // peepholes on c_{t-1}: rows for i and f, present ones
    int r = 0;
    if (k.ig) X[qi] += ld16(k.p_if + (r++) * k.H + u0) * cp;
    if (k.fg) X[qf] += ld16(k.p_if + r * k.H + u0) * cp;
  }
  if (k.ig) X[qi] = sigmoid_v16(X[qi]);
  if (k.fg) X[qf] = sigmoid_v16(X[qf]);
  if (k.og && !k.p_o) X[qo] = sigmoid_v16(X[qo]);
  const v16f g = k.ia ? tanh_v16(X[qg]) : X[qg];
  X[qg] = g;
  v16f cn;
  if (k.fg && k.ig) cn = X[qf] * cp + X[qi] * g;
  else if (k.fg) cn = X[qf] * cp + g;
  else if (k.coupled) cn = cp + X[qi] * (g - cp);  // f = 1 - i
  else if (k.ig) cn = cp + X[qi] * g;
  else cn = cp + g;
  if (d) {  // c += sigma(xd + w_cd c_prev + w_ld below) * below
    const v16f bl = ld16(below);
    v16f xd = ld16(d);
    if (k.bias) xd += ld16(k.bias + (qg + 1) * k.H + u0);
    const v16f dd = sigmoid_v16(xd + ld16(k.w_cd + u0) * cp + ld16(k.w_ld + u0) * bl);
    cn += dd * bl;
    st16(d, dd);
  }
  if (k.p_o) X[qo] = sigmoid_v16(X[qo] + ld16(k.p_o + u0) * cn);
  const v16f hc = k.oa ? tanh_v16(cn) : cn;
  st16(c, cn);
  if (tc) st16(tc, hc);
  st16(h, k.og ? X[qo] * hc : hc);
}

// ------------------------------------------------- the recurrent GEMM fused with the elementwise step
// float and double, every cell of the LSTM family. W_hh is packed once per call into
// panels of L units (L = one 64-byte vector: 16 floats, 8 doubles): panel p holds, for every k, the
// G gate blocks' weights of units p*L .. p*L+L-1 side by side -- (npan, H, G, L), units past H zero.
// A tile of MR rows x one panel keeps its MR x G vector accumulators in registers over the whole
// k loop (a register-blocked GEMM micro-kernel, GCC/Clang vector extensions: AVX-512, AVX2 or SSE,
// whatever -march=native gives), adds the input projection and runs the step's elementwise part for
// those L units right away (floats: lstm_units_v16, in registers). fgr's gate recurrence is a second
// k loop over the previous step's gates (GateRecurrence). Threads take panels (hidden units, all gates), so the gate
// pre-activations never leave the core that computes them; one parallel region per step.
template <typename T>
struct Vec {
  static constexpr int L = 64 / sizeof(T);
  typedef T type __attribute__((vector_size(64)));
};

// Scratch memory of the calling thread that outlives the op (slot: one per tensor an op needs at once),
// grown as needed and reused by the next call: the packed recurrent weights are rebuilt on every call,
// and a fresh buffer of a MB or more can come from mmap each time, its pages faulted in again (a bimodal
// 0.5 ms on an H = 256 call in some processes). Holds the largest size it was asked for, per thread.
inline at::Tensor workspace(int slot, int64_t numel, const at::TensorOptions& options) {
  static thread_local at::Tensor slots[3];
  at::Tensor& ws = slots[slot];
  if (!ws.defined() || ws.numel() < numel || ws.scalar_type() != options.dtype().toScalarType())
    ws = at::empty({numel}, options);  // 64-byte aligned (CPU allocator)
  return ws.narrow(0, 0, numel);
}

#if defined(__AVX512F__)
// dst row i (16 floats, row stride ds) <- column i of the 16 x 16 floats at src (row stride ss): in registers
inline void transpose16(const float* src, int64_t ss, float* dst, int64_t ds) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * ss);
  for (int i = 0; i < 8; ++i) {  // pairs of rows interleaved
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  auto lo = [](__m512 a, __m512 b) {
    return _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)));
  };
  auto hi = [](__m512 a, __m512 b) {
    return _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)));
  };
  for (int i = 0; i < 4; ++i) {  // quadruples: each 128-bit lane q holds rows 4i..4i+3 at one column of 4q..4q+3
    r[4 * i] = lo(t[4 * i], t[4 * i + 2]);
    r[4 * i + 1] = hi(t[4 * i], t[4 * i + 2]);
    r[4 * i + 2] = lo(t[4 * i + 1], t[4 * i + 3]);
    r[4 * i + 3] = hi(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int i = 0; i < 2; ++i)  // then the 128-bit lanes
    for (int j = 0; j < 4; ++j) {
      t[8 * i + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0x88);
      t[8 * i + 4 + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0xdd);
    }
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
    r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd);
  }
  for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + i * ds, r[i]);
}
#endif

// w_t (K, G*H) -> (npan, K, G, L): W_hh^T (K = H), or fgr's gate recurrence W_gh^T (K = G = nG gated blocks),
// in the calling thread's workspace `slot` (valid until the thread packs into that slot again)
// (packed block g read from source block blk[g] when blk is given: the cell's own gate order; likewise the
// k's of block j from source block kblk[j] when kblk is given: fgr's W_gh, whose inputs are gates too)
template <typename T>
at::Tensor pack_recurrent(const at::Tensor& w_t, int64_t G, int64_t H, int slot = 0, const int64_t* blk = nullptr,
                          const int64_t* kblk = nullptr) {
  constexpr int L = Vec<T>::L;
  const int64_t npan = (H + L - 1) / L, K = w_t.size(0);
  // read through the strides: w_t is usually the transpose of a contiguous (G*H, K) weight, whose
  // rows (a unit's weights over k) are then contiguous
  const int64_t sk = w_t.stride(0), sc = w_t.stride(1);
  at::Tensor packed = workspace(slot, npan * K * G * L, w_t.options()).view({npan, K, G, L});
  const T* src = w_t.data_ptr<T>();
  T* dst = packed.data_ptr<T>();
  // written in order (a k's G vectors of L units, one line each), read down the units: each of the G * L
  // source rows of a panel is read at k, k + 1, ... in turn, so its lines stay in L1 for 16 (floats) k's
  at::parallel_for(0, npan, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t U = std::min<int64_t>(L, H - p * L);  // units past H: zero
      T* d = dst + p * K * G * L;
      int64_t k0 = 0;
#if defined(__AVX512F__)
      // floats of a full panel whose k's are contiguous in the source (W^T of a contiguous weight): 16 x 16
      // tiles transposed in registers (a k's 16 units from 16 source rows), about 2x faster than value by value
      if constexpr (std::is_same<T, float>::value) {
        if (U == L && sk == 1 && (!kblk || H % 16 == 0)) {
          for (; k0 + 16 <= K; k0 += 16) {
            const int64_t ks = kblk ? kblk[k0 / H] * H + k0 % H : k0;
            for (int64_t g = 0; g < G; ++g)
              transpose16(src + ((blk ? blk[g] : g) * H + p * L) * sc + ks, sc, d + (k0 * G + g) * L, G * L);
          }
          d += k0 * G * L;
        }
      }
#endif
      for (int64_t kk = k0; kk < K; ++kk) {
        const int64_t ks = kblk ? kblk[kk / H] * H + kk % H : kk;  // the source's k
        for (int64_t g = 0; g < G; ++g, d += L) {
          const T* s = src + ((blk ? blk[g] : g) * H + p * L) * sc + ks * sk;
          if (sc == 1) std::copy(s, s + U, d);  // (W itself, the backward's: a k's units are contiguous)
          else for (int64_t l = 0; l < U; ++l) d[l] = s[l * sc];
          for (int64_t l = U; l < L; ++l) d[l] = T(0);
        }
      }
    }
  });
  return packed;
}

// acc[r][g] += sum_k rows[r][k] * wp[k][g] for the first NB of the G blocks: the micro-kernel's k loop
// (MR x NB vector accumulators in registers once inlined; wp packed (K, NB, L))
template <typename T, int MR, int G, int NB, bool PF = false>
__attribute__((always_inline)) inline void accumulate(typename Vec<T>::type (&acc)[MR][G], const T* const* rows,
                                                      const T* __restrict__ wp, int64_t K, const T* pf = nullptr) {
  using V = typename Vec<T>::type;
  constexpr int L = Vec<T>::L;
  const T* hr[MR];
#pragma GCC unroll 32
  for (int r = 0; r < MR; ++r) hr[r] = rows[r];
#pragma GCC unroll 4  // a few percent faster than one k an iteration (A/B in one process, both splits)
  for (int64_t kk = 0; kk < K; ++kk) {
    V w[NB];
#pragma GCC unroll 4
    for (int g = 0; g < NB; ++g) __builtin_memcpy(&w[g], wp + (kk * NB + g) * L, sizeof(V));
    if constexpr (PF) __builtin_prefetch(pf + kk * L, 0, 2);  // one line of the next panel an iteration
#pragma GCC unroll 32
    for (int r = 0; r < MR; ++r) {
      const T s = hr[r][kk];
#pragma GCC unroll 4
      for (int g = 0; g < NB; ++g) acc[r][g] += s * w[g];
    }
  }
}

// out (MR, G, L) = rows (MR of h_prev, K each) x one packed panel (K, G, L)
//   [+ rows2 (MR of fgr's previous gate activations, K2 each) x panel wp2 (K2, G2, L) into the first G2 blocks]
template <typename T, int MR, int G, int G2>
inline void gemm_tile(const T* const* rows, const T* __restrict__ wp, int64_t K, const T* const* rows2,
                      const T* __restrict__ wp2, int64_t K2, T* __restrict__ out, const T* pf = nullptr) {
  using V = typename Vec<T>::type;
  constexpr int L = Vec<T>::L;
  V acc[MR][G];
#pragma GCC unroll 32
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g) acc[r][g] = V{};
  if (pf) accumulate<T, MR, G, G, true>(acc, rows, wp, K, pf);
  else accumulate<T, MR, G, G>(acc, rows, wp, K);
  if constexpr (G2 > 0) accumulate<T, MR, G, G2>(acc, rows2, wp2, K2);
#pragma GCC unroll 32
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g) __builtin_memcpy(out + (r * G + g) * L, &acc[r][g], sizeof(V));
}

// gemm_tile for the m <= MR rows of a tile (a kernel for each row count, so that the last tile of a
// batch that MR does not divide computes only its own rows)
template <typename T, int MR, int G, int G2>
inline void gemm_rows(int m, const T* const* rows, const T* __restrict__ wp, int64_t K, const T* const* rows2,
                      const T* __restrict__ wp2, int64_t K2, T* __restrict__ out, const T* pf = nullptr) {
  if constexpr (MR > 1) {
    if (m < MR) return gemm_rows<T, MR - 1, G, G2>(m, rows, wp, K, rows2, wp2, K2, out, pf);
  }
  gemm_tile<T, MR, G, G2>(rows, wp, K, rows2, wp2, K2, out, pf);
}

// fgr's second operand: the previous step's activations of the G2 gated blocks, rows of stride s2,
// and W_gh^T packed like W_hh^T (pack_recurrent); G2 = 0 without fgr.
template <typename T>
struct GateRecurrence {
  const T* a_prev = nullptr;
  int64_t s2 = 0;
  const T* packed = nullptr;
};

// The forward loop gives each thread its own rows when it has at least this many rows a thread
constexpr int64_t kRowsPerThread = 4;
// ... and when the packed recurrent weights fit in a core's L2 cache with room to spare (1 MB: H = 256
// floats, 4 gates): every thread reads all of them at every step in the row-owned form, half of them
// (its panels) in the other, which is faster once they no longer stay in L2 (H = 512: 0.92x, 1024: 0.84x)
constexpr int64_t kRowsMaxWeightBytes = int64_t(1) << 20;

// Whether a step loop over B rows of H units gives each thread its own rows (the rule above; w_bytes: the
// packed recurrent weights): at least kRowsPerThread rows a thread, rows starting cache lines, weights in L2
template <typename T>
bool own_rows(int64_t B, int64_t H, int64_t w_bytes) {
  return B >= kRowsPerThread * at::get_num_threads() && (H * int64_t(sizeof(T))) % 64 == 0 &&
         w_bytes <= kRowsMaxWeightBytes;
}

// The rows of the tile kernel: MR = 24 / G (accumulators: MR x G of the 32 vector registers)
constexpr int tile_rows(int G) { return G == 1 ? 12 : 24 / G; }

// One step for the panels [p0, p1) and the rows j, j + nj, j + 2 nj, ... below st.b (all rows: j = 0,
// nj = 1): h_prev (b, H) rows of stride H; st as for lstm_step_impl (a holds the input projection);
// kp: k with its per-unit weights padded to npan * L units (PaddedUnits), so that every panel reads L.
template <typename T, int G, int G2>
void fused_panels(const LstmConsts<T>& kp, int64_t H, const T* packed, const T* h_prev, const LstmStep<T>& st,
                  bool keep_act, const GateRecurrence<T>& gr, int64_t p0, int64_t p1, int64_t j, int64_t nj) {
  constexpr int L = Vec<T>::L;
  constexpr int MR = tile_rows(G);
  const int64_t K2 = G2 * H;
  const int64_t cnt = st.b > j ? (st.b - j + nj - 1) / nj : 0;  // rows of this call
  alignas(64) T out[MR * G * L];
  alignas(64) T X[G * L + 6 * L];  // one row's gate blocks of the panel, then lstm_units' work
  alignas(64) T part[(6 + G) * L];  // a partial panel's c_prev, c, tc, h, d, below, projection
  const T* rows[MR];
  const T* rows2[MR];
  const bool pf_on = nj == 1 && G2 == 0 && int64_t(G) * H * H * int64_t(sizeof(T)) > kRowsMaxWeightBytes;
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t u0 = p * L, U = std::min<int64_t>(L, H - u0);
    const T* wp = packed + p * H * G * L;
    const T* wp2 = G2 > 0 ? gr.packed + p * K2 * G2 * L : nullptr;
    for (int64_t i0 = 0; i0 < cnt; i0 += MR) {
      const int64_t m = std::min<int64_t>(MR, cnt - i0);
      for (int i = 0; i < m; ++i) {
        const int64_t r = j + (i0 + i) * nj;
        rows[i] = h_prev + r * H;
        rows2[i] = G2 > 0 ? gr.a_prev + r * gr.s2 : nullptr;
      }
      for (int i = 0; i < m; ++i) {  // the epilogue's operands (strided rows), fetched while the k loop runs
        const int64_t r = j + (i0 + i) * nj;
        for (int q = 0; q < G; ++q) __builtin_prefetch(st.a + r * st.sa + u0 + kp.blk[q] * H, 1, 3);
        __builtin_prefetch(st.c_prev + r * H + u0, 0, 3);
        if (st.d) __builtin_prefetch(st.d + r * st.sd + u0, 1, 3), __builtin_prefetch(st.below + r * H + u0, 0, 3);
      }
      // weights larger than L2, threads taking panels: the next panel's lines into L2 while this panel's
      // row tiles run (the first G tiles fetch a G-th of it each, a line per k)
      const int64_t ti = i0 / MR;
      const T* pf = pf_on && p + 1 < p1 && ti < G ? wp + H * G * L + ti * H * L : nullptr;
      gemm_rows<T, MR, G, G2>(int(m), rows, wp, H, rows2, wp2, K2, out, pf);
      for (int64_t i = 0; i < m; ++i) {
        const int64_t r = j + (i0 + i) * nj;
        T* ar = st.a + r * st.sa + u0;  // the row's input projection, G blocks of stride H
        const T* tile = out + i * G * L;
        T* const cn_out = st.c + r * H + u0;
        T* const tc_out = st.tc ? st.tc + r * H + u0 : nullptr;
        T* const h_out = st.h + r * H + u0;
        T* const d_out = st.d ? st.d + r * st.sd + u0 : nullptr;
        const T* cp = st.c_prev + r * H + u0;
        const T* bl = st.d ? st.below + r * H + u0 : nullptr;
        const T* gq[G];  // block q's input projection (the buffer's block kp.blk[q])
        for (int q = 0; q < G; ++q) gq[q] = ar + kp.blk[q] * H;
        T *cn = cn_out, *tc = tc_out, *hh = h_out, *d = d_out;
        if (U < L) {  // the last panel of an H that is not a multiple of L: zero-padded copies in `part`
          std::fill(part, part + (6 + G) * L, T(0));
          std::copy(cp, cp + U, part);
          if (d) std::copy(d, d + U, part + 4 * L), std::copy(bl, bl + U, part + 5 * L);
          for (int q = 0; q < G; ++q) std::copy(gq[q], gq[q] + U, part + (6 + q) * L), gq[q] = part + (6 + q) * L;
          cp = part, cn = part + L, tc = tc ? part + 2 * L : nullptr, hh = part + 3 * L;
          d = d ? part + 4 * L : nullptr, bl = bl ? part + 5 * L : nullptr;
        }
        if constexpr (std::is_same<T, float>::value) {  // in vector registers
          v16f V[G];
          for (int q = 0; q < G; ++q) V[q] = ld16(tile + q * L) + ld16(gq[q]);
          lstm_units_v16(kp, V, u0, cp, cn, tc, hh, d, bl);
          if (keep_act)
            for (int q = 0; q < G; ++q) st16(X + q * L, V[q]);
        } else {
          for (int q = 0; q < G; ++q)
            for (int j = 0; j < L; ++j) X[q * L + j] = tile[q * L + j] + gq[q][j];
          lstm_units<T, T>(kp, X, L, L, u0, cp, cn, tc, hh, d, bl, X + G * L);
        }
        if (keep_act)  // the activations, for the backward pass and fgr's next step, in internal order: block q
          // at q * H whatever blk says (the pre-activations of all G blocks of these units are read above)
          for (int q = 0; q < G; ++q) std::copy(X + q * L, X + q * L + U, ar + q * H);
        if (U < L) {
          std::copy(cn, cn + U, cn_out);
          if (tc) std::copy(tc, tc + U, tc_out);
          std::copy(hh, hh + U, h_out);
          if (d) std::copy(d, d + U, d_out);
        }
      }
    }
  }
}

// One step, all rows: threads take panels (hidden units, all gates), one parallel region
template <typename T, int G, int G2>
void fused_step_g(const LstmConsts<T>& kp, int64_t H, const T* packed, const T* h_prev, const LstmStep<T>& st,
                  bool keep_act, const GateRecurrence<T>& gr) {
  constexpr int L = Vec<T>::L;
  const int64_t npan = (H + L - 1) / L;
  const int64_t work = st.b * L * (G * H + G2 * G2 * H);  // multiply-adds of one panel
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(work, 1));
  at::parallel_for(0, npan, grain, [&](int64_t p0, int64_t p1) {
    fused_panels<T, G, G2>(kp, H, packed, h_prev, st, keep_act, gr, p0, p1, 0, 1);
  });
}

// The per-unit weights of k (peepholes, depth-gate weights) copied into rows of npan * L units, zeros past H.
template <typename T>
struct PaddedUnits {
  std::vector<T> p_if, p_o, w_cd, w_ld, bias;
  LstmConsts<T> k;
  PaddedUnits(const LstmConsts<T>& k0, int64_t Hp) : k(k0) {
    auto pad = [&](std::vector<T>& dst, const T* src, int64_t rows) -> const T* {
      if (!src) return nullptr;
      dst.assign(rows * Hp, T(0));
      for (int64_t r = 0; r < rows; ++r) std::copy(src + r * k0.H, src + (r + 1) * k0.H, dst.data() + r * Hp);
      return dst.data();
    };
    k.p_if = pad(p_if, k0.p_if, k0.kif);
    k.p_o = pad(p_o, k0.p_o, 1);
    k.w_cd = pad(w_cd, k0.w_cd, 1);
    k.w_ld = pad(w_ld, k0.w_ld, 1);
    k.bias = pad(bias, k0.bias, k0.GH / k0.H + (k0.w_cd ? 1 : 0));
    k.H = Hp;  // the row stride of p_if
  }
};


// ------------------------------------------------- one-block tiles and the two thread splits of a step loop
// For the rows j, j + nj, ... below m (cnt of them) and the panels [p0, p1): tiles of lhs rows (row stride ls,
// K columns) x panel p of a weight packed (npan, kfull, NB, L) by pack_recurrent<T>(w, NB, Hs) -- output units
// g * Hs + p * L + l of NB blocks of Hs units; k-major in each panel, so K <= kfull uses its first K k's.
// Calls epi(r, u0, U, tile) for each row and block: the U <= L units from u0 and their L tile values
// (tile == nullptr for the rows at or past `mg`, which have no GEMM term). NB = 4: tiles of 6 rows x 4
// vectors (as the LSTM forward's); NB = 1: 12 rows x 1. The Elman loops and the LSTM family's backward.
// The blocks gemv_tiles splits H output units into: 4 of H/4 (tiles of 6 rows x 4 vectors) where 4 divides H,
// else 1 (tiles of 12 rows x 1)
inline int gemv_blocks(int64_t H) { return H % 4 == 0 ? 4 : 1; }

// JOINT: epi(r, p * L, U, tile) once per row with the NB blocks' tiles side by side (block g at tile + g * L),
// for an epilogue that needs every block of its units (the GRU's r, z, n).
template <typename T, int NB, typename Epi, bool JOINT = false>
void gemv_tiles(const T* packed, int64_t kfull, int64_t Hs, const T* lhs, int64_t ls, int64_t K, int64_t m,
                int64_t mg, int64_t p0, int64_t p1, int64_t j, int64_t nj, const Epi& epi) {
  constexpr int L = Vec<T>::L;
  constexpr int MR = tile_rows(NB);
  const int64_t cnt = m > j ? (m - j + nj - 1) / nj : 0;                  // rows of this call
  const int64_t cg = mg > j ? std::min(cnt, (mg - j + nj - 1) / nj) : 0;  // ... of which with a GEMM term
  alignas(64) T out[MR * NB * L];
  const T* rows[MR];
  const int64_t panel = kfull * NB * L;
  for (int64_t p = p0; p < p1; ++p) {
    const T* wp = packed + p * panel;
    const int64_t U = std::min<int64_t>(L, Hs - p * L);
    for (int64_t i0 = 0; i0 < cg; i0 += MR) {
      const int64_t n = std::min<int64_t>(MR, cg - i0);
      for (int i = 0; i < n; ++i) rows[i] = lhs + (j + (i0 + i) * nj) * ls;
      if (K > 0) {
        gemm_rows<T, MR, NB, 0>(int(n), rows, wp, K, nullptr, nullptr, 0, out);
      } else {
        std::fill(out, out + n * NB * L, T(0));
      }
      for (int64_t i = 0; i < n; ++i) {
        if constexpr (JOINT) epi(j + (i0 + i) * nj, p * L, U, static_cast<const T*>(out + i * NB * L));
        else
          for (int g = 0; g < NB; ++g) epi(j + (i0 + i) * nj, g * Hs + p * L, U, static_cast<const T*>(out + (i * NB + g) * L));
      }
    }
    for (int64_t i = cg; i < cnt; ++i) {
      if constexpr (JOINT) epi(j + i * nj, p * L, U, static_cast<const T*>(nullptr));
      else
        for (int g = 0; g < NB; ++g) epi(j + i * nj, g * Hs + p * L, U, static_cast<const T*>(nullptr));
    }
  }
}

// Runs step(t, j, nj) for t in [0, T) (forward) or T-1 .. 0 (backward), then between(t) on the calling thread
// (panel form only): each thread owning rows j, j + nth, ... for the whole loop (one parallel region) where
// `rows_ok`, rows line up with cache lines and the packed weights (w_bytes) stay in L2; else all rows at every
// step with the panels split between threads (nj == 0; step parallelises through step_panels).
template <typename T, typename Step, typename Between>
void step_loop(int64_t T_, int64_t B, int64_t H, int64_t w_bytes, bool backward, bool rows_ok, const Step& step,
               const Between& between) {
  const int64_t nth = at::get_num_threads();
  if (rows_ok && own_rows<T>(B, H, w_bytes)) {
    at::parallel_for(0, nth, 1, [&](int64_t j0, int64_t j1) {
      for (int64_t j = j0; j < j1; ++j)
        for (int64_t s = 0; s < T_; ++s) step(backward ? T_ - 1 - s : s, j, nth);
    });
    return;
  }
  for (int64_t s = 0; s < T_; ++s) {
    const int64_t t = backward ? T_ - 1 - s : s;
    step(t, int64_t(0), int64_t(0));
    between(t);
  }
}

// The panels of one step for the rows j, j + nj, ... (nj == 0: all rows, panels split between threads):
// f(p0, p1, j, nj)
template <typename T, typename F>
void step_panels(int64_t H, int64_t work_per_panel, int64_t j, int64_t nj, const F& f) {
  constexpr int L = Vec<T>::L;
  const int64_t npan = (H + L - 1) / L;
  if (nj > 0) return f(int64_t(0), npan, j, nj);
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(work_per_panel, 1));
  at::parallel_for(0, npan, grain, [&](int64_t p0, int64_t p1) { f(p0, p1, int64_t(0), int64_t(1)); });
}

// The rows j, j + nj, ... at or past b (nj == 0: all of them), below B
template <typename F>
void rows_past(int64_t b, int64_t B, int64_t j, int64_t nj, const F& f) {
  const int64_t js = nj == 0 ? 0 : j, ns = std::max<int64_t>(nj, 1);
  for (int64_t r = b <= js ? js : js + (b - js + ns - 1) / ns * ns; r < B; r += ns) f(r);
}

// One step of the fused kernel. nj == 0: all rows, threads take panels (fused_step_g, a parallel region
// per step); else, on the calling thread, all panels for the rows j, j + nj, j + 2 nj, ... (the
// row-owned form of the forward loop below).
template <typename T, int G, int G2>
void fused_step_dispatch(const LstmConsts<T>& kp, int64_t H, const T* packed, const T* h_prev, const LstmStep<T>& st,
                         bool keep_act, const GateRecurrence<T>& gr, int64_t j, int64_t nj) {
  if (nj == 0) return fused_step_g<T, G, G2>(kp, H, packed, h_prev, st, keep_act, gr);
  constexpr int L = Vec<T>::L;
  fused_panels<T, G, G2>(kp, H, packed, h_prev, st, keep_act, gr, 0, (H + L - 1) / L, j, nj);
}

template <typename T>
void fused_step(int64_t G, const LstmConsts<T>& kp, int64_t H, const T* packed, const T* h_prev,
                const LstmStep<T>& st, bool keep_act, const GateRecurrence<T>& gr, int64_t j, int64_t nj) {
  if (gr.packed) {  // fgr: all four blocks, the three gates read the previous gates
    TORCH_CHECK(G == 4, "fused_step: fgr needs the four gate blocks");
    return fused_step_dispatch<T, 4, 3>(kp, H, packed, h_prev, st, keep_act, gr, j, nj);
  }
  switch (G) {
    case 1: return fused_step_dispatch<T, 1, 0>(kp, H, packed, h_prev, st, keep_act, gr, j, nj);
    case 2: return fused_step_dispatch<T, 2, 0>(kp, H, packed, h_prev, st, keep_act, gr, j, nj);
    case 3: return fused_step_dispatch<T, 3, 0>(kp, H, packed, h_prev, st, keep_act, gr, j, nj);
    default: return fused_step_dispatch<T, 4, 0>(kp, H, packed, h_prev, st, keep_act, gr, j, nj);
  }
}

// The forward loop of ../lstm.py's lstm_forward for CPU tensors, step for step, without the Python
// overhead of ~10 tensor views per step. float and double: fused_step (the recurrent GEMMs, fgr's
// gate recurrence included, fused with the elementwise step); bfloat16 and half: addmm_ into the
// gate rows, then one elementwise pass per row (lstm_step_impl). P (tc*B, nP) receives the input
// projection x2 (T*B, I) wih^T: all steps at once when tc == T (always for a backward pass, and for
// fgr, which reads step t-1's gates there), else refilled every tc steps. In float and double it is a
// plain GEMM and the fused epilogue adds the bias; in bfloat16 and half the GEMM adds it (addmm).
template <typename scalar_t>
void lstm_forward_loop_impl(at::Tensor& P, const at::Tensor& x2, const at::Tensor& wih, const at::Tensor& bias,
                            int64_t tc, const at::Tensor& whh_t, const c10::optional<at::Tensor>& wgh_t,
                            const c10::optional<at::Tensor>& a0, at::Tensor& C, bool keep_c,
                            const c10::optional<at::Tensor>& TC, bool save_tc, at::Tensor& Hout,
                            const at::Tensor& h0, const LstmConsts<scalar_t>& k,
                            const c10::optional<at::Tensor>& below, at::IntArrayRef bs,
                            const int64_t* gh_blk = nullptr) {
  const int64_t T = Hout.size(0), B = Hout.size(1), H = Hout.size(2), nP = P.size(1), GH = k.GH;
  const bool depth = below.has_value();
  const bool fgr = wgh_t.has_value();
  const int64_t nGH = fgr ? wgh_t->size(0) : 0;
  TORCH_CHECK(!fgr || (tc == T && a0.has_value()), "lstm_forward_loop: fgr needs the whole projection (tc == T) and a0");
  at::Tensor P3 = P.view({tc, B, nP});
  const at::Tensor wih_t = wih.t();
  scalar_t* Pp = P.data_ptr<scalar_t>();
  scalar_t* Cp = C.data_ptr<scalar_t>();
  scalar_t* TCp = TC.has_value() ? TC->data_ptr<scalar_t>() : nullptr;
  scalar_t* Hp = Hout.data_ptr<scalar_t>();
  const scalar_t* BLp = depth ? below->data_ptr<scalar_t>() : nullptr;
  at::Tensor h_prev = h0;
  constexpr bool vec_type = std::is_same<scalar_t, float>::value || std::is_same<scalar_t, double>::value;
  // float and double (every cell, fgr included): the recurrent GEMMs fused with the elementwise step
  // (fused_step); bfloat16 and half: addmm_, then lstm_step_impl
  const int64_t G = GH / H;
  at::Tensor packed, h0c, packed_gh, a0c;
  std::unique_ptr<PaddedUnits<scalar_t>> kp;
  if constexpr (vec_type) {
    packed = pack_recurrent<scalar_t>(whh_t, G, H, 0, k.blk);
    if (fgr) {
      packed_gh = pack_recurrent<scalar_t>(*wgh_t, nGH / H, H, 1, gh_blk, gh_blk);
      a0c = a0->contiguous();
    }
    h0c = h0.contiguous();
    constexpr int L = Vec<scalar_t>::L;
    kp = std::make_unique<PaddedUnits<scalar_t>>(k, (H + L - 1) / L * L);
  }
  // rows that ended before step t keep their cell in the alternating buffer (ci -> co): those of the
  // rows j, j + nj, ... at or past b
  auto keep_ended_cells = [&](int64_t ci, int64_t co, int64_t b, int64_t j, int64_t nj) {
    for (int64_t r = j + (b - j + nj - 1) / nj * nj; r < B; r += nj)
      std::copy(Cp + (ci * B + r) * H, Cp + (ci * B + r + 1) * H, Cp + (co * B + r) * H);
  };
  // the input projection of the tc steps from t (float, double: the epilogue adds the bias)
  auto project = [&](int64_t t) {
    const int64_t n = std::min(tc, T - t);
    at::Tensor out = P.narrow(0, 0, n * B);
    if constexpr (vec_type) at::mm_out(out, x2.narrow(0, t * B, n * B), wih_t);
    else at::addmm_out(out, bias, x2.narrow(0, t * B, n * B), wih_t);
  };
  if constexpr (vec_type) {
    // Step t for the rows j, j + nj, ... (nj == 0: all rows, threads taking panels). Without a backward
    // pass (save_tc false) neither h(c) nor the activations are kept.
    auto step = [&](int64_t t, int64_t j, int64_t nj) {
      const int64_t b = bs.empty() ? B : bs[t];
      const int64_t t_in = t % tc;
      const int64_t ci = keep_c ? t : t % 2, co = keep_c ? t + 1 : (t + 1) % 2;
      if (!keep_c && b < B) keep_ended_cells(ci, co, b, nj == 0 ? 0 : j, std::max<int64_t>(nj, 1));
      scalar_t* arow = Pp + t_in * B * nP;
      LstmStep<scalar_t> st{arow, Cp + ci * B * H, Cp + co * B * H,
                            TCp && save_tc ? TCp + t * B * H : nullptr, Hp + t * B * H,
                            depth ? arow + GH : nullptr, depth ? BLp + t * B * H : nullptr, b, nP, nP};
      const scalar_t* hp = t == 0 ? h0c.data_ptr<scalar_t>() : Hp + (t - 1) * B * H;
      GateRecurrence<scalar_t> gr;
      if (fgr) {  // the previous step's gate activations: a0, else the rows of step t-1 (tc == T for fgr)
        gr.a_prev = t == 0 ? a0c.data_ptr<scalar_t>() : Pp + (t_in - 1) * B * nP;
        gr.s2 = t == 0 ? nGH : nP;
        gr.packed = packed_gh.data_ptr<scalar_t>();
      }
      fused_step<scalar_t>(G, kp->k, H, packed.data_ptr<scalar_t>(), hp, st, save_tc || fgr, gr, j, nj);
    };
    // Rows are independent sequences: with enough rows a thread, thread j of nth owns the rows j, j + nth,
    // ... (interleaved, so that a padded batch sorted by length gives every thread long and short rows)
    // for every step of a projection chunk -- one parallel region a chunk, no barrier between steps, and
    // a row's state never leaves its core. Only where every row starts a cache line (H a multiple of 16
    // floats / 8 doubles; the buffers are 64-byte aligned), else neighbouring rows of two threads would
    // share lines. With few rows, or unaligned ones, threads take panels at every step instead.
    const int64_t nth = at::get_num_threads();
    const int64_t w_bytes = (packed.defined() ? packed.numel() : 0) * int64_t(sizeof(scalar_t)) +
                            (packed_gh.defined() ? packed_gh.numel() : 0) * int64_t(sizeof(scalar_t));
    const bool by_rows = own_rows<scalar_t>(B, H, w_bytes);
    for (int64_t t0 = 0; t0 < T; t0 += tc) {
      project(t0);
      const int64_t t1 = std::min(T, t0 + tc);
      if (by_rows) {
        at::parallel_for(0, nth, 1, [&](int64_t j0, int64_t j1) {
          for (int64_t t = t0; t < t1; ++t)
            for (int64_t j = j0; j < j1; ++j) step(t, j, nth);
        });
      } else {
        for (int64_t t = t0; t < t1; ++t) step(t, 0, 0);
      }
    }
    return;
  }
  for (int64_t t = 0; t < T; ++t) {
    const int64_t b = bs.empty() ? B : bs[t];
    const int64_t t_in = t % tc;
    if (t_in == 0) project(t);
    const int64_t ci = keep_c ? t : t % 2, co = keep_c ? t + 1 : (t + 1) % 2;
    if (!keep_c && b < B) keep_ended_cells(ci, co, b, 0, 1);
    scalar_t* arow = Pp + t_in * B * nP;
    at::Tensor a = P3.select(0, t_in).narrow(0, 0, b).narrow(1, 0, GH);  // (b, GH)
    a.addmm_(h_prev.narrow(0, 0, b), whh_t);
    if (fgr) {
      at::Tensor a_prev =
          t == 0 ? a0->narrow(0, 0, b) : P3.select(0, t_in - 1).narrow(0, 0, b).narrow(1, 0, nGH);
      a.narrow(1, 0, nGH).addmm_(a_prev, *wgh_t);
    }
    LstmStep<scalar_t> st{arow, Cp + ci * B * H, Cp + co * B * H,
                          TCp ? TCp + (save_tc ? t * B * H : 0) : nullptr, Hp + t * B * H,
                          depth ? arow + GH : nullptr, depth ? BLp + t * B * H : nullptr, b, nP, nP};
    lstm_step_impl<scalar_t>(k, st);
    h_prev = Hout.select(0, t);
  }
}

void lstm_forward_loop(at::Tensor P, const at::Tensor& x2, const at::Tensor& wih, const at::Tensor& bias,
                       int64_t tc, const at::Tensor& whh_t, const c10::optional<at::Tensor>& wgh_t,
                       const c10::optional<at::Tensor>& a0, at::Tensor C, bool keep_c,
                       const c10::optional<at::Tensor>& TC, bool save_tc, at::Tensor Hout, const at::Tensor& h0,
                       const c10::optional<at::Tensor>& p_if, const c10::optional<at::Tensor>& p_o,
                       const c10::optional<at::Tensor>& below, const c10::optional<at::Tensor>& w_cd,
                       const c10::optional<at::Tensor>& w_ld, at::IntArrayRef bs, int64_t GH, int64_t flags,
                       at::IntArrayRef blocks) {
  const int64_t T = Hout.size(0), B = Hout.size(1), H = Hout.size(2);
  TORCH_CHECK(P.device().is_cpu(), "lstm_forward_loop: CPU tensors only, got ", P.device());
  TORCH_CHECK(bs.empty() || int64_t(bs.size()) == T, "lstm_forward_loop: bs must have T entries");
  const bool ig = flags & kInputGate, fg = flags & kForgetGate, og = flags & kOutputGate;
  const int64_t nblocks = int64_t(og) + int64_t(ig) + int64_t(fg) + 1;
  TORCH_CHECK(GH == nblocks * H, "lstm_forward_loop: ", GH, " gate columns, expected ", nblocks, " x ", H);
  const bool depth = below.has_value();
  TORCH_CHECK(P.is_contiguous() && P.size(1) == GH + (depth ? H : 0), "lstm_forward_loop: P must be a "
              "contiguous (tc*B, G*H [+ H]) buffer");
  // the row kernel walks these through raw pointers: they must be contiguous, of P's dtype
  for (const at::Tensor& t : {C, Hout}) {
    TORCH_CHECK(t.is_contiguous() && t.scalar_type() == P.scalar_type(), "lstm_forward_loop: C and Hout must be "
                "contiguous and of the gate buffer's dtype");
  }
  for (const c10::optional<at::Tensor>& t : {TC, below, p_if, p_o, w_cd, w_ld}) {
    TORCH_CHECK(!t.has_value() || (t->is_contiguous() && t->scalar_type() == P.scalar_type()),
                "lstm_forward_loop: TC, below, p_if, p_o, w_cd and w_ld must be contiguous and of the gate "
                "buffer's dtype");
  }
  TORCH_CHECK(depth == w_cd.has_value() && depth == w_ld.has_value(),
              "lstm_forward_loop: the depth gate needs below, w_cd and w_ld");
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == P.size(1) && bias.is_contiguous() &&
              bias.scalar_type() == P.scalar_type(), "lstm_forward_loop: bias must be a contiguous (G*H [+ H]) "
              "vector of the gate buffer's dtype");
  // blocks: the gate buffer's and the weights' block of each internal block (empty: the same order), then,
  // with fgr, W_gh's block (rows and columns) of each internal gated block. Only the float/double
  // inference loop reads through it (no activations kept for a backward pass)
  const bool fgr = wgh_t.has_value();
  const int64_t nmap = blocks.empty() ? 0 : nblocks + (fgr ? nblocks - 1 : 0);
  auto is_perm = [&](int64_t from, int64_t n) {
    std::vector<int64_t> seen(blocks.begin() + from, blocks.begin() + from + n);
    std::sort(seen.begin(), seen.end());
    for (int64_t q = 0; q < n; ++q)
      if (seen[q] != q) return false;
    return true;
  };
  if (!blocks.empty()) {
    TORCH_CHECK(int64_t(blocks.size()) == nmap && is_perm(0, nblocks) && (!fgr || is_perm(nblocks, nblocks - 1)),
                "lstm_forward_loop: blocks must be a permutation of the ", nblocks, " gate blocks",
                fgr ? " followed by one of the gated blocks (fgr's W_gh)" : "", ", got ", blocks);
    TORCH_CHECK(!save_tc && (P.scalar_type() == at::kFloat || P.scalar_type() == at::kDouble),
                "lstm_forward_loop: blocks in another order only for the float/double inference loop");
  }
  int64_t gh_blk[3];
  for (int64_t q = 0; fgr && q < nmap - nblocks; ++q) gh_blk[q] = blocks[nblocks + q];
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, P.scalar_type(), "lstm_forward_loop", [&] {
    LstmConsts<scalar_t> k = lstm_consts<scalar_t>(H, GH, flags, p_if, p_o, w_cd, w_ld);
    constexpr bool vec_type = std::is_same<scalar_t, float>::value || std::is_same<scalar_t, double>::value;
    if constexpr (vec_type) k.bias = bias.data_ptr<scalar_t>();  // the fused kernel's epilogue adds it
    for (int64_t q = 0; q < std::min(nmap, nblocks); ++q) k.blk[q] = blocks[q];
    lstm_forward_loop_impl<scalar_t>(P, x2, wih, bias, tc, whh_t, wgh_t, a0, C, keep_c, TC, save_tc, Hout, h0, k,
                                     below, bs, fgr && nmap ? gh_blk : nullptr);
  });
}

// Each row's length from the batch sizes of a length-sorted padded batch (bs[t]: rows alive at step t)
inline std::vector<int64_t> row_lengths(at::IntArrayRef bs, int64_t B) {
  std::vector<int64_t> len(B, 0);
  for (int64_t t = 0; t < int64_t(bs.size()); ++t)
    for (int64_t r = 0; r < bs[t]; ++r) len[r] = t + 1;
  return len;
}

// rows r of a contiguous src (n, B, W) at step steps[r] (a (B, W) copy; plain copies, no op per row)
inline at::Tensor rows_at(const at::Tensor& src, const std::vector<int64_t>& steps) {
  TORCH_CHECK(src.is_contiguous(), "rows_at: a contiguous (n, B, W) tensor");
  const int64_t B = src.size(1), W = src.size(2);
  at::Tensor out = at::empty({B, W}, src.options());
  AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "rows_at", [&] {
    const scalar_t* s = src.data_ptr<scalar_t>();
    scalar_t* d = out.data_ptr<scalar_t>();
    for (int64_t r = 0; r < B; ++r) std::copy(s + (steps[r] * B + r) * W, s + (steps[r] * B + r + 1) * W, d + r * W);
  });
  return out;
}

// A whole inference call of one LSTM-family layer-direction (float, double): what
// ../driver.py's _run_lstm, ../lstm.py's lstm_forward and lstm_outputs do around lstm_forward_loop, in one op, so
// that a short call does not pay for ~20 small tensor ops and their Python (the fixed cost of a call). bs: the
// batch sizes of a length-sorted padded batch (empty: no padding; outputs past a row's end are zero, its final
// states are those at its end). Weights in
// the cell's own layout (blocks: as lstm_forward_loop's, internal block q <- the cell's block blocks[q], then fgr's
// gated blocks); wih (G*H [+ H], I) with the depth gate's block last, bias_ih alike, bias_hh (G*H); wph the
// peepholes in the cell's rows (i, f present ones, then o); a0 (B, nG*H) fgr's previous gates in the cell's order.
// Returns [out (T, B, H), h_T, c_T, a_T (fgr, the cell's order) or an empty tensor, the cell sequence (T, B, H)
// when want_cseq, else an empty tensor].
std::vector<at::Tensor> lstm_infer(const at::Tensor& x, const at::Tensor& wih, const at::Tensor& bias_ih,
                                   const at::Tensor& bias_hh, const at::Tensor& whh,
                                   const c10::optional<at::Tensor>& wgh, const c10::optional<at::Tensor>& wph,
                                   const c10::optional<at::Tensor>& w_cd, const c10::optional<at::Tensor>& w_ld,
                                   const c10::optional<at::Tensor>& below, const at::Tensor& h0,
                                   const at::Tensor& c0, const c10::optional<at::Tensor>& a0, int64_t tc,
                                   int64_t flags, at::IntArrayRef blocks, at::IntArrayRef bs, bool want_cseq) {
  TORCH_CHECK(x.dim() == 3 && x.device().is_cpu() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble),
              "lstm_infer: a (T, B, I) float32/float64 CPU input");
  const int64_t T = x.size(0), B = x.size(1), H = whh.size(1), GH = whh.size(0);
  const bool og = flags & kOutputGate, depth = below.has_value(), fgr = wgh.has_value();
  const int64_t G = GH / H, nG = G - 1, nP = GH + (depth ? H : 0), nGH = fgr ? nG * H : 0;
  TORCH_CHECK(int64_t(blocks.size()) == G + (fgr ? nG : 0), "lstm_infer: blocks must map the ", G, " gate blocks",
              fgr ? " and the gated blocks" : "");
  for (const at::Tensor& t : {wih, bias_ih, bias_hh, whh, h0, c0})
    TORCH_CHECK(t.scalar_type() == x.scalar_type(), "lstm_infer: weights and states in the input's dtype");
  TORCH_CHECK(wih.size(0) == nP && bias_ih.numel() == nP && bias_hh.numel() == GH && (!fgr || a0.has_value()),
              "lstm_infer: wih/bias_ih must have G*H [+ H] rows, bias_hh G*H, and fgr needs a0");
  const at::TensorOptions opt = x.options();
  at::Tensor xc = x.contiguous();
  at::Tensor bias = at::empty({nP}, opt);  // both biases in internal order, the depth gate's last
  at::Tensor bih = bias_ih.contiguous(), bhh = bias_hh.contiguous();
  at::Tensor a0i, pif, po;
  if (fgr) a0i = at::empty({B, nGH}, opt);
  const int64_t kif = (wph.has_value() ? wph->size(0) : 0) - (wph.has_value() && og ? 1 : 0);
  if (wph.has_value()) {
    if (kif > 0) pif = wph->narrow(0, 0, kif).contiguous();
    if (og) po = wph->select(0, kif).contiguous();
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_infer_prep", [&] {
    const scalar_t *bi = bih.data_ptr<scalar_t>(), *bh = bhh.data_ptr<scalar_t>();
    scalar_t* b = bias.data_ptr<scalar_t>();
    for (int64_t q = 0; q < G; ++q)
      for (int64_t u = 0; u < H; ++u) b[q * H + u] = bi[blocks[q] * H + u] + bh[blocks[q] * H + u];
    if (depth) std::copy(bi + GH, bi + nP, b + GH);
    if (fgr) {  // the cell's gated order -> internal
      at::Tensor a0c = a0->contiguous();
      const scalar_t* s = a0c.data_ptr<scalar_t>();
      scalar_t* d = a0i.data_ptr<scalar_t>();
      for (int64_t r = 0; r < B; ++r)
        for (int64_t q = 0; q < nG; ++q)
          std::copy(s + r * nGH + blocks[G + q] * H, s + r * nGH + (blocks[G + q] + 1) * H, d + r * nGH + q * H);
    }
  });
  const int64_t tcc = fgr ? T : std::max<int64_t>(1, std::min(tc, T));
  at::Tensor P = at::empty({tcc * B, nP}, opt);
  const bool padded = !bs.empty();
  TORCH_CHECK(!padded || int64_t(bs.size()) == T, "lstm_infer: bs must have T entries");
  at::Tensor C = want_cseq && padded ? at::zeros({T + 1, B, H}, opt) : at::empty({want_cseq ? T + 1 : 2, B, H}, opt);
  C.select(0, 0).copy_(c0);
  const bool oa = flags & kOutputActivation;
  c10::optional<at::Tensor> TC = oa ? c10::optional<at::Tensor>(at::empty({B, H}, opt)) : c10::nullopt;
  at::Tensor Hout = padded ? at::zeros({T, B, H}, opt) : at::empty({T, B, H}, opt);
  c10::optional<at::Tensor> p_if = pif.defined() ? c10::optional<at::Tensor>(pif) : c10::nullopt;
  c10::optional<at::Tensor> p_o = po.defined() ? c10::optional<at::Tensor>(po) : c10::nullopt;
  c10::optional<at::Tensor> wgh_t = fgr ? c10::optional<at::Tensor>(wgh->t()) : c10::nullopt;
  c10::optional<at::Tensor> a0o = fgr ? c10::optional<at::Tensor>(a0i) : c10::nullopt;
  c10::optional<at::Tensor> bl = depth ? c10::optional<at::Tensor>(below->contiguous()) : c10::nullopt;
  lstm_forward_loop(P, xc.view({T * B, xc.size(2)}), wih, bias, tcc, whh.t(), wgh_t, a0o, C, want_cseq, TC, false,
                    Hout, h0, p_if, p_o, bl, w_cd, w_ld, bs, GH, flags, blocks);
  // each row's last step (T - 1 without padding)
  std::vector<int64_t> last = padded ? row_lengths(bs, B) : std::vector<int64_t>(B, T);
  for (int64_t& l : last) l -= 1;
  at::Tensor hT = padded ? rows_at(Hout, last) : Hout.select(0, T - 1).clone();
  // the alternating cell buffer is this call's own (rows that ended keep their cell in it): its last cell is
  // returned without a copy
  at::Tensor cT = !want_cseq ? C.select(0, T % 2) : padded ? rows_at(C.narrow(0, 1, T), last)
                                                                  : C.select(0, T).clone();
  at::Tensor aT = at::empty({0}, opt), cseq = at::empty({0}, opt);
  if (fgr) {  // each row's gates at its last step (internal order, in P) -> the cell's order
    aT = at::empty({B, nGH}, opt);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_infer_aT", [&] {
      scalar_t* d = aT.data_ptr<scalar_t>();
      for (int64_t r = 0; r < B; ++r) {
        const scalar_t* s = P.data_ptr<scalar_t>() + (last[r] * B + r) * nP;  // tcc == T for fgr
        for (int64_t q = 0; q < nG; ++q)
          std::copy(s + q * H, s + (q + 1) * H, d + r * nGH + blocks[G + q] * H);
      }
    });
  }
  if (want_cseq) cseq = C.narrow(0, 1, T);
  return {Hout, hT, cT, aT, cseq};
}

// The backward loop of ../lstm.py's lstm_backward, step for step: per step the recurrent dh GEMM
// (rows alive at t+1), one elementwise pass per row that turns the saved activations of step t
// into the pre-activation gradients (in place) and gives dc_{t-1}, and fgr's two GEMMs. The
// weight gradients after the loop stay in Python (one GEMM each).
//   dh = DH[t] + dA[t+1] W_hh;  dc = carry (+ dcseq[t])
//   h = o * hc:   dhc = dh * o,  dL/do = dh * hc (+ e_o)
//   dc += dhc * h'(c);  da_o = dL/do * o (1 - o);  dc += da_o * p_o (peephole on c_t)
//   dglstm: d(below) = dc * d + da_d * w_ld,  da_d = dc * below * d (1 - d)
//   dc_{t-1} = dc * f  (f = 1 - i when coupled; 1 without a forget gate)
//   da_i = (dc * g (g - c_{t-1} when coupled) + e_i) * i (1 - i);  da_g = dc * i * g'(a_g)
//   da_f = (dc * c_{t-1} + e_f) * f (1 - f)
//   dc_{t-1} += da_i * p_i + da_f * p_f (peepholes on c_{t-1}) + da_d * w_cd
// One row's operands of the backward step for the units [u0, u0 + U), every pointer at unit u0: a the gate
// blocks (activations in, pre-activation gradients out; block q at a + q * H), e fgr's carry (blocks like a's
// gated ones) or null, tc h(c) or null (then c), dcseq the layer above's dc (dglstm) or null, d / below /
// dbelow the depth gate's or null. dh: the units' dh (already holding the recurrent term), in acc_t.
template <typename scalar_t>
struct LstmBackRow {
  scalar_t* a;
  const scalar_t *c_prev, *c, *tc, *dc, *dcseq, *e;
  scalar_t* dcn;
  scalar_t* d;
  const scalar_t* below;
  scalar_t* dbelow;
};

// The elementwise backward of one step for U units of one row (the equations above); work: (2 G + 8) U values.
template <typename scalar_t, typename acc_t>
void lstm_units_backward(const LstmConsts<scalar_t>& k, const LstmBackRow<scalar_t>& rw, const acc_t* dhv,
                         int64_t U, int64_t u0, acc_t* work) {
  const int64_t H = k.H;
  const bool ig = k.ig, fg = k.fg, og = k.og, ia = k.ia, oa = k.oa, coupled = k.coupled;
  const bool peep_o = k.p_o != nullptr, depth = rw.d != nullptr, has_e = rw.e != nullptr;
  const int64_t G = k.GH / H;
  // X: the gate blocks of these units (block stride U), then e's, cp, cn, hc, dcv, dcp, dd, bl, dbl
  acc_t* X = work;
  acc_t* ev = X + G * U;
  acc_t* cp = ev + G * U;
  acc_t* cn = cp + U;
  acc_t* hc = cn + U;
  acc_t* dcv = hc + U;
  acc_t* dcp = dcv + U;
  acc_t* dd = dcp + U;
  acc_t* bl = dd + U;
  acc_t* dbl = bl + U;
  int64_t off = 0;
  const int64_t so = og ? (off += U) - U : -1;
  const int64_t si = ig ? (off += U) - U : -1;
  const int64_t sf = fg ? (off += U) - U : -1;
  const int64_t sg = off;
  for (int64_t q = 0; q < G; ++q) load(X + q * U, rw.a + q * H, U);
  load(cp, rw.c_prev, U);
  load(cn, rw.c, U);
  if (oa) load(hc, rw.tc, U);
  else for (int64_t j = 0; j < U; ++j) hc[j] = cn[j];
  load(dcv, rw.dc, U);
  if (rw.dcseq) for (int64_t j = 0; j < U; ++j) dcv[j] += acc_t(rw.dcseq[j]);
  if (has_e) for (int64_t q = 0; q < G - 1; ++q) load(ev + q * U, rw.e + q * H, U);
  // h = o * hc
  if (og) {
    acc_t* o = X + so;
    for (int64_t j = 0; j < U; ++j) {
      const acc_t dhc = dhv[j] * o[j];
      acc_t dout = dhv[j] * hc[j];
      if (has_e) dout += ev[so + j];
      dcv[j] += oa ? dhc * (acc_t(1) - hc[j] * hc[j]) : dhc;
      o[j] = dout * o[j] * (acc_t(1) - o[j]);  // da_o
    }
    if (peep_o) for (int64_t j = 0; j < U; ++j) dcv[j] += o[j] * acc_t(k.p_o[u0 + j]);
  } else {
    for (int64_t j = 0; j < U; ++j) dcv[j] += oa ? dhv[j] * (acc_t(1) - hc[j] * hc[j]) : dhv[j];
  }
  if (depth) {  // c += d * below
    load(dd, rw.d, U);
    load(bl, rw.below, U);
    for (int64_t j = 0; j < U; ++j) {
      dbl[j] = dcv[j] * dd[j];
      dd[j] = dcv[j] * bl[j] * dd[j] * (acc_t(1) - dd[j]);  // da_d
      dbl[j] += dd[j] * acc_t(k.w_ld[u0 + j]);
    }
  }
  // dc_{t-1} through the forget path
  if (fg) {
    const acc_t* f = X + sf;
    for (int64_t j = 0; j < U; ++j) dcp[j] = dcv[j] * f[j];
  } else if (coupled) {
    const acc_t* i = X + si;
    for (int64_t j = 0; j < U; ++j) dcp[j] = dcv[j] * (acc_t(1) - i[j]);
  } else {
    for (int64_t j = 0; j < U; ++j) dcp[j] = dcv[j];
  }
  acc_t* g = X + sg;
  if (ig) {
    acc_t* i = X + si;
    for (int64_t j = 0; j < U; ++j) {
      const acc_t gj = g[j];
      const acc_t gp = ia ? acc_t(1) - gj * gj : acc_t(1);
      acc_t di = dcv[j] * (coupled ? gj - cp[j] : gj);
      if (has_e) di += ev[si + j];
      g[j] = dcv[j] * i[j] * gp;
      i[j] = di * i[j] * (acc_t(1) - i[j]);
    }
  } else if (ia) {
    for (int64_t j = 0; j < U; ++j) g[j] = dcv[j] * (acc_t(1) - g[j] * g[j]);
  } else {
    for (int64_t j = 0; j < U; ++j) g[j] = dcv[j];
  }
  if (fg) {
    acc_t* f = X + sf;
    for (int64_t j = 0; j < U; ++j) {
      acc_t df = dcv[j] * cp[j];
      if (has_e) df += ev[sf + j];
      f[j] = df * f[j] * (acc_t(1) - f[j]);
    }
  }
  // peepholes on c_{t-1} (rows for i and f, present ones, after o) and the depth gate's w_cd
  for (int64_t q = 0; q < k.kif; ++q) {
    const acc_t* da = X + (og ? U : 0) + q * U;
    const scalar_t* p = k.p_if + q * H + u0;
    for (int64_t j = 0; j < U; ++j) dcp[j] += da[j] * acc_t(p[j]);
  }
  if (depth) {
    for (int64_t j = 0; j < U; ++j) dcp[j] += dd[j] * acc_t(k.w_cd[u0 + j]);
    store(rw.d, dd, U);
    store(rw.dbelow, dbl, U);
  }
  for (int64_t q = 0; q < G; ++q) store(rw.a + q * H, X + q * U, U);
  store(rw.dcn, dcp, U);
}

// lstm_units_backward for 16 float units in vector registers (the fused backward's full panels): dh the units'
// dh, every pointer of rw at unit u0 with 16 valid values.
__attribute__((always_inline)) inline void lstm_units_backward_v16(const LstmConsts<float>& k,
                                                                   const LstmBackRow<float>& rw, v16f dh, int64_t u0) {
  const int64_t H = k.H;
  int q = 0;
  const int qo = k.og ? q++ : -1, qi = k.ig ? q++ : -1, qf = k.fg ? q++ : -1, qg = q;
  v16f X[4], e[3];
  for (int b = 0; b <= qg; ++b) X[b] = ld16(rw.a + b * H);
  if (rw.e)
    for (int b = 0; b < qg; ++b) e[b] = ld16(rw.e + b * H);
  const v16f cp = ld16(rw.c_prev), cn = ld16(rw.c);
  const v16f hc = k.oa ? ld16(rw.tc) : cn;
  v16f dc = ld16(rw.dc);
  if (rw.dcseq) dc += ld16(rw.dcseq);
  if (k.og) {  // h = o * hc
    const v16f o = X[qo];
    const v16f dhc = dh * o;
    v16f dout = dh * hc;
    if (rw.e) dout += e[qo];
    dc += k.oa ? dhc * (1.0f - hc * hc) : dhc;
    X[qo] = dout * o * (1.0f - o);  // da_o
    if (k.p_o) dc += X[qo] * ld16(k.p_o + u0);
  } else {
    dc += k.oa ? dh * (1.0f - hc * hc) : dh;
  }
  v16f dd = {}, dbl = {};
  if (rw.d) {  // c += d * below
    const v16f d = ld16(rw.d), bl = ld16(rw.below);
    dbl = dc * d;
    dd = dc * bl * d * (1.0f - d);  // da_d
    dbl += dd * ld16(k.w_ld + u0);
  }
  v16f dcp;  // dc_{t-1} through the forget path
  if (k.fg) dcp = dc * X[qf];
  else if (k.coupled) dcp = dc * (1.0f - X[qi]);
  else dcp = dc;
  const v16f g = X[qg];
  if (k.ig) {
    const v16f i = X[qi];
    v16f di = dc * (k.coupled ? g - cp : g);
    if (rw.e) di += e[qi];
    X[qg] = k.ia ? dc * i * (1.0f - g * g) : dc * i;
    X[qi] = di * i * (1.0f - i);
  } else {
    X[qg] = k.ia ? dc * (1.0f - g * g) : dc;
  }
  if (k.fg) {
    const v16f f = X[qf];
    v16f df = dc * cp;
    if (rw.e) df += e[qf];
    X[qf] = df * f * (1.0f - f);
  }
  for (int64_t r = 0; r < k.kif; ++r) dcp += X[(k.og ? 1 : 0) + r] * ld16(k.p_if + r * H + u0);  // peepholes
  if (rw.d) {
    dcp += dd * ld16(k.w_cd + u0);
    st16(rw.d, dd);
    st16(rw.dbelow, dbl);
  }
  for (int b = 0; b <= qg; ++b) st16(rw.a + b * H, X[b]);
  st16(rw.dcn, dcp);
}

// The backward step's elementwise part for rows [0, b), whole rows (rows in parallel), after the dh GEMM:
// the bfloat16/half loop. a (b, GH); dh, dc, dcn (b, H); e (b, nGH) or null.
template <typename scalar_t>
void lstm_step_backward_impl(at::Tensor& a, const at::Tensor& c_prev, const at::Tensor& c,
                             const c10::optional<at::Tensor>& tc, const at::Tensor& dh, const at::Tensor& dc,
                             at::Tensor& dcn, const c10::optional<at::Tensor>& e,
                             const c10::optional<at::Tensor>& d, const c10::optional<at::Tensor>& below,
                             const c10::optional<at::Tensor>& dbelow, const LstmConsts<scalar_t>& k) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t b = a.size(0), H = k.H, G = k.GH / H;
  const bool depth = d.has_value();
  const int64_t sa = a.stride(0), scp = c_prev.stride(0), sc = c.stride(0), sdh = dh.stride(0);
  const int64_t stc = tc.has_value() ? tc->stride(0) : 0, sdc = dc.stride(0), sdcn = dcn.stride(0);
  const int64_t se = e.has_value() ? e->stride(0) : 0, sd = depth ? d->stride(0) : 0;
  const int64_t sbl = depth ? below->stride(0) : 0, sdbl = depth ? dbelow->stride(0) : 0;
  for_rows<acc_t>(b, k.GH, (2 * G + 9) * H, [&](int64_t r, acc_t* W) {
    acc_t* dhv = W + (2 * G + 8) * H;
    load(dhv, dh.data_ptr<scalar_t>() + r * sdh, H);
    LstmBackRow<scalar_t> rw{a.data_ptr<scalar_t>() + r * sa, c_prev.data_ptr<scalar_t>() + r * scp,
                             c.data_ptr<scalar_t>() + r * sc, tc.has_value() ? tc->data_ptr<scalar_t>() + r * stc : nullptr,
                             dc.data_ptr<scalar_t>() + r * sdc, nullptr,
                             e.has_value() ? e->data_ptr<scalar_t>() + r * se : nullptr,
                             dcn.data_ptr<scalar_t>() + r * sdcn, depth ? d->data_ptr<scalar_t>() + r * sd : nullptr,
                             depth ? below->data_ptr<scalar_t>() + r * sbl : nullptr,
                             depth ? dbelow->data_ptr<scalar_t>() + r * sdbl : nullptr};
    lstm_units_backward<scalar_t, acc_t>(k, rw, dhv, H, 0, W);
  });
}

template <typename scalar_t>
void lstm_backward_loop_impl(at::Tensor& A, const at::Tensor& C, const c10::optional<at::Tensor>& TC, at::Tensor& DH,
                             at::Tensor& dc_a, at::Tensor& dc_b, const c10::optional<at::Tensor>& dcseq,
                             const at::Tensor& whh, const c10::optional<at::Tensor>& wgh,
                             const c10::optional<at::Tensor>& a0, c10::optional<at::Tensor>& E,
                             c10::optional<at::Tensor>& dwgh, c10::optional<at::Tensor>& D,
                             const c10::optional<at::Tensor>& below, c10::optional<at::Tensor>& dbelow,
                             at::IntArrayRef bs, const LstmConsts<scalar_t>& k, int64_t chunk) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t T = A.size(0), B = A.size(1), H = k.H, GH = k.GH;
  const bool fgr = wgh.has_value(), depth = D.has_value();
  const int64_t nGH = fgr ? wgh->size(0) : 0;
  // fgr's dW_gh = sum_t da_t[:, :nGH]^T a_{t-1}: one GEMM per chunk of `chunk` steps rather than one per step
  // (a rank-b update of a (nGH, nGH) matrix each step is bound by memory, not arithmetic, for small batches).
  // a_{t-1} is overwritten with gradients one step later, so each step copies its live rows into the chunk
  // buffer S; the da rows come from A itself, zero past b, so S's rows there do not count. Then
  // E = da_t[:, :nGH] W_gh, the carry of step t-1. On the calling thread, after step t.
  const int64_t kc = fgr ? std::max<int64_t>(1, std::min<int64_t>(T, chunk)) : 0;
  at::Tensor S = fgr ? at::zeros({kc, B, nGH}, A.options()) : at::Tensor();
  const at::Tensor A2 = fgr ? A.view({T * B, GH}).narrow(1, 0, nGH) : at::Tensor();  // a view: A changes
  auto fgr_after = [&](int64_t t) {
    if (!fgr) return;
    const int64_t b = bs.empty() ? B : bs[t];
    at::Tensor dag = A.select(0, t).narrow(0, 0, b).narrow(1, 0, nGH);
    at::Tensor a_prev = t == 0 ? a0->narrow(0, 0, b) : A.select(0, t - 1).narrow(0, 0, b).narrow(1, 0, nGH);
    const int64_t slot = t % kc;  // chunks [t0, t0 + kc) with t0 a multiple of kc, filled from the top
    S.select(0, slot).narrow(0, 0, b).copy_(a_prev);
    if (slot == 0) {  // the chunk's first step: its kc (or fewer, at the end) steps in one GEMM
      const int64_t n = std::min(kc, T - t);
      dwgh->addmm_(A2.narrow(0, t * B, n * B).t(), S.narrow(0, 0, n).reshape({n * B, nGH}));
    }
    at::Tensor eo = E->narrow(0, 0, b);
    at::mm_out(eo, dag, *wgh);
  };
  constexpr bool vec_type = std::is_same<scalar_t, float>::value || std::is_same<scalar_t, double>::value;
  if constexpr (vec_type) {
    // float, double: dh_t += da_{t+1} W_hh fused with the step's elementwise part, panel by panel of hidden
    // units (gemv_tiles: W_hh (GH, H) packed with K = GH), like the forward; the two thread splits of
    // step_loop (fgr: panels, its E GEMM runs between steps).
    constexpr int L = Vec<scalar_t>::L;
    // tiles of 6 rows x 4 vectors (units g * H/4 + p * L + l, g < 4) where 4 divides H, else 12 rows x 1
    const int NB = gemv_blocks(H);
    const int64_t Hs = H / NB;
    const at::Tensor packed_t = pack_recurrent<scalar_t>(whh, NB, Hs);
    const scalar_t* packed = packed_t.data_ptr<scalar_t>();
    const at::Tensor dcs = dcseq.has_value() ? dcseq->contiguous() : at::Tensor();
    scalar_t* Ap = A.data_ptr<scalar_t>();
    const int64_t sA = A.stride(0), sa = A.stride(1);
    const scalar_t* Cp = C.data_ptr<scalar_t>();
    const scalar_t* TCp = TC.has_value() ? TC->data_ptr<scalar_t>() : nullptr;
    const scalar_t* DHp = DH.data_ptr<scalar_t>();
    const scalar_t* DSp = dcseq.has_value() ? dcs.data_ptr<scalar_t>() : nullptr;
    const scalar_t* Ep = fgr ? E->data_ptr<scalar_t>() : nullptr;
    scalar_t* Dp = depth ? D->data_ptr<scalar_t>() : nullptr;
    const int64_t sD = depth ? D->stride(0) : 0, sd = depth ? D->stride(1) : 0;
    const scalar_t* BLp = depth ? below->data_ptr<scalar_t>() : nullptr;
    scalar_t* DBLp = depth ? dbelow->data_ptr<scalar_t>() : nullptr;
    scalar_t* dcA = dc_a.data_ptr<scalar_t>();
    scalar_t* dcB = dc_b.data_ptr<scalar_t>();
    auto step = [&](int64_t t, int64_t j, int64_t nj) {
      const int64_t b = bs.empty() ? B : bs[t];
      const int64_t b1 = t == T - 1 ? 0 : (bs.empty() ? B : bs[t + 1]);
      const bool even = (T - 1 - t) % 2 == 0;  // the carries alternate: dc_t in one, dc_{t-1} into the other
      const scalar_t* dcur = even ? dcA : dcB;
      scalar_t* dnext = even ? dcB : dcA;
      scalar_t* at_ = Ap + t * sA;
      rows_past(b, B, j, nj, [&](int64_t r) {  // rows past their end: no gradient (A holds their projections)
        std::fill(at_ + r * sa, at_ + r * sa + GH, scalar_t(0));
        if (depth) std::fill(Dp + t * sD + r * sd, Dp + t * sD + r * sd + H, scalar_t(0));
      });
      auto epi = [&](int64_t r, int64_t u0, int64_t U, const scalar_t* tile) {
        const scalar_t* dh = DHp + (t * B + r) * H + u0;
        const int64_t o = (t * B + r) * H + u0;  // (T, B, H) buffers at step t, row r, unit u0
        LstmBackRow<scalar_t> rw{at_ + r * sa + u0, Cp + o, Cp + o + B * H, TCp ? TCp + o : nullptr,
                                 dcur + r * H + u0, DSp ? DSp + o : nullptr, Ep ? Ep + r * nGH + u0 : nullptr,
                                 dnext + r * H + u0, depth ? Dp + t * sD + r * sd + u0 : nullptr,
                                 depth ? BLp + o : nullptr, depth ? DBLp + o : nullptr};
        if constexpr (std::is_same<scalar_t, float>::value) {  // in vector registers
          if (U == L) return lstm_units_backward_v16(k, rw, tile ? ld16(dh) + ld16(tile) : ld16(dh), u0);
        }
        alignas(64) acc_t dhv[L];
        alignas(64) acc_t work[(2 * 4 + 8) * L];
        for (int64_t q = 0; q < U; ++q) dhv[q] = acc_t(dh[q]) + (tile ? acc_t(tile[q]) : acc_t(0));
        lstm_units_backward<scalar_t, acc_t>(k, rw, dhv, U, u0, work);
      };
      const scalar_t* lhs = Ap + std::min(t + 1, T - 1) * sA;  // da_{t+1}, rows below b1
      step_panels<scalar_t>(Hs, b * L * GH * NB, j, nj, [&](int64_t p0, int64_t p1, int64_t jj, int64_t nn) {
        if (NB == 4) gemv_tiles<scalar_t, 4>(packed, GH, Hs, lhs, sa, GH, b, b1, p0, p1, jj, nn, epi);
        else gemv_tiles<scalar_t, 1>(packed, GH, Hs, lhs, sa, GH, b, b1, p0, p1, jj, nn, epi);
      });
    };
    step_loop<scalar_t>(T, B, H, GH * H * int64_t(sizeof(scalar_t)), true, !fgr, step, fgr_after);
    if ((T - 1) % 2 == 0) dc_a.copy_(dc_b);  // step 0 wrote dc_0 into dc_b
    return;
  }
  at::Tensor dca = dc_a, dcb = dc_b;
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t b = bs.empty() ? B : bs[t];
    const int64_t b1 = t == T - 1 ? 0 : (bs.empty() ? B : bs[t + 1]);
    if (b < B) {  // rows past their end: no gradient (the buffer holds their projections there)
      A.select(0, t).narrow(0, b, B - b).zero_();
      if (depth) D->select(0, t).narrow(0, b, B - b).zero_();
    }
    at::Tensor a = A.select(0, t).narrow(0, 0, b);
    at::Tensor dh = DH.select(0, t).narrow(0, 0, b);
    if (b1) dh.narrow(0, 0, b1).addmm_(A.select(0, t + 1).narrow(0, 0, b1), whh);
    at::Tensor dc = dca.narrow(0, 0, b), dcn = dcb.narrow(0, 0, b);
    if (dcseq.has_value()) dc.add_(dcseq->select(0, t).narrow(0, 0, b));
    c10::optional<at::Tensor> hc, e, dt, bl, dbl;
    if (TC.has_value()) hc = TC->select(0, t).narrow(0, 0, b);
    if (fgr) e = E->narrow(0, 0, b);
    if (depth) {
      dt = D->select(0, t).narrow(0, 0, b);
      bl = below->select(0, t).narrow(0, 0, b);
      dbl = dbelow->select(0, t).narrow(0, 0, b);
    }
    lstm_step_backward_impl<scalar_t>(a, C.select(0, t).narrow(0, 0, b), C.select(0, t + 1).narrow(0, 0, b), hc, dh,
                                      dc, dcn, e, dt, bl, dbl, k);
    fgr_after(t);
    std::swap(dca, dcb);
  }
  if (!dca.is_same(dc_a)) dc_a.copy_(dca);
}

// A (T, B, GH) saved activations -> pre-activation gradients; D likewise for dglstm. DH (T, B, H) dh of every
// step (output and final-state gradients; the bfloat16/half loop overwrites it). dc_a, dc_b (B, H): the dc
// carry, both holding dc_T; on return dc_a holds dc_0. E (B, nGH): fgr's carry, holding da_T.
void lstm_backward_loop(at::Tensor A, const at::Tensor& C, const c10::optional<at::Tensor>& TC, at::Tensor DH,
                        at::Tensor dc_a, at::Tensor dc_b, const c10::optional<at::Tensor>& dcseq,
                        const at::Tensor& whh, const c10::optional<at::Tensor>& wgh,
                        const c10::optional<at::Tensor>& a0, c10::optional<at::Tensor> E,
                        c10::optional<at::Tensor> dwgh, const c10::optional<at::Tensor>& p_if,
                        const c10::optional<at::Tensor>& p_o, c10::optional<at::Tensor> D,
                        const c10::optional<at::Tensor>& below, c10::optional<at::Tensor> dbelow,
                        const c10::optional<at::Tensor>& w_cd, const c10::optional<at::Tensor>& w_ld,
                        at::IntArrayRef bs, int64_t flags, int64_t chunk) {
  TORCH_CHECK(A.device().is_cpu() && A.dim() == 3, "lstm_backward_loop: A must be a CPU (T, B, GH) tensor");
  const int64_t T = A.size(0), B = A.size(1), H = C.size(2), GH = A.size(2);
  TORCH_CHECK(bs.empty() || int64_t(bs.size()) == T, "lstm_backward_loop: bs must have T entries");
  const bool ig = flags & kInputGate, fg = flags & kForgetGate, og = flags & kOutputGate;
  TORCH_CHECK(GH == (int64_t(og) + int64_t(ig) + int64_t(fg) + 1) * H && whh.size(0) == GH && whh.size(1) == H,
              "lstm_backward_loop: A (T, B, G*H) and whh (G*H, H) must match the flags and C's H");
  // the kernels walk these through raw pointers: contiguous (T, B, H) / (B, H) buffers, rows of A and D
  TORCH_CHECK(A.stride(2) == 1 && A.stride(0) == B * A.stride(1), "lstm_backward_loop: A must have contiguous rows");
  for (const at::Tensor& t : {C, DH, dc_a, dc_b}) {
    TORCH_CHECK(t.is_contiguous() && t.scalar_type() == A.scalar_type(), "lstm_backward_loop: C, DH, dc_a and dc_b "
                "must be contiguous, of A's dtype");
  }
  for (const c10::optional<at::Tensor>& t : {TC, E, below, dbelow, p_if, p_o, w_cd, w_ld}) {
    TORCH_CHECK(!t.has_value() || (t->is_contiguous() && t->scalar_type() == A.scalar_type()),
                "lstm_backward_loop: TC, E, below, dbelow and the per-unit weights must be contiguous, of A's dtype");
  }
  TORCH_CHECK(!D.has_value() || (D->stride(2) == 1 && D->stride(0) == B * D->stride(1)),
              "lstm_backward_loop: D must have contiguous rows");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, A.scalar_type(), "lstm_backward_loop", [&] {
    LstmConsts<scalar_t> k = lstm_consts<scalar_t>(H, GH, flags, p_if, p_o, w_cd, w_ld);
    lstm_backward_loop_impl<scalar_t>(A, C, TC, DH, dc_a, dc_b, dcseq, whh, wgh, a0, E, dwgh, D, below, dbelow, bs,
                                      k, chunk);
  });
}

// ---------------------------------------------------------------- nn.GRU's form (reset after the matmul)
// The step loops of ../gru.py's GRUAfterSequence (`gru`) for float and double, with the recurrent GEMM fused with
// the elementwise step like the Elman loops' (one GEMM a step, so one parallel region, or none per step when each
// thread owns its rows). Forward, W_hh^T packed as 3 blocks [r, z, n] of H units, tiles of 8 rows x 3 vectors, the
// epilogue seeing a unit's three gates (gh = h_prev W_hh^T, a: the input projection with b_ih + [b_hr, b_hz, 0]):
//   r = sigma(a_r + gh_r), z = sigma(a_z + gh_z), gh_n += b_hn, n = tanh(a_n + r gh_n), h = n + z (h_prev - n)
// A (T, B, 3H) becomes r, z, n; GN (T, B, H), when saved, receives gh_n (the backward's).
// Backward, dgh = [da_r, da_z, da_n r] of step t+1 times W_hh (3H, H), output units h's: its first 2H columns
// are A's (W_hr, W_hz packed with K = 2H), its last H are GN's (W_hn, K = H), two passes:
//   dh = DH[t] + dgh_{t+1} W_hh; dz = dh (h_prev - n); dprev += dh z; da_n = dh (1 - z) (1 - n^2);
//   da_r = da_n gh_n r (1 - r); da_z = dz z (1 - z)
// A becomes [da_r, da_z, da_n] and GN da_n r (W_hn's gradient rows); rows past their end zero in both.
template <typename T>
void gru_after_forward_impl(at::Tensor& A, const c10::optional<at::Tensor>& GN, const at::Tensor& whh_t,
                            const at::Tensor& bhn, at::Tensor& Hout, const at::Tensor& h0, at::IntArrayRef bs,
                            const T* packed_in = nullptr) {  // packed_in: W_hh^T already packed (gru_after_infer)
  constexpr int L = Vec<T>::L;
  const int64_t T_ = A.size(0), B = A.size(1), H = Hout.size(2);
  const at::Tensor packed_t = packed_in ? at::Tensor() : pack_recurrent<T>(whh_t, 3, H);
  const T* packed = packed_in ? packed_in : packed_t.data_ptr<T>();
  const int64_t npan = (H + L - 1) / L;
  std::vector<T> bn(npan * L, T(0));  // b_hn padded to whole panels
  const at::Tensor bhc = bhn.contiguous();
  std::copy(bhc.data_ptr<T>(), bhc.data_ptr<T>() + H, bn.begin());
  const at::Tensor h0c = h0.contiguous();
  T* Ap = A.data_ptr<T>();
  T* Gp = GN.has_value() ? GN->data_ptr<T>() : nullptr;
  T* Hp = Hout.data_ptr<T>();
  step_loop<T>(T_, B, H, 3 * H * H * int64_t(sizeof(T)), false, true, [&](int64_t t, int64_t j, int64_t nj) {
    const int64_t b = bs.empty() ? B : bs[t];
    T* a = Ap + t * B * 3 * H;
    T* gn = Gp ? Gp + t * B * H : nullptr;
    const T* hp = t == 0 ? h0c.data_ptr<T>() : Hp + (t - 1) * B * H;
    T* ht = Hp + t * B * H;
    auto epi = [&](int64_t r, int64_t u0, int64_t U, const T* tile) {
      T* ar = a + r * 3 * H + u0;
      T *az = ar + H, *an = ar + 2 * H;
      const T* hv = hp + r * H + u0;
      T* h = ht + r * H + u0;
      T* g = gn ? gn + r * H + u0 : nullptr;
      if constexpr (std::is_same<T, float>::value) {
        if (U == L) {
          const v16f ghn = ld16(tile + 2 * L) + ld16(bn.data() + u0);
          const v16f rv = sigmoid_v16(ld16(ar) + ld16(tile)), zv = sigmoid_v16(ld16(az) + ld16(tile + L));
          const v16f nv = tanh_v16(ld16(an) + rv * ghn), hpv = ld16(hv);
          st16(ar, rv), st16(az, zv), st16(an, nv);
          st16(h, nv + zv * (hpv - nv));
          if (g) st16(g, ghn);
          return;
        }
      }
      for (int64_t k = 0; k < U; ++k) {
        const T ghn = tile[2 * L + k] + bn[u0 + k];
        const T rv = T(0.5) + T(0.5) * std::tanh(T(0.5) * (ar[k] + tile[k]));
        const T zv = T(0.5) + T(0.5) * std::tanh(T(0.5) * (az[k] + tile[L + k]));
        const T nv = std::tanh(an[k] + rv * ghn);
        ar[k] = rv, az[k] = zv, an[k] = nv;
        h[k] = nv + zv * (hv[k] - nv);
        if (g) g[k] = ghn;
      }
    };
    step_panels<T>(H, b * L * H * 3, j, nj, [&](int64_t p0, int64_t p1, int64_t jj, int64_t nn) {
      gemv_tiles<T, 3, decltype(epi), true>(packed, H, H, hp, H, H, b, b, p0, p1, jj, nn, epi);
    });
  }, [](int64_t) {});
}

template <typename T>
void gru_after_backward_impl(at::Tensor& A, at::Tensor& GN, at::Tensor& DH, at::Tensor& dh0, const at::Tensor& Hout,
                             const at::Tensor& h0, const at::Tensor& whh, at::IntArrayRef bs) {
  const int64_t T_ = A.size(0), B = A.size(1), H = DH.size(2);
  const int NB = gemv_blocks(H);
  const int64_t Hs = H / NB;
  const at::Tensor prz_t = pack_recurrent<T>(whh.narrow(0, 0, 2 * H), NB, Hs, 0);  // (K = 2H: da_r, da_z)
  const at::Tensor pn_t = pack_recurrent<T>(whh.narrow(0, 2 * H, H), NB, Hs, 1);   // (K = H: da_n r)
  const T *prz = prz_t.data_ptr<T>(), *pn = pn_t.data_ptr<T>();
  T* Ap = A.data_ptr<T>();
  T* Gp = GN.data_ptr<T>();
  T* D = DH.data_ptr<T>();
  T* D0 = dh0.data_ptr<T>();
  const T* Hp = Hout.data_ptr<T>();
  const T* H0 = h0.data_ptr<T>();
  step_loop<T>(T_, B, H, 3 * H * H * int64_t(sizeof(T)), true, true, [&](int64_t t, int64_t j, int64_t nj) {
    const int64_t b = bs.empty() ? B : bs[t];
    const int64_t b1 = t == T_ - 1 ? 0 : (bs.empty() ? B : bs[t + 1]);
    T* a = Ap + t * B * 3 * H;
    T* gn = Gp + t * B * H;
    const int64_t t1 = t + 1 < T_ ? t + 1 : t;  // step t+1's gradients (rows below b1 only)
    const T *an = Ap + t1 * B * 3 * H, *gn1 = Gp + t1 * B * H;
    T* dt = D + t * B * H;
    T* dprev = t == 0 ? D0 : D + (t - 1) * B * H;
    const T* hp = t == 0 ? H0 : Hp + (t - 1) * B * H;
    rows_past(b, B, j, nj, [&](int64_t r) {  // no gradient
      std::fill(a + r * 3 * H, a + (r + 1) * 3 * H, T(0));
      std::fill(gn + r * H, gn + (r + 1) * H, T(0));
    });
    auto add_n = [&](int64_t r, int64_t o0, int64_t U, const T* tile) {  // dh += (da_n r)_{t+1} W_hn
      T* d = dt + r * H + o0;
      for (int64_t k = 0; k < U; ++k) d[k] += tile[k];
    };
    auto epi = [&](int64_t r, int64_t o0, int64_t U, const T* tile) {  // + [da_r, da_z]_{t+1} [W_hr; W_hz]
      T* ar = a + r * 3 * H + o0;
      T *az = ar + H, *an_ = ar + 2 * H;
      T* g = gn + r * H + o0;
      const T* d = dt + r * H + o0;
      const T* hv = hp + r * H + o0;
      T* dp = dprev + r * H + o0;
      for (int64_t k = 0; k < U; ++k) {
        const T dv = tile ? d[k] + tile[k] : d[k], rv = ar[k], zv = az[k], nv = an_[k], ghn = g[k];
        const T dz = dv * (hv[k] - nv);
        dp[k] += dv * zv;
        const T dan = dv * (T(1) - zv) * (T(1) - nv * nv);
        ar[k] = dan * ghn * rv * (T(1) - rv), az[k] = dz * zv * (T(1) - zv), an_[k] = dan;
        g[k] = dan * rv;
      }
    };
    step_panels<T>(Hs, b * Vec<T>::L * 3 * H * NB, j, nj, [&](int64_t p0, int64_t p1, int64_t jj, int64_t nn) {
      const int64_t K = b1 ? 2 * H : 0;
      if (NB == 4) {
        if (b1) gemv_tiles<T, 4>(pn, H, Hs, gn1, H, H, b1, b1, p0, p1, jj, nn, add_n);
        gemv_tiles<T, 4>(prz, 2 * H, Hs, an, 3 * H, K, b, b1, p0, p1, jj, nn, epi);
      } else {
        if (b1) gemv_tiles<T, 1>(pn, H, Hs, gn1, H, H, b1, b1, p0, p1, jj, nn, add_n);
        gemv_tiles<T, 1>(prz, 2 * H, Hs, an, 3 * H, K, b, b1, p0, p1, jj, nn, epi);
      }
    });
  }, [](int64_t) {});
}

void check_gru_after(const at::Tensor& A, const at::Tensor& W, int64_t H, const char* what) {
  TORCH_CHECK(A.device().is_cpu() && A.dim() == 3 && A.is_contiguous() && A.size(2) == 3 * H, what,
              ": A must be a contiguous CPU (T, B, 3H) tensor");
  TORCH_CHECK(A.scalar_type() == at::kFloat || A.scalar_type() == at::kDouble, what, ": float32 or float64 only");
  TORCH_CHECK(W.scalar_type() == A.scalar_type() && W.numel() == 3 * H * H, what, ": W_hh (3H, H) in A's dtype");
}

void gru_after_forward_loop(at::Tensor A, const c10::optional<at::Tensor>& GN, const at::Tensor& whh_t,
                            const at::Tensor& bhn, at::Tensor Hout, const at::Tensor& h0, at::IntArrayRef bs) {
  const int64_t H = Hout.size(2);
  check_gru_after(A, whh_t, H, "gru_after_forward_loop");
  TORCH_CHECK(Hout.is_contiguous() && (!GN.has_value() || (GN->is_contiguous() && GN->sizes() == Hout.sizes() &&
              GN->scalar_type() == A.scalar_type())), "gru_after_forward_loop: contiguous Hout and GN (T, B, H)");
  TORCH_CHECK(bs.empty() || int64_t(bs.size()) == A.size(0), "gru_after_forward_loop: bs must have T entries");
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "gru_after_forward_loop",
                             [&] { gru_after_forward_impl<scalar_t>(A, GN, whh_t, bhn, Hout, h0, bs); });
}

void gru_after_backward_loop(at::Tensor A, at::Tensor GN, at::Tensor DH, at::Tensor dh0, const at::Tensor& Hout,
                             const at::Tensor& h0, const at::Tensor& whh, at::IntArrayRef bs) {
  const int64_t H = DH.size(2);
  check_gru_after(A, whh, H, "gru_after_backward_loop");
  for (const at::Tensor& t : {GN, DH, dh0, Hout, h0})
    TORCH_CHECK(t.is_contiguous() && t.scalar_type() == A.scalar_type(), "gru_after_backward_loop: GN, DH, dh0, "
                "Hout and h0 contiguous, of A's dtype");
  TORCH_CHECK(GN.sizes() == DH.sizes() && DH.size(0) == A.size(0) && DH.size(1) == A.size(1) &&
              dh0.size(0) == A.size(1), "gru_after_backward_loop: A (T, B, 3H), GN and DH (T, B, H), dh0 (B, H)");
  TORCH_CHECK(bs.empty() || int64_t(bs.size()) == A.size(0), "gru_after_backward_loop: bs must have T entries");
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "gru_after_backward_loop",
                             [&] { gru_after_backward_impl<scalar_t>(A, GN, DH, dh0, Hout, h0, whh, bs); });
}

// ---------------------------------------------------------------- GRU family, reset before the matmul
// The forward loop of ../gru.py's gru_before_forward (gru_cho, MUT1-3), step for step:
//   a[:, :k1] += h_prev W1^T                 (r, and z when it reads h)
//   MUT3: th = tanh(h_prev); a_z += th Wz^T
//   r, z = sigma(a_r), sigma(a_z); rh = r * h_prev
//   a_n += rh Wn^T; n = tanh(a_n)
//   h = n + z (h_prev - n)  (keep_z: GRU)   or   h = h_prev + z (n - h_prev)  (MUT)
// A (T, B, 3H) [r, z, n] with every bias folded in; its rows become r, z, n in place.
template <typename scalar_t>
void gru_gates_impl(at::Tensor& a, const at::Tensor& hp, at::Tensor& rh) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t b = a.size(0), H = hp.size(1);
  scalar_t* A = a.data_ptr<scalar_t>();
  const scalar_t* HP = hp.data_ptr<scalar_t>();
  scalar_t* RH = rh.data_ptr<scalar_t>();
  const int64_t sa = a.stride(0), shp = hp.stride(0), srh = rh.stride(0);
  for_rows<acc_t>(b, 3 * H, 3 * H, [&](int64_t r, acc_t* X) {
    acc_t* h = X + 2 * H;
    load(X, A + r * sa, 2 * H);
    load(h, HP + r * shp, H);
    sigmoid_(X, 2 * H);
    store(A + r * sa, X, 2 * H);
    for (int64_t j = 0; j < H; ++j) h[j] *= X[j];
    store(RH + r * srh, h, H);
  });
}

template <typename scalar_t>
void tanh_into_impl(const at::Tensor& x, at::Tensor& out) {  // out = tanh(x), rows of (b, H)
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t b = x.size(0), H = x.size(1);
  const scalar_t* X = x.data_ptr<scalar_t>();
  scalar_t* O = out.data_ptr<scalar_t>();
  const int64_t sx = x.stride(0), so = out.stride(0);
  for_rows<acc_t>(b, H, H, [&](int64_t r, acc_t* buf) {
    load(buf, X + r * sx, H);
    tanh_(buf, H);
    store(O + r * so, buf, H);
  });
}

template <typename scalar_t>
void gru_out_impl(at::Tensor& a, const at::Tensor& hp, at::Tensor& h, bool keep_z) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t b = a.size(0), H = hp.size(1);
  scalar_t* A = a.data_ptr<scalar_t>();
  const scalar_t* HP = hp.data_ptr<scalar_t>();
  scalar_t* HO = h.data_ptr<scalar_t>();
  const int64_t sa = a.stride(0), shp = hp.stride(0), sh = h.stride(0);
  for_rows<acc_t>(b, 2 * H, 4 * H, [&](int64_t r, acc_t* z) {
    acc_t *n = z + H, *hv = n + H, *out = hv + H;
    scalar_t* ar = A + r * sa;
    load(z, ar + H, H);
    load(n, ar + 2 * H, H);
    load(hv, HP + r * shp, H);
    tanh_(n, H);
    if (keep_z) {
      for (int64_t j = 0; j < H; ++j) out[j] = n[j] + z[j] * (hv[j] - n[j]);
    } else {
      for (int64_t j = 0; j < H; ++j) out[j] = hv[j] + z[j] * (n[j] - hv[j]);
    }
    store(ar + 2 * H, n, H);
    store(HO + r * sh, out, H);
  });
}

// x = sigma(x) for U values (a full vector of floats in registers, else sigmoid_)
template <typename T>
inline void sigmoid_units(T* x, int64_t U) {
  if constexpr (std::is_same<T, float>::value) {
    if (U == Vec<T>::L) return st16(x, sigmoid_v16(ld16(x)));
  }
  sigmoid_(x, U);
}

// x = sigma(x + tile) for U values (a full vector of floats in registers, without a pass through memory)
template <typename T>
inline void sigmoid_add(T* x, const T* tile, int64_t U) {
  if constexpr (std::is_same<T, float>::value) {
    if (U == Vec<T>::L) return st16(x, sigmoid_v16(ld16(x) + ld16(tile)));
  }
  for (int64_t k = 0; k < U; ++k) x[k] += tile[k];
  sigmoid_(x, U);
}

// Runs f(r) for the rows j, j + nj, ... below b (nj == 0: all rows below b, in parallel: for_rows)
template <typename T, typename F>
void each_row(int64_t b, int64_t width, int64_t j, int64_t nj, const F& f) {
  if (nj == 0) return for_rows<T>(b, width, 0, [&](int64_t r, T*) { f(r); });
  for (int64_t r = j; r < b; r += nj) f(r);
}

// W1^T, Wz^T (MUT3; else undefined) and Wn^T packed for gru_before_forward_fused (workspace slots 0, 2, 1)
template <typename T>
std::vector<at::Tensor> gru_before_pack(const at::Tensor& w1_t, const c10::optional<at::Tensor>& wz_t,
                                        const at::Tensor& wn_t) {
  const int64_t H = wn_t.size(0), k1 = w1_t.size(1);
  const int N1 = gemv_blocks(k1), NN = gemv_blocks(H);
  return {pack_recurrent<T>(w1_t, N1, k1 / N1, 0), wz_t.has_value() ? pack_recurrent<T>(*wz_t, NN, H / NN, 2)
                                                                    : at::Tensor(),
          pack_recurrent<T>(wn_t, NN, H / NN, 1)};
}

// float and double: the recurrent GEMMs fused with the elementwise step (W1, Wz, Wn packed per call, as the
// Elman loops': gemv_tiles, 4 blocks of tiles of 6 rows where 4 divides the GEMM's output width, else 1 of 12).
// A step is two dependent phases: r (and z) from h_prev, then n from r * h_prev, which reads all of a row's r;
// a thread owning its rows (step_loop's row-owned form) runs both without waiting for the others, else each
// phase is a parallel region over panels (the end of the first is the barrier the second needs).
// MUT1's z reads nothing recurrent: its sigmoid runs in the second phase, where z is used.
template <typename T>
void gru_before_forward_fused(at::Tensor& A, const at::Tensor& w1_t, const c10::optional<at::Tensor>& wz_t,
                              const at::Tensor& wn_t, at::Tensor& RH, bool save, const c10::optional<at::Tensor>& TH,
                              at::Tensor& Hout, const at::Tensor& h0, at::IntArrayRef bs, bool keep_z,
                              const std::vector<at::Tensor>* packs = nullptr) {  // gru_before_pack's, or packed here
  const int64_t T_ = A.size(0), B = A.size(1), H = Hout.size(2), k1 = w1_t.size(1);
  const int64_t sA = A.stride(0), sa = A.stride(1);
  const bool mut3 = wz_t.has_value(), z_plain = k1 == H && !mut3;  // z_plain: MUT1
  const int N1 = gemv_blocks(k1), NN = gemv_blocks(H);
  const int64_t H1 = k1 / N1, Hn = H / NN;
  const std::vector<at::Tensor> own = packs ? std::vector<at::Tensor>() : gru_before_pack<T>(w1_t, wz_t, wn_t);
  const std::vector<at::Tensor>& pk = packs ? *packs : own;
  const T *p1 = pk[0].data_ptr<T>(), *pn = pk[2].data_ptr<T>(), *pz = mut3 ? pk[1].data_ptr<T>() : nullptr;
  const at::Tensor h0c = h0.contiguous();
  T* Ap = A.data_ptr<T>();
  T* Hp = Hout.data_ptr<T>();
  T* RHp = RH.data_ptr<T>();
  T* THp = mut3 ? TH->data_ptr<T>() : nullptr;
  const int64_t w_bytes = (k1 + H * (mut3 ? 2 : 1)) * H * int64_t(sizeof(T));
  step_loop<T>(T_, B, H, w_bytes, false, sa == 3 * H, [&](int64_t t, int64_t j, int64_t nj) {
    const int64_t b = bs.empty() ? B : bs[t];
    T* a = Ap + t * sA;
    const T* hp = t == 0 ? h0c.data_ptr<T>() : Hp + (t - 1) * B * H;
    T* rh = RHp + (save ? t * B * H : 0);
    T* th = mut3 ? THp + (save ? t * B * H : 0) : nullptr;
    T* ht = Hp + t * B * H;
    if (mut3)  // z reads tanh(h_prev)
      each_row<T>(b, H, j, nj, [&](int64_t r) {
        for (int64_t k = 0; k < H; ++k) th[r * H + k] = std::tanh(hp[r * H + k]);
      });
    // phase 1: r (and z) = sigma(a + h_prev W1^T (+ th Wz^T)); rh = r * h_prev
    auto epi1 = [&](int64_t r, int64_t o0, int64_t U, const T* tile) {
      T* x = a + r * sa + o0;  // output o of W1 is column o of A's [r, z] blocks
      sigmoid_add(x, tile, U);
      const int64_t ur = std::max<int64_t>(0, std::min(U, H - o0));  // of which r units
      for (int64_t k = 0; k < ur; ++k) rh[r * H + o0 + k] = x[k] * hp[r * H + o0 + k];
    };
    auto epiz = [&](int64_t r, int64_t o0, int64_t U, const T* tile) { sigmoid_add(a + r * sa + H + o0, tile, U); };
    step_panels<T>(H1, b * Vec<T>::L * H * N1 * (mut3 ? 2 : 1), j, nj, [&](int64_t q0, int64_t q1, int64_t jj,
                                                                          int64_t nn) {
      if (N1 == 4) gemv_tiles<T, 4>(p1, H, H1, hp, H, H, b, b, q0, q1, jj, nn, epi1);
      else gemv_tiles<T, 1>(p1, H, H1, hp, H, H, b, b, q0, q1, jj, nn, epi1);
      if (!mut3) return;  // (MUT3: k1 == H, W1 and Wz blocked alike, N1 == NN)
      if (NN == 4) gemv_tiles<T, 4>(pz, H, Hn, th, H, H, b, b, q0, q1, jj, nn, epiz);
      else gemv_tiles<T, 1>(pz, H, Hn, th, H, H, b, b, q0, q1, jj, nn, epiz);
    });
    // phase 2: n = tanh(a_n + rh Wn^T); h = n + z (h_prev - n) (GRU) or h_prev + z (n - h_prev) (MUT)
    auto epi2 = [&](int64_t r, int64_t o0, int64_t U, const T* tile) {
      T* n = a + r * sa + 2 * H + o0;
      T* z = a + r * sa + H + o0;
      const T* hv = hp + r * H + o0;
      T* h = ht + r * H + o0;
      if (z_plain) sigmoid_units(z, U);
      if constexpr (std::is_same<T, float>::value) {
        if (U == Vec<T>::L) {
          const v16f nv = tanh_v16(ld16(n) + ld16(tile)), zv = ld16(z), hpv = ld16(hv);
          st16(n, nv);
          st16(h, keep_z ? nv + zv * (hpv - nv) : hpv + zv * (nv - hpv));
          return;
        }
      }
      for (int64_t k = 0; k < U; ++k) {
        const T nv = std::tanh(n[k] + tile[k]);
        n[k] = nv;
        h[k] = keep_z ? nv + z[k] * (hv[k] - nv) : hv[k] + z[k] * (nv - hv[k]);
      }
    };
    step_panels<T>(Hn, b * Vec<T>::L * H * NN, j, nj, [&](int64_t q0, int64_t q1, int64_t jj, int64_t nn) {
      if (NN == 4) gemv_tiles<T, 4>(pn, H, Hn, rh, H, H, b, b, q0, q1, jj, nn, epi2);
      else gemv_tiles<T, 1>(pn, H, Hn, rh, H, H, b, b, q0, q1, jj, nn, epi2);
    });
  }, [](int64_t) {});
}

void gru_before_forward_loop(at::Tensor A, const at::Tensor& w1_t, const c10::optional<at::Tensor>& wz_t,
                             const at::Tensor& wn_t, at::Tensor RH, bool save, const c10::optional<at::Tensor>& TH,
                             at::Tensor Hout, const at::Tensor& h0, at::IntArrayRef bs, bool keep_z) {
  TORCH_CHECK(A.device().is_cpu() && A.dim() == 3 && A.stride(2) == 1, "gru_before_forward_loop: A must be a CPU "
              "(T, B, 3H) tensor with contiguous rows");
  const int64_t T = A.size(0), B = A.size(1), H = Hout.size(2), k1 = w1_t.size(1);
  TORCH_CHECK(bs.empty() || int64_t(bs.size()) == T, "gru_before_forward_loop: bs must have T entries");
  if ((A.scalar_type() == at::kFloat || A.scalar_type() == at::kDouble) && A.stride(0) == B * A.stride(1) &&
      Hout.is_contiguous() && RH.is_contiguous() && (!TH.has_value() || TH->is_contiguous())) {
    for (const at::Tensor& w : {w1_t, wn_t, h0})
      TORCH_CHECK(w.scalar_type() == A.scalar_type(), "gru_before_forward_loop: weights and h0 in A's dtype");
    AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "gru_before_forward_fused", [&] {
      gru_before_forward_fused<scalar_t>(A, w1_t, wz_t, wn_t, RH, save, TH, Hout, h0, bs, keep_z);
    });
    return;
  }
  at::Tensor h_prev = h0;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t b = bs.empty() ? B : bs[t];
    at::Tensor a = A.select(0, t).narrow(0, 0, b);  // (b, 3H)
    at::Tensor hp = h_prev.narrow(0, 0, b);
    a.narrow(1, 0, k1).addmm_(hp, w1_t);
    if (wz_t.has_value()) {  // MUT3: z reads tanh(h_prev)
      at::Tensor th = (save ? TH->select(0, t) : *TH).narrow(0, 0, b);
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.scalar_type(), "tanh_into",
                                      [&] { tanh_into_impl<scalar_t>(hp, th); });
      a.narrow(1, H, H).addmm_(th, *wz_t);
    }
    at::Tensor rh = (save ? RH.select(0, t) : RH).narrow(0, 0, b);
    at::Tensor h = Hout.select(0, t).narrow(0, 0, b);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.scalar_type(), "gru_gates",
                                    [&] { gru_gates_impl<scalar_t>(a, hp, rh); });
    a.narrow(1, 2 * H, H).addmm_(rh, wn_t);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.scalar_type(), "gru_out",
                                    [&] { gru_out_impl<scalar_t>(a, hp, h, keep_z); });
    h_prev = Hout.select(0, t);
  }
}

// The backward step loop of ../gru.py's GRUBeforeSequence (gru_cho, MUT1-3), step for step:
//   dh_t = DH[t] + da_{t+1}[:, :k1] W1  (+ MUT3: (da_z,{t+1} Wz) (1 - th_{t+1}^2), z reading tanh(h_t))
//   GRU (h = n + z (h_prev - n)): dz = dh (h_prev - n), dprev += dh z,       dn = dh (1 - z)
//   MUT (h = h_prev + z (n - h_prev)): dz = dh (n - h_prev), dprev += dh (1 - z), dn = dh z
//   da_n = dn (1 - n^2), da_z = dz z (1 - z);  drh = da_n Wn;  dprev += drh r;  da_r = drh h_prev r (1 - r)
// A (T, B, 3H) [r, z, n]: activations in, pre-activation gradients out. DH (T, B, H): dh of every step,
// overwritten (DH[t-1] receives dprev); dh0 (B, H) receives step 0's dprev (the caller adds step 0's GEMM
// terms). Per step: the GEMMs through ATen, two elementwise passes per row (instead of ~15 torch ops).
template <typename scalar_t>
void gru_before_backward_impl(at::Tensor& A, at::Tensor& DH, at::Tensor& dh0, const at::Tensor& Hout,
                              const at::Tensor& h0, const at::Tensor& w1, const c10::optional<at::Tensor>& wz,
                              const c10::optional<at::Tensor>& TH, const at::Tensor& wn, at::IntArrayRef bs,
                              bool keep_z) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t T = A.size(0), B = A.size(1), H = DH.size(2), k1 = w1.size(0);
  const int64_t sA = A.stride(0), sa = A.stride(1);
  at::Tensor G = at::empty({B, H}, A.options());  // da_z Wz (MUT3), then drh
  scalar_t* Ap = A.data_ptr<scalar_t>();
  scalar_t* DHp = DH.data_ptr<scalar_t>();
  scalar_t* D0 = dh0.data_ptr<scalar_t>();
  const scalar_t* Hp = Hout.data_ptr<scalar_t>();
  const scalar_t* H0 = h0.data_ptr<scalar_t>();
  const scalar_t* THp = TH.has_value() ? TH->data_ptr<scalar_t>() : nullptr;
  scalar_t* Gp = G.data_ptr<scalar_t>();
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t b = bs.empty() ? B : bs[t];
    const int64_t b1 = t == T - 1 ? 0 : (bs.empty() ? B : bs[t + 1]);
    if (b < B) A.select(0, t).narrow(0, b, B - b).zero_();  // rows past their end: no gradient
    at::Tensor dh = DH.select(0, t).narrow(0, 0, b);
    if (b1) {
      at::Tensor an = A.select(0, t + 1).narrow(0, 0, b1);
      dh.narrow(0, 0, b1).addmm_(an.narrow(1, 0, k1), w1);
      if (wz.has_value()) {  // z_{t+1} reads tanh(h_t)
        at::Tensor g = G.narrow(0, 0, b1);
        at::mm_out(g, an.narrow(1, H, H), *wz);
        const scalar_t* th = THp + (t + 1) * B * H;
        scalar_t* d = DHp + t * B * H;
        for_rows<acc_t>(b1, H, 0, [&](int64_t r, acc_t*) {
          for (int64_t j = 0; j < H; ++j) {
            const acc_t x = acc_t(th[r * H + j]);
            d[r * H + j] = scalar_t(acc_t(d[r * H + j]) + acc_t(Gp[r * H + j]) * (acc_t(1) - x * x));
          }
        });
      }
    }
    scalar_t* at_ = Ap + t * sA;
    scalar_t* dht = DHp + t * B * H;
    scalar_t* dprev = t == 0 ? D0 : DHp + (t - 1) * B * H;
    const scalar_t* hp = t == 0 ? H0 : Hp + (t - 1) * B * H;
    for_rows<acc_t>(b, 3 * H, 0, [&](int64_t r, acc_t*) {  // z and n: da_z, da_n; dprev's direct path
      scalar_t* z = at_ + r * sa + H;
      scalar_t* n = z + H;
      const scalar_t* d = dht + r * H;
      const scalar_t* hr = hp + r * H;
      scalar_t* dp = dprev + r * H;
      for (int64_t j = 0; j < H; ++j) {
        const acc_t dv = acc_t(d[j]), zv = acc_t(z[j]), nv = acc_t(n[j]), hv = acc_t(hr[j]);
        acc_t dz, dn;
        if (keep_z) {
          dz = dv * (hv - nv);
          dp[j] = scalar_t(acc_t(dp[j]) + dv * zv);
          dn = dv * (acc_t(1) - zv);
        } else {
          dz = dv * (nv - hv);
          dp[j] = scalar_t(acc_t(dp[j]) + dv * (acc_t(1) - zv));
          dn = dv * zv;
        }
        n[j] = scalar_t(dn * (acc_t(1) - nv * nv));
        z[j] = scalar_t(dz * zv * (acc_t(1) - zv));
      }
    });
    at::Tensor drh = G.narrow(0, 0, b);
    at::mm_out(drh, A.select(0, t).narrow(0, 0, b).narrow(1, 2 * H, H), wn);
    for_rows<acc_t>(b, 2 * H, 0, [&](int64_t r, acc_t*) {  // r: da_r; dprev through r * h_prev
      scalar_t* rr = at_ + r * sa;
      const scalar_t* g = Gp + r * H;
      const scalar_t* hr = hp + r * H;
      scalar_t* dp = dprev + r * H;
      for (int64_t j = 0; j < H; ++j) {
        const acc_t rv = acc_t(rr[j]), gv = acc_t(g[j]);
        dp[j] = scalar_t(acc_t(dp[j]) + gv * rv);
        rr[j] = scalar_t(gv * acc_t(hr[j]) * rv * (acc_t(1) - rv));
      }
    });
  }
}

// float and double: the same loop with the GEMMs fused with the elementwise parts (as the forward above; W1, Wz,
// Wn packed as the "transposed" operands, whose output units are h's). Phase 1: dh_t's GEMM terms, then da_z, da_n
// and dprev's direct path; phase 2 (reads all of a row's da_n): drh = da_n Wn, dprev += drh r, da_r.
template <typename T>
void gru_before_backward_fused(at::Tensor& A, at::Tensor& DH, at::Tensor& dh0, const at::Tensor& Hout,
                               const at::Tensor& h0, const at::Tensor& w1, const c10::optional<at::Tensor>& wz,
                               const c10::optional<at::Tensor>& TH, const at::Tensor& wn, at::IntArrayRef bs,
                               bool keep_z) {
  const int64_t T_ = A.size(0), B = A.size(1), H = DH.size(2), k1 = w1.size(0);
  const int64_t sA = A.stride(0), sa = A.stride(1);
  const bool mut3 = wz.has_value();
  const int NN = gemv_blocks(H);
  const int64_t Hn = H / NN;
  const at::Tensor p1_t = pack_recurrent<T>(w1, NN, Hn, 0);
  const at::Tensor pn_t = pack_recurrent<T>(wn, NN, Hn, 1);
  const at::Tensor pz_t = mut3 ? pack_recurrent<T>(*wz, NN, Hn, 2) : at::Tensor();
  const T *p1 = p1_t.data_ptr<T>(), *pn = pn_t.data_ptr<T>(), *pz = mut3 ? pz_t.data_ptr<T>() : nullptr;
  T* Ap = A.data_ptr<T>();
  T* D = DH.data_ptr<T>();
  T* D0 = dh0.data_ptr<T>();
  const T* Hp = Hout.data_ptr<T>();
  const T* H0 = h0.data_ptr<T>();
  const T* THp = mut3 ? TH->data_ptr<T>() : nullptr;
  const int64_t w_bytes = (k1 + H * (mut3 ? 2 : 1)) * H * int64_t(sizeof(T));
  step_loop<T>(T_, B, H, w_bytes, true, sa == 3 * H, [&](int64_t t, int64_t j, int64_t nj) {
    const int64_t b = bs.empty() ? B : bs[t];
    const int64_t b1 = t == T_ - 1 ? 0 : (bs.empty() ? B : bs[t + 1]);
    T* a = Ap + t * sA;
    const T* an = Ap + (t + 1 < T_ ? t + 1 : t) * sA;  // step t+1's pre-activation gradients
    T* dt = D + t * B * H;
    T* dprev = t == 0 ? D0 : D + (t - 1) * B * H;
    const T* hp = t == 0 ? H0 : Hp + (t - 1) * B * H;
    const T* th1 = mut3 ? THp + (t + 1 < T_ ? t + 1 : t) * B * H : nullptr;
    rows_past(b, B, j, nj, [&](int64_t r) { std::fill(a + r * sa, a + r * sa + 3 * H, T(0)); });  // no gradient
    // MUT3: z_{t+1} reads tanh(h_t): dh_t += (da_z W_z) (1 - th_{t+1}^2)
    auto epiz = [&](int64_t r, int64_t o0, int64_t U, const T* tile) {
      if (!tile) return;
      T* d = dt + r * H + o0;
      const T* x = th1 + r * H + o0;
      for (int64_t k = 0; k < U; ++k) d[k] += tile[k] * (T(1) - x[k] * x[k]);
    };
    // dh_t = DH[t] + da_{t+1}[:k1] W1 (+ the above); dz, dn and dprev's direct path; da_z, da_n into A
    auto epi1 = [&](int64_t r, int64_t o0, int64_t U, const T* tile) {
      const T* d = dt + r * H + o0;
      T* z = a + r * sa + H + o0;
      T* n = z + H;
      const T* hv = hp + r * H + o0;
      T* dp = dprev + r * H + o0;
      for (int64_t k = 0; k < U; ++k) {
        const T dv = tile ? d[k] + tile[k] : d[k], zv = z[k], nv = n[k], h = hv[k];
        T dz, dn;
        if (keep_z) {
          dz = dv * (h - nv);
          dp[k] += dv * zv;
          dn = dv * (T(1) - zv);
        } else {
          dz = dv * (nv - h);
          dp[k] += dv * (T(1) - zv);
          dn = dv * zv;
        }
        n[k] = dn * (T(1) - nv * nv);
        z[k] = dz * zv * (T(1) - zv);
      }
    };
    step_panels<T>(Hn, b * Vec<T>::L * (k1 + (mut3 ? H : 0)) * NN, j, nj, [&](int64_t q0, int64_t q1, int64_t jj,
                                                                              int64_t nn) {
      const int64_t K1 = b1 ? k1 : 0;
      if (NN == 4) {
        if (mut3 && b1) gemv_tiles<T, 4>(pz, H, Hn, an + H, sa, H, b1, b1, q0, q1, jj, nn, epiz);
        gemv_tiles<T, 4>(p1, k1, Hn, an, sa, K1, b, b1, q0, q1, jj, nn, epi1);
      } else {
        if (mut3 && b1) gemv_tiles<T, 1>(pz, H, Hn, an + H, sa, H, b1, b1, q0, q1, jj, nn, epiz);
        gemv_tiles<T, 1>(p1, k1, Hn, an, sa, K1, b, b1, q0, q1, jj, nn, epi1);
      }
    });
    // drh = da_n Wn; dprev += drh r; da_r = drh h_prev r (1 - r)
    auto epi2 = [&](int64_t r, int64_t o0, int64_t U, const T* tile) {
      T* rr = a + r * sa + o0;
      const T* hv = hp + r * H + o0;
      T* dp = dprev + r * H + o0;
      for (int64_t k = 0; k < U; ++k) {
        const T g = tile[k], rv = rr[k];
        dp[k] += g * rv;
        rr[k] = g * hv[k] * rv * (T(1) - rv);
      }
    };
    step_panels<T>(Hn, b * Vec<T>::L * H * NN, j, nj, [&](int64_t q0, int64_t q1, int64_t jj, int64_t nn) {
      if (NN == 4) gemv_tiles<T, 4>(pn, H, Hn, a + 2 * H, sa, H, b, b, q0, q1, jj, nn, epi2);
      else gemv_tiles<T, 1>(pn, H, Hn, a + 2 * H, sa, H, b, b, q0, q1, jj, nn, epi2);
    });
  }, [](int64_t) {});
}

void gru_before_backward_loop(at::Tensor A, at::Tensor DH, at::Tensor dh0, const at::Tensor& Hout, const at::Tensor& h0,
                              const at::Tensor& w1, const c10::optional<at::Tensor>& wz,
                              const c10::optional<at::Tensor>& TH, const at::Tensor& wn, at::IntArrayRef bs,
                              bool keep_z) {
  TORCH_CHECK(A.device().is_cpu() && A.dim() == 3 && A.stride(2) == 1 && A.stride(0) == A.size(1) * A.stride(1),
              "gru_before_backward_loop: A must be a CPU (T, B, 3H) tensor with contiguous rows");
  const int64_t T = A.size(0), B = A.size(1);
  TORCH_CHECK(bs.empty() || int64_t(bs.size()) == T, "gru_before_backward_loop: bs must have T entries");
  for (const at::Tensor& t : {DH, dh0, Hout, h0}) {
    TORCH_CHECK(t.is_contiguous() && t.scalar_type() == A.scalar_type(), "gru_before_backward_loop: DH, dh0, Hout "
                "and h0 must be contiguous, of A's dtype");
  }
  TORCH_CHECK(DH.size(0) == T && DH.size(1) == B && A.size(2) == 3 * DH.size(2) && h0.size(0) == B,
              "gru_before_backward_loop: A (T, B, 3H), DH and Hout (T, B, H), h0 and dh0 (B, H)");
  TORCH_CHECK(wz.has_value() == TH.has_value() && (!TH.has_value() || TH->is_contiguous()),
              "gru_before_backward_loop: MUT3 needs wz and a contiguous TH");
  if (A.scalar_type() == at::kFloat || A.scalar_type() == at::kDouble) {
    for (const at::Tensor& w : {w1, wn})
      TORCH_CHECK(w.scalar_type() == A.scalar_type(), "gru_before_backward_loop: weights in A's dtype");
    AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "gru_before_backward_fused", [&] {
      gru_before_backward_fused<scalar_t>(A, DH, dh0, Hout, h0, w1, wz, TH, wn, bs, keep_z);
    });
    return;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, A.scalar_type(), "gru_before_backward_loop", [&] {
    gru_before_backward_impl<scalar_t>(A, DH, dh0, Hout, h0, w1, wz, TH, wn, bs, keep_z);
  });
}

// h_T of a call: each row's output at its last step (bs as for lstm_infer; empty: step T - 1)
inline at::Tensor last_outputs(const at::Tensor& Hout, at::IntArrayRef bs) {
  if (bs.empty()) return Hout.select(0, Hout.size(0) - 1).clone();
  std::vector<int64_t> last = row_lengths(bs, Hout.size(1));
  for (int64_t& l : last) l -= 1;
  return rows_at(Hout, last);
}

// A whole inference call of one GRU-family layer-direction (float, double) in one op, as ../driver.py's _run_gru
// with ../gru.py's kernels does it: the input projection in chunks of tc steps into one reused buffer, the
// recurrent weights packed once, the loop, h_T at each row's end (bs as for lstm_infer). Returns [out, h_T].
// nn.GRU's form (`gru`): the cell's own weights and biases (b_ih + [b_hr, b_hz, 0] on the projection, b_hn in
// the loop).
std::vector<at::Tensor> gru_after_infer(const at::Tensor& x, const at::Tensor& wih, const at::Tensor& bias_ih,
                                        const at::Tensor& bias_hh, const at::Tensor& whh, const at::Tensor& h0,
                                        int64_t tc, at::IntArrayRef bs) {
  TORCH_CHECK(x.dim() == 3 && x.device().is_cpu() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble),
              "gru_after_infer: a (T, B, I) float32/float64 CPU input");
  for (const at::Tensor& t : {wih, bias_ih, bias_hh, whh, h0})
    TORCH_CHECK(t.scalar_type() == x.scalar_type(), "gru_after_infer: weights and state in the input's dtype");
  const int64_t T = x.size(0), B = x.size(1), H = whh.size(1);
  TORCH_CHECK(whh.size(0) == 3 * H && wih.size(0) == 3 * H && bias_ih.numel() == 3 * H && bias_hh.numel() == 3 * H,
              "gru_after_infer: W_ih (3H, I), W_hh (3H, H), biases (3H)");
  TORCH_CHECK(bs.empty() || int64_t(bs.size()) == T, "gru_after_infer: bs must have T entries");
  const at::Tensor bias = bias_ih + at::cat({bias_hh.narrow(0, 0, 2 * H), at::zeros({H}, x.options())});
  const at::Tensor bhn = bias_hh.narrow(0, 2 * H, H).contiguous(), whh_t = whh.t(), wih_t = wih.t();
  const at::Tensor x2 = x.contiguous().view({T * B, x.size(2)});
  const int64_t tcc = std::max<int64_t>(1, std::min(tc, T));
  at::Tensor buf = at::empty({tcc * B, 3 * H}, x.options());
  at::Tensor Hout = bs.empty() ? at::empty({T, B, H}, x.options()) : at::zeros({T, B, H}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gru_after_infer", [&] {
    const at::Tensor packed = pack_recurrent<scalar_t>(whh_t, 3, H);
    for (int64_t t0 = 0; t0 < T; t0 += tcc) {
      const int64_t n = std::min(tcc, T - t0);
      at::Tensor P = buf.narrow(0, 0, n * B);
      at::addmm_out(P, bias, x2.narrow(0, t0 * B, n * B), wih_t);
      at::Tensor A = P.view({n, B, 3 * H}), out = Hout.narrow(0, t0, n);
      const at::Tensor hp = t0 == 0 ? h0 : Hout.select(0, t0 - 1);
      gru_after_forward_impl<scalar_t>(A, c10::nullopt, whh_t, bhn, out, hp, bs.empty() ? bs : bs.slice(t0, n),
                                       packed.data_ptr<scalar_t>());
    }
  });
  return {Hout, last_outputs(Hout, bs)};
}

// The reset-before family (gru_cho, MUT1-3): the projection of ../gru.py's GRUBeforeProjection (wp, bp: the blocks
// linear in x in [r, z, n] order, every bias folded in; ident: the block x feeds itself, 0 (r, MUT2) or 2 (n,
// MUT1), -1 none; projected: that block is a projection of x, among wp's rows; tanh_ident: MUT1's tanh on it,
// then post, b_hh of that block) and gru_before_forward_fused's loop (w1, wz (MUT3), wn as there, untransposed).
std::vector<at::Tensor> gru_before_infer(const at::Tensor& x, const at::Tensor& wp, const at::Tensor& bp,
                                         int64_t ident, bool projected, bool tanh_ident,
                                         const c10::optional<at::Tensor>& post, const at::Tensor& w1,
                                         const c10::optional<at::Tensor>& wz, const at::Tensor& wn,
                                         const at::Tensor& h0, int64_t tc, at::IntArrayRef bs, bool keep_z) {
  TORCH_CHECK(x.dim() == 3 && x.device().is_cpu() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble),
              "gru_before_infer: a (T, B, I) float32/float64 CPU input");
  for (const at::Tensor& t : {wp, bp, w1, wn, h0})
    TORCH_CHECK(t.scalar_type() == x.scalar_type(), "gru_before_infer: weights and state in the input's dtype");
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = wn.size(0);
  const bool lin_all = ident < 0 || projected;  // every block comes out of the GEMM
  TORCH_CHECK(wp.size(0) == (lin_all ? 3 : 2) * H && bp.numel() == wp.size(0) && (ident == -1 || ident == 0 ||
              ident == 2) && (lin_all || I == H) && (ident < 0 || post.has_value()),
              "gru_before_infer: wp/bp must hold the 3 (2 with an unprojected identity block) linear blocks");
  TORCH_CHECK(bs.empty() || int64_t(bs.size()) == T, "gru_before_infer: bs must have T entries");
  const at::Tensor x2 = x.contiguous().view({T * B, I}), wp_t = wp.t();
  const int64_t tcc = std::max<int64_t>(1, std::min(tc, T));
  at::Tensor buf = at::empty({tcc * B, 3 * H}, x.options());
  at::Tensor lin = lin_all ? at::Tensor() : at::empty({tcc * B, 2 * H}, x.options());
  at::Tensor Hout = bs.empty() ? at::empty({T, B, H}, x.options()) : at::zeros({T, B, H}, x.options());
  at::Tensor RH = at::empty({B, H}, x.options());
  c10::optional<at::Tensor> TH = wz.has_value() ? c10::optional<at::Tensor>(at::empty({B, H}, x.options()))
                                                : c10::nullopt;
  const at::Tensor w1_t = w1.t(), wn_t = wn.t();
  const c10::optional<at::Tensor> wz_t = wz.has_value() ? c10::optional<at::Tensor>(wz->t()) : c10::nullopt;
  const at::Tensor postc = post.has_value() ? post->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gru_before_infer", [&] {
    using T_ = scalar_t;
    const std::vector<at::Tensor> packs = gru_before_pack<T_>(w1_t, wz_t, wn_t);
    const T_* pst = post.has_value() ? postc.data_ptr<T_>() : nullptr;
    for (int64_t t0 = 0; t0 < T; t0 += tcc) {
      const int64_t n = std::min(tcc, T - t0);
      at::Tensor P = buf.narrow(0, 0, n * B), X = x2.narrow(0, t0 * B, n * B);
      at::Tensor L = lin_all ? P : lin.narrow(0, 0, n * B);
      at::addmm_out(L, bp, X, wp_t);
      if (ident >= 0 && (tanh_ident || !lin_all)) {  // the identity block: x (or its projection) [tanh] + post
        T_* pp = P.data_ptr<T_>();
        const T_* lp = L.data_ptr<T_>();
        const T_* xp = X.data_ptr<T_>();
        for_rows<T_>(n * B, 3 * H, 0, [&](int64_t r, T_*) {
          T_* row = pp + r * 3 * H;
          if (!lin_all) {  // the two linear blocks around the identity one
            const T_* l = lp + r * 2 * H;
            if (ident == 0) std::copy(l, l + 2 * H, row + H);
            else std::copy(l, l + 2 * H, row);
          }
          T_* id = row + ident * H;
          const T_* src = lin_all ? id : xp + r * I;
          if (tanh_ident)
            for (int64_t k = 0; k < H; ++k) id[k] = std::tanh(src[k]) + pst[k];
          else
            for (int64_t k = 0; k < H; ++k) id[k] = src[k] + pst[k];
        });
      }
      at::Tensor A = P.view({n, B, 3 * H}), out = Hout.narrow(0, t0, n);
      const at::Tensor hp = t0 == 0 ? h0 : Hout.select(0, t0 - 1);
      gru_before_forward_fused<T_>(A, w1_t, wz_t, wn_t, RH, false, TH, out, hp, bs.empty() ? bs : bs.slice(t0, n),
                                   keep_z, &packs);
    }
  });
  return {Hout, last_outputs(Hout, bs)};
}

// ------------------------------------------------------------------ Elman networks and clockwork
// The forward and backward step loops of ../rnn.py (rnn_tanh, rnn_relu, clockwork) for float and double,
// with the recurrent GEMM fused with the step's elementwise part like the LSTM family's (W_hh packed
// into panels of L units: 4 blocks of H/4 units and tiles of 6 rows x 4 vectors for rnn_tanh/rnn_relu
// where 4 divides H, else one block and tiles of 12 rows -- elman_blocks). Clockwork: at step t only the first u_t units
// tick (a prefix, periods forming a divisibility chain); the others keep their state. Equations:
//   forward   h_t[:u] = phi(P_t[:u] + h_{t-1} W_hh[:u]^T),  h_t[u:] = h_{t-1}[u:]   (P: input projection + biases)
//   backward  dh_t += da_{t+1}[:u'] W_hh[:u'] (rows alive at t+1, u' = u_{t+1});
//             dh_{t-1}[u:] += dh_t[u:] (units that did not tick), da_t[:u] = dh_t[:u] phi'(h_t[:u]), da_t[u:] = 0
// where DH (T, B, H) holds the outputs' gradients and is overwritten with da in place.

// relu that keeps NaN (as torch.relu): decided on the bits, which -ffast-math cannot fold
template <typename T>
inline T relu_keep_nan(T x) {
  using I = typename std::conditional<sizeof(T) == 4, int32_t, int64_t>::type;
  const I inf = sizeof(T) == 4 ? I(0x7f800000) : I(0x7ff0000000000000LL);
  I b;
  __builtin_memcpy(&b, &x, sizeof(b));
  if (b < 0 && (b & std::numeric_limits<I>::max()) <= inf) b = 0;  // negative, not NaN
  __builtin_memcpy(&x, &b, sizeof(b));
  return x;
}

// The Elman loops' tiles: with every unit ticking (rnn_tanh, rnn_relu) and 4 | H, 6 rows x 4 blocks of H/4
// units (as the LSTM backward's: 4 weight vectors and 6 broadcasts a k for 24 FMAs, where one block's 12 x 1
// tiles load 13 values for 12); clockwork keeps one block, whose panels its ticking prefix skips whole
inline int elman_blocks(int64_t H, at::IntArrayRef units) { return units.empty() ? gemv_blocks(H) : 1; }

template <typename T>
void elman_forward_loop_impl(at::Tensor& Hout, const at::Tensor& whh_t, const at::Tensor& h0, at::IntArrayRef units,
                             at::IntArrayRef bs, bool relu) {
  constexpr int L = Vec<T>::L;
  const int64_t T_ = Hout.size(0), B = Hout.size(1), H = Hout.size(2);
  const int NB = elman_blocks(H, units);
  const int64_t Hs = H / NB;
  const at::Tensor packed_t = pack_recurrent<T>(whh_t, NB, Hs);
  const at::Tensor h0c = h0.contiguous();
  const T* packed = packed_t.data_ptr<T>();
  T* Hp = Hout.data_ptr<T>();
  step_loop<T>(T_, B, H, H * H * int64_t(sizeof(T)), false, true, [&](int64_t t, int64_t j, int64_t nj) {
    const int64_t b = bs.empty() ? B : bs[t], u = units.empty() ? H : units[t];
    const int64_t pu = (u + L - 1) / L;  // panels with ticking units
    T* ht = Hp + t * B * H;  // holds the input projection, becomes h_t
    const T* hp = t == 0 ? h0c.data_ptr<T>() : Hp + (t - 1) * B * H;
    rows_past(b, B, j, nj, [&](int64_t r) { std::fill(ht + r * H, ht + (r + 1) * H, T(0)); });  // past the end: 0
    auto epi = [&](int64_t r, int64_t u0, int64_t U, const T* tile) {
      const int64_t uc = std::max<int64_t>(0, std::min(U, u - u0));
      T* h = ht + r * H + u0;
      const T* hprev = hp + r * H + u0;
      if constexpr (std::is_same<T, float>::value) {
        if (uc == L && !relu) {
          st16(h, tanh_v16(ld16(tile) + ld16(h)));
          return;
        }
      }
      for (int64_t k = 0; k < uc; ++k) h[k] = relu ? relu_keep_nan(tile[k] + h[k]) : std::tanh(tile[k] + h[k]);
      for (int64_t k = uc; k < U; ++k) h[k] = hprev[k];  // modules that do not tick keep their state
    };
    step_panels<T>(Hs, b * L * H * NB, j, nj, [&](int64_t p0, int64_t p1, int64_t jj, int64_t nn) {
      if (NB == 4) return gemv_tiles<T, 4>(packed, H, Hs, hp, H, H, b, b, p0, p1, jj, nn, epi);
      gemv_tiles<T, 1>(packed, H, H, hp, H, H, b, b, p0, std::min(p1, pu), jj, nn, epi);
      for (int64_t r = jj; r < b; r += nn) {  // panels where no unit ticks: copies
        const int64_t c0 = std::max(p0, pu) * L, c1 = std::min(p1 * L, H);
        if (c0 < c1) std::copy(hp + r * H + c0, hp + r * H + c1, ht + r * H + c0);
      }
    });
  }, [](int64_t) {});
}

template <typename T>
void elman_backward_loop_impl(at::Tensor& DH, at::Tensor& dh0, const at::Tensor& Hout, const at::Tensor& whh,
                              at::IntArrayRef units, at::IntArrayRef bs, bool relu) {
  constexpr int L = Vec<T>::L;
  const int64_t T_ = DH.size(0), B = DH.size(1), H = DH.size(2);
  // dh_t += da_{t+1} W_hh: W_hh (H, H) itself is the "transposed" operand, k = the units of step t+1
  const int NB = elman_blocks(H, units);
  const int64_t Hs = H / NB;
  const at::Tensor packed_t = pack_recurrent<T>(whh, NB, Hs);
  const T* packed = packed_t.data_ptr<T>();
  T* D = DH.data_ptr<T>();
  T* D0 = dh0.data_ptr<T>();
  const T* Hp = Hout.data_ptr<T>();
  step_loop<T>(T_, B, H, H * H * int64_t(sizeof(T)), true, true, [&](int64_t t, int64_t j, int64_t nj) {
    const int64_t b = bs.empty() ? B : bs[t], u = units.empty() ? H : units[t];
    const int64_t b1 = t == T_ - 1 ? 0 : (bs.empty() ? B : bs[t + 1]);
    const int64_t u1 = t == T_ - 1 ? 0 : (units.empty() ? H : units[t + 1]);
    T* dt = D + t * B * H;
    T* dprev = t == 0 ? D0 : D + (t - 1) * B * H;
    const T* ht = Hp + t * B * H;
    rows_past(b, B, j, nj, [&](int64_t r) { std::fill(dt + r * H, dt + (r + 1) * H, T(0)); });  // no gradient
    auto epi = [&](int64_t r, int64_t u0, int64_t U, const T* tile) {
      const int64_t uc = std::max<int64_t>(0, std::min(U, u - u0));
      T* d = dt + r * H + u0;
      const T* h = ht + r * H + u0;
      T* dp = dprev + r * H + u0;
      for (int64_t k = 0; k < U; ++k) {
        const T g = tile ? d[k] + tile[k] : d[k];
        if (k < uc) {
          d[k] = relu ? (h[k] > T(0) ? g : T(0)) : g * (T(1) - h[k] * h[k]);
        } else {  // did not tick: the gradient passes to h_{t-1}
          dp[k] += g;
          d[k] = T(0);
        }
      }
    };
    step_panels<T>(Hs, b * L * u1 * NB, j, nj, [&](int64_t p0, int64_t p1, int64_t jj, int64_t nn) {
      const T* lhs = D + (t + 1 < T_ ? (t + 1) : t) * B * H;  // dh_{t+1}'s pre-activation gradients
      if (NB == 4) gemv_tiles<T, 4>(packed, H, Hs, lhs, H, u1, b, b1, p0, p1, jj, nn, epi);
      else gemv_tiles<T, 1>(packed, H, H, lhs, H, u1, b, b1, p0, p1, jj, nn, epi);
    });
  }, [](int64_t) {});
}

void check_elman(const at::Tensor& X, const at::Tensor& W, const char* what) {
  TORCH_CHECK(X.device().is_cpu() && X.dim() == 3 && X.is_contiguous(), what, ": a contiguous CPU (T, B, H) tensor");
  TORCH_CHECK(X.scalar_type() == at::kFloat || X.scalar_type() == at::kDouble, what, ": float32 or float64 only");
  TORCH_CHECK(W.scalar_type() == X.scalar_type() && W.dim() == 2 && W.size(0) == X.size(2) && W.size(1) == X.size(2),
              what, ": W_hh must be (H, H) of the same dtype");
}

void elman_forward_loop(at::Tensor Hout, const at::Tensor& whh_t, const at::Tensor& h0, at::IntArrayRef units,
                        at::IntArrayRef bs, bool relu) {
  check_elman(Hout, whh_t, "elman_forward_loop");
  TORCH_CHECK(units.empty() || int64_t(units.size()) == Hout.size(0), "elman_forward_loop: units must have T entries");
  TORCH_CHECK(bs.empty() || int64_t(bs.size()) == Hout.size(0), "elman_forward_loop: bs must have T entries");
  AT_DISPATCH_FLOATING_TYPES(Hout.scalar_type(), "elman_forward_loop",
                             [&] { elman_forward_loop_impl<scalar_t>(Hout, whh_t, h0, units, bs, relu); });
}

// A whole inference call of one Elman/clockwork layer-direction (float, double) in one op, as ../rnn.py's
// elman_forward and the driver's final state do it: the input projection with both biases into the output
// buffer, the step loop, h_T (at each row's end: bs as for lstm_infer, empty without padding). whh (H, H):
// clockwork's already masked. Returns [out (T, B, H), h_T].
std::vector<at::Tensor> elman_infer(const at::Tensor& x, const at::Tensor& wih, const at::Tensor& bias_ih,
                                    const at::Tensor& bias_hh, const at::Tensor& whh, const at::Tensor& h0,
                                    at::IntArrayRef units, at::IntArrayRef bs, bool relu) {
  TORCH_CHECK(x.dim() == 3 && x.device().is_cpu() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble),
              "elman_infer: a (T, B, I) float32/float64 CPU input");
  for (const at::Tensor& t : {wih, bias_ih, bias_hh, whh, h0})
    TORCH_CHECK(t.scalar_type() == x.scalar_type(), "elman_infer: weights and state in the input's dtype");
  const int64_t T = x.size(0), B = x.size(1), H = whh.size(0);
  at::Tensor Hout = at::empty({T, B, H}, x.options());
  at::Tensor P = Hout.view({T * B, H});  // the input projection, which the loop turns into h_t in place
  at::addmm_out(P, at::add(bias_ih, bias_hh), x.contiguous().view({T * B, x.size(2)}), wih.t());
  elman_forward_loop(Hout, whh.t(), h0, units, bs, relu);  // (rows past their end: zero)
  return {Hout, last_outputs(Hout, bs)};
}

void elman_backward_loop(at::Tensor DH, at::Tensor dh0, const at::Tensor& Hout, const at::Tensor& whh,
                         at::IntArrayRef units, at::IntArrayRef bs, bool relu) {
  check_elman(DH, whh, "elman_backward_loop");
  TORCH_CHECK(Hout.is_contiguous() && Hout.sizes() == DH.sizes() && dh0.is_contiguous() &&
              dh0.size(0) == DH.size(1), "elman_backward_loop: Hout (T, B, H) and dh0 (B, H), contiguous");
  TORCH_CHECK(units.empty() || int64_t(units.size()) == DH.size(0), "elman_backward_loop: units must have T entries");
  TORCH_CHECK(bs.empty() || int64_t(bs.size()) == DH.size(0), "elman_backward_loop: bs must have T entries");
  AT_DISPATCH_FLOATING_TYPES(DH.scalar_type(), "elman_backward_loop",
                             [&] { elman_backward_loop_impl<scalar_t>(DH, dh0, Hout, whh, units, bs, relu); });
}

}  // namespace

TORCH_LIBRARY(recur_attn_native, m) {
  m.def(
      "lstm_forward_loop(Tensor(a!) P, Tensor x2, Tensor wih, Tensor bias, int tc, Tensor whh_t, Tensor? wgh_t, "
      "Tensor? a0, Tensor(b!) C, bool keep_c, Tensor(c!)? TC, bool save_tc, Tensor(d!) Hout, Tensor h0, "
      "Tensor? p_if, Tensor? p_o, Tensor? below, Tensor? w_cd, Tensor? w_ld, int[] bs, int GH, int flags, "
      "int[] blocks) -> ()");
  m.def(
      "lstm_infer(Tensor x, Tensor wih, Tensor bias_ih, Tensor bias_hh, Tensor whh, Tensor? wgh, Tensor? wph, "
      "Tensor? w_cd, Tensor? w_ld, Tensor? below, Tensor h0, Tensor c0, Tensor? a0, int tc, int flags, int[] blocks, "
      "int[] bs, bool want_cseq) -> Tensor[]");
  m.def(
      "lstm_backward_loop(Tensor(a!) A, Tensor C, Tensor? TC, Tensor(b!) DH, Tensor(c!) dc_a, Tensor(d!) dc_b, "
      "Tensor? dcseq, Tensor whh, Tensor? wgh, Tensor? a0, Tensor(e!)? E, Tensor(f!)? dwgh, Tensor? p_if, "
      "Tensor? p_o, Tensor(g!)? D, Tensor? below, Tensor(h!)? dbelow, Tensor? w_cd, Tensor? w_ld, int[] bs, "
      "int flags, int chunk) -> ()");
  m.def(
      "gru_before_backward_loop(Tensor(a!) A, Tensor(b!) DH, Tensor(c!) dh0, Tensor Hout, Tensor h0, Tensor w1, "
      "Tensor? wz, Tensor? TH, Tensor wn, int[] bs, bool keep_z) -> ()");
  m.def(
      "elman_infer(Tensor x, Tensor wih, Tensor bias_ih, Tensor bias_hh, Tensor whh, Tensor h0, int[] units, "
      "int[] bs, bool relu) -> Tensor[]");
  m.def("elman_forward_loop(Tensor(a!) Hout, Tensor whh_t, Tensor h0, int[] units, int[] bs, bool relu) -> ()");
  m.def(
      "gru_after_infer(Tensor x, Tensor wih, Tensor bias_ih, Tensor bias_hh, Tensor whh, Tensor h0, int tc, int[] bs) "
      "-> Tensor[]");
  m.def(
      "gru_before_infer(Tensor x, Tensor wp, Tensor bp, int ident, bool projected, bool tanh_ident, Tensor? post, "
      "Tensor w1, Tensor? wz, Tensor wn, Tensor h0, int tc, int[] bs, bool keep_z) -> Tensor[]");
  m.def(
      "gru_after_forward_loop(Tensor(a!) A, Tensor(b!)? GN, Tensor whh_t, Tensor bhn, Tensor(c!) Hout, Tensor h0, "
      "int[] bs) -> ()");
  m.def(
      "gru_after_backward_loop(Tensor(a!) A, Tensor(b!) GN, Tensor(c!) DH, Tensor(d!) dh0, Tensor Hout, Tensor h0, "
      "Tensor whh, int[] bs) -> ()");
  m.def(
      "elman_backward_loop(Tensor(a!) DH, Tensor(b!) dh0, Tensor Hout, Tensor whh, int[] units, int[] bs, bool relu) "
      "-> ()");
  m.def(
      "gru_before_forward_loop(Tensor(a!) A, Tensor w1_t, Tensor? wz_t, Tensor wn_t, Tensor(b!) RH, bool save, "
      "Tensor(c!)? TH, Tensor(d!) Hout, Tensor h0, int[] bs, bool keep_z) -> ()");
}

TORCH_LIBRARY_IMPL(recur_attn_native, CPU, m) {
  m.impl("lstm_forward_loop", &lstm_forward_loop);
  m.impl("lstm_infer", &lstm_infer);
  m.impl("gru_before_forward_loop", &gru_before_forward_loop);
  m.impl("lstm_backward_loop", &lstm_backward_loop);
  m.impl("gru_before_backward_loop", &gru_before_backward_loop);
  m.impl("elman_forward_loop", &elman_forward_loop);
  m.impl("gru_after_forward_loop", &gru_after_forward_loop);
  m.impl("gru_after_infer", &gru_after_infer);
  m.impl("gru_before_infer", &gru_before_infer);
  m.impl("gru_after_backward_loop", &gru_after_backward_loop);
  m.impl("elman_infer", &elman_infer);
  m.impl("elman_backward_loop", &elman_backward_loop);
}

