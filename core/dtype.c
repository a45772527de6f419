#include "quarkfs/dtype.h"

#include <errno.h>

static const struct { const char *name; unsigned bits; } dtype_table[QFS_DT_COUNT] = {
    [QFS_DT_BOOL] = {"BOOL", 8},          [QFS_DT_F4] = {"F4", 4},
    [QFS_DT_F6_E2M3] = {"F6_E2M3", 6},    [QFS_DT_F6_E3M2] = {"F6_E3M2", 6},
    [QFS_DT_U8] = {"U8", 8},              [QFS_DT_I8] = {"I8", 8},
    [QFS_DT_F8_E5M2] = {"F8_E5M2", 8},    [QFS_DT_F8_E4M3] = {"F8_E4M3", 8},
    [QFS_DT_F8_E8M0] = {"F8_E8M0", 8},    [QFS_DT_F8_E4M3FNUZ] = {"F8_E4M3FNUZ", 8},
    [QFS_DT_F8_E5M2FNUZ] = {"F8_E5M2FNUZ", 8},
    [QFS_DT_I16] = {"I16", 16},           [QFS_DT_U16] = {"U16", 16},
    [QFS_DT_F16] = {"F16", 16},           [QFS_DT_BF16] = {"BF16", 16},
    [QFS_DT_I32] = {"I32", 32},           [QFS_DT_U32] = {"U32", 32},
    [QFS_DT_F32] = {"F32", 32},           [QFS_DT_C64] = {"C64", 64},
    [QFS_DT_F64] = {"F64", 64},           [QFS_DT_I64] = {"I64", 64},
    [QFS_DT_U64] = {"U64", 64},
};

int qfs_dtype_from_name(const char *name, qfs_dtype *out)
{
    for (int i = 0; i < QFS_DT_COUNT; i++) {
        if (strcmp(name, dtype_table[i].name) == 0) {
            *out = (qfs_dtype)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *qfs_dtype_name(qfs_dtype dt)
{
    return (unsigned)dt < QFS_DT_COUNT ? dtype_table[dt].name : "?";
}

unsigned qfs_dtype_bits(qfs_dtype dt)
{
    return (unsigned)dt < QFS_DT_COUNT ? dtype_table[dt].bits : 0;
}

bool qfs_dtype_is_quantizable(qfs_dtype dt)
{
    return dt == QFS_DT_BF16 || dt == QFS_DT_F16 || dt == QFS_DT_F32;
}

float qfs_e4m3_to_f32(uint8_t b)
{
    unsigned sign = b >> 7, exp = (b >> 3) & 0xF, man = b & 7;
    float v;
    if (exp == 0xF && man == 7) return qfs_f32_from_bits(0x7FC00000u | ((uint32_t)sign << 31));
    if (exp == 0) v = (float)man * 0x1p-9f;
    else v = (1.0f + (float)man / 8.0f) * qfs_f32_from_bits((exp - 7u + 127u) << 23);
    return sign ? -v : v;
}
