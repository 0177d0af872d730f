"""Fused CPU selective scan: generated C, one pass per direction, the state in registers.

The maths is the selective scan of Gu & Dao 2023 (§3.2, Algorithm 2), with the options of mamba-ssm's
``selective_scan_ref``; see :mod:`mamba_kan.ops.selective_scan`. All arrays are time-major and contiguous:
u, delta, z, y: (L, batch, D); B, C: (L, batch, N); A: given transposed, (N, D); D, delta_bias: (D,).

Work split. One *item* is (batch b, a block of DB adjacent channels; DB = one vector register: 8 float32 with
AVX2, 16 with AVX-512). The scan runs sequentially in time for an item with its (N, DB) state in local arrays
(vector registers: DB lanes per state row, N rows unrolled), so no (batch, L, D, N) tensor is ever written. Items
are independent, so threads take contiguous ranges of them, and visit them chunk by chunk: every item's chunk of K
steps, then the next chunk (in reverse for the backward). The items of a batch row are adjacent channels, so a
chunk reads and writes whole rows of its K steps; one item over the whole sequence would touch one 64-byte line
per time step (B D floats apart) and, once the tensors outgrow the caches, wait on memory (the scan at L 4096
took 6x its L 1024 time in that order, 4.3x in this one). Between its chunks an item's forward state is its next
checkpoint, and its backward state (adjoint carry and the dA, dD, d bias sums) sits in a per-thread buffer.

Forward. Per step: dl = softplus(delta + bias) (optional parts), dA = exp(dl A), h = dA h + dl u B_t,
y = <C_t, h> + D u, y *= silu(z). The state entering every chunk of K steps is stored (checkpoints,
(L / K, batch, N, D): 1/K of the full state history).

Backward. Chunks are visited in reverse. A chunk's states are recomputed from its checkpoint into a per-thread
(K, N, DB) buffer together with dA (K, N, DB), dl, sigmoid(delta + bias) and y (K, DB), then the adjoint runs
backwards in time:

    g  = dout * silu(z)                       (dz = dout * y * s (1 + z (1 - s)), s = sigmoid(z))
    dh_t = C_t g_t + dA_{t+1} dh_{t+1}        (the carry dA dh crosses chunk boundaries)
    w  = (dA_t dh_t) h_{t-1}                  (d loss / d (dl A); dA_t dh_t is the carry)
    dl_t = sum_n w A + u sum_n B_t dh_t,  du_t = dl sum_n B_t dh_t + D g,  dA += w dl,  dD += g u
    dB_t[n] = sum_d dh dl u,  dC_t[n] = sum_d h g     (sums over the item's channels; per-thread partials)
    d delta = dl_t * sigmoid(delta + bias) under softplus;  d bias = sum over (t, batch) of d delta

A chunk's du, d delta and dz are buffered and stored after its adjoint: stored per step, they land one time step
(B D elements, 4 KiB at batch 4 x 256 channels) from the next step's loads with the same low 12 address bits, and
the CPU's store-to-load disambiguation stalls those loads (4K aliasing); buffering made the backward ~1.4x faster.

Every channel's gradients are summed in a fixed order for a given thread count, so results are reproducible.

Full float32 items (VL channels, N a multiple of VL) run the explicit-vector code of
:mod:`mamba_kan.ops.kernels.scan_vector` (state and adjoint carry in registers, dB / dC summed over the channels
by a shuffle tree); partial items, other N and float64 run the scalar-loop items below, which do the same
operations lane by lane, so a channel's results do not depend on which code ran it.

exp in float32 is 2^(dl A log2 e) by a degree-6 minimax polynomial (``mk_exp2f``: relative error ~1e-7; the
argument clamped to [-125.5, 127], so no denormal enters the state); softplus uses a vectorisable log1p
(Goldberg's correction, log1p(e) = log(1 + e) e / ((1 + e) - 1)) and returns x above 20 as torch does. float64
uses libm (exact to the last bits; the float64 kernel is the accurate one, not the fast one).
"""

from __future__ import annotations

import ctypes
import functools

import torch
from torch import Tensor

from mamba_kan.ops.kernels import START, STOP, load_kernel, part_ptr, run_kernel, vector_flags, wide_vectors
from mamba_kan.ops.kernels.c_common import c_vec
from mamba_kan.ops.kernels.scan_vector import lane_tree_ok, scan_vector_source

__all__ = ["ScanKernels", "load_scan_kernels", "scan_backward", "scan_forward", "CHECKPOINT_STEPS"]

# Steps per checkpoint chunk of the backward's recomputation: the per-thread buffers (K, N, DB) of states and of
# dA stay in L1/L2 (K 32, N 16, DB 8 / 16, fp32: 2 x 16 / 32 KiB; 16 and 64 steps measured no faster).
CHECKPOINT_STEPS = 32


@functools.cache
def _block(sfx: str) -> int:
    """Channels per item (vector lanes) for a dtype suffix: one 256-bit register of float32 (two of float64),
    or one 512-bit register on AVX-512 machines."""
    return {"f32": 8, "f64": 4}[sfx] * (2 if wide_vectors() else 1)


_HELPERS = r"""
/* Software prefetch, PF time steps ahead. Each step of an item reads one row of DB channels from u, delta, z and
   the output gradient, one time step (batch x D elements, 4 KiB at batch 4 x 256 channels) apart: every row is
   on a new page, where the hardware prefetchers stop. */
#define PF 8
#define PREFETCH(p) __builtin_prefetch((p), 0, 3)
#define PREFETCH_W(p) __builtin_prefetch((p), 1, 3)
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* 2^x: n = round-to-nearest(x) (the 1.5 2^23 trick: the sum's low mantissa bits hold n), 2^(x - n) by a degree-6
   minimax polynomial on [-1/2, 1/2] (relative error 2e-9 before float32 rounding), n added to the exponent
   bits. x is clamped to [-125.5, 127] first: 2^-125.5 (2e-38, the smallest result: the state forgets, and no
   denormal ever enters the recurrence) below, 2^127 above. A NaN gives 2^127: it reaches the state through
   dl u B anyway. The explicit-vector kernels (mamba_kan.ops.kernels.scan_vector) compute the same operations lane by
   lane, so full and partial channel blocks agree bit for bit. */
#define EXP2_C6 1.5350865928414573e-4f
#define EXP2_C5 1.3399974168632864e-3f
#define EXP2_C4 9.618470187088987e-3f
#define EXP2_C3 5.550328643260201e-2f
#define EXP2_C2 2.4022647063763458e-1f
#define EXP2_C1 6.931472058201549e-1f
#define EXP2_C0 1.0f
#define EXP2_ROUND 12582912.0f /* 1.5 2^23 */
#define EXP2_LO -125.5f
#define EXP2_HI 127.0f
static inline float mk_exp2f(float x) {
    float xc = x < EXP2_HI ? x : EXP2_HI; /* vminps, vmaxps */
    xc = xc > EXP2_LO ? xc : EXP2_LO;
    float r = xc + EXP2_ROUND;
    float f = xc - (r - EXP2_ROUND);
    float p = fmaf(EXP2_C6, f, EXP2_C5);
    p = fmaf(p, f, EXP2_C4);
    p = fmaf(p, f, EXP2_C3);
    p = fmaf(p, f, EXP2_C2);
    p = fmaf(p, f, EXP2_C1);
    p = fmaf(p, f, EXP2_C0);
    uint32_t pb, rb;
    memcpy(&pb, &p, 4);
    memcpy(&rb, &r, 4);
    pb += rb << 23; /* r's bits are 0x4B400000 + n: shifted by 23, (n mod 2^9) << 23 */
    memcpy(&p, &pb, 4);
    return p;
}

static inline float mk_expf(float x) { return mk_exp2f(x * 1.44269504088896341f); }

/* log(y) for y >= 1 (Cephes logf): y = m 2^k, m in [sqrt(1/2), sqrt(2)), log m by its degree-9 polynomial. */
static inline float mk_logf_ge1(float y) {
    int32_t bits;
    memcpy(&bits, &y, 4);
    int32_t k = ((bits >> 23) & 0xff) - 126;
    int32_t mb = (bits & 0x807fffff) | 0x3f000000; /* m in [0.5, 1) */
    float m;
    memcpy(&m, &mb, 4);
    float small = m < 0.707106781186547524f ? 1.0f : 0.0f;
    float kf = (float)k - small;
    float x = m + m * small - 1.0f;
    float z = x * x;
    float p = 7.0376836292e-2f;
    p = fmaf(p, x, -1.1514610310e-1f);
    p = fmaf(p, x, 1.1676998740e-1f);
    p = fmaf(p, x, -1.2420140846e-1f);
    p = fmaf(p, x, 1.4249322787e-1f);
    p = fmaf(p, x, -1.6668057665e-1f);
    p = fmaf(p, x, 2.0000714765e-1f);
    p = fmaf(p, x, -2.4999993993e-1f);
    p = fmaf(p, x, 3.3333331174e-1f);
    float yv = p * x * z;
    yv = fmaf(kf, -2.12194440e-4f, yv);
    yv = fmaf(z, -0.5f, yv);
    return fmaf(kf, 0.693359375f, x + yv);
}

/* softplus as torch (threshold 20): x > 20 -> x, else log1p(exp(x)) with Goldberg's log1p correction. */
static inline float mk_softplusf(float x) {
    float e = mk_expf(x < 20.0f ? x : 20.0f);
    float u = 1.0f + e;
    float l = mk_logf_ge1(u);
    float d = u - 1.0f;
    float lp = d == 0.0f ? e : l * (e / d);
    return x > 20.0f ? x : lp;
}

static inline float mk_sigmoidf(float x) { return 1.0f / (1.0f + mk_expf(-x)); }

/* out[n] += sum_j v[n][j] for an (NS, DB) array: generic loop, or on AVX for float32 rows of 8 one transposing
   hadd tree per 8 rows (12 instructions instead of 8 horizontal sums). */
#define LANE_SUMS_GENERIC(v, out, DBV)                                                                      \
    for (int n_ = 0; n_ < NS; ++n_) {                                                                       \
        double s_ = 0;                                                                                     \
        for (int j_ = 0; j_ < DBV; ++j_) s_ += v[n_][j_];                                                 \
        out[n_] += s_;                                                                                     \
    }
#if defined(__AVX__) && NS % 8 == 0
#include <immintrin.h>
static inline __attribute__((always_inline)) void lane_sums_f32(const float* v, float* out, const int db) {
    for (int n = 0; n < NS; n += 8) {
        __m256 r[8];
        for (int k = 0; k < 8; ++k) {
            r[k] = _mm256_loadu_ps(v + (n + k) * db);
            for (int h = 8; h < db; h += 8) r[k] = _mm256_add_ps(r[k], _mm256_loadu_ps(v + (n + k) * db + h));
        }
        __m256 s01 = _mm256_hadd_ps(r[0], r[1]);
        __m256 s23 = _mm256_hadd_ps(r[2], r[3]);
        __m256 s45 = _mm256_hadd_ps(r[4], r[5]);
        __m256 s67 = _mm256_hadd_ps(r[6], r[7]);
        __m256 s03 = _mm256_hadd_ps(s01, s23); /* [rows 0-3, lanes 0-3 | rows 0-3, lanes 4-7] */
        __m256 s47 = _mm256_hadd_ps(s45, s67);
        __m256 t = _mm256_add_ps(_mm256_permute2f128_ps(s03, s47, 0x20), _mm256_permute2f128_ps(s03, s47, 0x31));
        _mm256_storeu_ps(out + n, _mm256_add_ps(_mm256_loadu_ps(out + n), t));
    }
}
#define LANE_SUMS_f32(v, out) lane_sums_f32(&(v)[0][0], (out), DB) /* DB: a multiple of 8 */
#else
#define LANE_SUMS_f32(v, out) LANE_SUMS_GENERIC(v, out, DB)
#endif
#define LANE_SUMS_f64(v, out) LANE_SUMS_GENERIC(v, out, DB)

/* The backward's per-thread chunk buffers in work (2 K NS W + 7 K W elements of type T): the states and dA after
   each step, dl, sigmoid(delta + bias), y before the gate, the buffered du, d delta, dz, the gated output
   gradient. */
#define CHUNK_BUFFERS(T, W)                                                                                 \
    T (*restrict hbuf)[NS][W] = (T (*)[NS][W])work;                                                         \
    T (*restrict abuf)[NS][W] = (T (*)[NS][W])(work + K * NS * W);                                          \
    T (*restrict lbuf)[W] = (T (*)[W])(work + 2 * K * NS * W);                                              \
    T (*restrict sbuf)[W] = (T (*)[W])(work + 2 * K * NS * W + K * W);                                      \
    T (*restrict ybuf)[W] = (T (*)[W])(work + 2 * K * NS * W + 2 * K * W);                                  \
    T (*restrict gub)[W] = (T (*)[W])(work + 2 * K * NS * W + 3 * K * W);                                   \
    T (*restrict gdb)[W] = (T (*)[W])(work + 2 * K * NS * W + 4 * K * W);                                   \
    T (*restrict gzb)[W] = (T (*)[W])(work + 2 * K * NS * W + 5 * K * W);                                   \
    T (*restrict gb)[W] = (T (*)[W])(work + 2 * K * NS * W + 6 * K * W)

static inline double mk_softplusd(double x) { return x > 20.0 ? x : log1p(exp(x)); }
static inline double mk_sigmoidd(double x) { return 1.0 / (1.0 + exp(-x)); }
"""

# The body, once per dtype: REAL, SFX, EXP, SOFTPLUS, SIGMOID, DB substituted; NS = N is a #define.
_BODY = r"""
/* ---- REAL ---- */
#define DB_SFX DB

/* Forward of chunk c of one item: batch b, channels [d0, d0 + W), steps [c K, (c + 1) K). The state entering the
   chunk is its checkpoint (zeros, written, for c = 0); the state leaving it is the next chunk's checkpoint. */
static inline __attribute__((always_inline)) void fwd_item_SFX(
    const REAL* restrict u, const REAL* restrict delta, const REAL* restrict z, const REAL* restrict Bm,
    const REAL* restrict Cm, const REAL* restrict At, const REAL* restrict Dv, const REAL* restrict bias,
    REAL* restrict out, REAL* restrict hck, int64_t L, int64_t Bsz, int64_t D, int64_t K, int64_t b,
    int64_t d0, int64_t c, int64_t flags, const int W)
{
    const int has_z = flags & 1, softplus = (flags >> 1) & 1;
    const int64_t t0 = c * K, t1 = t0 + K < L ? t0 + K : L;
    REAL h[NS][DB], a[NS][DB], dv[DB], bv[DB];
    REAL* restrict hc = hck + (c * Bsz + b) * NS * D + d0;
    for (int n = 0; n < NS; ++n)
#pragma omp simd
        for (int j = 0; j < DB; ++j) {
            h[n][j] = c == 0 || j >= W ? 0 : hc[n * D + j];
            a[n][j] = j < W ? At[n * D + d0 + j] * LOG2E : 0; /* A log2(e): dA = 2^(dl a) */
        }
    if (c == 0)
        for (int n = 0; n < NS; ++n)
#pragma omp simd
            for (int j = 0; j < W; ++j) hc[n * D + j] = 0;
#pragma omp simd
    for (int j = 0; j < DB; ++j) {
        dv[j] = j < W ? Dv[d0 + j] : 0;
        bv[j] = j < W ? bias[d0 + j] : 0;
    }
    for (int64_t t = t0; t < t1; ++t) {
        const int64_t base = (t * Bsz + b) * D + d0;
        const REAL* restrict Bt = Bm + (t * Bsz + b) * NS;
        const REAL* restrict Ct = Cm + (t * Bsz + b) * NS;
        if (t + PF < t1) { /* rows PF steps ahead (see PF) */
            const int64_t ahead = base + PF * Bsz * D;
            PREFETCH(u + ahead);
            PREFETCH(delta + ahead);
            if (has_z) PREFETCH(z + ahead);
            PREFETCH_W(out + ahead);
        }
        REAL dl[DB], du[DB], y[DB], y1[DB]; /* y: two accumulators (even and odd n), as the vector kernels */
#pragma omp simd
        for (int j = 0; j < DB; ++j) {
            REAL uu = j < W ? u[base + j] : 0;
            REAL pre = (j < W ? delta[base + j] : 0) + bv[j];
            dl[j] = softplus ? SOFTPLUS(pre) : pre;
            du[j] = dl[j] * uu;
            y[j] = dv[j] * uu;
            y1[j] = 0;
        }
        for (int n = 0; n < NS; ++n) {
            const REAL bn = Bt[n], cn = Ct[n];
            REAL* restrict yn = n & 1 ? y1 : y;
#pragma omp simd
            for (int j = 0; j < DB; ++j) {
                REAL hn = FMA(EXP2(dl[j] * a[n][j]), h[n][j], du[j] * bn);
                h[n][j] = hn;
                yn[j] = FMA(cn, hn, yn[j]);
            }
        }
#pragma omp simd
        for (int j = 0; j < DB; ++j) y[j] += y1[j];
        if (has_z)
#pragma omp simd
            for (int j = 0; j < DB; ++j) {
                REAL zz = j < W ? z[base + j] : 0;
                y[j] *= zz * SIGMOID(zz);
            }
#pragma omp simd
        for (int j = 0; j < W; ++j) out[base + j] = y[j];
    }
    if (t1 < L) {
        REAL* restrict hn = hck + ((c + 1) * Bsz + b) * NS * D + d0;
        for (int n = 0; n < NS; ++n)
#pragma omp simd
            for (int j = 0; j < W; ++j) hn[n * D + j] = h[n][j];
    }
}

/* Items [item0, item1) chunk by chunk: every item's chunk c, then chunk c + 1. The items of a batch row are
   adjacent channels, so each chunk reads and writes whole rows of its K steps in order (the hardware prefetchers
   follow; one item at a time over the whole sequence would take one 64-byte line every B D 4 bytes, and at
   B D L beyond the caches wait on memory). The per-item arithmetic is the same in either order. */
void scan_fwd_SFX(const REAL* u, const REAL* delta, const REAL* z, const REAL* Bm, const REAL* Cm,
                  const REAL* At, const REAL* Dv, const REAL* bias, REAL* out, REAL* hck, int64_t L, int64_t Bsz,
                  int64_t D, int64_t K, int64_t item0, int64_t item1, int64_t flags)
{
    const int64_t nblk = (D + DB - 1) / DB, nck = (L + K - 1) / K;
    for (int64_t c = 0; c < nck; ++c)
        for (int64_t it = item0; it < item1; ++it) {
            const int64_t b = it / nblk, d0 = (it % nblk) * DB;
            if (d0 + DB <= D)
#ifdef VEC_ITEMS_SFX
                fwd_item_vec(u, delta, z, Bm, Cm, At, Dv, bias, out, hck, L, Bsz, D, K, b, d0, c, flags);
#else
                fwd_item_SFX(u, delta, z, Bm, Cm, At, Dv, bias, out, hck, L, Bsz, D, K, b, d0, c, flags, DB);
#endif
            else
                fwd_item_SFX(u, delta, z, Bm, Cm, At, Dv, bias, out, hck, L, Bsz, D, K, b, d0, c, flags,
                             (int)(D - d0));
        }
}

/* Backward of chunk c of one item. gu, gdelta, gz: (L, Bsz, D), written; gB, gC: (L, Bsz, N), accumulated (+=;
   per-thread partial buffers). work: 2 K NS DB + 7 K DB REALs, per thread. st: the item's state between its
   chunks (ST_REALS: adjoint carry (NS, DB), then the sums for dA (NS, DB), dD (DB), d bias (DB)), zeros before
   its last chunk; scan_bwd adds the sums into gA, gD, gbias after its first. */
static inline __attribute__((always_inline)) void bwd_item_SFX(
    const REAL* restrict u, const REAL* restrict delta, const REAL* restrict z, const REAL* restrict Bm,
    const REAL* restrict Cm, const REAL* restrict At, const REAL* restrict Dv, const REAL* restrict bias,
    const REAL* restrict hck, const REAL* restrict gout, REAL* restrict gu, REAL* restrict gdelta,
    REAL* restrict gz, REAL* restrict gB, REAL* restrict gC, REAL* restrict work, REAL* restrict st,
    int64_t L, int64_t Bsz, int64_t D, int64_t K, int64_t b, int64_t d0, int64_t c, int64_t flags, const int W)
{
    const int has_z = flags & 1, softplus = (flags >> 1) & 1;
    CHUNK_BUFFERS(REAL, DB);
    (void)gb; /* the gated output gradient stays per step here */
    REAL (*restrict carry)[DB] = (REAL (*)[DB])st, (*restrict accA)[DB] = (REAL (*)[DB])(st + NS * DB);
    REAL* restrict accD = st + 2 * NS * DB;
    REAL* restrict accBias = st + 2 * NS * DB + DB;
    REAL a[NS][DB], h0[NS][DB], dv[DB], bv[DB];
    for (int n = 0; n < NS; ++n)
#pragma omp simd
        for (int j = 0; j < DB; ++j) a[n][j] = j < W ? At[n * D + d0 + j] * LOG2E : 0; /* dA = 2^(dl a) */
#pragma omp simd
    for (int j = 0; j < DB; ++j) {
        dv[j] = j < W ? Dv[d0 + j] : 0;
        bv[j] = j < W ? bias[d0 + j] : 0;
    }
    {
        const int64_t t0 = c * K, t1 = t0 + K < L ? t0 + K : L;
        /* recompute the chunk: states after each step, dA, dl, sigmoid(pre), y before the gate */
        const REAL* restrict hc = hck + (c * Bsz + b) * NS * D + d0;
        for (int n = 0; n < NS; ++n)
#pragma omp simd
            for (int j = 0; j < DB; ++j) h0[n][j] = j < W ? hc[n * D + j] : 0;
        for (int64_t t = t0; t < t1; ++t) {
            const int64_t i = t - t0, base = (t * Bsz + b) * D + d0;
            const REAL* restrict Bt = Bm + (t * Bsz + b) * NS;
            const REAL* restrict Ct = Cm + (t * Bsz + b) * NS;
            if (t + PF < t1) {
                const int64_t ahead = base + PF * Bsz * D;
                PREFETCH(u + ahead);
                PREFETCH(delta + ahead);
            }
            PREFETCH(gout + base); /* for the adjoint below, and its stores */
            PREFETCH_W(gu + base);
            PREFETCH_W(gdelta + base);
            if (has_z) {
                PREFETCH(z + base);
                PREFETCH_W(gz + base);
            }
            REAL dl[DB], du[DB], y[DB], y1[DB];
#pragma omp simd
            for (int j = 0; j < DB; ++j) {
                REAL uu = j < W ? u[base + j] : 0;
                REAL pre = (j < W ? delta[base + j] : 0) + bv[j];
                dl[j] = softplus ? SOFTPLUS(pre) : pre;
                sbuf[i][j] = softplus ? SIGMOID(pre) : 1;
                lbuf[i][j] = dl[j];
                du[j] = dl[j] * uu;
                y[j] = dv[j] * uu;
                y1[j] = 0;
            }
            const REAL (*restrict hp)[DB] = i == 0 ? (const REAL (*)[DB])h0 : (const REAL (*)[DB])hbuf[i - 1];
            for (int n = 0; n < NS; ++n) {
                const REAL bn = Bt[n], cn = Ct[n];
                REAL* restrict yn = n & 1 ? y1 : y;
#pragma omp simd
                for (int j = 0; j < DB; ++j) {
                    REAL e = EXP2(dl[j] * a[n][j]);
                    REAL hn = FMA(e, hp[n][j], du[j] * bn);
                    abuf[i][n][j] = e;
                    hbuf[i][n][j] = hn;
                    yn[j] = FMA(cn, hn, yn[j]);
                }
            }
#pragma omp simd
            for (int j = 0; j < DB; ++j) ybuf[i][j] = y[j] + y1[j];
        }
        /* adjoint, backwards in time */
        for (int64_t t = t1 - 1; t >= t0; --t) {
            const int64_t i = t - t0, base = (t * Bsz + b) * D + d0;
            /* this item's rows of the previous chunk, which it recomputes once the other items are through this
               one (they stay in L2 till then: float64 backward ~5% faster with it, B 4, D 256, L 1024) */
            if (t >= K) {
                PREFETCH(u + base - K * Bsz * D);
                PREFETCH(delta + base - K * Bsz * D);
            }
            const REAL* restrict Bt = Bm + (t * Bsz + b) * NS;
            const REAL* restrict Ct = Cm + (t * Bsz + b) * NS;
            REAL* restrict gBt = gB + (t * Bsz + b) * NS;
            REAL* restrict gCt = gC + (t * Bsz + b) * NS;
            REAL g[DB], uu[DB], du[DB], gdl[DB], q[DB];
#pragma omp simd
            for (int j = 0; j < DB; ++j) {
                g[j] = j < W ? gout[base + j] : 0;
                uu[j] = j < W ? u[base + j] : 0;
            }
            if (has_z)
#pragma omp simd
                for (int j = 0; j < DB; ++j) {
                    REAL zz = j < W ? z[base + j] : 0;
                    REAL s = SIGMOID(zz);
                    REAL gzj = g[j] * ybuf[i][j] * s * FMA(zz, 1 - s, 1);
                    gzb[i][j] = gzj;
                    g[j] *= zz * s;
                }
#pragma omp simd
            for (int j = 0; j < DB; ++j) {
                accD[j] = FMA(g[j], uu[j], accD[j]);
                du[j] = lbuf[i][j] * uu[j];
                gdl[j] = 0;
                q[j] = 0;
            }
            const REAL (*restrict hp)[DB] = i == 0 ? (const REAL (*)[DB])h0 : (const REAL (*)[DB])hbuf[i - 1];
            REAL pc[NS][DB], pb[NS][DB]; /* lane products, summed over the lanes below (dC_t, dB_t) */
            for (int n = 0; n < NS; ++n) {
                const REAL bn = Bt[n], cn = Ct[n];
#pragma omp simd
                for (int j = 0; j < DB; ++j) {
                    REAL dh = FMA(cn, g[j], carry[n][j]);
                    pc[n][j] = hbuf[i][n][j] * g[j];
                    REAL cy = abuf[i][n][j] * dh; /* the carry to step t - 1 */
                    REAL w = cy * hp[n][j];
                    gdl[j] = FMA(w, a[n][j], gdl[j]);
                    accA[n][j] = FMA(w, lbuf[i][j], accA[n][j]);
                    q[j] = FMA(bn, dh, q[j]);
                    pb[n][j] = dh * du[j];
                    carry[n][j] = cy;
                }
            }
            LANE_SUMS(pc, gCt);
            LANE_SUMS(pb, gBt);
#pragma omp simd
            for (int j = 0; j < DB; ++j) {
                REAL gd = FMA(q[j], uu[j], gdl[j] * LN2) * sbuf[i][j]; /* sum w A = ln2 sum w a */
                accBias[j] += gd;
                gub[i][j] = FMA(q[j], lbuf[i][j], g[j] * dv[j]);
                gdb[i][j] = gd;
            }
        }
        /* the chunk's input gradients, written once the adjoint is done: stores into rows 4 KiB apart between
           the loads of the next step's rows would alias them (same low 12 address bits) and stall the loads */
        for (int64_t t = t0; t < t1; ++t) {
            const int64_t i = t - t0, base = (t * Bsz + b) * D + d0;
#pragma omp simd
            for (int j = 0; j < W; ++j) {
                gu[base + j] = gub[i][j];
                gdelta[base + j] = gdb[i][j];
            }
            if (has_z)
#pragma omp simd
                for (int j = 0; j < W; ++j) gz[base + j] = gzb[i][j];
        }
    }
}

/* Items [item0, item1) chunk by chunk, last chunk first (see scan_fwd: whole rows of K steps per chunk). */
int scan_bwd_SFX(const REAL* u, const REAL* delta, const REAL* z, const REAL* Bm, const REAL* Cm,
                  const REAL* At, const REAL* Dv, const REAL* bias, const REAL* hck, const REAL* gout, REAL* gu,
                  REAL* gdelta, REAL* gz, REAL* gB, REAL* gC, REAL* gA, REAL* gD, REAL* gbias, int64_t L,
                  int64_t Bsz, int64_t D, int64_t K, int64_t item0, int64_t item1, int64_t flags)
{
    const int64_t nblk = (D + DB - 1) / DB, nck = (L + K - 1) / K, ST_REALS = (2 * NS + 2) * DB;
    REAL* work = (REAL*)malloc(sizeof(REAL) * (size_t)(2 * K * NS * DB + 7 * K * DB));
    REAL* st = (REAL*)calloc((size_t)((item1 - item0) * ST_REALS), sizeof(REAL));
    if (!work || !st) {
        free(work);
        free(st);
        return -1;
    }
    for (int64_t c = nck - 1; c >= 0; --c)
        for (int64_t it = item0; it < item1; ++it) {
            const int64_t b = it / nblk, d0 = (it % nblk) * DB;
            REAL* sti = st + (it - item0) * ST_REALS;
            if (d0 + DB <= D)
#ifdef VEC_ITEMS_SFX
                bwd_item_vec(u, delta, z, Bm, Cm, At, Dv, bias, hck, gout, gu, gdelta, gz, gB, gC, work, sti, L,
                             Bsz, D, K, b, d0, c, flags);
#else
                bwd_item_SFX(u, delta, z, Bm, Cm, At, Dv, bias, hck, gout, gu, gdelta, gz, gB, gC, work, sti, L,
                             Bsz, D, K, b, d0, c, flags, DB);
#endif
            else
                bwd_item_SFX(u, delta, z, Bm, Cm, At, Dv, bias, hck, gout, gu, gdelta, gz, gB, gC, work, sti, L, Bsz, D, K, b, d0, c, flags, (int)(D - d0));
        }
    for (int64_t it = item0; it < item1; ++it) { /* the per-channel sums, into this part's partial buffers */
        const int64_t d0 = (it % nblk) * DB, W = D - d0 < DB ? D - d0 : DB;
        const REAL* sti = st + (it - item0) * ST_REALS;
        for (int n = 0; n < NS; ++n)
            for (int64_t j = 0; j < W; ++j) gA[n * D + d0 + j] += sti[(NS + n) * DB + j];
        for (int64_t j = 0; j < W; ++j) {
            gD[d0 + j] += sti[2 * NS * DB + j];
            gbias[d0 + j] += sti[2 * NS * DB + DB + j];
        }
    }
    free(st);
    free(work);
    return 0;
}
#undef DB
"""

_DTYPES = {
    "f32": {
        "LANE_SUMS": "LANE_SUMS_f32",
        "REAL": "float",
        "EXP2": "mk_exp2f",
        "FMA": "fmaf",
        "LOG2E": "1.44269504088896341f",
        "LN2": "0.693147180559945309f",
        "SOFTPLUS": "mk_softplusf",
        "SIGMOID": "mk_sigmoidf",
    },
    "f64": {
        "LANE_SUMS": "LANE_SUMS_f64",
        "REAL": "double",
        "EXP2": "exp2",
        "FMA": "fma",
        "LOG2E": "1.4426950408889634074",
        "LN2": "0.69314718055994530942",
        "SOFTPLUS": "mk_softplusd",
        "SIGMOID": "mk_sigmoidd",
    },
}


@functools.cache  # generated once per N: the kernels are looked up on every layer call
def scan_source(n_state: int) -> str:
    """C source of the forward and backward kernels, float32 and float64, for state size N = ``n_state``."""
    parts = [f"#define NS {int(n_state)}", _HELPERS]
    lanes = _block("f32")
    if lane_tree_ok(n_state, lanes):  # full float32 items on explicit vectors
        parts += [c_vec(lanes), scan_vector_source(n_state, lanes), "#define VEC_ITEMS_f32 1"]
    for sfx, subs in _DTYPES.items():
        body = _BODY.replace("#define DB_SFX DB", f"#define DB {_block(sfx)}").replace("_SFX", f"_{sfx}")
        for key, val in subs.items():
            body = body.replace(key, val)
        parts.append(body)
    return "\n".join(parts)


# --- build, cache, load (the project's kernels package: verified private cache, one warning on failure) ---------
# -ffinite-math-only lets the exp clamps compile to vmaxps / vminps (NaN inputs still give NaN outputs: they reach
# the state through dl u B); -ffp-contract=fast fuses the multiply-adds (-std=c99 alone turns that off).
EXTRA_FLAGS = ("-ffinite-math-only", "-ffp-contract=fast")


def _extra_flags() -> tuple[str, ...]:
    """EXTRA_FLAGS, plus 512-bit vectors where the item block is one AVX-512 register."""
    return EXTRA_FLAGS + vector_flags()


_P, _I = ctypes.c_void_p, ctypes.c_int64
_SIGNATURES = {
    **{f"scan_fwd_{sfx}": ([_P] * 10 + [_I] * 7, None) for sfx in _DTYPES},
    **{f"scan_bwd_{sfx}": ([_P] * 18 + [_I] * 7, ctypes.c_int) for sfx in _DTYPES},
}
ScanKernels = ctypes.CDLL


def load_scan_kernels(n_state: int) -> ScanKernels | None:
    """The compiled scan kernels for state size N, built on first use and cached; None when unavailable (no
    compiler, build error, or MAMBA_KAN_KERNELS=0): callers then run the PyTorch path."""
    return load_kernel(f"scan_n{int(n_state)}", scan_source(n_state), _extra_flags(), _SIGNATURES)


def _p(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


@functools.cache
def _sfx(dtype: torch.dtype) -> str:
    return {torch.float32: "f32", torch.float64: "f64"}[dtype]


def _items(bsz: int, d: int, dtype: torch.dtype) -> int:
    block = _block(_sfx(dtype))
    return bsz * (-(-d // block))


def scan_forward(
    kernels: ScanKernels,
    u: Tensor,
    delta: Tensor,
    At: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor,
    z: Tensor | None,
    bias: Tensor,
    softplus: bool,
    chunk: int,
) -> tuple[Tensor, Tensor]:
    """(y (L, batch, D), checkpoints (ceil(L / chunk), batch, N, D)); inputs contiguous, time-major, one dtype
    (float32 or float64); At = A^T (N, D); D and bias given (zeros when the caller has none)."""
    L, bsz, d = u.shape
    n = At.shape[0]
    out = torch.empty_like(u)
    hck = torch.empty(-(-L // chunk), bsz, n, d, dtype=u.dtype)
    fn = getattr(kernels, f"scan_fwd_{_sfx(u.dtype)}")
    flags = (1 if z is not None else 0) | (2 if softplus else 0)
    args = [_p(t) for t in (u, delta, z, B, C, At, D, bias, out, hck)]
    if L > 0:  # items [i0, i1) per part: (batch, channel-block) pairs
        run_kernel(fn, [*args, L, bsz, d, chunk, START, STOP, flags], _items(bsz, d, u.dtype),
                   L * n * _block(_sfx(u.dtype)))  # fmt: skip
    return out, hck


def scan_backward(
    kernels: ScanKernels,
    u: Tensor,
    delta: Tensor,
    At: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor,
    z: Tensor | None,
    bias: Tensor,
    softplus: bool,
    chunk: int,
    hck: Tensor,
    gout: Tensor,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients (du, d delta, dz or None, dB, dC, dA^T (N, D), dD, d bias) of the fused forward's output."""
    L, bsz, d = u.shape
    n = At.shape[0]
    n_items = _items(bsz, d, u.dtype)
    parts = max(1, min(torch.get_num_threads(), n_items))  # at most; _run reports how many it used
    gu, gdelta = torch.empty_like(u), torch.empty_like(delta)
    gz = None if z is None else torch.empty_like(z)
    # per-thread partial sums of the gradients that add over channels or over (time, batch)
    gB = torch.zeros(parts, *B.shape, dtype=u.dtype)
    gC = torch.zeros(parts, *C.shape, dtype=u.dtype)
    gA = torch.zeros(parts, n, d, dtype=u.dtype)
    gD = torch.zeros(parts, d, dtype=u.dtype)
    gbias = torch.zeros(parts, d, dtype=u.dtype)
    fn = getattr(kernels, f"scan_bwd_{_sfx(u.dtype)}")
    flags = (1 if z is not None else 0) | (2 if softplus else 0)
    head = [_p(t) for t in (u, delta, z, B, C, At, D, bias, hck, gout, gu, gdelta, gz)]

    sums = [part_ptr(t) for t in (gB, gC, gA, gD, gbias)]  # each part adds into its own slice
    if L > 0:
        parts = run_kernel(fn, [*head, *sums, L, bsz, d, chunk, START, STOP, flags], n_items,
                           L * n * _block(_sfx(u.dtype)), status=True)  # fmt: skip
    if parts == 1:
        return gu, gdelta, gz, gB[0], gC[0], gA[0], gD[0], gbias[0]
    return tuple([gu, gdelta, gz] + [t[:parts].sum(0) for t in (gB, gC, gA, gD, gbias)])  # type: ignore[return-value]
