import { spawn } from "node:child_process";
import { Redis } from "ioredis";
import { Rig } from "./lib/rig.ts";
const port = 6400 + Math.floor(Math.random() * 500);
const srv = spawn("redis-server", ["--port", String(port), "--save", "", "--appendonly", "no"], { stdio: "ignore" });
await new Promise((r) => setTimeout(r, 500));
const url = `redis://127.0.0.1:${port}`;
const N = Number(process.argv[2] ?? 300);
const rig = await Rig.start({ redisUrl: url, policies: 2 * N, perAccount: 20, concurrency: 8 });
const all = [...Array(N).keys()];
for (let r = 0; r < 2; r++) {
  const t0 = Date.now();
  const sum = (c: Record<string, number>) => Object.values(c).reduce((a, b) => a + b, 0);
  const k0 = (await rig.redisCounters()).calls;
  const c0 = sum(k0);
  const res = await rig.rekeyRun(all, { deadlineMs: 120000 });
  const k1 = (await rig.redisCounters()).calls;
  const c1 = sum(k1);
  if (r === 1) console.log(Object.entries(k1).map(([k, v]) => [k, (v - (k0[k] ?? 0)) / N] as const).filter(([, v]) => v > 0.05).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k}:${v.toFixed(2)}`).join(" "));
  const active = await rig.rt.redis.zcard(`${rig.rt.prefix}:active`);
  console.log("active after run", active);
  await rig.baselineRun(all.map((i) => i + N), { deadlineMs: 120000 });
  const c2 = (await rig.redisCounters()).calls;
  console.log("run", r, Date.now() - t0, "ms", res.completed, res.failed, "during", (c1 - c0) / N, "after", (sum(c2) - c1) / N);
}
const redis = new Redis(url);
const keys = await redis.keys("*:bull:rotations:manual@*");
const hist: Record<string, number> = {};
for (const k of keys) {
  if (k.split(":").length > 4 && !k.endsWith(k.split(":").pop()!)) continue;
  const [ats, atm, stc] = await redis.hmget(k, "ats", "atm", "stc");
  if (ats === null) continue;
  const key = `ats=${ats} atm=${atm} stc=${stc}`;
  hist[key] = (hist[key] ?? 0) + 1;
}
console.log(hist);
redis.disconnect();
await rig.close();
srv.kill();
process.exit(0);
