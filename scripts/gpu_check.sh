#!/usr/bin/env bash
# GPU check (issue 14, point 5): run the CUDA paths that CI, on CPU-only machines, never runs. Under 5 minutes on
# one H200. Run from the repository root on a machine with a CUDA GPU:
#
#     bash scripts/gpu_check.sh            # or: PYTHON=/path/to/python bash scripts/gpu_check.sh
#
# 1. selective_scan on CUDA (mamba-ssm's fused kernel when `mamba_ssm` is installed, else the project's PyTorch
#    scan on CUDA) against the float64 CPU reference: output and all eight gradients, both layouts.
# 2. bf16 autocast training of all six variants for 50 steps on CUDA (`mamba-kan train --precision bf16`): every
#    run must complete with a finite loss.
# 3. `mamba-kan bench --device cuda --suite mixer` (timings and memory of the mixers and the scan on CUDA).
#
# Output goes to $OUT (default ./gpu-check-<date>); the script stops at the first failure (exit status != 0).
set -euo pipefail

PYTHON="${PYTHON:-python}"
OUT="${OUT:-gpu-check-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
export PYTHONPATH="${PWD}/src${PYTHONPATH:+:$PYTHONPATH}"
log() { printf '[gpu_check %s] %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$OUT/gpu_check.log"; }

"$PYTHON" - <<'EOF' 2>&1 | tee -a "$OUT/gpu_check.log"
import torch
assert torch.cuda.is_available(), "no CUDA device: this script checks the CUDA paths"
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
try:
    import mamba_ssm
    print("mamba_ssm", getattr(mamba_ssm, "__version__", "?"), "(selective_scan dispatches to its kernel)")
except ImportError:
    print("mamba_ssm NOT installed: selective_scan on CUDA runs the project's PyTorch scan")
EOF

log "1/3 selective_scan on CUDA vs the float64 CPU reference (forward and gradients)"
timeout 300 "$PYTHON" - <<'EOF' 2>&1 | tee -a "$OUT/gpu_check.log"
import torch
from mamba_kan.ops.selective_scan import _mamba_ssm_scan, selective_scan, selective_scan_ref

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
print("dispatch:", "mamba-ssm selective_scan_fn" if _mamba_ssm_scan() is not None else "project PyTorch scan")


def inputs(bsz, d, n, L, seed):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return {"u": r(bsz, d, L), "delta": r(bsz, d, L) * 0.5 - 1.0,
            "A": -torch.rand(d, n, generator=g, dtype=torch.float64) * 4 - 0.05,
            "B": r(bsz, n, L), "C": r(bsz, n, L), "D": r(d), "z": r(bsz, d, L), "delta_bias": r(d) * 0.3}


def run(fn, x, device, dtype, weight, time_major=False):
    leaves = {k: v.to(device=device, dtype=dtype).requires_grad_() for k, v in x.items()}
    args = dict(leaves)
    if time_major:  # (batch, d, L) -> (L, batch, d) views, as modules/mamba.py passes them
        args = {k: (v.permute(2, 0, 1) if v.dim() == 3 else v) for k, v in leaves.items()}
        y = fn(**args, delta_softplus=True, time_major=True).permute(1, 2, 0)
    else:
        y = fn(**args, delta_softplus=True)
    grads = torch.autograd.grad((y * weight.to(device, y.dtype)).sum(), [leaves[k] for k in NAMES])
    return y.detach().double().cpu(), {k: g.double().cpu() for k, g in zip(NAMES, grads)}


worst = 0.0
for bsz, d, n, L, seed in ((2, 64, 16, 256, 0), (3, 40, 8, 1000, 1)):
    x = inputs(bsz, d, n, L, seed)
    weight = torch.randn(bsz, d, L, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    ref_y, ref_g = run(selective_scan_ref, x, "cpu", torch.float64, weight)
    for time_major in (False, True):
        y, g = run(selective_scan, x, "cuda", torch.float32, weight, time_major)
        errs = {"y": ((y - ref_y).abs().max() / ref_y.abs().max()).item()}
        errs.update({k: ((g[k] - ref_g[k]).abs().max() / ref_g[k].abs().max()).item() for k in NAMES})
        worst = max(worst, *errs.values())
        print(f"  batch {bsz} d {d} N {n} L {L} time_major={time_major}: max error / max |ref| "
              + " ".join(f"{k} {v:.1e}" for k, v in errs.items()))
        bad = {k: v for k, v in errs.items() if not v <= 2e-3}  # fp32 over L steps; NaN fails too
        assert not bad, f"CUDA scan differs from the float64 reference: {bad}"
print(f"  OK (worst relative error {worst:.1e}, tolerance 2e-3)")
EOF

log "2/3 bf16 autocast training, six variants x 50 steps on CUDA"
VARIANTS=$("$PYTHON" -c "from mamba_kan.design import VARIANTS; print(' '.join(VARIANTS))")
for v in $VARIANTS; do
    timeout 120 "$PYTHON" -m mamba_kan train --model "$v" --task language --device cuda --precision bf16 \
        --max-steps 50 --json >"$OUT/train_$v.json" 2>"$OUT/train_$v.err" || {
        log "FAILED: $v (see $OUT/train_$v.err)"; tail -5 "$OUT/train_$v.err"; exit 1; }
    "$PYTHON" - "$OUT/train_$v.json" "$v" <<'EOF' 2>&1 | tee -a "$OUT/gpu_check.log"
import json, math, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip().startswith("{")]
assert rows, f"{sys.argv[2]}: no result printed"
res = rows[-1]
assert res.get("status") == "completed", f"{sys.argv[2]}: status {res.get('status')}: {res.get('error')}"
losses = {k: v for k, v in res.items() if "loss" in k and isinstance(v, (int, float))}
assert all(math.isfinite(v) for v in losses.values()), f"{sys.argv[2]}: non-finite {losses}"
print(f"  {sys.argv[2]}: completed, " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(losses.items())[:4]))
EOF
done

log "3/3 mamba-kan bench --device cuda --suite mixer"
timeout 150 "$PYTHON" -m mamba_kan bench --device cuda --suite mixer --repeats 5 --budget 10 \
    --out "$OUT/bench-mixer-cuda.json" --markdown "$OUT/bench-mixer-cuda.md" 2>&1 | tee -a "$OUT/gpu_check.log"

log "all checks passed; results in $OUT"
