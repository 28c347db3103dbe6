// Human-readable numbers and times. Pure functions: the unit tests (tests/unit.test.mjs) import
// this module directly under node.

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/** Bytes in binary units: 0 B, 999 B, 1.0 KiB, 143.6 KiB, 20.5 MiB. */
export function formatBytes(n) {
  if (typeof n !== "number" || !Number.isFinite(n)) return "–";
  const neg = n < 0;
  let v = Math.abs(n);
  if (v < 1024) return `${neg ? "-" : ""}${Math.round(v)} B`;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u += 1;
  }
  // 1023.96 KiB would print as "1024.0 KiB": carry into the next unit instead.
  if (v.toFixed(1) === "1024.0" && u < UNITS.length - 1) {
    v /= 1024;
    u += 1;
  }
  return `${neg ? "-" : ""}${v.toFixed(1)} ${UNITS[u]}`;
}

/** An exact count with thousands separators, independent of the browser's locale: 147,000. */
export function formatCount(n) {
  if (typeof n !== "number" || !Number.isFinite(n)) return "–";
  const s = String(Math.trunc(Math.abs(n)));
  return (n < 0 ? "-" : "") + s.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/** An event time (ns since the Unix epoch, a number or a numeric string) as UTC text. */
export function formatTime(ns) {
  if (ns === null || ns === undefined) return "–";
  const ms = Number(BigInt(String(ns)) / 1000000n);
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return String(ns);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}
