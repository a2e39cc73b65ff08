#!/bin/sh
# Entrypoint of the alertmanager service. Alertmanager reads no environment
# variables, so this renders alertmanager.yml with the receivers' URLs from
# .env, then runs Alertmanager on the result. A line "<indent>#@NAME <yaml>"
# becomes "<indent><yaml>", with every ${NAME} in it replaced, when NAME is set
# and not empty; otherwise it stays a comment, and that receiver sends nothing.
set -eu

# The paths and the binary are variables only so that the tests can run this script outside the image.
template=${ALERTMANAGER_TEMPLATE:-/etc/alertmanager/alertmanager.yml}
rendered=${ALERTMANAGER_RENDERED:-/tmp/alertmanager.yml}
binary=${ALERTMANAGER_BINARY:-/bin/alertmanager}

# A value lands inside a double-quoted YAML string: refuse what would break out of it.
for name in $(sed -n 's/^[[:space:]]*#@\([A-Z][A-Z0-9_]*\) .*/\1/p' "$template" | sort -u); do
  eval "value=\${$name:-}"
  case "$value" in
    '') ;;
    *[[:space:]\"\\]*)
      echo "entrypoint: $name must be a URL without spaces, quotes or backslashes" >&2
      exit 1
      ;;
    http://* | https://*) ;;
    *)
      echo "entrypoint: $name must start with http:// or https://" >&2
      exit 1
      ;;
  esac
done

# The receivers' URLs may carry tokens: the rendered file is its owner's alone, even when it was there before.
umask 077
rm -f "$rendered"
awk '
  match($0, /^[ ]*#@[A-Z][A-Z0-9_]* /) {
    indent = $0
    sub(/#@.*/, "", indent)
    name = substr($0, length(indent) + 3)
    sub(/ .*/, "", name)
    if (ENVIRON[name] != "") {
      rest = substr($0, RLENGTH + 1)
      token = "${" name "}"
      out = ""
      while ((at = index(rest, token)) > 0) {
        out = out substr(rest, 1, at - 1) ENVIRON[name]
        rest = substr(rest, at + length(token))
      }
      print indent out rest
      next
    }
  }
  { print }
' "$template" > "$rendered"

exec "$binary" --config.file="$rendered" "$@"
