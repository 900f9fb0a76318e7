// Let's Encrypt's ACME test server (Debian's `pebble` package) beside a test
// host, validating for real: its HTTP-01 checks connect to port 80 of the
// address our tiny DNS responder gives for the domain. The test decides what
// the DNS answers (`dns.set`), so "DNS does not point at the server yet" is
// one `dns.delete` away.
import { execFileSync, spawn, ChildProcess } from "child_process";
import * as dgram from "dgram";
import * as fs from "fs";
import * as https from "https";
import * as path from "path";

export const PEBBLE_ACME_PORT = 14000;
export const PEBBLE_MANAGEMENT_PORT = 15000;

export interface Pebble {
    /** ACME directory URL, reachable from the test host. */
    directoryUrl: string;
    /** PEM of the CA that signs pebble's own HTTPS listener: what an ACME client must trust. */
    listenerCaPem: string;
    /** Domain -> IPv4 address answered by the DNS responder; a missing domain gets NXDOMAIN. */
    dns: Map<string, string>;
    /** The root that signs issued certificates (pebble makes a new one at every start). */
    issuingRootPem(): Promise<string>;
    logText(): string;
    stop(): Promise<void>;
}

function sleep(ms: number): Promise<void> {
    return new Promise(r => setTimeout(r, ms));
}

function openssl(args: string[], cwd: string): void {
    execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

/** A CA and a leaf for pebble's listener, valid for the host-side address. */
function makeListenerCerts(dir: string, address: string): void {
    openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
        "-subj", "/CN=czd test pebble listener CA", "-keyout", "ca.key", "-out", "ca.pem"], dir);
    openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", "/CN=pebble", "-keyout", "key.pem", "-out", "req.csr"], dir);
    fs.writeFileSync(path.join(dir, "ext.cnf"), `subjectAltName=IP:${address},IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
    openssl(["x509", "-req", "-in", "req.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "ext.cnf", "-out", "cert.pem"], dir);
}

/** Answers A queries from `records` (NXDOMAIN for unknown names, no data for other types). */
export function dnsAnswer(query: Buffer, records: Map<string, string>): Buffer | undefined {
    if (query.length < 12) return undefined;
    const labels: string[] = [];
    let i = 12;
    while (i < query.length && query[i] !== 0) {
        const len = query[i];
        labels.push(query.subarray(i + 1, i + 1 + len).toString("ascii"));
        i += 1 + len;
    }
    const questionEnd = i + 5; // zero label, QTYPE, QCLASS
    if (questionEnd > query.length) return undefined;
    const qtype = query.readUInt16BE(i + 1);
    const name = labels.join(".").toLowerCase();
    const address = records.get(name);
    const header = Buffer.alloc(12);
    query.copy(header, 0, 0, 2); // id
    const rd = query[2] & 0x01;
    header[2] = 0x80 | 0x04 | rd; // QR, AA, RD copied
    header[3] = 0x80 | (address === undefined ? 3 : 0); // RA, NXDOMAIN or NOERROR
    header.writeUInt16BE(1, 4); // one question
    const question = query.subarray(12, questionEnd);
    if (address === undefined || qtype !== 1) return Buffer.concat([header, question]);
    header.writeUInt16BE(1, 6); // one answer
    const answer = Buffer.alloc(16);
    answer.writeUInt16BE(0xc00c, 0); // the name, by pointer to the question
    answer.writeUInt16BE(1, 2); // A
    answer.writeUInt16BE(1, 4); // IN
    answer.writeUInt32BE(0, 6); // TTL 0: every lookup sees the current answer
    answer.writeUInt16BE(4, 10);
    address.split(".").forEach((octet, k) => (answer[12 + k] = Number(octet)));
    return Buffer.concat([header, question, answer]);
}

function startDns(records: Map<string, string>): Promise<{ port: number; socket: dgram.Socket }> {
    return new Promise((resolve, reject) => {
        const socket = dgram.createSocket("udp4");
        socket.on("message", (msg, rinfo) => {
            const reply = dnsAnswer(msg, records);
            if (reply) socket.send(reply, rinfo.port, rinfo.address);
        });
        socket.once("error", reject);
        socket.bind(0, "127.0.0.1", () => resolve({ port: socket.address().port, socket }));
    });
}

function get(url: string, ca: string): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
        https.get(url, { ca, timeout: 5000 }, res => {
            let body = "";
            res.setEncoding("utf8").on("data", d => (body += d)).on("end", () => resolve({ status: res.statusCode!, body }));
        }).on("error", reject);
    });
}

/** Starts pebble on `address` (the host side of a test host's veth) with its own listener certificate. */
export async function startPebble(opts: { address: string; workDir: string; log: (line: string) => void }): Promise<Pebble> {
    const dir = opts.workDir;
    fs.mkdirSync(dir, { recursive: true });
    makeListenerCerts(dir, opts.address);
    const records = new Map<string, string>();
    const dns = await startDns(records);
    fs.writeFileSync(path.join(dir, "pebble.json"), JSON.stringify({
        pebble: {
            listenAddress: `${opts.address}:${PEBBLE_ACME_PORT}`,
            managementListenAddress: `${opts.address}:${PEBBLE_MANAGEMENT_PORT}`,
            certificate: path.join(dir, "cert.pem"),
            privateKey: path.join(dir, "key.pem"),
            httpPort: 80,
            tlsPort: 443,
            ocspResponderURL: "",
            externalAccountBindingRequired: false,
        },
    }, null, 2));
    const logPath = path.join(dir, "pebble.log");
    const out = fs.openSync(logPath, "a");
    const child: ChildProcess = spawn("pebble", ["-config", path.join(dir, "pebble.json"), "-dnsserver", `127.0.0.1:${dns.port}`], {
        stdio: ["ignore", out, out],
        // Real validation, at full speed; every nonce good (certbot retries a bad one only once).
        env: { ...process.env, PEBBLE_VA_NOSLEEP: "1", PEBBLE_VA_ALWAYS_VALID: "0", PEBBLE_WFE_NONCEREJECT: "0" },
    });
    fs.closeSync(out);
    const listenerCaPem = fs.readFileSync(path.join(dir, "ca.pem"), "utf8");
    const logText = () => (fs.existsSync(logPath) ? fs.readFileSync(logPath, "utf8") : "");
    let exited = false;
    child.once("exit", () => (exited = true));
    const stop = async () => {
        if (!exited && child.pid) {
            const gone = new Promise<void>(r => child.once("exit", () => r()));
            process.kill(child.pid, "SIGTERM");
            await Promise.race([gone, sleep(3000)]);
            if (!exited) process.kill(child.pid, "SIGKILL");
        }
        dns.socket.close();
    };
    const directoryUrl = `https://${opts.address}:${PEBBLE_ACME_PORT}/dir`;
    const deadline = Date.now() + 20_000;
    for (;;) {
        if (exited) {
            await stop();
            throw new Error(`pebble exited at start:\n${logText()}`);
        }
        const ok = await get(directoryUrl, listenerCaPem).then(r => r.status === 200, () => false);
        if (ok) break;
        if (Date.now() > deadline) {
            await stop();
            throw new Error(`pebble did not answer ${directoryUrl} within 20s:\n${logText()}`);
        }
        await sleep(100);
    }
    opts.log(`[pebble] ${directoryUrl} (pid ${child.pid}), DNS responder on 127.0.0.1:${dns.port}`);
    return {
        directoryUrl,
        listenerCaPem,
        dns: records,
        async issuingRootPem() {
            const r = await get(`https://${opts.address}:${PEBBLE_MANAGEMENT_PORT}/roots/0`, listenerCaPem);
            if (r.status !== 200) throw new Error(`pebble /roots/0 answered ${r.status}: ${r.body}`);
            return r.body;
        },
        logText,
        stop,
    };
}
