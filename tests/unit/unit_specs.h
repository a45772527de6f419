/* quarkfs unit tests — the spec x format matrix of doc/FORMAT.md §5.5, written out by hand
 * (not read from core/spec.c), and short names of the formats. Included after unit_util.c by
 * the tests that walk every valid pair (test_spec.c, test_layout.c, test_quant_layout.c). */
#ifndef QUARKFS_UNIT_SPECS_H
#define QUARKFS_UNIT_SPECS_H

#define FQ QFS_FMT_QUARK
#define FA QFS_FMT_AWQ
#define F8 QFS_FMT_FP8
#define FC QFS_FMT_COMPRESSED_TENSORS

static UU const char *const ALL_SPECS[] = {
    "int8", "int8-channel", "w8a8-int8", "fp8", "fp8-channel", "fp8-block",
    "uint4", "uint4-g32", "uint4-g64", "uint4-g128",
    "int4", "int4-g32", "int4-g64", "int4-g128", "mxfp4",
};
#define N_SPECS (sizeof ALL_SPECS / sizeof ALL_SPECS[0])
static UU const char *const ALL_FORMATS[] = {"quark", "awq", "fp8", "compressed-tensors"};

/* [spec][format]: quark: all but fp8-block; awq: uint4*, int4*; fp8: fp8, fp8-block;
 * compressed-tensors: int8-channel, w8a8-int8, fp8, fp8-channel, fp8-block, int4*. */
static UU const bool VALID[N_SPECS][4] = {
    /*                 quark  awq    fp8    ct    */
    /* int8        */ {true,  false, false, false},
    /* int8-channel*/ {true,  false, false, true},
    /* w8a8-int8   */ {true,  false, false, true},
    /* fp8         */ {true,  false, true,  true},
    /* fp8-channel */ {true,  false, false, true},
    /* fp8-block   */ {false, false, true,  true},
    /* uint4       */ {true,  true,  false, false},
    /* uint4-g32   */ {true,  true,  false, false},
    /* uint4-g64   */ {true,  true,  false, false},
    /* uint4-g128  */ {true,  true,  false, false},
    /* int4        */ {true,  true,  false, true},
    /* int4-g32    */ {true,  true,  false, true},
    /* int4-g64    */ {true,  true,  false, true},
    /* int4-g128   */ {true,  true,  false, true},
    /* mxfp4       */ {true,  false, false, false},
};

#endif
