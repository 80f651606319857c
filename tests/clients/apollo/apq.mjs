// Automatic persisted queries with the real Apollo Client: createPersistedQueryLink
// (sha256 from node's crypto, hashed queries sent by GET) in front of an HttpLink.
// Usage: node apq.mjs <url>. Runs the same query with two fresh clients, one after the
// other, and prints a JSON array of the product names each run got; exits 1 on any error.
import { ApolloClient, HttpLink, InMemoryCache, gql } from '@apollo/client/core/index.js';
import { createPersistedQueryLink } from '@apollo/client/link/persisted-queries/index.js';
import { createHash } from 'node:crypto';

const url = process.argv[2];
if (!url) {
  console.error('usage: node apq.mjs <url>');
  process.exit(2);
}

const LISTING = gql`
  query ApqListing($n: Int!) {
    products(first: $n) {
      nodes {
        name
      }
    }
  }
`;

const sha256 = (text) => createHash('sha256').update(text).digest('hex');

async function run() {
  const link = createPersistedQueryLink({ sha256, useGETForHashedQueries: true }).concat(
    new HttpLink({ uri: url, fetch }),
  );
  const client = new ApolloClient({ link, cache: new InMemoryCache() });
  const { data, errors } = await client.query({
    query: LISTING,
    variables: { n: 3 },
    fetchPolicy: 'network-only',
    errorPolicy: 'none',
  });
  if (errors && errors.length) throw new Error(JSON.stringify(errors));
  return data.products.nodes.map((node) => node.name);
}

try {
  const runs = [];
  for (let i = 0; i < 2; i += 1) runs.push(await run());
  process.stdout.write(JSON.stringify(runs) + '\n');
} catch (error) {
  console.error(`apollo run failed: ${error && error.stack ? error.stack : error}`);
  if (error && error.networkError && error.networkError.result) {
    console.error(JSON.stringify(error.networkError.result));
  }
  process.exit(1);
}
