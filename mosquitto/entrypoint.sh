#!/bin/sh
# Entrypoint of the mosquitto service: builds the password file from the
# environment at every start, then runs the broker. Passwords live only in
# .env; each user named in the ACL needs MQTT_<USER>_PASSWORD (upper case,
# '-' as '_') or the broker does not start.
set -eu

# The directories and the broker are variables only so that the tests can run this script outside the image.
config=${MOSQUITTO_CONFIG_DIR:-/mosquitto/config}
run=${MOSQUITTO_RUN_DIR:-/mosquitto/run}
broker=${MOSQUITTO_BINARY:-/usr/sbin/mosquitto}
umask 077
mkdir -p "$run"
cp "$config/acl" "$run/acl"
: > "$run/passwd"

for user in $(sed -n 's/^[[:space:]]*user[[:space:]][[:space:]]*\([^[:space:]]*\).*/\1/p' "$config/acl"); do
  case "$user" in
    *[!a-z0-9_-]*) echo "entrypoint: user name '$user' in the ACL: use a-z, 0-9, '_' or '-'" >&2; exit 1 ;;
  esac
  var="MQTT_$(printf '%s' "$user" | tr 'a-z-' 'A-Z_')_PASSWORD"
  eval "password=\${$var:-}"
  if [ -z "$password" ]; then
    echo "entrypoint: $var is not set, so user '$user' would have no password; run scripts/init-secrets.sh" >&2
    exit 1
  fi
  mosquitto_passwd -b "$run/passwd" "$user" "$password"
done

# Mosquitto reads these after dropping to its own user, and writes its log file in /mosquitto/log
# (the image makes it); the exporter, run as the same user, reads that file and empties it once long.
chown -R mosquitto:mosquitto "$run" /mosquitto/data /mosquitto/log
exec "$broker" -c "$config/mosquitto.conf"
