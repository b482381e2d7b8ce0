/*
 * baton-health-probe [--timeout DURATION_MS] [--service NAME] [TARGET]
 *
 * One grpc.health.v1.Health/Check call (the standard health protocol that
 * batond serves). Exit status: 0 SERVING, 1 NOT_SERVING or any other answer,
 * 2 usage, 3 the call failed (unreachable, deadline, NOT_FOUND...). TARGET
 * defaults to $BATON_TARGET, else 127.0.0.1:50051; the timeout to 2000 ms.
 * The status and the reason go to stdout / stderr in one line each.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.grpc-c.h"
#include "grpc_c.h"

static int usage(void)
{
    fprintf(stderr, "usage: baton-health-probe [--timeout MS] [--service NAME] [TARGET]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *target = getenv("BATON_TARGET");
    const char *service = "";
    long timeout_ms = 2000;
    int i;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
            char *end;
            timeout_ms = strtol(argv[++i], &end, 10);
            if (*end != '\0' || timeout_ms <= 0 || timeout_ms > 600000)
                return usage();
        } else if (strcmp(argv[i], "--service") == 0 && i + 1 < argc) {
            service = argv[++i];
        } else if (argv[i][0] == '-' || i + 1 != argc) {
            return usage();
        } else {
            target = argv[i];
        }
    }
    if (target == NULL || target[0] == '\0')
        target = "127.0.0.1:50051";

    grpc_channel *ch = grpc_c_channel_create_insecure(target, NULL);
    if (ch == NULL) {
        fprintf(stderr, "baton-health-probe: cannot create a channel to %s\n", target);
        return 3;
    }
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)service;
    Grpc__Health__V1__HealthCheckResponse *resp = NULL;
    grpc_c_status st = {0};
    grpc_c_call_options opts = {.timeout_ms = timeout_ms};
    int code = grpc__health__v1__health__grpc__check(ch, &req, &resp, &st, &opts);
    int rc;
    if (code != GRPC_C_CODE_OK) {
        fprintf(stderr, "baton-health-probe: %s: %s: %s\n", target, grpc_c_code_name(code),
                st.message ? st.message : "");
        rc = 3;
    } else {
        int serving = resp->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
        printf("%s\n", serving ? "SERVING" : resp->status == 2 ? "NOT_SERVING" : "UNKNOWN");
        rc = serving ? 0 : 1;
    }
    if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    grpc_c_status_clear(&st);
    grpc_c_channel_destroy(ch);
    return rc;
}
