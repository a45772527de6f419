#include "quarkfs/engine.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "quarkfs/cache.h"
#include "quarkfs/io.h"
#include "quarkfs/quant.h"
#include "quarkfs/srcid.h"

#define WARM_LOG_SECONDS 10.0
#define SCRATCH_IDLE_SECONDS 2    /* the source buffer is given back after this long idle */
#define HUGE_ALLOC (4u << 20)     /* buffers this large ask for transparent huge pages */
#define POOL_MAX 16               /* evicted weight buffers kept for reuse, at most */
#define BAND_SOURCE_BYTES (8u << 20)  /* source bytes per published band of a big weight */
#define BAND_MIN_WEIGHT (16u << 20)   /* smaller weights are produced in one go */
#define MEMO_WRITE_SECONDS 1.0    /* changed memos are written at most this often */
#define WILLNEED_MIN (4u << 20)   /* smaller source tensors are not asked for ahead */

/* Which queue a slot waits in: a reader waits (demand), a reader will probably want it next
 * (prefetch: only while the memory cache has room), or `quarkfs warm` asked for everything. */
typedef enum queue_id { Q_NONE, Q_DEMAND, Q_PREFETCH, Q_WARM } queue_id;

/* Runtime state of one job (one quantized tensor of one file). Zero-initialized = nothing yet;
 * source and job are set when the slot is first used (slot_at), so the slots of a file of a
 * million tensors cost no memory until read. Every field is read and written under the
 * engine's lock. */
typedef struct job_slot {
    qfs_cache_entry entry;       /* the weight bytes while cached */
    uint8_t *scales;             /* scale then zero point bytes, once computed (evictable) */
    qfs_cache_entry scales_entry;   /* the scales in the engine's scales cache */
    queue_id queue;
    unsigned running : 1, want_weight : 1, failed : 1;
    unsigned warm : 1;           /* counts toward the warm-up progress when it completes */
    unsigned warm_only : 1;      /* only warm wants it: with a disk cache, keep it on disk only */
    unsigned warm_round;         /* the warm-up round that counted it (a second `warm` during a
                                  * round must not count a tensor it already finished) */
    unsigned waiters;            /* readers waiting for the weight; on completion each gets a pin */
    unsigned gen;                /* completions and failures of the weight (the waiters' token) */
    uint64_t served;             /* weight bytes handed to readers since it was made */
    /* While a weight is produced in bands (entry.data set, running): which bands are final, and
     * a band some reader waits for, made next (UINT32_MAX: none; else bands go in order). */
    uint8_t *band_done;
    uint64_t band_bytes;         /* weight bytes per band; the last may be shorter */
    uint32_t n_bands, want_band;
    int error;                   /* failed: negative errno, and why */
    char *error_msg;
    struct job_slot *queue_next;
    qfs_tensor_source *source;
    size_t job;
} job_slot;

/* The info it was made from, copied, and its jobs' slots. */
struct qfs_tensor_source {
    int fd;
    const char *path;
    const qfs_st_file *st;
    const qfs_plan *plan;
    qfs_format format;
    off_t snap_size;
    struct timespec snap_mtime;
    job_slot *slots;             /* plan->n_jobs slots */
};

/* The slot of a job, under the engine's lock: every way into a slot goes through here, so a
 * slot reached from a queue or the cache has its source and job set. */
static job_slot *slot_at(qfs_tensor_source *src, size_t job)
{
    job_slot *slot = &src->slots[job];
    if (!slot->source) {
        slot->source = src;
        slot->job = job;
    }
    return slot;
}

/* The slot that holds cache entry `c` as its member `member`. */
#define SLOT_OF(c, member) ((job_slot *)((char *)(c) - offsetof(job_slot, member)))

typedef struct job_queue { job_slot *head, *tail; } job_queue;

/* The source memo of one quantized file (srcid.h). */
typedef struct memo_slot {
    dev_t dev;                     /* the file it was made for (fstat when it was made) */
    ino_t ino;
    bool usable;                   /* the file has an identity: hashes are looked up, kept */
    qfs_srcmemo memo;
    struct memo_slot *next;
} memo_slot;

/* An entry waiting for the disk writer: the weight stays in the memory cache, pinned (so it
 * counts in cache_mem), until it is written or dropped; the scales are a copy (small). */
typedef struct write_req {
    job_slot *slot;
    qfs_cache_key key;
    char recipe[256];
    uint8_t *scales;
    size_t scales_len, weight_len;
    int lock_fd, id_lock_fd;       /* the cross-process locks held, released when done */
    struct write_req *next;
} write_req;

struct qfs_engine {
    pthread_mutex_t lock;
    pthread_cond_t work;           /* the worker waits here for jobs */
    pthread_cond_t done;           /* readers wait here for results */
    job_queue queues[4];           /* indexed by queue_id; Q_NONE unused */
    int stopping;
    int threads;
    pthread_t worker;
    /* Evicted weight buffers kept for the next weight of the same size (tensor shapes repeat
     * layer after layer): a fresh buffer costs the kernel a zeroing pass on first touch, a
     * quarter of a cold read's CPU here. They count against cache_mem with the cache. */
    struct pooled_buf { void *data; size_t size; } pool[POOL_MAX];
    unsigned pool_n;
    size_t pool_bytes;
    uint8_t *scratch;              /* the worker's source buffer (pread mode) */
    size_t scratch_cap;
    qfs_map_guard *guard;          /* mmap mode when set */
    qfs_cache cache;               /* its budget: cache_mem minus the scales held */
    size_t cache_mem;
    qfs_cache scales;              /* the slots' scales: least recently read dropped past
                                    * half of cache_mem (pinned while their job runs) */
    qfs_diskcache *disk;           /* NULL when off (a failing one pauses its writes) */
    qfs_log_callback log;
    void *log_ctx;
    double warm_started, warm_logged;
    unsigned warm_round;           /* the current warm-up round, counted from 1 */
    uint64_t machine;              /* this machine's id (srcid.h), 0 if unknown */
    memo_slot *memos;              /* one per source file met (lock guards the list) */
    /* The disk writer: new entries go to disk off the readers' path, oldest first. */
    pthread_t writer;
    bool writer_started, writer_stop;
    pthread_cond_t write_work;
    write_req *wq_head, *wq_tail;
    size_t wq_bytes, wq_max;       /* weight bytes queued; past wq_max a new entry is dropped */
    unsigned wq_busy;              /* 1 while the writer writes one (counted as queued) */
    double memo_written;           /* when memos were last written */
    qfs_engine_stats stats;
};

static void logf_(qfs_engine *e, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void logf_(qfs_engine *e, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    qfs_log_vprintf(e->log, e->log_ctx, level, fmt, ap);
    va_end(ap);
}

static void queue_push(qfs_engine *e, queue_id q, job_slot *s)
{
    job_queue *jq = &e->queues[q];
    s->queue_next = NULL;
    s->queue = q;
    if (jq->tail) jq->tail->queue_next = s;
    else jq->head = s;
    jq->tail = s;
}

static job_slot *queue_pop(qfs_engine *e, queue_id q)
{
    job_queue *jq = &e->queues[q];
    job_slot *s = jq->head;
    if (s) {
        jq->head = s->queue_next;
        if (!jq->head) jq->tail = NULL;
        s->queue_next = NULL;
        s->queue = Q_NONE;
    }
    return s;
}

static void queue_remove(qfs_engine *e, job_slot *s)
{
    job_queue *jq = &e->queues[s->queue];
    job_slot *prev = NULL;
    for (job_slot *p = jq->head; p; prev = p, p = p->queue_next) {
        if (p != s) continue;
        if (prev) prev->queue_next = p->queue_next;
        else jq->head = p->queue_next;
        if (jq->tail == p) jq->tail = prev;
        p->queue_next = NULL;
        break;
    }
    s->queue = Q_NONE;
}

/* Takes entry k out of the pool; returns its buffer (lock held). */
static void *pool_remove(qfs_engine *e, unsigned k)
{
    void *p = e->pool[k].data;
    e->pool_bytes -= e->pool[k].size;
    memmove(&e->pool[k], &e->pool[k + 1], (--e->pool_n - k) * sizeof e->pool[0]);
    return p;
}

/* Cache eviction: the weight is dropped (a later reader recomputes it); its scales stay. Its
 * buffer goes to the pool if it is a big one, the oldest pooled one out if full (lock held). */
static void evict_slot(void *ctx, qfs_cache_entry *entry)
{
    qfs_engine *e = ctx;
    if (entry->size >= HUGE_ALLOC) {
        if (e->pool_n == POOL_MAX) free(pool_remove(e, 0));
        e->pool[e->pool_n++] = (struct pooled_buf){entry->data, entry->size};
        e->pool_bytes += entry->size;
    } else {
        free(entry->data);
    }
    entry->data = NULL;
    entry->size = 0;
}

/* Frees pooled buffers, oldest first, until the cache, the pool and `extra` bytes fit the
 * budget; all of them if `all` (lock held). */
static void pool_trim(qfs_engine *e, size_t extra, bool all)
{
    while (e->pool_n && (all || e->cache.used + e->pool_bytes + extra > e->cache.budget))
        free(pool_remove(e, 0));
}

/* A cached weight of exactly `size` bytes that readers have had in full (as many bytes as it
 * has) goes to the pool, least recently used first: its bytes live on in the kernel's page
 * cache, and reusing its buffer spares the next tensor of that shape a fresh one (lock held). */
static void recycle_served(qfs_engine *e, size_t size)
{
    for (unsigned k = 0; k < e->pool_n; k++)
        if (e->pool[k].size == size) return;   /* one is there already */
    for (qfs_cache_entry *c = e->cache.tail; c; c = c->prev) {
        if (c->size == size && c->pins == 0 && SLOT_OF(c, entry)->served >= size) {
            qfs_cache_evict(&e->cache, c);
            return;
        }
    }
}

/* Scales count in cache_mem: the weights get what the scales leave (lock held). */
static void set_weight_budget(qfs_engine *e)
{
    e->cache.budget = e->cache_mem > e->scales.used ? e->cache_mem - e->scales.used : 0;
    qfs_cache_make_room(&e->cache, 0);
    pool_trim(e, 0, false);
}

/* Scales dropped from their cache: a later reader makes them again (lock held). */
static void evict_scales(void *ctx, qfs_cache_entry *entry)
{
    (void)ctx;
    job_slot *slot = SLOT_OF(entry, scales_entry);
    free(slot->scales);
    slot->scales = NULL;
    entry->data = NULL;
}

/* The slot now holds scales: cached as most recently read, which may drop older ones; then
 * the weights get what is left (lock held). */
static void scales_added(qfs_engine *e, job_slot *slot)
{
    slot->scales_entry.data = slot->scales;
    slot->scales_entry.size = (size_t)slot->source->plan->jobs[slot->job].layout->scales_bytes;
    qfs_cache_insert(&e->scales, &slot->scales_entry);
    set_weight_budget(e);
}

/* A pooled buffer of exactly `size` bytes, or NULL (lock held). */
static void *pool_take(qfs_engine *e, size_t size)
{
    for (unsigned k = e->pool_n; k-- > 0;)
        if (e->pool[k].size == size) return pool_remove(e, k);
    return NULL;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Tensor-sized buffers: 2 MiB-aligned and backed by huge pages where the kernel offers them
 * (madvise mode), which cuts the page faults of a fresh 100 MB buffer 512-fold. free() frees. */
static void *alloc_big(size_t bytes)
{
    if (bytes < HUGE_ALLOC) return malloc(bytes ? bytes : 1);
    void *p;
    if (posix_memalign(&p, 2u << 20, bytes) != 0) return NULL;
    madvise(p, bytes, MADV_HUGEPAGE);   /* a hint: failure only costs speed */
    return p;
}

/* The worker's buffer for source bytes: kept between jobs (no page faults on every tensor),
 * released after SCRATCH_IDLE_SECONDS without work. Only the worker touches it. */
static uint8_t *scratch_get(qfs_engine *e, size_t bytes)
{
    if (bytes > e->scratch_cap) {
        free(e->scratch);
        e->scratch = alloc_big(bytes);
        e->scratch_cap = e->scratch ? bytes : 0;
    }
    return e->scratch;
}

/* The source must be the one planned at mount: a file changed in place would mix old and new
 * bytes in one view, so its tensors fail instead (a file replaced by rename keeps serving the
 * old version through the descriptor opened at mount). */
static int check_unchanged(const qfs_tensor_source *src, qfs_error *err)
{
    return qfs_fd_unchanged(src->fd, src->snap_size, &src->snap_mtime, src->path, err);
}

typedef enum job_mode {
    MODE_SCALES,   /* scale + zero point only */
    MODE_FULL,     /* the weight too, into the memory cache */
    MODE_DISK,     /* the weight into the disk cache only (warm-up) */
} job_mode;

static void recipe_of(const qfs_tensor_source *src, const qfs_plan_job *j, const qfs_st_tensor *t,
                      char *buf, size_t len)
{
    snprintf(buf, len, "quarkfs-quantizer-%s|%s|%s|%s|%llux%llu", QFS_QUANTIZER_VERSION,
             j->spec->name, qfs_format_name(src->format), qfs_dtype_name(t->dtype),
             (unsigned long long)j->rows, (unsigned long long)j->cols);
}

/* A disk cache that cannot take writes (full, read-only, unreachable) keeps serving what it
 * has, and new tensors stay in memory until a later write succeeds: one warning per outage,
 * and readers never see an error for it. Lock held. */
static void disk_failed(qfs_engine *e, int rc)
{
    if (!e->disk || qfs_diskcache_readonly(e->disk)) return;
    if (qfs_diskcache_set_readonly(e->disk))
        logf_(e, QFS_LOG_WARNING, "disk cache %s: %s; its entries are still read, new tensors "
              "stay in memory only (writes are tried again every few seconds)",
              qfs_diskcache_dir(e->disk), strerror(-rc));
    e->stats.disk_cache = 0;
}

/* The source bytes of one tensor for one job: mapped straight from the page cache (no copy,
 * no buffer to fault in) when the front end guards mappings, else read into the scratch. */
typedef struct source_view {
    const uint8_t *bytes;
    void *map;
    size_t map_len;
} source_view;

/* The one place where a kernel's failure becomes the error readers see: -EDOM (a NaN or Inf
 * in the source) and any other refusal make the file unreadable, which read(2) and export
 * report as an I/O error; err keeps the kernel's message. */
static int kernel_failed(int rc)
{
    return rc ? -EIO : 0;
}

static const char *shrunk_hint(int rc)
{
    return rc == -EIO ? " (the file is shorter than its header says: was it changed under the "
                        "mount?)" : "";
}

/* A source not in the page cache: the team's threads fault its pages in one by one, each
 * waiting for the disk, in an order readahead cannot follow. Asking for the whole range first
 * (MADV_WILLNEED: asynchronous readahead of it all) keeps the disk streaming while they
 * quantize. A source in the page cache is not asked for (walking its pages costs the worker
 * time): three pages, probed with mincore, tell which. */
static void ask_whole_range(qfs_engine *e, const source_view *v)
{
    if (v->map_len < WILLNEED_MIN) return;
    size_t pages = (v->map_len + e->guard->page - 1) / e->guard->page;
    size_t probe[3] = {0, pages / 2, pages - 1};
    for (int i = 0; i < 3; i++) {
        unsigned char in = 1;
        if (mincore((uint8_t *)v->map + probe[i] * e->guard->page, 1, &in) != 0 || !(in & 1)) {
            madvise(v->map, v->map_len, MADV_WILLNEED);   /* a hint: failure costs speed */
            return;
        }
    }
}

static int source_open(qfs_engine *e, const qfs_tensor_source *src, const qfs_st_tensor *t,
                       source_view *v, qfs_error *err)
{
    size_t len = (size_t)(t->end - t->begin);
    uint64_t off = src->st->data_start + t->begin;
    memset(v, 0, sizeof *v);
    /* The kernels load whole elements: a tensor whose bytes are not aligned to its element
     * size in the file (safetensors does not promise it) is read into the aligned scratch. */
    size_t es = qfs_dtype_bits(t->dtype) / 8;
    if (e->guard && len > 0 && es > 0 && off % es == 0) {
        uint64_t start = off & ~(uint64_t)(e->guard->page - 1);
        v->map_len = len + (size_t)(off - start);
        v->map = mmap(NULL, v->map_len, PROT_READ, MAP_SHARED, src->fd, (off_t)start);
        if (v->map != MAP_FAILED) {
            qfs_map_guard_arm(e->guard, v->map, v->map_len);
            v->bytes = (const uint8_t *)v->map + (off - start);
            ask_whole_range(e, v);
            return 0;
        }
        v->map = NULL;   /* fall back to reading it */
    }
    uint8_t *buf = scratch_get(e, len ? len : 1);
    if (!buf) {
        qfs_error_set(err, "%s: tensor '%s': out of memory (%zu bytes); lower cache_mem or give "
                      "quarkfs more memory", src->path, t->name, len);
        return -ENOMEM;
    }
    int rc = qfs_pread_full(src->fd, buf, len, off);
    if (rc) {
        qfs_error_set(err, "%s: tensor '%s': cannot read the source bytes: %s%s", src->path,
                      t->name, strerror(-rc), shrunk_hint(rc));
        return -EIO;
    }
    v->bytes = buf;
    return 0;
}

/* The bytes read so far are the snapshot's: same size and mtime, and no page of the mapping
 * was past the end of the file. */
static int source_intact(qfs_engine *e, const qfs_tensor_source *src, const source_view *v,
                         const qfs_st_tensor *t, qfs_error *err)
{
    if (v->map && atomic_load(&e->guard->faulted)) {
        qfs_error_set(err, "%s: tensor '%s': cannot read the source bytes%s", src->path, t->name,
                      shrunk_hint(-EIO));
        return -EIO;
    }
    return check_unchanged(src, err);
}

static void source_close(qfs_engine *e, source_view *v)
{
    if (!v->map) return;
    qfs_map_guard_disarm(e->guard);
    munmap(v->map, v->map_len);
    v->map = NULL;
}

/* Whether bytes [begin, end) of a weight in production are final. Lock held. */
static bool bands_ready(const job_slot *slot, uint64_t begin, uint64_t end)
{
    if (!slot->running || !slot->band_done || slot->failed) return false;
    if (end <= begin) return true;
    for (uint64_t b = begin / slot->band_bytes; b <= (end - 1) / slot->band_bytes; b++)
        if (!slot->band_done[b]) return false;
    return true;
}

/* A big int8/fp8 weight in row bands: scales first (those of an earlier scales-only pass when
 * there are some: the source is reduced once), published at once, then each band is published
 * as soon as it is made and the source is checked to be still intact. A band a reader waits
 * for goes first; otherwise they go in order. */
static int quantize_in_bands(qfs_engine *e, qfs_tensor_source *src, job_slot *slot,
                             const source_view *v, uint8_t *w, uint8_t *sc, bool *sc_published,
                             const char *what, qfs_error *err)
{
    const qfs_plan_job *j = &src->plan->jobs[slot->job];
    const qfs_st_tensor *t = &src->st->tensors[j->src];
    size_t sc_bytes = (size_t)j->layout->scales_bytes;
    uint64_t align;
    qfs_quantize_rows_ok(j->spec, j->layout, &align);
    uint64_t row_src = j->cols * (qfs_dtype_bits(t->dtype) / 8);
    uint64_t band = BAND_SOURCE_BYTES / (row_src ? row_src : 1);
    band = band < align ? align : band - band % align;
    uint32_t n_bands = (uint32_t)((j->rows + band - 1) / band);
    uint8_t *done = calloc(n_bands ? n_bands : 1, 1);
    if (!done) {
        qfs_error_set(err, "%s: out of memory", what);
        return -ENOMEM;
    }
    pthread_mutex_lock(&e->lock);
    const uint8_t *known = slot->scales;   /* only the worker sets it, once */
    pthread_mutex_unlock(&e->lock);
    int rc = 0;
    if (known) {
        memcpy(sc, known, sc_bytes);
    } else {
        rc = kernel_failed(qfs_quantize_layout(j->spec, src->format, t->dtype, v->bytes,
                                               j->rows, j->cols, j->layout, NULL, sc,
                                               e->threads, what, err));
        if (!rc) rc = source_intact(e, src, v, t, err);
        if (rc) {
            free(done);
            return rc;
        }
    }
    pthread_mutex_lock(&e->lock);
    if (!known) {
        slot->scales = sc;   /* the readers of the file's first bytes go on now */
        scales_added(e, slot);
        *sc_published = true;
    }
    slot->want_band = UINT32_MAX;
    slot->band_done = done;
    slot->band_bytes = band * j->cols;   /* int8 / fp8: one byte per element */
    slot->n_bands = n_bands;
    slot->entry.data = w;
    pthread_cond_broadcast(&e->done);
    uint32_t next = 0;
    for (uint32_t made = 0; made < n_bands && !rc; made++) {
        uint32_t b = slot->want_band;
        slot->want_band = UINT32_MAX;
        if (b >= n_bands || done[b]) {
            while (done[next]) next++;
            b = next;
        }
        pthread_mutex_unlock(&e->lock);
        uint64_t r0 = (uint64_t)b * band, r1 = j->rows - r0 < band ? j->rows : r0 + band;
        rc = kernel_failed(qfs_quantize_layout_rows(j->spec, t->dtype, v->bytes, j->rows,
                                                    j->cols, j->layout, sc, r0, r1, w,
                                                    e->threads));
        if (rc)
            qfs_error_set(err, "%s: internal error: band [%llu, %llu) refused", what,
                          (unsigned long long)r0, (unsigned long long)r1);
        if (!rc) rc = source_intact(e, src, v, t, err);
        pthread_mutex_lock(&e->lock);
        if (!rc) done[b] = 1;
        pthread_cond_broadcast(&e->done);
    }
    if (!rc) e->stats.weights_in_bands++;
    pthread_mutex_unlock(&e->lock);
    return rc;
}

/* What the worker asks of one job: which slot, what to produce, a pooled buffer of the weight's
 * size to produce it in (or NULL; owned by the job from then on), and the disk cache at the
 * start of the job (closing it waits for the lock, which the job does not hold). */
typedef struct job_request {
    job_slot *slot;
    job_mode mode;
    uint8_t *reuse;
    qfs_diskcache *disk;
} job_request;

/* What a job did besides its products, for the counters and the disk writer. */
typedef struct job_result {
    uint8_t *weight;     /* the weight (NULL for MODE_SCALES and MODE_DISK) */
    uint8_t *scales;     /* the scales, or NULL when the job published them itself */
    bool disk_hit;       /* the products came from the disk cache */
    bool memo_hit;       /* the key came from the source's memo (no read for it) */
    bool hashed;         /* the key needed a read of the source (no memo hash) */
    bool read_source;    /* the source bytes were opened (mapped or read) */
    int disk_error;      /* a write that failed (the cache turns read-only) */
    bool write;          /* a new entry to queue for the disk writer under `key` ... */
    int lock_fd;         /* ... holding this cross-process lock until it is written */
    int id_lock_fd;      /* ... and the one named after the file and range, if any */
    qfs_cache_key key;
    bool hash_after;     /* the key is the hash of the bytes quantized, taken after them */
    bool dropped;        /* ... which failed: the file changed, no entry is written */
    char recipe[256];
} job_result;

/* The memo of src's file (srcid.h), made on first use, by the worker only. Its identity and
 * `usable` are fixed before it joins the list; its hashes, and the list, are read and changed
 * under the lock (jobs add hashes, the disk writer writes memos). The engine owns its memos and
 * keeps none in the source, which may outlive it. NULL without a disk cache or out of memory. */
static memo_slot *memo_of(qfs_engine *e, qfs_diskcache *disk, qfs_tensor_source *src)
{
    /* One memo per file: the views of a --specs mount are sources of the same files, and a
     * second memo would hash them again and overwrite the first one's file on disk. */
    struct stat sb;
    if (fstat(src->fd, &sb) != 0) return NULL;
    memo_slot *ms;
    pthread_mutex_lock(&e->lock);
    for (ms = e->memos; ms; ms = ms->next)   /* one per file: a short list */
        if (ms->dev == sb.st_dev && ms->ino == sb.st_ino) break;
    pthread_mutex_unlock(&e->lock);
    if (ms) return ms;
    ms = calloc(1, sizeof *ms);
    if (!ms) return NULL;
    ms->dev = sb.st_dev;
    ms->ino = sb.st_ino;
    qfs_srcid id;
    bool allow_blob = true;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (qfs_srcid_of(src->fd, src->path, allow_blob, e->machine, &id, NULL) != 0) break;
        qfs_srcmemo_free(&ms->memo);
        qfs_srcmemo_init(&ms->memo, &id);
        ms->usable = true;
        void *data;
        size_t len;
        if (qfs_diskcache_memo_get(disk, &id.name, &data, &len) != 0) break;
        int rc = qfs_srcmemo_merge(&ms->memo, data, len);
        free(data);
        if (rc != -ESTALE) break;
        /* A Hugging Face blob hashed here before with other times: edited in place, so its
         * name no longer vouches for its content. Its own identity is used instead. */
        logf_(e, QFS_LOG_WARNING, "%s: the Hugging Face blob behind it changed in place since "
              "it was last hashed; its content no longer matches its name (sha256), so it is "
              "hashed again and remembered under its file identity only", src->path);
        ms->usable = false;
        allow_blob = false;
    }
    pthread_mutex_lock(&e->lock);
    ms->next = e->memos;
    e->memos = ms;
    pthread_mutex_unlock(&e->lock);
    return ms;
}

/* Whether fd is still the file ms's memo describes (its identity has not moved). */
static bool memo_current(const memo_slot *ms, int fd)
{
    const qfs_srcid *id = &ms->memo.id;
    struct stat sb;
    return fstat(fd, &sb) == 0 && (uint64_t)sb.st_size == id->size &&
           (uint64_t)sb.st_dev == id->dev && (uint64_t)sb.st_ino == id->ino &&
           sb.st_mtim.tv_sec == id->mtime.tv_sec && sb.st_mtim.tv_nsec == id->mtime.tv_nsec &&
           sb.st_ctim.tv_sec == id->ctime.tv_sec && sb.st_ctim.tv_nsec == id->ctime.tv_nsec;
}

/* Remembers the content hash of bytes just read from src, if the file is still the one the
 * memo describes and has not changed in the last moment (srcid.h). */
static void memo_remember(qfs_engine *e, memo_slot *ms, const qfs_tensor_source *src,
                          uint64_t off, uint64_t len, const uint8_t hash[16])
{
    if (!ms || !ms->usable) return;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (!memo_current(ms, src->fd) || !qfs_srcid_settled(&ms->memo.id, &now)) return;
    pthread_mutex_lock(&e->lock);
    qfs_srcmemo_add(&ms->memo, off, len, hash);   /* out of memory: only not remembered */
    pthread_mutex_unlock(&e->lock);
}

/* The key of tensor t, quantized before its content hash was known (hash_after): the team
 * hashes the source bytes once the weight is out to its readers, from the view still open,
 * so nothing is read twice, and ms (the file's memo) remembers the hash. False, and no entry,
 * when the file is no longer exactly `at`, the one read (the bytes hashed might not be the
 * bytes quantized). Unlocked. */
static bool key_after(qfs_engine *e, const qfs_tensor_source *src, const source_view *v,
                      const qfs_st_tensor *t, memo_slot *ms, const struct stat *at,
                      job_result *res)
{
    uint64_t len = t->end - t->begin;
    uint8_t got[16];
    qfs_srcmemo_hash(v->bytes, (size_t)len, e->threads, got);
    qfs_error quiet = {{0}};   /* the weight served is intact; only the entry is given up */
    struct stat now;
    if (source_intact(e, src, v, t, &quiet) != 0 || fstat(src->fd, &now) != 0 ||
        !qfs_stat_same_file(&now, at))
        return false;
    qfs_srcmemo_key(res->recipe, got, &res->key);
    memo_remember(e, ms, src, src->st->data_start + t->begin, len, got);
    return true;
}

/* Produces what `mode` asks for: from the disk cache if it has the entry, else by quantizing.
 * The key of the entry hashes the tensor's content; the source's memo gives that hash without
 * reading the source, which is then not touched at all on a hit. A new entry is left to the
 * disk writer (res->write, with the cross-process lock held) except for the warm-up, which
 * writes it here. Runs unlocked. A weight produced in bands is visible to readers
 * (slot->entry.data) before the job ends, also on failure: then res->weight still receives it
 * and the caller frees it once no reader holds it. Scales published early are the slot's, and
 * res->scales is NULL. */
static int compute_job(qfs_engine *e, const job_request *rq, job_result *res, qfs_error *err)
{
    job_slot *slot = rq->slot;
    qfs_tensor_source *src = slot->source;
    job_mode mode = rq->mode;
    uint8_t *reuse = rq->reuse;
    qfs_diskcache *disk = rq->disk;
    const qfs_plan_job *j = &src->plan->jobs[slot->job];
    const qfs_st_tensor *t = &src->st->tensors[j->src];
    size_t in_bytes = (size_t)(t->end - t->begin);
    size_t sc_bytes = (size_t)j->layout->scales_bytes, w_bytes = (size_t)j->layout->weight_bytes;
    memset(res, 0, sizeof *res);
    res->lock_fd = res->id_lock_fd = -1;
    int rc = check_unchanged(src, err);
    if (rc) {
        free(reuse);
        return rc;
    }
    uint8_t *sc = malloc(sc_bytes ? sc_bytes : 1);
    uint8_t *w = mode == MODE_SCALES ? NULL : reuse ? reuse : alloc_big(w_bytes);
    if (!sc || (mode != MODE_SCALES && !w)) {
        free(sc);
        free(w);
        qfs_error_set(err, "%s: tensor '%s': out of memory (%zu bytes); lower cache_mem or give "
                      "quarkfs more memory", src->path, t->name, in_bytes + w_bytes + sc_bytes);
        return -ENOMEM;
    }
    uint8_t *want_w = mode == MODE_FULL ? w : NULL;
    char recipe[256];
    recipe_of(src, j, t, recipe, sizeof recipe);
    memcpy(res->recipe, recipe, sizeof recipe);
    uint64_t file_off = src->st->data_start + t->begin;
    memo_slot *ms = disk ? memo_of(e, disk, src) : NULL;
    uint8_t hash[16];
    bool known = false;
    /* A file edited in place (its ctime moves even when size and mtime are put back) is not
     * the one the memo describes: its bytes are hashed again, never looked up. */
    if (ms && ms->usable && memo_current(ms, src->fd)) {
        pthread_mutex_lock(&e->lock);
        known = qfs_srcmemo_find(&ms->memo, file_off, in_bytes, hash);
        pthread_mutex_unlock(&e->lock);
    }
    if (known) {
        res->memo_hit = true;
        qfs_srcmemo_key(recipe, hash, &res->key);
        res->disk_hit = qfs_diskcache_get(disk, &res->key, sc, sc_bytes, want_w, w_bytes) == 0;
    }
    source_view v = {0};
    struct stat at;   /* the source when read, for hash_after */
    bool sc_published = false, banded = false;
    /* Two locks keep two processes from computing one tensor: one named after the file and
     * range (every mount of this file takes it first, before the content hash is known), then
     * one named after the content key (copies of the file elsewhere). */
    bool id_lock = disk && mode != MODE_SCALES && ms && ms->usable;
    qfs_cache_key lk;
    if (id_lock) {
        char lname[320];
        snprintf(lname, sizeof lname, "%s|%llu|%llu", recipe, (unsigned long long)file_off,
                 (unsigned long long)in_bytes);
        qfs_cache_key_compute(lname, ms->memo.id.name.bytes, 16, &lk);
    }
    /* A recipe with no entry in the cache cannot have this one: quantize now, hash after (once
     * the weight is out to its readers). Only for a file that has not changed in the last
     * second: key_after checks the file is still exactly the one read. */
    if (!res->disk_hit && !res->memo_hit && id_lock && mode == MODE_FULL &&
        !qfs_diskcache_may_hold(disk, recipe) && fstat(src->fd, &at) == 0) {
        qfs_srcid when = {.mtime = at.st_mtim, .ctime = at.st_ctim};
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        if (qfs_srcid_settled(&when, &now)) {
            qfs_diskcache_lock(disk, &lk, &res->id_lock_fd);   /* timed out: go on unlocked */
            if (!qfs_diskcache_may_hold(disk, recipe)) {
                res->hash_after = true;
                res->hashed = true;
            }   /* else written while we waited: looked up below, the lock kept */
        }
    }
    if (!res->disk_hit) {
        rc = source_open(e, src, t, &v, err);
        res->read_source = true;
        if (!rc && disk && !res->hash_after) {
            /* Entries are only ever written under the hash of the bytes quantized, also when
             * the memo had one: a memo that were wrong could not spread to other readers. */
            uint8_t got[16];
            qfs_srcmemo_hash(v.bytes, in_bytes, e->threads, got);
            if (res->memo_hit && memcmp(got, hash, 16) != 0)
                logf_(e, QFS_LOG_WARNING, "%s: tensor '%s': its remembered content hash is "
                      "wrong (the file changed without its identity changing); hashed again",
                      src->path, t->name);
            if (!res->memo_hit || memcmp(got, hash, 16) != 0) {
                res->hashed = true;
                res->memo_hit = false;
                qfs_srcmemo_key(recipe, got, &res->key);
                res->disk_hit =
                    qfs_diskcache_get(disk, &res->key, sc, sc_bytes, want_w, w_bytes) == 0;
            }
            if (!res->disk_hit && id_lock && res->id_lock_fd < 0 &&
                qfs_diskcache_lock(disk, &lk, &res->id_lock_fd) == 0)
                /* Another mount of this file may have written it while we waited. */
                res->disk_hit =
                    qfs_diskcache_get(disk, &res->key, sc, sc_bytes, want_w, w_bytes) == 0;
            if (!res->disk_hit && mode != MODE_SCALES &&
                qfs_diskcache_lock(disk, &res->key, &res->lock_fd) == 0)
                /* Another process may have written it while we waited for the lock. */
                res->disk_hit =
                    qfs_diskcache_get(disk, &res->key, sc, sc_bytes, want_w, w_bytes) == 0;
            if (!rc) rc = source_intact(e, src, &v, t, err);   /* the bytes hashed */
            if (!rc) memo_remember(e, ms, src, file_off, in_bytes, got);
        }
        if (!rc && !res->disk_hit) {
            char what[1024];
            snprintf(what, sizeof what, "%s: tensor '%s'", src->path, t->name);
            uint64_t align;
            banded = mode == MODE_FULL && w_bytes >= BAND_MIN_WEIGHT &&
                     qfs_quantize_rows_ok(j->spec, j->layout, &align);
            if (banded) {
                rc = quantize_in_bands(e, src, slot, &v, w, sc, &sc_published, what, err);
            } else {
                rc = kernel_failed(qfs_quantize_layout(j->spec, src->format, t->dtype,
                                                       v.bytes, j->rows, j->cols, j->layout,
                                                       w, sc, e->threads, what, err));
                if (!rc) rc = source_intact(e, src, &v, t, err);
            }
            if (!rc && disk && w && mode == MODE_DISK) {
                res->disk_error = qfs_diskcache_mark(disk, recipe);
                if (!res->disk_error)
                    res->disk_error =
                        /* Buffered: this is the worker, and a reader's tensor may queue
                         * behind it; a direct write lasts as long as the disk takes. */
                        qfs_diskcache_put(disk, &res->key, sc, sc_bytes, w, w_bytes,
                                          QFS_DISKCACHE_BUFFERED);
            }
            else if (!rc && disk && w) {
                /* the caller queues it; the locks go with it */
                res->write = !res->hash_after || key_after(e, src, &v, t, ms, &at, res);
                res->dropped = !res->write;
            }
        }
        source_close(e, &v);
    }
    if (!res->write) {
        qfs_diskcache_unlock(res->lock_fd);
        qfs_diskcache_unlock(res->id_lock_fd);
        res->lock_fd = res->id_lock_fd = -1;
    }
    if (!sc_published) res->scales = sc;
    if (rc) {
        if (!sc_published) free(sc);
        res->scales = NULL;
        if (banded) res->weight = w;   /* readers may hold it: the caller frees it */
        else free(w);
        return rc;
    }
    if (mode == MODE_DISK) {   /* on disk now; memory keeps only what readers need */
        free(w);
        w = NULL;
    }
    res->weight = w;
    return 0;
}

/* Lets go of a queued entry that will not be written (lock held). */
static void write_drop(qfs_engine *e, write_req *r)
{
    qfs_diskcache_unlock(r->lock_fd);
    qfs_diskcache_unlock(r->id_lock_fd);
    if (r->slot->entry.pins > 0) r->slot->entry.pins--;
    e->wq_bytes -= r->weight_len;
    e->stats.disk_dropped++;
    free(r->scales);
    free(r);
}

/* Queues slot's fresh weight for the disk writer, or drops it at once when the queue holds
 * wq_max bytes already: a reader never waits for the disk (lock held; the locks are consumed).
 * A queued weight stays pinned in the memory cache, which evicts around it: the queue is at
 * most half of cache_mem, or one weight when that weight alone is bigger (else the biggest
 * weights would never reach the disk cache). */
static void write_queue(qfs_engine *e, job_slot *slot, const job_result *res)
{
    int lock_fd = res->lock_fd, id_lock_fd = res->id_lock_fd;
    const qfs_plan_job *j = &slot->source->plan->jobs[slot->job];
    size_t sc_len = (size_t)j->layout->scales_bytes, w_len = (size_t)j->layout->weight_bytes;
    write_req *r = NULL;
    if (e->writer_started && slot->entry.cached && slot->scales &&
        (e->wq_bytes == 0 || e->wq_bytes + w_len <= e->wq_max) && (r = calloc(1, sizeof *r)) &&
        (r->scales = malloc(sc_len ? sc_len : 1))) {
        memcpy(r->scales, slot->scales, sc_len);
        r->slot = slot;
        r->key = res->key;
        memcpy(r->recipe, res->recipe, sizeof r->recipe);
        r->scales_len = sc_len;
        r->weight_len = w_len;
        r->lock_fd = lock_fd;
        r->id_lock_fd = id_lock_fd;
        slot->entry.pins++;
        e->wq_bytes += w_len;
        if (e->wq_tail) e->wq_tail->next = r;
        else e->wq_head = r;
        e->wq_tail = r;
        pthread_cond_signal(&e->write_work);
        return;
    }
    if (r) free(r);
    qfs_diskcache_unlock(lock_fd);
    qfs_diskcache_unlock(id_lock_fd);
    e->stats.disk_dropped++;
}

/* Writes the memos that gained hashes (lock held on entry and exit; dropped while writing).
 * A memo whose write fails stays dirty: the writer tries it again once the cache's pause is
 * over (with its next entry, or at unmount), else the next mount would hash the whole file. */
static void write_memos(qfs_engine *e, qfs_diskcache *disk)
{
    e->memo_written = now_seconds();
    for (memo_slot *ms = e->memos; ms; ms = ms->next) {
        if (!ms->memo.dirty || !ms->usable) continue;
        uint8_t *buf;
        size_t len;
        if (qfs_srcmemo_encode(&ms->memo, &buf, &len) != 0) continue;
        ms->memo.dirty = false;
        qfs_cache_key name = ms->memo.id.name;
        pthread_mutex_unlock(&e->lock);
        int rc = qfs_diskcache_memo_put(disk, &name, buf, len);
        free(buf);
        pthread_mutex_lock(&e->lock);
        if (rc) ms->memo.dirty = true;   /* hashes added meanwhile are in it too */
        if (rc && rc != -EROFS) disk_failed(e, rc);
    }
}

/* The disk writer: entries in queue order, then, when idle, the memos that changed. Stops
 * once asked to and the queue is empty, so an unmount leaves every queued entry on disk. */
static void *writer_main(void *arg)
{
    qfs_engine *e = arg;
    qfs_diskcache *disk = e->disk;
    /* The lowest CPU priority (Linux: per thread) while its queue is less than half full: on
     * a machine whose cores the load keeps busy, writing the cache must not take their time
     * from the readers, and it catches up when they pause. Normal priority when it falls
     * behind, so that the cache still fills rather than dropping entries, and at unmount
     * (going back up needs CAP_SYS_NICE, as root; otherwise it stays low). */
    id_t tid = (id_t)syscall(SYS_gettid);
    int nice_now = 19;
    setpriority(PRIO_PROCESS, tid, nice_now);
    pthread_mutex_lock(&e->lock);
    for (;;) {
        /* Behind: more than half the queue's room used, or unmounting. Then it writes at the
         * speed of memory (page cache) rather than of the disk (O_DIRECT): on the GPU host,
         * whose 16 cores quantize faster than its disk takes O_DIRECT writes, direct writes
         * alone dropped 2-5x more entries (BENCHMARKS.md); on a small machine the queue stays
         * short and the weights go straight from their buffers to the disk. */
        bool behind = e->writer_stop || e->wq_bytes > e->wq_max / 2;
        int want = behind ? 0 : 19;
        if (want != nice_now && setpriority(PRIO_PROCESS, tid, want) == 0) nice_now = want;
        write_req *r = e->wq_head;
        if (r) {
            e->wq_head = r->next;
            if (!e->wq_head) e->wq_tail = NULL;
            const uint8_t *weight = r->slot->entry.data;   /* pinned: stays until we unpin */
            e->wq_busy = 1;
            pthread_mutex_unlock(&e->lock);
            int rc = qfs_diskcache_readonly(disk) ? -EROFS : 0;
            if (!rc) rc = qfs_diskcache_mark(disk, r->recipe);
            if (!rc)
                rc = qfs_diskcache_put(disk, &r->key, r->scales, r->scales_len, weight,
                                       r->weight_len,
                                       behind ? QFS_DISKCACHE_BUFFERED : QFS_DISKCACHE_DIRECT);
            qfs_diskcache_unlock(r->lock_fd);
            qfs_diskcache_unlock(r->id_lock_fd);
            r->lock_fd = r->id_lock_fd = -1;
            pthread_mutex_lock(&e->lock);
            e->wq_busy = 0;
            if (rc == 0) {
                e->stats.disk_writes++;
                e->stats.disk_cache = 1;   /* again, after an outage */
                if (r->slot->entry.pins > 0) r->slot->entry.pins--;
                e->wq_bytes -= r->weight_len;
                free(r->scales);
                free(r);
            } else {
                disk_failed(e, rc);
                write_drop(e, r);
            }
            if (e->cache.used > e->cache.budget) qfs_cache_make_room(&e->cache, 0);
            pthread_cond_broadcast(&e->done);
            continue;
        }
        bool dirty = false;
        for (memo_slot *ms = e->memos; ms && !dirty; ms = ms->next)
            dirty = ms->memo.dirty && ms->usable;
        if (dirty && qfs_diskcache_readonly(disk)) dirty = false;
        double wait = MEMO_WRITE_SECONDS - (now_seconds() - e->memo_written);
        if (dirty && (e->writer_stop || wait <= 0)) {
            write_memos(e, disk);
            if (e->writer_stop) break;   /* one try at unmount: a failing memo is given up */
            continue;
        }
        if (e->writer_stop) break;
        if (dirty) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            long ns = until.tv_nsec + (long)(wait * 1e9);
            until.tv_sec += ns / 1000000000L;
            until.tv_nsec = ns % 1000000000L;
            pthread_cond_timedwait(&e->write_work, &e->lock, &until);
        } else {
            pthread_cond_wait(&e->write_work, &e->lock);
        }
    }
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

static void push_demand(qfs_engine *e, job_slot *slot)
{
    queue_push(e, Q_DEMAND, slot);
    pthread_cond_signal(&e->work);
}

static void end_bands(job_slot *slot)
{
    free(slot->band_done);
    slot->band_done = NULL;
    slot->n_bands = 0;
    slot->want_band = UINT32_MAX;
}

static void run_one(qfs_engine *e, job_slot *slot, queue_id from)
{
    qfs_tensor_source *src = slot->source;
    const qfs_plan_job *j = &src->plan->jobs[slot->job];
    if (from == Q_PREFETCH && slot->waiters == 0 &&
        e->cache.used + j->layout->weight_bytes > e->cache.budget) {
        slot->want_weight = 0;  /* the cache filled up since it was queued: drop the prefetch */
        return;
    }
    bool full = slot->want_weight && !slot->entry.cached;
    if (!full && slot->scales) return;   /* both products already there */
    /* Only the scales were asked for (they open every file): compute the weight in the same
     * pass when the memory cache has room for it, as a reader will want it next; reading and
     * reducing the source twice is the alternative. */
    if (!full && !slot->entry.cached &&
        e->cache.used + j->layout->weight_bytes <= e->cache.budget)
        full = true;
    job_mode mode = !full ? MODE_SCALES
                  : slot->warm_only && slot->waiters == 0 && e->disk ? MODE_DISK : MODE_FULL;
    slot->want_weight = 0;
    slot->warm_only = 0;
    slot->running = 1;
    slot->scales_entry.pins++;   /* the job may read its scales without the lock */
    uint8_t *reuse = NULL;
    if (mode != MODE_SCALES) {
        size_t bytes = (size_t)j->layout->weight_bytes;
        if (bytes >= HUGE_ALLOC) recycle_served(e, bytes);
        if (mode == MODE_FULL) qfs_cache_make_room(&e->cache, bytes);
        slot->served = 0;
        reuse = pool_take(e, bytes);
        pool_trim(e, mode == MODE_FULL ? bytes : 0, false);
    }
    qfs_diskcache *disk = e->disk;
    pthread_mutex_unlock(&e->lock);

    qfs_error err = {{0}};
    job_request rq = {slot, mode, reuse, disk};
    job_result res;
    double t0 = now_seconds();
    int rc = compute_job(e, &rq, &res, &err);
    double dt = now_seconds() - t0;

    pthread_mutex_lock(&e->lock);
    if (res.disk_error) disk_failed(e, res.disk_error);
    e->stats.memo_hits += res.memo_hit;
    e->stats.memo_rehashes += res.hashed;
    e->stats.source_reads += res.read_source;
    e->stats.disk_dropped += res.dropped;
    if (rc) {
        slot->failed = 1;
        slot->error = rc;
        free(slot->error_msg);
        slot->error_msg = strdup(err.msg);
        slot->waiters = 0;
        slot->gen++;
        /* Bands already served stay correct; the buffer goes once no reader copies from it. */
        while (slot->entry.pins > 0) pthread_cond_wait(&e->done, &e->lock);
        end_bands(slot);
        slot->entry.data = NULL;
        slot->running = 0;
        slot->scales_entry.pins--;
        free(res.weight);
        logf_(e, QFS_LOG_ERR, "%s", err.msg);
        return;
    }
    slot->running = 0;
    slot->scales_entry.pins--;
    end_bands(slot);
    if (res.scales && slot->scales) {   /* NULL: the job published its own */
        free(res.scales);
    } else if (res.scales) {
        slot->scales = res.scales;
        scales_added(e, slot);
    }
    if (res.disk_hit) {
        e->stats.disk_hits++;
    } else if (mode != MODE_SCALES) {
        e->stats.seconds_quantizing += dt;
        e->stats.tensors_quantized++;
        e->stats.bytes_quantized += src->st->tensors[j->src].end - src->st->tensors[j->src].begin;
        if (mode == MODE_DISK && disk && !res.disk_error && !qfs_diskcache_readonly(disk)) {
            e->stats.disk_writes++;
            e->stats.disk_cache = 1;   /* again, after an outage */
        }
    } else {
        e->stats.seconds_quantizing += dt;
        e->stats.scales_computed++;
    }
    logf_(e, QFS_LOG_DEBUG, "%s: tensor '%s': %s in %.2f ms", src->path,
          src->st->tensors[j->src].name, res.disk_hit ? "read from the disk cache"
          : mode == MODE_SCALES ? "scales computed" : mode == MODE_DISK ? "quantized into the "
          "disk cache" : "quantized", dt * 1e3);
    if (res.weight) {
        slot->entry.data = res.weight;
        slot->entry.size = (size_t)j->layout->weight_bytes;
        slot->entry.pins += slot->waiters;   /* each waiting reader receives its pin */
        slot->waiters = 0;
        slot->gen++;
        qfs_cache_insert(&e->cache, &slot->entry);
    }
    if (res.write && res.weight) {
        write_queue(e, slot, &res);
    } else if (res.write) {
        qfs_diskcache_unlock(res.lock_fd);
        qfs_diskcache_unlock(res.id_lock_fd);
    }
    /* A weight reader arrived while only the scales were computed: go again. */
    if (slot->want_weight && !slot->entry.cached && slot->queue == Q_NONE)
        push_demand(e, slot);
}

static void warm_progress(qfs_engine *e, bool force)
{
    double t = now_seconds();
    if (!force && t - e->warm_logged < WARM_LOG_SECONDS) return;
    e->warm_logged = t;
    const qfs_engine_stats *s = &e->stats;
    double el = t - e->warm_started, rate = el > 0 ? (double)s->warm_bytes_done / el : 0;
    logf_(e, QFS_LOG_INFO, "warm: %llu/%llu tensors, %.1f/%.1f GiB of source, %.0f MiB/s, %s%.0f s",
          (unsigned long long)s->warm_done, (unsigned long long)s->warm_jobs,
          (double)s->warm_bytes_done / (1 << 30), (double)s->warm_bytes / (1 << 30),
          rate / (1 << 20), s->warm_done == s->warm_jobs ? "done in " : "about ",
          s->warm_done == s->warm_jobs ? el
          : rate > 0 ? (double)(s->warm_bytes - s->warm_bytes_done) / rate : 0.0);
}

static void *worker_main(void *arg)
{
    qfs_engine *e = arg;
    pthread_mutex_lock(&e->lock);
    while (!e->stopping) {
        queue_id from = Q_DEMAND;
        job_slot *slot = NULL;
        for (; from <= Q_WARM && !(slot = queue_pop(e, from)); from++) {}
        if (!slot) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += SCRATCH_IDLE_SECONDS;
            if (pthread_cond_timedwait(&e->work, &e->lock, &until) == ETIMEDOUT) {
                free(e->scratch);    /* idle for a while: give the source buffer back */
                e->scratch = NULL;
                e->scratch_cap = 0;
                pool_trim(e, 0, true);   /* and the pooled buffers */
                pthread_cond_wait(&e->work, &e->lock);
            }
            continue;
        }
        bool warm = slot->warm;
        slot->warm = 0;
        run_one(e, slot, from);
        if (warm) {
            const qfs_tensor_source *src = slot->source;
            const qfs_st_tensor *t = &src->st->tensors[src->plan->jobs[slot->job].src];
            e->stats.warm_done++;
            e->stats.warm_bytes_done += t->end - t->begin;
            warm_progress(e, e->stats.warm_done == e->stats.warm_jobs);
        }
        pthread_cond_broadcast(&e->done);
    }
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

int qfs_tensor_source_new(const qfs_tensor_source_info *info, qfs_tensor_source **out,
                          qfs_error *err)
{
    size_t n = info->plan->n_jobs;
    qfs_tensor_source *src = calloc(1, sizeof *src);
    job_slot *slots = calloc(n ? n : 1, sizeof *slots);
    if (!src || !slots) {
        free(src);
        free(slots);
        qfs_error_set(err, "%s: out of memory (%zu tensors to quantize)", info->path, n);
        return -ENOMEM;
    }
    *src = (qfs_tensor_source){info->fd, info->path, info->st, info->plan, info->format,
                               info->snap_size, info->snap_mtime, slots};
    *out = src;
    return 0;
}

void qfs_tensor_source_free(qfs_tensor_source *src)
{
    if (!src) return;
    for (size_t k = 0; k < src->plan->n_jobs; k++) {
        free(src->slots[k].error_msg);
        free(src->slots[k].entry.data);
        free(src->slots[k].scales);
    }
    free(src->slots);
    free(src);
}

int qfs_engine_create(const qfs_engine_options *o, qfs_engine **out, qfs_error *err)
{
    qfs_engine *e = calloc(1, sizeof *e);
    if (!e) {
        qfs_error_set(err, "cannot start the engine: out of memory");
        return -ENOMEM;
    }
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->work, NULL);
    pthread_cond_init(&e->done, NULL);
    e->threads = o->threads;
    e->guard = o->map_guard;
    e->disk = o->disk;
    e->stats.disk_cache = o->disk != NULL && !qfs_diskcache_readonly(o->disk);
    e->log = o->log;
    e->log_ctx = o->log_ctx;
    qfs_cache_init(&e->cache, o->cache_mem, evict_slot, e);
    qfs_cache_init(&e->scales, o->cache_mem / 2, evict_scales, e);
    e->cache_mem = o->cache_mem;
    e->wq_max = o->cache_mem / 2;
    pthread_cond_init(&e->write_work, NULL);
    qfs_srcid_machine(&e->machine);   /* none: only blob memos */
    int rc = pthread_create(&e->worker, NULL, worker_main, e);
    if (rc) {
        qfs_error_set(err, "cannot start the quantization thread: %s", strerror(rc));
        free(e);
        return -rc;
    }
    /* Without a writer thread new entries are dropped, never written on the readers' path. */
    if (e->disk && pthread_create(&e->writer, NULL, writer_main, e) == 0)
        e->writer_started = true;
    else if (e->disk)
        logf_(e, QFS_LOG_WARNING, "disk cache %s: cannot start its writer thread; its entries "
              "are read, new tensors stay in memory", qfs_diskcache_dir(e->disk));
    *out = e;
    return 0;
}

void qfs_engine_destroy(qfs_engine *e)
{
    if (!e) return;
    pthread_mutex_lock(&e->lock);
    e->stopping = 1;
    pthread_cond_broadcast(&e->work);
    pthread_mutex_unlock(&e->lock);
    pthread_join(e->worker, NULL);
    if (e->writer_started) {   /* it finishes the queue and the memos first */
        pthread_mutex_lock(&e->lock);
        e->writer_stop = true;
        pthread_cond_signal(&e->write_work);
        pthread_mutex_unlock(&e->lock);
        pthread_join(e->writer, NULL);
    }
    for (memo_slot *ms = e->memos, *next; ms; ms = next) {
        next = ms->next;
        qfs_srcmemo_free(&ms->memo);
        free(ms);
    }
    qfs_cache_clear(&e->cache);
    qfs_cache_clear(&e->scales);
    pool_trim(e, 0, true);
    qfs_diskcache_close(e->disk);
    free(e->scratch);
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->work);
    pthread_cond_destroy(&e->done);
    pthread_cond_destroy(&e->write_work);
    free(e);
}

static int slot_error(const job_slot *slot, qfs_error *err)
{
    qfs_error_set(err, "%s", slot->error_msg ? slot->error_msg : "quantization failed");
    return slot->error ? slot->error : -EIO;
}

/* Makes sure the slot will run soon: queue it, or move it from a background queue. */
static void demand(qfs_engine *e, job_slot *slot)
{
    slot->warm_only = 0;
    if (slot->running || slot->queue == Q_DEMAND) return;
    if (slot->queue != Q_NONE) queue_remove(e, slot);
    push_demand(e, slot);
}

int qfs_engine_acquire(qfs_engine *e, qfs_tensor_source *src, size_t job, qfs_part part,
                       uint64_t need_begin, uint64_t need_end, const uint8_t **data,
                       qfs_error *err)
{
    int rc = 0;
    if (part != QFS_PART_WEIGHT) {
        qfs_error_set(err, "%s: internal error: scales are read with qfs_engine_read_scales",
                      src->path);
        return -EINVAL;
    }
    pthread_mutex_lock(&e->lock);
    job_slot *slot = slot_at(src, job);
    bool partial = false;
    if (slot->entry.cached) {
        slot->entry.pins++;
        qfs_cache_touch(&e->cache, &slot->entry);
        e->stats.memory_hits++;
    } else if (bands_ready(slot, need_begin, need_end)) {
        slot->entry.pins++;                  /* the bands asked for are made already */
        partial = true;
    } else if (!slot->failed) {
        slot->want_weight = 1;
        demand(e, slot);
        slot->waiters++;
        e->stats.waits++;
        unsigned gen = slot->gen;
        while (slot->gen == gen && !slot->failed && !bands_ready(slot, need_begin, need_end)) {
            if (slot->band_done)   /* ask for the first missing band of ours */
                for (uint64_t b = need_begin / slot->band_bytes; b < slot->n_bands; b++)
                    if (!slot->band_done[b]) {
                        slot->want_band = (uint32_t)b;
                        break;
                    }
            pthread_cond_wait(&e->done, &e->lock);
        }
        if (slot->gen == gen && !slot->failed) {   /* woken by a band: pin it ourselves */
            slot->waiters--;
            slot->entry.pins++;
            partial = true;
        }
        /* Otherwise it completed (the worker pinned it for us) or failed. */
    }
    if (partial) e->stats.early_reads++;
    if (slot->entry.cached || partial) slot->served += need_end - need_begin;
    if (slot->entry.cached || partial) *data = slot->entry.data;
    else rc = slot_error(slot, err);
    pthread_mutex_unlock(&e->lock);
    return rc;
}

int qfs_engine_read_scales(qfs_engine *e, qfs_tensor_source *src, size_t job, uint64_t off,
                           size_t len, uint8_t *dst, qfs_error *err)
{
    int rc = 0;
    pthread_mutex_lock(&e->lock);
    job_slot *slot = slot_at(src, job);
    if (!slot->scales && !slot->failed) e->stats.waits++;
    /* Asked again at each wake-up: scales made and then dropped before this reader woke up
     * are simply made again. */
    while (!slot->scales && !slot->failed) {
        demand(e, slot);
        pthread_cond_wait(&e->done, &e->lock);
    }
    if (slot->scales) {
        memcpy(dst, slot->scales + off, len);
        qfs_cache_touch(&e->scales, &slot->scales_entry);
    } else {
        rc = slot_error(slot, err);
    }
    pthread_mutex_unlock(&e->lock);
    return rc;
}

void qfs_engine_release(qfs_engine *e, qfs_tensor_source *src, size_t job)
{
    pthread_mutex_lock(&e->lock);
    job_slot *slot = slot_at(src, job);
    if (slot->entry.pins > 0) slot->entry.pins--;
    if (slot->entry.pins == 0 && slot->running)
        pthread_cond_broadcast(&e->done);   /* a failed job waits to free its bands */
    /* A result larger than the budget stays only while pinned. */
    if (slot->entry.pins == 0 && e->cache.used > e->cache.budget)
        qfs_cache_make_room(&e->cache, 0);
    pthread_mutex_unlock(&e->lock);
}

void qfs_engine_prefetch(qfs_engine *e, qfs_tensor_source *src, size_t job)
{
    pthread_mutex_lock(&e->lock);
    job_slot *slot = slot_at(src, job);
    uint64_t bytes = src->plan->jobs[job].layout->weight_bytes;
    if (!slot->entry.cached && slot->queue == Q_NONE && !slot->running && !slot->failed &&
        e->cache.used + bytes <= e->cache.budget) {
        slot->want_weight = 1;
        queue_push(e, Q_PREFETCH, slot);
        pthread_cond_signal(&e->work);
    }
    pthread_mutex_unlock(&e->lock);
}

void qfs_engine_warm(qfs_engine *e, qfs_tensor_source *const *srcs, size_t n)
{
    pthread_mutex_lock(&e->lock);
    if (e->stats.warm_done == e->stats.warm_jobs) {   /* a new round */
        e->stats.warm_jobs = e->stats.warm_done = 0;
        e->stats.warm_bytes = e->stats.warm_bytes_done = 0;
        e->warm_started = now_seconds();
        e->warm_round++;
    }
    for (size_t i = 0; i < n; i++) {
        qfs_tensor_source *src = srcs[i];
        for (size_t k = 0; k < src->plan->n_jobs; k++) {
            job_slot *slot = slot_at(src, k);
            if (slot->entry.cached || slot->queue != Q_NONE || slot->running ||
                slot->failed || slot->warm_round == e->warm_round)
                continue;
            slot->want_weight = 1;
            slot->warm = 1;
            slot->warm_round = e->warm_round;
            slot->warm_only = 1;
            queue_push(e, Q_WARM, slot);
            const qfs_st_tensor *t = &src->st->tensors[src->plan->jobs[k].src];
            e->stats.warm_jobs++;
            e->stats.warm_bytes += t->end - t->begin;
        }
    }
    logf_(e, QFS_LOG_INFO, "warm: %llu tensors (%.2f GiB of source) queued%s",
          (unsigned long long)(e->stats.warm_jobs - e->stats.warm_done),
          (double)(e->stats.warm_bytes - e->stats.warm_bytes_done) / (1 << 30),
          e->disk ? " for the disk cache" : " (no disk cache: the memory cache keeps the last)");
    pthread_cond_signal(&e->work);
    pthread_mutex_unlock(&e->lock);
}

void qfs_engine_get_stats(qfs_engine *e, qfs_engine_stats *out)
{
    pthread_mutex_lock(&e->lock);
    *out = e->stats;
    out->evictions = e->cache.evictions;
    /* Scales and zero points count inside cache_mem, so both numbers include them. */
    out->memory_used = e->cache.used + e->pool_bytes + e->scales.used;
    out->scales_bytes = e->scales.used;
    out->scales_evictions = e->scales.evictions;
    out->memory_budget = e->cache_mem;
    out->disk_queued_bytes = e->wq_bytes;
    out->disk_queued = e->wq_busy;
    for (const write_req *r = e->wq_head; r; r = r->next) out->disk_queued++;
    pthread_mutex_unlock(&e->lock);
    if (e->disk) {   /* set once at creation; its own lock */
        out->disk_bytes = qfs_diskcache_bytes(e->disk);
        out->disk_dir = qfs_diskcache_dir(e->disk);
    }
}
