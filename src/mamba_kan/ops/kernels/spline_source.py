"""C source of the spline kernels (activation forward/backward, KAN features forward/backward) for one (G, k).

The maths is :mod:`mamba_kan.ops.bspline`'s: the activation evaluates the piecewise-polynomial table
(:func:`~mamba_kan.ops.bspline.spline_table`) by Horner's rule, the KAN features are the dense bases on the clamped
input from the cardinal pieces (:func:`~mamba_kan.ops.bspline.cardinal_piece_coefficients`). Everything is
unrolled for the given (G, k), so the loop over features vectorises; the loader is :func:`mamba_kan.ops.kernels.load_kernel`.
"""

from __future__ import annotations

import ctypes
import functools

from mamba_kan.ops.bspline import cardinal_piece_coefficients
from mamba_kan.ops.kernels.c_common import C_EXP, c_float, c_horner, c_vec

_P, _I = ctypes.c_void_p, ctypes.c_int64
SPLINE_SIGNATURES = {
    "act_fwd0": ([_P, _P, _I, _I, _P, _P, _P, _P], None),
    "act_fwd1": ([_P, _P, _I, _I, _P, _P, _P, _P], None),
    "act_bwd0": ([_P, _P, _P, _I, _I, _P, _P, _P, _P, _P, _P], None),
    "act_bwd1": ([_P, _P, _P, _I, _I, _P, _P, _P, _P, _P, _P], None),
    "kan_fwd": ([_P, _P, _I, _I, _P, _P], None),
    "kan_bwd": ([_P, _P, _P, _I, _I, _P, _P], None),
}


@functools.cache  # generated once per (G, k, lanes): the kernels are looked up on every layer call
def spline_kernel_source(grid_size: int, order: int, lanes: int = 8) -> str:
    """C source of the four kernels for one (G, k): everything unrolled, so the loop over features vectorises.
    ``lanes``: float32 lanes of the activation backward's vectors (8 = AVX2, 16 = AVX-512).

    Layouts (row-major, float32): activation x, y, g: (rows, F); table: (G + 2, k + 1, F); KAN features:
    (rows, 1 + G + k, F) = [silu(x) | B_0(x) | ... | B_{G+k-1}(x)] per row.
    """
    g, k = grid_size, order
    k1, rows_t, n_basis = k + 1, g + 2, g + k
    mc = cardinal_piece_coefficients(k)
    lines = [f"/* mamba-kan spline kernels, G = {g}, k = {k} */", C_EXP, c_vec(lanes)]

    ind = " " * 16

    head = [
        f"{ind}float xv = x[o + l];",
        f"{ind}float u = fmaf(xv, sc[l], sh[l]);",
        f"{ind}float uc = u > -1.0f ? u : -1.0f;",  # NaN -> -1: a valid row; t keeps the NaN
        f"{ind}uc = uc < {g}.0f ? uc : {g}.0f;",
        f"{ind}float jf = floorf(uc);",
        f"{ind}float t = (u != u) ? u : uc - jf;",
        f"{ind}int j = (int)jf + 1;",
    ]
    horner = "c" + str(k)
    for p in range(k - 1, -1, -1):
        horner = f"fmaf({horner}, t, c{p})"
    dhorner = "0.0f"
    if k >= 1:
        dhorner = f"{k}.0f * c{k}"
        for p in range(k - 1, 0, -1):
            dhorner = f"fmaf({dhorner}, t, {p}.0f * c{p})"
    for base in (0, 1):
        # forward: rows outer, features inner (contiguous streams; the table is read in place, it stays in L2)
        fwd = [ln.replace("[l]", "[f]").replace("[o + l]", "[o + f]") for ln in head]
        fwd = [ln.replace("sc[f]", "scale[f]").replace("sh[f]", "shift[f]") for ln in fwd]
        fwd += [f"{ind}float c{p} = table[{p} * F + f];" for p in range(k1)]
        for r in range(1, rows_t):
            # load, then select: a conditional load compiles to a masked load (vmaskmovps, slow on AVX2)
            fwd += [f"{ind}float l{r}_{p} = table[{r * k1 + p} * F + f];" for p in range(k1)]
            fwd += [f"{ind}c{p} = (j == {r}) ? l{r}_{p} : c{p};" for p in range(k1)]
        fwd.append(f"{ind}float s = {horner};")
        if base:
            fwd.append(f"{ind}s = fmaf(wb[f], xv / (1.0f + mk_exp(-xv)), s);")
        fwd.append(f"{ind}y[o + f] = s;")
        lines.append(
            f"""
static void act_fwd{base}_scalar(const float* restrict x, float* restrict y, int64_t rows, int64_t F,
                  const float* restrict scale, const float* restrict shift,
                  const float* restrict table, const float* restrict wb) {{
    (void)wb;
    for (int64_t n = 0; n < rows; ++n) {{
        const int64_t o = n * F;
#pragma omp simd
        for (int64_t f = 0; f < F; ++f) {{
"""
            + "\n".join(fwd)
            + """
        }
    }
}
"""
        )
        lines.append(_act_forward_vector(g, k, base))
        lines.append(_act_backward(g, k, base))

    # KAN features: dense bases on the clamped input, exactly as uniform_bspline_local (interval j <= G - 1)
    head = [
        "            float xv = x[n * F + f];",
        "            float u = fmaf(xv, scale[f], shift[f]);",
        "            float uc = u > 0.0f ? u : 0.0f;",
        f"            uc = uc < {g}.0f ? uc : {g}.0f;",
        "            float jf = floorf(uc);",
        f"            jf = jf < {g - 1}.0f ? jf : {g - 1}.0f;",
        "            float t = (u != u) ? u : uc - jf;",
        "            int j = (int)jf;",
    ]

    def basis_selects(vals: str) -> list[str]:
        return _basis_selects(
            g, k, " " * 12 + "float b{m} = 0.0f;", " " * 12 + "b{m} = (j == {jj}) ? " + vals + "{r} : b{m};"
        )

    fwd = list(head)
    fwd += [f"            float v{r} = {c_horner(list(mc[r]), 't')};" for r in range(k1)]
    fwd.append("            o[f] = xv / (1.0f + mk_exp(-xv));")
    fwd += basis_selects("v")
    fwd += [f"            o[{m + 1} * F + f] = b{m};" for m in range(n_basis)]
    lines.append(
        f"""
static void kan_fwd_scalar(const float* restrict x, float* restrict out, int64_t rows, int64_t F,
                           const float* restrict scale, const float* restrict shift) {{
    for (int64_t n = 0; n < rows; ++n) {{
        float* restrict o = out + n * {n_basis + 1} * F;
#pragma omp simd
        for (int64_t f = 0; f < F; ++f) {{
"""
        + "\n".join(fwd)
        + """
        }
    }
}
"""
    )
    bwd = list(head)
    for r in range(k1):
        dc = [p * mc[r][p] for p in range(1, k1)] or [0.0]
        bwd.append(f"            float dv{r} = {c_horner(dc, 't')};")
    bwd += basis_selects("dv")
    bwd.append("            float acc = 0.0f;")
    bwd += [f"            acc += gi[{m + 1} * F + f] * b{m};" for m in range(n_basis)]
    bwd += [
        "            float sg = 1.0f / (1.0f + mk_exp(-xv));",
        "            float ds = sg + xv * sg * (1.0f - sg);",
        f"            float inside = (u >= 0.0f && u <= {g}.0f) ? scale[f] : 0.0f;",
        "            gx[n * F + f] = gi[f] * ds + (inside != 0.0f ? acc * inside : 0.0f);",
    ]
    lines.append(
        f"""
static void kan_bwd_scalar(const float* restrict x, const float* restrict gfeat, float* restrict gx, int64_t rows,
                           int64_t F, const float* restrict scale, const float* restrict shift) {{
    for (int64_t n = 0; n < rows; ++n) {{
        const float* restrict gi = gfeat + n * {n_basis + 1} * F;
#pragma omp simd
        for (int64_t f = 0; f < F; ++f) {{
"""
        + "\n".join(bwd)
        + """
        }
    }
}
"""
    )
    lines.append(_kan_vector_kernels(g, k))
    return "\n".join(lines)


def _kan_vector_kernels(grid_size: int, order: int) -> str:
    """C source of kan_fwd / kan_bwd on explicit VL-lane vectors (mask-register selects on AVX-512; gcc's own
    vectorisation of the scalar loops spent about half their instructions on mask bookkeeping). The maths and
    the operation order are the scalar kernels' lane by lane (kan_fwd_scalar / kan_bwd_scalar, which still take
    inputs narrower than VL). Each row is walked in chunks of VL features; a last partial chunk is shifted left
    to end at F (its first lanes are computed twice and written with the same values: the kernels are
    elementwise)."""
    g, k = grid_size, order
    k1, n_basis = k + 1, g + k
    mc = cardinal_piece_coefficients(k)
    ind = " " * 12
    head = [
        f"{ind}vf xv = vld(x + n * F + f0);",
        f"{ind}vf u = vfma(xv, sc, sh);",
        f"{ind}vf uc = vblend(vm_gt(u, vsplat(0.0f)), u, vsplat(0.0f));",
        f"{ind}uc = vblend(vm_lt(uc, vsplat({g}.0f)), uc, vsplat({g}.0f));",
        f"{ind}vf jf = vfloor(uc);",
        f"{ind}jf = vblend(vm_lt(jf, vsplat({g - 1}.0f)), jf, vsplat({g - 1}.0f));",
        f"{ind}vf t = vblend(vm_nan(u), u, uc - jf);",
    ]
    head += [f"{ind}vm q{i} = vm_eq(jf, vsplat({i}.0f));" for i in range(g)]

    def basis_selects(vals: str) -> list[str]:  # the scalar kernels' select order
        return _basis_selects(
            g, k, ind + "vf b{m} = vsplat(0.0f);", ind + "b{m} = vblend(q{jj}, " + vals + "{r}, b{m});"
        )

    fwd = list(head)
    fwd += [f"{ind}vf v{r} = {_vhorner(list(mc[r]), 't')};" for r in range(k1)]
    fwd.append(f"{ind}vst(o + f0, xv / (1.0f + vexp(-xv)));")
    fwd += basis_selects("v")
    fwd += [f"{ind}vst(o + {m + 1} * F + f0, b{m});" for m in range(n_basis)]
    bwd = list(head)
    for r in range(k1):
        dc = [p * mc[r][p] for p in range(1, k1)] or [0.0]
        bwd.append(f"{ind}vf dv{r} = {_vhorner(dc, 't')};")
    bwd += basis_selects("dv")
    bwd.append(f"{ind}vf acc = vsplat(0.0f);")
    bwd += [f"{ind}acc = acc + vld(gi + {m + 1} * F + f0) * b{m};" for m in range(n_basis)]
    bwd += [
        f"{ind}vf sg = 1.0f / (1.0f + vexp(-xv));",
        f"{ind}vf ds = sg + xv * sg * (1.0f - sg);",
        f"{ind}vm inside = vm_ge(u, vsplat(0.0f)) & vm_le(u, vsplat({g}.0f));",
        f"{ind}vst(gx + n * F + f0, vld(gi + f0) * ds + vblend(inside, acc * sc, vsplat(0.0f)));",
    ]

    def kernel(signature: str, scalar_call: str, row_setup: str, body: list[str]) -> str:
        return (
            f"""
{signature} {{
    if (F < VL) {{
        {scalar_call};
        return;
    }}
    for (int64_t n = 0; n < rows; ++n) {{
        {row_setup}
        for (int64_t c = 0; c < F; c += VL) {{
            const int64_t f0 = c + VL <= F ? c : F - VL;
            const vf sc = vld(scale + f0), sh = vld(shift + f0);
"""
            + "\n".join(body)
            + """
        }
    }
}
"""
        )

    return kernel(
        "void kan_fwd(const float* restrict x, float* restrict out, int64_t rows, int64_t F,\n"
        "             const float* restrict scale, const float* restrict shift)",
        "kan_fwd_scalar(x, out, rows, F, scale, shift)",
        f"float* restrict o = out + n * {n_basis + 1} * F;",
        fwd,
    ) + kernel(
        "void kan_bwd(const float* restrict x, const float* restrict gfeat, float* restrict gx, int64_t rows,\n"
        "             int64_t F, const float* restrict scale, const float* restrict shift)",
        "kan_bwd_scalar(x, gfeat, gx, rows, F, scale, shift)",
        f"const float* restrict gi = gfeat + n * {n_basis + 1} * F;",
        bwd,
    )


def _basis_selects(grid_size: int, order: int, declare: str, select: str) -> list[str]:
    """C lines giving b_m = the value of basis m at an input in interval jj: v_r with jj + k - r = m, else 0.
    ``declare`` / ``select`` are templates with {m} (basis), {jj} (interval) and {r} (local value index)."""
    out = []
    for m in range(grid_size + order):
        out.append(declare.format(m=m))
        for r in range(order + 1):
            jj = m - order + r
            if 0 <= jj <= grid_size - 1:
                out.append(select.format(m=m, jj=jj, r=r))
    return out


def _vhorner(coeffs: list[float], var: str) -> str:
    """vf expression for sum_p coeffs[p] var^p (the same fmaf chain as c_horner, on vectors)."""
    expr = f"vsplat({c_float(coeffs[-1])})"
    for c in reversed(coeffs[:-1]):
        expr = f"vfma({expr}, {var}, vsplat({c_float(c)}))"
    return expr


def _act_forward_vector(grid_size: int, order: int, base: int) -> str:
    """C source of act_fwd{base} on explicit VL-lane vectors: the scalar kernel's maths and operation order lane
    by lane (act_fwd{base}_scalar still takes inputs narrower than VL), with mask-register selects on AVX-512
    (gcc's vectorisation of the scalar loop spent a third of its instructions on masked loads and mask moves).
    The rows left and right of the grid are constants (:func:`~mamba_kan.ops.bspline.spline_table`): their
    higher coefficients are exact zeros, so only the G interval rows are selected for them. A last partial chunk
    of a row is shifted left to end at F (its first lanes are written twice with the same values)."""
    g, k = grid_size, order
    k1 = k + 1
    ind = " " * 12
    body = [
        f"{ind}vf xv = vld(x + o + f0);",
        f"{ind}vf u = vfma(xv, vld(scale + f0), vld(shift + f0));",
        f"{ind}vf uc = vblend(vm_gt(u, vsplat(-1.0f)), u, vsplat(-1.0f));",  # NaN -> -1: valid; t keeps the NaN
        f"{ind}uc = vblend(vm_lt(uc, vsplat({g}.0f)), uc, vsplat({g}.0f));",
        f"{ind}vf jf = vfloor(uc);",  # table row jf + 1
        f"{ind}vf t = vblend(vm_nan(u), u, uc - jf);",
    ]
    body += [f"{ind}vm m{r} = vm_eq(jf, vsplat({r - 1}.0f));" for r in range(1, g + 2)]
    body.append(f"{ind}vf c0 = vld(table + f0);")
    body += [f"{ind}c0 = vblend(m{r}, vld(table + {r * k1} * F + f0), c0);" for r in range(1, g + 2)]
    for p in range(1, k1):
        body.append(f"{ind}vf c{p} = vsplat(0.0f);")
        body += [
            f"{ind}c{p} = vblend(m{r}, vld(table + {r * k1 + p} * F + f0), c{p});" for r in range(1, g + 1)
        ]
    horner = f"c{k}"
    for p in range(k - 1, -1, -1):
        horner = f"vfma({horner}, t, c{p})"
    body.append(f"{ind}vf s = {horner};")
    if base:
        body.append(f"{ind}s = vfma(vld(wb + f0), xv / (1.0f + vexp(-xv)), s);")
    body.append(f"{ind}vst(y + o + f0, s);")
    return (
        f"""
void act_fwd{base}(const float* restrict x, float* restrict y, int64_t rows, int64_t F,
                  const float* restrict scale, const float* restrict shift,
                  const float* restrict table, const float* restrict wb) {{
    if (F < VL) {{
        act_fwd{base}_scalar(x, y, rows, F, scale, shift, table, wb);
        return;
    }}
    (void)wb;
    for (int64_t n = 0; n < rows; ++n) {{
        const int64_t o = n * F;
        for (int64_t c = 0; c < F; c += VL) {{
            const int64_t f0 = c + VL <= F ? c : F - VL;
"""
        + "\n".join(body)
        + """
        }
    }
}
"""
    )


def _act_backward(grid_size: int, order: int, base: int) -> str:
    """C source of act_bwd{base}: d/dx and the coefficient gradient d/dc_m = sum_n g B_m(x) (+ d/dw_b).

    Features are walked in chunks of VL (8 or 16) lanes with the rows inside, so the sums stay in vector
    registers for the whole column (sums per table row, (G + 2)(k + 1) of them, did not fit and were read and
    written per row: 5-6x slower on AVX2). A last partial chunk is shifted left to end at F; its first `skip`
    lanes repeat features of the previous chunk (same gx, sums not added twice). Needs F >= VL (the caller pads).
    Rows are taken in blocks of RB, all chunks of a block before the next block: walking one chunk down all rows
    (a column of stride F) ran ~3x slower at widths that are not a multiple of 8, and ~1.5x at 512.
    The chunk's table slice is copied to an aligned local array: with F % 8 != 0 the table rows are not
    vector-aligned, and ~20 loads per row straddling cache lines made odd widths ~3x slower.

    d/dx is the derivative polynomial of the table row (as the forward); the rows left and right of the grid are
    constants (:func:`~mamba_kan.ops.bspline.spline_table`), so only the G interval rows are selected. The
    coefficient gradient is that of the clamped input (interval i = clamp(floor(u), 0, G - 1), fraction
    tb in [0, 1], exactly as uniform_bspline_local), kept as moments: S[i][p] = sum_n g tb^p over the rows in
    interval i, G (k + 1) masked adds per row; after each row block the bases' sums follow as
    d/dc_{i + k - r} += sum_p Mc[r][p] S[i][p] (Mc: the cardinal pieces). Per row this is (k + 1) masked adds
    per interval instead of evaluating the k + 1 basis polynomials and (k + 1) G selects into the G + k sums:
    the backward is bound by vector-port throughput, so the instruction count is its time.
    """
    g, k = grid_size, order
    k1, rows_t, n_basis = k + 1, g + 2, g + k
    mc = cardinal_piece_coefficients(k)
    ind = " " * 12
    body = [
        f"{ind}const int64_t o = (n - n0) * S + f0;",
        f"{ind}vf xv = vld(xb + o), gv = vld(gb + o);",
        f"{ind}vf u = vfma(xv, sc, sh);",
        f"{ind}vm nan = vm_nan(u);",
        # table row jf + 1 (jf = -1: left of the grid .. G: right of it) and local fraction, as the forward
        f"{ind}vf uc = vblend(vm_gt(u, vsplat(-1.0f)), u, vsplat(-1.0f));",  # NaN -> -1: valid; t keeps the NaN
        f"{ind}uc = vblend(vm_lt(uc, vsplat({g}.0f)), uc, vsplat({g}.0f));",
        f"{ind}vf jf = vfloor(uc);",
        f"{ind}vf t = vblend(nan, u, uc - jf);",
    ]
    for i in range(g):
        body.append(f"{ind}vm q{i} = vm_eq(jf, vsplat({i}.0f));")
    for p in range(1, k1):
        body.append(f"{ind}vf c{p} = vsplat(0.0f);")
        for i in range(g):
            body.append(f"{ind}c{p} = vblend(q{i}, vld(tl + {(i + 1) * k1 + p} * VL), c{p});")
    dh = "vsplat(0.0f)"
    if k >= 1:
        dh = f"c{k} * {k}.0f"
        for p in range(k - 1, 0, -1):
            dh = f"vfma({dh}, t, c{p} * {p}.0f)"
    body.append(f"{ind}vf d = ({dh}) * sc;")
    if base:
        body += [
            f"{ind}vf sg = 1.0f / (1.0f + vexp(-xv));",
            f"{ind}vf sl = xv * sg;",
            f"{ind}d = vfma(w, sg + sl * (1.0f - sg), d);",
            f"{ind}aw = vfma(gv, sl, aw);",
        ]
    body.append(f"{ind}vst(gxb + o, gv * d);")
    # the clamped input's fraction: t inside the grid, 0 left of it, 1 right of it (NaN stays NaN)
    body.append(f"{ind}vf tb = vblend(vm_eq(jf, vsplat({g}.0f)), vsplat(1.0f), t);")
    body.append(f"{ind}tb = vblend(vm_lt(u, vsplat(0.0f)), vsplat(0.0f), tb);")
    body.append(f"{ind}vf w0 = gv;")
    body += [f"{ind}vf w{p} = w{p - 1} * tb;" for p in range(1, k1)]
    for i in range(g):
        if g == 1:
            mask = None
        elif i == 0:
            mask = "vm_lt(jf, vsplat(1.0f))"  # interval 0, left of the grid, NaN (jf = -1)
        elif i == g - 1:
            mask = f"vm_gt(jf, vsplat({g - 2}.0f))"  # interval G - 1 and right of the grid
        else:
            mask = f"q{i}"
        if mask is None:
            body += [f"{ind}s{i}_{p} += w{p};" for p in range(k1)]
            continue
        body.append(f"{ind}vm n{i} = {mask};")
        body += [f"{ind}s{i}_{p} = vadd_if(s{i}_{p}, n{i}, w{p});" for p in range(k1)]
    sums = [f"s{i}_{p}" for i in range(g) for p in range(k1)] + (["aw"] if base else [])
    # a_m = sum over (i, r) with i + k - r = m of sum_p Mc[r][p] S[i][p]
    fold = []
    for m in range(n_basis):
        terms = []
        for i in range(g):
            r = i + k - m
            if 0 <= r <= k:
                terms += [(mc[r][p], f"s{i}_{p}") for p in range(k1) if mc[r][p] != 0.0]
        expr = "vsplat(0.0f)"
        for c, v in terms:
            expr = f"vfma(vsplat({c_float(c)}), {v}, {expr})"
        fold.append(f"        vf a{m} = {expr};")
    head = f"""
void act_bwd{base}(const float* restrict x, const float* restrict g, float* restrict gx, int64_t rows,
                  int64_t F, const float* restrict scale, const float* restrict shift,
                  const float* restrict table, const float* restrict wb,
                  float* restrict gcoef, float* restrict gwb) {{
    enum {{ RB = 32 }};
    /* rows of F % VL != 0 floats put most vector loads across cache lines (~2x slower here): such row blocks are
       copied into an aligned scratch buffer of stride S = F rounded up to VL, and gx copied back */
    int64_t S = (F + VL - 1) / VL * VL;
    float* scratch = NULL;
    float* xs = NULL;
    if (S != F) {{
        scratch = malloc(3 * RB * S * sizeof(float) + 64);
        if (scratch)
            xs = (float*)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
        else
            S = F;  /* no memory: work on the rows in place (slower, same results) */
    }}
    (void)wb;
    (void)gwb;
    for (int64_t n0 = 0; n0 < rows; n0 += RB) {{
    const int64_t n1 = n0 + RB < rows ? n0 + RB : rows;
    const float* xb = x + n0 * F;
    const float* gb = g + n0 * F;
    float* gxb = gx + n0 * F;
    if (S != F) {{
        float* xw = xs;
        float* gw = xs + RB * S;
        for (int64_t n = n0; n < n1; ++n) {{
            memcpy(xw + (n - n0) * S, x + n * F, F * sizeof(float));
            memcpy(gw + (n - n0) * S, g + n * F, F * sizeof(float));
        }}
        xb = xw;
        gb = gw;
        gxb = xs + 2 * RB * S;
    }}
    for (int64_t c = 0; c < F; c += VL) {{
        const int64_t f0 = c + VL <= F ? c : F - VL;
        const int64_t skip = c - f0;
        const vf sc = vld(scale + f0), sh = vld(shift + f0);
        float tl[{rows_t * k1} * VL] __attribute__((aligned(4 * VL)));  /* the chunk's table slice, aligned (L1) */
        for (int q = 0; q < {rows_t * k1}; ++q) memcpy(tl + q * VL, table + q * F + f0, sizeof(vf));
"""
    out = [head.rstrip("\n")]
    if base:
        out.append("        const vf w = vld(wb + f0);")
    out.append("        vf " + ", ".join(f"{a} = vsplat(0.0f)" for a in sums) + ";")
    out.append("        for (int64_t n = n0; n < n1; ++n) {")
    out += body
    out.append("        }")
    out += fold
    out.append("        if (skip == 0) {")
    out += [
        f"            vst(gcoef + {m} * F + f0, vld(gcoef + {m} * F + f0) + a{m});" for m in range(n_basis)
    ]
    if base:
        out.append("            vst(gwb + f0, vld(gwb + f0) + aw);")
    out.append("        } else {")
    out.append("            for (int64_t l = skip; l < VL; ++l) {")
    out += [f"                gcoef[{m} * F + f0 + l] += a{m}[l];" for m in range(n_basis)]
    if base:
        out.append("                gwb[f0 + l] += aw[l];")
    out += ["            }", "        }", "    }"]
    out += [
        "    if (S != F)",
        "        for (int64_t n = n0; n < n1; ++n) memcpy(gx + n * F, gxb + (n - n0) * S, F * sizeof(float));",
        "    }",
        "    free(scratch);",
        "}",
        "",
    ]
    return "\n".join(out)
