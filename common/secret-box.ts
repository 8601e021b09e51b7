/**
 * Encryption at rest of secrets (config values) with AES-256-GCM and a 32-byte key file of mode
 * 0600. A sealed value is `enc:v1:<base64url of iv | tag | ciphertext>`; anything else is clear
 * text from before encryption (the coordinator's store seals such rows on start).
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { HangarError } from './errors.js';

const PREFIX = 'enc:v1:';
const IV_BYTES = 12;
const TAG_BYTES = 16;

/** Seals and opens strings with one key. */
export class SecretBox {
  readonly #key: Buffer;

  /** @param key 32 bytes. */
  constructor(key: Buffer) {
    if (key.length !== 32) throw new HangarError('INTERNAL', 'A secret key must be 32 bytes.');
    this.#key = key;
  }

  /**
   * Reads the key file at `path`, or creates it (32 random bytes, mode 0600) when missing.
   *
   * @throws HangarError `INTERNAL` when the file exists but is not a 32-byte key.
   */
  static async fromKeyFile(path: string): Promise<SecretBox> {
    let key: Buffer;
    try {
      key = await readFile(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      key = randomBytes(32);
      try {
        await writeFile(path, key, { mode: 0o600, flag: 'wx' });
      } catch (writeErr) {
        if ((writeErr as NodeJS.ErrnoException).code !== 'EEXIST') throw writeErr;
        key = await readFile(path);
      }
    }
    await chmod(path, 0o600);
    if (key.length !== 32) {
      throw new HangarError('INTERNAL', `The secret key file ${path} is damaged (not 32 bytes); restore it from a backup.`);
    }
    return new SecretBox(key);
  }

  /** True when `text` is a sealed value. */
  static isSealed(text: string): boolean {
    return text.startsWith(PREFIX);
  }

  /** Encrypts `plaintext` with a fresh IV. */
  seal(plaintext: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.#key, iv);
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return PREFIX + Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url');
  }

  /**
   * Decrypts a sealed value; clear text (not sealed) is returned as it is.
   *
   * @throws HangarError `INTERNAL` when the value was sealed with another key or altered.
   */
  open(text: string): string {
    if (!SecretBox.isSealed(text)) return text;
    const raw = Buffer.from(text.slice(PREFIX.length), 'base64url');
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.#key, raw.subarray(0, IV_BYTES));
      decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
      return Buffer.concat([decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString('utf8');
    } catch (err) {
      throw new HangarError('INTERNAL', 'A secret could not be decrypted: the secret-key file does not match the data.', { cause: err });
    }
  }
}
