#!/usr/bin/env bash
# Contract check of a running Metis API with schemathesis (pinned in requirements.txt).
#
#   scripts/schemathesis/run.sh http://127.0.0.1:8080 [extra schemathesis args...]
#
# METIS_TOKEN          bearer token sent on every request (optional)
# METIS_WORKFLOW_URL   script the created runs execute (default: fixtures/workflows/ok.sh)
# METIS_ST_SEED        seed (default 1); METIS_ST_EXAMPLES: examples per operation (default 150)
# METIS_ST_REPORT_DIR  where the JUnit/JSON reports and the VCR cassette of every request go
# METIS_SCHEMA         schema location (default $1/openapi.json; a file to try a patched spec)
# Exits non-zero on any failure (schemathesis' own exit code).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
base=${1:?usage: run.sh API_BASE_URL [schemathesis args...]}
base=${base%/}
shift
export METIS_WORKFLOW_URL=${METIS_WORKFLOW_URL:-$repo/fixtures/workflows/ok.sh}
report_dir=${METIS_ST_REPORT_DIR:-$repo/target/schemathesis}

args=(
  --checks all                                  # every built-in check
  --phases examples,coverage,fuzzing,stateful   # all four phases
  --max-examples "${METIS_ST_EXAMPLES:-150}"    # bounds the run: 30-90 s on 2 cores today
  --seed "${METIS_ST_SEED:-1}"                  # reproducible: same seed, same requests
  --generation-database none                    # no replay of earlier local failures
  --workers 1                                   # deterministic order; CPython 3.11.7's ast races with >1
  --wait-for-schema 30 --request-timeout 10
  --report junit,json,vcr --report-dir "$report_dir"
)
if [[ -n ${METIS_TOKEN:-} ]]; then
  args+=(-H "Authorization: Bearer $METIS_TOKEN")
fi

# `timeout` is a backstop only: the bounds above end the run well before it.
exec timeout 600 schemathesis --no-color --config-file "$here/schemathesis.toml" \
  run "${METIS_SCHEMA:-$base/openapi.json}" --url "$base" "${args[@]}" "$@"
