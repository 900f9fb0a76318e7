import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import Mustache from "mustache";

/** Where the *.mustache templates live. */
export const TEMPLATE_DIR = path.join(__dirname, "..", "templates");

const cache = new Map<string, string>();

function loadTemplate(name: string): string {
    let text = cache.get(name);
    if (text === undefined) {
        text = fs.readFileSync(path.join(TEMPLATE_DIR, `${name}.mustache`), "utf8");
        cache.set(name, text);
    }
    return text;
}

/**
 * Renders `templates/<name>.mustache`. HTML escaping is off: these are shell,
 * nginx and ini files, and every value was validated before it got here.
 * Partials are other templates, by name (`{{> lib}}`).
 */
export function render(name: string, view: object): string {
    return Mustache.render(loadTemplate(name), view, loadTemplate, { escape: (s: string) => s });
}

/** Short content hash used as a trigger: a step re-runs exactly when what it installs changes. */
export function contentHash(...parts: string[]): string {
    const h = crypto.createHash("sha256");
    for (const p of parts) {
        h.update(p);
        h.update("\0");
    }
    return h.digest("hex").slice(0, 16);
}
