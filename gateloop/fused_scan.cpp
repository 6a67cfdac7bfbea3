// Max-headed GateLoop (K = V = 1) as one fused CPU loop, forward and backward: `gateloop.fused.gateloop_scan_fused`.
//
//   S_n = a_n S_{n-1} + k_n v_n,   y_n = q_n Re S_n        per channel h, S and a complex
//
// Shapes (contiguous, one real dtype): q, k, v (B, L, H); the gate a as torch.view_as_real of its complex
// tensor, (B, L, H, 2) interleaved (and ∂a likewise); the initial state as sr0, si0 (B, H) or empty. The
// state is kept as separate real and imaginary arrays, so that the loop over the H channels vectorises.
//
// Backward is the adjoint recurrence of gateloop/elementwise.py (with conj: PyTorch's gradient of a
// complex tensor is the conjugate Wirtinger derivative):
//   λ_n = ∂S_n + conj(a_{n+1}) λ_{n+1},  ∂(k v)_n = Re λ_n,  ∂a_n = conj(S_{n-1}) λ_n,  ∂S_{-1} = conj(a_0) λ_0,
// walked in reverse over chunks of kChunk steps whose states are recomputed from the checkpoints the
// forward stored, the state entering every chunk (B, chunks, H) as real and imaginary parts: memory per
// sequence is (L / kChunk + kChunk)·H complex numbers, and backward walks the states twice (recompute,
// adjoint), not three times.
#include <torch/extension.h>

#include <vector>

namespace {

constexpr int64_t kChunk = 64;

template <typename T>
void step(const T* __restrict__ k, const T* __restrict__ v, const T* __restrict__ a, T* __restrict__ sr,
          T* __restrict__ si, int64_t H) {
  // a: the step's H gates, interleaved (re, im) as PyTorch stores complex numbers
  for (int64_t h = 0; h < H; ++h) {
    const T ar = a[2 * h], ai = a[2 * h + 1];
    const T r = ar * sr[h] - ai * si[h] + k[h] * v[h];
    si[h] = ar * si[h] + ai * sr[h];
    sr[h] = r;
  }
}

template <typename T>
void readout(const T* __restrict__ q, const T* __restrict__ sr, T* __restrict__ y, int64_t H) {
  for (int64_t h = 0; h < H; ++h) y[h] = q[h] * sr[h];
}

template <typename T>
void adjoint(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, const T* __restrict__ a,
             const T* __restrict__ sr, const T* __restrict__ pr, const T* __restrict__ pi, const T* __restrict__ gy,
             T* __restrict__ cr, T* __restrict__ ci, T* __restrict__ gq, T* __restrict__ gk, T* __restrict__ gv,
             T* __restrict__ ga, int64_t H) {
  // One reverse step. (sr: Re S_n; pr, pi: S_{n-1}; cr, ci: conj(a_{n+1}) λ_{n+1} on entry, conj(a_n) λ_n on exit.)
  for (int64_t h = 0; h < H; ++h) {
    const T lr = q[h] * gy[h] + cr[h], li = ci[h];  // λ_n; ∂S_n from the readout is real
    gq[h] = gy[h] * sr[h];
    gk[h] = lr * v[h];
    gv[h] = lr * k[h];
    const T ar = a[2 * h], ai = a[2 * h + 1];
    ga[2 * h] = pr[h] * lr + pi[h] * li;  // conj(S_{n-1}) λ_n, interleaved like a
    ga[2 * h + 1] = pr[h] * li - pi[h] * lr;
    cr[h] = ar * lr + ai * li;  // conj(a_n) λ_n
    ci[h] = ar * li - ai * lr;
  }
}

template <typename T>
void forward_one(const T* q, const T* k, const T* v, const T* a, T* y, T* sr, T* si, T* er, T* ei, int64_t L,
                 int64_t H) {
  // er, ei: (chunks, H), the state entering each chunk of kChunk steps (backward's checkpoints)
  for (int64_t t = 0; t < L; ++t) {
    if (t % kChunk == 0) {
      std::copy(sr, sr + H, er + (t / kChunk) * H);
      std::copy(si, si + H, ei + (t / kChunk) * H);
    }
    step(k + t * H, v + t * H, a + 2 * t * H, sr, si, H);
    readout(q + t * H, sr, y + t * H, H);
  }
}

template <typename T>
void backward_one(const T* q, const T* k, const T* v, const T* a, const T* er, const T* ei, const T* gy,
                  const T* glr, const T* gli, T* gq, T* gk, T* gv, T* ga, T* gsr0, T* gsi0, int64_t L, int64_t H) {
  const int64_t chunks = (L + kChunk - 1) / kChunk;
  // er, ei: the forward's checkpoints, the state entering each chunk; hr, hi: the states of one chunk.
  std::vector<T> sr(H), si(H), hr(kChunk * H), hi(kChunk * H), cr(H), ci(H);
  for (int64_t h = 0; h < H; ++h) {
    cr[h] = glr ? glr[h] : T(0);
    ci[h] = gli ? gli[h] : T(0);
  }
  for (int64_t c = chunks - 1; c >= 0; --c) {
    const int64_t t0 = c * kChunk, t1 = std::min(L, t0 + kChunk);
    std::copy(er + c * H, er + (c + 1) * H, sr.begin());
    std::copy(ei + c * H, ei + (c + 1) * H, si.begin());
    for (int64_t t = t0; t < t1; ++t) {
      step(k + t * H, v + t * H, a + 2 * t * H, sr.data(), si.data(), H);
      std::copy(sr.begin(), sr.end(), hr.begin() + (t - t0) * H);
      std::copy(si.begin(), si.end(), hi.begin() + (t - t0) * H);
    }
    for (int64_t t = t1 - 1; t >= t0; --t) {
      const T* pr = t > t0 ? hr.data() + (t - t0 - 1) * H : er + c * H;
      const T* pi = t > t0 ? hi.data() + (t - t0 - 1) * H : ei + c * H;
      const int64_t o = t * H;
      adjoint(q + o, k + o, v + o, a + 2 * o, hr.data() + (t - t0) * H, pr, pi, gy + o, cr.data(), ci.data(),
              gq + o, gk + o, gv + o, ga + 2 * o, H);
    }
  }
  if (gsr0)
    for (int64_t h = 0; h < H; ++h) {
      gsr0[h] = cr[h];
      gsi0[h] = ci[h];
    }
}

void check(std::initializer_list<const torch::Tensor*> tensors) {
  const auto dtype = (*tensors.begin())->scalar_type();
  for (const auto* t : tensors)
    TORCH_CHECK(t->device().is_cpu() && t->is_contiguous() && t->scalar_type() == dtype,
                "gateloop_scan_fused: inputs must be contiguous CPU tensors of one real dtype");
}

}  // namespace

std::vector<torch::Tensor> forward(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor a,
                                   torch::Tensor sr0, torch::Tensor si0) {
  check({&q, &k, &v, &a});
  const int64_t B = q.size(0), L = q.size(1), H = q.size(2);
  const int64_t chunks = (L + kChunk - 1) / kChunk;
  auto y = torch::empty_like(q);
  auto sr = sr0.numel() ? sr0.clone() : torch::zeros({B, H}, q.options());
  auto si = si0.numel() ? si0.clone() : torch::zeros({B, H}, q.options());
  auto er = torch::empty({B, chunks, H}, q.options()), ei = torch::empty({B, chunks, H}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "gateloop_scan_fused_forward", [&] {
    const auto *pq = q.data_ptr<scalar_t>(), *pk = k.data_ptr<scalar_t>(), *pv = v.data_ptr<scalar_t>();
    const auto* pa = a.data_ptr<scalar_t>();
    auto *py = y.data_ptr<scalar_t>(), *psr = sr.data_ptr<scalar_t>(), *psi = si.data_ptr<scalar_t>();
    auto *per = er.data_ptr<scalar_t>(), *pei = ei.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const int64_t o = b * L * H, e = b * chunks * H;
        forward_one(pq + o, pk + o, pv + o, pa + 2 * o, py + o, psr + b * H, psi + b * H, per + e, pei + e, L, H);
      }
    });
  });
  return {y, sr, si, er, ei};
}

std::vector<torch::Tensor> backward(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor a,
                                    torch::Tensor er, torch::Tensor ei, torch::Tensor gy, torch::Tensor glr,
                                    torch::Tensor gli) {
  // er, ei: the checkpoints `forward` returned
  check({&q, &k, &v, &a, &gy, &er, &ei});
  const int64_t B = q.size(0), L = q.size(1), H = q.size(2), chunks = (L + kChunk - 1) / kChunk;
  TORCH_CHECK(er.numel() == B * chunks * H && ei.numel() == B * chunks * H,
              "gateloop_scan_fused: checkpoints of another shape than forward's");
  const bool has_last = glr.numel() > 0;
  auto gq = torch::empty_like(q), gk = torch::empty_like(k), gv = torch::empty_like(v), ga = torch::empty_like(a);
  auto gsr0 = torch::zeros({B, H}, q.options()), gsi0 = torch::zeros({B, H}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "gateloop_scan_fused_backward", [&] {
    const auto *pq = q.data_ptr<scalar_t>(), *pk = k.data_ptr<scalar_t>(), *pv = v.data_ptr<scalar_t>();
    const auto *pa = a.data_ptr<scalar_t>(), *pgy = gy.data_ptr<scalar_t>();
    const auto *per = er.data_ptr<scalar_t>(), *pei = ei.data_ptr<scalar_t>();
    const scalar_t* pglr = has_last ? glr.data_ptr<scalar_t>() : nullptr;
    const scalar_t* pgli = has_last ? gli.data_ptr<scalar_t>() : nullptr;
    auto *pgq = gq.data_ptr<scalar_t>(), *pgk = gk.data_ptr<scalar_t>(), *pgv = gv.data_ptr<scalar_t>();
    auto* pga = ga.data_ptr<scalar_t>();
    auto *pgsr0 = gsr0.data_ptr<scalar_t>(), *pgsi0 = gsi0.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const int64_t o = b * L * H, s = b * H, e = b * chunks * H;
        backward_one(pq + o, pk + o, pv + o, pa + 2 * o, per + e, pei + e, pgy + o, pglr ? pglr + s : nullptr, pgli ? pgli + s : nullptr, pgq + o, pgk + o, pgv + o,
                     pga + 2 * o, pgsr0 + s, pgsi0 + s, L, H);
      }
    });
  });
  return {gq, gk, gv, ga, gsr0, gsi0};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "max-headed GateLoop forward: (y, Re S_L, Im S_L, checkpoints re, im)");
  m.def("backward", &backward, "max-headed GateLoop backward: (∂q, ∂k, ∂v, ∂a as real view, ∂Re S0, ∂Im S0)");
}
