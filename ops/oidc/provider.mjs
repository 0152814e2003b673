// A real OpenID provider for Linkage's single-sign-on tests: oidc-provider (npm), issuing JWT
// access tokens by the client-credentials grant. Synthetic clients only; every client's token
// carries the claims Linkage maps to an actor, a role and an agency.
//
//   PORT=4455 KID=key-1 node provider.mjs     (prints "ready <issuer>" when listening)
//
// Clients (secret "secret" for all): `sup-north` (supervisor of agency north), `billing-north`,
// `odd-role` (a role Linkage does not know), `elsewhere` (tokens for another audience).
// A new KID on restart is a key rotation: the JWKS then holds only the new key.
import Provider from 'oidc-provider';
import { generateKeyPair, exportJWK } from 'jose';

const port = Number(process.env.PORT || 4455);
const kid = process.env.KID || 'key-1';
const audience = process.env.AUDIENCE || 'https://linkage.example/api';
const issuer = `http://127.0.0.1:${port}`;

const { privateKey } = await generateKeyPair('RS256', { extractable: true });
const key = { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };

const claims = {
  'sup-north': { linkage_role: 'supervisor', linkage_agency: 'north' },
  'billing-north': { linkage_role: 'billing', linkage_agency: 'north' },
  'odd-role': { linkage_role: 'janitor', linkage_agency: 'north' },
  'elsewhere': { linkage_role: 'supervisor', linkage_agency: 'north' },
};
const client = (client_id) => ({
  client_id,
  client_secret: 'secret',
  grant_types: ['client_credentials'],
  redirect_uris: [],
  response_types: [],
});

const provider = new Provider(issuer, {
  clients: Object.keys(claims).map(client),
  jwks: { keys: [key] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => audience,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource, c) => ({
        audience: c.clientId === 'elsewhere' ? 'https://someone-else.example/api' : audience,
        accessTokenFormat: 'jwt',
        accessTokenTTL: 600,
        jwt: { sign: { alg: 'RS256' } },
        scope: '',
      }),
    },
  },
  extraTokenClaims: (ctx, token) => claims[token.clientId] || {},
});
provider.listen(port, '127.0.0.1', () => {
  process.stdout.write(`ready ${issuer}\n`);
});
