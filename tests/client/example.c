/* The README's tiny libbaton example: hold "video:123" while working on it.
 * Built by test_install.sh against an installed libbaton (pkg-config and
 * find_package). Usage: example [TARGET]  (default $BATON_TARGET, else
 * 127.0.0.1:50051). */
#include <baton/baton.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    const char *target = argc > 1 ? argv[1] : getenv("BATON_TARGET");
    baton_client *c;
    baton_lock *l;
    if (baton_client_new(target ? target : "127.0.0.1:50051", NULL, &c) != 0)
        return 1;
    baton_acquire_options o = {.wait_ms = 30000, .mode = BATON_MODE_STREAM};
    int err = baton_acquire(c, "video:123", &o, &l);
    if (err == 0) {
        printf("holding %s, fencing %" PRIu64 "\n", baton_lock_key(l), baton_lock_fencing(l));
        baton_lock_free(l); /* releases */
    } else {
        fprintf(stderr, "%s: %s\n", baton_strerror(err), baton_last_error());
    }
    baton_client_free(c);
    return err == 0 ? 0 : 1;
}
