// Lists and describes natsfn functions with the nats.js service client, as any NATS
// micro tooling would: `node micro.js <server url> <function>` prints one JSON object
// with the replies of ping (all services, then the function), info and stats.
"use strict";

const { connect } = require("nats");

async function collect(replies) {
  const all = [];
  for await (const reply of await replies) {
    all.push(reply);
  }
  return all;
}

async function main() {
  const [servers, name] = process.argv.slice(2);
  if (!servers || !name) {
    throw new Error("usage: node micro.js <server url> <function>");
  }
  const nc = await connect({ servers });
  const svc = nc.services.client();
  const out = {
    ping_all: await collect(svc.ping()),
    ping: await collect(svc.ping(name)),
    info: await collect(svc.info(name)),
    stats: await collect(svc.stats(name)),
  };
  await nc.close();
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((err) => {
  process.stderr.write(`micro.js: ${err.stack || err}\n`);
  process.exit(1);
});
