# shellcheck shell=bash
# containerd (node only): the container runtime, with runc (Debian's package; crun if runc
# cannot be had), every path private to the state folder, in the node's mount namespace
# (host.sh). Pulls are impossible by construction: every registry resolves to 127.0.0.1:1, so
# images come only from `ctr images import` (scripts/image; the sandbox image is imported here).

sandbox_image=localhost/pause:busybox

containerd_ready() { "$bin/ctr" --address "$node_run/containerd.sock" version; }

# containerd_oci_runtime: the path of runc, installing Debian's package when it is missing;
# crun when runc cannot be installed.
containerd_oci_runtime() {
  local apt=(apt-get -q -y --no-install-recommends -o DPkg::Lock::Timeout=300)
  local b
  for b in runc crun; do
    if command -v "$b" >/dev/null; then command -v "$b"; return; fi
  done
  say "installing runc from Debian's packages (once per machine)"
  for b in runc crun; do
    if "${apt[@]}" install "$b" >&2 || { apt-get -q update >&2 && "${apt[@]}" install "$b" >&2; }; then
      command -v "$b"; return
    fi
  done
  die "neither runc nor crun could be installed (apt-get install runc)"
}

containerd_config() {
  local runtime=$1 dir=$state/node/containerd
  cat <<EOF
version = 3
root = '$dir/root'
state = '$node_run/state'
[grpc]
  address = '$node_run/containerd.sock'
[ttrpc]
  address = '$node_run/containerd.sock.ttrpc'
[plugins.'io.containerd.internal.v1.opt']
  path = '$dir/opt'
[plugins.'io.containerd.nri.v1.nri']
  disable = true
[plugins.'io.containerd.shim.v1.manager']
  socket_dir = '$node_run/s'
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '$sandbox_image'
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = '$dir/registries'
[plugins.'io.containerd.cri.v1.runtime']
  # The host lacks CAP_SYS_RESOURCE: a container must not try to lower its oom_score_adj.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  cdi_spec_dirs = ['$dir/cdi']
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = 'io.containerd.runc.v2'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      BinaryName = '$runtime'
      Root = '$dir/runc'
      SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['$bin/cni']
    conf_dir = '$dir/cni'
[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'
EOF
}

containerd_up() {
  local dir=$state/node/containerd runtime
  runtime=$(containerd_oci_runtime)
  echo "$runtime" >"$state/node/oci-runtime"
  mkdir -p "$dir/cni" "$dir/cdi" "$dir/registries/_default" "$node_run/s"
  containerd_config "$runtime" >"$dir/config.toml"
  network_cni_config >"$dir/cni/10-secretref-node.conflist"
  # Any registry, docker.io included, is this closed port: nothing is ever pulled from outside.
  echo "server = 'https://127.0.0.1:1'" >"$dir/registries/_default/hosts.toml"
  host_namespace_enter
  launch containerd "${in_node_namespace[@]}" env "PATH=$bin:$PATH" "TMPDIR=$node_run" \
    "$bin/containerd" --config "$dir/config.toml"
  wait_for containerd containerd_ready || return 1
  images_import "$(images_sandbox)" >/dev/null
}

# containerd_down: every container (by the runtime's private state), every shim (by the socket
# on its command line), then containerd.
containerd_down() {
  local runtime root id pid
  runtime=$(cat "$state/node/oci-runtime" 2>/dev/null) || runtime=""
  # The shim keeps one runtime root per containerd namespace (k8s.io) under Root.
  for root in "$state/node/containerd/runc"/*/; do
    [ -n "$runtime" ] && [ -d "$root" ] || continue
    for id in $("$runtime" --root "$root" list -q 2>/dev/null); do
      "$runtime" --root "$root" kill --all "$id" KILL 2>/dev/null || true
      "$runtime" --root "$root" delete --force "$id" 2>/dev/null || true
      say "removed container ${id:0:12}"
    done
  done
  if [ -n "${node_run:-}" ]; then
    for pid in $(pgrep -f -- "containerd-shim-runc-v2 .*-address $node_run/containerd.sock" || true); do
      kill -9 "$pid" 2>/dev/null && say "stopped a containerd shim (pid $pid)"
    done
  fi
  stop containerd 10
}
