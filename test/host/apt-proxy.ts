// A small forwarding HTTP proxy for apt inside a test host, whose network
// namespace has no route out. It forwards plain-HTTP absolute-URI GET/HEAD
// requests to the Debian mirrors only; everything else gets 403 (or 405 for
// other methods, CONNECT included). Standard library only.
//
//   node -r ts-node/register/transpile-only test/host/apt-proxy.ts \
//        --listen 10.213.1.1 --port 3142 [--tag czd-testhost-proxy:NAME]
//
// Prints "apt-proxy listening on HOST:PORT" once ready; one line per request.
import * as http from "http";
import type { AddressInfo } from "net";

export const ALLOWED_HOSTS: readonly string[] = ["deb.debian.org", "security.debian.org"];

const HOP_BY_HOP = new Set([
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
]);

export interface AptProxy {
    server: http.Server;
    host: string;
    port: number;
    close(): Promise<void>;
}

export interface AptProxyOptions {
    host: string;
    port: number;
    allowedHosts?: readonly string[];
    log?: (line: string) => void;
}

function endToEndHeaders(headers: http.IncomingHttpHeaders): http.OutgoingHttpHeaders {
    const connectionTokens = String(headers["connection"] ?? "")
        .split(",")
        .map(t => t.trim().toLowerCase())
        .filter(Boolean);
    const out: http.OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(headers)) {
        const lower = name.toLowerCase();
        if (HOP_BY_HOP.has(lower) || connectionTokens.includes(lower) || value === undefined) continue;
        out[name] = value;
    }
    return out;
}

function refuse(res: http.ServerResponse, status: number, message: string): void {
    res.writeHead(status, { "content-type": "text/plain", "content-length": Buffer.byteLength(message) + 1 });
    res.end(message + "\n");
}

export function startAptProxy(opts: AptProxyOptions): Promise<AptProxy> {
    const allowed = new Set((opts.allowedHosts ?? ALLOWED_HOSTS).map(h => h.toLowerCase()));
    const log = opts.log ?? (() => undefined);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });

    const server = http.createServer((req, res) => {
        const method = req.method ?? "";
        const started = Date.now();
        const done = (status: number | string) =>
            log(`${method} ${req.url} -> ${status} (${Date.now() - started}ms)`);

        if (method !== "GET" && method !== "HEAD") {
            refuse(res, 405, `apt-proxy: method ${method} not allowed (only GET and HEAD)`);
            return done(405);
        }
        let target: URL;
        try {
            target = new URL(req.url ?? "");
        } catch {
            refuse(res, 403, "apt-proxy: only absolute http:// URIs are proxied");
            return done(403);
        }
        const port = target.port === "" ? 80 : Number(target.port);
        if (target.protocol !== "http:" || !allowed.has(target.hostname.toLowerCase()) || port !== 80) {
            refuse(res, 403, `apt-proxy: ${target.protocol}//${target.host} is not allowed`);
            return done(403);
        }

        const headers = endToEndHeaders(req.headers);
        headers["host"] = target.host;
        const upstream = http.request(
            { host: target.hostname, port, method, path: target.pathname + target.search, headers, agent },
            up => {
                res.writeHead(up.statusCode ?? 502, up.statusMessage, endToEndHeaders(up.headers));
                up.pipe(res);
                up.on("end", () => done(up.statusCode ?? "?"));
                up.on("error", () => res.destroy());
            },
        );
        upstream.setTimeout(60_000, () => upstream.destroy(new Error("upstream timeout")));
        upstream.on("error", err => {
            if (!res.headersSent) refuse(res, 502, `apt-proxy: upstream error: ${err.message}`);
            else res.destroy();
            done(`502 ${err.message}`);
        });
        res.on("close", () => {
            if (!res.writableFinished) upstream.destroy();
        });
        upstream.end();
    });
    // CONNECT (https tunnelling) is never allowed.
    server.on("connect", (req: http.IncomingMessage, socket) => {
        log(`CONNECT ${req.url} -> 403`);
        socket.end("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    });
    server.on("clientError", (_err, socket) => {
        if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n");
    });

    return new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(opts.port, opts.host, () => {
            server.off("error", reject);
            const addr = server.address() as AddressInfo;
            resolve({
                server,
                host: addr.address,
                port: addr.port,
                close: () =>
                    new Promise<void>(r => {
                        agent.destroy();
                        server.close(() => r());
                        server.closeAllConnections();
                    }),
            });
        });
    });
}

function argValue(argv: string[], flag: string): string | undefined {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : undefined;
}

async function main(argv: string[]): Promise<void> {
    const host = argValue(argv, "--listen") ?? "127.0.0.1";
    const port = Number(argValue(argv, "--port") ?? "3142");
    const proxy = await startAptProxy({
        host,
        port,
        log: line => process.stdout.write(`${new Date().toISOString()} ${line}\n`),
    });
    process.stdout.write(`apt-proxy listening on ${proxy.host}:${proxy.port}\n`);
    const stop = () => void proxy.close().then(() => process.exit(0));
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
}

if (require.main === module) {
    main(process.argv.slice(2)).catch(err => {
        process.stderr.write(`apt-proxy: ${err instanceof Error ? err.message : String(err)}\n`);
        process.exit(1);
    });
}
