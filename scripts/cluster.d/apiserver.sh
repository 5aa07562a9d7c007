# shellcheck shell=bash
# kube-apiserver: TLS with the cluster CA, client certificates and ServiceAccount tokens,
# Node and RBAC authorization. Without a node it listens on 127.0.0.1; with one, on the node
# bridge's address, port 443: the `kubernetes` Service's address (network.sh), which the host
# reaches as well as the pods do.

apiserver_ready() { "$bin/kubectl" --kubeconfig "$state/kubeconfig" get --raw /readyz; }

apiserver_up() {
  local pki=$state/pki kubelet_flags=()
  if [ "$node" = 1 ]; then
    # logs and exec: the API server calls the kubelet, which serves on 127.0.0.1 (pki.sh).
    kubelet_flags=(--kubelet-client-certificate "$pki/apiserver-kubelet-client.crt"
      --kubelet-client-key "$pki/apiserver-kubelet-client.key" --kubelet-certificate-authority "$pki/ca.crt"
      --kubelet-preferred-address-types InternalIP,Hostname)
  fi
  launch kube-apiserver "$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address "$api_host" --advertise-address "$api_host" --secure-port "$apiserver_port" \
    --cert-dir "$state/apiserver-certs" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --api-audiences https://kubernetes.default.svc.cluster.local \
    --authorization-mode Node,RBAC --service-cluster-ip-range "$service_range" \
    --endpoint-reconciler-type none \
    --enable-priority-and-fairness=false --max-requests-inflight 2000 --max-mutating-requests-inflight 1000 \
    "${kubelet_flags[@]}"
  wait_for kube-apiserver apiserver_ready
}
