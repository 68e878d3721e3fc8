#!/usr/bin/env bash
# Benchmark `crpe package` against `helm template --include-crds
# --skip-tests` (helm v4.3.2, the judge of test/chart) on the same charts,
# side by side, loopback only (no network is used at all: local charts).
#
# usage: bench/package.sh [path-to-crpe-binary]
#
#   With no argument, crpe is built as it ships (the Dockerfile's flags).
#   BENCH_RUNS=7            repetitions per measurement (median reported)
#   BENCH_MAX_SECONDS=240   hard wall-clock cap for the whole script
#   HELM defaults to $(go env GOPATH)/bin/helm (test/run.sh builds it)
#
# Charts: the one `helm create` writes, and a big one: `helm create`'s plus
# 200 ConfigMaps and 50 Deployments templated from a range over values.
# Each run: crpe package CHART -o FILE vs helm template NAME CHART > FILE,
# interleaved, `sync` before each; wall time (median of BENCH_RUNS), and
# memory of the largest run: peak total RSS and peak RssAnon (imagefix watch).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS="${BENCH_RUNS:-7}"
HELM="${HELM:-$(go env GOPATH 2>/dev/null)/bin/helm}"
bench_init crpe-bench-package 240
require_x "$HELM" "go install helm.sh/helm/v4/cmd/helm@v4.3.2"
build_crpe "$@"
build_fix imagefix
export HOME="$TMP/home" HELM_CACHE_HOME="$TMP/home/cache" HELM_CONFIG_HOME="$TMP/home/config" HELM_DATA_HOME="$TMP/home/data"
mkdir -p "$HOME"

"$HELM" create "$TMP/small" >/dev/null
"$HELM" create "$TMP/big" >/dev/null
cat >"$TMP/big/templates/many.yaml" <<'YAML'
{{- range $i := until 200 }}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "big.fullname" $ }}-cm-{{ $i }}
  labels:
    {{- include "big.labels" $ | nindent 4 }}
data:
  index: "{{ $i }}"
  payload: {{ printf "%s-%d" $.Values.image.repository $i | repeat 20 | quote }}
{{- end }}
{{- range $i := until 50 }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "big.fullname" $ }}-w{{ $i }}
spec:
  selector:
    matchLabels: {app: w{{ $i }}}
  template:
    metadata:
      labels: {app: w{{ $i }}}
    spec:
      containers:
      - name: c
        image: "registry.example.com/w{{ $i }}:1.{{ $i }}"
{{- end }}
YAML

declare -A WALL RSS ANON
for chart in small big; do
  for tool in crpe helm; do WALL[$chart.$tool]=""; RSS[$chart.$tool]=0; ANON[$chart.$tool]=0; done
  for ((r = 1; r <= RUNS; r++)); do
    for tool in crpe helm; do
      settle
      j="$TMP/$chart.$tool.$r.json"
      t0=$(now)
      if [ "$tool" = crpe ]; then
        tw "$j" 60 "$CRPE_BIN" package "$TMP/$chart" -o "$TMP/out.crpe.yaml" 2>/dev/null || die "crpe package $chart failed"
      else
        tw "$j" 60 "$HELM" template "$chart" "$TMP/$chart" --include-crds --skip-tests >"$TMP/out.helm.yaml" || die "helm template $chart failed"
      fi
      t1=$(now)
      WALL[$chart.$tool]+=" $(elapsed "$t0" "$t1")"
      r_=$(jmib "$j" peak_rss_kib); a_=$(jmib "$j" rss_anon_kib)
      RSS[$chart.$tool]=$(awk -v a="${RSS[$chart.$tool]}" -v b="$r_" 'BEGIN{print (b>a)?b:a}')
      ANON[$chart.$tool]=$(awk -v a="${ANON[$chart.$tool]}" -v b="$a_" 'BEGIN{print (b>a)?b:a}')
    done
  done
  log "$chart: crpe$(printf ' %s' ${WALL[$chart.crpe]}) | helm$(printf ' %s' ${WALL[$chart.helm]})"
done

echo
echo "| chart | objects | crpe package (s) | helm template (s) | ratio | crpe peak RSS / RssAnon (MiB) | helm peak RSS / RssAnon (MiB) |"
echo "|---|---|---|---|---|---|---|"
for chart in small big; do
  mc=$(median ${WALL[$chart.crpe]}); mh=$(median ${WALL[$chart.helm]})
  "$CRPE_BIN" package "$TMP/$chart" -o "$TMP/obj.yaml" 2>/dev/null
  n=$(grep -c '^    [a-z0-9.-]*\.[a-z]*:$' "$TMP/obj.yaml" || true)
  echo "| $chart | $n | $mc | $mh | $(awk -v a="$mc" -v b="$mh" 'BEGIN{printf "%.2f", a/b}') | ${RSS[$chart.crpe]} / ${ANON[$chart.crpe]} | ${RSS[$chart.helm]} / ${ANON[$chart.helm]} |"
done
echo
echo "Median of $RUNS interleaved runs each; memory is the largest run's (imagefix watch: /proc status every 5 ms). crpe package renders with Helm's SDK as helm template does, then parses every object, finds the images and writes the KubePkg; both are one process started per run (start-up included)."
