/* Unit tests for server/common/log_format.c: text and JSON log lines from
 * plain values (no clock, no I/O). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "log.h"

static const struct timespec T = {.tv_sec = 1796320800, .tv_nsec = 123456789}; /* 2026-12-03T18:00:00.123Z */

static void test_json_line(void **state)
{
    log_field f[] = {LOG_STR("key", "gpu:1"), LOG_STR("owner", "ocr \"7\"\n\x01"), LOG_INT("fencing", 42),
                     LOG_INT("wait_ms", -3)};
    char *s = log_format_line(LOG_FORMAT_JSON, &T, LOG_LEVEL_WARN, "held \\ long", f, 4);
    assert_string_equal(
        s, "{\"time\":\"2026-12-03T18:00:00.123Z\",\"level\":\"warn\",\"message\":\"held \\\\ long\","
           "\"key\":\"gpu:1\",\"owner\":\"ocr \\\"7\\\"\\n\\u0001\",\"fencing\":42,\"wait_ms\":-3}");
    free(s);
    s = log_format_line(LOG_FORMAT_JSON, &T, LOG_LEVEL_DEBUG, "x", NULL, 0);
    assert_string_equal(s, "{\"time\":\"2026-12-03T18:00:00.123Z\",\"level\":\"debug\",\"message\":\"x\"}");
    free(s);
}

static void test_text_line(void **state)
{
    log_field f[] = {LOG_STR("key", "gpu:1"), LOG_STR("owner", "ocr 7"), LOG_STR("empty", ""),
                     LOG_INT("fencing", 7)};
    char *s = log_format_line(LOG_FORMAT_TEXT, &T, LOG_LEVEL_INFO, "lock granted", f, 4);
    assert_string_equal(
        s, "2026-12-03T18:00:00.123Z batond INFO lock granted key=gpu:1 owner=\"ocr 7\" empty=\"\" "
           "fencing=7");
    free(s);
    s = log_format_line(LOG_FORMAT_TEXT, &T, LOG_LEVEL_ERROR, "plain", NULL, 0);
    assert_string_equal(s, "2026-12-03T18:00:00.123Z batond ERROR plain");
    free(s);
}

static void test_parse(void **state)
{
    assert_int_equal(log_format_parse("text"), LOG_FORMAT_TEXT);
    assert_int_equal(log_format_parse("json"), LOG_FORMAT_JSON);
    assert_int_equal(log_format_parse("JSON"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_line),
        cmocka_unit_test(test_text_line),
        cmocka_unit_test(test_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
