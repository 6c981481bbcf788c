// The Node peers' caller loop, the same as the Go harness's: conc async
// callers, each awaiting one call after another until ms have passed (a
// caller finishes the call it is in); the rate is the calls completed over
// the wall time until the last one returned.
export async function drive(call, conc, ms) {
  let calls = 0;
  const start = performance.now();
  const end = start + ms;
  const loop = async () => {
    while (performance.now() < end) {
      await call();
      calls++;
    }
  };
  await Promise.all(Array.from({ length: conc }, loop));
  const seconds = (performance.now() - start) / 1000;
  return { ops: calls / seconds, calls, seconds };
}

// check is every peer's reply check (the Go subjects check theirs too).
export function check(r) {
  if (r === null || typeof r !== 'object' || r.message !== 'hello') {
    throw new Error('bad reply: ' + JSON.stringify(r));
  }
}

// config is the JSON object the harness passes as the only argument:
// {"threads": N, "conc": 64, "warmMs": 250, "durMs": 1000}.
export function config() {
  const cfg = JSON.parse(process.argv[2] ?? '');
  for (const k of ['threads', 'conc', 'warmMs', 'durMs']) {
    if (!Number.isInteger(cfg[k]) || cfg[k] < 1) throw new Error(`config: ${k} must be a positive integer`);
  }
  return cfg;
}
