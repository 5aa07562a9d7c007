# shellcheck shell=bash
# What a node changes on the host, and how each change is undone (node only):
# - sysctls: the kubelet rewrites some kernel settings; they are saved first, restored last;
# - cgroups: the kubelet's cgroupRoot, made in every cgroup v1 hierarchy (the kubelet needs it
#   to exist) and removed, deepest first, from those and from the cgroup2 mount (the kubelet
#   writes there too);
# - a mount namespace: containerd and the kubelet run in a private one, so that every mount
#   they make (container root filesystems, Secret volumes, network namespaces) vanishes with
#   it; /var/lib/kubelet and /var/log/containers, which the kubelet uses whatever it is told,
#   are bind-mounted there from the state folder (on the host they are only empty mount points,
#   created if missing and removed again).

node_cgroup=secretref-node
# Every key the kubelet may set (setupKernelTunables), and ip_forward, which nothing here should
# change but which matters most if anything did.
host_sysctls=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward)
host_mount_points=(/var/lib/kubelet /var/log/containers)

host_sysctls_save() {
  [ -f "$state/sysctls.saved" ] && return 0 # a crashed run's file holds the true originals
  local k
  for k in "${host_sysctls[@]}"; do echo "$k=$(sysctl -n "$k")"; done >"$state/sysctls.saved.tmp"
  mv "$state/sysctls.saved.tmp" "$state/sysctls.saved"
}

host_sysctls_restore() {
  [ -f "$state/sysctls.saved" ] || return 0
  local k v
  while IFS='=' read -r k v; do
    [ "$(sysctl -n "$k")" = "$v" ] || { sysctl -qw "$k=$v"; say "restored $k=$v"; }
  done <"$state/sysctls.saved"
  rm -f "$state/sysctls.saved"
}

# The cgroup mounts: every v1 hierarchy, then the cgroup2 one (hybrid hosts have both).
host_cgroup_mounts() {
  awk '$9 == "cgroup" { print $5 }' /proc/self/mountinfo
  awk '$9 == "cgroup2" { print $5 }' /proc/self/mountinfo
}

host_cgroups_create() {
  local m
  touch "$state/cgroups.created" # from now on they are ours to remove
  while read -r m; do
    [ "$(awk -v m="$m" '$5 == m { print $9 }' /proc/self/mountinfo)" = cgroup ] || continue
    mkdir -p "$m/$node_cgroup"
    # A new cpuset cgroup starts with no CPUs and no memory nodes: give it its parent's.
    if [ -f "$m/cpuset.cpus" ]; then
      cat "$m/cpuset.cpus" >"$m/$node_cgroup/cpuset.cpus"
      cat "$m/cpuset.mems" >"$m/$node_cgroup/cpuset.mems"
    fi
  done < <(host_cgroup_mounts)
}

# host_cgroups_remove: kills whatever is left in the node's cgroups (nothing, after an orderly
# stop) and removes them, deepest first, in every hierarchy.
host_cgroups_remove() {
  local m dir pid removed=0
  [ -f "$state/cgroups.created" ] || return 0
  while read -r m; do
    [ -d "$m/$node_cgroup" ] || continue
    for _ in 1 2 3 4 5; do
      while read -r dir; do
        while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done <"$dir/cgroup.procs"
        rmdir "$dir" 2>/dev/null || true
      done < <(find "$m/$node_cgroup" -depth -type d)
      [ -d "$m/$node_cgroup" ] || break
      sleep 0.2
    done
    if [ -d "$m/$node_cgroup" ]; then say "warning: could not remove $m/$node_cgroup"; else removed=1; fi
  done < <(host_cgroup_mounts)
  [ "$removed" = 0 ] || say "removed the cgroups $node_cgroup"
  rm -f "$state/cgroups.created"
}

# The mount namespace holder: a sleeping process whose namespace containerd and the kubelet
# join (nsenter), so that either can be restarted alone and find the same mounts.
host_namespace_up() {
  local m
  for m in "${host_mount_points[@]}"; do
    if [ ! -e "$m" ]; then mkdir "$m"; echo "$m" >>"$state/mount-points.created"; fi
  done
  mkdir -p "$state/node/var-lib-kubelet" "$state/node/var-log-containers"
  echo "secretref-node-namespace $state" >"$state/node-namespace.match"
  # shellcheck disable=SC2016
  launch node-namespace unshare --mount --propagation private -- bash -c \
    'mount --bind "$1" /var/lib/kubelet && mount --bind "$2" /var/log/containers && exec -a "$3" sleep infinity' \
    _ "$state/node/var-lib-kubelet" "$state/node/var-log-containers" "secretref-node-namespace $state"
  # Ready once the holder has exec'd its sleep, which it does after both mounts.
  wait_for node-namespace pid_of node-namespace
}

# host_namespace_enter: sets the array in_node_namespace to the command prefix that runs a
# command in the node's mount namespace.
host_namespace_enter() {
  in_node_namespace=(nsenter "--mount=/proc/$(cat "$state/node-namespace.pid")/ns/mnt" --)
}

host_namespace_down() {
  stop node-namespace 2
  local m
  if [ -f "$state/mount-points.created" ]; then
    while read -r m; do rmdir "$m" 2>/dev/null || say "warning: $m is not empty, left in place"; done <"$state/mount-points.created"
    rm -f "$state/mount-points.created"
  fi
}
