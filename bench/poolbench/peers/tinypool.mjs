// Peer: tinypool in process mode (runtime: 'child_process': each member is
// a forked Node process, messages over Node's IPC channel), minThreads =
// maxThreads = N, other options at their defaults, the caller loop of
// drive.mjs around pool.run(). Prints {"ops","calls","seconds"}.
import Tinypool from 'tinypool';
import { check, config, drive } from './drive.mjs';

const cfg = config();
const pool = new Tinypool({
  filename: new URL('./echo_task.mjs', import.meta.url).href,
  runtime: 'child_process',
  minThreads: cfg.threads,
  maxThreads: cfg.threads,
});
const task = { message: 'hello' };
const call = async () => check(await pool.run(task));
await drive(call, cfg.conc, cfg.warmMs);
const res = await drive(call, cfg.conc, cfg.durMs);
await pool.destroy();
process.stdout.write(JSON.stringify(res) + '\n');
