// Unrolled FISTA in code space for MixMate (mixlib.models.mixmate.fista_gram), on the CPU with
// AVX-512: all T layers of a block of 32 rows of one dictionary run while the block stays in
// cache, the soft threshold and the momentum fused into the small GEMM's output. The layers are
//
//   x_j = S(c + z_j W, thr),  z_0 = 0,  z_{j+1} = x_{j-1} + w_j (x_j - x_{j-1}),  x_{-1} = 0,
//
// W (K,N,N) = I - s G, c (K,B,N) = s A^T y, thr (K,) or (1,) = lam s, w_j = 1 + momentum_j;
// the codes x_{T-1} (K,B,N) are returned. N <= 64 (codes padded to four 16-float vectors).
// The backward recomputes a block's layers (kept in cache) and returns the gradients for W and
// c (none for thr, as the torch path). No sum runs across threads: the forward splits the work
// by (dictionary, block), the backward by dictionary, its blocks in order, so the results are
// the same bits at any thread count.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <algorithm>
#include <cstdint>
#include <vector>

constexpr int64_t NP = 64;  // padded code length
constexpr int64_t R = 32;   // rows per block

static void check(const torch::Tensor& W, const torch::Tensor& c, const torch::Tensor& thr) {
  TORCH_CHECK(W.dim() == 3 && c.dim() == 3 && W.size(0) == c.size(0) && W.size(1) == W.size(2) &&
                  W.size(2) == c.size(2),
              "fista: W must be (K, N, N) and c (K, B, N)");
  TORCH_CHECK(W.size(1) <= NP, "fista: at most 64 atoms per dictionary");
  TORCH_CHECK(W.scalar_type() == torch::kFloat && c.scalar_type() == torch::kFloat &&
                  thr.scalar_type() == torch::kFloat,
              "fista: float32 tensors only");
  TORCH_CHECK(W.device().is_cpu() && c.device().is_cpu() && thr.device().is_cpu(), "fista: CPU only");
  TORCH_CHECK(thr.numel() == 1 || thr.numel() == W.size(0), "fista: thr must have 1 or K values");
}

// acc[4 rows][4 vectors] += Z[rows r0..r0+3][0..N) @ M (N x NP, padded rows)
static inline void mk_rows(__m512 acc[4][4], const float* Z, int64_t r0, const float* M, int64_t N) {
  for (int64_t n = 0; n < N; ++n) {
    const __m512 w0 = _mm512_load_ps(&M[n * NP]), w1 = _mm512_load_ps(&M[n * NP + 16]);
    const __m512 w2 = _mm512_load_ps(&M[n * NP + 32]), w3 = _mm512_load_ps(&M[n * NP + 48]);
    for (int rr = 0; rr < 4; ++rr) {
      const __m512 zn = _mm512_set1_ps(Z[(r0 + rr) * NP + n]);
      acc[rr][0] = _mm512_fmadd_ps(zn, w0, acc[rr][0]);
      acc[rr][1] = _mm512_fmadd_ps(zn, w1, acc[rr][1]);
      acc[rr][2] = _mm512_fmadd_ps(zn, w2, acc[rr][2]);
      acc[rr][3] = _mm512_fmadd_ps(zn, w3, acc[rr][3]);
    }
  }
}

// Loads block rows b0.. of c (K,B,N) into padded rows; zero elsewhere.
static void load_block(float* dst, const float* src, int64_t k, int64_t B, int64_t N, int64_t b0,
                       int64_t rows) {
  std::fill(dst, dst + R * NP, 0.f);
  for (int64_t r = 0; r < rows; ++r)
    std::copy(src + (k * B + b0 + r) * N, src + (k * B + b0 + r + 1) * N, dst + r * NP);
}

static void load_w(float* W, float* WT, const float* Wp, int64_t k, int64_t N) {
  std::fill(W, W + NP * NP, 0.f);
  if (WT) std::fill(WT, WT + NP * NP, 0.f);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t m = 0; m < N; ++m) {
      W[i * NP + m] = Wp[(k * N + i) * N + m];
      if (WT) WT[m * NP + i] = W[i * NP + m];
    }
}

// One layer for a block: xj = S(c + z W, thr) (z unused when first), then z = xo + w (xj - xo).
static void layer(float* xj, float* z, const float* xo, const float* c, const float* W, int64_t N,
                  bool first, __m512 vthr, __m512 vnthr, __m512 vw) {
  for (int64_t r0 = 0; r0 < R; r0 += 4) {
    __m512 acc[4][4];
    for (int rr = 0; rr < 4; ++rr)
      for (int q = 0; q < 4; ++q) acc[rr][q] = _mm512_load_ps(&c[(r0 + rr) * NP + 16 * q]);
    if (!first) mk_rows(acc, z, r0, W, N);
    for (int rr = 0; rr < 4; ++rr)
      for (int q = 0; q < 4; ++q) {
        const __m512 v = acc[rr][q];  // v - clamp(v, -thr, thr)
        _mm512_store_ps(&xj[(r0 + rr) * NP + 16 * q],
                        _mm512_sub_ps(v, _mm512_min_ps(_mm512_max_ps(v, vnthr), vthr)));
      }
  }
  for (int64_t i = 0; i < R * NP; i += 16) {
    const __m512 xi = _mm512_load_ps(&xj[i]);
    const __m512 o = xo ? _mm512_load_ps(&xo[i]) : _mm512_setzero_ps();
    _mm512_store_ps(&z[i], _mm512_fmadd_ps(vw, _mm512_sub_ps(xi, o), o));
  }
}

torch::Tensor fista_forward(torch::Tensor W_, torch::Tensor c_, torch::Tensor thr_,
                            std::vector<double> moms) {
  check(W_, c_, thr_);
  W_ = W_.contiguous(); c_ = c_.contiguous(); thr_ = thr_.contiguous();
  const int64_t K = W_.size(0), N = W_.size(1), B = c_.size(1);
  auto out = torch::empty_like(c_);
  const float *Wp = W_.data_ptr<float>(), *cp = c_.data_ptr<float>(), *thp = thr_.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t nb = (B + R - 1) / R;
  const int T = moms.size();
  at::parallel_for(0, K * nb, 1, [&](int64_t lo, int64_t hi) {
    alignas(64) float W[NP * NP], c[R * NP], z[R * NP], xa[R * NP], xb[R * NP];
    int64_t cur = -1;
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t k = t / nb, b0 = (t % nb) * R, rows = std::min(R, B - b0);
      const float thr = thr_.numel() == 1 ? thp[0] : thp[k];
      if (k != cur) { load_w(W, nullptr, Wp, k, N); cur = k; }
      load_block(c, cp, k, B, N, b0, rows);
      float *x = xa, *xo = xb;
      for (int j = 0; j < T; ++j) {
        layer(x, z, j > 0 ? xo : nullptr, c, W, N, j == 0, _mm512_set1_ps(thr),
              _mm512_set1_ps(-thr), _mm512_set1_ps(1.f + (float)moms[j]));
        std::swap(x, xo);  // xo = this layer's codes
      }
      for (int64_t r = 0; r < rows; ++r)
        std::copy(xo + r * NP, xo + r * NP + N, op + (k * B + b0 + r) * N);
    }
  });
  return out;
}

// Backward steps shared by the Gram and the masked kernels, over len floats (rows of NP):
// gv = g * (x != 0) (the threshold's derivative), gc += gv.
static inline void threshold_grad(float* gv, float* gc, const float* x, const float* g, int64_t len) {
  for (int64_t i = 0; i < len; i += 16) {
    const __mmask16 on = _mm512_cmp_ps_mask(_mm512_load_ps(&x[i]), _mm512_setzero_ps(), _CMP_NEQ_OQ);
    const __m512 v = _mm512_maskz_mov_ps(on, _mm512_load_ps(&g[i]));
    _mm512_store_ps(&gv[i], v);
    _mm512_store_ps(&gc[i], _mm512_add_ps(_mm512_load_ps(&gc[i]), v));
  }
}

// z = xb + w (xa - xb) (xb null: 0), the momentum step recomputed.
static inline void momentum(float* z, const float* xa, const float* xb, __m512 vw, int64_t len) {
  for (int64_t i = 0; i < len; i += 16) {
    const __m512 a = _mm512_load_ps(&xa[i]);
    const __m512 b = xb ? _mm512_load_ps(&xb[i]) : _mm512_setzero_ps();
    _mm512_store_ps(&z[i], _mm512_fmadd_ps(vw, _mm512_sub_ps(a, b), b));
  }
}

// dz reaches x_{j-1} (times w) and x_{j-2} (times 1 - w): g1 = g2 + w dz, g2 = (1 - w) dz.
static inline void momentum_grad(float* g1, float* g2, const float* dz, __m512 vw, int64_t len) {
  const __m512 one_minus = _mm512_sub_ps(_mm512_set1_ps(1.f), vw);
  for (int64_t i = 0; i < len; i += 16) {
    const __m512 g = _mm512_load_ps(&dz[i]);
    _mm512_store_ps(&g1[i], _mm512_fmadd_ps(vw, g, _mm512_load_ps(&g2[i])));
    _mm512_store_ps(&g2[i], _mm512_mul_ps(one_minus, g));
  }
}

// dW (rows < N, padded to NP) += Z^T GV over `rows` rows of NP floats, 4 rows of dW at once.
static void add_zt_gv(float* dW, const float* Z, const float* GV, int64_t rows, int64_t N) {
  for (int64_t n0 = 0; n0 < N; n0 += 4) {
    __m512 a[4][4];
    for (int nn = 0; nn < 4; ++nn)
      for (int q = 0; q < 4; ++q) a[nn][q] = _mm512_load_ps(&dW[(n0 + nn) * NP + 16 * q]);
    for (int64_t r = 0; r < rows; ++r) {
      const __m512 v0 = _mm512_load_ps(&GV[r * NP]), v1 = _mm512_load_ps(&GV[r * NP + 16]);
      const __m512 v2 = _mm512_load_ps(&GV[r * NP + 32]), v3 = _mm512_load_ps(&GV[r * NP + 48]);
      for (int nn = 0; nn < 4; ++nn) {
        const __m512 zn = _mm512_set1_ps(Z[r * NP + n0 + nn]);
        a[nn][0] = _mm512_fmadd_ps(zn, v0, a[nn][0]);
        a[nn][1] = _mm512_fmadd_ps(zn, v1, a[nn][1]);
        a[nn][2] = _mm512_fmadd_ps(zn, v2, a[nn][2]);
        a[nn][3] = _mm512_fmadd_ps(zn, v3, a[nn][3]);
      }
    }
    for (int nn = 0; nn < 4; ++nn)
      for (int q = 0; q < 4; ++q) _mm512_store_ps(&dW[(n0 + nn) * NP + 16 * q], a[nn][q]);
  }
}

// Gradients of x = FISTA(W, c, thr) for W and c, given gx (K,B,N) = dL/dx: per dictionary,
// its blocks in order. Going back through layer j: gv = g_j * (x_j != 0) (the threshold's
// derivative), dc += gv, dW += z_j^T gv, dz_j = gv W^T, which reaches x_{j-1} (times w_{j-1})
// and x_{j-2} (times 1 - w_{j-1}).
std::vector<torch::Tensor> fista_backward(torch::Tensor W_, torch::Tensor c_, torch::Tensor thr_,
                                          std::vector<double> moms, torch::Tensor gx_) {
  check(W_, c_, thr_);
  TORCH_CHECK(gx_.sizes() == c_.sizes() && gx_.scalar_type() == torch::kFloat,
              "fista: the gradient must match c");
  W_ = W_.contiguous(); c_ = c_.contiguous(); thr_ = thr_.contiguous(); gx_ = gx_.contiguous();
  const int64_t K = W_.size(0), N = W_.size(1), B = c_.size(1);
  auto gW_ = torch::empty_like(W_);
  auto gc_ = torch::empty_like(c_);
  const float *Wp = W_.data_ptr<float>(), *cp = c_.data_ptr<float>(), *gxp = gx_.data_ptr<float>();
  const float* thp = thr_.data_ptr<float>();
  float *gWp = gW_.data_ptr<float>(), *gcp = gc_.data_ptr<float>();
  const int T = moms.size();
  at::parallel_for(0, K, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> Xv(T * R * NP + 16);  // every layer's codes of a block (+ room to align)
    float* X = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(Xv.data()) + 63) & ~uintptr_t(63));
    alignas(64) float W[NP * NP], WT[NP * NP], gW[NP * NP], c[R * NP], z[R * NP], gv[R * NP];
    alignas(64) float g1[R * NP], g2[R * NP], gc[R * NP];
    for (int64_t k = lo; k < hi; ++k) {
      const float thr = thr_.numel() == 1 ? thp[0] : thp[k];
      const __m512 vthr = _mm512_set1_ps(thr), vnthr = _mm512_set1_ps(-thr);
      load_w(W, WT, Wp, k, N);
      std::fill(gW, gW + NP * NP, 0.f);
      for (int64_t b0 = 0; b0 < B; b0 += R) {
        const int64_t rows = std::min(R, B - b0);
        load_block(c, cp, k, B, N, b0, rows);
        load_block(g1, gxp, k, B, N, b0, rows);
        std::fill(g2, g2 + R * NP, 0.f);
        std::fill(gc, gc + R * NP, 0.f);
        for (int j = 0; j < T; ++j)  // the forward again, keeping every layer's codes
          layer(X + j * R * NP, z, j > 0 ? X + (j - 1) * R * NP : nullptr, c, W, N, j == 0, vthr,
                vnthr, _mm512_set1_ps(1.f + (float)moms[j]));
        for (int j = T - 1; j >= 0; --j) {  // g1 = dL/dx_j, g2 = the part of dL/dx_{j-1} so far
          threshold_grad(gv, gc, X + j * R * NP, g1, R * NP);
          if (j == 0) break;
          // z_j = x_{j-2} + w (x_{j-1} - x_{j-2}), w = w_{j-1}
          const __m512 vw = _mm512_set1_ps(1.f + (float)moms[j - 1]);
          momentum(z, X + (j - 1) * R * NP, j >= 2 ? X + (j - 2) * R * NP : nullptr, vw, R * NP);
          add_zt_gv(gW, z, gv, rows, N);  // dW += z^T gv
          // dz = gv W^T (into z, no longer needed); dL/dx_{j-1} = g2 + w dz, g2 = (1 - w) dz
          for (int64_t r0 = 0; r0 < R; r0 += 4) {
            __m512 acc[4][4];
            for (int rr = 0; rr < 4; ++rr)
              for (int q = 0; q < 4; ++q) acc[rr][q] = _mm512_setzero_ps();
            mk_rows(acc, gv, r0, WT, N);
            for (int rr = 0; rr < 4; ++rr)
              for (int q = 0; q < 4; ++q) _mm512_store_ps(&z[(r0 + rr) * NP + 16 * q], acc[rr][q]);
          }
          momentum_grad(g1, g2, z, vw, R * NP);
        }
        for (int64_t r = 0; r < rows; ++r)
          std::copy(gc + r * NP, gc + r * NP + N, gcp + (k * B + b0 + r) * N);
      }
      for (int64_t i = 0; i < N; ++i) std::copy(gW + i * NP, gW + i * NP + N, gWp + (k * N + i) * N);
    }
  });
  return {gW_, gc_};
}

// ---------------------------------------------------------------------------------------------
// Rows with missing pixels (mixlib.models.mixmate.fista_masked). The masked gradient step
// A^T (m * (A z - y)) is G_b z - A^T (m y) with the row's own Gram matrix G_b = A^T diag(m) A =
// G - sum_{p missing} a_p a_p^T (a_p: row p of the dictionary, N values), so a row's layers are
// the Gram path's with its own W_b = I - s G_b = W + s sum_{p missing} a_p a_p^T: the missing
// rows cost n N^2 per row and dictionary once, against 2 T M N for the direct path's T layers
// (n = 196 missing of M = 784 pixels, N = 50, T = 15: 4x fewer). The layers run one row at a
// time (each has its own W_b, kept in L1). idx (B, n) holds each row's missing pixels first,
// then -1. The backward recomputes W_b and the row's layers and returns the gradients for W,
// c and A (the missing rows' part: dA_p = s (dW_b + dW_b^T) a_p); like the Gram kernel, no
// sum runs across threads (the forward splits by (dictionary, row), the backward by
// dictionary, its rows in order): the same bits at any thread count.

static void check_masked(const torch::Tensor& W, const torch::Tensor& c, const torch::Tensor& thr,
                         const torch::Tensor& A, const torch::Tensor& idx, const torch::Tensor& s) {
  check(W, c, thr);
  TORCH_CHECK(A.dim() == 3 && A.size(0) == W.size(0) && A.size(2) == W.size(1),
              "fista_masked: A must be (K, M, N) with W's K and N");
  TORCH_CHECK(A.scalar_type() == torch::kFloat && s.scalar_type() == torch::kFloat && A.device().is_cpu(),
              "fista_masked: float32 tensors only");
  TORCH_CHECK(idx.dim() == 2 && idx.size(0) == c.size(1) && idx.scalar_type() == torch::kLong,
              "fista_masked: idx must be (B, n) int64");
  TORCH_CHECK(s.numel() == 1 || s.numel() == W.size(0), "fista_masked: s must have 1 or K values");
}

// A_k (M, N) into padded rows Ap (M + 1, NP); row M (the padding's) is zero.
static void pack_a(float* Ap, const float* A, int64_t k, int64_t M, int64_t N) {
  std::fill(Ap, Ap + (M + 1) * NP, 0.f);
  for (int64_t p = 0; p < M; ++p) std::copy(A + (k * M + p) * N, A + (k * M + p + 1) * N, Ap + p * NP);
}

// Wb = W + s sum_{p in ix} a_p a_p^T (and WbT = WT + the same, exactly symmetric, sum), rows < N.
static void row_w(float* Wb, float* WbT, const float* W, const float* WT, const float* Ap,
                  const int64_t* ix, int64_t n, int64_t N, float s) {
  const __m512 vs = _mm512_set1_ps(s);
  for (int64_t i0 = 0; i0 < N; i0 += 4) {
    __m512 acc[4][4];
    for (int rr = 0; rr < 4; ++rr)
      for (int q = 0; q < 4; ++q) acc[rr][q] = _mm512_setzero_ps();
    for (int64_t t = 0; t < n; ++t) {
      const float* a = Ap + ix[t] * NP;
      const __m512 v0 = _mm512_load_ps(a), v1 = _mm512_load_ps(a + 16);
      const __m512 v2 = _mm512_load_ps(a + 32), v3 = _mm512_load_ps(a + 48);
      for (int rr = 0; rr < 4; ++rr) {
        const __m512 ai = _mm512_set1_ps(a[i0 + rr]);
        acc[rr][0] = _mm512_fmadd_ps(ai, v0, acc[rr][0]);
        acc[rr][1] = _mm512_fmadd_ps(ai, v1, acc[rr][1]);
        acc[rr][2] = _mm512_fmadd_ps(ai, v2, acc[rr][2]);
        acc[rr][3] = _mm512_fmadd_ps(ai, v3, acc[rr][3]);
      }
    }
    for (int rr = 0; rr < 4 && i0 + rr < NP; ++rr)
      for (int q = 0; q < 4; ++q) {
        const int64_t o = (i0 + rr) * NP + 16 * q;
        const __m512 sa = _mm512_mul_ps(vs, acc[rr][q]);
        _mm512_store_ps(&Wb[o], _mm512_add_ps(_mm512_load_ps(&W[o]), sa));
        if (WbT) _mm512_store_ps(&WbT[o], _mm512_add_ps(_mm512_load_ps(&WT[o]), sa));
      }
  }
}

// out = v + z M for one row (z, v, out: NP floats; M: N x NP, padded rows), two partial sums.
static inline void row_mv(float* out, const float* v, const float* z, const float* M, int64_t N) {
  __m512 a[2][4];
  for (int q = 0; q < 4; ++q) {
    a[0][q] = v ? _mm512_load_ps(&v[16 * q]) : _mm512_setzero_ps();
    a[1][q] = _mm512_setzero_ps();
  }
  int64_t n = 0;
  for (; n + 1 < N; n += 2)
    for (int h = 0; h < 2; ++h) {
      const __m512 zn = _mm512_set1_ps(z[n + h]);
      for (int q = 0; q < 4; ++q) a[h][q] = _mm512_fmadd_ps(zn, _mm512_load_ps(&M[(n + h) * NP + 16 * q]), a[h][q]);
    }
  if (n < N) {
    const __m512 zn = _mm512_set1_ps(z[n]);
    for (int q = 0; q < 4; ++q) a[0][q] = _mm512_fmadd_ps(zn, _mm512_load_ps(&M[n * NP + 16 * q]), a[0][q]);
  }
  for (int q = 0; q < 4; ++q) _mm512_store_ps(&out[16 * q], _mm512_add_ps(a[0][q], a[1][q]));
}

// One layer of one row: xj = S(c + z W, thr) (c alone when first), then z = xo + w (xj - xo).
static inline void row_layer(float* xj, float* z, const float* xo, const float* c, const float* W,
                             int64_t N, bool first, __m512 vthr, __m512 vnthr, __m512 vw) {
  if (first) std::copy(c, c + NP, xj);
  else row_mv(xj, c, z, W, N);
  for (int q = 0; q < 4; ++q) {
    const __m512 v = _mm512_load_ps(&xj[16 * q]);
    const __m512 x = _mm512_sub_ps(v, _mm512_min_ps(_mm512_max_ps(v, vnthr), vthr));
    _mm512_store_ps(&xj[16 * q], x);
    const __m512 o = xo ? _mm512_load_ps(&xo[16 * q]) : _mm512_setzero_ps();
    _mm512_store_ps(&z[16 * q], _mm512_fmadd_ps(vw, _mm512_sub_ps(x, o), o));
  }
}

static int64_t n_missing(const int64_t* ix, int64_t n, int64_t M) {
  int64_t t = 0;
  while (t < n && ix[t] >= 0) {
    TORCH_CHECK(ix[t] < M, "fista_masked: a missing pixel index is >= M");
    ++t;
  }
  return t;
}

torch::Tensor fista_masked_forward(torch::Tensor W_, torch::Tensor c_, torch::Tensor thr_,
                                   std::vector<double> moms, torch::Tensor A_, torch::Tensor idx_,
                                   torch::Tensor s_) {
  check_masked(W_, c_, thr_, A_, idx_, s_);
  W_ = W_.contiguous(); c_ = c_.contiguous(); thr_ = thr_.contiguous();
  A_ = A_.contiguous(); idx_ = idx_.contiguous(); s_ = s_.contiguous();
  const int64_t K = W_.size(0), N = W_.size(1), B = c_.size(1), M = A_.size(1), n = idx_.size(1);
  auto out = torch::empty_like(c_);
  const float *Wp = W_.data_ptr<float>(), *cp = c_.data_ptr<float>(), *thp = thr_.data_ptr<float>();
  const float *Ap_ = A_.data_ptr<float>(), *sp = s_.data_ptr<float>();
  const int64_t* ixp = idx_.data_ptr<int64_t>();
  float* op = out.data_ptr<float>();
  const int T = moms.size();
  at::parallel_for(0, K * B, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> Av((M + 1) * NP + 16);
    float* Ap = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(Av.data()) + 63) & ~uintptr_t(63));
    alignas(64) float W[NP * NP], Wb[NP * NP], c[NP], z[NP], xa[NP], xb[NP];
    int64_t cur = -1;
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t k = t / B, b = t % B;
      const float thr = thr_.numel() == 1 ? thp[0] : thp[k];
      const float s = s_.numel() == 1 ? sp[0] : sp[k];
      if (k != cur) { load_w(W, nullptr, Wp, k, N); pack_a(Ap, Ap_, k, M, N); cur = k; }
      const int64_t* ix = ixp + b * n;
      row_w(Wb, nullptr, W, nullptr, Ap, ix, n_missing(ix, n, M), N, s);
      std::fill(c, c + NP, 0.f);
      std::copy(cp + (k * B + b) * N, cp + (k * B + b + 1) * N, c);
      float *x = xa, *xo = xb;
      for (int j = 0; j < T; ++j) {
        row_layer(x, z, j > 0 ? xo : nullptr, c, Wb, N, j == 0, _mm512_set1_ps(thr),
                  _mm512_set1_ps(-thr), _mm512_set1_ps(1.f + (float)moms[j]));
        std::swap(x, xo);
      }
      std::copy(xo, xo + N, op + (k * B + b) * N);
    }
  });
  return out;
}

std::vector<torch::Tensor> fista_masked_backward(torch::Tensor W_, torch::Tensor c_, torch::Tensor thr_,
                                                 std::vector<double> moms, torch::Tensor A_,
                                                 torch::Tensor idx_, torch::Tensor s_, torch::Tensor gx_) {
  check_masked(W_, c_, thr_, A_, idx_, s_);
  TORCH_CHECK(gx_.sizes() == c_.sizes() && gx_.scalar_type() == torch::kFloat,
              "fista_masked: the gradient must match c");
  W_ = W_.contiguous(); c_ = c_.contiguous(); thr_ = thr_.contiguous(); gx_ = gx_.contiguous();
  A_ = A_.contiguous(); idx_ = idx_.contiguous(); s_ = s_.contiguous();
  const int64_t K = W_.size(0), N = W_.size(1), B = c_.size(1), M = A_.size(1), n = idx_.size(1);
  auto gW_ = torch::empty_like(W_);
  auto gc_ = torch::empty_like(c_);
  auto gA_ = torch::empty_like(A_);
  const float *Wp = W_.data_ptr<float>(), *cp = c_.data_ptr<float>(), *gxp = gx_.data_ptr<float>();
  const float *thp = thr_.data_ptr<float>(), *Ap_ = A_.data_ptr<float>(), *sp = s_.data_ptr<float>();
  const int64_t* ixp = idx_.data_ptr<int64_t>();
  float *gWp = gW_.data_ptr<float>(), *gcp = gc_.data_ptr<float>(), *gAp_ = gA_.data_ptr<float>();
  const int T = moms.size();
  at::parallel_for(0, K, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> buf(2 * (M + 1) * NP + 2 * T * NP + 16);
    float* Ap = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(buf.data()) + 63) & ~uintptr_t(63));
    float* gAp = Ap + (M + 1) * NP;      // dL/dA_k, padded rows
    float* X = gAp + (M + 1) * NP;       // the row's codes of every layer
    float* GV = X + T * NP;              // dL/dv_j of every layer (row j - 1 for layer j)
    alignas(64) float W[NP * NP], WT[NP * NP], Wb[NP * NP], WbT[NP * NP], gW[NP * NP], gWb[NP * NP];
    alignas(64) float c[NP], z[NP], g1[NP], g2[NP], gc[NP], Z[NP * NP];
    for (int64_t k = lo; k < hi; ++k) {
      const float thr = thr_.numel() == 1 ? thp[0] : thp[k];
      const float s = s_.numel() == 1 ? sp[0] : sp[k];
      const __m512 vthr = _mm512_set1_ps(thr), vnthr = _mm512_set1_ps(-thr);
      load_w(W, WT, Wp, k, N);
      pack_a(Ap, Ap_, k, M, N);
      std::fill(gAp, gAp + (M + 1) * NP, 0.f);
      std::fill(gW, gW + NP * NP, 0.f);
      for (int64_t b = 0; b < B; ++b) {
        const int64_t* ix = ixp + b * n;
        const int64_t nm = n_missing(ix, n, M);
        row_w(Wb, WbT, W, WT, Ap, ix, nm, N, s);
        std::fill(c, c + NP, 0.f);
        std::copy(cp + (k * B + b) * N, cp + (k * B + b + 1) * N, c);
        std::fill(g1, g1 + NP, 0.f);
        std::copy(gxp + (k * B + b) * N, gxp + (k * B + b + 1) * N, g1);
        std::fill(g2, g2 + NP, 0.f);
        std::fill(gc, gc + NP, 0.f);
        for (int j = 0; j < T; ++j)  // the forward again, keeping every layer's codes
          row_layer(X + j * NP, z, j > 0 ? X + (j - 1) * NP : nullptr, c, Wb, N, j == 0, vthr, vnthr,
                    _mm512_set1_ps(1.f + (float)moms[j]));
        int nz = 0;  // layers 1..T-1 with their z_j (rows of Z) and dL/dv_j (rows of GV)
        for (int j = T - 1; j >= 0; --j) {  // g1 = dL/dx_j, g2 = the part of dL/dx_{j-1} so far
          float* gv = GV + nz * NP;
          threshold_grad(gv, gc, X + j * NP, g1, NP);
          if (j == 0) break;
          const __m512 vw = _mm512_set1_ps(1.f + (float)moms[j - 1]);
          momentum(Z + nz * NP, X + (j - 1) * NP, j >= 2 ? X + (j - 2) * NP : nullptr, vw, NP);
          ++nz;
          row_mv(z, nullptr, gv, WbT, N);  // dz = gv Wb^T
          momentum_grad(g1, g2, z, vw, NP);
        }
        // dW_b = sum_j z_j^T gv_j (Z, GV: nz rows); dW += dW_b
        std::fill(gWb, gWb + NP * NP, 0.f);
        add_zt_gv(gWb, Z, GV, nz, N);
        for (int64_t i = 0; i < NP * NP; i += 16)
          _mm512_store_ps(&gW[i], _mm512_add_ps(_mm512_load_ps(&gW[i]), _mm512_load_ps(&gWb[i])));
        if (nm > 0) {
          // H = s (dW_b + dW_b^T) into Wb (no longer needed); dA_p += H a_p, 4 missing rows at once
          for (int64_t i = 0; i < N; ++i)
            for (int64_t m = 0; m < NP; ++m)
              Wb[i * NP + m] = m < N ? s * (gWb[i * NP + m] + gWb[m * NP + i]) : 0.f;
          for (int64_t t0 = 0; t0 < nm; t0 += 4) {
            int64_t p[4];
            for (int u = 0; u < 4; ++u) p[u] = t0 + u < nm ? ix[t0 + u] : M;  // row M: zero
            __m512 a[4][4];
            for (int u = 0; u < 4; ++u)
              for (int q = 0; q < 4; ++q) a[u][q] = _mm512_setzero_ps();
            for (int64_t i = 0; i < N; ++i) {
              const __m512 h0 = _mm512_load_ps(&Wb[i * NP]), h1 = _mm512_load_ps(&Wb[i * NP + 16]);
              const __m512 h2 = _mm512_load_ps(&Wb[i * NP + 32]), h3 = _mm512_load_ps(&Wb[i * NP + 48]);
              for (int u = 0; u < 4; ++u) {
                const __m512 ai = _mm512_set1_ps(Ap[p[u] * NP + i]);
                a[u][0] = _mm512_fmadd_ps(ai, h0, a[u][0]);
                a[u][1] = _mm512_fmadd_ps(ai, h1, a[u][1]);
                a[u][2] = _mm512_fmadd_ps(ai, h2, a[u][2]);
                a[u][3] = _mm512_fmadd_ps(ai, h3, a[u][3]);
              }
            }
            for (int u = 0; u < 4 && t0 + u < nm; ++u)
              for (int q = 0; q < 4; ++q) {
                float* g = gAp + p[u] * NP + 16 * q;
                _mm512_store_ps(g, _mm512_add_ps(_mm512_load_ps(g), a[u][q]));
              }
          }
        }
        std::copy(gc, gc + N, gcp + (k * B + b) * N);
      }
      for (int64_t i = 0; i < N; ++i) std::copy(gW + i * NP, gW + i * NP + N, gWp + (k * N + i) * N);
      for (int64_t p = 0; p < M; ++p) std::copy(gAp + p * NP, gAp + p * NP + N, gAp_ + (k * M + p) * N);
    }
  });
  return {gW_, gc_, gA_};
}

// How many threads at::parallel_for gives this extension's loops (the kernels' split): torch's
// thread count when the extension is built with OpenMP, 1 when its parallel_for fell back to
// the serial path (what mixlib.native's build flags guard against; tests/test_native.py).
int64_t team_size() {
  std::vector<int> seen(at::get_num_threads(), 0);
  at::parallel_for(0, 1024, 1, [&](int64_t, int64_t) { seen.at(at::get_thread_num()) = 1; });
  int64_t n = 0;
  for (int s : seen) n += s;
  return n;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fista_forward", &fista_forward);
  m.def("fista_backward", &fista_backward);
  m.def("fista_masked_forward", &fista_masked_forward);
  m.def("fista_masked_backward", &fista_masked_backward);
  m.def("team_size", &team_size);
}
