/* The FP8 block quantizer, written from the formats' definitions:
 * e4m3fn = 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities; S.1111.111 is NaN, so
 * the largest finite value is 1.75 * 2^8 = 448; subnormals are m * 2^-9 (m = 1..7).
 * Per 128x128 block: amax = max |x| clamped to >= 1e-4, q = e4m3(x * (448 / amax)) rounded to
 * nearest even, scale_inv = amax / 448 (UE8M0: amax / 448 rounded up to a power of two, and
 * q = e4m3(x * (1 / scale_inv))), all in fp32, as DeepGEMM's per_block_cast_to_fp8 computes it
 * in torch: there `448.0 / x_amax` is Tensor.__rtruediv__, i.e. x_amax.reciprocal() * 448 (two
 * fp32 roundings; a single division differs in the last bit for about a quarter of amaxes). */
#include <math.h>
#include <string.h>
#include "mcorefs/fp8.h"

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Shift a 24-bit significand right, rounding to nearest even. */
static uint32_t shift_rne(uint32_t man, uint32_t shift)
{
    if (shift > 25)
        return 0;
    uint32_t q = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u)))
        q++;
    return q;
}

uint8_t mf_e4m3_from_f32(float x)
{
    uint32_t u = bits_of(x);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x43e80000u)                  /* NaN, inf, or > 464: rounds past 448 (torch: NaN) */
        return sign | 0x7f;
    if (a < 0x3c800000u) {                /* below 2^-6: subnormal m * 2^-9, m = RNE(|x| * 2^9) */
        uint32_t exp = a >> 23;
        if (exp == 0)                     /* fp32 subnormal: far below 2^-10, rounds to zero */
            return sign;
        uint32_t man = (a & 0x7fffffu) | 0x800000u;   /* |x| = man * 2^(exp - 150) */
        return sign | (uint8_t)shift_rne(man, 141 - exp);   /* m = 8 carries into 2^-6: right */
    }
    /* normal: keep 3 of the 23 mantissa bits, round to nearest even (a carry bumps the
     * exponent, which is the right value); rebias the exponent from 127 to 7 */
    uint32_t r = (a + 0x7ffffu + ((a >> 20) & 1u)) >> 20;
    return sign | (uint8_t)(r - (120u << 3));
}

float mf_e4m3_to_f32(uint8_t b)
{
    uint32_t sign = (uint32_t)(b & 0x80u) << 24, exp = (b >> 3) & 15u, man = b & 7u;
    if (exp == 15 && man == 7)
        return float_of(sign | 0x7fc00000u);
    float v = exp == 0 ? (float)man * 0x1p-9f : float_of(((exp + 120u) << 23) | (man << 20));
    return sign ? -v : v;
}

/* The smallest power of two >= v (v > 0, normal). */
static float pow2_ceil(float v)
{
    uint32_t a = bits_of(v);
    if ((a & 0x7fffffu) == 0)
        return v;
    return float_of(((a >> 23) + 1u) << 23);
}

void mf_fp8_block_factors(float amax, mf_quant q, float *mult, float *scale_inv)
{
    const float max = MF_FP8_MAX;   /* every operation below is one fp32 rounding */
    if (q == MF_QUANT_FP8_UE8M0) {
        float sf = pow2_ceil(amax / max);
        *scale_inv = sf;
        *mult = 1.0f / sf;               /* exact: a power of two */
    } else {
        *scale_inv = amax / max;
        *mult = (1.0f / amax) * max;     /* torch's 448.0 / x_amax: reciprocal, then times 448 */
    }
}

/* Not under ThreadSanitizer: the clones' ifunc resolvers run before its runtime is set up and the
 * binary crashes at start. */
#if defined(__x86_64__) && defined(__has_attribute) && !defined(__SANITIZE_THREAD__)
#if __has_attribute(target_clones) && defined(__ELF__)
#define MF_X86_CLONES __attribute__((target_clones("avx2", "default")))   /* 8 lanes: about twice as fast */
#endif
#endif
#ifndef MF_X86_CLONES
#define MF_X86_CLONES
#endif

MF_X86_CLONES
int mf_fp8_amax_update(const float *x, size_t n, float *amax)
{
    /* non-negative floats order like their bit patterns (signed compares suffice), and NaN /
     * infinity above all finite ones: one integer max (vectorizes), then one check */
    int32_t m = (int32_t)(bits_of(*amax) & 0x7fffffffu);
    for (size_t i = 0; i < n; i++) {
        int32_t a = (int32_t)(bits_of(x[i]) & 0x7fffffffu);
        m = a > m ? a : m;
    }
    if (m >= 0x7f800000)
        return -1;
    *amax = float_of((uint32_t)m);
    return 0;
}

/* The same on bf16 bits: the high half of the float's, so a 16-bit max (8 or 16 lanes). */
MF_X86_CLONES
static int amax_bf16(const uint8_t *src, size_t n, float *amax)
{
    int16_t m = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        int16_t a = (int16_t)(h & 0x7fffu);
        m = a > m ? a : m;
    }
    if (m >= 0x7f80)
        return -1;
    float v = float_of((uint32_t)m << 16);
    *amax = v > *amax ? v : *amax;
    return 0;
}

int mf_fp8_amax_raw(mf_dtype dt, const uint8_t *src, size_t n, float *amax, float *tmp)
{
    if (dt == MF_DT_BF16)
        return amax_bf16(src, n, amax);
    mf_fp8_load_f32(dt, src, n, tmp);
    return mf_fp8_amax_update(tmp, n, amax);
}

/* The hot loop, vectorizable, by another route than mf_e4m3_from_f32 (the unit tests check
 * that they agree): clamp |y| to 480 (the step past 448); round it to its e4m3 grid by adding
 * and subtracting c = 2^(e + 20), whose fp32 ulp is the grid step 2^(e - 3) of |y|'s binade
 * (2^-9 below 2^-6: subnormals), so the fp32 addition rounds to nearest even for us; then
 * scaling by 2^-120 moves e4m3's exponent bias (7) to fp32's (127): the top bits of the result
 * are the code, subnormals included (they become fp32 subnormals with the same mantissa), and
 * 480 becomes 0x7f, the NaN code. */
static inline uint32_t e4m3_code(float y, int32_t *nan)
{
    uint32_t u = bits_of(y);
    int32_t a = (int32_t)(u & 0x7fffffffu);
    a = a < 0x43f00000 ? a : 0x43f00000;              /* 480.0f; NaN and inf too */
    int32_t e = a & 0x7f800000;
    e = e > 0x3c800000 ? e : 0x3c800000;              /* 2^-6: subnormals share its step */
    float c = float_of((uint32_t)e + (20u << 23));
    float v = (float_of((uint32_t)a) + c) - c;
    uint32_t code = bits_of(v * 0x1p-120f) >> 20;
    *nan |= code == 0x7f;
    return ((u >> 24) & 0x80u) | code;
}

MF_X86_CLONES
int mf_fp8_quantize(const float *x, size_t n, float mult, uint8_t *dst)
{
    int32_t nan = 0;
    for (size_t i = 0; i < n; i++)
        dst[i] = (uint8_t)e4m3_code(x[i] * mult, &nan);
    return nan ? -1 : 0;
}

MF_X86_CLONES
static int quantize_bf16(const uint8_t *src, size_t n, float mult, uint8_t *dst)
{
    int32_t nan = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        dst[i] = (uint8_t)e4m3_code(float_of((uint32_t)h << 16) * mult, &nan);
    }
    return nan ? -1 : 0;
}

int mf_fp8_quantize_raw(mf_dtype dt, const uint8_t *src, size_t n, float mult, uint8_t *dst, float *tmp)
{
    if (dt == MF_DT_BF16)
        return quantize_bf16(src, n, mult, dst);
    mf_fp8_load_f32(dt, src, n, tmp);
    return mf_fp8_quantize(tmp, n, mult, dst);
}

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    float v;
    if (exp == 0)
        v = (float)man * 0x1p-24f;
    else if (exp == 31)
        v = man ? NAN : INFINITY;
    else
        v = float_of(((exp + 112u) << 23) | (man << 13));
    return sign ? -v : v;
}

void mf_fp8_load_f32(mf_dtype dt, const uint8_t *src, size_t n, float *dst)
{
    uint16_t h;
    double d;
    switch (dt) {
    case MF_DT_BF16:
        for (size_t i = 0; i < n; i++) {
            memcpy(&h, src + 2 * i, 2);
            dst[i] = float_of((uint32_t)h << 16);
        }
        break;
    case MF_DT_F16:
        for (size_t i = 0; i < n; i++) {
            memcpy(&h, src + 2 * i, 2);
            dst[i] = f16_to_f32(h);
        }
        break;
    case MF_DT_F32:
        memcpy(dst, src, n * 4);
        break;
    case MF_DT_F64:
        for (size_t i = 0; i < n; i++) {
            memcpy(&d, src + 8 * i, 8);
            dst[i] = (float)d;
        }
        break;
    default:
        memset(dst, 0, n * sizeof(float));
        break;
    }
}
