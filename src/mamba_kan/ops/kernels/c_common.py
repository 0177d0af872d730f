"""C snippets and expression helpers shared by the generated kernels."""

from __future__ import annotations

C_EXP = """
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
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


# Fixed-width vectors of GCC/clang's vector extensions (8 floats = one AVX2 register, 16 = one AVX-512 register;
# other targets split them). Used where the auto-vectoriser would keep accumulators in memory: code written on `vf`
# keeps them in registers. Selects and FMAs are spelled out (ISO C mode does not contract a * b + c); results
# equal the scalar code's fmaf/select expressions lane by lane.
def c_vec(lanes: int) -> str:
    """The vector helpers below for ``lanes`` float32 lanes (``VL``)."""
    return f"\n#define VL {int(lanes)}" + _C_VEC_BODY


_C_VEC_BODY = """
#if defined(__AVX__)
#include <immintrin.h>
#endif
typedef float vf __attribute__((vector_size(4 * VL)));
typedef int32_t vi __attribute__((vector_size(4 * VL)));
static inline vf vld(const float* p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void vst(float* p, vf v) { memcpy(p, &v, sizeof v); }
static inline vf vsplat(float s) { /* a broadcast ({0} + s would add 0 first: -0 -> +0, and one more op) */
    vf v;
    for (int i = 0; i < VL; ++i) v[i] = s;
    return v;
}
static inline vf vsel(vi m, vf a, vf b) { return (vf)(((vi)a & m) | ((vi)b & ~m)); }
/* a b + c, rounded once; the FMA instruction where there is one (the lane loop below is usually turned into it,
   but not always inside very large functions) */
static inline __attribute__((always_inline)) vf vfma(vf a, vf b, vf c) {
#if defined(__AVX512F__) && VL == 16
    return (vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif defined(__FMA__) && VL == 8
    return (vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
    vf r;
    for (int i = 0; i < VL; ++i) r[i] = fmaf(a[i], b[i], c[i]);
    return r;
#endif
}
/* Lane masks: AVX-512 mask registers where the vectors are 512-bit (a select or a masked add is one instruction;
   the bitwise select above compiles to two there), else -1 / 0 integer lanes. vm_* compare ordered (false for
   NaN, as C's < and ==), vblend(m, a, b) = m ? a : b, vadd_if(acc, m, v) = m ? acc + v : acc. */
#if defined(__AVX512F__) && VL == 16
/* vmin(a, b) = a < b ? a : b, vmax(a, b) = a > b ? a : b (b where either is NaN): one instruction */
static inline vf vmin(vf a, vf b) { return (vf)_mm512_min_ps((__m512)a, (__m512)b); }
static inline vf vmax(vf a, vf b) { return (vf)_mm512_max_ps((__m512)a, (__m512)b); }
typedef __mmask16 vm;
static inline vm vm_lt(vf a, vf b) { return _mm512_cmp_ps_mask((__m512)a, (__m512)b, _CMP_LT_OQ); }
static inline vm vm_gt(vf a, vf b) { return _mm512_cmp_ps_mask((__m512)a, (__m512)b, _CMP_GT_OQ); }
static inline vm vm_eq(vf a, vf b) { return _mm512_cmp_ps_mask((__m512)a, (__m512)b, _CMP_EQ_OQ); }
static inline vm vm_le(vf a, vf b) { return _mm512_cmp_ps_mask((__m512)a, (__m512)b, _CMP_LE_OQ); }
static inline vm vm_ge(vf a, vf b) { return _mm512_cmp_ps_mask((__m512)a, (__m512)b, _CMP_GE_OQ); }
static inline vm vm_nan(vf a) { return _mm512_cmp_ps_mask((__m512)a, (__m512)a, _CMP_UNORD_Q); }
static inline vf vblend(vm m, vf a, vf b) { return (vf)_mm512_mask_blend_ps(m, (__m512)b, (__m512)a); }
static inline vf vadd_if(vf acc, vm m, vf v) {
    return (vf)_mm512_mask_add_ps((__m512)acc, m, (__m512)acc, (__m512)v);
}
/* floor for |x| < 2^31 (one rounding instruction) */
static inline vf vfloor(vf x) {
    return (vf)_mm512_roundscale_ps((__m512)x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
}
#else
#if defined(__AVX__) && VL == 8
static inline vf vmin(vf a, vf b) { return (vf)_mm256_min_ps((__m256)a, (__m256)b); }
static inline vf vmax(vf a, vf b) { return (vf)_mm256_max_ps((__m256)a, (__m256)b); }
#else
static inline vf vmin(vf a, vf b) { return vsel(a < b, a, b); }
static inline vf vmax(vf a, vf b) { return vsel(a > b, a, b); }
#endif
typedef vi vm;
static inline vm vm_lt(vf a, vf b) { return a < b; }
static inline vm vm_gt(vf a, vf b) { return a > b; }
static inline vm vm_eq(vf a, vf b) { return a == b; }
static inline vm vm_le(vf a, vf b) { return a <= b; }
static inline vm vm_ge(vf a, vf b) { return a >= b; }
static inline vm vm_nan(vf a) { return a != a; }
static inline vf vblend(vm m, vf a, vf b) { return vsel(m, a, b); }
static inline vf vadd_if(vf acc, vm m, vf v) { return acc + (vf)((vi)v & m); }
/* floor for |x| < 2^31: truncate, then step down where truncation rounded up (negative non-integers) */
static inline vf vfloor(vf x) {
    vf f = __builtin_convertvector(__builtin_convertvector(x, vi), vf);
    return f + __builtin_convertvector((vi)(f > x), vf);
}
#endif
/* mk_exp of C_EXP, lane by lane */
static inline vf vexp(vf x) {
    x = vblend(vm_gt(x, vsplat(-87.0f)), x, vsplat(-87.0f));
    x = vblend(vm_lt(x, vsplat(88.0f)), x, vsplat(88.0f));
    vf z = x * 1.44269504088896341f;
    vf n = vfloor(z + 0.5f);
    vf f = z - n;
    vf p = vsplat(1.5252733804059841e-5f);
    p = vfma(p, f, vsplat(1.5403530393381609e-4f));
    p = vfma(p, f, vsplat(1.3333558146428443e-3f));
    p = vfma(p, f, vsplat(9.6181291076284772e-3f));
    p = vfma(p, f, vsplat(5.5504108664821580e-2f));
    p = vfma(p, f, vsplat(2.4022650695910071e-1f));
    p = vfma(p, f, vsplat(6.9314718055994531e-1f));
    p = vfma(p, f, vsplat(1.0f));
    vi e = (__builtin_convertvector(n, vi) + 127) << 23;
    return p * (vf)e;
}
"""


C_VEC = c_vec(8)  # 8 lanes: AVX2-sized vectors
