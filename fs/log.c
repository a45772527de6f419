/* quarkfs — the front end's log; see log.h. */
#include "log.h"

#include "quarkfs/error.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

int qfs_log_level = LOG_INFO;

static bool to_syslog;     /* a daemon without a log file */
static bool journal;       /* stderr is systemd's journal: <priority> prefixes, no time */
static bool timestamps;    /* stderr lines carry the time */
static bool detached;      /* stderr no longer reaches anyone */
static int file_fd = -1;   /* -o log_file=PATH */

/* True if this error or warning text was logged before. */
static bool logged_before(const char *msg)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static uint64_t seen[1024];   /* FNV-1a hashes, the oldest overwritten first */
    static size_t n_seen;
    uint64_t h = 14695981039346656037ull;
    for (const char *p = msg; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    bool found = false;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < n_seen && i < 1024 && !found; i++) found = seen[i] == h;
    if (!found) seen[n_seen++ % 1024] = h;
    pthread_mutex_unlock(&lock);
    return found;
}

static void now_text(char *buf, size_t len)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%03ld", ts.tv_nsec / 1000000);
}

static const char *level_word(int priority)
{
    return priority <= LOG_ERR ? "error: " : priority == LOG_WARNING ? "warning: "
           : priority == LOG_DEBUG ? "debug: " : "";
}

void qfs_log_msg(int priority, const char *fmt, ...)
{
    if (priority > qfs_log_level) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (priority <= LOG_WARNING && logged_before(msg)) return;
    /* Messages carry tensor and file names: their control characters must not reach a
     * terminal or split a log line (qfs_escape_ctl). */
    char safe[4 * sizeof msg];
    qfs_escape_ctl(msg, safe, sizeof safe);
    char when[40];
    if (file_fd >= 0) {
        char line[sizeof safe + 128];
        now_text(when, sizeof when);
        int n = snprintf(line, sizeof line, "%s quarkfs[%d]: %s%s\n", when, (int)getpid(),
                         level_word(priority), safe);
        if (n > (int)sizeof line - 1) n = (int)sizeof line - 1;
        if (write(file_fd, line, (size_t)n) < 0) { /* nowhere left to report it */ }
        if (detached || priority > LOG_ERR) return;   /* errors also reach the starter */
    } else if (to_syslog) {
        syslog(priority, "%s", safe);
        return;
    }
    char prefix[48] = "";
    if (journal) {
        snprintf(prefix, sizeof prefix, "<%d>", priority);
    } else if (timestamps) {
        now_text(when, sizeof when);
        snprintf(prefix, sizeof prefix, "%s ", when);
    }
    fprintf(stderr, "%squarkfs: %s%s\n", prefix, level_word(priority), safe);
}

int qfs_log_parse_level(const char *s)
{
    static const struct { const char *name; int level; } names[] = {
        {"error", LOG_ERR}, {"err", LOG_ERR}, {"warning", LOG_WARNING}, {"warn", LOG_WARNING},
        {"info", LOG_INFO}, {"debug", LOG_DEBUG}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i].name) == 0) return names[i].level;
    return -1;
}

void qfs_log_detect_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat sb;
    if (js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &sb) == 0)
        journal = (unsigned long long)sb.st_dev == dev && (unsigned long long)sb.st_ino == ino;
}

void qfs_log_set_timestamps(bool on) { timestamps = on; }

int qfs_log_open_file(const char *path, qfs_error *err)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
    if (fd < 0) {
        int e = errno;
        qfs_error_set(err, "log_file %s: %s", path, strerror(e));
        return -e;
    }
    if (file_fd >= 0) close(file_fd);
    file_fd = fd;
    return 0;
}

bool qfs_log_has_file(void) { return file_fd >= 0; }

bool qfs_log_syslog_available(void)
{
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return false;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", "/dev/log");
    bool ok = connect(s, (struct sockaddr *)&a, sizeof a) == 0;
    close(s);
    return ok;
}

void qfs_log_detach(void)
{
    detached = true;
    if (file_fd >= 0) return;
    openlog("quarkfs", LOG_PID, LOG_DAEMON);
    to_syslog = true;
}

void qfs_log_close(void)
{
    if (to_syslog) closelog();
    to_syslog = false;
    if (file_fd >= 0) close(file_fd);
    file_fd = -1;
}
