/* What jansson alone costs on a file quarkfs reads at mount: json_loadb of a safetensors
 * header (as core/safetensors.c calls it) or of a whole JSON file, then json_decref, each
 * timed on its own in CPU seconds of this process (other load on a shared machine does not
 * count). The floor under quarkfs's own mount work (tests/bench/mount_scale.py).
 * Usage: jansson_load st FILE | jansson_load json FILE; prints "load S free S". */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[1], "st") != 0 && strcmp(argv[1], "json") != 0)) {
        fprintf(stderr, "usage: jansson_load st|json FILE\n");
        return 2;
    }
    FILE *f = fopen(argv[2], "rb");
    if (!f) {
        perror(argv[2]);
        return 1;
    }
    size_t len = 0, flags = 0;
    if (strcmp(argv[1], "st") == 0) {
        uint8_t h[8];
        if (fread(h, 1, 8, f) != 8) return 1;
        for (int i = 7; i >= 0; i--) len = (len << 8) | h[i];
        flags = JSON_REJECT_DUPLICATES;
    } else {
        fseek(f, 0, SEEK_END);
        len = (size_t)ftell(f);
        rewind(f);
    }
    char *buf = malloc(len ? len : 1);
    if (!buf || fread(buf, 1, len, f) != len) {
        fprintf(stderr, "%s: cannot read %zu bytes\n", argv[2], len);
        return 1;
    }
    fclose(f);
    json_error_t err;
    double t0 = now();
    json_t *root = json_loadb(buf, len, flags, &err);
    double t1 = now();
    if (!root) {
        fprintf(stderr, "%s: %s\n", argv[2], err.text);
        return 1;
    }
    json_decref(root);
    double t2 = now();
    printf("load %.4f free %.4f\n", t1 - t0, t2 - t1);
    free(buf);
    return 0;
}
