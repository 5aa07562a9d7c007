# shellcheck shell=bash
# The node's network (node only): one bridge that the node creates, holding 198.51.100.1/24 (a
# documentation range, never routed anywhere). Pods get an address in 198.51.100.128/25 on a
# veth into the bridge (CNI bridge + host-local) and no default route: they reach each other
# and 198.51.100.1, nothing else. Nothing forwards or NATs anything: the plugin runs with
# isGateway and ipMasq off, and the kernel's ip_forward is left as it is. IPv6 is off on the
# bridge, so it never even sends a router solicitation.
#
# The Service range is 198.51.100.0/25 (always, node or not: never a private range), so the
# `kubernetes` Service is 198.51.100.1:443, and with a node the API server listens exactly
# there. Pods find it the way they do in any cluster (KUBERNETES_SERVICE_HOST/PORT, injected by
# the kubelet), with no kube-proxy: the chart and the kustomize manifests run unchanged.

node_bridge=secretref0
node_subnet=198.51.100.0/24
node_address=198.51.100.1
service_range=198.51.100.0/25

network_exists() { ip link show "$node_bridge" >/dev/null 2>&1; }

network_up() {
  if network_exists; then
    say "error: the bridge $node_bridge already exists: another node runs on this machine (only one can), or a crashed one was started from another state folder: run scripts/cluster down there"
    return 1
  fi
  ip link add "$node_bridge" type bridge
  touch "$state/network.created"
  sysctl -qw "net.ipv6.conf.$node_bridge.disable_ipv6=1"
  ip addr add "$node_address/${node_subnet#*/}" dev "$node_bridge"
  ip link set "$node_bridge" up
}

# network_down: removes the bridge (the pods' veths went with their network namespaces).
network_down() {
  [ -f "$state/network.created" ] || return 0
  if network_exists; then ip link del "$node_bridge"; say "removed the bridge $node_bridge"; fi
  rm -f "$state/network.created"
}

# The CNI configuration containerd hands to the plugins for every pod.
network_cni_config() {
  cat <<JSON
{
  "cniVersion": "1.0.0",
  "name": "secretref-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$node_bridge",
      "isGateway": false,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$node_subnet", "rangeStart": "198.51.100.130", "rangeEnd": "198.51.100.254" }]],
        "dataDir": "$state/node/ipam"
      }
    }
  ]
}
JSON
}
