// The README's config reference is the users' manual for `pulumi config set`: it must list every
// key the program reads, with the default the code applies, and the limits the code enforces.
// Where the prose describes the rotation, its numbers must be the code's too.
import * as assert from "assert";
import * as fs from "fs";
import * as path from "path";
import {
    CLOUD_DEFAULTS, DEFAULTS, RAMP_SECONDS_MAX, RAMP_STEPS_PERCENT, SCALAR_KEYS, SECRET_KEYS, STRUCTURED_KEYS, WARMUP_REQUESTS_MAX,
} from "../../infra/config";
import { JIT_NICE, ROLLBACK_WARMUP_REQUESTS } from "../../infra/rotation";

const README = fs.readFileSync(path.join(__dirname, "..", "..", "README.md"), "utf8");

/** The config reference's rows: key -> [default column, description column]. */
function configReference(): Map<string, [string, string]> {
    const section = README.split("\n## Configuration reference\n")[1]?.split("\n## ")[0];
    assert.ok(section, "the README has a '## Configuration reference' section");
    const rows = new Map<string, [string, string]>();
    for (const line of section.split("\n")) {
        const cells = line.split("|").map(c => c.trim());
        if (cells.length < 5 || !cells[1].startsWith("`")) continue;
        // A row may name several keys ("`slot1Port`, `slot2Port`"), with their defaults in order.
        const keys = [...cells[1].matchAll(/`([A-Za-z0-9]+)`/g)].map(m => m[1]);
        const defaults = keys.length > 1 ? cells[2].split(", ") : [cells[2]];
        keys.forEach((key, i) => rows.set(key, [defaults[i] ?? "", cells[3]]));
    }
    return rows;
}

/** How the README shows a default the code applies (empty: no default). */
function shown(value: unknown): string {
    if (value === "") return "";
    if (Array.isArray(value)) return `\`${JSON.stringify(value).replace(/","/g, "\", \"")}\``;
    return `\`${value}\``;
}

describe("README: configuration reference", () => {
    const rows = configReference();

    it("lists every key the program reads", () => {
        const keys = [...SCALAR_KEYS, ...SECRET_KEYS, ...STRUCTURED_KEYS];
        const missing = keys.filter(k => !rows.has(k));
        assert.deepStrictEqual(missing, [], `keys missing from the README's config reference: ${missing.join(", ")}`);
    });

    it("gives each key the default the code applies", () => {
        // Defaults the code computes, shown in words.
        const inWords: Record<string, string> = {
            region: `\`${CLOUD_DEFAULTS.digitalocean.region}\` / \`${CLOUD_DEFAULTS.hetzner.region}\``,
            size: `\`${CLOUD_DEFAULTS.digitalocean.size}\` / \`${CLOUD_DEFAULTS.hetzner.size}\``,
            sshPublicKey: "(required)",
            environment: "stack name",
            warmupPath: "health path",
            acmeServer: "Let's Encrypt production",
        };
        const wrong = SCALAR_KEYS.filter(k => rows.get(k)?.[0] !== (inWords[k] ?? shown(DEFAULTS[k])))
            .map(k => `${k}: README ${JSON.stringify(rows.get(k)?.[0])}, code ${JSON.stringify(inWords[k] ?? shown(DEFAULTS[k]))}`);
        assert.deepStrictEqual(wrong, []);
    });

    it("states the limits and steps the code uses for the warm-up, the ramp and the JIT", () => {
        assert.ok(rows.get("warmupRequests")![1].includes(`(0 to ${WARMUP_REQUESTS_MAX};`), rows.get("warmupRequests")![1]);
        const ramp = rows.get("rampSeconds")![1];
        assert.ok(ramp.includes(`${RAMP_STEPS_PERCENT.map(p => `${p} %`).join(", ")}, then all (0 to ${RAMP_SECONDS_MAX};`), ramp);
        assert.ok(rows.get("bootPriority")![1].includes(`nice ${JIT_NICE}`), rows.get("bootPriority")![1]);
        assert.ok(README.includes(`A rollback sends at most ${ROLLBACK_WARMUP_REQUESTS}.`));
    });
});

describe("README and docs/benchmarks.md: the rotation as the prose describes it", () => {
    const methods = fs.readFileSync(path.join(__dirname, "..", "..", "docs", "benchmarks.md"), "utf8").split("\n## Methods\n")[1]?.split("\n## ")[0] ?? "";
    const texts: [string, string][] = [["README.md", README], ["docs/benchmarks.md's Methods", methods]];

    it("names the ramp's steps as the code has them, wherever it lists them", () => {
        assert.ok(methods, "docs/benchmarks.md has a '## Methods' section");
        // "10, 30, 60 %", "10 %, then 30 %,\nthen 60 %", "about 10, 30 and 60 %"
        const list = /(\d+)(?: %)?,\s+(?:then\s+)?(\d+)(?: %)?,?\s+(?:then\s+|and\s+)?(\d+) %/g;
        for (const [name, text] of texts) {
            const found = [...text.matchAll(list)].map(m => [m[1], m[2], m[3]].map(Number));
            assert.ok(found.length >= (name === "README.md" ? 4 : 1), `${name} lists the ramp's steps: ${JSON.stringify(found)}`);
            for (const steps of found) assert.deepStrictEqual(steps, [...RAMP_STEPS_PERCENT], `${name}: ${steps.join(", ")}`);
        }
    });

    it("names the JIT compiler threads' nice value as the code has it (nice 0 is a normal boot's)", () => {
        for (const [name, text] of texts) {
            const nices = [...text.matchAll(/\bnice (\d+)\b/g)].map(m => Number(m[1])).filter(n => n !== 0);
            assert.ok(nices.length >= 1, `${name} names it`);
            assert.deepStrictEqual([...new Set(nices)], [JIT_NICE], name);
        }
    });
});

describe("README and docs/benchmarks.md: links", () => {
    const ROOT = path.join(__dirname, "..", "..");
    const pages = ["README.md", "docs/benchmarks.md"];
    /** GitHub's anchors for a page's headings (outside code blocks): lower case, punctuation
     *  dropped, spaces as hyphens, "-1", "-2" after a repeated one. */
    const anchors = (page: string): string[] => {
        const text = fs.readFileSync(path.join(ROOT, page), "utf8").replace(/^```[^\n]*\n[\s\S]*?^```$/gm, "");
        const seen = new Map<string, number>();
        return [...text.matchAll(/^#{1,6} (.+)$/gm)].map(([, heading]) => {
            const base = heading.trim().toLowerCase().replace(/[^\p{L}\p{N}_\- ]/gu, "").replace(/ /g, "-");
            const n = seen.get(base) ?? 0;
            seen.set(base, n + 1);
            return n ? `${base}-${n}` : base;
        });
    };

    it("every link to a file names one in the repository, and every link to a heading names one of its page's", () => {
        let checked = 0;
        for (const page of pages) {
            const text = fs.readFileSync(path.join(ROOT, page), "utf8");
            for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
                if (/^[a-z]+:/.test(target)) continue; // https:, mailto:
                const [file, hash] = target.split("#");
                const linked = file ? path.normalize(path.join(path.dirname(page), file)) : page;
                assert.ok(fs.existsSync(path.join(ROOT, linked)), `${page} links to ${target}: there is no ${linked}`);
                if (hash !== undefined) assert.ok(anchors(linked).includes(hash), `${page} links to ${target}: ${linked} has no heading with that anchor`);
                checked++;
            }
        }
        assert.ok(checked >= 30, `only ${checked} links found`);
    });
});
