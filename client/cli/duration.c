/* duration.c - see duration.h. */
#include <stdint.h>
#include <string.h>

#include "duration.h"

int cli_parse_duration(const char *s, int64_t *ms)
{
    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    int64_t n = 0;
    while (*s >= '0' && *s <= '9') {
        if (n > (INT64_MAX - 9) / 10)
            return -1;
        n = n * 10 + (*s++ - '0');
    }
    int64_t mul;
    if (*s == '\0' || strcmp(s, "s") == 0)
        mul = 1000;
    else if (strcmp(s, "ms") == 0)
        mul = 1;
    else if (strcmp(s, "m") == 0)
        mul = 60 * 1000;
    else if (strcmp(s, "h") == 0)
        mul = 3600 * 1000;
    else
        return -1;
    if (n > INT64_MAX / mul)
        return -1;
    *ms = n * mul;
    return 0;
}
