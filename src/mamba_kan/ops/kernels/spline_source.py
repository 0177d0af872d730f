"""C source of the spline kernels (activation forward/backward, KAN features forward/backward) for one (G, k).

The maths is :mod:`mamba_kan.ops.bspline`'s: the activation evaluates the piecewise-polynomial table
(:func:`~mamba_kan.ops.bspline.spline_table`) by Horner's rule, the KAN features are the dense bases on the clamped
input from the cardinal pieces (:func:`~mamba_kan.ops.bspline.cardinal_piece_coefficients`). Everything is
unrolled for the given (G, k), so the loop over features vectorises; the loader is :func:`mamba_kan.ops.kernels.load_kernel`.
"""

from __future__ import annotations

import ctypes

from mamba_kan.ops.bspline import cardinal_piece_coefficients
from mamba_kan.ops.kernels.c_common import C_EXP, c_horner

_P, _I = ctypes.c_void_p, ctypes.c_int64
SPLINE_SIGNATURES = {
    "act_fwd0": ([_P, _P, _I, _I, _P, _P, _P, _P], None),
    "act_fwd1": ([_P, _P, _I, _I, _P, _P, _P, _P], None),
    "act_bwd0": ([_P, _P, _P, _I, _I, _P, _P, _P, _P, _P, _P], None),
    "act_bwd1": ([_P, _P, _P, _I, _I, _P, _P, _P, _P, _P, _P], None),
    "kan_fwd": ([_P, _P, _I, _I, _P, _P], None),
    "kan_bwd": ([_P, _P, _P, _I, _I, _P, _P], None),
}


def spline_kernel_source(grid_size: int, order: int, block: int = 64) -> str:
    """C source of the four kernels for one (G, k): everything unrolled, so the loop over features vectorises.

    Layouts (row-major, float32): activation x, y, g: (rows, F); table: (G + 2, k + 1, F); KAN features:
    (rows, 1 + G + k, F) = [silu(x) | B_0(x) | ... | B_{G+k-1}(x)] per row.
    """
    g, k = grid_size, order
    k1, rows_t, n_basis = k + 1, g + 2, g + k
    mc = cardinal_piece_coefficients(k)
    lines = [f"/* mamba-kan spline kernels, G = {g}, k = {k} */", C_EXP]

    ind = " " * 16

    def select_table() -> list[str]:
        """c0..ck = coefficients of table row j (0 = left of grid .. G + 1 = right), by selects (no gathers)."""
        out = [f"{ind}float c{p} = tb[{p}][l];" for p in range(k1)]
        for r in range(1, rows_t):
            out += [f"{ind}c{p} = (j == {r}) ? tb[{r * k1 + p}][l] : c{p};" for p in range(k1)]
        return out

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
    # The backward walks features in blocks of 64 (four AVX-512 vectors) with the rows inside: the block's table
    # slice, grid and sums of g t^p live in small aligned local arrays (L1) instead of being re-read and
    # re-written per row. 64 wide, each row's slice is a few whole cache lines (16-wide blocks of rows of
    # F % 16 != 0 floats straddled lines and ran ~2x slower). A last, partial block is shifted left to end at F so
    # every block is full width (a scalar remainder was ~3x slower); its first `skip` lanes repeat features of
    # the previous block: they rewrite the same gx but add no sums twice.
    block_open = f"""
    const int64_t W = F < {block} ? F : {block};
    float tb[{rows_t * k1}][{block}], sc[{block}], sh[{block}], wl[{block}];
    for (int64_t b = 0; b < F; b += {block}) {{
        const int64_t f0 = (F - b < {block} && F >= {block}) ? F - {block} : b;
        const int64_t skip = b - f0;
        for (int64_t l = 0; l < W; ++l) {{
            for (int q = 0; q < {rows_t * k1}; ++q) tb[q][l] = table[q * F + f0 + l];
            sc[l] = scale[f0 + l];
            sh[l] = shift[f0 + l];
            wl[l] = wb ? wb[f0 + l] : 0.0f;
        }}
        (void)wl;"""
    for base in (0, 1):
        # forward: rows outer, features inner (contiguous streams; the table is read in place, it stays in L2)
        fwd = [ln.replace("[l]", "[f]").replace("[o + l]", "[o + f]") for ln in head]
        fwd = [ln.replace("sc[f]", "scale[f]").replace("sh[f]", "shift[f]") for ln in fwd]
        fwd += [f"{ind}float c{p} = table[{p} * F + f];" for p in range(k1)]
        for r in range(1, rows_t):
            fwd += [f"{ind}c{p} = (j == {r}) ? table[{r * k1 + p} * F + f] : c{p};" for p in range(k1)]
        fwd.append(f"{ind}float s = {horner};")
        if base:
            fwd.append(f"{ind}s = fmaf(wb[f], xv / (1.0f + mk_exp(-xv)), s);")
        fwd.append(f"{ind}y[o + f] = s;")
        lines.append(
            f"""
void act_fwd{base}(const float* restrict x, float* restrict y, int64_t rows, int64_t F,
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
        body = head + [f"{ind}float gv = g[o + l];"] + select_table()
        body.append(f"{ind}float d = ({dhorner}) * sc[l];")
        if base:
            body += [
                f"{ind}float sg = 1.0f / (1.0f + mk_exp(-xv));",
                f"{ind}float sl = xv * sg;",
                f"{ind}d = fmaf(wl[l], sg + sl * (1.0f - sg), d);",
                f"{ind}accw[l] = fmaf(gv, sl, accw[l]);",
            ]
        body.append(f"{ind}gx[o + l] = gv * d;")
        body.append(f"{ind}float q0 = gv;")
        body += [f"{ind}float q{p} = q{p - 1} * t;" for p in range(1, k1)]
        # sums of g t^p per table row; the select form (not `+= cond ? q : 0`) is what gcc vectorises
        for r in range(rows_t):
            for p in range(k1):
                a = f"acc[{r * k1 + p}][l]"
                body.append(f"{ind}{a} = (j == {r}) ? {a} + q{p} : {a};")
        lines.append(
            f"""
void act_bwd{base}(const float* restrict x, const float* restrict g, float* restrict gx, int64_t rows,
                  int64_t F, const float* restrict scale, const float* restrict shift,
                  const float* restrict table, const float* restrict wb,
                  float* restrict gtable, float* restrict gwb) {{{block_open}
        float acc[{rows_t * k1}][{block}];
        float accw[{block}];
        memset(acc, 0, sizeof(acc));
        memset(accw, 0, sizeof(accw));
        for (int64_t n = 0; n < rows; ++n) {{
            const int64_t o = n * F + f0;
#pragma omp simd
            for (int64_t l = 0; l < W; ++l) {{
"""
            + "\n".join(body)
            + f"""
            }}
        }}
        for (int q = 0; q < {rows_t * k1}; ++q)
            for (int64_t l = skip; l < W; ++l) gtable[q * F + f0 + l] += acc[q][l];
        if (gwb)
            for (int64_t l = skip; l < W; ++l) gwb[f0 + l] += accw[l];
    }}
}}
"""
        )

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
        """b_m = value of basis m: v_r with j + k - r = m, else 0."""
        out = []
        for m in range(n_basis):
            out.append(f"            float b{m} = 0.0f;")
            for r in range(k1):
                jj = m - k + r
                if 0 <= jj <= g - 1:
                    out.append(f"            b{m} = (j == {jj}) ? {vals}{r} : b{m};")
        return out

    fwd = list(head)
    fwd += [f"            float v{r} = {c_horner(list(mc[r]), 't')};" for r in range(k1)]
    fwd.append("            o[f] = xv / (1.0f + mk_exp(-xv));")
    fwd += basis_selects("v")
    fwd += [f"            o[{m + 1} * F + f] = b{m};" for m in range(n_basis)]
    lines.append(
        f"""
void kan_fwd(const float* restrict x, float* restrict out, int64_t rows, int64_t F,
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
void kan_bwd(const float* restrict x, const float* restrict gfeat, float* restrict gx, int64_t rows, int64_t F,
             const float* restrict scale, const float* restrict shift) {{
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
    return "\n".join(lines)
