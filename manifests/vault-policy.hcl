# The only Vault/OpenBao policy the reloader needs: read the metadata of KV v2
# secrets (versions and their creation times). It can read no secret value:
# requests to secret/data/* are denied (403).
# Add one block per KV v2 mount whose secrets workloads use.
path "secret/metadata/*" {
  capabilities = ["read"]
}

# Create the Kubernetes auth role for the ServiceAccount:
#   vault policy write vault-secrets-reloader manifests/vault-policy.hcl
#   vault write auth/kubernetes/role/vault-secrets-reloader \
#     bound_service_account_names=vault-secrets-reloader \
#     bound_service_account_namespaces=bank-vaults-infra \
#     policies=vault-secrets-reloader ttl=1h
