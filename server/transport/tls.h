#ifndef BATON_TLS_H
#define BATON_TLS_H

/*
 * TLS credentials of batond's listening port (`tls:` section). The files are
 * read at start and again on tls_server_reload (SIGHUP): the new certificate,
 * key and client CA are checked (PEM parses, the key matches the
 * certificate) and handed to gRPC through its certificate config fetcher, so
 * new handshakes use them and open connections are left alone. A reload that
 * fails keeps the previous files in use.
 *
 * gRPC calls the fetcher from its own threads (at each handshake); a mutex
 * guards the pending config. The tls_server must outlive the gRPC server the
 * credentials were given to.
 */

#include <stddef.h>

#include "config_security.h"

struct grpc_server_credentials;
typedef struct tls_server tls_server;

/* NULL with "tls.cert_file: ..." (the key that is wrong) in err. */
tls_server *tls_server_new(const config_tls *cfg, char *err, size_t errlen);
/* New server credentials using the fetcher (caller releases them). */
struct grpc_server_credentials *tls_server_credentials(tls_server *t);
/* Re-reads the files; 0, or -1 with the reason in err (old files stay). */
int tls_server_reload(tls_server *t, char *err, size_t errlen);
void tls_server_free(tls_server *t);

#endif
