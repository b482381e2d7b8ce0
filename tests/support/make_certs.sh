#!/usr/bin/env bash
# Test certificates, made fresh for each run (no private key is committed):
#   make_certs.sh DIR [PREFIX]
# DIR/PREFIXca.pem            a CA;  PREFIXserver.{pem,key}: its server certificate for
#                             localhost / 127.0.0.1 / ::1;  PREFIXclient.{pem,key}: its client certificate
# DIR/PREFIXother-ca.pem      an unrelated CA and PREFIXother-client.{pem,key} signed by it
# PREFIX (default empty) lets a test make a second set (a new server certificate to reload).
set -euo pipefail
dir=$1
p=${2:-}
mkdir -p "$dir"
cd "$dir"
ossl() { openssl "$@" 2>/dev/null; }
ca() { # name
    ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=baton test $1" -keyout "$p$1.key" -out "$p$1.pem"
}
leaf() { # name ca ext
    ossl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=baton $1" \
        -keyout "$p$1.key" -out "$p$1.csr"
    printf '%s\n' "$3" >"$p$1.ext"
    ossl x509 -req -in "$p$1.csr" -CA "$p$2.pem" -CAkey "$p$2.key" -CAcreateserial -days 2 \
        -extfile "$p$1.ext" -out "$p$1.pem"
    rm -f "$p$1.csr" "$p$1.ext"
}
ca ca
ca other-ca
leaf server ca "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
extendedKeyUsage=serverAuth"
leaf client ca "extendedKeyUsage=clientAuth"
leaf other-client other-ca "extendedKeyUsage=clientAuth"
rm -f ./*.srl
