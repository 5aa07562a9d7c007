# shellcheck shell=bash
# kube-controller-manager: without a node only the garbage collector and the namespace
# controller (ownerReference clean-up and namespace deletion really happen); with a node also
# what pods need: ServiceAccounts and the kube-root-ca.crt ConfigMap in every namespace,
# Deployments and ReplicaSets, node health and the clean-up of pods of a vanished node.

controller_manager_ready() { curl -fsSk "https://127.0.0.1:$kcm_port/healthz"; }

controller_manager_up() {
  local controllers=garbage-collector-controller,namespace-controller node_flags=()
  if [ "$node" = 1 ]; then
    controllers+=,serviceaccount-controller,root-ca-certificate-publisher-controller
    controllers+=,deployment-controller,replicaset-controller,node-lifecycle-controller,pod-garbage-collector-controller
    node_flags=(--root-ca-file "$state/pki/ca.crt")
  fi
  # --use-service-account-credentials: each controller acts as its own ServiceAccount with its
  # bootstrap role (the namespace controller needs deletecollection on every resource, which
  # the system:kube-controller-manager user does not have: namespaces would stay Terminating).
  launch kube-controller-manager "$bin/kube-controller-manager" --kubeconfig "$state/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$state/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$state/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$kcm_port" --leader-elect=false --use-service-account-credentials \
    --controllers "$controllers" \
    --concurrent-gc-syncs 20 --concurrent-namespace-syncs 10 "${node_flags[@]}"
  wait_for kube-controller-manager controller_manager_ready
}
