#!/usr/bin/env bash
# Benchmark `crpe import` (into a `crpe agent`, and into a local data folder)
# against the floor (`sha256sum` of the archive: every byte must be hashed)
# and against `skopeo copy oci-archive:… docker://…` of the same images into
# Debian's docker-registry, with the same archive in the same run, on
# loopback only.
#
# usage: bench/import.sh [path-to-crpe-binary]
#
#   With no argument, crpe is built as it ships (the Dockerfile's flags):
#   `CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" ./cmd/crpe`.
#   BENCH_RUNS=3            repetitions per measurement (median reported)
#   BENCH_ARCHIVE_MIB=400   MiB of random gzip layers in the archive (3 images)
#   BENCH_MAX_SECONDS=300   hard wall-clock cap for the whole script
#   BENCH_PROFILE=1         keep CPU and allocation profiles of the first run's
#                           agent, client and --data import in bench/profiles/
#                           (crpe's CRPE_CPUPROFILE / CRPE_MEMPROFILE; read them
#                           with go tool pprof -top BINARY FILE)
#
# The archive: library/{a,b,c}:1, linux/amd64 OCI images of 3–5 random gzip
# layers each (BENCH_ARCHIVE_MIB in all), pushed into a docker-registry the
# script starts, then `crpe export --platform linux/amd64 --registry-endpoint
# docker.io=http://127.0.0.1:PORT`. It stays in the page cache for every step
# (the machine has the RAM; a cold disk would slow every tool alike).
#
# Measures, interleaved (the order rotates each run), `sync` before every
# timed step, fresh stores every time:
#   floor      sha256sum FILE                                  (MiB/s)
#   agent      crpe import FILE --to http://127.0.0.1:P --token T --full into
#              a fresh `crpe agent` (fresh --data; started and stopped
#              untimed)                                        (MiB/s, s)
#              and the agent's peak total RSS (VmHWM: the kernel's own
#              high-water mark, start-up included) and peak RssAnon (heap +
#              stacks), its /proc status sampled every 5 ms from when it
#              answers until the import is done (`imagefix sample`)
#   local      crpe import FILE --data DIR                     (MiB/s)
#   skopeo     skopeo copy oci-archive:FILE:REF docker://127.0.0.1:P2/REPO
#              for each of the 3 images into a fresh docker-registry
#              (total wall time; --insecure-policy, --tmpdir in the run's
#              temp dir), and docker-registry's peak total RSS and
#              RssAnon sampled the same way during the copies
#   reference  openssl dgst -sha256 FILE (SHA-NI where the CPU has it;
#              coreutils 9.1's sha256sum does not use it)
#
# The crpe import clients and skopeo run under `imagefix watch` (their peak
# total RSS, peak RssAnon sampled every 5 ms, CPU time).
#
# Everything binds to 127.0.0.1, every step is time-bounded, and an EXIT trap
# stops the servers and removes the temp dir. Typical run time: ~1–2 min.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS="${BENCH_RUNS:-3}"
ARCHIVE_MIB="${BENCH_ARCHIVE_MIB:-400}"
SKOPEO="${SKOPEO:-/usr/bin/skopeo}"
PLATFORM=linux/amd64
IMAGES=(a b c)

DIST_PID="" AGENT_PID="" SAMPLERS=""
on_exit() {
  local p
  for p in $SAMPLERS $AGENT_PID $DIST_PID $FLOOR_PID; do stop_pid "$p"; done
  skopeo_cache_clean
}
bench_init crpe-bench-import 300
skopeo_cache_note

require_x "$DIST_BIN" "apt-get install -y docker-registry"
require_x "$SKOPEO" "apt-get install -y skopeo"
require_cmd curl go sha256sum openssl
note_load

# ------------------------------------------------------------------ build ---

build_fix imagefix
build_crpe "$@"
crpe_has_flags import --to --token --full --data --json
crpe_has_flags agent --addr --data --token-file

# ---------------------------------------------------------------- archive ---

fixture_archive "$ARCHIVE_MIB"
timeout 120 "$CRPE_BIN" inspect "$ARCHIVE" --verify >"$TMP/inspect.txt" 2>&1 \
  || { tail -20 "$TMP/inspect.txt" >&2; die "crpe inspect --verify refused the archive"; }
ARCHIVE_BYTES=$(stat -c %s "$ARCHIVE")
ARCHIVE_SHA=$(sha256sum "$ARCHIVE" | cut -d' ' -f1) # also puts it in the page cache
NBLOBS=$(awk '$1=="blobs"{print $2}' "$TMP/inspect.txt")
log "archive: $(mib "$ARCHIVE_BYTES") MiB, ${NBLOBS:-?} blobs, sha256 $ARCHIVE_SHA"

floor_start "$ARCHIVE"

TOKEN="$(rand_hex 24)"
printf '%s\n' "$TOKEN" >"$TMP/token"; chmod 600 "$TMP/token"

# ---------------------------------------------------------------- measure ---

declare -A WALL TPUT RSS ANON CPU
# prof_env RUN NAME cmd...: runs cmd through env(1) (so that `cmd &` gives
# the command's own pid), with crpe's profiles asked for on the first run
# when BENCH_PROFILE=1 (written to bench/profiles/import-NAME-*.pprof)
PROFILES="$REPO_ROOT/bench/profiles"
prof_env() {
  local r=$1 name=$2 vars=(); shift 2
  if [ "${BENCH_PROFILE:-}" = 1 ] && [ "$r" = 1 ]; then
    mkdir -p "$PROFILES"
    vars=("CRPE_CPUPROFILE=$PROFILES/import-$name-cpu.pprof" "CRPE_MEMPROFILE=$PROFILES/import-$name-allocs.pprof")
  fi
  exec env "${vars[@]}" "$@"
}
record() { # key seconds
  WALL[$1]+=" $2"; TPUT[$1]+=" $(mibps "$ARCHIVE_BYTES" "$2")"
}

run_sha() { # r
  local t0 t1 w got
  settle
  t0=$(now)
  got=$(timeout 60 sha256sum "$ARCHIVE" | cut -d' ' -f1)
  t1=$(now)
  [ "$got" = "$ARCHIVE_SHA" ] || die "sha256sum gave $got"
  w=$(elapsed "$t0" "$t1"); record sha "$w"
  log "run $1 sha256sum: $w s, $(mibps "$ARCHIVE_BYTES" "$w") MiB/s"
}

run_openssl() { # r
  local t0 t1 w got
  settle
  t0=$(now)
  got=$(timeout 60 openssl dgst -sha256 -r "$ARCHIVE" | cut -d' ' -f1)
  t1=$(now)
  [ "$got" = "$ARCHIVE_SHA" ] || die "openssl dgst gave $got"
  w=$(elapsed "$t0" "$t1"); record openssl "$w"
  log "run $1 openssl dgst -sha256: $w s, $(mibps "$ARCHIVE_BYTES" "$w") MiB/s"
}

run_agent() { # r
  local r=$1 dir="$TMP/agent-$1" port url t0 t1 w c0 c1 hwm anon code sent sp
  mkdir -p "$dir"
  port=$(free_port); url="http://$HOST:$port"
  (prof_env "$r" agent \
  "$CRPE_BIN" agent --addr "$HOST:$port" --data "$dir/data" --token-file "$TMP/token" \
    --log-format json) >"$dir/agent.log" 2>&1 &
  AGENT_PID=$!
  wait_http "$url/healthz" 20 || { tail -20 "$dir/agent.log" >&2; die "crpe agent did not start"; }
  sample_start "$AGENT_PID" "$dir/agent-mem.json"; sp=$SAMPLER_PID; SAMPLERS=$sp
  settle
  c0=$(cpu_ticks "$AGENT_PID")
  t0=$(now)
  (prof_env "$r" client timeout 120 "$TMP/imagefix" watch -o "$dir/client-mem.json" -- \
    "$CRPE_BIN" import "$ARCHIVE" --to "$url" --token "$TOKEN" --full --json) \
    >"$dir/out.json" 2>"$dir/err" || { tail -20 "$dir/err" "$dir/agent.log" >&2; die "crpe import --to run $r failed"; }
  t1=$(now)
  c1=$(cpu_ticks "$AGENT_PID")
  sample_stop "$sp"; SAMPLERS=""
  hwm=$(jmib "$dir/agent-mem.json" peak_rss_kib); anon=$(jmib "$dir/agent-mem.json" rss_anon_kib)
  # the agent serves what it imported
  code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$url/v2/library/c/manifests/1?ns=docker.io")
  [ "$code" = 200 ] || die "agent run $r: GET library/c:1 after the import answered $code"
  grep -q "\"blobsReceived\": *${NBLOBS:-[0-9]*}\b" "$dir/out.json" \
    || die "agent run $r: import summary does not show ${NBLOBS:-all} blobs received: $(head -c 600 "$dir/out.json")"
  sent=$(sed -n 's/.*"bytesSent": *\([0-9]*\).*/\1/p' "$dir/out.json")
  stop_pid "$AGENT_PID"; AGENT_PID=""
  w=$(elapsed "$t0" "$t1"); record agent "$w"
  RSS[agent]+=" $hwm"; ANON[agent]+=" $anon"
  RSS[client]+=" $(jmib "$dir/client-mem.json" peak_rss_kib)"; ANON[client]+=" $(jmib "$dir/client-mem.json" rss_anon_kib)"
  CPU[agent]+=" $(awk -v a="$c0" -v b="$c1" -v h="$CLK_TCK" 'BEGIN{printf "%.2f", (b-a)/h}')"
  CPU[client]+=" $(jcpu "$dir/client-mem.json")"
  log "run $r crpe import --to agent: $w s, $(mibps "$ARCHIVE_BYTES" "$w") MiB/s, agent peak RSS $hwm MiB (RssAnon $anon), agent CPU $(awk -v a="$c0" -v b="$c1" -v h="$CLK_TCK" 'BEGIN{printf "%.2f", (b-a)/h}') s, client peak RSS $(jmib "$dir/client-mem.json" peak_rss_kib) MiB (RssAnon $(jmib "$dir/client-mem.json" rss_anon_kib)), $(mib "${sent:-0}") MiB sent"
  rm -rf "$dir"
}

run_local() { # r
  local r=$1 dir="$TMP/local-$1" t0 t1 w
  mkdir -p "$dir"
  settle
  t0=$(now)
  (prof_env "$r" local timeout 120 "$TMP/imagefix" watch -o "$dir/mem.json" -- \
    "$CRPE_BIN" import "$ARCHIVE" --data "$dir/data" --json) >"$dir/out.json" 2>"$dir/err" \
    || { tail -20 "$dir/err" >&2; die "crpe import --data run $r failed"; }
  t1=$(now)
  grep -q '"blobsReceived"' "$dir/out.json" || die "local run $r: no import summary: $(head -c 600 "$dir/out.json")"
  w=$(elapsed "$t0" "$t1"); record local "$w"
  RSS[local]+=" $(jmib "$dir/mem.json" peak_rss_kib)"; ANON[local]+=" $(jmib "$dir/mem.json" rss_anon_kib)"
  log "run $r crpe import --data: $w s, $(mibps "$ARCHIVE_BYTES" "$w") MiB/s, peak RSS $(jmib "$dir/mem.json" peak_rss_kib) MiB (RssAnon $(jmib "$dir/mem.json" rss_anon_kib))"
  rm -rf "$dir"
}

run_skopeo() { # r
  local r=$1 dir="$TMP/skopeo-$1" t0 t1 w i rs=() as=() up code hwm anon sp
  mkdir -p "$dir/tmp"
  dist_start "$dir/registry"
  sample_start "$DIST_PID" "$dir/dist-mem.json"; sp=$SAMPLER_PID; SAMPLERS=$sp
  up=${DIST_URL#http://}
  settle
  t0=$(now)
  for i in "${IMAGES[@]}"; do
    XDG_DATA_HOME="$dir/xdg" tw "$dir/mem-$i.json" 120 "$SKOPEO" --insecure-policy --tmpdir "$dir/tmp" \
      copy -q --dest-tls-verify=false \
      "oci-archive:$ARCHIVE:docker.io/library/$i:1" "docker://$up/library/$i:1" \
      >"$dir/out" 2>"$dir/err" || { tail -20 "$dir/err" >&2; die "skopeo copy $i run $r failed"; }
    rs+=("$(jmib "$dir/mem-$i.json" peak_rss_kib)"); as+=("$(jmib "$dir/mem-$i.json" rss_anon_kib)")
  done
  t1=$(now)
  sample_stop "$sp"; SAMPLERS=""
  hwm=$(jmib "$dir/dist-mem.json" peak_rss_kib); anon=$(jmib "$dir/dist-mem.json" rss_anon_kib)
  for i in "${IMAGES[@]}"; do
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 \
      -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$DIST_URL/v2/library/$i/manifests/1")
    [ "$code" = 200 ] || die "skopeo run $r: GET library/$i:1 from docker-registry answered $code"
  done
  stop_pid "$DIST_PID"; DIST_PID=""
  w=$(elapsed "$t0" "$t1"); record skopeo "$w"
  RSS[skopeo]+=" $(maxof "${rs[@]}")"; ANON[skopeo]+=" $(maxof "${as[@]}")"
  RSS[dist]+=" $hwm"; ANON[dist]+=" $anon"
  log "run $r skopeo copy ×${#IMAGES[@]}: $w s, $(mibps "$ARCHIVE_BYTES" "$w") MiB/s of archive, skopeo peak RSS $(maxof "${rs[@]}") MiB (RssAnon $(maxof "${as[@]}")), docker-registry peak RSS $hwm MiB (RssAnon $anon)"
  rm -rf "$dir"
}

for r in $(seq 1 "$RUNS"); do
  case $(( (r - 1) % 3 )) in
    0) order=(sha agent local skopeo openssl) ;;
    1) order=(agent skopeo openssl sha local) ;;
    2) order=(skopeo openssl local agent sha) ;;
  esac
  for t in "${order[@]}"; do "run_$t" "$r"; done
  floors "$r" "$TMP/floor" "$ARCHIVE"
done

# ------------------------------------------------------------------ report --

declare -A M
for k in sha openssl agent local skopeo; do
  # shellcheck disable=SC2086
  { M[$k.wall]=$(median ${WALL[$k]}); M[$k.tput]=$(median ${TPUT[$k]}); }
done
# shellcheck disable=SC2086
{
  R_AGENT=$(maxof ${RSS[agent]}); R_CLIENT=$(maxof ${RSS[client]}); R_LOCAL=$(maxof ${RSS[local]})
  R_SKOPEO=$(maxof ${RSS[skopeo]}); R_DIST=$(maxof ${RSS[dist]})
  A_AGENT=$(maxof ${ANON[agent]}); A_CLIENT=$(maxof ${ANON[client]}); A_LOCAL=$(maxof ${ANON[local]})
  A_SKOPEO=$(maxof ${ANON[skopeo]}); A_DIST=$(maxof ${ANON[dist]})
  C_AGENT=$(median ${CPU[agent]}); C_CLIENT=$(median ${CPU[client]})
}
echo
echo "<!-- bench/import.sh, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load ${LOAD0} → $(cut -d' ' -f1 /proc/loadavg), $(uname -r), $(sha256sum --version | head -1), $(openssl version | awk '{print $1, $2}'), docker-registry $("$DIST_BIN" --version 2>/dev/null | awk '{print $NF}'), skopeo $("$SKOPEO" --version | awk '{print $NF}') -->"
echo "One archive made by \`crpe export --platform ${PLATFORM}\`: library/{a,b,c}:1, linux/amd64 OCI images of 3–5 random gzip layers each, $(mib "$ARCHIVE_BYTES") MiB, ${NBLOBS:-?} blobs, in the page cache. Loopback 127.0.0.1, median of ${RUNS} interleaved runs, \`sync\` before every timed step, a fresh agent data folder / local data folder / docker-registry every time. MiB/s are archive bytes over wall time."
echo
echo "| metric | crpe | peer | crpe / peer | goal | met |"
echo "|---|---:|---:|---:|---|:-:|"
echo "| \`crpe import --to\` a fresh \`crpe agent\` (\`--full\`), MiB/s — vs \`sha256sum\` of the archive (the floor) | $(fmt "${M[agent.tput]}" 0) | $(fmt "${M[sha.tput]}" 0) | $(ratio "${M[agent.tput]}" "${M[sha.tput]}") | ≥ 0.70× | $(verdict 'r>=0.70' "${M[agent.tput]}" "${M[sha.tput]}") |"
echo "| \`crpe import --to\` agent, wall time (s) — vs \`skopeo copy oci-archive:… docker://…\` ×${#IMAGES[@]} into docker-registry | $(fmt "${M[agent.wall]}" 2) | $(fmt "${M[skopeo.wall]}" 2) | $(ratio "${M[agent.wall]}" "${M[skopeo.wall]}") | ≤ 0.33× (≥ 3× faster) | $(verdict 'r<=1/3' "${M[agent.wall]}" "${M[skopeo.wall]}") |"
echo "| agent peak total RSS, VmHWM (MiB) — vs docker-registry's, the server of the skopeo copies | $(fmt "$R_AGENT" 1) | $(fmt "$R_DIST" 1) | $(ratio "$R_AGENT" "$R_DIST") | crpe ≤ 64 MiB | $(verdict 'v<=64' "$R_AGENT" 1) |"
echo "| agent peak RssAnon, heap + stacks (MiB) — vs docker-registry's | $(fmt "$A_AGENT" 1) | $(fmt "$A_DIST" 1) | $(ratio "$A_AGENT" "$A_DIST") | (info) | |"
echo "| \`crpe import --data\` (local, no server), MiB/s — vs \`sha256sum\` | $(fmt "${M[local.tput]}" 0) | $(fmt "${M[sha.tput]}" 0) | $(ratio "${M[local.tput]}" "${M[sha.tput]}") | (info) | |"
F_IMPORT=$(floor_import)
echo "| \`crpe import --to\` agent, wall time (s) — vs the floor: the slower of hashing the archive (\`openssl dgst -sha256\`) and writing it durably (\`cp\` + \`sync -f\`) | $(fmt "${M[agent.wall]}" 2) | $(fmt "$F_IMPORT" 2) | $(ratio "${M[agent.wall]}" "$F_IMPORT") | ≤ 2.0× (issue 16) | $(verdict 'r<=2.0' "${M[agent.wall]}" "$F_IMPORT") |"
echo "| \`crpe import --data\`, wall time (s) — vs the same floor | $(fmt "${M[local.wall]}" 2) | $(fmt "$F_IMPORT" 2) | $(ratio "${M[local.wall]}" "$F_IMPORT") | ≤ 2.0× (issue 16) | $(verdict 'r<=2.0' "${M[local.wall]}" "$F_IMPORT") |"
echo "| \`crpe import --to\` agent, MiB/s — vs \`openssl dgst -sha256\` (SHA-NI; reference) | $(fmt "${M[agent.tput]}" 0) | $(fmt "${M[openssl.tput]}" 0) | $(ratio "${M[agent.tput]}" "${M[openssl.tput]}") | (info) | |"
echo "| CPU time of one import (s): agent — vs the \`crpe import --to\` client | $(fmt "$C_AGENT" 2) | $(fmt "$C_CLIENT" 2) | $(ratio "$C_AGENT" "$C_CLIENT") | (info) | |"
echo "| peak total RSS (MiB): \`crpe import --to\` client / \`crpe import --data\` — vs skopeo (largest of its ${#IMAGES[@]} runs) | $(fmt "$R_CLIENT" 1) / $(fmt "$R_LOCAL" 1) | $(fmt "$R_SKOPEO" 1) | $(ratio "$R_CLIENT" "$R_SKOPEO") / $(ratio "$R_LOCAL" "$R_SKOPEO") | (info) | |"
echo "| peak RssAnon, heap + stacks (MiB): \`crpe import --to\` client / \`crpe import --data\` — vs skopeo | $(fmt "$A_CLIENT" 1) / $(fmt "$A_LOCAL" 1) | $(fmt "$A_SKOPEO" 1) | $(ratio "$A_CLIENT" "$A_SKOPEO") / $(ratio "$A_LOCAL" "$A_SKOPEO") | (info) | |"
echo
echo "Floors (s, median of the runs, measured in the same runs): hash (\`openssl dgst -sha256\`) $(fmt "$(floor_of hash)" 3), durable write (\`cp\` then \`sync -f\`) $(fmt "$(floor_of write)" 3), read back (\`cat\`, page cache) $(fmt "$(floor_of read)" 3), loopback (\`curl\` from a sendfile server) $(fmt "$(floor_of net)" 3). Every run: crpe import --to${WALL[agent]}; --data${WALL[local]}; hash${FLOOR[hash]}; write${FLOOR[write]}."
echo
echo "Wall times (s, median): sha256sum $(fmt "${M[sha.wall]}" 2), openssl $(fmt "${M[openssl.wall]}" 2), crpe import --to $(fmt "${M[agent.wall]}" 2), crpe import --data $(fmt "${M[local.wall]}" 2), skopeo ×${#IMAGES[@]} $(fmt "${M[skopeo.wall]}" 2). Memory is the largest of the runs: peak total RSS (VmHWM, the kernel's high-water mark; for the servers start-up included) and peak RssAnon (heap + stacks: the program's own, unlike the binary's file-backed pages), each process's /proc status sampled every 5 ms (\`imagefix watch\` / \`imagefix sample\`; the servers from when they answer until the import or the copies are done). skopeo unpacks the whole archive into --tmpdir for each image it copies; docker-registry does not fsync, crpe fsyncs every blob and its index."
echo
echo "Reproduce: \`bash bench/import.sh\` (or \`bash bench/import.sh path/to/crpe\`; BENCH_RUNS, BENCH_ARCHIVE_MIB tune it)."
