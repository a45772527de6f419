/* quarkfs — the front end's log: stderr (with timestamps in a foreground mount, <N> priority
 * prefixes under systemd's journal), a log file (-o log_file=PATH) or syslog (a daemon). */
#ifndef QUARKFS_FS_LOG_H
#define QUARKFS_FS_LOG_H

#include <stdbool.h>

#include "quarkfs/error.h"

/* Messages above this syslog priority are dropped (-o log=LEVEL; default LOG_INFO). */
extern int qfs_log_level;

/* Logs one message at a syslog priority. A warning or error already logged (same text) is
 * dropped: the engine reports a failed tensor and so does every read that needed it. */
void qfs_log_msg(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* "error", "warning", "info", "debug" (and the syslog spellings err, warn): a syslog priority,
 * or -1. */
int qfs_log_parse_level(const char *s);

/* Notes whether stderr is systemd's journal ($JOURNAL_STREAM names its device:inode). */
void qfs_log_detect_journal(void);

/* Prefixes stderr lines with the local time (a foreground mount: its log is read later). */
void qfs_log_set_timestamps(bool on);

/* Appends every later message to path (created 0640), with time and pid; errors still go to
 * stderr as long as it is the starter's. 0, or -errno with err naming the file. */
int qfs_log_open_file(const char *path, qfs_error *err);

/* True once a log file is open. */
bool qfs_log_has_file(void);

/* True if a syslog daemon takes messages on /dev/log (a datagram socket that accepts a
 * connection). */
bool qfs_log_syslog_available(void);

/* After daemonizing: stderr is gone; messages go to the log file if one is open, else to
 * syslog (facility daemon, tag quarkfs). */
void qfs_log_detach(void);

/* Closes syslog / the log file. */
void qfs_log_close(void);

#endif
