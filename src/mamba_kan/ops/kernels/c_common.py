"""C snippets and expression helpers shared by the generated kernels."""

from __future__ import annotations

C_EXP = """
#include <math.h>
#include <stdint.h>
#include <string.h>

/* exp(x) = 2^i * 2^f, f in [-1/2, 1/2], 2^f by its degree-7 Taylor polynomial (relative error < 5e-9 before
   float32 rounding). Written with selects and bit moves so that gcc/clang vectorise it; inputs clamped to
   [-87, 88] (NaN -> -87: callers propagate NaN through their other operands). */
static inline float mk_exp(float x) {
    x = x > -87.0f ? x : -87.0f;
    x = x < 88.0f ? x : 88.0f;
    float z = x * 1.44269504088896341f;
    float n = floorf(z + 0.5f);
    float f = z - n;
    float p = 1.5252733804059841e-5f;
    p = fmaf(p, f, 1.5403530393381609e-4f);
    p = fmaf(p, f, 1.3333558146428443e-3f);
    p = fmaf(p, f, 9.6181291076284772e-3f);
    p = fmaf(p, f, 5.5504108664821580e-2f);
    p = fmaf(p, f, 2.4022650695910071e-1f);
    p = fmaf(p, f, 6.9314718055994531e-1f);
    p = fmaf(p, f, 1.0f);
    int32_t e = ((int32_t)n + 127) << 23;
    float s;
    memcpy(&s, &e, 4);
    return p * s;
}
"""


def c_float(v: float) -> str:
    return f"{v!r}f" if "e" in repr(v) or "." in repr(v) else f"{v!r}.0f"


def c_horner(coeffs: list[float], var: str) -> str:
    """C expression for sum_p coeffs[p] var^p."""
    expr = c_float(coeffs[-1])
    for c in reversed(coeffs[:-1]):
        expr = f"fmaf({expr}, {var}, {c_float(c)})"
    return expr
