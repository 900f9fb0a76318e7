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
    const body = publicKey.trim().split(/\s+/)[1] ?? "";
    return createHash("md5").update(Buffer.from(body, "base64")).digest("hex").match(/../g)!.join(":");
}

/** The cloud key name this stack gives the key it uploads. */
export function ownKeyName(serverName: string): string {
    return `${serverName}-pulumi`;
}

/**
 * The account's key to put on the new server, when the account already holds this public key
 * under another name: both clouds refuse a second upload of a key (DigitalOcean answers 422,
 * Hetzner wants fingerprints unique), so this stack uses that one and uploads nothing.
 * A key under this stack's own name is the one it uploaded itself: it keeps managing it,
 * or the next run would delete it.
 */
export function reusableAccountKey(accountKeys: AccountKey[] | undefined, publicKey: string, ownName: string): AccountKey | undefined {
    const fingerprint = sshKeyFingerprint(publicKey);
    const same = (accountKeys ?? []).filter(k => k.fingerprint === fingerprint);
    if (same.some(k => k.name === ownName)) return undefined;
    return same[0];
}
