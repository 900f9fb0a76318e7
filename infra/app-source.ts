// Which revision of the app a deploy ships, decided from git at program time,
// and the archive of exactly that committed tree (never target/, .git or
// uncommitted files).
import { execFileSync } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";

export class AppSourceError extends Error {
    constructor(message: string) {
        super(message);
        this.name = "AppSourceError";
    }
}

export interface AppRevision {
    /** Absolute path of the app directory. */
    appDir: string;
    /** The last commit at `revision` that touched the app directory: the deploy's trigger and release name. */
    commit: string;
    /** The repository's top-level directory. */
    repoDir: string;
    /** The app directory's path inside its repository ("" when the app is the repository root). */
    prefix: string;
    /** Files under the app directory with uncommitted changes: reported, never deployed. */
    uncommitted: string[];
}

/**
 * The cloud API tokens the providers read from the environment (the README has users export
 * them): @pulumi/digitalocean takes DIGITALOCEAN_TOKEN or DIGITALOCEAN_ACCESS_TOKEN, @pulumi/hcloud
 * HCLOUD_TOKEN. Each can create and delete servers on the account.
 */
export const CLOUD_TOKEN_ENV = ["DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN", "HCLOUD_TOKEN"] as const;

/**
 * The environment for the programs this program runs on the user's machine (git, tar, lein):
 * without Pulumi's, which holds every config value with the secrets decrypted (PULUMI_CONFIG),
 * the state passphrase (PULUMI_CONFIG_PASSPHRASE, _FILE) and the access token, and without the
 * cloud tokens (CLOUD_TOKEN_ENV). `lein uberjar` runs the app's project.clj and its plugins: none
 * of them has any business with those. Everything else is passed on (a build may need AWS_* for
 * an S3 Maven repository, say).
 */
export function commandEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
    const dropped = (k: string) => /^PULUMI_(CONFIG|ACCESS_TOKEN)/.test(k) || (CLOUD_TOKEN_ENV as readonly string[]).includes(k);
    return Object.fromEntries(Object.entries(env).filter(([k]) => !dropped(k)));
}

function git(cwd: string, args: string[]): string {
    return execFileSync("git", args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], env: commandEnv() }).trim();
}

/** Resolves `revision` of the app at `appPath`, or throws an AppSourceError that says what to fix. */
export function resolveAppRevision(appPath: string, revision: string, baseDir = process.cwd()): AppRevision {
    const appDir = path.resolve(baseDir, appPath);
    if (!fs.existsSync(appDir) || !fs.statSync(appDir).isDirectory()) {
        throw new AppSourceError(`clj-zero-downtime:appPath = "${appPath}" is not a directory (looked at ${appDir}); set it to your app's git checkout`);
    }
    let prefix: string;
    try {
        prefix = git(appDir, ["rev-parse", "--show-prefix"]);
    } catch {
        throw new AppSourceError(`clj-zero-downtime:appPath = "${appPath}" is not inside a git repository (${appDir}); deploys ship committed revisions: run \`git init\` and commit your app`);
    }
    let commit: string;
    try {
        git(appDir, ["rev-parse", "--verify", "--quiet", `${revision}^{commit}`]);
        commit = git(appDir, ["log", "-1", "--format=%H", `${revision}`, "--", "."]);
    } catch {
        throw new AppSourceError(`clj-zero-downtime:appRevision = "${revision}" does not exist in the git repository at ${appDir}; use a commit, tag or branch that exists there (default HEAD)`);
    }
    if (!/^[0-9a-f]{40}$/.test(commit)) {
        throw new AppSourceError(`clj-zero-downtime:appRevision = "${revision}" has no commit that touches ${appPath}; commit the app first`);
    }
    // Porcelain lines are "XY path": not trimmed, the first column may be a space.
    const status = execFileSync("git", ["status", "--porcelain", "--untracked-files=normal", "--", "."], { cwd: appDir, encoding: "utf8", env: commandEnv() });
    const uncommitted = status.split("\n").filter(Boolean).map(l => l.slice(3));
    const repoDir = git(appDir, ["rev-parse", "--show-toplevel"]);
    return { appDir, repoDir, commit, prefix: prefix.replace(/\/$/, ""), uncommitted };
}

/**
 * Sets every entry's modification time in a tar to `mtime` (seconds) and fixes
 * the header checksums. `git archive` of a subdirectory (a tree, not a commit)
 * stamps entries with the current time; this makes its bytes depend on the
 * commit alone.
 */
export function normalizeTarMtime(tar: Buffer, mtime: number): Buffer {
    const out = Buffer.from(tar);
    const stamp = Buffer.from(mtime.toString(8).padStart(11, "0") + "\0", "ascii");
    for (let off = 0; off + 512 <= out.length;) {
        const header = out.subarray(off, off + 512);
        if (header.every(b => b === 0)) break;
        stamp.copy(header, 136);
        header.fill(0x20, 148, 156);
        const sum = header.reduce((a, b) => a + b, 0);
        Buffer.from(sum.toString(8).padStart(6, "0") + "\0 ", "ascii").copy(header, 148);
        const size = parseInt(header.subarray(124, 136).toString("ascii").replace(/\0.*$/s, "").trim() || "0", 8);
        off += 512 + Math.ceil(size / 512) * 512;
    }
    return out;
}

/**
 * This user's cache of archives and jars: `$XDG_CACHE_HOME/clj-zero-downtime` (default
 * `~/.cache`), not the shared temporary directory. A file found there is shipped as it is, so
 * the directory must be this user's alone: another local user who could write into it could
 * plant the release. Created with mode 0700; refused when it is not that.
 */
export function privateCacheDir(sub = ""): string {
    const uid = process.getuid?.();
    const base = path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache"), "clj-zero-downtime");
    fs.mkdirSync(base, { recursive: true, mode: 0o700 });
    const st = fs.lstatSync(base);
    if (uid !== undefined && (!st.isDirectory() || st.uid !== uid || (st.mode & 0o077) !== 0)) {
        throw new AppSourceError(`the cache ${base} is not a directory of this user alone (owner uid ${st.uid}, mode ${(st.mode & 0o777).toString(8)}): ` +
            `a file in it would be deployed as it is; remove it (it is made again), or run chmod 700 ${base} if it is yours`);
    }
    const dir = path.join(base, sub);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    return dir;
}

/** How many archives (and jars) the cache keeps: the newest; older commits are made again when deployed. */
export const CACHE_KEEP = 10;

/** Removes all but the newest `keep` files of a cache directory (it lives in the home directory, which nothing cleans). */
export function pruneCache(dir: string, keep = CACHE_KEEP): void {
    const files = fs.readdirSync(dir, { withFileTypes: true }).filter(e => e.isFile())
        .map(e => ({ file: path.join(dir, e.name), mtime: fs.statSync(path.join(dir, e.name)).mtimeMs }))
        .sort((a, b) => b.mtime - a.mtime);
    for (const old of files.slice(keep)) fs.rmSync(old.file, { force: true });
}

/**
 * Writes `git archive` of the app's committed tree at `rev.commit` to a file
 * named after the commit and returns its path. Plain tar with every time set
 * to the commit's: the same commit always gives the same bytes, so Pulumi sees
 * no change until the commit changes.
 */
export function archiveAppRevision(rev: AppRevision, cacheDir = privateCacheDir()): string {
    fs.mkdirSync(cacheDir, { recursive: true });
    const tree = rev.prefix ? `${rev.commit}:${rev.prefix}` : rev.commit;
    const file = path.join(cacheDir, `${rev.commit}-${crypto.createHash("sha1").update(tree).digest("hex").slice(0, 8)}.tar`);
    if (!fs.existsSync(file)) {
        const tmp = `${file}.${process.pid}.tmp`;
        const tar = execFileSync("git", ["archive", "--format=tar", tree], { cwd: rev.repoDir, maxBuffer: 1 << 30, env: commandEnv() });
        const commitTime = Number(git(rev.repoDir, ["show", "-s", "--format=%ct", rev.commit]));
        fs.writeFileSync(tmp, normalizeTarMtime(tar, commitTime));
        fs.renameSync(tmp, file);
        pruneCache(cacheDir);
    }
    return file;
}
