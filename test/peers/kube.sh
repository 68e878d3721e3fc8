#!/usr/bin/env bash
# Installs the Kubernetes peers the operator tests run against, without
# Docker or downloads outside the package registries: etcd from Debian's
# etcd-server, and kube-apiserver (plus kubectl) built from the Go module
# proxy (k8s.io/kubernetes v1.34.4 with every staging module replaced by
# v0.34.4). The build takes ~5 min on 2 cores and is cached in
# $(go env GOPATH)/bin, so a warm run does not rebuild it.
# KUBE_WITH_NODE=1 also builds kube-controller-manager, kube-scheduler and
# the kubelet (~2 min more), for the one-node cluster of test/e2e.
set -euo pipefail
K8S=${K8S_VERSION:-v1.34.4}
STAGING=${K8S_STAGING_VERSION:-v0.34.4}
bin="$(go env GOPATH)/bin"
want=(kube-apiserver kubectl)
if [ -n "${KUBE_WITH_NODE:-}" ]; then
  want+=(kube-controller-manager kube-scheduler kubelet)
fi
if ! command -v etcd >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
    # Debian starts an etcd service on install: the tests run their own
    systemctl stop etcd 2>/dev/null || service etcd stop 2>/dev/null || pkill -x etcd || true
  fi
fi
missing=()
for b in "${want[@]}"; do
  [ -x "$bin/$b-$K8S" ] || missing+=("$b")
done
if ((${#missing[@]})); then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cd "$work"
  cat > go.mod <<EOM
module crpe.local/kubebuild

go 1.24
EOM
  staging=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider cluster-bootstrap
    code-generator component-base component-helpers controller-manager cri-api cri-client csi-translation-lib
    dynamic-resource-allocation endpointslice externaljwt kms kube-aggregator kube-controller-manager kube-proxy
    kube-scheduler kubectl kubelet metrics mount-utils pod-security-admission sample-apiserver
    sample-cli-plugin sample-controller)
  {
    echo "require k8s.io/kubernetes $K8S"
    echo "replace ("
    for s in "${staging[@]}"; do echo "  k8s.io/$s => k8s.io/$s $STAGING"; done
    echo ")"
  } >> go.mod
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for b in "${missing[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$b"; done
    printf ')\n'
  } > tools.go
  export GOFLAGS=-mod=mod
  go mod tidy >/dev/null 2>&1 || true
  for b in "${missing[@]}"; do
    pkg=k8s.io/kubernetes/cmd/$b
    echo "building $b $K8S (cached in $bin)"
    # the version stamp (kubectl get nodes shows the kubelet's)
    major=${K8S#v}; minor=${major#*.}; major=${major%%.*}; minor=${minor%%.*}
    ver="-X k8s.io/component-base/version.gitVersion=$K8S -X k8s.io/component-base/version.gitMajor=$major"
    ver="$ver -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ver" -o "$bin/$b-$K8S" "$pkg"
  done
fi
for b in "${want[@]}"; do ln -sf "$bin/$b-$K8S" "$bin/$b"; done
echo "kube peers ready: $(etcd --version 2>/dev/null | head -1); ${want[*]} $K8S"
