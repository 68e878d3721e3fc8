#!/usr/bin/env bash
# Benchmark `crpe import --to-registry` (issue 14) against `skopeo copy` and
# `crane push` of the same images, from the same OCI image layout, into CNCF
# distribution v3, in the same run, on loopback only.
#
# usage: bench/toregistry.sh [path-to-crpe-binary]
#
#   With no argument, crpe is built as it ships (the Dockerfile's flags):
#   `CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" ./cmd/crpe`.
#   BENCH_RUNS=3            repetitions per measurement (median reported)
#   BENCH_ARCHIVE_MIB=256   MiB of random gzip layers in the fixture (3 images;
#                           256 MiB ≈ 270 MB, issue 14's "~270 MB fixture")
#   BENCH_MAX_SECONDS=420   hard wall-clock cap for the whole script
#   BENCH_CRPE_ARGS=""      more flags for crpe import (e.g. --max-spool 0 to compare)
#   REGISTRY3=…             distribution v3's binary (default
#                           $(go env GOPATH)/bin/registry, installed by
#                           test/run.sh: go install
#                           github.com/distribution/distribution/v3/cmd/registry@v3.1.2)
#
# The fixture: bench/import.sh's, made the same way: library/{a,b,c}:1,
# linux/amd64 OCI image manifests of 3–5 random gzip layers each
# (BENCH_ARCHIVE_MIB in all), pushed by bench/imagefix into a docker-registry
# the script starts, then `crpe export --platform linux/amd64` into one
# kubepkg.tgz. A kubepkg.tgz is an OCI image layout: untarred into a folder,
# its index.json lists the 3 images, named by their
# org.opencontainers.image.ref.name annotations. All three tools push the
# same images into the same repositories, 127.0.0.1:P/bench/docker.io/library/{a,b,c}:1:
#
#   crpe    crpe import FILE.kubepkg.tgz --to-registry 127.0.0.1:P/bench --plain-http
#           (one process, the archive read once, every blob verified)
#   skopeo  skopeo copy oci:DIR:docker.io/library/X:1 docker://127.0.0.1:P/bench/docker.io/library/X:1
#           for each image, --dest-tls-verify=false
#   crane   crane push DIR-X 127.0.0.1:P/bench/docker.io/library/X:1 for each image,
#           DIR-X a one-image layout (its own index.json, the blobs folder a
#           symlink to DIR's): crane refuses a multi-image layout without
#           --index
#   crane --index  (info) crane push --index DIR 127.0.0.1:P/bench/all:1:
#           one process, all 3 images as one new index in one repository
#
# Every run: a fresh distribution v3 (fresh filesystem storage, fresh port),
# `sync` first, the order rotating each run. Reported: wall time (median),
# the client's peak total RSS and peak RssAnon (heap + stacks; the largest
# of the runs, and of the 3 processes for skopeo and crane; `imagefix
# watch`, /proc status every 5 ms), its CPU time, the bytes it wrote (the
# client's wchar from /proc/PID/io, summed into the shell that reaps it:
# requests, headers and bodies, on loopback with no TLS = its bytes on the
# wire), and the registry's blob storage afterwards (du of
# docker/registry/v2/blobs: all three must store the same).
#
# After the tools, every run also measures the machine's floors for the
# archive (lib.sh floors: hash, durable write, read back, loopback), and
# crpe's wall time is reported against the slowest of hashing the archive,
# moving it over loopback and writing it durably (see the report for why).
#
# Everything binds to 127.0.0.1, every step is time-bounded, and an EXIT trap
# stops the servers and removes the temp dir. Typical run time: ~1–2 min.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS="${BENCH_RUNS:-3}"
ARCHIVE_MIB="${BENCH_ARCHIVE_MIB:-256}"
SKOPEO="${SKOPEO:-/usr/bin/skopeo}"
CRANE="${CRANE:-$(go env GOPATH 2>/dev/null)/bin/crane}"
REG3="${REGISTRY3:-$(go env GOPATH 2>/dev/null)/bin/registry}"
PLATFORM=linux/amd64
IMAGES=(a b c)
PREFIX=bench

DIST_PID="" REG3_PID=""
on_exit() {
  local p
  for p in $REG3_PID $DIST_PID $FLOOR_PID; do stop_pid "$p"; done
  skopeo_cache_clean
}
bench_init crpe-bench-toregistry 420
skopeo_cache_note

require_x "$DIST_BIN" "apt-get install -y docker-registry (the fixture's upstream)"
require_x "$REG3" "go install github.com/distribution/distribution/v3/cmd/registry@v3.1.2"
require_x "$SKOPEO" "apt-get install -y skopeo"
require_x "$CRANE" "go install github.com/google/go-containerregistry/cmd/crane@latest"
require_cmd curl go tar du openssl
note_load

# ------------------------------------------------------------------ build ---

build_fix imagefix
build_crpe "$@"
crpe_has_flags import --to-registry --plain-http --json
crpe_has_flags export --file --output --data --platform --registry-endpoint --json

# ---------------------------------------------------------------- fixture ---

fixture_archive "$ARCHIVE_MIB"
ARCHIVE_BYTES=$(stat -c %s "$ARCHIVE")

# the same images as an OCI image layout: the archive untarred
LAYOUT="$TMP/layout"
mkdir -p "$LAYOUT"
timeout 120 tar -xzf "$ARCHIVE" -C "$LAYOUT" || die "untarring the archive failed"
if [ ! -s "$LAYOUT/index.json" ] || [ ! -s "$LAYOUT/oci-layout" ]; then die "the archive is not an OCI layout"; fi
BLOB_BYTES=$(du -sb "$LAYOUT/blobs" | cut -f1)
NBLOBS=$(find "$LAYOUT/blobs" -type f | wc -l)
cat "$ARCHIVE" "$LAYOUT"/blobs/sha256/* >/dev/null # in the page cache for every tool
# one-image layouts for crane push (the blobs shared by a symlink)
for i in "${IMAGES[@]}"; do
  d="$TMP/layout-$i"; mkdir -p "$d"
  cp "$LAYOUT/oci-layout" "$d/"; ln -s "$LAYOUT/blobs" "$d/blobs"
  entry=$(tr -d '\n' <"$LAYOUT/index.json" | grep -o "{[^{}]*\"annotations\":{[^{}]*\"org.opencontainers.image.ref.name\":\"docker.io/library/$i:1\"[^{}]*}[^{}]*}") \
    || die "index.json lists no docker.io/library/$i:1: $(head -c 600 "$LAYOUT/index.json")"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s]}\n' "$entry" >"$d/index.json"
done
floor_start "$ARCHIVE"
log "fixture: $(mib "$ARCHIVE_BYTES") MiB archive, $NBLOBS blobs, $(mib "$BLOB_BYTES") MiB of blobs ($(awk -v b="$BLOB_BYTES" 'BEGIN{printf "%.0f", b/1e6}') MB)"

# ----------------------------------------------------- distribution v3 ---

# reg3_start ROOT -> REG3_PID, REG3_ADDR: distribution v3, plain HTTP on
# 127.0.0.1, filesystem storage in ROOT/data (fresh), config in ROOT/config.yml
reg3_start() {
  local root=$1
  REG3_ADDR="$HOST:$(free_port)"
  mkdir -p "$root/data"
  registry_config "$root/data" "$REG3_ADDR" true >"$root/config.yml"
  OTEL_TRACES_EXPORTER=none OTEL_SDK_DISABLED=true "$REG3" serve "$root/config.yml" >>"$TMP/reg3.log" 2>&1 &
  REG3_PID=$!
  wait_http "http://$REG3_ADDR/v2/" 20 || { tail -20 "$TMP/reg3.log" >&2; die "distribution v3 did not start"; }
}

# ---------------------------------------------------------------- measure ---

# wtw JSON IOFILE SECONDS cmd...: tw, then the wchar of everything it reaped
# (the shell's /proc/self/io holds its reaped children's counts) into IOFILE
wtw() {
  local j=$1 io=$2 t=$3; shift 3
  # shellcheck disable=SC2016 # expanded by the inner shell
  TW_IMAGEFIX="$TMP/imagefix" sh -c 'j=$1 io=$2 t=$3; shift 3
    timeout "$t" "$TW_IMAGEFIX" watch -o "$j" -- "$@"; rc=$?
    awk '\''$1=="wchar:"{print $2}'\'' /proc/$$/io >"$io"; exit $rc' sh "$j" "$io" "$t" "$@"
}

declare -A WALL RSS ANON CPU WIRE STORE
check_tags() { # tool run [repo-for-all]
  local i code ref
  for i in "${IMAGES[@]}"; do
    ref="$PREFIX/docker.io/library/$i/manifests/1"
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -I \
      -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REG3_ADDR/v2/$ref")
    [ "$code" = 200 ] || die "$1 run $2: HEAD $ref answered $code"
  done
}

run_tool() { # tool run
  local tool=$1 r=$2 dir="$TMP/$1-$2" t0 t1 w i rs=() as=() cs=() ws=() store
  mkdir -p "$dir/tmp"
  reg3_start "$dir/reg"
  settle
  t0=$(now)
  case $tool in
    crpe)
      # shellcheck disable=SC2086 # BENCH_CRPE_ARGS: flags, split on purpose
      wtw "$dir/mem.json" "$dir/io" 180 "$CRPE_BIN" import "$ARCHIVE" --to-registry "$REG3_ADDR/$PREFIX" --plain-http --json ${BENCH_CRPE_ARGS:-} \
        >"$dir/out.json" 2>"$dir/err" || { tail -20 "$dir/err" >&2; die "crpe import --to-registry run $r failed"; }
      rs+=("$(jmib "$dir/mem.json" peak_rss_kib)"); as+=("$(jmib "$dir/mem.json" rss_anon_kib)")
      cs+=("$(jcpu "$dir/mem.json")"); ws+=("$(cat "$dir/io")")
      ;;
    skopeo)
      for i in "${IMAGES[@]}"; do
        XDG_DATA_HOME="$dir/xdg" wtw "$dir/mem-$i.json" "$dir/io-$i" 180 "$SKOPEO" --insecure-policy --tmpdir "$dir/tmp" \
          copy -q --dest-tls-verify=false \
          "oci:$LAYOUT:docker.io/library/$i:1" "docker://$REG3_ADDR/$PREFIX/docker.io/library/$i:1" \
          >"$dir/out" 2>"$dir/err" || { tail -20 "$dir/err" >&2; die "skopeo copy $i run $r failed"; }
        rs+=("$(jmib "$dir/mem-$i.json" peak_rss_kib)"); as+=("$(jmib "$dir/mem-$i.json" rss_anon_kib)")
        cs+=("$(jcpu "$dir/mem-$i.json")"); ws+=("$(cat "$dir/io-$i")")
      done
      ;;
    crane)
      for i in "${IMAGES[@]}"; do
        wtw "$dir/mem-$i.json" "$dir/io-$i" 180 "$CRANE" push --insecure "$TMP/layout-$i" \
          "$REG3_ADDR/$PREFIX/docker.io/library/$i:1" \
          >"$dir/out" 2>"$dir/err" || { tail -20 "$dir/err" >&2; die "crane push $i run $r failed"; }
        rs+=("$(jmib "$dir/mem-$i.json" peak_rss_kib)"); as+=("$(jmib "$dir/mem-$i.json" rss_anon_kib)")
        cs+=("$(jcpu "$dir/mem-$i.json")"); ws+=("$(cat "$dir/io-$i")")
      done
      ;;
    craneidx)
      wtw "$dir/mem.json" "$dir/io" 180 "$CRANE" push --insecure --index "$LAYOUT" "$REG3_ADDR/$PREFIX/all:1" \
        >"$dir/out" 2>"$dir/err" || { tail -20 "$dir/err" >&2; die "crane push --index run $r failed"; }
      rs+=("$(jmib "$dir/mem.json" peak_rss_kib)"); as+=("$(jmib "$dir/mem.json" rss_anon_kib)")
      cs+=("$(jcpu "$dir/mem.json")"); ws+=("$(cat "$dir/io")")
      ;;
  esac
  t1=$(now)
  if [ "$tool" = craneidx ]; then
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -I \
      -H 'Accept: application/vnd.oci.image.index.v1+json' "http://$REG3_ADDR/v2/$PREFIX/all/manifests/1")
    [ "$code" = 200 ] || die "crane --index run $r: HEAD $PREFIX/all:1 answered $code"
  else
    check_tags "$tool" "$r"
  fi
  store=$(du -sb "$dir/reg/data/docker/registry/v2/blobs" | cut -f1)
  stop_pid "$REG3_PID"; REG3_PID=""
  w=$(elapsed "$t0" "$t1")
  WALL[$tool]+=" $w"; RSS[$tool]+=" $(maxof "${rs[@]}")"; ANON[$tool]+=" $(maxof "${as[@]}")"
  CPU[$tool]+=" $(printf '%s\n' "${cs[@]}" | awk '{s+=$1} END{printf "%.2f", s}')"
  WIRE[$tool]+=" $(printf '%s\n' "${ws[@]}" | awk '{s+=$1} END{printf "%d", s}')"
  STORE[$tool]=$store
  log "run $r $tool: $w s, peak RSS $(maxof "${rs[@]}") MiB (RssAnon $(maxof "${as[@]}")), CPU $(printf '%s\n' "${cs[@]}" | awk '{s+=$1} END{printf "%.2f", s}') s, wrote $(mib "$(printf '%s\n' "${ws[@]}" | awk '{s+=$1} END{printf "%d", s}')") MiB, registry blobs $(mib "$store") MiB, load $(cut -d' ' -f1 /proc/loadavg)"
  rm -rf "$dir"
}

for r in $(seq 1 "$RUNS"); do
  case $(( (r - 1) % 4 )) in
    0) order=(crpe skopeo crane craneidx) ;;
    1) order=(skopeo crane craneidx crpe) ;;
    2) order=(crane craneidx crpe skopeo) ;;
    3) order=(craneidx crpe skopeo crane) ;;
  esac
  for t in "${order[@]}"; do run_tool "$t" "$r"; done
  floors "$r" "$TMP/floor" "$ARCHIVE"
done

# ------------------------------------------------------------------ report --

declare -A M
for k in crpe skopeo crane craneidx; do
  # shellcheck disable=SC2086
  {
    M[$k.wall]=$(median ${WALL[$k]}); M[$k.cpu]=$(median ${CPU[$k]}); M[$k.wire]=$(median ${WIRE[$k]})
    M[$k.rss]=$(maxof ${RSS[$k]}); M[$k.anon]=$(maxof ${ANON[$k]})
  }
done
walls() { echo "${WALL[$1]# }" | tr ' ' '/' | sed 's#/# / #g'; }
echo
echo "<!-- bench/toregistry.sh, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load ${LOAD0} → $(cut -d' ' -f1 /proc/loadavg), $(uname -r), distribution $("$REG3" --version 2>/dev/null | awk '{print $NF}'), skopeo $("$SKOPEO" --version | awk '{print $NF}'), crane $("$CRANE" version 2>/dev/null) -->"
echo "One archive made by \`crpe export --platform ${PLATFORM}\` (bench/import.sh's fixture): library/{a,b,c}:1, linux/amd64 OCI images of 3–5 random gzip layers each, ${NBLOBS} blobs, $(mib "$BLOB_BYTES") MiB of blobs ($(awk -v b="$BLOB_BYTES" 'BEGIN{printf "%.0f", b/1e6}') MB; archive $(mib "$ARCHIVE_BYTES") MiB), and the same archive untarred as an OCI image layout for skopeo and crane; all in the page cache. Each tool pushes the 3 images into a fresh CNCF distribution v3 (plain HTTP, filesystem storage) as bench/docker.io/library/{a,b,c}:1. Loopback 127.0.0.1, median of ${RUNS} interleaved runs, \`sync\` before each."
echo
echo "| metric | crpe | peer | crpe / peer | goal | met |"
echo "|---|---:|---:|---:|---|:-:|"
echo "| wall time (s) — vs \`skopeo copy oci:… docker://…\` ×${#IMAGES[@]} | $(fmt "${M[crpe.wall]}" 2) | $(fmt "${M[skopeo.wall]}" 2) | $(ratio "${M[crpe.wall]}" "${M[skopeo.wall]}") | ≤ 0.5× (≥ 2× faster) | $(verdict 'r<=0.5' "${M[crpe.wall]}" "${M[skopeo.wall]}") |"
echo "| wall time (s) — vs \`crane push LAYOUT-X …\` ×${#IMAGES[@]} | $(fmt "${M[crpe.wall]}" 2) | $(fmt "${M[crane.wall]}" 2) | $(ratio "${M[crpe.wall]}" "${M[crane.wall]}") | ≤ 1.0× | $(verdict 'r<=1.0' "${M[crpe.wall]}" "${M[crane.wall]}") |"
echo "| wall time (s) — vs \`crane push --index LAYOUT …\` (one process, one repository, a new index; info) | $(fmt "${M[crpe.wall]}" 2) | $(fmt "${M[craneidx.wall]}" 2) | $(ratio "${M[crpe.wall]}" "${M[craneidx.wall]}") | (info) | |"
echo "| peak total RSS (MiB) — vs skopeo (largest of its ${#IMAGES[@]} processes) | $(fmt "${M[crpe.rss]}" 1) | $(fmt "${M[skopeo.rss]}" 1) | $(ratio "${M[crpe.rss]}" "${M[skopeo.rss]}") | (report) | |"
echo "| peak total RSS (MiB) — vs crane (largest of its ${#IMAGES[@]}) | $(fmt "${M[crpe.rss]}" 1) | $(fmt "${M[crane.rss]}" 1) | $(ratio "${M[crpe.rss]}" "${M[crane.rss]}") | (report) | |"
echo "| peak RssAnon, heap + stacks (MiB) — vs skopeo / crane | $(fmt "${M[crpe.anon]}" 1) | $(fmt "${M[skopeo.anon]}" 1) / $(fmt "${M[crane.anon]}" 1) | $(ratio "${M[crpe.anon]}" "${M[skopeo.anon]}") / $(ratio "${M[crpe.anon]}" "${M[crane.anon]}") | (report) | |"
echo "| client CPU time, user + system (s) — vs skopeo / crane | $(fmt "${M[crpe.cpu]}" 2) | $(fmt "${M[skopeo.cpu]}" 2) / $(fmt "${M[crane.cpu]}" 2) | $(ratio "${M[crpe.cpu]}" "${M[skopeo.cpu]}") / $(ratio "${M[crpe.cpu]}" "${M[crane.cpu]}") | (info) | |"
echo "| bytes written by the client, requests on the wire (MiB) — vs skopeo / crane | $(mib "${M[crpe.wire]}") | $(mib "${M[skopeo.wire]}") / $(mib "${M[crane.wire]}") | $(ratio "${M[crpe.wire]}" "${M[skopeo.wire]}") / $(ratio "${M[crpe.wire]}" "${M[crane.wire]}") | (info) | |"
# The floor of a push into a registry on loopback, the slowest of three
# things every byte of the layers must go through before the push is done:
#   loopback  moved once between processes (a sendfile server and curl: the
#             least that costs);
#   hash      the registry checks each blob's digest as it receives it (and
#             crpe checks the archive's bytes too; the two hash at once, one
#             on each of the 2 CPUs, so one hash of the archive is the bound);
#   write     durably: distribution v3 fsyncs every blob before it answers
#             the upload's PUT (registry/storage/driver/filesystem:
#             fileWriter.Commit calls Sync), so the cp + sync -f floor is
#             work the push cannot skip either.
# The three overlap (the bytes stream), so the slowest, not their sum.
F_PUSH=$(maxof "$(floor_of hash)" "$(floor_of net)" "$(floor_of write)")
echo "| wall time (s) — vs the floor: the slowest of hashing the archive (\`openssl dgst -sha256\`), moving it over loopback (\`curl\` from a sendfile server) and writing it durably (\`cp\` + \`sync -f\`; distribution v3 fsyncs every blob) | $(fmt "${M[crpe.wall]}" 2) | $(fmt "$F_PUSH" 2) | $(ratio "${M[crpe.wall]}" "$F_PUSH") | (info) | |"
echo "| registry blob storage afterwards (MiB) — vs skopeo / crane | $(mib "${STORE[crpe]}") | $(mib "${STORE[skopeo]}") / $(mib "${STORE[crane]}") | $(ratio "${STORE[crpe]}" "${STORE[skopeo]}") / $(ratio "${STORE[crpe]}" "${STORE[crane]}") | same content | $([ "${STORE[crpe]}" = "${STORE[skopeo]}" ] && [ "${STORE[crpe]}" = "${STORE[crane]}" ] && echo ✅ || echo ❌) |"
echo
echo "Floors (s, median of the runs, measured in the same runs, of the $(mib "$ARCHIVE_BYTES") MiB archive): hash (\`openssl dgst -sha256\`) $(fmt "$(floor_of hash)" 3), durable write (\`cp\` then \`sync -f\`) $(fmt "$(floor_of write)" 3), read back (\`cat\`, page cache) $(fmt "$(floor_of read)" 3), loopback (\`curl\` from a sendfile server) $(fmt "$(floor_of net)" 3). Every run: crpe${WALL[crpe]}; hash${FLOOR[hash]}; loopback${FLOOR[net]}; write${FLOOR[write]}."
echo
echo "Wall times (s), every run: crpe $(walls crpe); skopeo $(walls skopeo); crane ×${#IMAGES[@]} $(walls crane); crane --index $(walls craneidx) (peak RSS $(fmt "${M[craneidx.rss]}" 1) MiB, RssAnon $(fmt "${M[craneidx.anon]}" 1), CPU $(fmt "${M[craneidx.cpu]}" 2) s). Memory is the largest of the runs (\`imagefix watch\`: VmHWM and RssAnon sampled every 5 ms). Bytes written: the client's wchar (/proc/PID/io) — its requests on loopback, no TLS (the blobs' $(mib "$BLOB_BYTES") MiB plus HTTP). Registry storage: du of docker/registry/v2/blobs."
echo
echo "Reproduce: \`bash bench/toregistry.sh\` (or \`bash bench/toregistry.sh path/to/crpe\`; BENCH_RUNS, BENCH_ARCHIVE_MIB tune it)."
