// CLI around the load client: prints the JSON report on stdout.
// Exit status: 0 no failures, 1 some failures, 2 usage error.
//   npx ts-node test/load/cli.ts --url http://10.213.1.2 [--host app.example] \
//     [--concurrency 16] [--duration 10000] [--mix 60,20,20] [--slow-ms 300] [--timeout 30300]
// Without --duration it runs until SIGINT/SIGTERM.
import { startLoad, LoadOptions } from "./client";

const USAGE =
  "usage: cli.ts --url URL [--host HOST] [--concurrency N] [--duration MS] [--mix GET,SLOW,POST] [--slow-ms MS] [--timeout MS]";

function parseArgs(argv: string[]): LoadOptions {
  const values = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "-h" || arg === "--help") usage(0);
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (!m) usage(2, `unexpected argument ${arg}`);
    const value = m![2] ?? argv[++i];
    if (value === undefined) usage(2, `missing value for --${m![1]}`);
    values.set(m![1], value);
  }
  for (const key of values.keys()) {
    if (!["url", "host", "concurrency", "duration", "mix", "slow-ms", "timeout"].includes(key)) usage(2, `unknown option --${key}`);
  }
  const num = (name: string): number | undefined => {
    const v = values.get(name);
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) usage(2, `--${name} must be a non-negative number`);
    return n;
  };
  const url = values.get("url");
  if (!url) usage(2, "--url is required");
  let mix: LoadOptions["mix"];
  if (values.has("mix")) {
    const parts = values.get("mix")!.split(",").map(Number);
    if (parts.length !== 3 || parts.some((p) => !Number.isFinite(p) || p < 0) || parts.every((p) => p === 0)) {
      usage(2, "--mix must be three non-negative weights GET,SLOW,POST");
    }
    mix = { get: parts[0], slowGet: parts[1], post: parts[2] };
  }
  return {
    url: url!,
    hostHeader: values.get("host"),
    concurrency: num("concurrency") ?? 16,
    durationMs: num("duration"),
    mix,
    slowMs: num("slow-ms"),
    requestTimeoutMs: num("timeout"),
  };
}

function usage(code: number, problem?: string): never {
  if (problem) process.stderr.write(`${problem}\n`);
  process.stderr.write(`${USAGE}\n`);
  process.exit(code);
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const load = startLoad(opts);
  const stop = () => void load.stop();
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  const report = await load.done;
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  process.exitCode = report.totals.failed > 0 ? 1 : 0;
}

main().catch((err) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(2);
});
