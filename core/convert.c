/* Float dtype conversion on read (-o dtype=...): round to nearest even when narrowing. */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "mcorefs/gather.h"

static float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint16_t f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)           /* NaN: keep it a quiet NaN */
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);                /* round to nearest even */
    return (uint16_t)(u >> 16);
}

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else {                                      /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while ((man & 0x400u) == 0) {
                man <<= 1;
                exp--;
            }
            u = sign | (exp << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp - 15 + 127) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint16_t f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u);
    if (a >= 0x477ff000u)                            /* rounds to >= 65520: infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) {                           /* result is subnormal or zero */
        if (a < 0x33000000u)
            return (uint16_t)sign;
        uint32_t exp = a >> 23, man = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - exp;                  /* 14 + (113 - exp) */
        uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1u)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1u);      /* round mantissa to 10 bits, nearest even */
    return (uint16_t)(sign | (((r >> 23) - 127 + 15) << 10 | ((r >> 13) & 0x3ffu)));
}

static double load(mf_dtype dt, const uint8_t *p)
{
    uint16_t h;
    float f;
    double d;
    switch (dt) {
    case MF_DT_BF16: memcpy(&h, p, 2); return bf16_to_f32(h);
    case MF_DT_F16: memcpy(&h, p, 2); return f16_to_f32(h);
    case MF_DT_F32: memcpy(&f, p, 4); return f;
    case MF_DT_F64: memcpy(&d, p, 8); return d;
    default: return 0.0;
    }
}

static void store(mf_dtype dt, uint8_t *p, double v)
{
    uint16_t h;
    float f = (float)v;
    switch (dt) {
    case MF_DT_BF16: h = f32_to_bf16(f); memcpy(p, &h, 2); break;
    case MF_DT_F16: h = f32_to_f16(f); memcpy(p, &h, 2); break;
    case MF_DT_F32: memcpy(p, &f, 4); break;
    case MF_DT_F64: memcpy(p, &v, 8); break;
    default: break;
    }
}

void mf_convert(mf_dtype from, const void *src, mf_dtype to, void *dst, size_t n)
{
    size_t fs = mf_dtype_size(from), ts = mf_dtype_size(to);
    const uint8_t *s = src;
    uint8_t *d = dst;
    if (from == to) {
        memmove(dst, src, n * fs);
        return;
    }
    for (size_t i = 0; i < n; i++)
        store(to, d + i * ts, load(from, s + i * fs));
}

/* A norm weight shown in another convention (w - 1, w + 1): the sum is taken in float32 (in
 * float64 for a float64 source) and rounded once to the shown dtype, as torch computes `w + c`
 * for bf16 / f16 / f32 tensors on the CPU. */
void mf_convert_add(mf_dtype from, const void *src, mf_dtype to, void *dst, size_t n, float add)
{
    size_t fs = mf_dtype_size(from), ts = mf_dtype_size(to);
    const uint8_t *s = src;
    uint8_t *d = dst;
    if (add == 0.0f) {
        mf_convert(from, src, to, dst, n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        double v = load(from, s + i * fs);
        if (from == MF_DT_F64)
            v += (double)add;
        else
            v = (double)((float)v + add);
        store(to, d + i * ts, v);
    }
}
