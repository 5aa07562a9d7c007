# shellcheck shell=bash
# The cluster's certificates: one CA, the API server's serving certificate, a client
# certificate per component, service-account signing keys and, for a node, the kubelet's
# credentials. Also the kubeconfig files that use them.

# sign NAME SUBJECT USAGE [SAN]: an X.509 v3 certificate signed by the CA (rustls refuses v1).
pki_sign() {
  openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$3"
    [ -z "${4:-}" ] || echo "subjectAltName=$4"
  } >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 365 \
    -extfile "$1.ext" 2>/dev/null
}

# pki_control_plane: the CA and everything etcd, the API server and the controllers need.
pki_control_plane() {
  mkdir -p "$state/pki"
  (
    cd "$state/pki"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 365 -subj "/CN=secretref-local-ca" 2>/dev/null
    # $node_address: the `kubernetes` Service's address, where a node's API server listens (network.sh).
    pki_sign apiserver "/CN=kube-apiserver" serverAuth \
      "IP:127.0.0.1,DNS:localhost,IP:$node_address,DNS:kubernetes.default.svc"
    pki_sign admin "/O=system:masters/CN=secretref-admin" clientAuth
    pki_sign controller-manager "/CN=system:kube-controller-manager" clientAuth
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
}

# pki_node: the scheduler's client certificate, the kubelet's client certificate (group
# system:nodes, so the Node authorizer lets it read exactly its pods' Secrets), its serving
# certificate, and the API server's client certificate towards kubelets (logs, exec).
pki_node() {
  (
    cd "$state/pki"
    pki_sign scheduler "/CN=system:kube-scheduler" clientAuth
    pki_sign kubelet "/O=system:nodes/CN=system:node:$node_name" clientAuth
    pki_sign kubelet-serving "/CN=$node_name" serverAuth "IP:$node_name"
    pki_sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
  )
}

# kubeconfig FILE USER: a kubeconfig for USER's client certificate.
kubeconfig() {
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://$api_host:$apiserver_port
    certificate-authority: $state/pki/ca.crt
users:
- name: $2
  user:
    client-certificate: $state/pki/$2.crt
    client-key: $state/pki/$2.key
contexts:
- name: local
  context: { cluster: local, user: $2 }
current-context: local
EOF
}
