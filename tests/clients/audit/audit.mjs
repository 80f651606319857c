// GraphQL over HTTP conformance: graphql-http's auditServer against a running server.
// Usage: node audit.mjs <url>. Prints one JSON array of {id, name, status, reason} and
// exits 0 (the test reads the statuses); exits 2 when the audit itself cannot run.
import { auditServer } from 'graphql-http';

const url = process.argv[2];
if (!url) {
  console.error('usage: node audit.mjs <url>');
  process.exit(2);
}

try {
  const results = await auditServer({ url });
  const report = results.map((result) => ({
    id: result.id,
    name: result.name,
    status: result.status,
    reason: result.status === 'ok' ? null : result.reason,
  }));
  process.stdout.write(JSON.stringify(report) + '\n');
} catch (error) {
  console.error(`audit failed to run: ${error && error.stack ? error.stack : error}`);
  process.exit(2);
}
