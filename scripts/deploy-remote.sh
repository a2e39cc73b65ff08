#!/bin/sh
# Runs on the deploy host, in the directory the pipeline copied the stack to
# (compose.yaml and its config). Records which images to run in .env, pulls
# them and (re)starts the stack, returning once every service is healthy.
#
#   scripts/deploy-remote.sh IMAGE_PREFIX IMAGE_TAG [RUNBOOK_URL]
#
# RUNBOOK_URL, where docs/runbooks.md of the deployed commit opens, becomes
# EVENTPIPE_RUNBOOK_URL: the alerts' runbook links (the pipeline passes its page in the repository).
#
# The host's .env and secrets/tls/ hold the secrets and are never overwritten:
# create them once on the host with scripts/init-secrets.sh. The registry login happens before
# this script runs (the pipeline pipes its job token to `docker login`).
set -eu

prefix=${1:?usage: deploy-remote.sh IMAGE_PREFIX IMAGE_TAG}
tag=${2:?usage: deploy-remote.sh IMAGE_PREFIX IMAGE_TAG}
cd "$(dirname "$0")/.."
umask 077

if [ ! -f .env ]; then
  echo "deploy: $(pwd)/.env is missing: run scripts/init-secrets.sh once on this host" >&2
  exit 1
fi
# The TLS certificate, like .env, is made on the host and never copied by the pipeline.
for file in server.pem server-key.pem ca.pem; do
  if [ ! -s "secrets/tls/$file" ]; then
    echo "deploy: $(pwd)/secrets/tls/$file is missing: run scripts/init-secrets.sh on this host" >&2
    exit 1
  fi
done

# Keep the deployed image names in .env, so that plain `docker compose ...`
# commands on this host (logs, ps, restart) refer to the same images.
set_env() {
  grep -v "^$1=" .env > .env.tmp || true
  printf '%s=%s\n' "$1" "$2" >> .env.tmp
  mv .env.tmp .env
}
set_env IMAGE_PREFIX "$prefix"
set_env IMAGE_TAG "$tag"
if [ -n "${3:-}" ]; then
  set_env EVENTPIPE_RUNBOOK_URL "$3"
fi

docker compose pull --quiet
# As many workers as run now: `up` alone scales the service back to one, and
# each replica it removed keeps its broker session, where its share of the
# stream then waits unread until the session expires (README, "Scaling").
workers=$(docker compose ps -a -q ingest-worker | wc -l)
if [ "$workers" -lt 1 ]; then
  workers=1
fi
# Workers stop before migrate runs: a migration may rebuild a table (copy and
# swap), and an insert racing the swap could be missed. Stopping is graceful
# (commit, ack, disconnect); the broker queues new events in their sessions
# meanwhile, and `up` starts them again once migrate has succeeded.
docker compose stop ingest-worker
docker compose up -d --wait --remove-orphans --scale ingest-worker="$workers"
docker compose ps
