#!/usr/bin/env bash
# Benchmark `crpe agent` against CNCF distribution 2.8 (Debian `docker-registry`)
# serving the same image in the same run, on loopback only.
#
# usage: bench/registry.sh [path-to-crpe-binary]
#
#   With no argument, crpe is built as it ships (the Dockerfile's flags):
#   `CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" ./cmd/crpe`.
#   BENCH_ONLY_DISTRIBUTION=1  skip crpe entirely (validates the harness).
#   BENCH_BLOB_MIB=200         size of the random layer blob.
#   BENCH_RUNS=3               repetitions per measurement (median reported).
#   BENCH_MAX_SECONDS=300      hard wall-clock cap for the whole script.
#
# Each server's memory, peak total RSS (VmHWM, the kernel's high-water mark)
# and peak RssAnon (heap + stacks), comes from its /proc status sampled every
# 5 ms (`imagefix sample`, bench/imagefix) from its restart after the push
# until the last measurement.
#
# The floor of serving the blob (issue 16): moving the same bytes over
# loopback from a plain sendfile server, `imagefix serve` of the blob file,
# to the same number of concurrent clients: the BLOB_N (8) parallel downloads
# against 8 concurrent `curl -o /dev/null` (lib.sh floor_pulls), measured in
# every run after the servers' downloads. The download rows are reported
# against it as well as against distribution.
#
# Everything binds to 127.0.0.1, every step is time-bounded, and an EXIT trap
# stops the servers and removes the temp dir. Typical run time: well under 3 min.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ONLY_DIST="${BENCH_ONLY_DISTRIBUTION:-0}"
BLOB_MIB="${BENCH_BLOB_MIB:-200}"
RUNS="${BENCH_RUNS:-3}"
BLOB_N=8
MAN_N=2000
MAN_C=32
REPO_NAME="bench/blob"

DIST_PID="" CRPE_PID="" SAMPLERS=""
on_exit() { local p; for p in $FLOOR_CURLS $SAMPLERS $CRPE_PID $DIST_PID $FLOOR_PID; do stop_pid "$p"; done; }
bench_init crpe-bench 300

require_x "$DIST_BIN" "apt-get install -y docker-registry"
require_cmd curl go
note_load

json_field() { # json key -> value (flat JSON lines from loadgen)
  sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p" <<<"$1" | tr -d '"'
}

# ------------------------------------------------------------------ build ---

build_fix loadgen 1.22
LOADGEN="$TMP/loadgen"
build_fix imagefix

CRPE_BIN=""
if [ "$ONLY_DIST" != "1" ]; then
  CRPE_BUILD_HINT="set BENCH_ONLY_DISTRIBUTION=1 to bench distribution alone"
  build_crpe "$@"
  crpe_has_flags agent --addr --data --token-file --allow-push
fi

# ---------------------------------------------------------------- content ---

log "generating ${BLOB_MIB} MiB random blob"
BLOB="$TMP/layer.bin"
head -c "$(( BLOB_MIB * 1024 * 1024 ))" /dev/urandom >"$BLOB"
BLOB_SIZE=$(stat -c %s "$BLOB")
BLOB_DIGEST="sha256:$(sha256sum "$BLOB" | cut -d' ' -f1)"
floor_start "$BLOB"

CONFIG="$TMP/config.json"
printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["%s"]}}' \
  "$BLOB_DIGEST" >"$CONFIG"
CONFIG_SIZE=$(stat -c %s "$CONFIG")
CONFIG_DIGEST="sha256:$(sha256sum "$CONFIG" | cut -d' ' -f1)"

MANIFEST="$TMP/manifest.json"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}' \
  "$CONFIG_DIGEST" "$CONFIG_SIZE" "$BLOB_DIGEST" "$BLOB_SIZE" >"$MANIFEST"
MANIFEST_DIGEST="sha256:$(sha256sum "$MANIFEST" | cut -d' ' -f1)"

# ----------------------------------------------------------------- push -----

# push_blob BASE FILE DIGEST [curl auth args...]: POST to open an upload, then
# monolithic PUT ?digest= with the whole body (streamed by curl -T).
push_blob() {
  local base=$1 file=$2 digest=$3; shift 3
  local hdrs loc code
  hdrs="$(curl -sS --max-time 30 "$@" -X POST -o /dev/null -D - \
    "$base/v2/$REPO_NAME/blobs/uploads/")" || return 1
  code="$(awk 'NR==1{print $2}' <<<"$hdrs")"
  [ "$code" = 202 ] || { log "POST upload: HTTP $code"; return 1; }
  loc="$(awk 'tolower($1)=="location:"{print $2}' <<<"$hdrs" | tr -d '\r' | tail -n1)"
  [ -n "$loc" ] || { log "POST upload: no Location"; return 1; }
  case "$loc" in http://*|https://*) ;; *) loc="$base$loc" ;; esac
  case "$loc" in *\?*) loc="$loc&digest=$digest" ;; *) loc="$loc?digest=$digest" ;; esac
  code="$(curl -sS --max-time 120 "$@" -X PUT -T "$file" -o "$TMP/put.out" -w '%{http_code}' \
    -H 'Content-Type: application/octet-stream' "$loc")" || return 1
  [ "$code" = 201 ] || { log "PUT blob: HTTP $code: $(head -c 300 "$TMP/put.out")"; return 1; }
}

# push_image BASE [curl auth args...]: layer + config + OCI manifest as :latest
push_image() {
  local base=$1; shift
  push_blob "$base" "$BLOB" "$BLOB_DIGEST" "$@" || return 1
  push_blob "$base" "$CONFIG" "$CONFIG_DIGEST" "$@" || return 1
  local hdrs code dig
  hdrs="$(curl -sS --max-time 30 "$@" -X PUT -D - -o "$TMP/put.out" \
    -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary @"$MANIFEST" "$base/v2/$REPO_NAME/manifests/latest")" || return 1
  code="$(awk 'NR==1{print $2}' <<<"$hdrs")"
  [ "$code" = 201 ] || { log "PUT manifest: HTTP $code: $(head -c 300 "$TMP/put.out")"; return 1; }
  dig="$(awk 'tolower($1)=="docker-content-digest:"{print $2}' <<<"$hdrs" | tr -d '\r')"
  [ -z "$dig" ] || [ "$dig" = "$MANIFEST_DIGEST" ] || { log "manifest digest $dig != $MANIFEST_DIGEST"; return 1; }
}

# verify BASE: anonymous reads return the same bytes/digests
verify_image() {
  local base=$1 got
  got="$(curl -fsS --max-time 10 -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "$base/v2/$REPO_NAME/manifests/latest" | sha256sum | cut -d' ' -f1)" || return 1
  [ "sha256:$got" = "$MANIFEST_DIGEST" ] || { log "manifest mismatch at $base"; return 1; }
  got="$(curl -fsS --max-time 60 "$base/v2/$REPO_NAME/blobs/$BLOB_DIGEST" | sha256sum | cut -d' ' -f1)" || return 1
  [ "sha256:$got" = "$BLOB_DIGEST" ] || { log "blob mismatch at $base"; return 1; }
}

# ---------------------------------------------------------------- servers ---

if [ "$ONLY_DIST" != "1" ]; then
  CRPE_PORT=$(free_port)
  CRPE_URL="http://$HOST:$CRPE_PORT"
  TOKEN="$(rand_hex 24)"
  printf '%s\n' "$TOKEN" >"$TMP/token"
  chmod 600 "$TMP/token"
  mkdir -p "$TMP/crpe-data"
fi
start_crpe() {
  "$CRPE_BIN" agent --addr "$HOST:$CRPE_PORT" --data "$TMP/crpe-data" \
    --token-file "$TMP/token" --allow-push >>"$TMP/crpe.log" 2>&1 &
  CRPE_PID=$!
  wait_http "$CRPE_URL/healthz" 20 || { tail -20 "$TMP/crpe.log" >&2; die "crpe did not start"; }
}

dist_start "$TMP/dist-data"
log "started distribution on $DIST_URL"
log "pushing image to distribution"
push_image "$DIST_URL" || die "push to distribution failed"
if [ "$ONLY_DIST" != "1" ]; then
  log "starting crpe on $CRPE_URL"
  start_crpe
  log "pushing image to crpe"
  push_image "$CRPE_URL" -u "x:$TOKEN" || { tail -20 "$TMP/crpe.log" >&2; die "push to crpe failed"; }
fi

# Restart both so peak RSS / CPU reflect serving only, not the 200 MiB push.
log "restarting servers (measure serving only)"
stop_pid "$DIST_PID"; dist_start "$TMP/dist-data" "$DIST_PORT"
[ "$ONLY_DIST" = "1" ] || { stop_pid "$CRPE_PID"; start_crpe; }

declare -A SAMPLER
sample_start "$DIST_PID" "$TMP/dist-mem.json"; SAMPLER[dist]=$SAMPLER_PID; SAMPLERS+=" $SAMPLER_PID"
if [ "$ONLY_DIST" != "1" ]; then
  sample_start "$CRPE_PID" "$TMP/crpe-mem.json"; SAMPLER[crpe]=$SAMPLER_PID; SAMPLERS+=" $SAMPLER_PID"
fi

verify_image "$DIST_URL" || die "distribution verify failed"
[ "$ONLY_DIST" = "1" ] || verify_image "$CRPE_URL" || die "crpe verify failed"

# ---------------------------------------------------------------- measure ---

SERVERS=(dist)
[ "$ONLY_DIST" = "1" ] || SERVERS=(crpe dist)
url_of() { if [ "$1" = crpe ]; then echo "$CRPE_URL"; else echo "$DIST_URL"; fi; }
pid_of() { if [ "$1" = crpe ]; then echo "$CRPE_PID"; else echo "$DIST_PID"; fi; }

declare -A BW WALL CPU RPS P50 P99

# warm-up (not recorded): page cache, connection pools, caches
for s in "${SERVERS[@]}"; do
  "$LOADGEN" manifests -url "$(url_of "$s")/v2/$REPO_NAME/manifests/latest" -n 200 -c "$MAN_C" -timeout 30s >/dev/null \
    || die "$s warm-up failed"
done

for r in $(seq 1 "$RUNS"); do
  for s in "${SERVERS[@]}"; do
    pid=$(pid_of "$s")
    t0=$(cpu_ticks "$pid")
    out="$("$LOADGEN" blobs -url "$(url_of "$s")/v2/$REPO_NAME/blobs/$BLOB_DIGEST" -n "$BLOB_N" -timeout 120s)" \
      || die "$s blobs run $r failed: $out"
    t1=$(cpu_ticks "$pid")
    [ "$(json_field "$out" bytes)" = "$(( BLOB_SIZE * BLOB_N ))" ] || die "$s blobs: wrong byte count: $out"
    BW[$s]+=" $(json_field "$out" mib_per_s)"
    WALL[$s]+=" $(json_field "$out" seconds)"
    CPU[$s]+=" $(awk -v a="$t0" -v b="$t1" -v h="$CLK_TCK" 'BEGIN{printf "%.3f", (b-a)/h}')"
    log "run $r $s blobs: $(json_field "$out" mib_per_s) MiB/s, $(json_field "$out" seconds) s, cpu $(awk -v a="$t0" -v b="$t1" -v h="$CLK_TCK" 'BEGIN{printf "%.2f", (b-a)/h}') s"
  done
  floor_pulls "$BLOB_N" "$BLOB_SIZE"
  FLOOR[pulls.bw]+=" $(mibps "$(( BLOB_SIZE * BLOB_N ))" "${FLOOR[pulls]##* }")"
  log "run $r floor: ${BLOB_N} concurrent curls from imagefix serve: ${FLOOR[pulls]##* } s, ${FLOOR[pulls.bw]##* } MiB/s"
  for s in "${SERVERS[@]}"; do
    out="$("$LOADGEN" manifests -url "$(url_of "$s")/v2/$REPO_NAME/manifests/latest" -n "$MAN_N" -c "$MAN_C" -timeout 60s)" \
      || die "$s manifests run $r failed: $out"
    RPS[$s]+=" $(json_field "$out" req_per_s)"
    P50[$s]+=" $(json_field "$out" p50_ms)"
    P99[$s]+=" $(json_field "$out" p99_ms)"
    log "run $r $s manifests: $(json_field "$out" req_per_s) req/s, p50 $(json_field "$out" p50_ms) ms, p99 $(json_field "$out" p99_ms) ms"
  done
done

for s in "${SERVERS[@]}"; do sample_stop "${SAMPLER[$s]}"; done
SAMPLERS=""

declare -A M
for s in "${SERVERS[@]}"; do
  # shellcheck disable=SC2086
  { M[$s.bw]=$(median ${BW[$s]}); M[$s.wall]=$(median ${WALL[$s]}); M[$s.cpu]=$(median ${CPU[$s]})
    M[$s.rps]=$(median ${RPS[$s]}); M[$s.p50]=$(median ${P50[$s]}); M[$s.p99]=$(median ${P99[$s]}); }
  M[$s.rss]=$(jmib "$TMP/$s-mem.json" peak_rss_kib); M[$s.anon]=$(jmib "$TMP/$s-mem.json" rss_anon_kib)
  log "$s: peak RSS ${M[$s.rss]} MiB, peak RssAnon ${M[$s.anon]} MiB"
done
for k in bw wall cpu rps p50 p99 rss anon; do M[crpe.$k]=${M[crpe.$k]:-}; done
# shellcheck disable=SC2086
{ M[floor.bw]=$(median ${FLOOR[pulls.bw]}); M[floor.wall]=$(floor_of pulls); }

# ------------------------------------------------------------------ report --

val() { if [ -z "$1" ]; then echo "n/a"; else fmt "$1" "$2"; fi; }
echo
echo "<!-- bench/registry.sh, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load ${LOAD0} → $(cut -d' ' -f1 /proc/loadavg), $(uname -r), $("$DIST_BIN" --version 2>/dev/null | awk '{print $NF}') -->"
echo "Same image on both (${BLOB_MIB} MiB random layer + config + OCI manifest), loopback 127.0.0.1, median of ${RUNS} interleaved runs."
echo
echo "| metric | crpe | distribution 2.8 | crpe / distribution | goal | met |"
echo "|---|---:|---:|---:|---|:-:|"
echo "| blob download, ${BLOB_N}× ${BLOB_MIB} MiB parallel (MiB/s) | $(val "${M[crpe.bw]}" 1) | $(val "${M[dist.bw]}" 1) | $(ratio "${M[crpe.bw]}" "${M[dist.bw]}") | ≥ 1.0× | $(verdict 'r>=1.0' "${M[crpe.bw]}" "${M[dist.bw]}") |"
echo "| blob download wall time (s) | $(val "${M[crpe.wall]}" 2) | $(val "${M[dist.wall]}" 2) | $(ratio "${M[crpe.wall]}" "${M[dist.wall]}") | | |"
echo "| server CPU time during downloads (s) | $(val "${M[crpe.cpu]}" 2) | $(val "${M[dist.cpu]}" 2) | $(ratio "${M[crpe.cpu]}" "${M[dist.cpu]}") | ≤ 0.5× | $(verdict 'r<=0.5' "${M[crpe.cpu]}" "${M[dist.cpu]}") |"
echo "| manifest GET, ${MAN_N} @ c=${MAN_C} (req/s) | $(val "${M[crpe.rps]}" 0) | $(val "${M[dist.rps]}" 0) | $(ratio "${M[crpe.rps]}" "${M[dist.rps]}") | ≥ 1.0× | $(verdict 'r>=1.0' "${M[crpe.rps]}" "${M[dist.rps]}") |"
echo "| manifest GET p50 / p99 (ms) | $(val "${M[crpe.p50]}" 2) / $(val "${M[crpe.p99]}" 2) | $(val "${M[dist.p50]}" 2) / $(val "${M[dist.p99]}" 2) | $(ratio "${M[crpe.p50]}" "${M[dist.p50]}") / $(ratio "${M[crpe.p99]}" "${M[dist.p99]}") | | |"
echo "| server peak total RSS, VmHWM (MiB) | $(val "${M[crpe.rss]}" 1) | $(val "${M[dist.rss]}" 1) | $(ratio "${M[crpe.rss]}" "${M[dist.rss]}") | crpe ≤ 40 MiB | $(verdict 'v<=40' "${M[crpe.rss]}" 1) |"
echo "| server peak RssAnon, heap + stacks (MiB) | $(val "${M[crpe.anon]}" 1) | $(val "${M[dist.anon]}" 1) | $(ratio "${M[crpe.anon]}" "${M[dist.anon]}") | (info) | |"
echo
echo "| blob serving — vs the loopback floor: the same ${BLOB_N} downloads as ${BLOB_N} concurrent \`curl\`s from a sendfile server (\`imagefix serve\`) | crpe | floor | crpe / floor | goal | met |"
echo "|---|---:|---:|---:|---|:-:|"
echo "| blob download, ${BLOB_N}× ${BLOB_MIB} MiB parallel (MiB/s) — vs the loopback floor | $(val "${M[crpe.bw]}" 1) | $(val "${M[floor.bw]}" 1) | $(ratio "${M[crpe.bw]}" "${M[floor.bw]}") | (info) | |"
echo "| blob download wall time (s) — vs the loopback floor | $(val "${M[crpe.wall]}" 2) | $(val "${M[floor.wall]}" 2) | $(ratio "${M[crpe.wall]}" "${M[floor.wall]}") | (info) | |"
echo
echo "Floors (s, median of the runs, measured in the same runs): loopback, ${BLOB_N} concurrent \`curl -o /dev/null\` of the ${BLOB_MIB} MiB blob from \`imagefix serve\` (net/http, sendfile) $(val "${M[floor.wall]}" 3) ($(val "${M[floor.bw]}" 1) MiB/s; distribution / floor $(ratio "${M[dist.bw]}" "${M[floor.bw]}") in MiB/s). Every run: crpe${WALL[crpe]:-}; distribution${WALL[dist]}; floor${FLOOR[pulls]}. The floor's time includes starting the ${BLOB_N} curl processes (a few ms); loadgen's figures do not include its own start."
echo
echo "Goals: downloads ≥ 1.0× distribution's throughput using ≤ 0.5× its server CPU time; manifest GETs ≥ 1.0× its rate; crpe peak RSS ≤ 40 MiB (servers restarted after the push, so RSS and CPU cover serving only). Memory: VmHWM, and RssAnon sampled every 5 ms from the restart on; the rest of the RSS is file-backed pages (mostly the mapped binary), which move with the page cache."
