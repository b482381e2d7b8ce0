#include "keyname.h"

#include <stdio.h>
#include <string.h>

#include "errors.h"

int keyname_byte_ok(unsigned char ch)
{
    if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'))
        return 1;
    return ch != '\0' && strchr("_-.:/@+=", ch) != NULL;
}

int keyname_check(const char *s, size_t max, char *problem, size_t n)
{
    size_t len = s ? strlen(s) : 0;
    if (len == 0) {
        snprintf(problem, n, "must not be empty");
        return -1;
    }
    if (len > max) {
        snprintf(problem, n, "must be 1..%zu bytes of " KEYNAME_CHARSET ", got %zu bytes", max, len);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        if (!keyname_byte_ok((unsigned char)s[i])) {
            snprintf(problem, n, "must be 1..%zu bytes of " KEYNAME_CHARSET ", got byte 0x%02x at offset %zu",
                     max, (unsigned char)s[i], i);
            return -1;
        }
    }
    return 0;
}

size_t keyname_pool_name_max(int32_t devices)
{
    size_t digits = 1;
    for (int32_t v = devices - 1; v >= 10; v /= 10)
        digits++;
    return BATON_KEY_MAX - 1 - digits; /* "/" and the largest index */
}
