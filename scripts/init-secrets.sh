#!/bin/sh
# Creates .env for a first `docker compose up`: copies .env.example and fills
# every empty secret in it (a line "NAME=" with nothing after it) with a random
# value. Values already set are kept, so running it again changes nothing and
# a secret added to .env.example later gets filled in.
#
#   scripts/init-secrets.sh [ENV_FILE]     (default: .env beside compose.yaml)
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
for name in $(sed -n 's/^\([A-Z][A-Z0-9_]*\)=$/\1/p' "$target"); do
  value=$(random)
  sed "s/^$name=\$/$name=$value/" "$target" > "$target.tmp"
  mv "$target.tmp" "$target"
  filled="$filled $name"
done
chmod 600 "$target"

if [ "$created" = 1 ]; then
  echo "created $target with random secrets:$filled"
elif [ -n "$filled" ]; then
  echo "filled in $target:$filled"
else
  echo "$target already has every secret; nothing changed"
fi
