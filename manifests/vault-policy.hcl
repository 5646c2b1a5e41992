# The only Vault/OpenBao policy the reloader needs: read the metadata of KV v2
# secrets (versions and their creation times). It can read no secret value:
# requests to secret/data/* are denied (403).
# Add one block per KV v2 mount whose secrets workloads use.
path "secret/metadata/*" {
  capabilities = ["read"]
}

# Optional, OpenBao only: --list-secret-metadata. The reloader then reads the
# versions of a directory holding 3 or more secrets in use with a few list
# requests (50 keys each) instead of one read per secret. This lets it see
# the names and metadata of every secret in such a directory, still no value.
# Uncomment and repeat per KV v2 mount.
#path "secret/detailed-metadata/*" {
#  capabilities = ["list"]
#}

# Optional: dynamic secrets (the dynamic-secret-max-age: auto annotation).
# How long credentials from database/creds/R (or pki/issue/R, aws/creds/R, ...)
# live is read from the role and the mount's tune, never by reading the
# credentials: nothing on */creds/*, */issue/*, */sign/* or */data/* is needed,
# and no lease is created (a role's definition holds no credentials). Uncomment
# and repeat per dynamic mount (here database/); an ldap mount has role/*
# instead of roles/*. The role gives its own TTLs, the tune the mount's (used
# where the role sets none, or alone if the role cannot be read); with neither,
# the workload gets a Warning Event naming the missing paths.
#path "database/roles/*" {
#  capabilities = ["read"]
#}
#path "sys/mounts/database/tune" {
#  capabilities = ["read"]
#}

# Create the Kubernetes auth role for the ServiceAccount:
#   vault policy write vault-secrets-reloader manifests/vault-policy.hcl
#   vault write auth/kubernetes/role/vault-secrets-reloader \
#     bound_service_account_names=vault-secrets-reloader \
#     bound_service_account_namespaces=bank-vaults-infra \
#     policies=vault-secrets-reloader ttl=1h
