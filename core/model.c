#include "quarkfs/model.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>

#include "quarkfs/engine.h"
#include "quarkfs/io.h"
#include "quarkfs/quant.h"
#include "quarkfs/rewrite.h"

#define MAX_DEPTH 128     /* nesting limit: each level holds two PATH_MAX buffers on the stack */
#define MAX_JSON_BYTES (64u << 20)         /* config.json / index larger than this is refused */
#define WRITE_BITS (S_IWUSR | S_IWGRP | S_IWOTH)
#define SCAN_CHUNK ((size_t)64 << 20)      /* --check-finite reads this much at a time */

static int add_warning(qfs_model *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int add_warning(qfs_model *m, const char *fmt, ...)
{
    char buf[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char **w = realloc(m->warnings, (m->n_warnings + 1) * sizeof *w);
    if (!w) return -ENOMEM;
    m->warnings = w;
    if (!(w[m->n_warnings] = strdup(buf))) return -ENOMEM;
    m->n_warnings++;
    return 0;
}

static int new_entry(qfs_model *m, size_t *cap, size_t parent, const char *rel,
                     const char *src_path, const struct stat *sb, qfs_entry_kind kind, size_t *out)
{
    if (m->n_entries == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        qfs_entry *ne = realloc(m->entries, nc * sizeof *ne);
        if (!ne) return -ENOMEM;
        m->entries = ne;
        *cap = nc;
    }
    qfs_entry *e = &m->entries[m->n_entries];
    memset(e, 0, sizeof *e);
    e->src_fd = -1;
    e->path = strdup(rel);
    e->src_path = strdup(src_path);
    if (!e->path || !e->src_path) {
        free(e->path);
        free(e->src_path);
        return -ENOMEM;
    }
    const char *slash = strrchr(e->path, '/');
    e->name = slash ? slash + 1 : e->path;
    e->parent = parent;
    e->kind = kind;
    e->st = *sb;
    e->src_dev = sb->st_dev;
    e->src_ino = sb->st_ino;
    e->st.st_mode &= ~(mode_t)WRITE_BITS;
    e->st.st_ino = (ino_t)(m->n_entries + 1);   /* FUSE_ROOT_ID is 1: entry 0 */
    e->st.st_nlink = kind == QFS_ENTRY_DIR ? 2 : 1;
    *out = m->n_entries++;
    return 0;
}

static bool is_quantized_name(const char *name)
{
    return fnmatch("model*.safetensors", name, 0) == 0;
}

/* Symlink policy: the view shows what a symlink points to only if the target lies inside SRC
 * or, when SRC is a Hugging Face cache snapshot (.../models--X/snapshots/REV), inside that
 * repository (its blobs/); anything else is left out with a warning unless
 * opts.follow_all_symlinks. So a link to /etc/shadow in SRC never reaches a reader of MNT. */
static bool path_within(const char *path, const char *root)
{
    size_t n = strlen(root);
    return root[0] && strncmp(path, root, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

static bool symlink_allowed(qfs_model *m, const char *src)
{
    struct stat lsb;
    if (m->opts.follow_all_symlinks || lstat(src, &lsb) != 0 || !S_ISLNK(lsb.st_mode)) return true;
    char target[PATH_MAX];
    if (!realpath(src, target)) return true;   /* stat() succeeded; a race: let open() decide */
    if (path_within(target, m->src_root) || path_within(target, m->link_root)) return true;
    add_warning(m, "%s: symlink to %s, outside the source directory (left out of the view; "
                "-o symlinks=all follows every symlink)", src, target);
    return false;
}

/* For a Hugging Face cache snapshot .../models--X/snapshots/REV, the repository .../models--X
 * (whose blobs/ the snapshot's symlinks point into); "" otherwise. */
static void find_link_root(const char *root, char *out, size_t len)
{
    out[0] = '\0';
    const char *rev = strrchr(root, '/');
    if (!rev || rev == root) return;
    const char *snap = rev - 1;
    while (snap > root && *snap != '/') snap--;
    if (*snap != '/' || (size_t)(rev - snap) != strlen("/snapshots") ||
        strncmp(snap, "/snapshots", 10) != 0 || snap == root)
        return;
    size_t n = (size_t)(snap - root);
    if (n < len) {
        memcpy(out, root, n);
        out[n] = '\0';
    }
}

/* The directories above the one being scanned: a symlink back to one of them is a loop. */
typedef struct ancestor {
    dev_t dev;
    ino_t ino;
    const struct ancestor *up;
} ancestor;

/* Walks src_dir recursively, adding entries under parent. */
static int scan_dir(qfs_model *m, size_t *cap, size_t parent, const char *src_dir,
                    const char *rel_dir, int depth, const ancestor *ancestors)
{
    DIR *d = opendir(src_dir);
    if (!d) {
        int e = errno;
        add_warning(m, "%s: cannot list: %s (shown empty)", src_dir, strerror(e));
        return 0;
    }
    struct dirent *de;
    int rc = 0;
    while (rc == 0 && (de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        char src[PATH_MAX], rel[PATH_MAX];
        if (snprintf(src, sizeof src, "%s/%s", src_dir, de->d_name) >= (int)sizeof src ||
            snprintf(rel, sizeof rel, "%s%s%s", rel_dir, *rel_dir ? "/" : "", de->d_name) >=
                (int)sizeof rel) {
            add_warning(m, "%s/%s: path too long (left out)", src_dir, de->d_name);
            continue;
        }
        struct stat sb, lsb;
        bool is_link = lstat(src, &lsb) == 0 && S_ISLNK(lsb.st_mode);
        if (stat(src, &sb) != 0) {     /* follows symlinks: the view shows their targets */
            add_warning(m, "%s: %s (left out of the view)", src, strerror(errno));
            continue;
        }
        if (!symlink_allowed(m, src)) continue;
        size_t idx;
        if (S_ISDIR(sb.st_mode)) {
            bool loop = false;
            for (const ancestor *a = ancestors; a && !loop; a = a->up)
                loop = a->dev == sb.st_dev && a->ino == sb.st_ino;
            if (loop) {
                add_warning(m, "%s: symlink loop back to a directory above it (left out of the "
                            "view)", src);
                continue;
            }
            if (depth + 1 >= MAX_DEPTH) {
                add_warning(m, "%s: more than %d directories deep (left out of the view)", src,
                            MAX_DEPTH);
                continue;
            }
            rc = new_entry(m, cap, parent, rel, src, &sb, QFS_ENTRY_DIR, &idx);
            if (rc) break;
            ancestor here = {sb.st_dev, sb.st_ino, ancestors};
            rc = scan_dir(m, cap, idx, src, rel, depth + 1, &here);
        } else if (S_ISREG(sb.st_mode)) {
            qfs_entry_kind kind = QFS_ENTRY_PASSTHROUGH;
            if (parent == 0 && is_quantized_name(de->d_name)) kind = QFS_ENTRY_QUANTIZED;
            rc = new_entry(m, cap, parent, rel, src, &sb, kind, &idx);
            if (rc == 0) m->entries[idx].src_link = is_link;
        } else {
            add_warning(m, "%s: not a regular file or directory (left out of the view)", src);
        }
    }
    closedir(d);
    return rc;
}

static int cmp_child(const void *a, const void *b, void *ctx)
{
    const qfs_model *m = ctx;
    return strcmp(m->entries[*(const size_t *)a].name, m->entries[*(const size_t *)b].name);
}

static int link_children(qfs_model *m)
{
    for (size_t i = 1; i < m->n_entries; i++) m->entries[m->entries[i].parent].n_children++;
    for (size_t i = 0; i < m->n_entries; i++) {
        qfs_entry *e = &m->entries[i];
        if (e->kind != QFS_ENTRY_DIR) continue;
        e->children = calloc(e->n_children ? e->n_children : 1, sizeof *e->children);
        if (!e->children) return -ENOMEM;
        e->n_children = 0;
    }
    for (size_t i = 1; i < m->n_entries; i++) {
        qfs_entry *p = &m->entries[m->entries[i].parent];
        p->children[p->n_children++] = i;
    }
    for (size_t i = 0; i < m->n_entries; i++)
        if (m->entries[i].kind == QFS_ENTRY_DIR)
            qsort_r(m->entries[i].children, m->entries[i].n_children, sizeof(size_t), cmp_child, m);
    return 0;
}

static void set_entry_error(qfs_model *m, qfs_entry *e, const char *msg)
{
    e->error = -EIO;
    free(e->error_msg);
    e->error_msg = strdup(msg);
    add_warning(m, "%s (reads of %s fail with EIO; the other files are served)", msg, e->path);
}

/* --check-finite: reads every candidate tensor once, before the layout is fixed, so tensors with
 * NaN/Inf can stay unquantized (and listed) instead of failing when read. */
static int scan_nonfinite(qfs_model *m, qfs_entry *e, bool **out, qfs_error *err)
{
    const qfs_st_file *f = &e->st_file;
    bool *bad = calloc(f->n_tensors ? f->n_tensors : 1, sizeof *bad);
    uint8_t *buf = malloc(SCAN_CHUNK);
    int rc = bad && buf ? 0 : -ENOMEM;
    for (size_t i = 0; i < f->n_tensors && rc == 0; i++) {
        const qfs_st_tensor *t = &f->tensors[i];
        if (qfs_select_tensor(t, m->opts.spec, &m->opts.rules) != QFS_SELECT_QUANTIZE) continue;
        size_t es = qfs_dtype_bits(t->dtype) / 8;
        uint64_t step = SCAN_CHUNK / es * es;
        for (uint64_t off = 0; off < t->end - t->begin && !bad[i]; off += step) {
            size_t len = (size_t)(t->end - t->begin - off < step ? t->end - t->begin - off : step);
            rc = qfs_pread_full(e->src_fd, buf, len, f->data_start + t->begin + off);
            if (rc) {
                qfs_error_set(err, "%s: tensor '%s': cannot read: %s", e->src_path, t->name,
                              strerror(-rc));
                break;
            }
            bool finite;
            /* One thread: a mount builds the model before it forks into a daemon, and an
             * OpenMP team started before fork() does not survive it. Reading dominates. */
            qfs_quant_amax(buf, t->dtype, len / es, &finite, 1);
            bad[i] = !finite;
        }
        if (bad[i]) add_warning(m, "%s: tensor '%s' holds NaN or Inf: left unquantized", e->src_path,
                                t->name);
    }
    free(buf);
    if (rc) {
        free(bad);
        return rc;
    }
    *out = bad;
    return 0;
}

/* Plans a quantized file: opens and parses it, unless a view of the same scan did already
 * (st_borrowed: src_fd and st_file are set). */
static int plan_quantized(qfs_model *m, qfs_entry *e)
{
    qfs_error err = {{0}};
    int rc = 0;
    if (!e->st_borrowed) {
        rc = qfs_open_regular(e->src_path, !e->src_link, e->src_dev, e->src_ino, &e->src_fd,
                              &err);
        if (rc) {
            set_entry_error(m, e, err.msg);
            return 0;
        }
        rc = qfs_st_read_fd(e->src_fd, e->src_path, &e->st_file, &err);
    }
    bool *nonfinite = NULL;
    if (rc == 0 && m->opts.check_finite) rc = scan_nonfinite(m, e, &nonfinite, &err);
    qfs_plan_options po = {m->opts.spec, m->opts.format, &m->opts.rules, nonfinite};
    if (rc == 0) rc = qfs_plan_build(&e->st_file, &po, e->src_path, &e->plan, &err);
    free(nonfinite);
    if (rc == -ENOMEM) return rc;
    if (rc) {
        set_entry_error(m, e, err.msg);
        return 0;
    }
    struct stat sb;
    if (fstat(e->src_fd, &sb) == 0) {   /* the version this view is planned from */
        e->src_size = sb.st_size;
        e->src_mtime = sb.st_mtim;
    }
    qfs_tensor_source_info si = {e->src_fd, e->src_path, &e->st_file, &e->plan, m->opts.format,
                                 e->src_size, e->src_mtime};
    if ((rc = qfs_tensor_source_new(&si, &e->source, &err))) return rc;
    m->src_bytes += (uint64_t)e->st.st_size;
    e->st.st_size = (off_t)e->plan.file_size;
    m->view_bytes += e->plan.file_size;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* True if a weight named lm_head.weight is quantized (a --layer rule named it). */
static bool lm_head_quantized(const qfs_model *m)
{
    for (size_t i = 0; i < m->n_entries; i++) {
        const qfs_entry *e = &m->entries[i];
        if (e->kind != QFS_ENTRY_QUANTIZED || e->error) continue;
        const qfs_st_tensor *t = qfs_st_find(&e->st_file, "lm_head.weight");
        if (t && e->plan.decisions[t - e->st_file.tensors] == QFS_SELECT_QUANTIZE) return true;
    }
    return false;
}

/* Module names of every unquantized Linear-like weight, plus "lm_head" (Quark's templates
 * always exclude it, and a tied lm_head has no tensor to find) unless a rule quantized it.
 * Sorted, unique. */
static int exclusion_list(const qfs_model *m, char ***out, size_t *n_out)
{
    size_t cap = 16, n = 0;
    char **list = malloc(cap * sizeof *list);
    if (!list || (!lm_head_quantized(m) && !(list[n++] = strdup("lm_head")))) {
        free(list);
        return -ENOMEM;
    }
    for (size_t i = 0; i < m->n_entries; i++) {
        const qfs_entry *e = &m->entries[i];
        if (e->kind != QFS_ENTRY_QUANTIZED || e->error) continue;
        for (size_t t = 0; t < e->st_file.n_tensors; t++) {
            if (!qfs_select_is_linear_like(e->plan.decisions[t])) continue;
            if (n == cap) {
                char **nl = realloc(list, (cap *= 2) * sizeof *nl);
                if (!nl) goto nomem;
                list = nl;
            }
            if (!(list[n++] = qfs_select_module_dup(e->st_file.tensors[t].name))) goto nomem;
        }
    }
    qsort(list, n, sizeof *list, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < n; i++) {
        if (u && strcmp(list[u - 1], list[i]) == 0) free(list[i]);
        else list[u++] = list[i];
    }
    *out = list;
    *n_out = u;
    return 0;
nomem:
    for (size_t i = 0; i < n; i++) free(list[i]);
    free(list);
    return -ENOMEM;
}

/* Reads the whole source file of entry e (config.json, the index): the file scanned, nothing
 * else (qfs_open_regular). */
static int read_small_file(const qfs_entry *e, char **out, size_t *len, qfs_error *err)
{
    const char *path = e->src_path;
    int fd, orc = qfs_open_regular(path, !e->src_link, e->src_dev, e->src_ino, &fd, err);
    if (orc) return orc;
    struct stat sb;
    int rc = fstat(fd, &sb) ? -errno : 0;
    if (!rc && (uint64_t)sb.st_size > MAX_JSON_BYTES) {
        qfs_error_set(err, "%s: %lld bytes is too large for a JSON file of a model", path,
                      (long long)sb.st_size);
        rc = -EFBIG;
    }
    char *buf = NULL;
    if (!rc) {
        buf = malloc((size_t)sb.st_size + 1);
        if (!buf) rc = -ENOMEM;
    }
    if (!rc) rc = qfs_pread_full(fd, buf, (size_t)sb.st_size, 0);
    close(fd);
    if (rc) {
        if (rc != -EFBIG) qfs_error_set(err, "%s: cannot read: %s", path, strerror(-rc));
        free(buf);
        return rc;
    }
    buf[sb.st_size] = '\0';
    *out = buf;
    *len = (size_t)sb.st_size;
    return 0;
}

static const qfs_plan *plan_for_file(void *ctx, const char *file)
{
    const qfs_model *m = ctx;
    size_t idx;
    if (qfs_model_lookup(m, 0, file, &idx) != 0) return NULL;
    const qfs_entry *e = &m->entries[idx];
    return e->kind == QFS_ENTRY_QUANTIZED && !e->error ? &e->plan : NULL;
}

static void set_generated(qfs_entry *e, char *data, size_t len)
{
    e->kind = QFS_ENTRY_GENERATED;
    e->data = (uint8_t *)data;
    e->data_len = len;
    e->st.st_size = (off_t)len;
}

/* config.json problems refuse the whole view: without a correct quantization_config a loader
 * would misread every quantized tensor. */
static int generate_config(qfs_model *m, qfs_entry *e, qfs_error *err)
{
    char *text, *out;
    size_t len, out_len;
    int rc = read_small_file(e, &text, &len, err);
    if (rc) return rc;
    char **excl = NULL;
    size_t n_excl = 0;
    rc = exclusion_list(m, &excl, &n_excl);
    if (rc) {
        free(text);
        return rc;
    }
    json_t *qc = qfs_quant_config_build_layers(m->opts.spec, m->opts.format,
                                               m->opts.rules.layers, m->opts.rules.n_layers,
                                               (const char *const *)excl, n_excl);
    rc = qc ? qfs_config_rewrite(text, len, qc, e->src_path, &out, &out_len, err) : -ENOMEM;
    json_decref(qc);
    for (size_t i = 0; i < n_excl; i++) free(excl[i]);
    free(excl);
    free(text);
    if (rc == 0) set_generated(e, out, out_len);
    return rc;
}

/* An index that names files SRC lacks, or tensors a shard lacks, is a broken checkpoint: the
 * view's index keeps what can be served, and the log says what could not. */
static void warn_index_mismatches(qfs_model *m, const char *path, const qfs_index_map *wm)
{
    size_t missing_files = 0, missing_tensors = 0;
    for (size_t i = 0; i < wm->n; i++) {
        size_t idx;
        const char *name = wm->names[i], *f = wm->files[i];
        if (qfs_model_lookup(m, 0, f, &idx) != 0) {
            if (missing_files++ == 0)
                add_warning(m, "%s: names '%s' (for '%s'), which is not in the source directory",
                            path, f, name);
            continue;
        }
        const qfs_entry *e = &m->entries[idx];
        if (e->kind == QFS_ENTRY_QUANTIZED && !e->error && !qfs_st_find(&e->st_file, name) &&
            missing_tensors++ == 0)
            add_warning(m, "%s: names tensor '%s' in '%s', which does not hold it (left out of "
                        "the view's index)", path, name, f);
    }
    if (missing_files > 1 || missing_tensors > 1)
        add_warning(m, "%s: %zu entries name missing files, %zu name missing tensors", path,
                    missing_files, missing_tensors);
}

static int generate_index(qfs_model *m, qfs_entry *e)
{
    qfs_error err = {{0}};
    char *text, *out;
    size_t len, out_len;
    int rc = read_small_file(e, &text, &len, &err);
    if (rc == 0) {
        qfs_index_map wm = {0};
        rc = qfs_index_rewrite(text, len, plan_for_file, m, e->src_path, &out, &out_len, &wm,
                               &err);
        if (rc == 0) warn_index_mismatches(m, e->src_path, &wm);
        qfs_index_map_free(&wm);
        free(text);
    }
    if (rc == -ENOMEM) return rc;
    if (rc) {
        set_entry_error(m, e, err.msg);
        return 0;
    }
    set_generated(e, out, out_len);
    return 0;
}


const qfs_spec *qfs_model_spec_for(const qfs_model *m, const char *tensor_name, size_t *rule)
{
    *rule = SIZE_MAX;
    if (!m->opts.rules.n_layers) return m->opts.spec;
    char *module = qfs_select_module_dup(tensor_name);
    if (!module) return m->opts.spec;
    const qfs_spec *s = qfs_select_layer_spec(module, m->opts.spec, &m->opts.rules, rule);
    free(module);
    return s;
}

/* The spec a tensor of e was planned with, or NULL when it stays unquantized. */
static const qfs_spec *planned_spec(const qfs_entry *e, size_t t)
{
    size_t k = e->plan.job_of[t];
    return k == SIZE_MAX ? NULL : e->plan.jobs[k].spec;
}

/* vLLM loads q/k/v and gate/up as one fused layer and refuses shards with different schemes;
 * transformers and Quark take them. One warning names the first such module. */
static int warn_fused_mismatch(qfs_model *m, const qfs_entry *e)
{
    static const char *const groups[][3] = {{"q_proj", "k_proj", "v_proj"},
                                            {"gate_proj", "up_proj", NULL}};
    for (size_t t = 0; t < e->st_file.n_tensors; t++) {
        const char *name = e->st_file.tensors[t].name;
        for (size_t g = 0; g < 2; g++) {
            size_t n = strlen(name), l0 = strlen(groups[g][0]);
            if (n < l0 + 8 || strcmp(name + n - 7, ".weight") != 0 ||
                strncmp(name + n - 7 - l0, groups[g][0], l0) != 0 || name[n - 8 - l0] != '.')
                continue;
            const qfs_spec *s0 = planned_spec(e, t);
            for (size_t k = 1; k < 3 && groups[g][k]; k++) {
                char sib[4096];
                snprintf(sib, sizeof sib, "%.*s%s.weight", (int)(n - 7 - l0), name, groups[g][k]);
                const qfs_st_tensor *st = qfs_st_find(&e->st_file, sib);
                if (!st) continue;
                const qfs_spec *sk = planned_spec(e, (size_t)(st - e->st_file.tensors));
                if (sk == s0) continue;
                return add_warning(m, "%s: '%s' is %s and '%s' is %s: vLLM fuses %s%s%s into one "
                                   "layer and refuses different schemes (transformers and Quark "
                                   "load it); give them one spec with --layer for vLLM",
                                   e->src_path, name, s0 ? s0->name : "unquantized", sib,
                                   sk ? sk->name : "unquantized", groups[g][0],
                                   g == 0 ? ", k_proj, v_proj" : ", up_proj", "");
            }
        }
    }
    return 0;
}

/* The layer rules as loaders will read them (doc/FORMAT.md §3.4): every user rule matches a
 * candidate module, and no module is given another spec by the sorted config. */
static int check_layer_rules(qfs_model *m, qfs_error *err)
{
    const qfs_select_rules *r = &m->opts.rules;
    if (!r->n_layers) return 0;
    bool *used = calloc(r->n_layers, sizeof *used);
    if (!used) return -ENOMEM;
    int rc = 0;
    for (size_t i = 0; i < m->n_entries && !rc; i++) {
        const qfs_entry *e = &m->entries[i];
        if (e->kind != QFS_ENTRY_QUANTIZED || e->error) continue;
        for (size_t t = 0; t < e->st_file.n_tensors && !rc; t++) {
            qfs_select_result d = e->plan.decisions[t];
            if (d != QFS_SELECT_QUANTIZE && d != QFS_SKIP_SHAPE && d != QFS_SKIP_NAME_CLASH &&
                d != QFS_SKIP_NONFINITE)
                continue;
            char *module = qfs_select_module_dup(e->st_file.tensors[t].name);
            if (!module) {
                rc = -ENOMEM;
                break;
            }
            size_t k, a, b;
            qfs_select_layer_spec(module, m->opts.spec, r, &k);
            if (k != SIZE_MAX) used[k] = true;
            if (qfs_select_layer_ambiguous(module, r, &a, &b)) {
                const qfs_layer_rule *ra = a == SIZE_MAX ? NULL : &r->layers[a];
                const qfs_layer_rule *rb = b == SIZE_MAX ? NULL : &r->layers[b];
                qfs_error_set(err, "%s: module '%s' gets %s from '%s' here, but loaders read "
                              "layer_quant_config in sorted key order and would give it %s "
                              "from '%s': make the globs disjoint", m->src_root, module,
                              ra ? ra->spec->name : m->opts.spec->name, ra ? ra->glob : "(none)",
                              rb ? rb->spec->name : m->opts.spec->name, rb ? rb->glob : "(none)");
                rc = -EINVAL;
            }
            free(module);
        }
        if (!rc) rc = warn_fused_mismatch(m, e);
    }
    for (size_t k = 0; k < r->n_layers && !rc; k++) {
        if (used[k] || r->layers[k].from_preset) continue;
        qfs_error_set(err, "%s: --layer '%s=%s' matches no quantizable module (module names "
                      "are tensor names without '.weight'; `quarkfs inspect` lists them%s)",
                      m->src_root, r->layers[k].glob, r->layers[k].spec->name,
                      strstr(r->layers[k].glob, "lm_head")
                          ? "; an lm_head is quantized only when a rule names it exactly and "
                            "it has a weight of its own, not tied to the embeddings" : "");
        rc = -EINVAL;
    }
    free(used);
    return rc;
}

/* What depends on the spec: the plans, the layer rules, config.json and the index. */
static int finish_model(qfs_model *m, qfs_error *err)
{
    int rc;
    size_t n_quantized = 0, idx;
    for (size_t i = 0; i < m->n_entries; i++) {
        if (m->entries[i].kind != QFS_ENTRY_QUANTIZED) continue;
        n_quantized++;
        if ((rc = plan_quantized(m, &m->entries[i]))) return rc;
    }
    if (n_quantized == 0)
        add_warning(m, "%s: no model*.safetensors file: every file passes through unchanged",
                    m->src_root);
    if ((rc = check_layer_rules(m, err))) return rc;
    if (qfs_model_lookup(m, 0, "config.json", &idx) == 0 && m->entries[idx].kind != QFS_ENTRY_DIR) {
        if ((rc = generate_config(m, &m->entries[idx], err))) return rc;
    } else if (n_quantized) {
        add_warning(m, "%s: no config.json: the view has no quantization_config for loaders",
                    m->src_root);
    }
    if (qfs_model_lookup(m, 0, "model.safetensors.index.json", &idx) == 0 &&
        m->entries[idx].kind != QFS_ENTRY_DIR)
        return generate_index(m, &m->entries[idx]);
    return 0;
}

int qfs_model_open(const char *src, const qfs_model_options *opts, qfs_model **out,
                   qfs_error *err)
{
    qfs_model *m = calloc(1, sizeof *m);
    if (!m) {
        qfs_error_set(err, "%s: out of memory while scanning", src);
        return -ENOMEM;
    }
    m->opts = *opts;
    int rc;
    char root[PATH_MAX];
    struct stat sb;
    if (!realpath(src, root) || stat(root, &sb) != 0) {
        rc = -errno;
        qfs_error_set(err, "%s: %s", src, strerror(errno));
        goto fail;
    }
    if (!S_ISDIR(sb.st_mode)) {
        qfs_error_set(err, "%s: not a directory (SRC must be a Hugging Face model directory)", src);
        rc = -ENOTDIR;
        goto fail;
    }
    rc = -ENOMEM;
    if (!(m->src_root = strdup(root))) goto fail;
    find_link_root(root, m->link_root, sizeof m->link_root);
    size_t cap = 0, idx;
    if ((rc = new_entry(m, &cap, 0, "", root, &sb, QFS_ENTRY_DIR, &idx))) goto fail;   /* root */
    ancestor top = {sb.st_dev, sb.st_ino, NULL};
    if ((rc = scan_dir(m, &cap, 0, root, "", 0, &top))) goto fail;
    if ((rc = link_children(m))) goto fail;
    if ((rc = finish_model(m, err))) goto fail;
    *out = m;
    return 0;
fail:
    if (rc == -ENOMEM) qfs_error_set(err, "%s: out of memory while scanning", src);
    qfs_model_close(m);
    return rc;
}

/* One copy of an entry of another view of the same scan, before planning: a quantized file
 * shares the parsed header (and gets its own descriptor), a generated file is made again. */
static int copy_entry(const qfs_entry *b, qfs_entry *e)
{
    e->path = strdup(b->path);
    e->name = e->path ? e->path + (b->name - b->path) : NULL;
    e->parent = b->parent;
    e->kind = b->kind == QFS_ENTRY_GENERATED ? QFS_ENTRY_PASSTHROUGH : b->kind;
    e->st = b->st;
    e->src_path = b->src_path ? strdup(b->src_path) : NULL;
    e->src_dev = b->src_dev;
    e->src_ino = b->src_ino;
    e->src_link = b->src_link;
    e->src_fd = -1;
    if (!e->path || (b->src_path && !e->src_path)) return -ENOMEM;
    if (b->n_children) {
        e->children = malloc(b->n_children * sizeof *e->children);
        if (!e->children) return -ENOMEM;
        memcpy(e->children, b->children, b->n_children * sizeof *e->children);
        e->n_children = b->n_children;
    }
    if (b->error) {   /* unreadable in every view: the same error */
        e->error = b->error;
        if (b->error_msg && !(e->error_msg = strdup(b->error_msg))) return -ENOMEM;
        return 0;
    }
    if (b->kind != QFS_ENTRY_QUANTIZED) return 0;
    e->src_fd = fcntl(b->src_fd, F_DUPFD_CLOEXEC, 0);
    if (e->src_fd < 0) return -errno;
    e->st_file = b->st_file;
    e->st_borrowed = true;
    e->st.st_size = b->src_size;   /* the source's size: planning sets the view's */
    return 0;
}

int qfs_model_open_like(const qfs_model *base, const qfs_model_options *opts, qfs_model **out,
                        qfs_error *err)
{
    qfs_model *m = calloc(1, sizeof *m);
    int rc = -ENOMEM;
    if (!m) goto fail;
    m->opts = *opts;
    memcpy(m->link_root, base->link_root, sizeof m->link_root);
    if (!(m->src_root = strdup(base->src_root))) goto fail;
    if (!(m->entries = calloc(base->n_entries, sizeof *m->entries))) goto fail;
    for (size_t i = 0; i < base->n_entries; i++) {
        m->n_entries = i + 1;
        if ((rc = copy_entry(&base->entries[i], &m->entries[i]))) goto fail;
    }
    if ((rc = finish_model(m, err))) goto fail;
    *out = m;
    return 0;
fail:
    if (rc == -ENOMEM) qfs_error_set(err, "%s: out of memory while planning another view",
                                     base->src_root);
    else if (rc != -EINVAL) qfs_error_set(err, "%s: %s", base->src_root, strerror(-rc));
    qfs_model_close(m);
    return rc;
}

void qfs_model_close(qfs_model *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->n_entries; i++) {
        qfs_entry *e = &m->entries[i];
        free(e->path);
        free(e->src_path);
        free(e->children);
        free(e->data);
        free(e->error_msg);
        qfs_tensor_source_free(e->source);
        if (e->src_fd >= 0) close(e->src_fd);
        qfs_plan_free(&e->plan);
        if (!e->st_borrowed) qfs_st_file_free(&e->st_file);
    }
    for (size_t i = 0; i < m->n_warnings; i++) free(m->warnings[i]);
    free(m->warnings);
    free(m->entries);
    free(m->src_root);
    free(m);
}

int qfs_model_lookup(const qfs_model *m, size_t dir, const char *name, size_t *out)
{
    const qfs_entry *d = &m->entries[dir];
    if (d->kind != QFS_ENTRY_DIR) return -ENOTDIR;
    size_t lo = 0, hi = d->n_children;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(m->entries[d->children[mid]].name, name);
        if (c == 0) {
            *out = d->children[mid];
            return 0;
        }
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -ENOENT;
}
