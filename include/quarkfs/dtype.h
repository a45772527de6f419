/* quarkfs — safetensors dtypes and the scalar conversions the kernels are built from.
 * Every conversion here is the exact rounding PyTorch applies (round to nearest, ties to even),
 * written with integer and float32 operations only so loops over them vectorize. */
#ifndef QUARKFS_DTYPE_H
#define QUARKFS_DTYPE_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* In safetensors' enum order: the file layout sorts tensors by this order, descending. */
typedef enum qfs_dtype {
    QFS_DT_BOOL, QFS_DT_F4, QFS_DT_F6_E2M3, QFS_DT_F6_E3M2, QFS_DT_U8, QFS_DT_I8,
    QFS_DT_F8_E5M2, QFS_DT_F8_E4M3, QFS_DT_F8_E8M0, QFS_DT_F8_E4M3FNUZ, QFS_DT_F8_E5M2FNUZ,
    QFS_DT_I16, QFS_DT_U16, QFS_DT_F16, QFS_DT_BF16, QFS_DT_I32, QFS_DT_U32, QFS_DT_F32,
    QFS_DT_C64, QFS_DT_F64, QFS_DT_I64, QFS_DT_U64,
    QFS_DT_COUNT
} qfs_dtype;

/* Looks up a safetensors dtype string ("BF16"); 0 on success, -EINVAL if unknown. */
int qfs_dtype_from_name(const char *name, qfs_dtype *out);
/* The safetensors spelling of a dtype ("BF16"). */
const char *qfs_dtype_name(qfs_dtype dt);
/* Bits per element (4, 6, 8, 16, 32 or 64). */
unsigned qfs_dtype_bits(qfs_dtype dt);
/* True for the source dtypes quarkfs quantizes from: BF16, F16, F32. */
bool qfs_dtype_is_quantizable(qfs_dtype dt);

static inline uint32_t qfs_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float qfs_f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static inline float qfs_bf16_to_f32(uint16_t h) { return qfs_f32_from_bits((uint32_t)h << 16); }

/* float32 -> bfloat16 bits, nearest-even (PyTorch's round_to_nearest_even; NaN is never fed). */
static inline uint16_t qfs_f32_to_bf16(float f)
{
    uint32_t u = qfs_f32_bits(f);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

/* IEEE half bits -> float32 (exact). */
static inline float qfs_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t man = h & 0x3FFu;
    /* Normal: rebias. Subnormal: man * 2^-24 computed exactly in float. Inf/NaN: all-ones exp. */
    uint32_t normal = sign | ((exp + 112u) << 23) | (man << 13);
    uint32_t infnan = sign | 0x7F800000u | (man << 13);
    float sub = (float)man * 0x1p-24f;
    uint32_t subbits = sign | qfs_f32_bits(sub);
    uint32_t r = exp == 0 ? subbits : (exp == 31 ? infnan : normal);
    return qfs_f32_from_bits(r);
}

/* float32 -> IEEE half bits, nearest-even, overflow to infinity (finite inputs only). */
static inline uint16_t qfs_f32_to_f16(float f)
{
    uint32_t u = qfs_f32_bits(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7FFFFFFFu;
    uint32_t r;
    if (a >= 0x47800000u) {            /* >= 65536: rounds to inf (65520 and up also do, below) */
        r = 0x7C00u;
    } else if (a >= 0x38800000u) {     /* normal half range, >= 2^-14 */
        uint32_t m = a + 0xC8000FFFu + ((a >> 13) & 1u); /* rebias (-112<<23) and round */
        r = m >> 13;
        if (r > 0x7C00u) r = 0x7C00u;
    } else {                           /* subnormal or zero: let float addition round */
        float v = qfs_f32_from_bits(a) + 0.5f; /* 0.5 = 2^-1: aligns the ulp to 2^-24 */
        r = qfs_f32_bits(v) - 0x3F000000u;
    }
    return (uint16_t)(sign | r);
}

/* float32 -> e4m3fn bits, nearest-even, sign kept (also on zero): PyTorch's
 * fp8_e4m3fn_from_fp32_value. Inputs beyond +-464 would give NaN (0x7F): callers clamp first. */
static inline uint8_t qfs_f32_to_e4m3(float f)
{
    uint32_t u = qfs_f32_bits(f);
    uint32_t sign = u & 0x80000000u;
    uint32_t a = u ^ sign;
    uint8_t r;
    if (a >= (1087u << 20)) {
        r = 0x7F;
    } else if (a < (121u << 23)) {     /* below 2^-6: subnormal, rounded by a float add */
        uint32_t denorm_mask = 141u << 23;
        uint32_t v = qfs_f32_bits(qfs_f32_from_bits(a) + qfs_f32_from_bits(denorm_mask));
        r = (uint8_t)(v - denorm_mask);
    } else {
        uint32_t mant_odd = (a >> 20) & 1u;
        a += ((uint32_t)(7 - 127) << 23) + 0x7FFFFu;
        a += mant_odd;
        r = (uint8_t)(a >> 20);
    }
    return (uint8_t)(r | (sign >> 24));
}

/* e4m3fn bits -> float32 (exact; 0x7F/0xFF are NaN). */
float qfs_e4m3_to_f32(uint8_t b);

/* Loads element i of a BF16/F16/F32 buffer as float32 (exact). */
static inline float qfs_load_f32(const void *src, qfs_dtype dt, size_t i)
{
    if (dt == QFS_DT_BF16) return qfs_bf16_to_f32(((const uint16_t *)src)[i]);
    if (dt == QFS_DT_F16) return qfs_f16_to_f32(((const uint16_t *)src)[i]);
    return ((const float *)src)[i];
}

/* rD: rounds a float32 value to dtype dt (BF16/F16) and back; identity for F32. */
static inline float qfs_round_to(float f, qfs_dtype dt)
{
    if (dt == QFS_DT_BF16) return qfs_bf16_to_f32(qfs_f32_to_bf16(f));
    if (dt == QFS_DT_F16) return qfs_f16_to_f32(qfs_f32_to_f16(f));
    return f;
}

/* Stores float32 value f (already representable in dt) as element i of a dt buffer. */
static inline void qfs_store_as(void *dst, qfs_dtype dt, size_t i, float f)
{
    if (dt == QFS_DT_BF16) ((uint16_t *)dst)[i] = qfs_f32_to_bf16(f);
    else if (dt == QFS_DT_F16) ((uint16_t *)dst)[i] = qfs_f32_to_f16(f);
    else ((float *)dst)[i] = f;
}

#endif
