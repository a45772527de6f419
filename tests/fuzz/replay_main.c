/* Replays files through a fuzz target's LLVMFuzzerTestOneInput without libFuzzer: the seed corpus
 * and every regression input run as an ordinary test (under ASan/UBSan in scripts/test.sh's
 * sanitizer build). Arguments are files or directories (every file in them not starting with a
 * dot, in name order). Each input runs in a child process, so a violated invariant or a sanitizer
 * error (an abort) fails that input and the others still run; the exit status is 1 if any failed. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fuzz_check.h"

static int replay_file(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        perror(path);
        return -1;
    }
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            fclose(fp);
            return -1;
        }
        n += fread(buf + n, 1, cap - n, fp);
        if (n < cap) break;
        uint8_t *nb = realloc(buf, cap *= 2);
        if (!nb) free(buf);
        buf = nb;
    }
    fclose(fp);
    /* An exact-size copy, so reading past the input is caught by ASan as under libFuzzer. */
    uint8_t *data = malloc(n ? n : 1);
    if (!data) {
        free(buf);
        return -1;
    }
    memcpy(data, buf, n);
    free(buf);
    fprintf(stderr, "replay %s (%zu bytes)\n", path, n);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        free(data);
        return -1;
    }
    if (pid == 0) {
        LLVMFuzzerTestOneInput(data, n);
        free(data);
        exit(0);   /* exit, not _exit: ASan's leak check runs at exit */
    }
    free(data);
    int st;
    if (waitpid(pid, &st, 0) != pid) {
        perror("waitpid");
        return -1;
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return 0;
    if (WIFSIGNALED(st)) fprintf(stderr, "FAILED %s: killed by signal %d\n", path, WTERMSIG(st));
    else fprintf(stderr, "FAILED %s: exit status %d\n", path, WEXITSTATUS(st));
    return 1;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    size_t done = 0, failed = 0;
    int rc;
    for (int a = 1; a < argc; a++) {
        struct stat sb;
        if (stat(argv[a], &sb) != 0) {
            perror(argv[a]);
            return 1;
        }
        if (!S_ISDIR(sb.st_mode)) {
            if ((rc = replay_file(argv[a])) < 0) return 1;
            failed += rc;
            done++;
            continue;
        }
        DIR *d = opendir(argv[a]);
        if (!d) {
            perror(argv[a]);
            return 1;
        }
        char **names = NULL;
        size_t n = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char **nn = realloc(names, (n + 1) * sizeof *names);
            if (!nn) return 1;
            names = nn;
            size_t len = strlen(argv[a]) + strlen(e->d_name) + 2;
            names[n] = malloc(len);
            if (!names[n]) return 1;
            snprintf(names[n++], len, "%s/%s", argv[a], e->d_name);
        }
        closedir(d);
        if (n) qsort(names, n, sizeof *names, cmp_str);
        for (size_t i = 0; i < n; i++) {
            if (stat(names[i], &sb) == 0 && S_ISREG(sb.st_mode)) {
                if ((rc = replay_file(names[i])) < 0) return 1;
                failed += rc;
                done++;
            }
            free(names[i]);
        }
        free(names);
    }
    if (failed) {
        printf("%zu inputs replayed, %zu FAILED (see FAILED above)\n", done, failed);
        return 1;
    }
    printf("%zu inputs replayed, no invariant violated\n", done);
    return 0;
}
