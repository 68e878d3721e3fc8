#!/usr/bin/env bash
# Benchmark what checking signatures costs an import (issue 15): the same
# archive, every image signed with cosign, imported into a fresh `crpe agent`
# with and without --verify-key, and into a local data folder with and
# without it, in the same run, interleaved, on loopback only.
#
# usage: bench/signatures.sh [path-to-crpe-binary]
#
#   With no argument, crpe is built as it ships (the Dockerfile's flags).
#   BENCH_RUNS=5            repetitions per measurement (median reported)
#   BENCH_ARCHIVE_MIB=256   MiB of random gzip layers (3 images; 256 MiB ≈ the
#                           "~270 MB fixture" of issues 14 and 15)
#   BENCH_MAX_SECONDS=400   hard wall-clock cap for the whole script
#   COSIGN=…                cosign's binary (default $(go env GOPATH)/bin/cosign,
#                           installed by test/run.sh: go install
#                           github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5)
#
# The archive: bench/import.sh's fixture (library/{a,b,c}:1, linux/amd64 OCI
# images of 3–5 random gzip layers each, pushed into a docker-registry the
# script starts), each image signed by digest with `cosign sign --key
# --tlog-upload=false` (a key pair cosign makes), then `crpe export
# --platform linux/amd64`, which carries the signatures (sha256-<hex>.sig).
#
# Measures, interleaved (the order rotates each run), `sync` before every
# timed step, fresh data folders every time:
#   agent         crpe import FILE --to AGENT --full, agent without --verify-key
#   agent-verify  the same, the agent started with --verify-key cosign.pub
#   local         crpe import FILE --data DIR
#   local-verify  crpe import FILE --data DIR --verify-key cosign.pub
# Goal: verification adds ≤ 10% to the import (wall time).
# After the four, every run also measures the machine's floors for the
# archive (lib.sh floors, issue 16), and each import is reported against
# bench/import.sh's floor: the slower of hashing the archive and writing it
# durably (every byte must be hashed and written durably).
#
# Everything binds to 127.0.0.1, every step is time-bounded, and an EXIT trap
# stops the servers and removes the temp dir. Typical run time: ~1–2 min.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS="${BENCH_RUNS:-5}"
ARCHIVE_MIB="${BENCH_ARCHIVE_MIB:-256}"
COSIGN="${COSIGN:-$(go env GOPATH 2>/dev/null)/bin/cosign}"
PLATFORM=linux/amd64
IMAGES=(a b c)

DIST_PID="" AGENT_PID=""
on_exit() {
  local p
  for p in $AGENT_PID $DIST_PID $FLOOR_PID; do stop_pid "$p"; done
}
bench_init crpe-bench-signatures 400

require_x "$DIST_BIN" "apt-get install -y docker-registry"
require_x "$COSIGN" "go install github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5"
require_cmd curl go openssl
note_load

build_fix imagefix
build_crpe "$@"
crpe_has_flags import --to --token --full --data --json --verify-key
crpe_has_flags agent --addr --data --token-file --verify-key

# ---------------------------------------------------------------- archive ---

# cosign, offline: its own HOME, no TUF, no proxy off the machine
export COSIGN_PASSWORD=bench
cosign() {
  HOME="$TMP/cosign-home" DOCKER_CONFIG="$TMP/cosign-home/.docker" TUF_ROOT="$TMP/cosign-home/tuf" \
    TUF_MIRROR=http://127.0.0.1:9 SIGSTORE_NO_CACHE=1 HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY='' \
    timeout 60 "$COSIGN" "$@"
}
mkdir -p "$TMP/cosign-home/.docker"

# fixture_archive, the images signed between the push and the export
fixture_before_export() {
  (cd "$TMP" && cosign generate-key-pair >/dev/null 2>"$TMP/cosign.err") || { cat "$TMP/cosign.err" >&2; die "cosign generate-key-pair failed"; }
  local i d accept='application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json'
  for i in "${IMAGES[@]}"; do
    d=$(curl -sSI --max-time 5 -H "Accept: $accept" "$DIST_URL/v2/library/$i/manifests/1" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}')
    [ -n "$d" ] || die "no digest for library/$i:1"
    cosign sign --key "$TMP/cosign.key" --tlog-upload=false --yes --allow-http-registry --allow-insecure-registry \
      "${DIST_URL#http://}/library/$i@$d" >/dev/null 2>>"$TMP/cosign.err" || { tail -20 "$TMP/cosign.err" >&2; die "cosign sign library/$i failed"; }
  done
  log "signed library/{a,b,c}:1 with cosign"
}
fixture_archive "$ARCHIVE_MIB"
NSIG=$(grep -c '"kind": "signature"' "$TMP/export.json" || true)
[ "$NSIG" = "${#IMAGES[@]}" ] || die "the archive carries $NSIG signatures, want ${#IMAGES[@]}"
ARCHIVE_BYTES=$(stat -c %s "$ARCHIVE")
cat "$ARCHIVE" >/dev/null # in the page cache
log "archive: $(mib "$ARCHIVE_BYTES") MiB, $NSIG signatures carried"
floor_start "$ARCHIVE"

TOKEN="$(rand_hex 24)"
printf '%s\n' "$TOKEN" >"$TMP/token"; chmod 600 "$TMP/token"

# ---------------------------------------------------------------- measure ---

declare -A WALL CPU
run_agent() { # r verify(0|1)
  local r=$1 v=$2 key=agent dir="$TMP/agent-$1-$2" port url t0 t1 w c0 c1 args=()
  [ "$v" = 1 ] && { key=agent-verify; args=(--verify-key "$TMP/cosign.pub"); }
  mkdir -p "$dir"
  port=$(free_port); url="http://$HOST:$port"
  "$CRPE_BIN" agent --addr "$HOST:$port" --data "$dir/data" --token-file "$TMP/token" --log-format json "${args[@]}" \
    >"$dir/agent.log" 2>&1 &
  AGENT_PID=$!
  wait_http "$url/healthz" 20 || { tail -20 "$dir/agent.log" >&2; die "crpe agent did not start"; }
  settle
  c0=$(cpu_ticks "$AGENT_PID")
  t0=$(now)
  timeout 120 "$CRPE_BIN" import "$ARCHIVE" --to "$url" --token "$TOKEN" --full --json >"$dir/out.json" 2>"$dir/err" \
    || { tail -20 "$dir/err" "$dir/agent.log" >&2; die "crpe import --to ($key) run $r failed"; }
  t1=$(now)
  c1=$(cpu_ticks "$AGENT_PID")
  if [ "$v" = 1 ]; then
    [ "$(grep -c '"verified": true' "$dir/out.json")" = "${#IMAGES[@]}" ] || die "run $r: not every image verified: $(head -c 800 "$dir/out.json")"
  fi
  stop_pid "$AGENT_PID"; AGENT_PID=""
  w=$(elapsed "$t0" "$t1"); WALL[$key]+=" $w"
  CPU[$key]+=" $(awk -v a="$c0" -v b="$c1" -v h="$CLK_TCK" 'BEGIN{printf "%.2f", (b-a)/h}')"
  log "run $r crpe import --to $key: $w s, $(mibps "$ARCHIVE_BYTES" "$w") MiB/s"
  rm -rf "$dir"
}

run_local() { # r verify(0|1)
  local r=$1 v=$2 key=local dir="$TMP/local-$1-$2" t0 t1 w args=()
  [ "$v" = 1 ] && { key=local-verify; args=(--verify-key "$TMP/cosign.pub"); }
  mkdir -p "$dir"
  settle
  t0=$(now)
  timeout 120 "$CRPE_BIN" import "$ARCHIVE" --data "$dir/data" --json "${args[@]}" >"$dir/out.json" 2>"$dir/err" \
    || { tail -20 "$dir/err" >&2; die "crpe import --data ($key) run $r failed"; }
  t1=$(now)
  w=$(elapsed "$t0" "$t1"); WALL[$key]+=" $w"
  log "run $r crpe import --data $key: $w s, $(mibps "$ARCHIVE_BYTES" "$w") MiB/s"
  rm -rf "$dir"
}

for r in $(seq 1 "$RUNS"); do
  if (( r % 2 )); then
    run_agent "$r" 0; run_agent "$r" 1; run_local "$r" 1; run_local "$r" 0
  else
    run_agent "$r" 1; run_agent "$r" 0; run_local "$r" 0; run_local "$r" 1
  fi
  floors "$r" "$TMP/floor" "$ARCHIVE"
done

# ------------------------------------------------------------------ report --

declare -A M
for k in agent agent-verify local local-verify; do
  # shellcheck disable=SC2086
  M[$k]=$(median ${WALL[$k]})
done
# shellcheck disable=SC2086
{ C_A=$(median ${CPU[agent]}); C_V=$(median ${CPU[agent-verify]}); }
echo
echo "<!-- bench/signatures.sh, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load ${LOAD0} → $(cut -d' ' -f1 /proc/loadavg), $(uname -r), cosign $("$COSIGN" version 2>/dev/null | awk '/GitVersion/{print $2}') -->"
echo "One archive made by \`crpe export --platform ${PLATFORM}\` of library/{a,b,c}:1 (bench/import.sh's fixture), each image signed by \`cosign sign --key --tlog-upload=false\`: $(mib "$ARCHIVE_BYTES") MiB, the ${#IMAGES[@]} signatures carried with the images. Loopback 127.0.0.1, median of ${RUNS} interleaved runs, \`sync\` before every timed step, fresh data folders every time."
echo
echo "| import, wall time (s) | without signature check | with \`--verify-key\` | with / without | goal | met |"
echo "|---|---:|---:|---:|---|:-:|"
echo "| \`crpe import --to\` a fresh \`crpe agent\` (\`--full\`) | $(fmt "${M[agent]}" 3) | $(fmt "${M[agent-verify]}" 3) | $(ratio "${M[agent-verify]}" "${M[agent]}") | ≤ 1.10× | $(verdict 'r<=1.10' "${M[agent-verify]}" "${M[agent]}") |"
echo "| \`crpe import --data\` (local) | $(fmt "${M[local]}" 3) | $(fmt "${M[local-verify]}" 3) | $(ratio "${M[local-verify]}" "${M[local]}") | ≤ 1.10× | $(verdict 'r<=1.10' "${M[local-verify]}" "${M[local]}") |"
echo "| agent CPU time of one import (s) | $(fmt "$C_A" 2) | $(fmt "$C_V" 2) | $(ratio "$C_V" "$C_A") | (info) | |"
echo
F_IMPORT=$(floor_import)
echo "| import, wall time (s) — vs the floor: the slower of hashing the archive (\`openssl dgst -sha256\`) and writing it durably (\`cp\` + \`sync -f\`) | crpe | floor | crpe / floor | goal | met |"
echo "|---|---:|---:|---:|---|:-:|"
for k in agent agent-verify local local-verify; do
  case $k in
    agent) what="\`crpe import --to\` a fresh \`crpe agent\` (\`--full\`), without signature check" ;;
    agent-verify) what="\`crpe import --to\` a fresh \`crpe agent\` (\`--full\`), agent with \`--verify-key\`" ;;
    local) what="\`crpe import --data\` (local), without signature check" ;;
    local-verify) what="\`crpe import --data --verify-key\` (local)" ;;
  esac
  echo "| $what | $(fmt "${M[$k]}" 3) | $(fmt "$F_IMPORT" 3) | $(ratio "${M[$k]}" "$F_IMPORT") | ≤ 2.0× (issue 16) | $(verdict 'r<=2.0' "${M[$k]}" "$F_IMPORT") |"
done
echo
echo "Floors (s, median of the runs, measured in the same runs): hash (\`openssl dgst -sha256\`) $(fmt "$(floor_of hash)" 3), durable write (\`cp\` then \`sync -f\`) $(fmt "$(floor_of write)" 3), read back (\`cat\`, page cache) $(fmt "$(floor_of read)" 3), loopback (\`curl\` from a sendfile server) $(fmt "$(floor_of net)" 3). Every run: hash${FLOOR[hash]}; write${FLOOR[write]}."
echo
echo "Wall times (s), every run: agent${WALL[agent]}; agent --verify-key${WALL[agent-verify]}; local${WALL[local]}; local --verify-key${WALL[local-verify]}."
echo
echo "Reproduce: \`bash bench/signatures.sh\` (or \`bash bench/signatures.sh path/to/crpe\`; BENCH_RUNS, BENCH_ARCHIVE_MIB tune it)."
