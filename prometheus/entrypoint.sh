#!/bin/sh
# Entrypoint of the prometheus service. The rules in prometheus/rules/ link
# each alert to its runbook as docs/runbooks.md#<alert>, a path inside the
# repository (what their promtool tests expect), which is a dead link in
# Alertmanager, Grafana or a pager. This copies them to the directory
# prometheus.yml loads, with that path replaced by EVENTPIPE_RUNBOOK_URL (.env),
# then runs Prometheus. `eventpipe up` fills its copy the same way (src/eventpipe/stack/runbook.py).
set -eu

# The paths and the binary are variables only so that the tests can run this script outside the image.
source=${PROMETHEUS_RULES_SOURCE:-/etc/prometheus/rules}
rendered=${PROMETHEUS_RULES:-/tmp/rules}
binary=${PROMETHEUS_BINARY:-/bin/prometheus}
url=${EVENTPIPE_RUNBOOK_URL:-}

# The URL lands in YAML, in a sed replacement and in Go templates (the rules' annotations): refuse what would
# break any of them ("{{" made Prometheus load no rule at all). src/eventpipe/config.py refuses the same.
case "$url" in
  '')
    echo "entrypoint: EVENTPIPE_RUNBOOK_URL is empty: set it in .env to where docs/runbooks.md opens in a browser" >&2
    exit 1
    ;;
  *[[:space:]\"\'\\\#\|\&{}]*)
    echo "entrypoint: EVENTPIPE_RUNBOOK_URL must be a URL without '#', spaces, quotes, backslashes, '|', '&', '{' or '}'" >&2
    exit 1
    ;;
  http://* | https://* | file://*) ;;
  *)
    echo "entrypoint: EVENTPIPE_RUNBOOK_URL must start with http://, https:// or file://" >&2
    exit 1
    ;;
esac

mkdir -p "$rendered"
rm -f "$rendered"/*.yml
for rules in "$source"/*.yml; do
  [ -e "$rules" ] || continue
  sed "s|^\([[:space:]]*runbook_url:[[:space:]]*\)docs/runbooks\.md#|\1$url#|" "$rules" > "$rendered/${rules##*/}"
done

exec "$binary" "$@"
