// Peer: piscina (Node worker threads), as documented: one Piscina with
// minThreads = maxThreads = N (its other options at their defaults), the
// caller loop of drive.mjs around pool.run(). Prints {"ops","calls","seconds"}.
import { Piscina } from 'piscina';
import { check, config, drive } from './drive.mjs';

const cfg = config();
const pool = new Piscina({
  filename: new URL('./echo_task.mjs', import.meta.url).href,
  minThreads: cfg.threads,
  maxThreads: cfg.threads,
});
const task = { message: 'hello' };
const call = async () => check(await pool.run(task));
await drive(call, cfg.conc, cfg.warmMs);
const res = await drive(call, cfg.conc, cfg.durMs);
await pool.destroy();
process.stdout.write(JSON.stringify(res) + '\n');
