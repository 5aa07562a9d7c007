# shellcheck shell=bash
# Container images without a registry or a Docker daemon: a single-layer OCI image layout
# written by hand (layer tar with numeric owner 0 and fixed times, config, manifest, index.json
# naming the image for containerd, oci-layout), archived and imported into the node's
# containerd with `ctr images import`. Used by containerd.sh (the sandbox image) and scripts/image.

# images_write_layout ROOTFS DIR REF CONFIG: writes the OCI layout of one image into DIR, its
# layer the files under ROOTFS, CONFIG the JSON of the image's "config" object.
images_write_layout() {
  local rootfs=$1 dir=$2 ref=$3 config=$4
  rm -rf "$dir"
  mkdir -p "$dir/blobs/sha256"
  local layer=$dir/layer.tar diff_id config_json config_digest manifest manifest_digest
  # Sorted names, numeric owner 0, times at the epoch: the same files give the same digest.
  (cd "$rootfs" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
    tar --numeric-owner --owner=0 --group=0 --mtime=@0 --no-recursion -cf "$layer" -T -)
  diff_id=$(sha256sum "$layer" | cut -d' ' -f1)
  mv "$layer" "$dir/blobs/sha256/$diff_id"
  config_json=$(printf '{"architecture":"amd64","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$config" "$diff_id")
  config_digest=$(images_blob "$dir" "$config_json")
  manifest=$(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$config_digest" "${#config_json}" "$diff_id" "$(stat -c %s "$dir/blobs/sha256/$diff_id")")
  manifest_digest=$(images_blob "$dir" "$manifest")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$manifest_digest" "${#manifest}" "$ref" "${ref##*:}" >"$dir/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$dir/oci-layout"
}

# images_blob DIR TEXT: stores TEXT (ASCII JSON) as a blob, prints its sha256.
images_blob() {
  local digest
  digest=$(printf '%s' "$2" | sha256sum | cut -d' ' -f1)
  printf '%s' "$2" >"$1/blobs/sha256/$digest"
  echo "$digest"
}

# images_archive DIR: the layout as one tar next to it (what `ctr images import` reads); prints its path.
images_archive() {
  tar --numeric-owner --owner=0 --group=0 --mtime=@0 -C "$1" -cf "$1.tar" oci-layout index.json blobs
  echo "$1.tar"
}

# images_import ARCHIVE: imports (and unpacks) an archive into the node's containerd, where the
# kubelet finds it; prints the image reference.
images_import() {
  "$bin/ctr" --address "$node_run/containerd.sock" --namespace k8s.io images import --local "$1" >&2
  tar -xOf "$1" index.json | sed -n 's/.*"io.containerd.image.name":"\([^"]*\)".*/\1/p'
}

# images_busybox: the path of busybox-static from Debian's package, downloaded once into the
# tools cache (a version-keyed folder, like the built tools) and never installed on the host.
images_busybox() {
  local version dir
  version=$(apt-cache policy busybox-static 2>/dev/null | sed -n 's/^ *Candidate: //p')
  if [ -z "$version" ] || [ "$version" = "(none)" ]; then
    apt-get -q update >&2
    version=$(apt-cache policy busybox-static | sed -n 's/^ *Candidate: //p')
  fi
  [ -n "$version" ] && [ "$version" != "(none)" ] || die "Debian's busybox-static package is not available (apt-get update?)"
  dir=$tools_root/busybox-static-${version//:/_}
  if [ ! -x "$dir/busybox" ]; then
    local tmp
    tmp=$(mktemp -d)
    chmod 0755 "$tmp" # apt's unprivileged downloader writes there
    (cd "$tmp" && apt-get -q download "busybox-static=$version" >&2 && dpkg-deb -x ./*.deb root) ||
      { rm -rf "$tmp"; die "could not download busybox-static $version"; }
    mkdir -p "$dir"
    cp "$tmp/root/bin/busybox" "$dir/busybox.tmp" && mv "$dir/busybox.tmp" "$dir/busybox"
    rm -rf "$tmp"
  fi
  echo "$dir/busybox"
}

# images_busybox_rootfs DIR: a root filesystem of busybox and a link per applet in /bin.
images_busybox_rootfs() {
  local busybox applet
  busybox=$(images_busybox)
  rm -rf "$1"
  mkdir -p "$1/bin" "$1/tmp"
  chmod 1777 "$1/tmp"
  install -m 0755 "$busybox" "$1/bin/busybox"
  for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$1/bin/$applet"
  done
}

# images_sandbox: the pod sandbox image (what upstream's pause does: hold the pod's namespaces,
# here by sleeping), as an archive under the state folder; prints its path.
images_sandbox() {
  local dir=$state/node/images
  images_busybox_rootfs "$dir/busybox-rootfs"
  images_write_layout "$dir/busybox-rootfs" "$dir/pause" "$sandbox_image" \
    '{"Entrypoint":["/bin/busybox","sleep","2147483647"],"User":"65535:65535"}'
  images_archive "$dir/pause"
}
