import { createHash } from "crypto";

/** A key in the cloud account, as both clouds' key listings describe it. */
export interface AccountKey {
    id: number;
    name: string;
    fingerprint: string;
}

/**
 * The MD5 fingerprint both DigitalOcean and Hetzner give an OpenSSH public key
 * ("aa:bb:..."): of the key's base64 body, without its type and comment.
 */
export function sshKeyFingerprint(publicKey: string): string {
    return createHash("md5").update(publicKeyBlob(publicKey)).digest("hex").match(/../g)!.join(":");
}

/** An OpenSSH public key line's key blob: its base64 body, decoded, without type and comment. */
export function publicKeyBlob(publicKey: string): Buffer {
    return Buffer.from(publicKey.trim().split(/\s+/)[1] ?? "", "base64");
}

/** `ssh-keygen -l`'s SHA256 fingerprint of a public key blob: public, safe to show. */
export function sha256Fingerprint(blob: Buffer): string {
    return `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

/**
 * What the private key's text says about it, without ever returning any of it:
 * `encrypted` for a passphrase-protected key (OpenSSH with a cipher other than "none",
 * PEM with `Proc-Type: 4,ENCRYPTED`, PKCS#8 `ENCRYPTED PRIVATE KEY`); for an OpenSSH-format
 * key, the public key blobs stored (unencrypted) beside the private part; `damaged` for an
 * OpenSSH key whose data ends early. A body that is not OpenSSH key data at all is left to
 * the SSH connection to judge (`publicKeys` is then undefined).
 */
export function inspectPrivateKey(key: string): { encrypted: boolean; damaged: boolean; publicKeys?: Buffer[] } {
    if (/-----BEGIN ENCRYPTED PRIVATE KEY-----/.test(key) || /^Proc-Type:\s*4,ENCRYPTED\s*$/m.test(key)) {
        return { encrypted: true, damaged: false };
    }
    const m = /-----BEGIN OPENSSH PRIVATE KEY-----([\s\S]*?)(-----END OPENSSH PRIVATE KEY-----|$)/.exec(key);
    if (!m) return { encrypted: false, damaged: false };
    const data = Buffer.from(m[1].replace(/\s+/g, ""), "base64");
    const MAGIC = Buffer.from("openssh-key-v1\0", "latin1");
    if (data.length < MAGIC.length || !data.subarray(0, MAGIC.length).equals(MAGIC)) return { encrypted: false, damaged: false };
    // openssh-key-v1\0, string ciphername, string kdfname, string kdfoptions, uint32 N, N x string publickey, string private part.
    let off = MAGIC.length;
    const uint32 = (): number | undefined => {
        if (off + 4 > data.length) return undefined;
        const v = data.readUInt32BE(off);
        off += 4;
        return v;
    };
    const bytes = (): Buffer | undefined => {
        const n = uint32();
        if (n === undefined || off + n > data.length) return undefined;
        const b = data.subarray(off, off + n);
        off += n;
        return b;
    };
    const cipher = bytes();
    if (cipher === undefined) return { encrypted: false, damaged: true };
    const encrypted = cipher.toString("latin1") !== "none";
    if (bytes() === undefined || bytes() === undefined) return { encrypted, damaged: true };
    const count = uint32();
    if (count === undefined || count < 1 || count > 16) return { encrypted, damaged: true };
    const publicKeys: Buffer[] = [];
    for (let i = 0; i < count; i++) {
        const blob = bytes();
        if (blob === undefined) return { encrypted, damaged: true };
        publicKeys.push(blob);
    }
    return { encrypted, damaged: false, publicKeys };
}

/** The cloud key name this stack gives the key when it uploads it. */
export function ownKeyName(serverName: string): string {
    return `${serverName}-pulumi`;
}

/**
 * The account's key to put on the new server, when the account already holds this public key
 * (under any name: the user's upload, another stack's, or this stack's own from an earlier run).
 * Both clouds refuse a second upload of a key (DigitalOcean answers 422, Hetzner wants
 * fingerprints unique), so the stack uploads the key only when this finds none.
 */
export function accountKeyFor(accountKeys: AccountKey[] | undefined, publicKey: string): AccountKey | undefined {
    const fingerprint = sshKeyFingerprint(publicKey);
    return (accountKeys ?? []).find(k => k.fingerprint === fingerprint);
}
