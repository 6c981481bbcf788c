#!/usr/bin/env node
// Stand-in for a worker written with the TypeScript library isolated-workers
// (child_process driver, JsonSerializer by default). Plain Node, no dependencies.
// See README.md in this directory.
//
// Test knobs (environment): IW_NODE_SERIALIZER=json|verbose picks the
// serializer; IW_NODE_VALIDATE=1 installs a validation middleware that throws
// for message types without a handler.
'use strict';

const fs = require('node:fs');
const net = require('node:net');

const STARTUP_DATA_ENV_KEY = 'ISOLATED_WORKERS_STARTUP_DATA';
const DEFAULT_SERVER_CONNECT_TIMEOUT = 30000;

// Serializers, as a TS worker would pass them to startWorkerServer(). The TS
// worker does not look at the startup data's "serializer" field (nor does this).
const SERIALIZERS = {
  // The library's default JsonSerializer: NDJSON.
  json: {
    name: 'JsonSerializer',
    terminator: '\n',
    serialize: (msg) => JSON.stringify(msg),
    deserialize: (text) => JSON.parse(text),
  },
  // VerboseJsonSerializer: pretty-printed JSON (frames contain single
  // newlines), terminated by a blank line.
  verbose: {
    name: 'VerboseJsonSerializer',
    terminator: '\n\n',
    serialize: (msg) => JSON.stringify(msg, null, 2),
    deserialize: (text) => JSON.parse(text),
  },
};

function log(...args) {
  process.stderr.write(`[worker.js ${process.pid}] ${args.join(' ')}\n`);
}

function refuse(msg) {
  process.stderr.write(`[worker.js] refusing to start: ${msg}\n`);
  process.exit(1);
}

// ---- startup data (the only variable the TS worker reads) -----------------

const raw = process.env[STARTUP_DATA_ENV_KEY];
if (raw === undefined || raw === '') {
  refuse(`${STARTUP_DATA_ENV_KEY} is not set; this worker must be spawned by an isolated-workers host`);
}
let startup;
try {
  startup = JSON.parse(raw);
} catch (err) {
  refuse(`${STARTUP_DATA_ENV_KEY} is not valid JSON: ${err.message}`);
}
if (startup === null || typeof startup !== 'object' || Array.isArray(startup)) {
  refuse(`${STARTUP_DATA_ENV_KEY} is not a JSON object`);
}
if (startup.driver !== 'child_process') {
  refuse(`${STARTUP_DATA_ENV_KEY}.driver is ${JSON.stringify(startup.driver)}, want "child_process"`);
}
if (typeof startup.socketPath !== 'string' || startup.socketPath === '') {
  refuse(`${STARTUP_DATA_ENV_KEY}.socketPath is missing`);
}
const socketPath = startup.socketPath;
const serializerName = process.env.IW_NODE_SERIALIZER || 'json';
if (!Object.prototype.hasOwnProperty.call(SERIALIZERS, serializerName)) {
  refuse(`IW_NODE_SERIALIZER is ${JSON.stringify(serializerName)}, want one of ${Object.keys(SERIALIZERS).join(', ')}`);
}
const serializer = SERIALIZERS[serializerName];
const validate = process.env.IW_NODE_VALIDATE === '1';
const serverConnectTimeout =
  typeof startup.serverConnectTimeout === 'number' && Number.isFinite(startup.serverConnectTimeout)
    ? startup.serverConnectTimeout
    : DEFAULT_SERVER_CONNECT_TIMEOUT;

// ---- handlers ---------------------------------------------------------------

const handlers = new Map(Object.entries({
  ping: (p) => ({ message: `pong: ${p && p.message}` }),
  add: (p) => ({ sum: p.a + p.b }),
  echo: (p) => p,
  void: () => undefined,
  fail: (p) => {
    const err = new Error(p && p.message !== undefined ? String(p.message) : 'fail');
    if (p && p.code !== undefined) err.code = p.code; // serialized only if a string
    throw err;
  },
  typeError: (p) => {
    throw new TypeError(p && p.message !== undefined ? String(p.message) : 'typeError handler threw');
  },
  sleep: (p) => {
    const ms = Number(p && p.ms) || 0;
    return new Promise((resolve) => setTimeout(() => resolve({ slept: ms }), ms));
  },
  exit: (p) => {
    process.exit(Number(p && p.code) || 0);
  },
  env: (p) => ({ value: process.env[p && p.name] ?? null }),
  // Every message type received so far, on any connection, in arrival order
  // (this request's own "seen" is the last one).
  seen: () => ({ types: seenTypes.slice() }),
}));

// The "type" of every frame that parsed as JSON with a string "type",
// recorded before any middleware or handler lookup.
const seenTypes = [];

// Incoming middleware, as a TS worker passes them to startWorkerServer({middleware}).
// A common validation pattern: throw for a message no handler knows. In the TS
// library a throw here means the message gets no reply at all (it is logged).
const middleware = [];
if (validate) {
  middleware.push((message, direction) => {
    if (direction === 'incoming' && !(typeof message.type === 'string' && handlers.has(message.type))) {
      throw new Error(`no handler for message type ${JSON.stringify(message.type)}`);
    }
    return message;
  });
}

async function applyIncomingMiddleware(message) {
  for (const m of middleware) message = await m(message, 'incoming');
  return message;
}

// serializeError, as the TS library does it.
function serializeError(err) {
  if (!(err instanceof Error)) err = new Error(String(err));
  const out = { message: err.message, name: err.name, stack: err.stack };
  if (typeof err.code === 'string') out.code = err.code;
  return out;
}

// ---- server -------------------------------------------------------------------

const sockets = new Set();
let everConnected = false;
let stopping = false;
let connectTimer = null;

function removeSocketFile() {
  if (process.platform === 'win32') return; // named pipes leave no file
  try {
    fs.unlinkSync(socketPath);
  } catch (err) {
    if (err.code !== 'ENOENT') log(`could not remove ${socketPath}: ${err.message}`);
  }
}

function send(socket, msg) {
  if (socket.destroyed || !socket.writable) {
    log(`connection gone, dropping reply tx=${msg.tx} type=${msg.type}`);
    return;
  }
  // JSON.stringify writes non-ASCII characters raw (UTF-8), as the TS library does.
  socket.write(serializer.serialize(msg) + serializer.terminator);
}

async function handleMessage(socket, received) {
  let msg = received;
  // As in the TS worker, middleware is only awaited when there is some (so
  // without it a handler starts synchronously, in the 'data' event).
  if (middleware.length > 0) {
    try {
      msg = await applyIncomingMiddleware(received);
    } catch (err) {
      // As in the TS worker: a throw in middleware gets no reply, only a log line.
      log(`middleware rejected ${received.type}: ${err && err.message} (no reply)`);
      return;
    }
  }
  const { type, tx } = msg;
  const handler = typeof type === 'string' && handlers.has(type) ? handlers.get(type) : undefined;
  if (!handler) {
    send(socket, { tx, type: `${type}Error`, payload: serializeError(new Error(`Unknown message type: ${type}`)) });
    return;
  }
  try {
    const result = await handler(msg.payload);
    // JSON.stringify drops an undefined payload: a void reply has no payload key.
    send(socket, { tx, type: `${type}Result`, payload: result });
  } catch (err) {
    send(socket, { tx, type: `${type}Error`, payload: serializeError(err) });
  }
}

// frameReader returns a 'data' listener that frames a byte stream the way the
// TS library does, bug included: each chunk is decoded on its own with
// chunk.toString('utf-8') and appended to a string buffer, which is then cut
// at every occurrence of the terminator string. A multi-byte UTF-8 character
// split across two reads therefore turns into U+FFFD replacement characters.
//
// The unterminated rest is kept as a list of decoded chunks (plus its last
// terminator.length - 1 characters, to find a terminator split across chunks)
// so that a long frame arriving in many reads costs linear time; the frames
// produced are exactly those of `buffer += chunk.toString(); indexOf(...)`.
function frameReader(terminator, onFrame) {
  const keep = terminator.length - 1;
  let parts = [];
  let tail = '';
  return (chunk) => {
    const text = chunk.toString('utf-8'); // per chunk, as the TS library does
    parts.push(text);
    const probe = tail + text;
    if (probe.indexOf(terminator) === -1) {
      tail = keep > 0 ? probe.slice(-keep) : '';
      return;
    }
    const buffer = parts.length === 1 ? text : parts.join('');
    let start = 0;
    let i;
    while ((i = buffer.indexOf(terminator, start)) !== -1) {
      onFrame(buffer.slice(start, i));
      start = i + terminator.length;
    }
    const rest = buffer.slice(start);
    parts = rest === '' ? [] : [rest];
    tail = keep > 0 ? rest.slice(-keep) : '';
  };
}

function handleFrame(socket, frame) {
  if (frame.trim() === '') return; // blank frames are ignored
  let msg;
  try {
    msg = serializer.deserialize(frame);
  } catch (err) {
    log(`failed to parse message (no reply): ${err.message}: ${JSON.stringify(frame.slice(0, 100))}`);
    return;
  }
  if (msg !== null && typeof msg === 'object' && typeof msg.type === 'string') seenTypes.push(msg.type);
  if (msg === null) {
    // The TS worker fails on `null` while reading its fields: no reply.
    log('message is null (no reply)');
    return;
  }
  // Any other JSON value is treated as a message, as the TS worker does: a
  // value without a string "type" gets an "Unknown message type" error reply.
  // Handlers run concurrently; replies go out in completion order.
  handleMessage(socket, msg).catch((err) => log(`failed to process message: ${err.message}`));
}

const server = net.createServer((socket) => {
  everConnected = true;
  if (connectTimer) {
    clearTimeout(connectTimer);
    connectTimer = null;
  }
  if (stopping) {
    socket.destroy();
    return;
  }
  sockets.add(socket);
  socket.on('data', frameReader(serializer.terminator, (frame) => handleFrame(socket, frame)));
  socket.on('error', (err) => log(`socket error: ${err.message}`));
  // Keep-alive: when the host goes away, keep listening for a new connection.
  socket.on('close', () => sockets.delete(socket));
});

function stop(reason, code) {
  if (stopping) return;
  stopping = true;
  if (connectTimer) clearTimeout(connectTimer);
  if (reason) log(reason);
  for (const s of sockets) s.destroy();
  server.close(() => {
    removeSocketFile();
    process.exit(code);
  });
  // server.close only calls back once every connection is gone; they were
  // destroyed above, so this is just a safety net.
  setTimeout(() => {
    removeSocketFile();
    process.exit(code);
  }, 2000).unref();
}

process.on('SIGTERM', () => stop('', 0));
process.on('SIGINT', () => stop('', 0));

server.on('error', (err) => {
  log(`server error on ${socketPath}: ${err.message}`);
  if (!server.listening) process.exit(1);
});

removeSocketFile(); // a stale file from an earlier run
server.listen(socketPath, () => {
  if (serverConnectTimeout > 0) {
    connectTimer = setTimeout(() => {
      if (!everConnected) stop(`host did not connect within ${serverConnectTimeout}ms, shutting down`, 0);
    }, serverConnectTimeout);
  }
});
