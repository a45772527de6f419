#include "mountinfo.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

void qfs_mountinfo_unescape(char *s)
{
    char *w = s;
    for (const char *r = s; *r; w++) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
            r[3] >= '0' && r[3] <= '7') {
            *w = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
            r += 4;
        } else {
            *w = *r++;
        }
    }
    *w = '\0';
}

bool qfs_mountinfo_topmost(FILE *f, const char *mountpoint, char *majmin, size_t mm_len,
                           char *type, size_t type_len)
{
    bool found = false;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        char mp[PATH_MAX], mm[64], ty[64];
        const char *sep = strstr(line, " - ");
        if (!sep || sscanf(line, "%*s %*s %63s %*s %4095s", mm, mp) != 2 ||
            sscanf(sep + 3, "%63s", ty) != 1)
            continue;
        qfs_mountinfo_unescape(mp);
        if (strcmp(mp, mountpoint) != 0) continue;
        found = true;   /* later lines are mounted on top of earlier ones: keep the last */
        snprintf(majmin, mm_len, "%s", mm);
        snprintf(type, type_len, "%s", ty);
    }
    return found;
}

void qfs_mountinfo_readahead_path(const char *mountpoint, char *out, size_t len)
{
    char majmin[64], type[64];
    out[0] = '\0';
    FILE *f = fopen("/proc/self/mountinfo", "r");
    if (!f) return;
    bool found = qfs_mountinfo_topmost(f, mountpoint, majmin, sizeof majmin, type, sizeof type);
    fclose(f);
    if (found && strncmp(type, "fuse", 4) == 0)
        snprintf(out, len, "/sys/class/bdi/%s/read_ahead_kb", majmin);
}
