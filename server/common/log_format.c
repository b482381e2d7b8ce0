/*
 * log_format.c - one log line as text or as a JSON object (log_format),
 * from plain values: no clock, no I/O (tests/common/test_log_format.c).
 *
 *   text: 2026-12-03T18:20:01.123Z batond WARN message key=gpu:1 owner="ocr 7"
 *   json: {"time":"2026-12-03T18:20:01.123Z","level":"warn","message":"...","key":"gpu:1",...}
 */
#include "log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

/* A text value: bare when it has no space, quote or control byte. */
static void text_value(FILE *f, const char *s)
{
    int bare = s[0] != '\0';
    for (const unsigned char *p = (const unsigned char *)s; *p && bare; p++)
        bare = *p > 0x20 && *p != '"' && *p != 0x7f && *p != '=';
    if (bare)
        fputs(s, f);
    else
        json_str(f, s);
}

char *log_format_line(log_format fmt, const struct timespec *ts, log_level lvl, const char *msg,
                      const log_field *fields, size_t nf)
{
    static const char *const tags[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    static const char *const names[] = {"debug", "info", "warn", "error"};
    if ((unsigned)lvl > LOG_LEVEL_ERROR)
        lvl = LOG_LEVEL_ERROR;
    char when[64];
    struct tm tm;
    gmtime_r(&ts->tv_sec, &tm);
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts->tv_nsec / 1000000);
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (f == NULL)
        return NULL;
    if (fmt == LOG_FORMAT_JSON) {
        fprintf(f, "{\"time\":\"%s\",\"level\":\"%s\",\"message\":", when, names[lvl]);
        json_str(f, msg ? msg : "");
        for (size_t i = 0; i < nf; i++) {
            fputc(',', f);
            json_str(f, fields[i].name);
            fputc(':', f);
            if (fields[i].s)
                json_str(f, fields[i].s);
            else
                fprintf(f, "%" PRId64, fields[i].i);
        }
        fputc('}', f);
    } else {
        fprintf(f, "%s batond %s %s", when, tags[lvl], msg ? msg : "");
        for (size_t i = 0; i < nf; i++) {
            fprintf(f, " %s=", fields[i].name);
            if (fields[i].s)
                text_value(f, fields[i].s);
            else
                fprintf(f, "%" PRId64, fields[i].i);
        }
    }
    if (ferror(f)) {
        fclose(f);
        free(out);
        return NULL;
    }
    if (fclose(f) != 0) {
        free(out);
        return NULL;
    }
    return out;
}
