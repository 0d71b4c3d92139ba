#!/usr/bin/env bash
# A kind node image made on this machine, with no registry: `kind build node-image` from a Kubernetes
# release tarball assembled here, on a kind base image made here.
#
#   hack/kind/node-image.sh BIN_DIR BASE_ROOTFS_TAR NODE_IMAGE
#
# BIN_DIR holds kubelet kubeadm kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy
# etcd coredns crictl pause containerd ctr containerd-shim-runc-v2 flanneld (built from Go modules and pause.c
# by localcluster/kind.py); BASE_ROOTFS_TAR is a debootstrapped Debian with systemd, runc and the CNI plugins.
# FLANNEL_IMAGE names the flannel image to preload (hack/kind/flannel.yaml runs it). Needs DOCKER_HOST, kind, jq.
#
# Where this departs from kind's own images (each because a piece cannot be fetched here):
# - the base image's runc and CNI plugins are Debian's, not kind's builds (containerd is built from its module);
# - etcd is this project's pinned etcd, tagged with the version kubeadm asks for;
# - the CNI is flannel (hack/kind/flannel.yaml, applied by localcluster/kind.py; the cluster config disables
#   kind's default CNI): kindnetd's module is not served by the Go module proxy. The local-path provisioner is not
#   built either, and the node has no default StorageClass. `kind build node-image` insists on having both images,
#   so placeholders go in and come out again at the end, with the manifests that name them.
set -euo pipefail

bin=$1
rootfs=$2
node_image=$3
base_image=${node_image%:*}-base:${node_image##*:}
kind_src=$(go env GOMODCACHE)/sigs.k8s.io/kind@$(kind version | awk '{print $2}')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log() { printf '[kind-node] %s\n' "$*" >&2; }

# -- the base image: kind's files and setup on the debootstrapped root filesystem -------------------------
log "base image $base_image"
docker import - "$base_image-rootfs" <"$rootfs" >/dev/null
context=$work/base
mkdir -p "$context"
cp -r "$kind_src/images/base/files" "$context/files"
chmod -R u+w "$context"
for b in crictl containerd ctr containerd-shim-runc-v2; do cp "$bin/$b" "$context/$b"; done
# RUNC_WRAPPER (set by localcluster/kind.py when this machine withholds capabilities): the node's containerd
# runs 'privileged' pods (kube-proxy) and meets the same limits as the engine; else plain runc.
if [[ -n ${RUNC_WRAPPER:-} ]]; then
  cp "$RUNC_WRAPPER" "$context/runc"
else
  printf '#!/bin/sh\nexec /usr/sbin/runc "$@"\n' >"$context/runc"
fi
cat >"$context/Dockerfile" <<DOCKERFILE
FROM $base_image-rootfs
COPY files/usr/local/bin/ /usr/local/bin/
COPY files/kind/ /kind/
COPY files/etc/ /etc/
COPY crictl containerd ctr containerd-shim-runc-v2 /usr/local/bin/
COPY runc /usr/local/sbin/runc
RUN chmod 755 /usr/local/bin/* /kind/bin/* /usr/local/sbin/runc \\
    && mkdir -p /opt/cni && ln -s /usr/lib/cni /opt/cni/bin \\
    && find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete \\
    && rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \\
       /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \\
       /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/* \\
    && echo "ReadKMsg=no" >> /etc/systemd/journald.conf \\
    && systemctl enable kubelet.service containerd.service undo-mount-hacks.service \\
    && systemctl mask systemd-binfmt.service \\
    && mkdir -p /etc/kubernetes/manifests \\
    && ctr oci spec | jq '.hooks.createContainer[.hooks.createContainer | length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \\
       | jq 'del(.process.rlimits)' > /etc/containerd/cri-base.json
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
DOCKERFILE
docker build --quiet --network host --tag "$base_image" "$context" >/dev/null

# -- the images kubeadm and kind preload -------------------------------------------------------------------
# A directory with one binary becomes an image: FROM scratch for static Go binaries (and the static pause);
# kube-proxy needs iptables and conntrack, so it runs on the base image.
image_of() { # $1: tag, $2: base, $3: binary, $4: entrypoint (JSON) or ""
  local ctx=$work/img-${1//[^a-zA-Z0-9]/_}
  mkdir -p "$ctx"
  cp "$bin/$3" "$ctx/$3"
  {
    echo "FROM $2"
    echo "COPY $3 /usr/local/bin/$3"
    echo "ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    if [[ -n $4 ]]; then echo "ENTRYPOINT $4"; fi
  } >"$ctx/Dockerfile"
  docker build --quiet --tag "$1" "$ctx" >/dev/null
}
placeholder_of() { # $1: tag — an image that says what it is not, and exits 1
  local ctx=$work/img-${1//[^a-zA-Z0-9]/_}
  mkdir -p "$ctx"
  printf 'FROM %s\nENTRYPOINT ["/bin/sh", "-c", "echo %s is not built on this machine; exit 1"]\n' \
    "$base_image-rootfs" "$1" >"$ctx/Dockerfile"
  docker build --quiet --tag "$1" "$ctx" >/dev/null
}

version=$("$bin/kubeadm" version -o short)
mapfile -t wanted < <("$bin/kubeadm" config images list --kubernetes-version "$version")
pause=$(grep -o 'sandbox_image = "[^"]*"' "$kind_src/images/base/files/etc/containerd/config.toml" | cut -d'"' -f2)
extras=()
for image in "${wanted[@]}"; do
  name=${image##*/}
  name=${name%%:*}
  case $name in
    kube-apiserver | kube-controller-manager | kube-scheduler) image_of "$image" scratch "$name" "" ;;
    kube-proxy) image_of "$image" "$base_image" kube-proxy "" ;;
    etcd) image_of "$image" scratch etcd "" && extras+=("$image") ;;
    coredns) image_of "$image" scratch coredns '["/usr/local/bin/coredns"]' && extras+=("$image") ;;
    pause) ;;  # kind replaces kubeadm's pause with the sandbox image of its containerd configuration
    *) log "unknown image $image"; exit 1 ;;
  esac
done
image_of "$pause" scratch pause '["/usr/local/bin/pause"]'
extras+=("$pause")
# flanneld needs iptables (its masquerading and forward rules) and a shell for its CNI configuration step.
image_of "$FLANNEL_IMAGE" "$base_image" flanneld ""
extras+=("$FLANNEL_IMAGE")
placeholders=()
for image in $(grep -ho '"[^"]*/kindest/[^"]*"' "$kind_src"/pkg/build/nodeimage/const_{cni,storage}.go | tr -d '"'); do
  placeholder_of "$image"
  extras+=("$image")
  placeholders+=("$image")
done

# -- the release tarball kind reads: kubernetes/version, kubernetes/server/bin/{binaries,images} -----------
log "release tarball for $version"
server=$work/tar/kubernetes/server/bin
mkdir -p "$server"
echo "$version" >"$work/tar/kubernetes/version"
for b in kubeadm kubelet kubectl; do cp "$bin/$b" "$server/$b"; done
for name in kube-apiserver kube-controller-manager kube-scheduler; do
  docker save --output "$server/$name.tar" "$(printf '%s\n' "${wanted[@]}" | grep "/$name:")"
done
# kind loads exactly four archives; every other preloaded image rides in kube-proxy's, so that kind finds
# them already built and never tries to pull them. kind reads an archive's tags from the first of
# `repositories` (every image) or `manifest.json` (only the first image's) it meets: `repositories` goes first.
unpacked=$work/kube-proxy-archive
mkdir -p "$unpacked"
docker save "$(printf '%s\n' "${wanted[@]}" | grep '/kube-proxy:')" "${extras[@]}" | tar -C "$unpacked" -xf -
# docker save names images of the default registry by their short name; kind looks for the full name.
full_names=$(printf '%s\n' "${extras[@]%:*}" | jq -R . | jq -s -c .)
jq --argjson full "$full_names" \
  'with_entries(.key as $k | .key = ([$full[] | select(. == $k or endswith("/" + $k))] + [$k])[0])' \
  "$unpacked/repositories" >"$unpacked/repositories.full" && mv "$unpacked/repositories.full" "$unpacked/repositories"
(cd "$unpacked" && find . -mindepth 1 -maxdepth 1 ! -name repositories -printf '%P\n' | sort \
  | tar -cf "$server/kube-proxy.tar" repositories -T -)
tar -C "$work/tar" -czf "$work/kubernetes-server-linux-amd64.tar.gz" kubernetes

log "kind build node-image → $node_image-unfinished"
kind build node-image --type file --base-image "$base_image" --image "$node_image-unfinished" \
  "$work/kubernetes-server-linux-amd64.tar.gz"

# -- the placeholders out again, as kind itself edits a node image: a container that sleeps, its containerd ---------
log "removing the placeholder images and the manifests that name them → $node_image"
finish=$(docker run -d --entrypoint=sleep --security-opt seccomp=unconfined "$node_image-unfinished" infinity)
docker exec "$finish" bash -c 'set -e
containerd >/dev/null 2>&1 &
for i in 0 1 2 3 4 5; do [[ -S /run/containerd/containerd.sock ]] && ctr info >/dev/null 2>&1 && break; sleep "$i"; done
ctr --namespace=k8s.io images rm "$@" >/dev/null
kill %1; wait || true
rm /kind/manifests/default-cni.yaml
# kind applies this file unconditionally (and a host-path default StorageClass when it is missing): a note instead.
cat >/kind/manifests/default-storage.yaml <<NOTE
apiVersion: v1
kind: ConfigMap
metadata:
  name: kind-storage
  namespace: kube-system
data:
  note: no default StorageClass on this node image; the local-path provisioner is not built here
NOTE' _ "${placeholders[@]}"
docker commit --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' "$finish" "$node_image" >/dev/null
docker rm -f "$finish" >/dev/null
docker rmi "$node_image-unfinished" "${placeholders[@]}" >/dev/null
