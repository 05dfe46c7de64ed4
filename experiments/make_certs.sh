#!/usr/bin/env bash
# Certificates for TLS on the parties' links (mp mode): a CA and one party certificate signed
# by it, valid for the given hosts (default 127.0.0.1 and localhost).
#   bash experiments/make_certs.sh OUT_DIR [HOST ...]
# Writes OUT_DIR/ca.pem, OUT_DIR/party.pem, OUT_DIR/party.key (the CA key is deleted).
# Use: make_backend(..., mode="mp", tls={"cert": "OUT_DIR/party.pem",
#                                        "key": "OUT_DIR/party.key", "ca": "OUT_DIR/ca.pem"})
set -euo pipefail
out=${1:?usage: make_certs.sh OUT_DIR [HOST ...]}
shift
hosts=("${@:-127.0.0.1}")
[ $# -eq 0 ] && hosts=(127.0.0.1 localhost)
mkdir -p "$out"
san=""
for h in "${hosts[@]}"; do
  if [[ $h =~ ^[0-9.]+$ ]]; then san+="IP:$h,"; else san+="DNS:$h,"; fi
done
san=${san%,}
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=secfwt-ca" \
  -keyout "$out/ca.key" -out "$out/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=secfwt-party" \
  -keyout "$out/party.key" -out "$out/party.csr" 2>/dev/null
printf "subjectAltName=%s\n" "$san" > "$out/ext.cnf"
openssl x509 -req -in "$out/party.csr" -CA "$out/ca.pem" -CAkey "$out/ca.key" \
  -CAcreateserial -days 30 -extfile "$out/ext.cnf" -out "$out/party.pem" 2>/dev/null
rm -f "$out/ca.key" "$out/party.csr" "$out/ext.cnf" "$out/ca.srl"
echo "wrote $out/ca.pem $out/party.pem $out/party.key"
