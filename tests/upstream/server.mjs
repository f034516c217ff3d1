// Test upstream for dcr-proxy. UPSTREAM_FLAVOUR picks what it is:
//   (unset) or "oidc-provider": oidc-provider 9 as it is (default.mjs);
//   "keycloak": a stand-in for Keycloak built on oidc-provider (keycloak.mjs). It is not Keycloak.
//   "forgerock-am": a stand-in for ForgeRock / Ping AM built on oidc-provider (forgerock-am.mjs). It is not AM.
//
// Contract (relied upon by the Rust integration harness):
//   stdout: exactly one line, {"event":"listening","port":N,"issuer":...} (more fields in the stand-in modes).
//   stderr: everything else.
//   See README.md for env vars and routes.

// oidc-provider prints its notices with console.info (stdout). stdout is
// reserved for the single "listening" line, so route console output to stderr.
console.log = console.error;
console.info = console.error;
console.debug = console.error;

const flavour = process.env.UPSTREAM_FLAVOUR || 'oidc-provider';
if (flavour === 'oidc-provider') {
  await import('./default.mjs');
} else if (flavour === 'keycloak') {
  await import('./keycloak.mjs');
} else if (flavour === 'forgerock-am') {
  await import('./forgerock-am.mjs');
} else {
  process.stderr.write('upstream: UPSTREAM_FLAVOUR must be oidc-provider (default), keycloak or forgerock-am\n');
  process.exit(2);
}
