/*
 * libFuzzer target for the two parsers of untrusted text: config_load_string
 * (the whole input as YAML) and validate_key / validate_owner (the input as
 * one C string). Crashes, leaks and sanitizer reports are the findings.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    baton_config c;
    config_defaults(&c);
    if (config_load_string(&c, "fuzz", (const char *)data, size, err, sizeof(err)) == 0) {
        /* A config that loads must also pass the command-line check. */
        if (config_check(&c, err, sizeof(err)) != 0)
            abort();
    }
    config_free(&c);

    char *s = malloc(size + 1);
    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    validate_key("key", s, err, sizeof(err));
    validate_owner("owner", s, err, sizeof(err));
    validate_token("token", s, err, sizeof(err));
    free(s);
    return 0;
}
