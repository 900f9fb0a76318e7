// `npm run up` (scripts/up.sh) does the whole set-up: local backend, passphrase,
// stack, SSH key (private key on stdin only), credential check, then `pulumi up`.
// A stub stands in for the Pulumi CLI (it downloads itself on first use, which needs the internet).
import * as assert from "assert";
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { tempDir } from "../support/tmp";

const ROOT = path.join(__dirname, "..", "..");

/** A fake `pulumi` that logs its arguments and stdin, and keeps config in a JSON file. */
const STUB = `#!/usr/bin/env bash
set -euo pipefail
dir=$(dirname "$0")
stdin=""
if [ "$1 $2" = "config set" ] && [[ " $* " == *" -- "* ]]; then stdin=$(cat); fi
printf '%s\\t%s\\n' "$*" "\${#stdin}" >>"$dir/calls.log"
case "$1 $2" in
  "stack select") [ -f "$dir/stack-$3" ] ;;
  "stack init") touch "$dir/stack-$3" ;;
  "config get") grep -q "^$3=" "$dir/config" 2>/dev/null && grep "^$3=" "$dir/config" | cut -d= -f2- ;;
  "config set") if [ "$3" = "--secret" ]; then echo "$4=<secret:\${#stdin}>" >>"$dir/config"; else echo "$3=$4" >>"$dir/config"; fi ;;
  "up --stack") echo "stub up" ;;
esac
`;

function runUp(home: string, env: Record<string, string>, args: string[] = ["live"]) {
    const bin = path.join(home, "stub");
    return spawnSync("bash", [path.join(ROOT, "scripts", "up.sh"), ...args], {
        cwd: ROOT,
        encoding: "utf8",
        env: { PATH: process.env.PATH!, HOME: home, CZD_PULUMI: path.join(bin, "pulumi"), ...env },
    });
}

/** The stub's calls, one command line each. */
function calls(home: string): string[] {
    return fs.readFileSync(path.join(home, "stub", "calls.log"), "utf8").trim().split("\n").map(l => l.split("\t")[0]);
}

describe("npm run up (scripts/up.sh)", () => {
    let home: string;
    beforeEach(() => {
        home = tempDir("up");
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

    it("takes the stack as a word or as --stack <name> (as npm run status does), passes the rest to pulumi up, and refuses a name that is an option", () => {
        assert.strictEqual(runUp(home, { DIGITALOCEAN_TOKEN: "t" }, ["--stack", "beta", "--diff"]).status, 0);
        assert.strictEqual(calls(home).slice(-1)[0], "up --stack beta --yes --diff");
        assert.ok(calls(home).includes("stack init beta --secrets-provider passphrase"));
        assert.strictEqual(runUp(home, { DIGITALOCEAN_TOKEN: "t" }, ["--refresh"]).status, 0);
        assert.strictEqual(calls(home).slice(-1)[0], "up --stack live --yes --refresh", "no stack named: live");
        assert.strictEqual(runUp(home, { DIGITALOCEAN_TOKEN: "t" }, ["--stack=staging"]).status, 0);
        assert.strictEqual(calls(home).slice(-1)[0], "up --stack staging --yes");
        assert.ok(calls(home).includes("stack init staging --secrets-provider passphrase"));
        const bad = runUp(home, { DIGITALOCEAN_TOKEN: "t" }, ["--stack", "--yes"]);
        assert.strictEqual(bad.status, 1);
        assert.match(bad.stderr, /stack name '--yes' must be letters, digits, '_', '\.' or '-', and not start with '-' or '\.'/);
        for (const args of [["--diff", "--stack", "beta"], ["live", "--stack=beta"], ["-s", "beta"]]) {
            fs.rmSync(path.join(home, "stub", "calls.log"), { force: true });
            const r = runUp(home, { DIGITALOCEAN_TOKEN: "t" }, args);
            assert.strictEqual(r.status, 1, args.join(" "));
            assert.match(r.stderr, /name the stack first \(npm run up -- <stack> \[pulumi up options\]\), not as '(--stack|--stack=beta|-s)' among the options/);
            assert.ok(!fs.existsSync(path.join(home, "stub", "calls.log")), "nothing ran");
        }
    });

    it("asks before it changes an existing stack where Pulumi can ask (the preview shows a server replacement); a new stack, CI, a pipe and a dumb terminal go ahead", () => {
        assert.strictEqual(runUp(home, { DIGITALOCEAN_TOKEN: "t" }).status, 0);
        /** up.sh in a pseudo-terminal, as a user runs it; `pipe` appended to its command line. */
        const inTerminal = (env: Record<string, string>, pipe = "") => {
            const r = spawnSync("script", ["-qec", `bash ${path.join(ROOT, "scripts", "up.sh")} live${pipe}`, "/dev/null"], {
                cwd: ROOT, encoding: "utf8",
                env: { PATH: process.env.PATH!, HOME: home, CZD_PULUMI: path.join(home, "stub", "pulumi"), DIGITALOCEAN_TOKEN: "t", ...env },
            });
            assert.strictEqual(r.status, 0, r.stdout);
            return calls(home).slice(-1)[0];
        };
        assert.strictEqual(inTerminal({ TERM: "xterm" }), "up --stack live", "Pulumi asks, after its preview");
        // Where Pulumi cannot ask, it would refuse without --yes.
        assert.strictEqual(inTerminal({ TERM: "dumb" }), "up --stack live --yes");
        assert.strictEqual(inTerminal({ TERM: "xterm", CI: "true" }), "up --stack live --yes");
        assert.strictEqual(inTerminal({ TERM: "xterm" }, " | cat"), "up --stack live --yes");
    });

    it("never makes a new passphrase for a backend that holds stacks: their secrets need the old one", () => {
        assert.strictEqual(runUp(home, { DIGITALOCEAN_TOKEN: "t" }).status, 0);
        const stacks = path.join(home, ".clj-zero-downtime", "state", ".pulumi", "stacks", "clj-zero-downtime");
        fs.mkdirSync(stacks, { recursive: true });
        fs.writeFileSync(path.join(stacks, "live.json"), "{}");
        const passphrase = path.join(home, ".clj-zero-downtime", "passphrase");
        fs.rmSync(passphrase);
        const r = runUp(home, { DIGITALOCEAN_TOKEN: "t" });
        assert.strictEqual(r.status, 1);
        assert.match(r.stderr, /the passphrase file .*passphrase is missing, but stacks exist whose secrets it decrypts \(in file:\/\/.*\.clj-zero-downtime\/state, .*\): restore it from your backup/);
        assert.ok(!fs.existsSync(passphrase));
    });

    it("completes a key pair that an interrupted run left half in the stack, and refuses to pair a foreign half", () => {
        assert.strictEqual(runUp(home, { DIGITALOCEAN_TOKEN: "t" }).status, 0);
        const config = path.join(home, "stub", "config");
        const withoutPrivate = fs.readFileSync(config, "utf8").split("\n").filter(l => !l.startsWith("sshPrivateKey=")).join("\n");
        fs.writeFileSync(config, withoutPrivate);
        assert.strictEqual(runUp(home, { DIGITALOCEAN_TOKEN: "t" }).status, 0);
        assert.ok(calls(home).some(c => c.startsWith("config set --secret sshPrivateKey --stack live")), "the private key is set again");
        fs.writeFileSync(config, withoutPrivate.replace(/^sshPublicKey=.*$/m, "sshPublicKey=ssh-ed25519 AAAAothers someone"));
        const r = runUp(home, { DIGITALOCEAN_TOKEN: "t" });
        assert.strictEqual(r.status, 1);
        assert.match(r.stderr, /stack live has an sshPublicKey but no sshPrivateKey, and it is not .*id_ed25519\.pub: set the private key of that pair with scripts\/pulumi config set --secret sshPrivateKey/);
        // A private key set by hand, without its public key: never replaced by this script's pair.
        fs.writeFileSync(config, "sshPrivateKey=<secret:hand-set>\n");
        const hand = runUp(home, { DIGITALOCEAN_TOKEN: "t" });
        assert.strictEqual(hand.status, 1);
        assert.match(hand.stderr, /stack live has an sshPrivateKey but no sshPublicKey: set the public key of that pair/);
        assert.strictEqual(fs.readFileSync(config, "utf8"), "sshPrivateKey=<secret:hand-set>\n");
    });

    it("never makes a new passphrase for a stack file that carries an encryption salt (committed from another machine)", () => {
        const stackFile = path.join(ROOT, "Pulumi.quickstart-test.yaml");
        fs.writeFileSync(stackFile, "encryptionsalt: v1:abc\nconfig: {}\n");
        try {
            const r = runUp(home, { DIGITALOCEAN_TOKEN: "t" }, ["quickstart-test"]);
            assert.strictEqual(r.status, 1);
            assert.match(r.stderr, /the passphrase file .* is missing, but stacks exist whose secrets it decrypts .*Pulumi\.quickstart-test\.yaml's encryptionsalt/);
        } finally {
            fs.rmSync(stackFile, { force: true });
        }
    });

    it("stops with a clear message when curl is missing (the pulumi package fetches its CLI with it), before any change", () => {
        // A PATH with every program of the real one except curl.
        const bin = path.join(home, "bin-without-curl");
        fs.mkdirSync(bin);
        for (const dir of process.env.PATH!.split(":").filter(d => fs.existsSync(d))) {
            for (const name of fs.readdirSync(dir)) {
                const target = path.join(bin, name);
                if (name !== "curl" && !fs.existsSync(target)) fs.symlinkSync(path.join(dir, name), target);
            }
        }
        const r = runUp(home, { DIGITALOCEAN_TOKEN: "dop_v1_test", PATH: bin });
        assert.notStrictEqual(r.status, 0);
        assert.match(r.stderr, /curl is needed: the pulumi npm package downloads the Pulumi CLI with it on first use \(apt-get install curl ca-certificates\)/);
        assert.strictEqual(fs.existsSync(path.join(home, "stub", "calls.log")), false, "Pulumi was not run");
        assert.strictEqual(fs.existsSync(path.join(home, ".clj-zero-downtime")), false, "no state directory made");
        assert.strictEqual(runUp(home, { DIGITALOCEAN_TOKEN: "dop_v1_test" }).status, 0, "with curl on PATH it goes on");
    });

    it("stops with a clear message when the cloud token is missing, before pulumi up", () => {
        const r = runUp(home, {});
        assert.notStrictEqual(r.status, 0);
        assert.match(r.stderr, /provider is digitalocean but no API token: export DIGITALOCEAN_TOKEN=/);
        assert.doesNotMatch(fs.readFileSync(path.join(home, "stub", "calls.log"), "utf8"), /^up /m);
    });
});

describe("scripts/pulumi (Pulumi by hand, with the project's backend and passphrase)", () => {
    it("runs the CLI with the local backend and the passphrase file, in the project directory when called from outside it, also through a symlink; says what to do without the CLI", () => {
        const home = tempDir("wrapper");
        const cli = path.join(home, "pulumi");
        fs.writeFileSync(cli, '#!/usr/bin/env bash\necho "cwd=$PWD args=$* backend=$PULUMI_BACKEND_URL file=${PULUMI_CONFIG_PASSPHRASE_FILE:-none}"\n', { mode: 0o755 });
        const run = (env: Record<string, string>, cwd = os.tmpdir(), wrapper = path.join(ROOT, "scripts", "pulumi")) => spawnSync(wrapper, ["stack", "ls"], {
            cwd, encoding: "utf8", env: { PATH: process.env.PATH!, HOME: home, ...env },
        });
        const r = run({ CZD_PULUMI: cli, CDPATH: "." });
        assert.strictEqual(r.status, 0, r.stderr);
        assert.strictEqual(r.stdout.trim(), `cwd=${fs.realpathSync(ROOT)} args=stack ls backend=file://${home}/.clj-zero-downtime/state file=${home}/.clj-zero-downtime/passphrase`);
        assert.match(run({ CZD_PULUMI: cli }, path.join(ROOT, "infra")).stdout, new RegExp(`^cwd=${path.join(ROOT, "infra")} `),
            "inside the project it stays where it was called: relative paths in arguments mean what they say");
        fs.symlinkSync(path.join(ROOT, "scripts", "pulumi"), path.join(home, "czd-pulumi"));
        assert.match(run({ CZD_PULUMI: cli }, os.tmpdir(), path.join(home, "czd-pulumi")).stdout, new RegExp(`^cwd=${fs.realpathSync(ROOT)} `), "through a symlink");
        assert.strictEqual(run({ CZD_PULUMI: "pulumi" }, home).status, 0, "a relative CZD_PULUMI is relative to where it was called");
        const own = run({ CZD_PULUMI: cli, PULUMI_CONFIG_PASSPHRASE: "" });
        assert.match(own.stdout, /file=none$/m, "a passphrase the user set, even an empty one, is the one used: no file beside it");
        const missing = run({ CZD_PULUMI: path.join(home, "not-installed") });
        assert.strictEqual(missing.status, 1);
        assert.match(missing.stderr, /the Pulumi CLI launcher is not installed yet .*: run npm run up \(or npm ci\) first/);
    });
});
