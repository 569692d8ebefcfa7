// What a Node.js user would write instead of natsfn: a service on the npm `nats`
// package that runs the same handler in one process, JSON in and JSON out, with a
// Lambda-like context. A callback subscription (no await per message) in a queue
// group. Usage: node node_service.js URL SUBJECT CODE_DIR (the `nats` package comes
// from tests/it/js/node_modules, which the bench puts on NODE_PATH).
'use strict';

const crypto = require('crypto');
const path = require('path');
const { connect } = require('nats');

const [url, subject, codeDir] = process.argv.slice(2);
const handler = require(path.join(codeDir, 'app.js')).handler;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function context() {
  const deadline = Date.now() + 3000;
  return {
    functionName: 'nodeservice',
    functionVersion: '1',
    invokedFunctionArn: 'arn:aws:lambda:local:000000000000:function:nodeservice',
    memoryLimitInMB: '128',
    awsRequestId: crypto.randomUUID(),
    logGroupName: '/aws/lambda/nodeservice',
    logStreamName: 'nodeservice',
    callbackWaitsForEmptyEventLoop: true,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
  };
}

async function main() {
  const nc = await connect({ servers: url });
  nc.subscribe(subject, {
    queue: 'nodeservice',
    callback: (err, msg) => {
      if (err) return;
      let event;
      try {
        event = msg.data.length ? JSON.parse(decoder.decode(msg.data)) : {};
      } catch (e) {
        msg.respond(encoder.encode(JSON.stringify({ errorType: 'Runtime.UnmarshalError', errorMessage: String(e) })));
        return;
      }
      Promise.resolve(handler(event, context())).then(
        (result) => msg.respond(encoder.encode(JSON.stringify(result))),
        (e) => msg.respond(encoder.encode(JSON.stringify({ errorType: e.name, errorMessage: e.message }))),
      );
    },
  });
  await nc.flush();
  process.stdout.write('ready\n');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
