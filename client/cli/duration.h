/* duration.h - parsing of CLI durations ("500ms", "5s", "2m", "1h", "30" = 30 s). */
#ifndef BATON_CLI_DURATION_H
#define BATON_CLI_DURATION_H

#include <stdint.h>

/* Parses a non-negative duration into milliseconds. A bare number means
 * seconds (like flock(1)). Returns 0, or -1 for anything else (empty, sign,
 * unknown unit, trailing junk, overflow). Pure. */
int cli_parse_duration(const char *s, int64_t *ms);

#endif
