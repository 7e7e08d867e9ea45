{% autoescape off %}{# Every value below is a quoted shell word from the view (pools/views.py _user_data); nothing else is interpolated. #}#!/bin/bash
# eipdash user data for launch spec {{ sh.name }} (cluster {{ sh.cluster }}, region {{ sh.region }}).
# EIP pool: EIPs tagged {{ sh.selector }}. The pool's addresses below are a snapshot taken when this
# script was rendered; download it again after tagging new EIPs into the pool.
set -euo pipefail

EIPDASH_TAINT={{ sh.taint }}
EIPDASH_NODE_LABELS={{ sh.labels }}
EIPDASH_POOL_IPS=({{ sh.pool_ips }})
EIPDASH_WAIT_SECONDS="${EIPDASH_WAIT_SECONDS:-600}"

# 1. Register with the startup taint: no pod is scheduled until eipdash has attached a pool EIP and
#    lifted the taint. On EKS AMIs that use bootstrap.sh:
KUBELET_EXTRA_ARGS="--register-with-taints=${EIPDASH_TAINT} --node-labels=${EIPDASH_NODE_LABELS}"
if [ -x /etc/eks/bootstrap.sh ]; then
  /etc/eks/bootstrap.sh "${CLUSTER_NAME:?set CLUSTER_NAME}" --kubelet-extra-args "${KUBELET_EXTRA_ARGS}"
else
  # Other distributions: pass the same flags to kubelet, e.g. through KUBELET_EXTRA_ARGS.
  echo "KUBELET_EXTRA_ARGS=${KUBELET_EXTRA_ARGS}" >> /etc/default/kubelet
fi

# 2. Health check: wait until the instance's public IPv4 is one of this pool's EIPs (IMDSv2).
eipdash_public_ipv4() {
  local token
  token="$(curl -sS --max-time 2 -X PUT "http://169.254.169.254/latest/api/token" \
    -H "X-aws-ec2-metadata-token-ttl-seconds: 60")" || return 1
  curl -sS --max-time 2 -H "X-aws-ec2-metadata-token: ${token}" \
    "http://169.254.169.254/latest/meta-data/public-ipv4"
}

eipdash_wait_for_pool_eip() {
  local deadline=$((SECONDS + EIPDASH_WAIT_SECONDS)) ip candidate
  while [ "${SECONDS}" -lt "${deadline}" ]; do
    ip="$(eipdash_public_ipv4 2>/dev/null || true)"
    for candidate in "${EIPDASH_POOL_IPS[@]}"; do
      if [ -n "${ip}" ] && [ "${ip}" = "${candidate}" ]; then
        echo "eipdash: public IPv4 ${ip} is a pool EIP"
        touch /run/eipdash-eip-ready
        return 0
      fi
    done
    sleep 5
  done
  echo "eipdash: no pool EIP after ${EIPDASH_WAIT_SECONDS}s (public IPv4: ${ip:-none})" >&2
  return 1
}

eipdash_wait_for_pool_eip
{% endautoescape %}
