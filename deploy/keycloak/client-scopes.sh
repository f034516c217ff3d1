#!/bin/bash
# Adds the Open Banking UK and CDR client scopes to the realm dcr-proxy fronts, once, after Keycloak imported
# the realm (deploy/kubernetes/keycloak-realm.yaml cannot carry them: a realm file declaring any client scope
# loses all of Keycloak's built-in ones). Idempotent. Runs inside the keycloak container, as the bootstrap
# administrator, against Keycloak's loopback listener:
#
#   kubectl exec -i deploy/bank-idp -c keycloak -- bash -s < deploy/keycloak/client-scopes.sh
#
# Each scope is an OpenID Connect client scope whose name goes into the access token's `scope` (dcr-proxy checks
# `accounts`/`cdr:registration` there). The "Allowed Client Scopes" registration policy in the realm file must
# list every scope here, and `openid`: a scope it does not list makes Keycloak refuse the registration (403),
# and a scope it lists that does not exist is dropped from the client without a word, which dcr-proxy then
# refuses.
set -euo pipefail
REALM=${REALM:-bank}
SCOPES=(
  accounts payments fundsconfirmations
  cdr:registration
  bank:accounts.basic:read bank:accounts.detail:read bank:transactions:read
  bank:payees:read bank:regular_payments:read
  common:customer.basic:read common:customer.detail:read
)
kcadm=/opt/keycloak/bin/kcadm.sh
cfg=$(mktemp)
trap 'rm -f "$cfg"' EXIT
"$kcadm" config credentials --config "$cfg" --server http://127.0.0.1:8080 --realm master \
  --user "$KC_BOOTSTRAP_ADMIN_USERNAME" --password "$KC_BOOTSTRAP_ADMIN_PASSWORD"
existing=$("$kcadm" get client-scopes --config "$cfg" -r "$REALM" --fields name --format csv --noquotes)
for scope in "${SCOPES[@]}"; do
  if grep -qxF "$scope" <<<"$existing"; then
    echo "client scope $scope: present"
    continue
  fi
  "$kcadm" create client-scopes --config "$cfg" -r "$REALM" \
    -s name="$scope" -s protocol=openid-connect \
    -s 'attributes."include.in.token.scope"=true' \
    -s 'attributes."display.on.consent.screen"=true'
  echo "client scope $scope: created"
done
