"""C source of the fused selective scan's float32 items on explicit vectors (one item = VL channels).

The scalar-loop items of :mod:`mamba_kan.ops.scan_kernel` leave the vectorising to gcc, which keeps the (N, VL)
state and the output accumulator in memory (a store and a reload per state update, and a store-to-load
round trip in every chain) and spends about 19 instructions on each exp. Here the code is generated with one named
vector per state row (``h0 .. h{N-1}``: the state and the backward's adjoint carry live in registers), the exp is
the same operations as ``mk_exp2f`` on whole vectors (about 13 instructions), and the backward's sums over the
item's channels (dB_t, dC_t) are a tree of two-source shuffles fed as the rows are produced, VL rows into one
vector of VL sums, instead of stores and a horizontal pass over them.

Every operation, and every rounding, is the one the scalar items do lane by lane (the same explicit fmas, the same
two output accumulators for even and odd n, the same softplus / sigmoid code), so full channel blocks (here) and
partial ones (the scalar items) give the same float32 numbers; only the order of the channel sums of dB and dC
differs (the tree here, a sequential sum there). Used when N is a multiple of VL (the tree works on groups of VL
rows); other N run the scalar items.
"""

from __future__ import annotations

__all__ = ["scan_vector_source", "lane_tree_ok"]


def lane_tree_ok(n_state: int, lanes: int) -> bool:
    """Whether the vector items exist for this state size (N a multiple of the lanes)."""
    return n_state % lanes == 0


def _combine_indices(level: int, lanes: int) -> tuple[list[int], list[int]]:
    """Shuffle indices that pair vectors A, B at tree ``level``: each holds 2^level rows of ``w = lanes >> level``
    partial sums in contiguous lanes; lo takes the first half of every row's partials (A's rows, then B's), hi the
    second half, so lo + hi holds 2^(level+1) rows of w / 2 partials in the same row order."""
    w = lanes >> level
    rows = 1 << level
    lo = [src + r * w + k for src in (0, lanes) for r in range(rows) for k in range(w // 2)]
    hi = [i + w // 2 for i in lo]
    return lo, hi


class _Tree:
    """Code for the streaming reduction of rows 0..N-1 (one vector each, pushed in order) into N sums: a binary
    counter of pending partial vectors, at most log2(VL) + 1 alive."""

    def __init__(self, name: str, lanes: int, out: str) -> None:
        self.name, self.lanes, self.out = name, lanes, out
        self.stack: list[tuple[int, str]] = []  # (level, C variable)

    def push(self, expr: str, row: int) -> list[str]:
        code = []
        var = f"{self.name}_{row}"
        code.append(f"vf {var} = {expr};")
        level = 0
        while self.stack and self.stack[-1][0] == level:
            _, prev = self.stack.pop()
            lo, hi = _combine_indices(level, self.lanes)
            new = f"{self.name}_{row}_{level + 1}"
            code.append(
                f"vf {new} = SHUF({prev}, {var}, {', '.join(map(str, lo))}) + "
                f"SHUF({prev}, {var}, {', '.join(map(str, hi))});"
            )
            var, level = new, level + 1
        if (1 << level) == self.lanes:  # VL rows summed: rows [row + 1 - VL, row]
            first = row + 1 - self.lanes
            code.append(f"vst({self.out} + {first}, vld({self.out} + {first}) + {var});")
        else:
            self.stack.append((level, var))
        return code


def _rows(fmt: str, n_state: int) -> str:
    return "\n".join(fmt.format(n=n) for n in range(n_state))


def _decl(prefix: str, n_state: int, init: str) -> str:
    return "vf " + ", ".join(f"{prefix}{n} = " + init.format(n=n) for n in range(n_state)) + ";"


def _forward_steps(n_state: int, store: bool) -> str:
    """The per-n state updates of one time step (h{n} in registers); with ``store`` (the backward's recompute) dA
    and the new state also go to the chunk buffers."""
    lines = []
    for n in range(n_state):
        y = "y1" if n & 1 else "y0"
        lines.append(f"{{ const vf e = vexp2s(dl * a[{n}]);")
        lines.append(f"  h{n} = vfma(e, h{n}, du * vbcast(Bt + {n}));")
        if store:
            lines.append(f"  vst(abuf[i][{n}], e); vst(hbuf[i][{n}], h{n});")
        lines.append(f"  {y} = vfma(vbcast(Ct + {n}), h{n}, {y}); }}")
    return "\n".join(lines)


def _adjoint_steps(n_state: int, lanes: int) -> str:
    """The per-n adjoint of one time step: carry c{n} in registers, the dC / dB lane products into their trees."""
    tc, tb = _Tree("pc", lanes, "gCt"), _Tree("pb", lanes, "gBt")
    lines = []
    for n in range(n_state):  # no braces: the trees' pending partials outlive a row
        lines.append(f"const vf dh{n} = vfma(vbcast(Ct + {n}), g, c{n});")
        lines.append(f"c{n} = vld(abuf[i][{n}]) * dh{n};")
        lines.append(f"const vf w{n} = c{n} * vld(hp[{n}]);")
        lines.append(f"gdl = vfma(w{n}, a[{n}], gdl);")
        lines.append(f"accA[{n}] = vfma(w{n}, dl, accA[{n}]);")
        lines.append(f"q = vfma(vbcast(Bt + {n}), dh{n}, q);")
        lines += tc.push(f"vld(hbuf[i][{n}]) * g", n)
        lines += tb.push(f"dh{n} * du", n)
    return "\n".join(lines)


_HEAD = r"""
/* ---- float32 items on explicit vectors (mamba_kan.ops.kernels.scan_vector) ---- */
#if defined(__clang__) || __GNUC__ >= 12
#define SHUF(a, b, ...) __builtin_shufflevector((a), (b), __VA_ARGS__)
#else
#define SHUF(a, b, ...) __builtin_shuffle((a), (b), (vi){__VA_ARGS__})
#endif
/* *p in every lane, as a load (a broadcast from memory costs no vector ALU slot; spelled as asm because gcc
   otherwise merges the loads of consecutive B_t[n], C_t[n] into one vector load and a permute per n) */
static inline __attribute__((always_inline)) vf vbcast(const float* p) {
#if defined(__AVX2__) && (VL == 8 || (VL == 16 && defined(__AVX512F__)))
    vf v;
    __asm__("vbroadcastss %1, %0" : "=v"(v) : "m"(*p));
    return v;
#else
    return vsplat(*p);
#endif
}
typedef uint32_t vu __attribute__((vector_size(4 * VL))); /* unsigned lanes: the exponent shift wraps, defined */
/* mk_exp2f lane by lane */
static inline __attribute__((always_inline)) vf vexp2s(vf x) {
    const vf xc = vmax(vmin(x, vsplat(EXP2_HI)), vsplat(EXP2_LO));
    const vf r = xc + EXP2_ROUND;
    const vf f = xc - (r - EXP2_ROUND);
    vf p = vfma(vsplat(EXP2_C6), f, vsplat(EXP2_C5));
    p = vfma(p, f, vsplat(EXP2_C4));
    p = vfma(p, f, vsplat(EXP2_C3));
    p = vfma(p, f, vsplat(EXP2_C2));
    p = vfma(p, f, vsplat(EXP2_C1));
    p = vfma(p, f, vsplat(EXP2_C0));
    return (vf)((vu)p + ((vu)r << 23));
}
/* Steps whose softplus and gate are computed ahead of the state loop: those chains (~100 instructions of long
   latency per step) would otherwise sit in the state loop's dependency path and fill the reorder window. */
#define SB 16
"""

_FWD = r"""
/* Forward of chunk c of one full item: batch b, channels [d0, d0 + VL) (see fwd_item_f32). */
static inline __attribute__((always_inline)) void fwd_item_vec(
    const float* restrict u, const float* restrict delta, const float* restrict z, const float* restrict Bm,
    const float* restrict Cm, const float* restrict At, const float* restrict Dv, const float* restrict bias,
    float* restrict out, float* restrict hck, int64_t L, int64_t Bsz, int64_t D, int64_t K, int64_t b,
    int64_t d0, int64_t c, int64_t flags)
{
    const int has_z = flags & 1, softplus = (flags >> 1) & 1;
    const int64_t t0 = c * K, t1 = t0 + K < L ? t0 + K : L;
    vf a[NS];
    for (int n = 0; n < NS; ++n) a[n] = vld(At + n * D + d0) * 1.44269504088896341f; /* dA = 2^(dl a) */
    const vf dv = vld(Dv + d0);
    float* restrict hc = hck + (c * Bsz + b) * NS * D + d0;
    @DECL_H@
    if (c == 0) {
        @STORE_H@
    }
    float dlb[SB][VL], gateb[SB][VL];
    for (int64_t tb = t0; tb < t1; tb += SB) {
        const int64_t te = tb + SB < t1 ? tb + SB : t1;
        for (int64_t t = tb; t < te; ++t) {
            const int64_t i = t - tb, base = (t * Bsz + b) * D + d0;
#pragma omp simd
            for (int j = 0; j < VL; ++j) {
                float pre = delta[base + j] + bias[d0 + j];
                dlb[i][j] = softplus ? mk_softplusf(pre) : pre;
            }
            if (has_z)
#pragma omp simd
                for (int j = 0; j < VL; ++j) gateb[i][j] = z[base + j] * mk_sigmoidf(z[base + j]);
        }
        for (int64_t t = tb; t < te; ++t) {
            const int64_t i = t - tb, base = (t * Bsz + b) * D + d0;
            const float* restrict Bt = Bm + (t * Bsz + b) * NS;
            const float* restrict Ct = Cm + (t * Bsz + b) * NS;
            /* the next item's rows of this step: the adjacent VL channels (or the next batch row) */
            PREFETCH(u + base + VL);
            PREFETCH(delta + base + VL);
            if (has_z) PREFETCH(z + base + VL);
            PREFETCH_W(out + base + VL);
            const vf dl = vld(dlb[i]), uu = vld(u + base), du = dl * uu;
            vf y0 = dv * uu, y1 = vsplat(0.0f);
            @STEPS@
            vf y = y0 + y1;
            if (has_z) y *= vld(gateb[i]);
            vst(out + base, y);
        }
    }
    if (t1 < L) {
        float* restrict hn = hck + ((c + 1) * Bsz + b) * NS * D + d0;
        @STORE_HN@
    }
}
"""

_BWD = r"""
/* Backward of chunk c of one full item (see bwd_item_f32; the same work buffers and item state st). */
static inline __attribute__((always_inline)) void bwd_item_vec(
    const float* restrict u, const float* restrict delta, const float* restrict z, const float* restrict Bm,
    const float* restrict Cm, const float* restrict At, const float* restrict Dv, const float* restrict bias,
    const float* restrict hck, const float* restrict gout, float* restrict gu, float* restrict gdelta,
    float* restrict gz, float* restrict gB, float* restrict gC, float* restrict work, float* restrict st,
    int64_t L, int64_t Bsz, int64_t D, int64_t K, int64_t b, int64_t d0, int64_t c, int64_t flags)
{
    const int has_z = flags & 1, softplus = (flags >> 1) & 1;
    CHUNK_BUFFERS(float, VL);
    vf a[NS], accA[NS];
    float h0buf[NS][VL];
    for (int n = 0; n < NS; ++n) {
        a[n] = vld(At + n * D + d0) * 1.44269504088896341f;
        accA[n] = vld(st + (NS + n) * VL);
    }
    const vf dv = vld(Dv + d0);
    vf accD = vld(st + 2 * NS * VL), accBias = vld(st + 2 * NS * VL + VL);
    @DECL_C@
    {
        const int64_t t0 = c * K, t1 = t0 + K < L ? t0 + K : L;
        /* recompute the chunk from its checkpoint */
        const float* restrict hc = hck + (c * Bsz + b) * NS * D + d0;
        @LOAD_H@
        for (int64_t t = t0; t < t1; ++t) { /* softplus ahead of the state loop (see SB) */
            const int64_t i = t - t0, base = (t * Bsz + b) * D + d0;
#pragma omp simd
            for (int j = 0; j < VL; ++j) {
                float pre = delta[base + j] + bias[d0 + j];
                lbuf[i][j] = softplus ? mk_softplusf(pre) : pre;
                sbuf[i][j] = softplus ? mk_sigmoidf(pre) : 1;
            }
        }
        for (int64_t t = t0; t < t1; ++t) {
            const int64_t i = t - t0, base = (t * Bsz + b) * D + d0;
            const float* restrict Bt = Bm + (t * Bsz + b) * NS;
            const float* restrict Ct = Cm + (t * Bsz + b) * NS;
            PREFETCH(u + base + VL); /* the next item's rows of this step (see fwd_item_vec) */
            PREFETCH(delta + base + VL);
            PREFETCH(gout + base + VL);
            if (has_z) PREFETCH(z + base + VL);
            const vf dl = vld(lbuf[i]), uu = vld(u + base), du = dl * uu;
            vf y0 = dv * uu, y1 = vsplat(0.0f);
            @RSTEPS@
            vst(ybuf[i], y0 + y1);
        }
        /* the output gradient through the gate, for the whole chunk ahead of the adjoint */
        for (int64_t t = t0; t < t1; ++t) {
            const int64_t i = t - t0, base = (t * Bsz + b) * D + d0;
            if (has_z)
#pragma omp simd
                for (int j = 0; j < VL; ++j) {
                    float zz = z[base + j], g = gout[base + j];
                    float s = mk_sigmoidf(zz);
                    gzb[i][j] = g * ybuf[i][j] * s * fmaf(zz, 1 - s, 1);
                    gb[i][j] = g * (zz * s);
                }
            else
                vst(gb[i], vld(gout + base));
        }
        /* adjoint, backwards in time */
        for (int64_t t = t1 - 1; t >= t0; --t) {
            const int64_t i = t - t0, base = (t * Bsz + b) * D + d0;
            PREFETCH_W(gu + base + VL);
            PREFETCH_W(gdelta + base + VL);
            if (has_z) PREFETCH_W(gz + base + VL);
            const float* restrict Bt = Bm + (t * Bsz + b) * NS;
            const float* restrict Ct = Cm + (t * Bsz + b) * NS;
            float* restrict gBt = gB + (t * Bsz + b) * NS;
            float* restrict gCt = gC + (t * Bsz + b) * NS;
            const vf g = vld(gb[i]), uu = vld(u + base), dl = vld(lbuf[i]), du = dl * uu;
            accD = vfma(g, uu, accD);
            vf gdl = vsplat(0.0f), q = vsplat(0.0f);
            const float (*restrict hp)[VL] = i == 0 ? (const float (*)[VL])h0buf : (const float (*)[VL])hbuf[i - 1];
            @ASTEPS@
            const vf gd = vfma(q, uu, gdl * 0.693147180559945309f) * vld(sbuf[i]); /* sum w A = ln2 sum w a */
            accBias += gd;
            vst(gub[i], vfma(q, dl, g * dv));
            vst(gdb[i], gd);
        }
        for (int64_t t = t0; t < t1; ++t) { /* the chunk's input gradients (see bwd_item_f32) */
            const int64_t i = t - t0, base = (t * Bsz + b) * D + d0;
            vst(gu + base, vld(gub[i]));
            vst(gdelta + base, vld(gdb[i]));
            if (has_z) vst(gz + base, vld(gzb[i]));
        }
    }
    @STORE_C@
    for (int n = 0; n < NS; ++n) vst(st + (NS + n) * VL, accA[n]);
    vst(st + 2 * NS * VL, accD);
    vst(st + 2 * NS * VL + VL, accBias);
}
"""


def scan_vector_source(n_state: int, lanes: int) -> str:
    """C of ``fwd_item_vec`` / ``bwd_item_vec`` for N = ``n_state`` and VL = ``lanes`` (after the scalar
    helpers and ``c_vec(lanes)``; N must be a multiple of the lanes)."""
    if not lane_tree_ok(n_state, lanes):
        raise ValueError(f"the vector scan items need N a multiple of {lanes}, got N = {n_state}")
    fwd = (
        _FWD.replace("@DECL_H@", _decl("h", n_state, "c == 0 ? vsplat(0.0f) : vld(hc + {n} * D)"))
        .replace("@STORE_H@", _rows("vst(hc + {n} * D, h{n});", n_state))
        .replace("@STORE_HN@", _rows("vst(hn + {n} * D, h{n});", n_state))
        .replace("@STEPS@", _forward_steps(n_state, store=False))
    )
    bwd = (
        _BWD.replace("@DECL_C@", _decl("c", n_state, "vld(st + {n} * VL)"))
        .replace("@STORE_C@", _rows("vst(st + {n} * VL, c{n});", n_state))
        .replace("@LOAD_H@", _rows("vf h{n} = vld(hc + {n} * D); vst(h0buf[{n}], h{n});", n_state))
        .replace("@RSTEPS@", _forward_steps(n_state, store=True))
        .replace("@ASTEPS@", _adjoint_steps(n_state, lanes))
    )
    return _HEAD + fwd + bwd
