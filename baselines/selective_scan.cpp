// Mamba's selective scan as one fused CPU loop, forward and backward: `baselines.mamba.selective_scan_fused`.
//
//   h_t = exp(Δ_t A) ⊙ h_{t−1} + (Δ_t u_t) B_tᵀ,   y_t = h_t C_t        h ∈ R^{E·D×N}
//
// Shapes (contiguous): u, delta (B, L, E) with E = E·D; A transposed, At (N, E); Bm, Cm (B, L, N); the states
// h0 and the last state (B, N, E), h0 possibly empty; ∂A is returned as (N, E).
// The torch engine (`selective_scan`) makes ~16 passes over (B, L, N, E·D) tensors in memory; here each
// state lives in a (E, N) buffer per sequence and every gate exp(Δ A) is computed where it is used, so
// nothing of size B·L·E·N is ever stored. The inner loop over N is vectorised by the compiler, the exp
// included (glibc's libmvec, enabled by -ffast-math at compile time only: see `_fused_extension`).
//
// Backward is the adjoint recurrence of `_chunk_backward` in mamba.py (λ_t = ∂h_t + a_{t+1} λ_{t+1}),
// walked in reverse over chunks of kChunk steps whose states are recomputed from a checkpoint taken
// every kChunk steps in a first forward pass: memory per sequence is (L / kChunk + kChunk)·E·N.
#include <torch/extension.h>

#include <cmath>
#include <vector>

namespace {

constexpr int64_t kChunk = 64;

// Inside the kernels the state is laid out (N, E), E contiguous, and A is passed transposed (N, E): the
// vectorised inner loops then run over E (E·D = 2·D channels, long) rather than N (16), and y_t and the
// per-channel gradients accumulate as vectors, with no horizontal sum per channel.

template <typename T>
void step_row(const T* __restrict__ u, const T* __restrict__ delta, const T* __restrict__ An, T b, T* __restrict__ hn,
              T* __restrict__ an_out, T* __restrict__ hn_out, int64_t E) {
  // Row n of one step: h[n, :] = exp(Δ A[n, :]) ⊙ h[n, :] + Δ u b_n, the gates and states also stored if asked.
  if (an_out) {
    for (int64_t e = 0; e < E; ++e) {
      const T a = std::exp(delta[e] * An[e]);
      hn[e] = a * hn[e] + delta[e] * u[e] * b;
      an_out[e] = a;
      hn_out[e] = hn[e];
    }
  } else {
    for (int64_t e = 0; e < E; ++e) hn[e] = std::exp(delta[e] * An[e]) * hn[e] + delta[e] * u[e] * b;
  }
}

template <typename T>
void step(const T* u, const T* delta, const T* At, const T* Bt, T* h, T* a_out, T* h_out, int64_t E, int64_t N) {
  // One step from the state h (N, E), in place; the gates and the new state also written to a_out and
  // h_out (each (N, E)) where those are not null.
  for (int64_t n = 0; n < N; ++n)
    step_row(u, delta, At + n * E, Bt[n], h + n * E, a_out ? a_out + n * E : a_out, h_out ? h_out + n * E : h_out, E);
}

template <typename T>
void accumulate_row(const T* __restrict__ hn, T c, T* __restrict__ y, int64_t E) {
  for (int64_t e = 0; e < E; ++e) y[e] += hn[e] * c;
}

template <typename T>
void adjoint_row(const T* __restrict__ gy, const T* __restrict__ u, const T* __restrict__ delta,
                 const T* __restrict__ An, const T* __restrict__ an, const T* __restrict__ hn,
                 const T* __restrict__ hprev, T b, T c, T* __restrict__ carry, T* __restrict__ gAn,
                 T* __restrict__ gx, T* __restrict__ gd, T* gb_out, T* gc_out, int64_t E) {
  // Row n of one reverse step: λ = ∂h_t + a_{t+1} λ_{t+1} (the latter in carry), and what it contributes to
  // every gradient; carry becomes a_t ⊙ λ_t for the step before.
  T gc = 0, gb = 0;
  for (int64_t e = 0; e < E; ++e) {
    const T l = gy[e] * c + carry[e];  // λ_t
    const T gdA = l * an[e] * hprev[e];  // ∂(Δ_t A)
    gc += hn[e] * gy[e];
    gb += l * delta[e] * u[e];
    gx[e] += l * b;
    gd[e] += gdA * An[e];
    gAn[e] += gdA * delta[e];
    carry[e] = an[e] * l;
  }
  *gb_out = gb;
  *gc_out = gc;
}

template <typename T>
void forward_one(const T* u, const T* delta, const T* At, const T* Bm, const T* Cm, T* y, T* h, int64_t L, int64_t E,
                 int64_t N) {
  // h: (N, E), the state entering step 0 on entry (h0 or zeros), the last state on exit.
  for (int64_t t = 0; t < L; ++t) {
    const T* Ct = Cm + t * N;
    T* yt = y + t * E;
    step(u + t * E, delta + t * E, At, Bm + t * N, h, static_cast<T*>(nullptr), static_cast<T*>(nullptr), E, N);
    for (int64_t e = 0; e < E; ++e) yt[e] = 0;
    for (int64_t n = 0; n < N; ++n) accumulate_row(h + n * E, Ct[n], yt, E);
  }
}

template <typename T>
void backward_one(const T* u, const T* delta, const T* At, const T* Bm, const T* Cm, const T* h0, const T* gy,
                  const T* glast, T* gu, T* gdelta, T* gAt, T* gB, T* gC, T* gh0, int64_t L, int64_t E, int64_t N) {
  const int64_t EN = E * N, chunks = (L + kChunk - 1) / kChunk;
  // The state entering each chunk (a forward pass over all but the last chunk), then, chunk by chunk in
  // reverse, its gates and states recomputed from there and walked back.
  std::vector<T> entering(chunks * EN), h(EN), as(kChunk * EN), hs(kChunk * EN), carry(EN), gx(E), gd(E);
  for (int64_t i = 0; i < EN; ++i) h[i] = h0 ? h0[i] : T(0);
  for (int64_t c = 0; c < chunks; ++c) {
    std::copy(h.begin(), h.end(), entering.begin() + c * EN);
    if (c + 1 < chunks)
      for (int64_t t = c * kChunk; t < (c + 1) * kChunk; ++t)
        step(u + t * E, delta + t * E, At, Bm + t * N, h.data(), static_cast<T*>(nullptr), static_cast<T*>(nullptr), E,
             N);
  }
  // carry = a_{t+1} ⊙ λ_{t+1}, the part of λ_t from later steps; before the last step, ∂ of the last state.
  for (int64_t i = 0; i < EN; ++i) carry[i] = glast ? glast[i] : T(0);
  for (int64_t c = chunks - 1; c >= 0; --c) {
    const int64_t t0 = c * kChunk, t1 = std::min(L, t0 + kChunk);
    std::copy(entering.begin() + c * EN, entering.begin() + (c + 1) * EN, h.begin());
    for (int64_t t = t0; t < t1; ++t)
      step(u + t * E, delta + t * E, At, Bm + t * N, h.data(), as.data() + (t - t0) * EN, hs.data() + (t - t0) * EN, E,
           N);
    for (int64_t t = t1 - 1; t >= t0; --t) {
      const T *ut = u + t * E, *dt = delta + t * E, *gyt = gy + t * E, *Bt = Bm + t * N, *Ct = Cm + t * N;
      const T* at = as.data() + (t - t0) * EN;
      const T* ht = hs.data() + (t - t0) * EN;
      // h_{t-1}: the previous state in this chunk, or the state entering it (h0 or 0 at t = 0).
      const T* hprev = t > t0 ? hs.data() + (t - t0 - 1) * EN : entering.data() + c * EN;
      std::fill(gx.begin(), gx.end(), T(0));
      std::fill(gd.begin(), gd.end(), T(0));
      for (int64_t n = 0; n < N; ++n)
        adjoint_row(gyt, ut, dt, At + n * E, at + n * E, ht + n * E, hprev + n * E, Bt[n], Ct[n], carry.data() + n * E,
                    gAt + n * E, gx.data(), gd.data(), gB + t * N + n, gC + t * N + n, E);
      for (int64_t e = 0; e < E; ++e) {
        gu[t * E + e] = gx[e] * dt[e];
        gdelta[t * E + e] = gd[e] + gx[e] * ut[e];
      }
    }
  }
  if (gh0)
    for (int64_t i = 0; i < EN; ++i) gh0[i] = carry[i];
}

void check(const torch::Tensor& u, const torch::Tensor& delta, const torch::Tensor& A, const torch::Tensor& Bm,
           const torch::Tensor& Cm) {
  for (const auto* t : {&u, &delta, &A, &Bm, &Cm}) {
    TORCH_CHECK(t->device().is_cpu() && t->is_contiguous() && t->scalar_type() == u.scalar_type(),
                "selective_scan_fused: inputs must be contiguous CPU tensors of one dtype");
  }
}

}  // namespace

std::vector<torch::Tensor> forward(torch::Tensor u, torch::Tensor delta, torch::Tensor A, torch::Tensor Bm,
                                   torch::Tensor Cm, torch::Tensor h0) {
  check(u, delta, A, Bm, Cm);
  const int64_t B = u.size(0), L = u.size(1), E = u.size(2), N = A.size(0);
  auto y = torch::empty_like(u);
  auto h = h0.defined() && h0.numel() ? h0.clone() : torch::zeros({B, N, E}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_fused_forward", [&] {
    const auto *pu = u.data_ptr<scalar_t>(), *pd = delta.data_ptr<scalar_t>(), *pA = A.data_ptr<scalar_t>();
    const auto *pB = Bm.data_ptr<scalar_t>(), *pC = Cm.data_ptr<scalar_t>();
    auto *py = y.data_ptr<scalar_t>(), *ph = h.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b)
        forward_one(pu + b * L * E, pd + b * L * E, pA, pB + b * L * N, pC + b * L * N, py + b * L * E,
                    ph + b * E * N, L, E, N);
    });
  });
  return {y, h};
}

std::vector<torch::Tensor> backward(torch::Tensor u, torch::Tensor delta, torch::Tensor A, torch::Tensor Bm,
                                    torch::Tensor Cm, torch::Tensor h0, torch::Tensor grad_y, torch::Tensor grad_last) {
  check(u, delta, A, Bm, Cm);
  const int64_t B = u.size(0), L = u.size(1), E = u.size(2), N = A.size(0);
  const bool has_h0 = h0.defined() && h0.numel(), has_last = grad_last.defined() && grad_last.numel();
  auto gu = torch::empty_like(u), gdelta = torch::empty_like(delta), gB = torch::empty_like(Bm),
       gC = torch::empty_like(Cm);
  auto gA_per_row = torch::zeros({B, N, E}, u.options());  // ∂A per sequence, summed after: no shared writes
  auto gh0 = has_h0 ? torch::empty_like(h0) : torch::Tensor();
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_fused_backward", [&] {
    const auto *pu = u.data_ptr<scalar_t>(), *pd = delta.data_ptr<scalar_t>(), *pA = A.data_ptr<scalar_t>();
    const auto *pB = Bm.data_ptr<scalar_t>(), *pC = Cm.data_ptr<scalar_t>(), *pgy = grad_y.data_ptr<scalar_t>();
    const scalar_t* ph0 = has_h0 ? h0.data_ptr<scalar_t>() : nullptr;
    const scalar_t* pgl = has_last ? grad_last.data_ptr<scalar_t>() : nullptr;
    auto *pgu = gu.data_ptr<scalar_t>(), *pgd = gdelta.data_ptr<scalar_t>(), *pgA = gA_per_row.data_ptr<scalar_t>();
    auto *pgB = gB.data_ptr<scalar_t>(), *pgC = gC.data_ptr<scalar_t>();
    scalar_t* pgh0 = has_h0 ? gh0.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b)
        backward_one(pu + b * L * E, pd + b * L * E, pA, pB + b * L * N, pC + b * L * N,
                     ph0 ? ph0 + b * E * N : nullptr, pgy + b * L * E, pgl ? pgl + b * E * N : nullptr,
                     pgu + b * L * E, pgd + b * L * E, pgA + b * E * N, pgB + b * L * N, pgC + b * L * N,
                     pgh0 ? pgh0 + b * E * N : nullptr, L, E, N);
    });
  });
  return {gu, gdelta, gA_per_row.sum(0), gB, gC, gh0};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "selective scan forward: (y, last state)");
  m.def("backward", &backward, "selective scan backward: (∂u, ∂Δ, ∂A, ∂B, ∂C, ∂h0)");
}
