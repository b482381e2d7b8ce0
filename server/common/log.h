#ifndef BATON_LOG_H
#define BATON_LOG_H

/* Minimal leveled logging to stderr. Thread-safe (one fprintf per line). */

typedef enum log_level { LOG_LEVEL_DEBUG = 0, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR } log_level;

void log_set_level(log_level lvl);
/* Parses "debug" / "info" / "warn" / "error"; returns -1 for anything else. */
int log_level_parse(const char *s);
void log_msg(log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- structured logs (issue #18): log_format json, fields ---- */

#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef enum log_format { LOG_FORMAT_TEXT = 0, LOG_FORMAT_JSON = 1 } log_format;
void log_set_format(log_format f);
/* "text" / "json"; -1 for anything else. */
int log_format_parse(const char *s);

/* A structured field: a string (s != NULL) or an integer (i). */
typedef struct log_field {
    const char *name;
    const char *s;
    int64_t i;
} log_field;
#define LOG_STR(n, v) ((log_field){(n), (v) ? (v) : "", 0})
#define LOG_INT(n, v) ((log_field){(n), NULL, (int64_t)(v)})

/* A line with fields: text appends " name=value" (values with a space or a
 * quote are quoted), json adds them as members next to time, level and
 * message. */
void log_fields(log_level lvl, const log_field *f, size_t nf, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The line log_fields writes, without the newline (pure; log_format.c):
 * a heap string, NULL on OOM. */
char *log_format_line(log_format fmt, const struct timespec *ts, log_level lvl, const char *msg,
                      const log_field *f, size_t nf);

/* log_lock_events: every grant and lock end logged at info (lock_view.c). */
void log_set_lock_events(int on);
int log_lock_events(void);

#define LOG_DEBUG(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define LOG_INFO(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define LOG_WARN(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define LOG_ERROR(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
