#!/usr/bin/env node
// Stand-in for a worker written with the TypeScript library isolated-workers
// (child_process driver, default JsonSerializer). Plain Node, no dependencies.
// See README.md in this directory.
'use strict';

const fs = require('node:fs');
const net = require('node:net');

const STARTUP_DATA_ENV_KEY = 'ISOLATED_WORKERS_STARTUP_DATA';
const DEFAULT_SERVER_CONNECT_TIMEOUT = 30000;

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
}));

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
  socket.write(JSON.stringify(msg) + '\n');
}

async function handleMessage(socket, msg) {
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

function handleLine(socket, lineBytes) {
  // Decode a whole line at once: a multi-byte character split across reads
  // is reassembled because framing happens on bytes.
  const line = lineBytes.toString('utf8');
  if (line.trim() === '') return; // blank lines are ignored
  let msg;
  try {
    msg = JSON.parse(line);
  } catch (err) {
    log(`failed to parse message (no reply): ${err.message}: ${JSON.stringify(line.slice(0, 100))}`);
    return;
  }
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
  // Bytes of the current, unterminated line, kept as a list of chunks so that
  // a long line arriving in many reads costs linear time.
  let pending = [];
  socket.on('data', (chunk) => {
    let start = 0;
    let nl;
    while ((nl = chunk.indexOf(0x0a, start)) !== -1) {
      const part = chunk.subarray(start, nl);
      const line = pending.length === 0 ? part : Buffer.concat([...pending, part]);
      pending = [];
      handleLine(socket, line);
      start = nl + 1;
    }
    if (start < chunk.length) pending.push(chunk.subarray(start));
  });
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
