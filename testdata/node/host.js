#!/usr/bin/env node
// Stand-in for a host written with the TypeScript library isolated-workers
// (child_process driver, JsonSerializer by default). Plain Node, no dependencies.
//
//   node host.js <script.json>
//
// See README.md in this directory for the script format and the output.
'use strict';

const childProcess = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

const DEFAULT_CONNECT_TIMEOUT_MS = 10000;
const DEFAULT_CALL_TIMEOUT_MS = 10000;
const DEFAULT_SERVER_CONNECT_TIMEOUT = 30000;
const EXIT_GRACE_MS = 10000;

// Serializers, as a TS host would pass them to createWorker({serializer}); the
// same set as worker.js (IW_NODE_SERIALIZER there, "serializer" here).
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

function log(msg) {
  process.stderr.write(`[host.js] ${msg}\n`);
}

class Fatal extends Error {}

// ---- script -------------------------------------------------------------------

function loadScript(file) {
  let script;
  try {
    script = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Fatal(`cannot read script ${file}: ${err.message}`);
  }
  if (script === null || typeof script !== 'object') throw new Fatal('script is not a JSON object');
  if (typeof script.command !== 'string' || script.command === '') throw new Fatal('script.command must be a non-empty string');
  const args = script.args ?? [];
  if (!Array.isArray(args)) throw new Fatal('script.args must be an array');
  const env = script.env ?? {};
  if (env === null || typeof env !== 'object' || Array.isArray(env)) throw new Fatal('script.env must be an object');
  const calls = script.calls ?? [];
  if (!Array.isArray(calls)) throw new Fatal('script.calls must be an array');
  calls.forEach((c, i) => {
    if (c === null || typeof c !== 'object' || typeof c.type !== 'string') {
      throw new Fatal(`script.calls[${i}] must be an object with a string "type"`);
    }
  });
  const serializer = script.serializer ?? 'json';
  if (typeof serializer !== 'string' || !Object.prototype.hasOwnProperty.call(SERIALIZERS, serializer)) {
    throw new Fatal(`script.serializer must be one of ${Object.keys(SERIALIZERS).map((n) => JSON.stringify(n)).join(', ')}`);
  }
  if (script.fork !== undefined && typeof script.fork !== 'boolean') throw new Fatal('script.fork must be a boolean');
  const modulePath = script.module ?? 'worker';
  if (typeof modulePath !== 'string') throw new Fatal('script.module must be a string');
  const execArgv = script.execArgv ?? [];
  if (!Array.isArray(execArgv)) throw new Fatal('script.execArgv must be an array');
  const num = (v, name, dflt) => {
    if (v === undefined) return dflt;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new Fatal(`script.${name} must be a number`);
    return v;
  };
  return {
    command: script.command,
    args: args.map(String),
    env,
    calls,
    concurrent: script.concurrent === true,
    serializer: SERIALIZERS[serializer],
    fork: script.fork === true,
    module: modulePath,
    execArgv: execArgv.map(String),
    cwd: script.cwd,
    socketPath: script.socketPath,
    serverConnectTimeout: num(script.serverConnectTimeout, 'serverConnectTimeout', DEFAULT_SERVER_CONNECT_TIMEOUT),
    connectTimeoutMs: num(script.connectTimeoutMs, 'connectTimeoutMs', DEFAULT_CONNECT_TIMEOUT_MS),
    callTimeoutMs: num(script.callTimeoutMs, 'callTimeoutMs', DEFAULT_CALL_TIMEOUT_MS),
  };
}

function defaultSocketPath() {
  const id = crypto.randomUUID();
  if (process.platform === 'win32') return `\\\\.\\pipe\\worker-${id}`;
  const dir = process.env.TMPDIR || process.env.TMP || '/tmp';
  return path.join(dir, `worker-${id}.sock`);
}

function removeSocketFile(socketPath) {
  if (process.platform === 'win32') return;
  try {
    fs.unlinkSync(socketPath);
  } catch (err) {
    if (err.code !== 'ENOENT') log(`could not remove ${socketPath}: ${err.message}`);
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

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function describeExit(e) {
  return e.signal ? `signal ${e.signal}` : `code ${e.code}`;
}

// ---- main -----------------------------------------------------------------------

async function main() {
  if (process.argv.length !== 3) throw new Fatal('usage: node host.js <script.json>');
  const script = loadScript(process.argv[2]);
  const socketPath = script.socketPath || defaultSocketPath();

  const env = { ...process.env };
  for (const [k, v] of Object.entries(script.env)) {
    if (v === null) delete env[k];
    else env[k] = String(v);
  }
  env.ISOLATED_WORKERS_STARTUP_DATA = JSON.stringify({
    driver: 'child_process',
    socketPath,
    serializer: script.serializer.name, // the TS host sends serializer.constructor.name
    serverConnectTimeout: script.serverConnectTimeout,
  });
  env.ISOLATED_WORKERS_SOCKET_PATH = socketPath;
  env.ISOLATED_WORKERS_SERVER_CONNECT_TIMEOUT = String(script.serverConnectTimeout);

  // ---- spawn or fork ----
  // The child's stderr is inherited; its stdout goes to our stderr so that our
  // stdout carries only the result line.
  let child;
  if (script.fork) {
    // As the TS host does it: child_process.fork() runs
    //   execPath ...execArgv modulePath ...args
    // and gives the child Node's IPC channel on fd 3 (NODE_CHANNEL_FD=3 and
    // NODE_CHANNEL_SERIALIZATION_MODE in its environment). The TS host forks
    // with silent: false (stdout inherited); we pipe stdout to our stderr.
    child = childProcess.fork(script.module, script.args, {
      execPath: script.command,
      execArgv: script.execArgv,
      env,
      cwd: script.cwd,
      stdio: ['inherit', 'pipe', 'inherit', 'ipc'],
    });
    if (child.stdout) child.stdout.pipe(process.stderr, { end: false });
    // Nothing is sent over the IPC channel: all traffic goes over the socket.
  } else {
    child = childProcess.spawn(script.command, script.args, {
      env,
      cwd: script.cwd,
      stdio: ['ignore', 2, 'inherit'],
    });
  }
  let exitInfo = null;
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exitInfo = { code, signal };
      resolve(exitInfo);
    });
    child.on('error', (err) => {
      // Spawn failure (e.g. ENOENT): no 'exit' event follows.
      exitInfo = { code: null, signal: null, error: err.message };
      resolve(exitInfo);
    });
  });

  let socket = null;
  let closing = false;

  async function shutdown() {
    closing = true;
    if (socket && !socket.destroyed) socket.end(); // half-close
    if (!exitInfo) {
      child.kill('SIGTERM');
      const timer = sleep(EXIT_GRACE_MS).then(() => null);
      const e = await Promise.race([exited, timer]);
      if (!e) {
        child.kill('SIGKILL');
        await exited;
        if (socket) socket.destroy();
        removeSocketFile(socketPath);
        throw new Fatal(`worker did not exit within ${EXIT_GRACE_MS}ms of SIGTERM; killed it`);
      }
    }
    if (socket) socket.destroy();
    removeSocketFile(socketPath);
  }

  try {
    socket = await connect(socketPath, script.connectTimeoutMs, () => exitInfo, exited);
    const results = await runCalls(script, socket, () => exitInfo, exited, () => closing);
    await shutdown();
    const line = JSON.stringify({ results, worker: { code: exitInfo.code, signal: exitInfo.signal } }) + '\n';
    // Wait until the line is flushed: a stdout pipe can take a large write
    // asynchronously, and process.exit() would cut it short.
    await new Promise((resolve) => process.stdout.write(line, () => resolve()));
  } catch (err) {
    closing = true;
    if (socket) socket.destroy();
    if (!exitInfo) {
      child.kill('SIGTERM');
      const e = await Promise.race([exited, sleep(2000).then(() => null)]);
      if (!e) {
        child.kill('SIGKILL');
        await exited;
      }
    }
    removeSocketFile(socketPath);
    throw err;
  }
}

// Connect with exponential backoff plus jitter; fail at once if the worker exits.
async function connect(socketPath, timeoutMs, getExit, exited) {
  const deadline = Date.now() + timeoutMs;
  let delay = 10;
  let lastErr = null;
  for (let attempt = 1; ; attempt++) {
    const e = getExit();
    if (e) throw new Fatal(`worker exited during startup (${e.error ? `spawn error: ${e.error}` : describeExit(e)})`);
    try {
      return await new Promise((resolve, reject) => {
        const s = net.createConnection(socketPath);
        s.once('connect', () => {
          s.removeAllListeners('error');
          resolve(s);
        });
        s.once('error', (err) => {
          s.destroy();
          reject(err);
        });
      });
    } catch (err) {
      lastErr = err;
    }
    const remaining = deadline - Date.now();
    if (remaining <= 0) {
      throw new Fatal(`could not connect to ${socketPath} within ${timeoutMs}ms after ${attempt} attempts: ${lastErr && lastErr.message}`);
    }
    const wait = Math.min(remaining, delay * (0.5 + Math.random() * 0.5));
    delay = Math.min(delay * 2, 500);
    await Promise.race([sleep(wait), exited]);
  }
}

async function runCalls(script, socket, getExit, exited, isClosing) {
  const pending = new Map(); // tx -> {type, resolve}
  let inactive = null; // set once the worker crashed or the connection closed

  function failAll(makeError) {
    for (const [tx, p] of pending) {
      pending.delete(tx);
      p.resolve({ type: p.type, ok: false, error: makeError(p.type) });
    }
  }

  function onReply(text) {
    if (text.trim() === '') return; // blank frames are ignored
    let msg;
    try {
      msg = serializer.deserialize(text);
    } catch (err) {
      log(`failed to parse reply (dropped): ${err.message}: ${JSON.stringify(text.slice(0, 200))}`);
      return;
    }
    if (msg === null || typeof msg !== 'object') {
      log(`reply is not a JSON object (dropped): ${JSON.stringify(text.slice(0, 200))}`);
      return;
    }
    const p = pending.get(msg.tx);
    if (!p) {
      log(`reply for unknown transaction (dropped): tx=${JSON.stringify(msg.tx)} type=${JSON.stringify(msg.type)}`);
      return;
    }
    pending.delete(msg.tx);
    if (typeof msg.type === 'string' && msg.type.endsWith('Error')) {
      const pl = msg.payload !== null && typeof msg.payload === 'object' ? msg.payload : {};
      const error = { message: pl.message, name: pl.name };
      if (pl.code !== undefined && pl.code !== null) error.code = pl.code;
      p.resolve({ type: p.type, ok: false, replyType: msg.type, error });
    } else {
      const r = { type: p.type, ok: true, replyType: msg.type };
      if (Object.prototype.hasOwnProperty.call(msg, 'payload')) r.payload = msg.payload;
      p.resolve(r);
    }
  }

  const serializer = script.serializer;
  socket.on('data', frameReader(serializer.terminator, onReply));
  socket.on('error', (err) => {
    if (!isClosing()) log(`socket error: ${err.message}`);
  });

  const crashed = (type) => ({
    message: `Worker crashed unexpectedly while processing '${type}'`,
    name: 'WorkerCrashedError',
  });
  exited.then((e) => {
    if (isClosing() || inactive) return;
    inactive = 'crashed';
    log(`worker exited unexpectedly (${describeExit(e)})`);
    failAll(crashed);
  });
  socket.on('close', async () => {
    if (isClosing() || inactive) return;
    // Give the exit event a moment: a crash shows up as both.
    await Promise.race([exited, sleep(500)]);
    if (isClosing() || inactive) return;
    inactive = 'closed';
    log('worker closed the connection');
    failAll(() => ({ message: 'Worker closed', name: 'Error' }));
  });

  let fatal = null;
  function call(i, c) {
    if (inactive) {
      return Promise.resolve({ type: c.type, ok: false, error: { message: 'Worker is not active', name: 'Error' } });
    }
    const tx = crypto.randomUUID();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        if (!pending.has(tx)) return;
        pending.delete(tx);
        fatal = fatal || new Fatal(`no reply to calls[${i}] (type ${JSON.stringify(c.type)}, tx ${tx}) within ${script.callTimeoutMs}ms`);
        resolve(null);
      }, script.callTimeoutMs);
      pending.set(tx, {
        type: c.type,
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
      });
      // JSON.stringify writes non-ASCII characters raw (UTF-8), as the TS library
      // does; a call without "payload" is sent without a payload key.
      socket.write(serializer.serialize({ type: c.type, payload: c.payload, tx }) + serializer.terminator);
    });
  }

  let results;
  if (script.concurrent) {
    results = await Promise.all(script.calls.map((c, i) => call(i, c)));
  } else {
    results = [];
    for (let i = 0; i < script.calls.length && !fatal; i++) {
      results.push(await call(i, script.calls[i]));
    }
  }
  if (fatal) throw fatal;
  return results;
}

main().then(
  () => process.exit(0),
  (err) => {
    log(err instanceof Fatal ? err.message : `unexpected error: ${err && err.stack}`);
    process.exit(1);
  },
);
