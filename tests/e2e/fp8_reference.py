"""An independent reference for the FP8 view (-o quant=fp8 / fp8_ue8m0), written from the rule
in the README (issue 17), not from core/fp8_*.c:

- which tensors: 2-D weights `model.layers.*` of the attention projections (q/k/v/o_proj,
  MLA's q_a/q_b/kv_a_proj_with_mqa/kv_b_proj directly under self_attn) and of every MLP
  projection (gate/up/down_proj anywhere under `mlp`, Mixtral's w1/w2/w3 under block_sparse_moe);
- per 128x128 block, in fp32: amax = max|x| clamped to >= 1e-4; fp8: scale_inv = amax/448,
  q = e4m3(x * (448/amax)) where 448/amax is evaluated as torch evaluates DeepGEMM's
  `448.0 / x_amax` (Tensor.__rtruediv__ = reciprocal() * 448: two fp32 roundings);
  ue8m0: scale_inv = amax/448 rounded up to a power of two, q = e4m3(x * (1/scale_inv));
- e4m3 (e4m3fn): round to nearest, ties to the even code, found by searching the table of all
  e4m3 values (the C code uses bit arithmetic instead); NaN above the last rounding range.
"""
import numpy as np

BLOCK = 128
ATTN = {"q_proj", "k_proj", "v_proj", "o_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa",
        "kv_b_proj"}
MLP = {"gate_proj", "up_proj", "down_proj"}
MIXTRAL = {"w1", "w2", "w3"}


def is_quantized(name, shape):
    p = name.split(".")
    if len(shape) != 2 or p[:2] != ["model", "layers"] or p[-1] != "weight" or len(p) < 4:
        return False
    mod = p[-2]
    return ((mod in ATTN and p[-3] == "self_attn") or (mod in MLP and "mlp" in p[:-2])
            or (mod in MIXTRAL and "block_sparse_moe" in p[:-2]))


def _e4m3_values():
    """The 127 non-negative finite e4m3fn values, code order = value order (codes 0..0x7e)."""
    vals = []
    for c in range(0x7f):
        e, m = c >> 3, c & 7
        vals.append(m * 2.0 ** -9 if e == 0 else (1 + m / 8.0) * 2.0 ** (e - 7))
    return np.array(vals)


E4M3 = _e4m3_values()
_STEPS = np.append(E4M3, 480.0)   # the step after 448 (its code 0x7f is NaN)


def e4m3_decode(codes):
    codes = np.asarray(codes, dtype=np.uint8)
    mag = codes & 0x7f
    v = np.where(mag == 0x7f, np.nan, E4M3[np.minimum(mag, 0x7e)])
    return np.where(codes & 0x80, -v, v)


def e4m3_encode(y):
    """float32 array -> uint8 e4m3fn codes (nearest, ties to even; > 464 and NaN -> 0x7f|sign)."""
    y = np.asarray(y, dtype=np.float32)
    a = np.abs(y.astype(np.float64))
    hi = np.clip(np.searchsorted(_STEPS, a, side="left"), 0, len(_STEPS) - 1)
    lo = np.maximum(hi - 1, 0)
    dlo, dhi = a - _STEPS[lo], _STEPS[hi] - a
    code = np.where(dlo < dhi, lo, np.where(dhi < dlo, hi, np.where(lo % 2 == 0, lo, hi)))
    code = np.where(np.isnan(a) | (a > 480), 0x7f, np.minimum(code, 0x7f))
    return (code | (np.signbit(y).astype(np.int64) << 7)).astype(np.uint8)


def to_f32(dtype, raw, shape):
    if dtype == "BF16":
        return (np.frombuffer(raw, "<u2").astype("<u4") << 16).view("<f4").reshape(shape)
    if dtype == "F16":
        return np.frombuffer(raw, "<f2").astype(np.float32).reshape(shape)
    if dtype == "F32":
        return np.frombuffer(raw, "<f4").reshape(shape).copy()
    raise ValueError("no float dtype: %s" % dtype)


def pow2_ceil(v):
    """The smallest power of two >= v (v > 0), exactly."""
    m, e = np.frexp(np.float64(v))          # v = m * 2**e, 0.5 <= m < 1
    return np.float32(v) if m == 0.5 else np.float32(np.ldexp(1.0, int(e)))


def quantize(x, ue8m0=False):
    """x: 2-D float32 array -> (uint8 codes [R, C], float32 scale_inv [ceil(R/128), ceil(C/128)])."""
    R, C = x.shape
    nbr, nbc = -(-R // BLOCK), -(-C // BLOCK)
    q = np.empty((R, C), np.uint8)
    s = np.empty((nbr, nbc), np.float32)
    f448 = np.float32(448.0)
    for i in range(nbr):
        for j in range(nbc):
            blk = x[i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK]
            if not np.all(np.isfinite(blk)):
                raise ValueError("NaN/Inf in block (%d, %d)" % (i, j))
            amax = max(np.float32(np.abs(blk).max()), np.float32(1e-4))
            if ue8m0:
                sf = pow2_ceil(np.float32(amax / f448))
                mult = np.float32(1.0) / sf
            else:
                sf = np.float32(amax / f448)
                mult = np.float32(np.float32(np.float32(1.0) / amax) * f448)
            y = (blk * mult).astype(np.float32)
            # cannot happen by construction (|y| <= 448 up to one rounding): asserted
            assert np.all(np.abs(y) < 464), "scaled value beyond 448's rounding range"
            q[i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK] = e4m3_encode(y)
            s[i, j] = sf
    return q, s


def dequantize(q, s):
    R, C = q.shape
    full = np.repeat(np.repeat(s, BLOCK, axis=0), BLOCK, axis=1)[:R, :C]
    return e4m3_decode(q) * full


def half_ulp_bound(x, s):
    """Per element: half an e4m3 step at x's scaled magnitude, in source units (subnormal steps
    are 2^-9; normal steps 2^(e-3) for |y| in [2^e, 2^(e+1)))."""
    R, C = x.shape
    full = np.repeat(np.repeat(s.astype(np.float64), BLOCK, axis=0), BLOCK, axis=1)[:R, :C]
    y = np.abs(x.astype(np.float64)) / full
    e = np.floor(np.log2(np.maximum(y, 2.0 ** -6)))
    step = np.where(y < 2.0 ** -6, 2.0 ** -9, 2.0 ** (e - 3))
    return step / 2 * full


def torch_agrees(n=200000, seed=0):
    """With torch (any version): the reference's per-block factors equal what torch computes for
    DeepGEMM's expressions `x_amax.clamp(1e-4)`, `448.0 / x_amax` and `x_amax / 448.0`, and the
    scaled values `x_view * (448.0 / x_amax)` (bf16 * fp32 -> fp32). None if torch is absent."""
    try:
        import torch
    except ImportError:
        return None
    rng = np.random.default_rng(seed)
    amax = np.concatenate([np.abs(rng.standard_normal(n)).astype(np.float32) * 10 ** rng.uniform(-6, 3, n).astype(np.float32),
                           np.float32([0, 1e-4, 448, 3])]).astype(np.float32)
    t = torch.from_numpy(amax).clamp(1e-4)
    clamped = np.maximum(amax, np.float32(1e-4))
    if not np.array_equal(t.numpy(), clamped):
        return False
    mult_t = (448.0 / t).numpy()
    mult_r = (np.float32(1.0) / clamped).astype(np.float32) * np.float32(448.0)
    sf_t = (t / 448.0).numpy()
    sf_r = clamped / np.float32(448.0)
    x = torch.randn(4096).to(torch.bfloat16)
    y_t = (x * (448.0 / t[:4096])).numpy()
    y_r = to_f32("BF16", x.view(torch.int16).numpy().tobytes(), (4096,)) * mult_r[:4096]
    return bool(np.array_equal(mult_t, mult_r) and np.array_equal(sf_t, sf_r) and np.array_equal(y_t, y_r))
