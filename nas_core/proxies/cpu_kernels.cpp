// Small-channel kernels, float32 NCHW, for the TE-NAS NTK on the CPU: 3x3 convolutions (stride 1, padding 1;
// forward and weight gradient), 1x1 convolutions, the batch-statistics batch-norm backward and the 3x3 box
// sum of NB201's exclude-pad average pool.
//
// Built at run time by nas_core/cpu_kernels.py (g++ -O3 -march=native) and called through ctypes, one
// thread per call. Why: oneDNN computes these shapes (3 to 36 channels, 8x8 to 32x32 planes) in a layout
// that pads the channels to 16, so most of its work is on zeros. Here one output row of a plane is held in
// vector registers (GCC vector extensions: the compiler picks AVX-512, AVX2 or SSE) and the 9 taps of
// every input channel are multiply-added into it, for a block of output channels at a time. The input is
// zero-padded once (nk_pad1), so the loops have no border cases.
//
// The 3x3 kernels take the plane width W as a template parameter (4 to 64, a power of two): one row is
// W / L vectors of L lanes. Any other width returns 1 and the caller falls back to PyTorch. The 1x1, BN and
// box-sum kernels take any size (a scalar tail after the vectors).

#include <cstdint>
#include <cstring>
#include <vector>

namespace {

#if defined(__AVX512F__)
constexpr int kLanes = 16;
#elif defined(__AVX__)
constexpr int kLanes = 8;
#else
constexpr int kLanes = 4;
#endif

template <int L>
struct Vec {
  typedef float type __attribute__((vector_size(4 * L), aligned(4)));
};

template <int L>
inline typename Vec<L>::type load(const float* p) {
  typename Vec<L>::type v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <int L>
inline void store(float* p, typename Vec<L>::type v) {
  std::memcpy(p, &v, sizeof(v));
}

// One plane of H x W into (H + 2) x (W + 2) with a zero border.
void pad_plane(const float* s, float* o, int H, int W) {
  const int PW = W + 2;
  std::memset(o, 0, sizeof(float) * PW);
  for (int h = 0; h < H; ++h) {
    float* r = o + (int64_t)(h + 1) * PW;
    r[0] = 0.f;
    std::memcpy(r + 1, s + (int64_t)h * W, sizeof(float) * W);
    r[W + 1] = 0.f;
  }
  std::memset(o + (int64_t)(H + 1) * PW, 0, sizeof(float) * PW);
}

// Output channels co0 .. co0 + CB - 1 of one sample: y[co][h][:] = sum over ci, taps of w * shifted input row.
template <int W, int CB>
void forward_block(const float* xp, const float* w, float* y, int Ci, int H, int co0) {
  constexpr int L = W < kLanes ? W : kLanes, NV = W / L, PW = W + 2;
  typedef typename Vec<L>::type V;
  const int PH = H + 2;
  for (int h = 0; h < H; ++h) {
    V acc[CB][NV];
    for (int b = 0; b < CB; ++b)
      for (int v = 0; v < NV; ++v) acc[b][v] = V{};
    for (int ci = 0; ci < Ci; ++ci) {
      for (int kh = 0; kh < 3; ++kh) {
        const float* r = xp + ((int64_t)ci * PH + h + kh) * PW;
        for (int kw = 0; kw < 3; ++kw) {
          V xv[NV];
          for (int v = 0; v < NV; ++v) xv[v] = load<L>(r + kw + v * L);
          for (int b = 0; b < CB; ++b) {
            const float wv = w[(((int64_t)(co0 + b) * Ci + ci) * 3 + kh) * 3 + kw];
            for (int v = 0; v < NV; ++v) acc[b][v] += wv * xv[v];
          }
        }
      }
    }
    for (int b = 0; b < CB; ++b)
      for (int v = 0; v < NV; ++v) store<L>(y + ((int64_t)(co0 + b) * H + h) * W + v * L, acc[b][v]);
  }
}

// Output channels per block: as many as keep their accumulators (CB x W / L vectors) within the register
// budget, so each loaded input row serves all of them (a 9 -> 3 input-gradient conv is one block of 3).
constexpr int kAccBudget = kLanes == 16 ? 24 : 12;  // of 32 zmm (AVX-512), else of 16 registers

template <int W, int CB>
void forward_blocks(const float* xn, const float* w, float* yn, int Ci, int Co, int H, int co) {
  constexpr int L = W < kLanes ? W : kLanes, NV = W / L;
  if constexpr (CB > 1) {
    if (CB * NV > kAccBudget) return forward_blocks<W, CB - 1>(xn, w, yn, Ci, Co, H, co);
  }
  for (; co + CB <= Co; co += CB) forward_block<W, CB>(xn, w, yn, Ci, H, co);
  if constexpr (CB > 1) {
    if (co < Co) forward_blocks<W, CB - 1>(xn, w, yn, Ci, Co, H, co);
  }
}

template <int W>
void forward(const float* xp, const float* w, float* y, int N, int Ci, int Co, int H) {
  const int64_t in_n = (int64_t)Ci * (H + 2) * (W + 2), out_n = (int64_t)Co * H * W;
  for (int n = 0; n < N; ++n) forward_blocks<W, 12>(xp + n * in_n, w, y + n * out_n, Ci, Co, H, 0);
}

// gw[co][ci][kh][kw] = sum over n, h, w of g[n][co][h][w] * xpad[n][ci][h + kh][w + kw]; lane sums to the end.
template <int W>
void weight_grad(const float* xp, const float* g, float* gw, int N, int Ci, int Co, int H) {
  constexpr int L = W < kLanes ? W : kLanes, NV = W / L, PW = W + 2;
  typedef typename Vec<L>::type V;
  const int PH = H + 2;
  for (int co = 0; co < Co; ++co) {
    for (int ci = 0; ci < Ci; ++ci) {
      V acc[9][NV];
      for (int t = 0; t < 9; ++t)
        for (int v = 0; v < NV; ++v) acc[t][v] = V{};
      for (int n = 0; n < N; ++n) {
        const float* gp = g + ((int64_t)n * Co + co) * H * W;
        const float* xq = xp + ((int64_t)n * Ci + ci) * PH * PW;
        for (int h = 0; h < H; ++h) {
          V gv[NV];
          for (int v = 0; v < NV; ++v) gv[v] = load<L>(gp + (int64_t)h * W + v * L);
          for (int kh = 0; kh < 3; ++kh) {
            const float* r = xq + (int64_t)(h + kh) * PW;
            for (int kw = 0; kw < 3; ++kw)
              for (int v = 0; v < NV; ++v) acc[kh * 3 + kw][v] += gv[v] * load<L>(r + kw + v * L);
          }
        }
      }
      for (int t = 0; t < 9; ++t) {
        float s = 0.f;
        for (int v = 0; v < NV; ++v)
          for (int j = 0; j < L; ++j) s += acc[t][v][j];
        gw[((int64_t)co * Ci + ci) * 9 + t] = s;
      }
    }
  }
}

// 1x1 conv of one sample: y[co][:] = sum over ci of w[co][ci] * x[ci][:] (P pixels), CB output channels and
// 4 vectors of pixels at a time; ``ws`` strides w's rows, ``wc`` its columns (a transposed w for the input
// gradient).
template <int CB>
void pointwise_block(const float* x, const float* w, float* y, int Ci, int64_t P, int co0, int ws, int wc) {
  constexpr int L = kLanes, U = 4;
  typedef typename Vec<L>::type V;
  int64_t p = 0;
  for (; p + U * L <= P; p += U * L) {
    V acc[CB][U];
    for (int b = 0; b < CB; ++b)
      for (int u = 0; u < U; ++u) acc[b][u] = V{};
    for (int ci = 0; ci < Ci; ++ci) {
      V xv[U];
      for (int u = 0; u < U; ++u) xv[u] = load<L>(x + ci * P + p + u * L);
      for (int b = 0; b < CB; ++b) {
        const float wv = w[(int64_t)(co0 + b) * ws + (int64_t)ci * wc];
        for (int u = 0; u < U; ++u) acc[b][u] += wv * xv[u];
      }
    }
    for (int b = 0; b < CB; ++b)
      for (int u = 0; u < U; ++u) store<L>(y + (co0 + b) * P + p + u * L, acc[b][u]);
  }
  for (; p < P; ++p) {
    for (int b = 0; b < CB; ++b) {
      float a = 0.f;
      for (int ci = 0; ci < Ci; ++ci) a += w[(int64_t)(co0 + b) * ws + (int64_t)ci * wc] * x[ci * P + p];
      y[(co0 + b) * P + p] = a;
    }
  }
}

void pointwise(const float* x, const float* w, float* y, int N, int Ci, int Co, int64_t P, int ws, int wc) {
  for (int n = 0; n < N; ++n) {
    const float* xn = x + (int64_t)n * Ci * P;
    float* yn = y + (int64_t)n * Co * P;
    int co = 0;
    for (; co + 4 <= Co; co += 4) pointwise_block<4>(xn, w, yn, Ci, P, co, ws, wc);
    for (; co + 2 <= Co; co += 2) pointwise_block<2>(xn, w, yn, Ci, P, co, ws, wc);
    for (; co < Co; ++co) pointwise_block<1>(xn, w, yn, Ci, P, co, ws, wc);
  }
}

// gw[co][ci] = sum over n, pixels of g[n][co][:] * x[n][ci][:]
void pointwise_weight_grad(const float* x, const float* g, float* gw, int N, int Ci, int Co, int64_t P) {
  constexpr int L = kLanes;
  typedef typename Vec<L>::type V;
  for (int co = 0; co < Co; ++co) {
    for (int ci = 0; ci < Ci; ++ci) {
      V acc[2] = {V{}, V{}};
      float tail = 0.f;
      for (int n = 0; n < N; ++n) {
        const float* gp = g + ((int64_t)n * Co + co) * P;
        const float* xp = x + ((int64_t)n * Ci + ci) * P;
        int64_t p = 0;
        for (; p + 2 * L <= P; p += 2 * L) {
          acc[0] += load<L>(gp + p) * load<L>(xp + p);
          acc[1] += load<L>(gp + p + L) * load<L>(xp + p + L);
        }
        for (; p < P; ++p) tail += gp[p] * xp[p];
      }
      float s = tail;
      for (int j = 0; j < L; ++j) s += acc[0][j] + acc[1][j];
      gw[(int64_t)co * Ci + ci] = s;
    }
  }
}

// Batch norm backward (batch statistics) of channel c over N planes of P: one pass for the two sums, one for
// dx = k * g + a * x + b (see nk_batch_norm_backward).
void batch_norm_backward(const float* g, const float* x, const float* mean, const float* invstd, const float* gamma,
                         float* dx, float* dgamma, float* dbeta, int N, int C, int64_t P) {
  constexpr int L = kLanes;
  typedef typename Vec<L>::type V;
  const double M = (double)N * (double)P;
  for (int c = 0; c < C; ++c) {
    const float mu = mean[c];
    V sg[2] = {V{}, V{}}, sgx[2] = {V{}, V{}};
    double tg = 0.0, tgx = 0.0;
    for (int n = 0; n < N; ++n) {
      const float* gp = g + ((int64_t)n * C + c) * P;
      const float* xp = x + ((int64_t)n * C + c) * P;
      int64_t p = 0;
      for (; p + 2 * L <= P; p += 2 * L) {
        for (int u = 0; u < 2; ++u) {
          const V gv = load<L>(gp + p + u * L);
          sg[u] += gv;
          sgx[u] += gv * (load<L>(xp + p + u * L) - mu);
        }
      }
      for (; p < P; ++p) {
        tg += gp[p];
        tgx += (double)gp[p] * (xp[p] - mu);
      }
    }
    for (int j = 0; j < L; ++j) {
      tg += (double)sg[0][j] + sg[1][j];
      tgx += (double)sgx[0][j] + sgx[1][j];
    }
    const double is = invstd[c], gm = gamma ? gamma[c] : 1.0;
    if (dgamma) dgamma[c] = (float)(tgx * is);
    if (dbeta) dbeta[c] = (float)tg;
    if (!dx) continue;
    const float k = (float)(gm * is), a = (float)(-gm * is * is * is * tgx / M);
    const float b = (float)(-(gm * is) * tg / M - (double)a * mu);
    for (int n = 0; n < N; ++n) {
      const float* gp = g + ((int64_t)n * C + c) * P;
      const float* xp = x + ((int64_t)n * C + c) * P;
      float* dp = dx + ((int64_t)n * C + c) * P;
      int64_t p = 0;
      for (; p + L <= P; p += L) store<L>(dp + p, k * load<L>(gp + p) + a * load<L>(xp + p) + b);
      for (; p < P; ++p) dp[p] = k * gp[p] + a * xp[p] + b;
    }
  }
}

// out = post * (3x3 box sum of the zero-padded pre * x), per plane of H x W; pre / post: H x W maps or null.
void box3x3(const float* x, const float* pre, const float* post, float* out, int64_t planes, int H, int W) {
  constexpr int L = kLanes;
  const int PW = W + 2;
  std::vector<float> buf((size_t)(H + 2) * PW, 0.f), rows((size_t)(H + 2) * W);
  for (int64_t p = 0; p < planes; ++p) {
    const float* xp = x + p * H * W;
    for (int h = 0; h < H; ++h) {
      float* r = buf.data() + (int64_t)(h + 1) * PW + 1;
      if (pre)
        for (int j = 0; j < W; ++j) r[j] = xp[h * W + j] * pre[h * W + j];
      else
        std::memcpy(r, xp + (int64_t)h * W, sizeof(float) * W);
    }
    // horizontal sums of 3, then vertical sums of 3
    for (int h = 0; h < H + 2; ++h) {
      const float* b = buf.data() + (int64_t)h * PW;
      float* rr = rows.data() + (int64_t)h * W;
      int j = 0;
      for (; j + L <= W; j += L) store<L>(rr + j, load<L>(b + j) + load<L>(b + j + 1) + load<L>(b + j + 2));
      for (; j < W; ++j) rr[j] = b[j] + b[j + 1] + b[j + 2];
    }
    float* op = out + p * H * W;
    for (int h = 0; h < H; ++h) {
      const float* r0 = rows.data() + (int64_t)h * W;
      int j = 0;
      if (post) {
        for (; j + L <= W; j += L)
          store<L>(op + h * W + j, (load<L>(r0 + j) + load<L>(r0 + W + j) + load<L>(r0 + 2 * W + j)) *
                                       load<L>(post + h * W + j));
        for (; j < W; ++j) op[h * W + j] = (r0[j] + r0[W + j] + r0[2 * W + j]) * post[h * W + j];
      } else {
        for (; j + L <= W; j += L)
          store<L>(op + h * W + j, load<L>(r0 + j) + load<L>(r0 + W + j) + load<L>(r0 + 2 * W + j));
        for (; j < W; ++j) op[h * W + j] = r0[j] + r0[W + j] + r0[2 * W + j];
      }
    }
  }
}

}  // namespace

extern "C" {

int nk_lanes() { return kLanes; }

void nk_pad1(const float* x, float* out, int64_t planes, int H, int W) {
  for (int64_t p = 0; p < planes; ++p) pad_plane(x + p * H * W, out + p * (H + 2) * (W + 2), H, W);
}

#define NK_DISPATCH(F, ...)           \
  switch (W) {                        \
    case 4: F<4>(__VA_ARGS__); break;   \
    case 8: F<8>(__VA_ARGS__); break;   \
    case 16: F<16>(__VA_ARGS__); break; \
    case 32: F<32>(__VA_ARGS__); break; \
    case 64: F<64>(__VA_ARGS__); break; \
    default: return 1;                \
  }                                   \
  return 0;

// xp: N x Ci x (H+2) x (W+2) (nk_pad1's output), w: Co x Ci x 3 x 3, y: N x Co x H x W
int nk_conv3x3_forward(const float* xp, const float* w, float* y, int N, int Ci, int Co, int H, int W) {
  NK_DISPATCH(forward, xp, w, y, N, Ci, Co, H)
}

// xp as above, g: N x Co x H x W, gw: Co x Ci x 3 x 3 (overwritten)
int nk_conv3x3_weight_grad(const float* xp, const float* g, float* gw, int N, int Ci, int Co, int H, int W) {
  NK_DISPATCH(weight_grad, xp, g, gw, N, Ci, Co, H)
}

// x: N x Ci x P, w: Co x Ci (transpose = 0) or Ci x Co (transpose = 1, y = w^T x), y: N x Co x P
void nk_conv1x1(const float* x, const float* w, float* y, int N, int Ci, int Co, int64_t P, int transpose) {
  if (transpose)
    pointwise(x, w, y, N, Ci, Co, P, 1, Co);
  else
    pointwise(x, w, y, N, Ci, Co, P, Ci, 1);
}

// x: N x Ci x P, g: N x Co x P, gw: Co x Ci (overwritten)
void nk_conv1x1_weight_grad(const float* x, const float* g, float* gw, int N, int Ci, int Co, int64_t P) {
  pointwise_weight_grad(x, g, gw, N, Ci, Co, P);
}

// Backward of y = gamma * (x - mean) * invstd + beta with batch statistics (mean, invstd of x over N and P):
// dx (N x C x P), dgamma and dbeta (C); each may be null (not computed).
void nk_batch_norm_backward(const float* g, const float* x, const float* mean, const float* invstd,
                            const float* gamma, float* dx, float* dgamma, float* dbeta, int N, int C, int64_t P) {
  batch_norm_backward(g, x, mean, invstd, gamma, dx, dgamma, dbeta, N, C, P);
}

// out = post * box3x3(pre * x) per plane (see box3x3); the exclude-pad 3x3 average pool and its backward
void nk_box3x3(const float* x, const float* pre, const float* post, float* out, int64_t planes, int H, int W) {
  box3x3(x, pre, post, out, planes, H, W);
}

}  // extern "C"
