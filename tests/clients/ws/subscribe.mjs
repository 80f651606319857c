// The real graphql-ws client (with `ws`) against a running shopql server
// (tests/test_subscriptions_node.py): connect with a token, subscribe, receive the event a
// mutation causes, complete; then a bad token, whose connection the server closes with 4403.
// Prints one JSON line with what it saw.
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const { WS_URL, HTTP_URL, STAFF_TOKEN, VARIANT_ID } = process.env;
const STOCK = `subscription($ids: [ID!]!) {
  variantStockChanged(variantIds: $ids) { id sku quantityAvailable }
}`;
const UPDATE = `mutation($id: ID!, $q: Int!) {
  variantStockUpdate(id: $id, quantity: $q) { errors { code message } }
}`;

async function gauge() {
  const text = await (await fetch(`${HTTP_URL}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith("shopql_websocket_subscriptions_active "));
  return Number(line.split(" ")[1]);
}

async function waitGauge(value) {
  const deadline = Date.now() + 10000;
  while ((await gauge()) !== value) {
    if (Date.now() > deadline) throw new Error(`gauge never reached ${value}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const result = {};

// 1. Signed in: subscribe, cause an event with a mutation, receive it, complete.
const client = createClient({
  url: WS_URL,
  webSocketImpl: WebSocket,
  connectionParams: { authorization: `Bearer ${STAFF_TOKEN}` },
  retryAttempts: 0,
  on: { connected: () => (result.connected = true) },
});
let unsubscribe;
const received = new Promise((resolve, reject) => {
  unsubscribe = client.subscribe(
    { query: STOCK, variables: { ids: [VARIANT_ID] } },
    { next: resolve, error: reject, complete: () => {} },
  );
});
await waitGauge(1);
const response = await fetch(`${HTTP_URL}/graphql`, {
  method: "POST",
  headers: { "content-type": "application/json", authorization: `Bearer ${STAFF_TOKEN}` },
  body: JSON.stringify({ query: UPDATE, variables: { id: VARIANT_ID, q: 17 } }),
});
result.mutation = (await response.json()).data.variantStockUpdate.errors;
result.event = await withTimeout(received, 10000, "the stock event");
unsubscribe(); // sends `complete`
await waitGauge(0);
result.gaugeAfterComplete = 0;
await client.dispose();

// 2. A bad token: the server closes the connection with 4403 Forbidden.
const refused = createClient({
  url: WS_URL,
  webSocketImpl: WebSocket,
  connectionParams: { authorization: "Bearer not-a-valid-token" },
  retryAttempts: 0,
});
result.badTokenClose = await withTimeout(
  new Promise((resolve) => {
    refused.on("closed", (event) => resolve({ code: event.code, reason: event.reason }));
    refused.subscribe(
      { query: STOCK, variables: { ids: [VARIANT_ID] } },
      { next: () => resolve({ code: "unexpected event" }), error: () => {}, complete: () => {} },
    );
  }),
  10000,
  "the 4403 close",
);
await refused.dispose();
console.log(JSON.stringify(result));
