// `npm run up` (scripts/up.sh) does the whole set-up: local backend, passphrase,
// stack, SSH key (private key on stdin only), credential check, then `pulumi up`.
// A stub stands in for the Pulumi CLI (it downloads itself on first use, which needs the internet).
import * as assert from "assert";
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";

const ROOT = path.join(__dirname, "..", "..");

/** A fake `pulumi` that logs its arguments and stdin, and keeps config in a JSON file. */
const STUB = `#!/usr/bin/env bash
set -euo pipefail
dir=$(dirname "$0")
stdin=""
if [ "$1 $2" = "config set" ] && [[ " $* " == *" -- "* ]]; then stdin=$(cat); fi
printf '%s\\t%s\\n' "$*" "\${#stdin}" >>"$dir/calls.log"
case "$1 $2" in
  "stack select") [ -f "$dir/stack" ] ;;
  "stack init") touch "$dir/stack" ;;
  "config get") grep -q "^$3=" "$dir/config" 2>/dev/null && grep "^$3=" "$dir/config" | cut -d= -f2- ;;
  "config set") if [ "$3" = "--secret" ]; then echo "$4=<secret:\${#stdin}>" >>"$dir/config"; else echo "$3=$4" >>"$dir/config"; fi ;;
  "up --stack") echo "stub up" ;;
esac
`;

function runUp(home: string, env: Record<string, string>) {
    const bin = path.join(home, "stub");
    return spawnSync("bash", [path.join(ROOT, "scripts", "up.sh"), "live"], {
        cwd: ROOT,
        encoding: "utf8",
        env: { PATH: process.env.PATH!, HOME: home, CZD_PULUMI: path.join(bin, "pulumi"), ...env },
    });
}

describe("npm run up (scripts/up.sh)", () => {
    let home: string;
    beforeEach(() => {
        home = fs.mkdtempSync(path.join(os.tmpdir(), "czd-up-"));
        fs.mkdirSync(path.join(home, "stub"));
        fs.writeFileSync(path.join(home, "stub", "pulumi"), STUB, { mode: 0o755 });
    });
    afterEach(() => fs.rmSync(home, { recursive: true, force: true }));

    it("sets up a local backend, passphrase, stack and SSH key, then runs pulumi up", () => {
        const r = runUp(home, { DIGITALOCEAN_TOKEN: "dop_v1_test" });
        assert.strictEqual(r.status, 0, r.stderr + r.stdout);
        assert.match(r.stdout, /state backend: file:\/\/.*\.clj-zero-downtime\/state/);
        const passphrase = path.join(home, ".clj-zero-downtime", "passphrase");
        assert.strictEqual(fs.statSync(passphrase).mode & 0o777, 0o600);
        const key = path.join(home, ".clj-zero-downtime", "id_ed25519");
        assert.ok(fs.existsSync(key) && fs.existsSync(`${key}.pub`));
        const calls = fs.readFileSync(path.join(home, "stub", "calls.log"), "utf8").trim().split("\n").map(l => l.split("\t"));
        const commands = calls.map(c => c[0]);
        assert.ok(commands.includes("stack init live --secrets-provider passphrase"), commands.join("\n"));
        const pub = fs.readFileSync(`${key}.pub`, "utf8").trim();
        assert.ok(commands.includes(`config set sshPublicKey ${pub} --stack live`));
        const secret = calls.find(c => c[0].startsWith("config set --secret sshPrivateKey"))!;
        assert.ok(secret, "the private key is stored as a secret");
        assert.ok(!secret[0].includes("PRIVATE KEY"), "the private key is not on the command line");
        assert.strictEqual(Number(secret[1]), fs.readFileSync(key, "utf8").trimEnd().length, "it arrives on stdin");
        assert.strictEqual(commands[commands.length - 1], "up --stack live --yes");
    });

    it("runs again without redoing anything", () => {
        assert.strictEqual(runUp(home, { DIGITALOCEAN_TOKEN: "t" }).status, 0);
        fs.rmSync(path.join(home, "stub", "calls.log"));
        const again = runUp(home, { DIGITALOCEAN_TOKEN: "t" });
        assert.strictEqual(again.status, 0, again.stderr);
        const commands = fs.readFileSync(path.join(home, "stub", "calls.log"), "utf8");
        assert.doesNotMatch(commands, /stack init|config set/);
        assert.match(commands, /up --stack live --yes/);
    });

    it("stops with a clear message when the cloud token is missing, before pulumi up", () => {
        const r = runUp(home, {});
        assert.notStrictEqual(r.status, 0);
        assert.match(r.stderr, /provider is digitalocean but no API token: export DIGITALOCEAN_TOKEN=/);
        assert.doesNotMatch(fs.readFileSync(path.join(home, "stub", "calls.log"), "utf8"), /^up /m);
    });
});
