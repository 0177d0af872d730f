"""Fused causal self-attention for the CPU, float32, small heads: RoPE, causal softmax and the weighted sum in C.

Why: at the sizes the study and the quick preset train (head dim 8-16, L 64-512), PyTorch's CPU
``scaled_dot_product_attention`` spends most of its time on per-block overhead and on layout copies (the
(B, L, 3, H, hd) -> (B, H, L, hd) transposes and RoPE's strided halves), not on the O(L^2 hd) arithmetic. One C
pass per (batch, head) reads q, k, v straight from the qkv projection's (B, L, 3 d) output, rotates them, and
writes y in the (B, L, d) layout the output projection reads.

Maths (Vaswani et al. 2017, §3.2.1, causal; RoPE of Su et al. 2021, §3.4.2, pairs (x[2i], x[2i+1]) rotated by
t theta_i): with Q = rot(q) / sqrt(hd) and K = rot(k), row i of the output is

    s_j = <Q_i, K_j> (j <= i),  m = max_j s_j,  p_j = exp(s_j - m),  l = sum_j p_j,
    y_i = sum_j p_j v_j / l,    lse_i = m + log l   (saved for the backward).

Backward (FlashAttention's recomputation, Dao et al. 2022, Algorithm 4, one block per row): p_j = exp(s_j - lse_i)
is recomputed from Q, K and lse, so no (L, L) matrix comes from the forward; with dO = dy,

    D_i = <dO_i, y_i>,  dp_j = <dO_i, v_j>,  ds_j = p_j (dp_j - D_i),
    dQ_i = sum_j ds_j K_j,  dK_j += ds_j Q_i,  dV_j += p_j dO_i,
    dq = rot^T(dQ) / sqrt(hd),  dk = rot^T(dK)   (rot^T: the rotation by -t theta_i).

Up to TWO_PASS_MAX tokens the backward keeps a head's p and ds rows, (L, L) each in a per-thread buffer, and
sums dK, dV in a second pass, KEY_BLOCK keys at a time with the sums in registers (each product read once);
adding each row's outer products into dK, dV in memory costs a load and a store per multiply-add (~15% slower
at the quick size, measured). Longer heads do the latter.

Both passes take each row's keys up to the end of the diagonal's key block (8 keys forward, KEY_BLOCK backward,
at most L) so that no loop has a scalar tail; the keys right of the diagonal get probability exactly 0, so their
values never enter a result (only a NaN or inf in such a key or value would, as 0 x NaN: a causal leak of
non-finite numbers only, in a model that has already diverged).

Work split: one item = (batch b, head h); items are independent (each owns its rows of dq, dk, dv), so threads
take contiguous ranges of them and the result does not depend on the thread count. Within an item every sum runs
in a fixed order. exp is the vectorisable polynomial of :data:`mamba_kan.ops.kernels.C_EXP` (relative error
~1e-7); accuracy against a float64 evaluation of the same equations is tested (tests/test_attention_kernel.py).
"""

from __future__ import annotations

import ctypes
import functools

import torch
from torch import Tensor

from mamba_kan.ops.kernels import C_EXP, START, STOP, load_kernel, run_kernel

__all__ = ["MAX_HEAD_DIM", "attention_backward", "attention_forward", "load_attention_kernels"]

MAX_HEAD_DIM = 16  # kernels are generated up to this head dim; ops.attention decides where they are used
# keys per block in the backward's dK / dV sums (one AVX-512 or two AVX2 registers per sum row)
KEY_BLOCK = 16
TWO_PASS_MAX = 512  # longest head whose (L, L) probabilities and score gradients the backward keeps (2 MiB)

_SOURCE = r"""
/* Row-major (L, HD) and transposed (HD, L) copies of one head, rotated; x(t) points at element 0 of the head in
   token t, consecutive tokens `stride` floats apart. */
static void load_head(const float* restrict x, int64_t stride, int64_t L, const float* restrict cs,
                      const float* restrict sn, float scale, int rotate, float* restrict rows,
                      float* restrict cols)
{
    for (int64_t t = 0; t < L; ++t) {
        const float* restrict xt = x + t * stride;
        for (int i = 0; i < HD / 2; ++i) {
            float a = xt[2 * i], b = xt[2 * i + 1], ra = a, rb = b;
            if (rotate) {
                const float c = cs[t * (HD / 2) + i], s = sn[t * (HD / 2) + i];
                ra = a * c - b * s;
                rb = a * s + b * c;
            }
            ra *= scale;
            rb *= scale;
            if (rows) {
                rows[t * HD + 2 * i] = ra;
                rows[t * HD + 2 * i + 1] = rb;
            }
            if (cols) {
                cols[(2 * i) * L + t] = ra;
                cols[(2 * i + 1) * L + t] = rb;
            }
        }
    }
}

/* row_scores for the np >= n keys of whole 8-key blocks (np <= L), returning max_{j < n} s[j] as well, kept per
   lane while the scores are in registers (a separate max pass cost ~10% of the forward at L 128, hd 8) */
static inline float row_scores_max(const float* restrict qi, const float* restrict kt, int64_t L, int64_t n,
                                   int64_t np, float* restrict s)
{
    int64_t j0 = 0;
    float mx[8];
    for (int jj = 0; jj < 8; ++jj) mx[jj] = -INFINITY;
    for (; j0 + 8 <= np; j0 += 8) {
        float acc[8];
#pragma omp simd
        for (int jj = 0; jj < 8; ++jj) acc[jj] = qi[0] * kt[j0 + jj];
        for (int d = 1; d < HD; ++d) {
            const float qd = qi[d];
#pragma omp simd
            for (int jj = 0; jj < 8; ++jj) acc[jj] = fmaf(qd, kt[d * L + j0 + jj], acc[jj]);
        }
#pragma omp simd
        for (int jj = 0; jj < 8; ++jj) {
            s[j0 + jj] = acc[jj];
            mx[jj] = acc[jj] > mx[jj] && j0 + jj < n ? acc[jj] : mx[jj];
        }
    }
    float m = mx[0];
    for (int jj = 1; jj < 8; ++jj) m = mx[jj] > m ? mx[jj] : m;
    for (int64_t j = j0; j < np; ++j) {
        float acc = qi[0] * kt[j];
        for (int d = 1; d < HD; ++d) acc = fmaf(qi[d], kt[d * L + j], acc);
        s[j] = acc;
        m = acc > m && j < n ? acc : m;
    }
    return m;
}

/* s[j] = <Q_i, K_j> for j < n (K given transposed, (HD, L)): blocks of 8 keys, the HD products of a block
   accumulated in one register and stored once (row_scores_max without the max, which the compiler drops) */
static inline void row_scores(const float* restrict qi, const float* restrict kt, int64_t L, int64_t n,
                              float* restrict s)
{
    (void)row_scores_max(qi, kt, L, n, n, s);
}

/* out[d] = sum_{j < n} w[j] rows[j][d] for rows (n, HD): four partial sums (j mod 4), so the FMA chains are four
   independent ones of n / 4 instead of one of n. */
static inline void weighted_rows(const float* restrict w, const float* restrict rows, int64_t n,
                                 float* restrict out)
{
    float a0[HD], a1[HD], a2[HD], a3[HD];
    for (int d = 0; d < HD; ++d) a0[d] = a1[d] = a2[d] = a3[d] = 0.0f;
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const float w0 = w[j], w1 = w[j + 1], w2 = w[j + 2], w3 = w[j + 3];
        const float* restrict r = rows + j * HD;
#pragma omp simd
        for (int d = 0; d < HD; ++d) {
            a0[d] = fmaf(w0, r[d], a0[d]);
            a1[d] = fmaf(w1, r[HD + d], a1[d]);
            a2[d] = fmaf(w2, r[2 * HD + d], a2[d]);
            a3[d] = fmaf(w3, r[3 * HD + d], a3[d]);
        }
    }
    for (; j < n; ++j)
#pragma omp simd
        for (int d = 0; d < HD; ++d) a0[d] = fmaf(w[j], rows[j * HD + d], a0[d]);
#pragma omp simd
    for (int d = 0; d < HD; ++d) out[d] = (a0[d] + a1[d]) + (a2[d] + a3[d]);
}

/* dK^T[d][j] = sum_{i >= j} DS[i][j] Q[i][d] and dV^T[d][j] = sum_{i >= j} P[i][j] dO[i][d] (P, DS: (L, L) rows,
   zero right of the diagonal within a key block), KB keys at a time with the 2 HD sums in registers, rows from
   the block's first key down: each (i, j) product is read once, instead of a read-modify-write of dK^T and dV^T
   per query row. dO row i at go + i * gstride. */
static void key_block_grads(const float* restrict P, const float* restrict DS, const float* restrict Q,
                            const float* restrict go, int64_t gstride, int64_t L, float* restrict gKt,
                            float* restrict gVt)
{
    for (int64_t j0 = 0; j0 < L; j0 += KB) {
        const int64_t nb = j0 + KB <= L ? KB : L - j0;
        float ak[HD][KB], av[HD][KB];
        for (int d = 0; d < HD; ++d)
#pragma omp simd
            for (int jj = 0; jj < KB; ++jj) ak[d][jj] = av[d][jj] = 0.0f;
        if (nb == KB)
            for (int64_t i = j0; i < L; ++i) {
                const float* restrict pr = P + i * L + j0;
                const float* restrict dr = DS + i * L + j0;
                const float* restrict qi = Q + i * HD;
                const float* restrict gi = go + i * gstride;
                for (int d = 0; d < HD; ++d) {
                    const float qd = qi[d], gd = gi[d];
#pragma omp simd
                    for (int jj = 0; jj < KB; ++jj) {
                        ak[d][jj] = fmaf(dr[jj], qd, ak[d][jj]);
                        av[d][jj] = fmaf(pr[jj], gd, av[d][jj]);
                    }
                }
            }
        else /* the last, partial block */
            for (int64_t i = j0; i < L; ++i)
                for (int d = 0; d < HD; ++d)
                    for (int jj = 0; jj < nb; ++jj) {
                        ak[d][jj] = fmaf(DS[i * L + j0 + jj], Q[i * HD + d], ak[d][jj]);
                        av[d][jj] = fmaf(P[i * L + j0 + jj], go[i * gstride + d], av[d][jj]);
                    }
        for (int d = 0; d < HD; ++d)
            for (int jj = 0; jj < nb; ++jj) {
                gKt[d * L + j0 + jj] = ak[d][jj];
                gVt[d * L + j0 + jj] = av[d][jj];
            }
    }
}

/* qkv: (B, L, 3, H, HD); cs, sn: (L, HD/2); y: (B, L, H, HD); lse: (B, H, L). Items [item0, item1) of B*H. */
int attn_fwd(const float* qkv, const float* cs, const float* sn, float* y, float* lse, int64_t B, int64_t L,
             int64_t H, int64_t item0, int64_t item1)
{
    const float scale = 1.0f / sqrtf((float)HD);
    const int64_t stride = 3 * H * HD;
    float* work = (float*)malloc(sizeof(float) * (size_t)(3 * L * HD + L));
    if (!work) return -1;
    float *Q = work, *Kt = Q + L * HD, *V = Kt + L * HD, *s = V + L * HD;
    for (int64_t it = item0; it < item1; ++it) {
        const int64_t b = it / H, h = it % H;
        const float* base = qkv + b * L * stride + h * HD;
        load_head(base, stride, L, cs, sn, scale, 1, Q, NULL);
        load_head(base + H * HD, stride, L, cs, sn, 1.0f, 1, NULL, Kt);
        load_head(base + 2 * H * HD, stride, L, cs, sn, 1.0f, 0, V, NULL);
        for (int64_t i = 0; i < L; ++i) {
            const int64_t n = i + 1;
            /* keys up to the end of the diagonal's 8-key block (at most L), those right of it with p = 0: no
               loop has a scalar tail */
            const int64_t np = (n + 7) / 8 * 8 < L ? (n + 7) / 8 * 8 : L;
            const float m = row_scores_max(Q + i * HD, Kt, L, n, np, s);
            float l = 0.0f;
#pragma omp simd reduction(+ : l)
            for (int64_t j = 0; j < np; ++j) {
                const float p = j < n ? mk_exp(s[j] - m) : 0.0f;
                s[j] = p;
                l += p;
            }
            float o[HD];
            weighted_rows(s, V, np, o);
            const float inv = 1.0f / l;
            float* restrict yi = y + ((b * L + i) * H + h) * HD;
            for (int d = 0; d < HD; ++d) yi[d] = o[d] * inv;
            lse[(b * H + h) * L + i] = m + logf(l);
        }
    }
    free(work);
    return 0;
}

/* Gradients of attn_fwd: gy (B, L, H, HD) -> gqkv (B, L, 3, H, HD), written. */
int attn_bwd(const float* qkv, const float* cs, const float* sn, const float* y, const float* lse,
             const float* gy, float* gqkv, int64_t B, int64_t L, int64_t H, int64_t item0, int64_t item1)
{
    const float scale = 1.0f / sqrtf((float)HD);
    const int64_t stride = 3 * H * HD;
    /* up to TWO_PASS_MAX tokens the probabilities and score gradients of a head are kept, (L, L) each, and dK,
       dV summed key block by key block in registers (see key_block_grads); longer heads add the outer products
       of each query row into dK^T, dV^T directly */
    const int two_pass = L <= TWO_PASS_MAX;
    const int64_t rows = two_pass ? L : 1;
    float* work = (float*)malloc(sizeof(float) * (size_t)(6 * L * HD + 2 * L * rows));
    if (!work) return -1;
    float *Q = work, *K = Q + L * HD, *Kt = K + L * HD, *Vt = Kt + L * HD, *gKt = Vt + L * HD;
    float *gVt = gKt + L * HD, *P = gVt + L * HD, *DS = P + L * rows;
    for (int64_t it = item0; it < item1; ++it) {
        const int64_t b = it / H, h = it % H;
        const float* base = qkv + b * L * stride + h * HD;
        load_head(base, stride, L, cs, sn, scale, 1, Q, NULL);
        load_head(base + H * HD, stride, L, cs, sn, 1.0f, 1, K, Kt);
        load_head(base + 2 * H * HD, stride, L, cs, sn, 1.0f, 0, NULL, Vt);
        memset(gKt, 0, sizeof(float) * (size_t)(2 * L * HD));
        float* gbase = gqkv + b * L * stride + h * HD;
        for (int64_t i = 0; i < L; ++i) {
            const int64_t n = i + 1;
            float* restrict p = P + (two_pass ? i * L : 0);
            float* restrict ds = DS + (two_pass ? i * L : 0);
            const float* restrict go = gy + ((b * L + i) * H + h) * HD;
            const float* restrict yi = y + ((b * L + i) * H + h) * HD;
            const float li = lse[(b * H + h) * L + i];
            float Di = 0.0f;
            for (int d = 0; d < HD; ++d) Di = fmaf(go[d], yi[d], Di);
            /* keys up to the end of the row's last key block (at most L): those right of the diagonal get p = ds
               = 0 exactly (key_block_grads reads them), and the loops below have no scalar tails */
            const int64_t block_end = (n + KB - 1) / KB * KB < L ? (n + KB - 1) / KB * KB : L;
            const int64_t np = two_pass ? block_end : n;
            row_scores(Q + i * HD, Kt, L, np, p);
            row_scores(go, Vt, L, np, ds); /* dp_j = <dO_i, v_j> */
#pragma omp simd
            for (int64_t j = 0; j < np; ++j) {
                const float pj = j < n ? mk_exp(p[j] - li) : 0.0f;
                p[j] = pj;
                ds[j] = pj * (ds[j] - Di);
            }
            float gq[HD];
            weighted_rows(ds, K, np, gq);
            if (!two_pass)
                for (int d = 0; d < HD; ++d) {
                    const float qd = Q[i * HD + d], gd = go[d];
                    float* restrict gk = gKt + d * L;
                    float* restrict gv = gVt + d * L;
#pragma omp simd
                    for (int64_t j = 0; j < n; ++j) {
                        gk[j] = fmaf(ds[j], qd, gk[j]);
                        gv[j] = fmaf(p[j], gd, gv[j]);
                    }
                }
            /* dq = rot^T(dQ) / sqrt(hd) */
            float* restrict gqi = gbase + i * stride;
            for (int c = 0; c < HD / 2; ++c) {
                const float co = cs[i * (HD / 2) + c], si = sn[i * (HD / 2) + c];
                const float a = gq[2 * c], bb = gq[2 * c + 1];
                gqi[2 * c] = (a * co + bb * si) * scale;
                gqi[2 * c + 1] = (bb * co - a * si) * scale;
            }
        }
        if (two_pass) key_block_grads(P, DS, Q, gy + (b * L * H + h) * HD, H * HD, L, gKt, gVt);
        for (int64_t t = 0; t < L; ++t) {
            float* restrict gk = gbase + t * stride + H * HD;
            float* restrict gv = gbase + t * stride + 2 * H * HD;
            for (int c = 0; c < HD / 2; ++c) {
                const float co = cs[t * (HD / 2) + c], si = sn[t * (HD / 2) + c];
                const float a = gKt[(2 * c) * L + t], bb = gKt[(2 * c + 1) * L + t];
                gk[2 * c] = a * co + bb * si;
                gk[2 * c + 1] = bb * co - a * si;
            }
            for (int d = 0; d < HD; ++d) gv[d] = gVt[d * L + t];
        }
    }
    free(work);
    return 0;
}
"""

# -ffp-contract=fast: fuse the remaining multiply-adds (-std=c99 alone turns contraction off)
EXTRA_FLAGS = ("-ffp-contract=fast",)
_P, _I = ctypes.c_void_p, ctypes.c_int64
_SIGNATURES = {
    "attn_fwd": ([_P] * 5 + [_I] * 5, ctypes.c_int),
    "attn_bwd": ([_P] * 7 + [_I] * 5, ctypes.c_int),
}


@functools.cache  # generated once per head dimension: the kernels are looked up on every call
def attention_source(head_dim: int) -> str:
    """C source of the forward and backward kernels for one (even) head dimension."""
    return (
        f"#define HD {int(head_dim)}\n#define KB {KEY_BLOCK}\n#define TWO_PASS_MAX {TWO_PASS_MAX}\n"
        + C_EXP
        + _SOURCE
    )


def load_attention_kernels(head_dim: int) -> ctypes.CDLL | None:
    """The compiled kernels for this head dimension (even, <= :data:`MAX_HEAD_DIM`), or None when unavailable
    (no compiler, build error, ``MAMBA_KAN_KERNELS=0``) or the head dimension is out of the kernels' range."""
    if head_dim % 2 or not 2 <= head_dim <= MAX_HEAD_DIM:
        return None
    return load_kernel(f"attn_hd{int(head_dim)}", attention_source(head_dim), EXTRA_FLAGS, _SIGNATURES)


def _work(length: int, head_dim: int) -> int:
    """Multiply-adds per item (row_elems for run_kernel's split): about L^2 / 2 rows x hd."""
    return max(1, length * (length + 1) // 2 * head_dim)


def attention_forward(
    kernels: ctypes.CDLL, qkv: Tensor, cos: Tensor, sin: Tensor, n_heads: int
) -> tuple[Tensor, Tensor]:
    """(y (B, L, d), lse (B, H, L)) for qkv (B, L, 3 d) contiguous float32 and RoPE tables (L, hd / 2)."""
    bsz, length, three_d = qkv.shape
    d = three_d // 3
    y = torch.empty(bsz, length, d, dtype=qkv.dtype)
    lse = torch.empty(bsz, n_heads, length, dtype=qkv.dtype)
    args = [t.data_ptr() for t in (qkv, cos, sin, y, lse)]

    if length > 0:  # (batch, head) items [i0, i1) per part
        run_kernel(kernels.attn_fwd, [*args, bsz, length, n_heads, START, STOP], bsz * n_heads,
                   _work(length, d // n_heads), status=True)  # fmt: skip
    return y, lse


def attention_backward(
    kernels: ctypes.CDLL,
    qkv: Tensor,
    cos: Tensor,
    sin: Tensor,
    y: Tensor,
    lse: Tensor,
    gy: Tensor,
    n_heads: int,
) -> Tensor:
    """d loss / d qkv (B, L, 3 d) for the output gradient ``gy`` (B, L, d) of :func:`attention_forward`."""
    bsz, length, _ = qkv.shape
    gqkv = torch.empty_like(qkv)
    args = [t.data_ptr() for t in (qkv, cos, sin, y, lse, gy, gqkv)]

    if length > 0:
        run_kernel(kernels.attn_bwd, [*args, bsz, length, n_heads, START, STOP], bsz * n_heads,
                   _work(length, qkv.shape[-1] // 3 // n_heads), status=True)  # fmt: skip
    return gqkv
