// s3rver with S3's conditional writes: a PUT with If-Match or If-None-Match is refused with
// 412 PreconditionFailed when the object's current ETag does not satisfy it, as S3 does.
//
// Why: Tansu's S3 engine keeps each consumer group's state in one object and updates it with
// conditional PUTs (optimistic concurrency). s3rver 3.7.1 ignores the conditions, so when two
// members of a group wrote at once, the last write won and the other member was forgotten: two idle
// consumers in one group were assigned partitions 6 and 7 times in 90 s, against once each on the
// memory engine and on moto, which honours the conditions (python -m bench.brokers --groups-only).
// PUTs of one key are serialised here so that the check and the write are one step.
//
// Usage: node s3rver_conditional.js --directory DIR --address 127.0.0.1 --port PORT --configure-bucket NAME
'use strict';

const S3rver = require('s3rver');

function option(name) {
  const at = process.argv.indexOf(`--${name}`);
  if (at < 0 || at + 1 >= process.argv.length) {
    console.error(`s3rver_conditional: --${name} is required`);
    process.exit(2);
  }
  return process.argv[at + 1];
}

function bare(etag) {
  return etag.trim().replace(/^W\//, '').replace(/^"|"$/g, '');
}

const server = new S3rver({
  directory: option('directory'),
  address: option('address'),
  port: Number(option('port')),
  silent: true,
  configureBuckets: [{ name: option('configure-bucket'), configs: [] }],
});

const tails = new Map(); // key -> the promise the next PUT of that key waits for

async function conditionalPut(ctx, next) {
  const ifMatch = ctx.get('if-match');
  const ifNoneMatch = ctx.get('if-none-match');
  if (ctx.method !== 'PUT' || (!ifMatch && !ifNoneMatch)) return next();
  const path = decodeURIComponent(ctx.path).replace(/^\/+/, '');
  const slash = path.indexOf('/');
  if (slash < 0) return next();
  const bucket = path.slice(0, slash);
  const key = path.slice(slash + 1);

  const before = tails.get(path) || Promise.resolve();
  let release;
  const done = new Promise(resolve => (release = resolve));
  const tail = before.then(() => done);
  tails.set(path, tail);
  await before;
  try {
    let current = null;
    if (await server.store.existsObject(bucket, key)) {
      current = bare((await server.store.getMetadata(bucket, key)).etag);
    }
    const refused =
      (ifNoneMatch && ifNoneMatch.trim() === '*' && current !== null) ||
      (ifMatch && ifMatch.trim() === '*' && current === null) ||
      (ifMatch && ifMatch.trim() !== '*' && current !== bare(ifMatch));
    if (refused) {
      ctx.status = 412;
      ctx.type = 'application/xml';
      ctx.body =
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>PreconditionFailed</Code>' +
        '<Message>At least one of the pre-conditions you specified did not hold</Message>' +
        `<Condition>${ifMatch ? 'If-Match' : 'If-None-Match'}</Condition></Error>`;
      return;
    }
    await next();
  } finally {
    release();
    if (tails.get(path) === tail) tails.delete(path);
  }
}

server.middleware.unshift(conditionalPut);
server.run().catch(err => {
  console.error(err);
  process.exit(1);
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));
