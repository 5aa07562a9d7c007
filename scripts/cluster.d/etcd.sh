# shellcheck shell=bash
# etcd: the API server's store, one member on loopback, no fsync (test data only).

etcd_ready() { curl -fsS "http://127.0.0.1:$etcd_port/health"; }

etcd_up() {
  local peer_port
  peer_port=$(free_port)
  launch etcd "$bin/etcd" --name local --data-dir "$state/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "local=http://127.0.0.1:$peer_port" --listen-metrics-urls "" \
    --quota-backend-bytes 4294967296 --unsafe-no-fsync
  wait_for etcd etcd_ready
}
