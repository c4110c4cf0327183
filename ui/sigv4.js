// AWS Signature Version 4 for the dashboard's calls, in plain JavaScript:
// SHA-256 and HMAC here rather than WebCrypto, which browsers offer only
// on HTTPS and localhost pages, so that a dashboard served over plain
// HTTP on a private address signs the same way.

// SHA-256's constants: the first 32 bits of the fractional parts of the
// square roots (H) and cube roots (K) of the first primes.
const PRIMES = (() => {
  const out = [];
  for (let n = 2; out.length < 64; n++) {
    if (out.every((p) => n % p !== 0)) out.push(n);
  }
  return out;
})();
const frac32 = (x) => Math.floor((x - Math.floor(x)) * 0x100000000) >>> 0;
const H0 = PRIMES.slice(0, 8).map((p) => frac32(Math.sqrt(p)));
const K = Uint32Array.from(PRIMES.map((p) => frac32(Math.cbrt(p))));

const rotr = (x, n) => (x >>> n) | (x << (32 - n));

/** SHA-256 of `bytes` (a Uint8Array), as a Uint8Array of 32 bytes. */
export function sha256(bytes) {
  const len = bytes.length;
  const padded = new Uint8Array((((len + 8) >> 6) + 1) << 6);
  padded.set(bytes);
  padded[len] = 0x80;
  const view = new DataView(padded.buffer);
  view.setUint32(padded.length - 8, Math.floor(len / 0x20000000));
  view.setUint32(padded.length - 4, (len << 3) >>> 0);
  const h = Uint32Array.from(H0);
  const w = new Uint32Array(64);
  for (let off = 0; off < padded.length; off += 64) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(off + i * 4);
    for (let i = 16; i < 64; i++) {
      const a = w[i - 15];
      const b = w[i - 2];
      const s0 = rotr(a, 7) ^ rotr(a, 18) ^ (a >>> 3);
      const s1 = rotr(b, 17) ^ rotr(b, 19) ^ (b >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) >>> 0;
    }
    let [a, b, c, d, e, f, g, k] = h;
    for (let i = 0; i < 64; i++) {
      const s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
      const ch = (e & f) ^ (~e & g);
      const t1 = (k + s1 + ch + K[i] + w[i]) >>> 0;
      const s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
      const maj = (a & b) ^ (a & c) ^ (b & c);
      const t2 = (s0 + maj) >>> 0;
      k = g;
      g = f;
      f = e;
      e = (d + t1) >>> 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) >>> 0;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += k;
  }
  const out = new Uint8Array(32);
  const outView = new DataView(out.buffer);
  h.forEach((v, i) => outView.setUint32(i * 4, v));
  return out;
}

const utf8 = (s) => new TextEncoder().encode(s);

/** HMAC-SHA256 of `message` under `key` (both Uint8Array). */
export function hmac(key, message) {
  if (key.length > 64) key = sha256(key);
  const inner = new Uint8Array(64 + message.length);
  const outer = new Uint8Array(64 + 32);
  for (let i = 0; i < 64; i++) {
    const b = key[i] || 0;
    inner[i] = b ^ 0x36;
    outer[i] = b ^ 0x5c;
  }
  inner.set(message, 64);
  outer.set(sha256(inner), 64);
  return sha256(outer);
}

export const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

// RFC 3986 encoding, as SigV4 wants it (every byte but A-Z a-z 0-9 - _ . ~).
const encode = (s) =>
  encodeURIComponent(s).replace(/[!'()*]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());

/**
 * The headers that sign a request: `x-amz-date` and `authorization`.
 * `headers` are those the request sends (lower-case names), all of which
 * are signed, with `host`.
 */
export function sign({ method, host, path, query, headers, body, service, region, accessKeyId, secretAccessKey, now }) {
  const stamp = (now || new Date()).toISOString().replace(/[-:]/g, "").replace(/\.\d+/, "");
  const day = stamp.slice(0, 8);
  const all = { ...headers, host, "x-amz-date": stamp };
  const names = Object.keys(all).map((n) => n.toLowerCase()).sort();
  const lower = Object.fromEntries(Object.entries(all).map(([n, v]) => [n.toLowerCase(), v]));
  const canonicalHeaders = names.map((n) => `${n}:${String(lower[n]).trim().replace(/\s+/g, " ")}\n`).join("");
  const signedHeaders = names.join(";");
  const canonicalQuery = (query || "")
    .split("&")
    .filter((kv) => kv)
    .map((kv) => {
      const [k, v = ""] = kv.split("=");
      return [encode(decodeURIComponent(k)), encode(decodeURIComponent(v))];
    })
    .sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join("&");
  const canonicalPath = path
    .split("/")
    .map((seg) => encode(decodeURIComponent(seg)))
    .join("/");
  const canonical = [
    method,
    canonicalPath,
    canonicalQuery,
    canonicalHeaders,
    signedHeaders,
    hex(sha256(utf8(body || ""))),
  ].join("\n");
  const scope = `${day}/${region}/${service}/aws4_request`;
  const toSign = ["AWS4-HMAC-SHA256", stamp, scope, hex(sha256(utf8(canonical)))].join("\n");
  let key = utf8("AWS4" + secretAccessKey);
  for (const part of [day, region, service, "aws4_request"]) key = hmac(key, utf8(part));
  const signature = hex(hmac(key, utf8(toSign)));
  return {
    "x-amz-date": stamp,
    authorization: `AWS4-HMAC-SHA256 Credential=${accessKeyId}/${scope}, SignedHeaders=${signedHeaders}, Signature=${signature}`,
  };
}
