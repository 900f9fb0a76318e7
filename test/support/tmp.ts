// Temporary directories for tests. Each one is removed when the test process exits, whatever
// the tests did: a failed assertion, or a filtered run (mocha -g) in which a block's `after`
// hook never ran. Tests that remove theirs sooner may; removing twice is harmless.
import * as fs from "fs";
import * as os from "os";
import * as path from "path";

const made: string[] = [];
process.on("exit", () => {
    for (const dir of made) fs.rmSync(dir, { recursive: true, force: true });
});

/** A new empty directory under the OS's temporary directory, named `czd-<tag>-XXXXXX`. */
export function tempDir(tag: string): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `czd-${tag}-`));
    made.push(dir);
    return dir;
}
