// s3rver as Tansu's S3 engine needs it: S3's conditional writes, and listings that cost the page, not
// the bucket. Run with `node --openssl-legacy-provider` (below).
//
// Conditional writes: a PUT with If-Match or If-None-Match is refused with 412 PreconditionFailed when
// the object's current ETag does not satisfy it, as S3 does. Tansu's S3 engine keeps each consumer
// group's state in one object and updates it with conditional PUTs (optimistic concurrency). s3rver
// 3.7.1 ignores the conditions, so when two members of a group wrote at once, the last write won and
// the other member was forgotten: two idle consumers in one group were assigned partitions 6 and 7
// times in 90 s, against once each on the memory engine and on moto, which honours the conditions
// (python -m bench.brokers --groups-only).
//
// One request of a key at a time: s3rver rewrites an object's file in place, so a GET that read while
// a PUT of the same key rewrote it sent a body cut short (or empty) under the old length. The broker
// reads its group's state and the partitions' watermarks while they are rewritten: once or a few
// times an hour at the reference load it got `IncompleteBody`, answered its client with an error and
// closed the connection, and the worker behind it stalled for seconds (docs/operations.md, "What the
// store is asked"). Requests of one object (GET, HEAD, PUT, DELETE) are serialised here, a GET until
// its body is sent, which also makes a conditional PUT's check and write one step.
//
// Listings: Tansu lists a partition's record objects on every fetch (tansu-storage 0.6.0,
// dynostore.rs `fetch`). s3rver 3.7.1 answers a listing by walking the bucket's directories with a
// stat of every file, again for every page of 1,000 keys: a full listing of 12,000 objects took 3.0 s
// here, so the cost grew with the square of a partition's batches. The store below keeps the bucket's
// keys in one sorted array (loaded once at start, kept by the store's own put, copy and delete) and
// their metadata in a bounded cache, so a page costs a binary search and its own keys.
// And s3rver signs its continuation tokens with DES, which Node 20's OpenSSL 3 has only in its legacy
// provider: without `--openssl-legacy-provider` every listing longer than one page answers 500, which
// is how the broker stopped serving fetches once a partition held 1,000 batches (docs/operations.md).
//
// Usage: node --openssl-legacy-provider s3rver_for_tansu.js --directory DIR --address 127.0.0.1 --port PORT --configure-bucket NAME
'use strict';

const S3rver = require('s3rver');
const S3Object = require('s3rver/lib/models/object');

function option(name) {
  const at = process.argv.indexOf(`--${name}`);
  if (at < 0 || at + 1 >= process.argv.length) {
    console.error(`s3rver_for_tansu: --${name} is required`);
    process.exit(2);
  }
  return process.argv[at + 1];
}

// The bucket and key a path-style request names (key null when it names no object).
function objectOf(ctx) {
  const path = decodeURIComponent(ctx.path).replace(/^\/+/, '');
  const slash = path.indexOf('/');
  if (slash < 0) return { path, bucket: path, key: null };
  return { path, bucket: path.slice(0, slash), key: path.slice(slash + 1) };
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

const tails = new Map(); // bucket/key -> the promise the next request of that object waits for

async function oneAtATime(ctx, next) {
  const { path, key } = objectOf(ctx);
  if (key === null || ctx.querystring) return next(); // listings, multipart parts: not one object's
  const before = tails.get(path) || Promise.resolve();
  let release;
  const done = new Promise(resolve => (release = resolve));
  const tail = before.then(() => done);
  tails.set(path, tail);
  const finished = () => {
    release();
    if (tails.get(path) === tail) tails.delete(path);
  };
  await before;
  let sending = false;
  try {
    await next();
    if (ctx.body && typeof ctx.body.pipe === 'function') {
      sending = true; // koa pipes the file after the middleware returns: hold the key until it is sent
      ctx.res.once('close', finished);
    }
  } finally {
    if (!sending) finished();
  }
}

async function conditionalPut(ctx, next) {
  const ifMatch = ctx.get('if-match');
  const ifNoneMatch = ctx.get('if-none-match');
  if (ctx.method !== 'PUT' || (!ifMatch && !ifNoneMatch)) return next();
  const { bucket, key } = objectOf(ctx);
  if (key === null) return next();
  // oneAtATime holds this object's other requests meanwhile: the check and the write are one step.
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
  return next();
}

// Conditional GETs: s3rver 3.7.1 opens the object's file before it checks If-None-Match and
// If-Modified-Since, and answers 304 without closing it (lib/controllers/object.js, getObject): one
// file descriptor lost per 304. The broker reads each partition's watermark and the cluster's
// meta.json that way, so the store leaked about 5 a second at the reference load and died of EMFILE
// (20,000 open files) 58 minutes into the hour's soak (docs/operations.md). Here the conditions are
// judged from the object's metadata, as s3rver judges them, and a request that is not answered 304
// goes on without them, so s3rver always sends the body it opened (a 200 is a valid answer to a
// conditional GET, should the object change in between).
async function conditionalGet(ctx, next) {
  if (ctx.method !== 'GET' && ctx.method !== 'HEAD') return next();
  const noneMatch = ctx.headers['if-none-match'];
  const modifiedSince = ctx.headers['if-modified-since'];
  if (!noneMatch && !modifiedSince) return next();
  const { bucket, key } = objectOf(ctx);
  if (!key || ctx.querystring) return next(); // not an object's GET
  let object = null;
  try {
    object = new S3Object(bucket, key, null, await server.store.getMetadata(bucket, key));
  } catch (err) {
    if (err.code !== 'ENOENT') throw err;
  }
  if (object && ((noneMatch && (noneMatch === object.metadata['etag'] || noneMatch === '*')) ||
                 (modifiedSince && new Date(modifiedSince) >= object.lastModifiedDate))) {
    ctx.status = 304;
    return;
  }
  delete ctx.req.headers['if-none-match'];
  delete ctx.req.headers['if-modified-since'];
  return next();
}

server.middleware.unshift(conditionalPut);
server.middleware.unshift(conditionalGet);
server.middleware.unshift(oneAtATime);

// --- listings from a sorted index of keys --------------------------------------------------------

const { walk } = require('s3rver/lib/utils');

const OBJECT_SUFFIX = '._S3rver_object';
const METADATA_CACHED = 50000; // about 15 MB; older entries are read again from disk

const store = server.store;
const keysOf = new Map(); // bucket -> its object keys, sorted
const metadataOf = new Map(); // `${bucket}/${key}` -> metadata, oldest use first

function lowerBound(keys, key) {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (keys[mid] < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function bucketKeys(bucket) {
  let keys = keysOf.get(bucket);
  if (!keys) {
    const root = store.getBucketPath(bucket);
    keys = [];
    for (const file of walk(root)) {
      if (file.endsWith(OBJECT_SUFFIX)) keys.push(file.slice(root.length + 1, -OBJECT_SUFFIX.length));
    }
    keys.sort();
    keysOf.set(bucket, keys);
  }
  return keys;
}

function changed(bucket, key) {
  const id = `${bucket}/${key}`;
  metadataOf.delete(id);
  written.set(id, (written.get(id) || 0) + 1);
  if (written.size > METADATA_CACHED) written.delete(written.keys().next().value);
}

function indexed(bucket, key) {
  const keys = bucketKeys(bucket);
  const at = lowerBound(keys, key);
  if (keys[at] !== key) keys.splice(at, 0, key);
  changed(bucket, key);
}

function unindexed(bucket, key) {
  const keys = bucketKeys(bucket);
  const at = lowerBound(keys, key);
  if (keys[at] === key) keys.splice(at, 1);
  changed(bucket, key);
}

// Only listings read the cache: GET, HEAD and the conditional PUTs above read the metadata from the
// disk, so an ETag they compare is never a cached one.
const written = new Map(); // `${bucket}/${key}` -> how many times it was written or deleted

async function listedMetadata(bucket, key) {
  const id = `${bucket}/${key}`;
  let metadata = metadataOf.get(id);
  if (metadata) {
    metadataOf.delete(id); // to the back: most recently used
  } else {
    const before = written.get(id);
    metadata = await store.getMetadata(bucket, key);
    if (written.get(id) !== before) return metadata; // written meanwhile: maybe read half old, not kept
  }
  metadataOf.set(id, metadata);
  if (metadataOf.size > METADATA_CACHED) metadataOf.delete(metadataOf.keys().next().value);
  return metadata;
}

const put = store.putObject.bind(store);
store.putObject = async object => {
  const done = await put(object);
  indexed(object.bucket, object.key);
  return done;
};
const copy = store.copyObject.bind(store);
store.copyObject = async (srcBucket, srcKey, destBucket, destKey, replacementMetadata) => {
  changed(destBucket, destKey);
  const done = await copy(srcBucket, srcKey, destBucket, destKey, replacementMetadata);
  indexed(destBucket, destKey);
  return done;
};
// putObjectMultipart and s3rver's own writes go through this.putObject, the wrapper above.
const remove = store.deleteObject.bind(store);
store.deleteObject = async (bucket, key) => {
  await remove(bucket, key);
  unindexed(bucket, key);
};
const removeBucket = store.deleteBucket.bind(store);
store.deleteBucket = async bucket => {
  await removeBucket(bucket);
  keysOf.delete(bucket);
};

// The same answer as s3rver's own listObjects (keys in order, after startAfter, under prefix, common
// prefixes rolled up at the delimiter, at most maxKeys), found by binary search in the index.
store.listObjects = async (bucket, { delimiter = '', startAfter = '', prefix = '', maxKeys = Infinity }) => {
  const keys = bucketKeys(bucket);
  const commonPrefixes = new Set();
  const listed = [];
  let isTruncated = false;
  let at = lowerBound(keys, prefix > startAfter ? prefix : startAfter);
  while (at < keys.length) {
    const key = keys[at];
    if (!key.startsWith(prefix)) break;
    if (key <= startAfter) {
      at += 1;
      continue;
    }
    const cut = delimiter ? key.indexOf(delimiter, prefix.length) : -1;
    if (cut !== -1) {
      const common = key.slice(0, cut + delimiter.length);
      commonPrefixes.add(common);
      at = lowerBound(keys, common + '\uffff'); // past every key under that common prefix
      continue;
    }
    if (listed.length === maxKeys) {
      isTruncated = true;
      break;
    }
    listed.push(key);
    at += 1;
  }
  const metadata = await Promise.all(
    listed.map(key =>
      listedMetadata(bucket, key).catch(err => {
        if (err.code === 'ENOENT') return undefined; // removed behind the store's back
        throw err;
      }),
    ),
  );
  return {
    objects: listed
      .map((key, i) => [key, metadata[i]])
      .filter(([, m]) => m !== undefined)
      .map(([key, m]) => new S3Object(bucket, key, null, m)),
    commonPrefixes: [...commonPrefixes].sort(),
    isTruncated,
  };
};

server.run().catch(err => {
  console.error(err);
  process.exit(1);
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));

// --- what the store is asked (opt-in) -------------------------------------------------------------

// With QUARTIER_S3_REQUEST_MIX_S=N in its environment the store logs, every N seconds, its CPU time and
// how many requests of each kind it has answered so far (method, status, key with digits as N), the
// count, mean duration and bytes sent of each: `python -m bench.store_requests LOG` turns two such
// blocks into rates (docs/operations.md, "What the store is asked").
const mixEvery = Number(process.env.QUARTIER_S3_REQUEST_MIX_S || 0);
if (mixEvery > 0) {
  const mix = new Map(); // kind -> [count, nanoseconds, bytes]
  server.middleware.unshift(async (ctx, next) => {
    const began = process.hrtime.bigint();
    let status;
    try {
      await next();
      status = ctx.status;
    } catch (err) {
      status = err.status || 500; // s3rver throws its S3 errors (NoSuchKey...) for koa to answer
      throw err;
    } finally {
      tally(ctx, status, began);
    }
  });
  function tally(ctx, status, began) {
    const { key } = objectOf(ctx);
    const listing = key === null || 'prefix' in ctx.query || 'list-type' in ctx.query;
    const what = listing ? `LIST ${ctx.query.prefix || ''}` : key;
    const kind = `${ctx.method} ${status} ${what.replace(/\d+/g, 'N')}`;
    const seen = mix.get(kind) || [0, 0n, 0];
    seen[0] += 1;
    seen[1] += process.hrtime.bigint() - began;
    seen[2] += Number(ctx.length || 0);
    mix.set(kind, seen);
  }
  setInterval(() => {
    const cpu = process.cpuUsage();
    let total = 0;
    for (const [count] of mix.values()) total += count;
    const lines = [`request mix at ${new Date().toISOString()}: cpu_s ${(cpu.user + cpu.system) / 1e6} requests ${total}`];
    for (const [kind, [count, ns, bytes]] of [...mix.entries()].sort((a, b) => b[1][0] - a[1][0])) {
      lines.push(`  ${count}\t${(Number(ns) / 1e6 / count).toFixed(2)} ms\t${bytes} B\t${kind}`);
    }
    console.log(lines.join('\n'));
  }, mixEvery * 1000).unref();
}
