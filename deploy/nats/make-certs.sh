#!/bin/sh
# Makes the NATS TLS files for docker compose: a private CA (tls/ca/ca.crt, which the services trust) and the
# server's certificate and key signed by it (tls/server/), valid for the names the services connect to.
#   deploy/nats/make-certs.sh [output dir, default deploy/nats/tls] [extra DNS names...]
# Run it once before `docker compose up`; run it again (and restart nats) before the certificate expires
# (825 days). The CA key stays in tls/ca-key/ (keep it offline; it is not mounted anywhere). git ignores tls/.
set -eu
out="${1:-$(dirname "$0")/tls}"
[ $# -gt 0 ] && shift
names="DNS:nats,DNS:localhost,IP:127.0.0.1"
for extra in "$@"; do names="$names,DNS:$extra"; done
mkdir -p "$out/ca" "$out/ca-key" "$out/server"
umask 077
if [ ! -f "$out/ca-key/ca.key" ]; then
  openssl req -x509 -newkey rsa:3072 -nodes -days 3650 -subj "/CN=Touchpoint NATS CA" \
    -keyout "$out/ca-key/ca.key" -out "$out/ca/ca.crt" 2>/dev/null
fi
openssl req -newkey rsa:3072 -nodes -subj "/CN=nats" -keyout "$out/server/server.key" \
  -out "$out/server/server.csr" 2>/dev/null
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$names" > "$out/server/ext.cnf"
openssl x509 -req -in "$out/server/server.csr" -CA "$out/ca/ca.crt" -CAkey "$out/ca-key/ca.key" \
  -CAcreateserial -CAserial "$out/ca-key/ca.srl" -days 825 -sha256 -extfile "$out/server/ext.cnf" -out "$out/server/server.crt" 2>/dev/null
rm -f "$out/server/server.csr" "$out/server/ext.cnf"
# Certificates are public; the server key stays readable by its owner only (the nats container runs as root).
chmod 644 "$out/ca/ca.crt" "$out/server/server.crt"
echo "NATS TLS files in $out (CA certificate: $out/ca/ca.crt)"
