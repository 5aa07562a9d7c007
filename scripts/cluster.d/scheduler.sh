# shellcheck shell=bash
# kube-scheduler (node only): places pods on the one node, on loopback, no leader election.

scheduler_ready() { curl -fsSk "https://127.0.0.1:$scheduler_port/healthz"; }

scheduler_up() {
  local kc=$state/scheduler.kubeconfig
  launch kube-scheduler "$bin/kube-scheduler" --kubeconfig "$kc" \
    --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
    --bind-address 127.0.0.1 --secure-port "$scheduler_port" --leader-elect=false
  wait_for kube-scheduler scheduler_ready
}
