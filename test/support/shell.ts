// Real checks of rendered shell scripts: `bash -n` and shellcheck.
import * as assert from "assert";
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";

export function tmpdir(tag: string): string {
    return fs.mkdtempSync(path.join(os.tmpdir(), `czd-${tag}-`));
}

/** Fails the test unless `script` parses with `bash -n` and passes shellcheck (style level). */
export function shellcheck(script: string, name: string): void {
    const dir = tmpdir("sc");
    const file = path.join(dir, `${name}.sh`);
    try {
        fs.writeFileSync(file, script);
        const syntax = spawnSync("bash", ["-n", file], { encoding: "utf8" });
        assert.strictEqual(syntax.status, 0, `bash -n ${name}: ${syntax.stderr}`);
        const sc = spawnSync("shellcheck", ["-s", "bash", "-S", "style", file], { encoding: "utf8" });
        assert.strictEqual(sc.status, 0, `shellcheck ${name}:\n${sc.stdout}${sc.stderr}`);
    } finally {
        fs.rmSync(dir, { recursive: true, force: true });
    }
}
