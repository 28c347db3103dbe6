// A Server-Sent Events parser for a stream read with fetch(): EventSource cannot send an
// Authorization header, and the page needs one when the server has a token.
//
// It follows the WHATWG "event stream interpretation" rules that this server's stream uses:
// lines end in LF, CRLF or CR; a blank line dispatches the event; "data" lines join with LF;
// "event" names the type (default "message"); lines starting with ":" are comments (the
// keep-alives); "id" and "retry" are accepted and ignored (a reconnect asks for a fresh snapshot
// rather than resuming from an id). Input arrives in arbitrary chunks, split anywhere, also
// inside a CRLF pair or a multi-byte character (the caller decodes with a streaming TextDecoder).

export class SseParser {
  /** @param {(event: {type: string, data: string}) => void} onEvent */
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buf = "";
    this.type = "";
    this.data = [];
    this.sawCR = false;
  }

  /** Feeds decoded text. */
  push(text) {
    let s = text;
    // A CR at the end of the previous chunk already ended its line; skip the LF of that CRLF.
    if (this.sawCR && s.startsWith("\n")) s = s.slice(1);
    this.sawCR = false;
    let start = 0;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      this.line(this.buf + s.slice(start, i));
      this.buf = "";
      if (c === 13) {
        if (i + 1 < s.length) {
          if (s.charCodeAt(i + 1) === 10) i += 1;
        } else {
          this.sawCR = true;
        }
      }
      start = i + 1;
    }
    this.buf += s.slice(start);
  }

  line(line) {
    if (line === "") {
      if (this.data.length > 0) {
        const event = { type: this.type || "message", data: this.data.join("\n") };
        this.type = "";
        this.data = [];
        this.onEvent(event);
      } else {
        this.type = "";
      }
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.type = value;
    else if (field === "data") this.data.push(value);
    // "id", "retry" and unknown fields: ignored.
  }
}
