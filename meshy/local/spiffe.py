"""SPIFFE identities as Istio names them: spiffe://<trust domain>/ns/<namespace>/sa/<service account>
(pkg/spiffe/spiffe.go at 1.30.3). Apart from the CA (identity.py) so that policies can name identities
without loading the cryptography package."""

from __future__ import annotations

TRUST_DOMAIN = "cluster.local"
# The service accounts of the gateways istioctl installs (their Deployments' serviceAccountName).
GATEWAY_ACCOUNTS = {
    "istio-ingressgateway": "istio-ingressgateway-service-account",
    "istio-egressgateway": "istio-egressgateway-service-account",
}


def spiffe_id(namespace: str, service_account: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"
