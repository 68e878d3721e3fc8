#!/usr/bin/env bash
# Benchmark `crpe import` (into a `crpe agent`, and into a local data folder)
# against the floor (`sha256sum` of the archive: every byte must be hashed)
# and against `skopeo copy oci-archive:… docker://…` of the same images into
# Debian's docker-registry, with the same archive in the same run, on
# loopback only.
#
# usage: bench/import.sh [path-to-crpe-binary]
#
#   With no argument, crpe is built with `CGO_ENABLED=0 go build ./cmd/crpe`.
#   BENCH_RUNS=3            repetitions per measurement (median reported)
#   BENCH_ARCHIVE_MIB=400   MiB of random gzip layers in the archive (3 images)
#   BENCH_MAX_SECONDS=300   hard wall-clock cap for the whole script
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
#              and the agent's peak RSS (VmHWM of its /proc status, read
#              after the import: the kernel's own high-water mark)
#   local      crpe import FILE --data DIR                     (MiB/s)
#   skopeo     skopeo copy oci-archive:FILE:REF docker://127.0.0.1:P2/REPO
#              for each of the 3 images into a fresh docker-registry
#              (total wall time; --insecure-policy, --tmpdir in the run's
#              temp dir)
#   reference  openssl dgst -sha256 FILE (SHA-NI where the CPU has it;
#              coreutils 9.1's sha256sum does not use it)
#
# Everything binds to 127.0.0.1, every step is time-bounded, and an EXIT trap
# stops the servers and removes the temp dir. Typical run time: ~1–2 min.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${BENCH_RUNS:-3}"
ARCHIVE_MIB="${BENCH_ARCHIVE_MIB:-400}"
DIST_BIN="${DIST_BIN:-/usr/bin/docker-registry}"
SKOPEO="${SKOPEO:-/usr/bin/skopeo}"
HOST=127.0.0.1
PLATFORM=linux/amd64
IMAGES=(a b c)

# Never talk to anything but loopback, and never through a proxy.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY='*' no_proxy='*'
# Don't let stray REGISTRY_* / CRPE_* env vars change the servers' config.
while IFS= read -r v; do unset "$v"; done < <(env | awk -F= '/^(REGISTRY|CRPE)_/{print $1}')

TMP="$(mktemp -d /tmp/crpe-bench-import.XXXXXX)"
DIST_PID="" AGENT_PID="" WATCHDOG=""
# skopeo (as root) keeps a blob-info cache in /var/lib/containers/cache: note
# what is there now so that only what this run creates is removed.
SKOPEO_CACHE=/var/lib/containers/cache
SKOPEO_CACHE_BEFORE="$(ls -A "$SKOPEO_CACHE" 2>/dev/null | tr '\n' ' ' || true)"
SKOPEO_CACHE_DIR_EXISTED=0; [ -d /var/lib/containers ] && SKOPEO_CACHE_DIR_EXISTED=1

cleanup() {
  local rc=$? p f
  trap - EXIT INT TERM
  for p in $AGENT_PID $DIST_PID $WATCHDOG; do stop_pid "$p"; done
  rm -rf "$TMP"
  if [ "$(id -u)" = 0 ] && [ -d "$SKOPEO_CACHE" ]; then
    for f in "$SKOPEO_CACHE"/blob-info-cache-v1.*; do
      [ -e "$f" ] || continue
      case " $SKOPEO_CACHE_BEFORE " in *" $(basename "$f") "*) ;; *) rm -f "$f" ;; esac
    done
    if [ "$SKOPEO_CACHE_DIR_EXISTED" = 0 ]; then
      rmdir "$SKOPEO_CACHE" /var/lib/containers 2>/dev/null || true
    fi
  fi
  exit $rc
}
stop_pid() { # bounded: TERM, up to 5 s, then KILL; reap
  [ -n "$1" ] || return 0
  kill "$1" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Hard wall-clock cap for the whole script (kills us, which runs the trap).
(
  sleep "${BENCH_MAX_SECONDS:-300}" & sp=$!
  trap 'kill $sp 2>/dev/null; exit 0' TERM
  wait $sp && { log "time limit hit, aborting"; kill -TERM $$ 2>/dev/null; }
) &
WATCHDOG=$!

[ -x "$DIST_BIN" ] || die "$DIST_BIN missing: apt-get install -y docker-registry"
[ -x "$SKOPEO" ] || die "$SKOPEO missing: apt-get install -y skopeo"
[ -x /usr/bin/time ] || die "/usr/bin/time missing: apt-get install -y time"
for c in curl go sha256sum openssl; do command -v "$c" >/dev/null || die "$c missing"; done
LOAD0="$(cut -d' ' -f1 /proc/loadavg)"
awk -v l="$LOAD0" -v n="$(nproc)" 'BEGIN{exit !(l > n)}' \
  && log "WARNING: load average $LOAD0 on $(nproc) CPUs: other work is running, figures will be noisy"

# ---------------------------------------------------------------- helpers ---

USED_PORTS=" "
free_port() { # never one handed out before in this run
  local p i
  for i in $(seq 1 50); do
    p=$(( 20000 + RANDOM % 30000 ))
    case "$USED_PORTS" in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/$HOST/$p") 2>/dev/null; then USED_PORTS+="$p "; echo "$p"; return 0; fi
  done
  die "no free port"
}

wait_http() { # url [seconds]
  local url=$1 t=${2:-20} i
  for i in $(seq 1 $(( t * 10 ))); do
    if curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

now() { echo "$EPOCHREALTIME"; }
# settle: flush dirty pages before a timed step, so that no run pays for the
# writeback left by the previous one (bounded; never fails the run)
settle() { timeout 60 sync || true; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", b-a}'; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
maxof() { printf '%s\n' "$@" | sort -g | tail -n1; }
fmt() { awk -v v="$1" -v d="${2:-1}" 'BEGIN{ printf "%.*f", d, v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a=="" || b=="" || b+0==0) print "n/a"; else printf "%.2f×", a/b }'; }
mib() { awk -v b="$1" 'BEGIN{printf "%.1f", b/1048576}'; }
mibps() { awk -v b="$1" -v s="$2" 'BEGIN{printf "%.1f", b/1048576/s}'; }
vm_hwm_kib() { awk '/^VmHWM:/{print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
CLK_TCK="$(getconf CLK_TCK)"
# rss_of TIMEFILE -> peak RSS in MiB from /usr/bin/time -v
rss_of() { awk -F': *' '/Maximum resident set size/{printf "%.1f", $2/1024}' "$1"; }

# tv TIMEFILE SECONDS cmd...: run under /usr/bin/time -v with a timeout
tv() {
  local tf=$1 t=$2; shift 2
  timeout "$t" /usr/bin/time -v -o "$tf" "$@"
}

# ------------------------------------------------------------------ build ---

log "building importfix (std-lib only, isolated module)"
mkdir -p "$TMP/importfix-src"
cp "$REPO_ROOT/bench/importfix/main.go" "$TMP/importfix-src/"
printf 'module importfix\n\ngo 1.23\n' >"$TMP/importfix-src/go.mod"
( cd "$TMP/importfix-src" && GOWORK=off GOFLAGS= GOTOOLCHAIN=local GOPROXY=off \
    timeout 120 go build -o "$TMP/importfix" . ) || die "importfix build failed"

if [ $# -ge 1 ]; then
  CRPE_BIN="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
else
  log "building crpe (CGO_ENABLED=0 go build ./cmd/crpe)"
  ( cd "$REPO_ROOT" && CGO_ENABLED=0 GOPROXY=off GOFLAGS=-mod=readonly timeout 300 go build -o "$TMP/crpe" ./cmd/crpe ) \
    || die "crpe build failed"
  CRPE_BIN="$TMP/crpe"
fi
[ -x "$CRPE_BIN" ] || die "crpe binary $CRPE_BIN not executable"
help="$("$CRPE_BIN" import --help 2>&1 || true)"
for f in --to --token --full --data --json; do
  grep -q -- "$f" <<<"$help" || die "crpe import --help lacks $f"
done
help="$("$CRPE_BIN" agent --help 2>&1 || true)"
for f in --addr --data --token-file; do
  grep -q -- "$f" <<<"$help" || die "crpe agent --help lacks $f"
done

# ------------------------------------------------------------- registries ---

# start_dist ROOTDIR -> DIST_PID, DIST_URL (a fresh port every time)
start_dist() {
  local root=$1 port; port=$(free_port)
  DIST_URL="http://$HOST:$port"
  mkdir -p "$root"
  cat >"$root.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $root
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
  redirect:
    disable: true
http:
  addr: $HOST:$port
  secret: bench-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
EOF
  "$DIST_BIN" serve "$root.yml" >>"$TMP/dist.log" 2>&1 &
  DIST_PID=$!
  wait_http "$DIST_URL/v2/" 20 || { tail -20 "$TMP/dist.log" >&2; die "docker-registry did not start"; }
}

# ---------------------------------------------------------------- archive ---

start_dist "$TMP/upstream"
log "docker-registry (upstream) on $DIST_URL; pushing library/{a,b,c}:1 (${ARCHIVE_MIB} MiB of random gzip layers)"
PKG="$TMP/pkg.json"
fix="$(timeout 180 "$TMP/importfix" -registry "$DIST_URL" -pkg "$PKG" -tmp "$TMP" -mib "$ARCHIVE_MIB")" \
  || die "fixture push failed"
log "fixtures pushed: $fix"
ARCHIVE="$TMP/bench.kubepkg.tgz"
timeout 180 "$CRPE_BIN" export -f "$PKG" -o "$ARCHIVE" --data "$TMP/export-cache" --platform "$PLATFORM" \
  --registry-endpoint "docker.io=$DIST_URL" --json >"$TMP/export.json" 2>"$TMP/export.err" \
  || { tail -20 "$TMP/export.err" >&2; die "crpe export failed"; }
rm -rf "$TMP/export-cache"
stop_pid "$DIST_PID"; DIST_PID=""; rm -rf "$TMP/upstream"
timeout 120 "$CRPE_BIN" inspect "$ARCHIVE" --verify >"$TMP/inspect.txt" 2>&1 \
  || { tail -20 "$TMP/inspect.txt" >&2; die "crpe inspect --verify refused the archive"; }
ARCHIVE_BYTES=$(stat -c %s "$ARCHIVE")
ARCHIVE_SHA=$(sha256sum "$ARCHIVE" | cut -d' ' -f1) # also puts it in the page cache
NBLOBS=$(awk '$1=="blobs"{print $2}' "$TMP/inspect.txt")
log "archive: $(mib "$ARCHIVE_BYTES") MiB, ${NBLOBS:-?} blobs, sha256 $ARCHIVE_SHA"

TOKEN="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s\n' "$TOKEN" >"$TMP/token"; chmod 600 "$TMP/token"

# ---------------------------------------------------------------- measure ---

declare -A WALL TPUT RSS CPU
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
  local r=$1 dir="$TMP/agent-$1" port url t0 t1 w c0 c1 hwm code sent
  mkdir -p "$dir"
  port=$(free_port); url="http://$HOST:$port"
  "$CRPE_BIN" agent --addr "$HOST:$port" --data "$dir/data" --token-file "$TMP/token" \
    --log-format json >"$dir/agent.log" 2>&1 &
  AGENT_PID=$!
  wait_http "$url/healthz" 20 || { tail -20 "$dir/agent.log" >&2; die "crpe agent did not start"; }
  settle
  c0=$(cpu_ticks "$AGENT_PID")
  t0=$(now)
  tv "$dir/time" 120 "$CRPE_BIN" import "$ARCHIVE" --to "$url" --token "$TOKEN" --full --json \
    >"$dir/out.json" 2>"$dir/err" || { tail -20 "$dir/err" "$dir/agent.log" >&2; die "crpe import --to run $r failed"; }
  t1=$(now)
  c1=$(cpu_ticks "$AGENT_PID")
  hwm=$(awk -v k="$(vm_hwm_kib "$AGENT_PID")" 'BEGIN{printf "%.1f", k/1024}')
  # the agent serves what it imported
  code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$url/v2/library/c/manifests/1?ns=docker.io")
  [ "$code" = 200 ] || die "agent run $r: GET library/c:1 after the import answered $code"
  grep -q "\"blobsReceived\": *${NBLOBS:-[0-9]*}\b" "$dir/out.json" \
    || die "agent run $r: import summary does not show ${NBLOBS:-all} blobs received: $(head -c 600 "$dir/out.json")"
  sent=$(sed -n 's/.*"bytesSent": *\([0-9]*\).*/\1/p' "$dir/out.json")
  stop_pid "$AGENT_PID"; AGENT_PID=""
  w=$(elapsed "$t0" "$t1"); record agent "$w"
  RSS[agent]+=" $hwm"; RSS[client]+=" $(rss_of "$dir/time")"
  CPU[agent]+=" $(awk -v a="$c0" -v b="$c1" -v h="$CLK_TCK" 'BEGIN{printf "%.2f", (b-a)/h}')"
  CPU[client]+=" $(awk -F': *' '/User time|System time/{s+=$2} END{printf "%.2f", s}' "$dir/time")"
  log "run $r crpe import --to agent: $w s, $(mibps "$ARCHIVE_BYTES" "$w") MiB/s, agent VmHWM $hwm MiB, agent CPU $(awk -v a="$c0" -v b="$c1" -v h="$CLK_TCK" 'BEGIN{printf "%.2f", (b-a)/h}') s, client RSS $(rss_of "$dir/time") MiB, $(mib "${sent:-0}") MiB sent"
  rm -rf "$dir"
}

run_local() { # r
  local r=$1 dir="$TMP/local-$1" t0 t1 w
  mkdir -p "$dir"
  settle
  t0=$(now)
  tv "$dir/time" 120 "$CRPE_BIN" import "$ARCHIVE" --data "$dir/data" --json >"$dir/out.json" 2>"$dir/err" \
    || { tail -20 "$dir/err" >&2; die "crpe import --data run $r failed"; }
  t1=$(now)
  grep -q '"blobsReceived"' "$dir/out.json" || die "local run $r: no import summary: $(head -c 600 "$dir/out.json")"
  w=$(elapsed "$t0" "$t1"); record local "$w"
  RSS[local]+=" $(rss_of "$dir/time")"
  log "run $r crpe import --data: $w s, $(mibps "$ARCHIVE_BYTES" "$w") MiB/s, peak RSS $(rss_of "$dir/time") MiB"
  rm -rf "$dir"
}

run_skopeo() { # r
  local r=$1 dir="$TMP/skopeo-$1" t0 t1 w i rs=() up code hwm
  mkdir -p "$dir/tmp"
  start_dist "$dir/registry"
  up=${DIST_URL#http://}
  settle
  t0=$(now)
  for i in "${IMAGES[@]}"; do
    XDG_DATA_HOME="$dir/xdg" tv "$dir/time-$i" 120 "$SKOPEO" --insecure-policy --tmpdir "$dir/tmp" \
      copy -q --dest-tls-verify=false \
      "oci-archive:$ARCHIVE:docker.io/library/$i:1" "docker://$up/library/$i:1" \
      >"$dir/out" 2>"$dir/err" || { tail -20 "$dir/err" >&2; die "skopeo copy $i run $r failed"; }
    rs+=("$(rss_of "$dir/time-$i")")
  done
  t1=$(now)
  hwm=$(awk -v k="$(vm_hwm_kib "$DIST_PID")" 'BEGIN{printf "%.1f", k/1024}')
  for i in "${IMAGES[@]}"; do
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 \
      -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$DIST_URL/v2/library/$i/manifests/1")
    [ "$code" = 200 ] || die "skopeo run $r: GET library/$i:1 from docker-registry answered $code"
  done
  stop_pid "$DIST_PID"; DIST_PID=""
  w=$(elapsed "$t0" "$t1"); record skopeo "$w"
  RSS[skopeo]+=" $(maxof "${rs[@]}")"; RSS[dist]+=" $hwm"
  log "run $r skopeo copy ×${#IMAGES[@]}: $w s, $(mibps "$ARCHIVE_BYTES" "$w") MiB/s of archive, skopeo peak RSS $(maxof "${rs[@]}") MiB, docker-registry VmHWM $hwm MiB"
  rm -rf "$dir"
}

for r in $(seq 1 "$RUNS"); do
  case $(( (r - 1) % 3 )) in
    0) order=(sha agent local skopeo openssl) ;;
    1) order=(agent skopeo openssl sha local) ;;
    2) order=(skopeo openssl local agent sha) ;;
  esac
  for t in "${order[@]}"; do "run_$t" "$r"; done
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
  C_AGENT=$(median ${CPU[agent]}); C_CLIENT=$(median ${CPU[client]})
}
verdict() { # expr over r (ratio) or v (crpe value)
  awk -v a="$2" -v b="$3" "BEGIN{ if (a==\"\" || b==\"\" || b+0==0) { print \"–\"; exit } r=a/b; v=a; print (($1) ? \"✅\" : \"❌\") }"
}
echo
echo "<!-- bench/import.sh, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load ${LOAD0} → $(cut -d' ' -f1 /proc/loadavg), $(uname -r), $(sha256sum --version | head -1), $(openssl version | awk '{print $1, $2}'), docker-registry $("$DIST_BIN" --version 2>/dev/null | awk '{print $NF}'), skopeo $("$SKOPEO" --version | awk '{print $NF}') -->"
echo "One archive made by \`crpe export --platform ${PLATFORM}\`: library/{a,b,c}:1, linux/amd64 OCI images of 3–5 random gzip layers each, $(mib "$ARCHIVE_BYTES") MiB, ${NBLOBS:-?} blobs, in the page cache. Loopback 127.0.0.1, median of ${RUNS} interleaved runs, \`sync\` before every timed step, a fresh agent data folder / local data folder / docker-registry every time. MiB/s are archive bytes over wall time."
echo
echo "| metric | crpe | peer | crpe / peer | goal | met |"
echo "|---|---:|---:|---:|---|:-:|"
echo "| \`crpe import --to\` a fresh \`crpe agent\` (\`--full\`), MiB/s — vs \`sha256sum\` of the archive (the floor) | $(fmt "${M[agent.tput]}" 0) | $(fmt "${M[sha.tput]}" 0) | $(ratio "${M[agent.tput]}" "${M[sha.tput]}") | ≥ 0.70× | $(verdict 'r>=0.70' "${M[agent.tput]}" "${M[sha.tput]}") |"
echo "| \`crpe import --to\` agent, wall time (s) — vs \`skopeo copy oci-archive:… docker://…\` ×${#IMAGES[@]} into docker-registry | $(fmt "${M[agent.wall]}" 2) | $(fmt "${M[skopeo.wall]}" 2) | $(ratio "${M[agent.wall]}" "${M[skopeo.wall]}") | ≤ 0.33× (≥ 3× faster) | $(verdict 'r<=1/3' "${M[agent.wall]}" "${M[skopeo.wall]}") |"
echo "| agent peak RSS during the import, VmHWM (MiB) — vs docker-registry's during the skopeo copies | $(fmt "$R_AGENT" 1) | $(fmt "$R_DIST" 1) | $(ratio "$R_AGENT" "$R_DIST") | crpe ≤ 64 MiB | $(verdict 'v<=64' "$R_AGENT" 1) |"
echo "| \`crpe import --data\` (local, no server), MiB/s — vs \`sha256sum\` | $(fmt "${M[local.tput]}" 0) | $(fmt "${M[sha.tput]}" 0) | $(ratio "${M[local.tput]}" "${M[sha.tput]}") | (info) | |"
echo "| \`crpe import --to\` agent, MiB/s — vs \`openssl dgst -sha256\` (SHA-NI; reference) | $(fmt "${M[agent.tput]}" 0) | $(fmt "${M[openssl.tput]}" 0) | $(ratio "${M[agent.tput]}" "${M[openssl.tput]}") | (info) | |"
echo "| CPU time of one import (s): agent — vs the \`crpe import --to\` client | $(fmt "$C_AGENT" 2) | $(fmt "$C_CLIENT" 2) | $(ratio "$C_AGENT" "$C_CLIENT") | (info) | |"
echo "| peak RSS (MiB): \`crpe import --to\` client / \`crpe import --data\` — vs skopeo (largest of its ${#IMAGES[@]} runs) | $(fmt "$R_CLIENT" 1) / $(fmt "$R_LOCAL" 1) | $(fmt "$R_SKOPEO" 1) | $(ratio "$R_CLIENT" "$R_SKOPEO") / $(ratio "$R_LOCAL" "$R_SKOPEO") | (info) | |"
echo
echo "Wall times (s, median): sha256sum $(fmt "${M[sha.wall]}" 2), openssl $(fmt "${M[openssl.wall]}" 2), crpe import --to $(fmt "${M[agent.wall]}" 2), crpe import --data $(fmt "${M[local.wall]}" 2), skopeo ×${#IMAGES[@]} $(fmt "${M[skopeo.wall]}" 2). The agent's VmHWM is read from /proc after the import (the kernel's high-water mark, start-up included). skopeo unpacks the whole archive into --tmpdir for each image it copies; docker-registry does not fsync, crpe fsyncs every blob and its index."
echo
echo "Reproduce: \`bash bench/import.sh\` (or \`bash bench/import.sh path/to/crpe\`; BENCH_RUNS, BENCH_ARCHIVE_MIB tune it)."
