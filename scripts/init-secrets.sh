#!/bin/sh
# Creates .env for a first `docker compose up`: copies .env.example and fills
# every empty secret in it (a line "NAME=" with nothing after it) with a random
# value. Values already set are kept, so running it again changes nothing and
# a secret added to .env.example later gets filled in.
#
# Also creates secrets/tls/ beside compose.yaml, for MQTT over TLS and HTTPS: a
# local CA (ca.pem, ca-key.pem) and a server certificate it signed (server.pem,
# server-key.pem) for localhost, 127.0.0.1, mosquitto and api, plus the names in
# TLS_SERVER_NAMES (comma-separated: this host's names or addresses, as
# producers and clients dial it). Files already there are kept: put your own
# server.pem (with its chain), server-key.pem and ca.pem (the CA that issued it)
# there instead. A certificate made here is renewed, by the same CA, when the
# script runs within 30 days of its expiry.
#
#   [TLS_SERVER_NAMES=mqtt.example.com,203.0.113.7] scripts/init-secrets.sh [ENV_FILE]
#   (ENV_FILE defaults to .env beside compose.yaml)
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
target=${1:-$root/.env}
umask 077

if [ ! -f "$target" ]; then
  cp "$root/.env.example" "$target"
  created=1
else
  created=0
  # Secrets .env.example gained since this .env was made: add them, empty.
  for name in $(sed -n 's/^\([A-Z][A-Z0-9_]*\)=$/\1/p' "$root/.env.example"); do
    grep -q "^$name=" "$target" || printf '%s=\n' "$name" >> "$target"
  done
fi

# 32 hex digits (128 bits): safe inside URLs and shell words.
random() {
  od -An -N16 -tx1 /dev/urandom | tr -d ' \n'
}

filled=""
# Not a secret: where the alerts' runbook links point. Unless one is set, this
# checkout's docs/runbooks.md, which a browser on this machine opens.
if grep -q '^EVENTPIPE_RUNBOOK_URL=$' "$target"; then
  case "$root" in
    *[!A-Za-z0-9._/-]*)
      echo "init-secrets: set EVENTPIPE_RUNBOOK_URL in $target yourself ($root would need escaping in a URL)" >&2
      ;;
    *)
      sed "s|^EVENTPIPE_RUNBOOK_URL=\$|EVENTPIPE_RUNBOOK_URL=file://$root/docs/runbooks.md|" "$target" > "$target.tmp"
      mv "$target.tmp" "$target"
      filled="$filled EVENTPIPE_RUNBOOK_URL"
      ;;
  esac
fi
# Every other empty variable is a secret; the runbook URL is not, and random text would stop Prometheus.
for name in $(sed -n 's/^\([A-Z][A-Z0-9_]*\)=$/\1/p' "$target" | grep -v '^EVENTPIPE_RUNBOOK_URL$'); do
  value=$(random)
  sed "s/^$name=\$/$name=$value/" "$target" > "$target.tmp"
  mv "$target.tmp" "$target"
  filled="$filled $name"
done
chmod 600 "$target"

# ---- TLS: secrets/tls/ ----
tls=$root/secrets/tls
made=""
# 825 days: the longest validity Apple's TLS clients accept.
server_days=825
renew_before=$((30 * 24 * 3600))
mkdir -p "$tls"

need_openssl() {
  if ! command -v openssl >/dev/null 2>&1; then
    echo "init-secrets: making $tls needs the openssl command (apt-get install openssl); or put your own certificate there" >&2
    exit 1
  fi
}

if [ -e "$tls/server.pem" ] && [ -e "$tls/server-key.pem" ]; then
  # Made here (the CA key is here too) and expiring: issue a new one below, from the same CA.
  if [ -e "$tls/ca-key.pem" ]; then
    need_openssl
    if ! openssl x509 -in "$tls/server.pem" -noout -checkend "$renew_before" >/dev/null; then
      rm "$tls/server.pem" "$tls/server-key.pem"
      made="a renewed "
    fi
  fi
elif [ -e "$tls/server.pem" ] || [ -e "$tls/server-key.pem" ]; then
  echo "init-secrets: $tls holds only one of server.pem and server-key.pem: supply both, or remove it" >&2
  exit 1
fi

if [ ! -e "$tls/server.pem" ]; then
  need_openssl
  if [ -e "$tls/ca.pem" ] && [ ! -e "$tls/ca-key.pem" ]; then
    echo "init-secrets: $tls/ca.pem has no ca-key.pem to sign with: put server.pem and server-key.pem beside it" >&2
    exit 1
  fi
  names="DNS:localhost,IP:127.0.0.1,DNS:mosquitto,DNS:api"
  for name in $(printf '%s' "${TLS_SERVER_NAMES:-}" | tr ',' ' '); do
    case "$name" in
      *:*) names="$names,IP:$name" ;;           # IPv6
      *[!0-9.]*) names="$names,DNS:$name" ;;
      *) names="$names,IP:$name" ;;             # IPv4
    esac
  done
  # The extensions strict verifiers (Python 3.13, Go) require, as src/eventpipe/stack/certificate.py writes them.
  config=$(mktemp)
  trap 'rm -f "$config" "$config.err"' EXIT
  printf '%s\n' \
    "[req]" "distinguished_name = subject" "[subject]" \
    "[ca]" "basicConstraints = critical, CA:TRUE, pathlen:0" "keyUsage = critical, keyCertSign, cRLSign" \
    "subjectKeyIdentifier = hash" \
    "[server]" "basicConstraints = critical, CA:FALSE" "keyUsage = critical, digitalSignature" \
    "extendedKeyUsage = serverAuth" "subjectKeyIdentifier = hash" "authorityKeyIdentifier = keyid:always" \
    "subjectAltName = $names" > "$config"
  # Keys are born 0600 (umask 077 above); certificates are public.
  if [ ! -e "$tls/ca.pem" ]; then
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tls/ca-key.pem"
    openssl req -new -x509 -key "$tls/ca-key.pem" -subj "/O=eventpipe/CN=eventpipe CA" -config "$config" \
      -extensions ca -days 3650 -sha256 -out "$tls/ca.pem"
    made="a local CA (ca.pem) and a "
  fi
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tls/server-key.pem"
  serial=0x$(od -An -N15 -tx1 /dev/urandom | tr -d ' \n')
  # openssl x509 reports success on stderr too: shown only when it fails.
  if ! openssl req -new -key "$tls/server-key.pem" -subj "/O=eventpipe/CN=localhost" -config "$config" \
    | openssl x509 -req -CA "$tls/ca.pem" -CAkey "$tls/ca-key.pem" -set_serial "$serial" \
      -days "$server_days" -sha256 -extfile "$config" -extensions server -out "$tls/server.pem" 2>"$config.err"; then
    cat "$config.err" >&2
    exit 1
  fi
  chmod 644 "$tls/ca.pem" "$tls/server.pem"
  made="${made:-a }server certificate for $names"
fi

if [ "$created" = 1 ]; then
  echo "created $target with random secrets and the runbooks' address:$filled"
elif [ -n "$filled" ]; then
  echo "filled in $target:$filled"
else
  echo "$target already has every secret; nothing changed"
fi
if [ -n "$made" ]; then
  echo "made in $tls: $made (clients trust ca.pem)"
fi
