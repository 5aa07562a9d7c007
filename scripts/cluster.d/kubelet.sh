# shellcheck shell=bash
# The kubelet (node only): registers node "127.0.0.1" (its InternalIP, so the API server's calls
# for logs and exec stay on loopback), runs pods through containerd, in the node's mount
# namespace (host.sh) and cgroupRoot, on cgroup v1 (failCgroupV1: false). It re-reads mounted
# Secrets every syncFrequency: 3 s here (a default kubelet: 1 min, plus its cache TTL).

node_name=127.0.0.1

kubelet_ready() {
  curl -fsS "http://127.0.0.1:$kubelet_healthz_port/healthz" &&
    "$bin/kubectl" --kubeconfig "$state/kubeconfig" wait --for=condition=Ready "node/$node_name" --timeout=1s
}

kubelet_config() {
  local pki=$state/pki
  cat <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$node_cgroup
containerRuntimeEndpoint: unix://$node_run/containerd.sock
imageServiceEndpoint: unix://$node_run/containerd.sock
address: 127.0.0.1
port: $kubelet_port
healthzBindAddress: 127.0.0.1
healthzPort: $kubelet_healthz_port
readOnlyPort: 0
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: true }
  x509: { clientCAFile: $pki/ca.crt }
authorization: { mode: Webhook }
# Pods never see the host's resolver: their resolv.conf comes from this empty file.
resolvConf: $state/node/resolv.conf
podLogsDir: $state/node/pod-logs
syncFrequency: 3s
nodeStatusUpdateFrequency: 5s
failSwapOn: false
protectKernelDefaults: false
serializeImagePulls: false
# Images are imported, never pulled: never collect them, never evict for disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: "0%"
  nodefs.inodesFree: "0%"
  imagefs.available: "0%"
  imagefs.inodesFree: "0%"
EOF
}

kubelet_up() {
  mkdir -p "$state/node/pod-logs"
  : >"$state/node/resolv.conf"
  kubelet_config >"$state/node/kubelet.yaml"
  host_namespace_enter
  launch kubelet "${in_node_namespace[@]}" "$bin/kubelet" --config "$state/node/kubelet.yaml" \
    --kubeconfig "$state/kubelet.kubeconfig" --hostname-override "$node_name"
  wait_for kubelet kubelet_ready
}
