#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static log_level g_level = LOG_LEVEL_INFO;
static log_format g_format = LOG_FORMAT_TEXT;
static int g_lock_events;

void log_set_level(log_level lvl)
{
    g_level = lvl;
}

int log_level_parse(const char *s)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

void log_set_format(log_format f)
{
    g_format = f;
}

int log_format_parse(const char *s)
{
    if (strcmp(s, "text") == 0)
        return LOG_FORMAT_TEXT;
    if (strcmp(s, "json") == 0)
        return LOG_FORMAT_JSON;
    return -1;
}

void log_set_lock_events(int on)
{
    g_lock_events = on;
}

int log_lock_events(void)
{
    return g_lock_events;
}

static void vlog(log_level lvl, const log_field *f, size_t nf, const char *fmt, va_list ap)
{
    if (lvl < g_level)
        return;
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char *line = log_format_line(g_format, &ts, lvl, msg, f, nf);
    /* one fprintf per line: lines of different threads do not interleave */
    if (line)
        fprintf(stderr, "%s\n", line);
    else
        fprintf(stderr, "%s\n", msg);
    free(line);
}

void log_msg(log_level lvl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(lvl, NULL, 0, fmt, ap);
    va_end(ap);
}

void log_fields(log_level lvl, const log_field *f, size_t nf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(lvl, f, nf, fmt, ap);
    va_end(ap);
}
