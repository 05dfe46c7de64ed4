#!/usr/bin/env bash
# Certificates for TLS on the parties' links (mp mode) and on the party servers' control
# channel (protocol.cluster). Two forms:
#
#   bash experiments/make_certs.sh OUT_DIR [HOST ...]
#       a CA and ONE party certificate valid for all the given hosts (default 127.0.0.1 and
#       localhost): OUT_DIR/ca.pem, party.pem, party.key. Every host holds the same key (fine
#       on one machine; on several, any host could pose as another).
#   bash experiments/make_certs.sh --per-host OUT_DIR HOST0 HOST1 ...
#       a CA, one certificate per party rank r valid for HOSTr only (OUT_DIR/party<r>.pem,
#       party<r>.key) and one for the data owner / model owner (OUT_DIR/owner.pem, owner.key).
#       Copy ca.pem and party<r>.* to host r only; keep owner.* on the data owner's machine.
#
# The CA key is deleted: to add a host, make a new set. Use with make_backend(..., mode="mp",
# tls={"cert": ..., "key": ..., "ca": ...}) or in a cluster file (secfwt_jax/party_cluster.py).
set -euo pipefail
per_host=0
if [ "${1:-}" = "--per-host" ]; then per_host=1; shift; fi
out=${1:?usage: make_certs.sh [--per-host] OUT_DIR [HOST ...]}
shift
hosts=("$@")
if [ $# -eq 0 ]; then
  [ $per_host -eq 1 ] && { echo "--per-host needs the hosts in rank order" >&2; exit 2; }
  hosts=(127.0.0.1 localhost)
fi
mkdir -p "$out"
san_of() {
  local san="" h
  for h in "$@"; do
    if [[ $h =~ ^[0-9.]+$ || $h == *:* ]]; then san+="IP:$h,"; else san+="DNS:$h,"; fi
  done
  echo "${san%,}"
}
# sign NAME CN SAN: OUT_DIR/NAME.pem and NAME.key signed by the CA
sign() {
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$2" \
    -keyout "$out/$1.key" -out "$out/$1.csr" 2>/dev/null
  printf "subjectAltName=%s\n" "$3" > "$out/$1.cnf"
  openssl x509 -req -in "$out/$1.csr" -CA "$out/ca.pem" -CAkey "$out/ca.key" \
    -CAcreateserial -days 30 -extfile "$out/$1.cnf" -out "$out/$1.pem" 2>/dev/null
  rm -f "$out/$1.csr" "$out/$1.cnf"
}
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=secfwt-ca" \
  -keyout "$out/ca.key" -out "$out/ca.pem" 2>/dev/null
if [ $per_host -eq 1 ]; then
  for r in "${!hosts[@]}"; do sign "party$r" "secfwt-party$r" "$(san_of "${hosts[$r]}")"; done
  sign owner secfwt-owner "DNS:secfwt-owner"
  written="$out/ca.pem, party0..$(( ${#hosts[@]} - 1 )).pem/.key, owner.pem/.key"
else
  sign party secfwt-party "$(san_of "${hosts[@]}")"
  written="$out/ca.pem $out/party.pem $out/party.key"
fi
rm -f "$out/ca.key" "$out/ca.srl"
echo "wrote $written"
