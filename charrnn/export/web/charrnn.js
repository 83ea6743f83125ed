/* charrnn.js: sample a charrnn model in a browser or in Node 18+, as `charrnn sample` does.
 *
 *   const model = await charrnn.load();          // the folder's weights.js; or a URL, a path (Node), bytes
 *   await model.sample({ prompt: "ROMEO:", length: 300, temperature: 0.7, seed: 1 });   // the text after the prompt
 *   for await (const piece of model.stream({ prompt: "JULIET:" })) show(piece);        // as it is generated
 *   await model.nextTokenProbs("ROMEO", 5);      // [{ token, p }, ...], likeliest first
 *   model.info                                   // name, corpus, parameters, best_val_loss, level, cell, labels, ...
 *
 * Options (as `charrnn sample`'s): prompt, length (tokens; a record's most), temperature (0: greedy),
 * top_k, top_p, seed (the same seed gives the same text; none: a random one, on the iterator as .seed),
 * stop (end where this string first appears, not shown), label (a labelled records model), unknown
 * ("error", "skip" or, for word models, "unk": prompt tokens the model never saw).
 *
 * One classic script, no dependencies: a global `charrnn` in a browser, `module.exports` in Node.
 * In a browser the model runs in a Web Worker made from this script's own engine (a Blob URL, as
 * pages opened from disk may not start workers from files), so the page stays responsive.
 *
 * Same seed, same text: the engine is a port of charrnn's sampler (kernels.c's sample_row and
 * charrnn_uniform, text.py's stop strings, tokenizer.py's word rule) and of its step (the
 * layer-0 table of torch_step.py). With weights exported in fp32 it writes the text of
 * `charrnn sample --precision fp32 --no-echo` for the same seed and options, unless a drawn number
 * falls within float rounding of a boundary of the distribution (see the README).
 */
(function (root, make) {
  "use strict";
  const lib = make(root);
  if (typeof module === "object" && module && module.exports) module.exports = lib;
  else root.charrnn = lib;
})(typeof globalThis !== "undefined" ? globalThis : this, function (root) {
  "use strict";

  /* The engine: the file format, the tokenizer, the network and the sampler. Self-contained: its
   * source is what a Web Worker runs. engine(scope) returns the engine; given a worker's global
   * scope it also answers that worker's messages. */
  function engine(scope) {
  "use strict";
  const WASM = "AGFzbQEAAAABGgNgBX9/f39/AGAEf39/fwBgB39/f39/f38AAg8BA2VudgZtZW1vcnkCAAIDBAMAAQIEBQFwAQEBBg8CfwFBgIgEC38AQYCIBAsHJwQGbWF0dmVjAAAFd2lkZW4AAQRwYWNrAAILX19oZWFwX2Jhc2UDAQqVFAP6BwQDfwF7BH8IeyABQRBtIQVBACEGAkAgAUEgSA0AQQAhBwJAIAJBAEoNACAEIQEDQCABIAH9AAAA/QwAAAAAAAAAAAAAAAAAAAAAIgj95AH9CwAAIAFBEGoiCSAJ/QAAACAI/eQB/QsAACABQSBqIgkgCf0AAAAgCP3kAf0LAAAgAUEwaiIJIAn9AAAAIAj95AH9CwAAIAFBwABqIgkgCf0AAAAgCP3kAf0LAAAgAUHQAGoiCSAJ/QAAACAI/eQB/QsAACABQeAAaiIJIAn9AAAAIAj95AH9CwAAIAFB8ABqIgkgCf0AAAAgCP3kAf0LAAAgAUGAAWohASAHQQNqIQkgB0ECaiIGIQcgCSAFSA0ADAILCyACQQZ0IQpBACEGA0AgACAGQQR0IgsgAmxBAnRqIQEgAiEMIAMhCf0MAAAAAAAAAAAAAAAAAAAAACINIQ4gDSEPIA0hECANIREgDSESIA0hEyANIRQDQCANIAH9AAAAIAn9CQIAIgj95gH95AEhDSARIAggASAKaiIH/QAAAP3mAf3kASERIBIgCCABQTBq/QAAAP3mAf3kASESIBMgCCABQSBq/QAAAP3mAf3kASETIBQgAUEQav0AAAAgCP3mAf3kASEUIA4gCCAHQTBq/QAAAP3mAf3kASEOIA8gCCAHQSBq/QAAAP3mAf3kASEPIBAgCCAHQRBq/QAAAP3mAf3kASEQIAlBBGohCSABQcAAaiEBIAxBf2oiDA0ACyAEIAtBAnRqIgEgDSAB/QAAAP3kAf0LAAAgASAUIAH9AAAQ/eQB/QsAECABIBMgAf0AACD95AH9CwAgIAEgEiAB/QAAMP3kAf0LADAgASARIAH9AABA/eQB/QsAQCABIBAgAf0AAFD95AH9CwBQIAEgDyAB/QAAYP3kAf0LAGAgASAOIAH9AABw/eQB/QsAcCAGQQJqIgZBAXIgBUgNAAsLAkAgBiAFTg0AIAZBBHQhBwJAAkAgAkEBTg0A/QwAAAAAAAAAAAAAAAAAAAAAIg4hDyAOIRAgDiENDAELIAAgByACbEECdGohAf0MAAAAAAAAAAAAAAAAAAAAACINIRAgDSEPIA0hDgNAIA4gAf0AAAAgA/0JAgAiCP3mAf3kASEOIA0gCCABQTBq/QAAAP3mAf3kASENIBAgCCABQSBq/QAAAP3mAf3kASEQIA8gAUEQav0AAAAgCP3mAf3kASEPIANBBGohAyABQcAAaiEBIAJBf2oiAg0ACwsgBCAHQQJ0aiIBIA4gAf0AAAD95AH9CwAAIAEgDyAB/QAAEP3kAf0LABAgASAQIAH9AAAg/eQB/QsAICABIA0gAf0AADD95AH9CwAwCwuRBQEGfwJAAkAgAUUNACACQQFIDQEDQCAALgEAIgFBgICAgHhxIQQCQAJAAkAgAUH//wNxIgVBCnZBH3EiBkEfRg0AIAFB/wdxIQEgBg0BIAQgAbNDAACAM5S8ciEBDAILIAQgBUENdHJBgICA/AdyIQEMAQsgBkEXdEGAgIDAA2ogBHIgAUENdHIhAQsgAyABNgIAIABBAmohACADQQRqIQMgAkF/aiICDQAMAgsLIAJBAUgNAEEAIQQCQCACQQRJDQACQCAAIAJBAnQiAWogA00NACADIAFqIABLDQELIAJBfHEiBEF8aiIBQQJ2QQFqIgZBA3EhB0EAIQgCQCABQQxJDQAgBkH8////B3EhCUEAIQFBACEIA0AgAyABaiIGIAAgAWoiBf0AAgD9CwIAIAZBEGogBUEQav0AAgD9CwIAIAZBIGogBUEgav0AAgD9CwIAIAZBMGogBUEwav0AAgD9CwIAIAFBwABqIQEgCEEQaiEIIAlBfGoiCQ0ACwsCQCAHRQ0AIAAgCEECdCIGaiEBIAMgBmohBgNAIAYgAf0AAgD9CwIAIAFBEGohASAGQRBqIQYgB0F/aiIHDQALCyAEIAJGDQELIARBf3MgAmohBwJAIAJBA3EiBUUNACAAIARBAnQiBmohASADIAZqIQYDQCAGIAEqAgA4AgAgAUEEaiEBIAZBBGohBiAEQQFqIQQgBUF/aiIFDQALCyAHQQNJDQAgBEECdCEGIAIgBGshBANAIAMgBmoiASAAIAZqIgIqAgA4AgAgAUEEaiACQQRqKgIAOAIAIAFBCGogAkEIaioCADgCACABQQxqIAJBDGoqAgA4AgAgAEEQaiEAIANBEGohAyAEQXxqIgQNAAsLC4MHAwt/A3sCfwJAIAJBAUgNACAGQQR0IQcCQCABDQAgA0EBSA0BIAVBBHQhCCADQQNxIQkgA0F8cSEKIANBAnQhCyAEIAdBAnRqIQwgBiADakEGdCAEakFEaiENQQAhDiAAIQ9BACEQA0AgCCAQQQR2bCERQQAhBAJAAkAgA0EESQ0AAkAgACALIAsgEGwiBmpqIAwgESAQQQ9xIgdyQQJ0IgFqTQ0AQQAhBCAAIAZqIA0gAWpJDQELIAwgEEHw////A3EgBWxBAnRqIAdBAnRqIQb9DAAAAAABAAAAAgAAAAMAAAAhEiAKIQQgDyEBA0AgBiASQQT9qwEiE/0bAEECdGogAf0AAgAiFP0fADgCACAGIBP9GwFBAnRqIBT9HwE4AgAgBiAT/RsCQQJ0aiAU/R8COAIAIAYgE/0bA0ECdGogFP0fAzgCACABQRBqIQEgEv0MBAAAAAQAAAAEAAAABAAAAP2uASESIARBfGoiBA0ACyAKIQQgCiADRg0BCyAOQQ9xIRUgBEF/cyADaiEWAkAgCUUNACAPIARBAnRqIQYgDCARIARBBHRqIBVqQQJ0aiEBIAkhBwNAIAEgBioCADgCACAGQQRqIQYgAUHAAGohASAEQQFqIQQgB0F/aiIHDQALCyAWQQNJDQAgAyAEayEHIA8gBEECdGohBiAMIBEgBEEEdGogFWpBAnRqIQEDQCABIAYqAgA4AgAgAUHAAGogBkEEaioCADgCACABQYABaiAGQQhqKgIAOAIAIAFBwAFqIAZBDGoqAgA4AgAgAUGAAmohASAGQRBqIQYgB0F8aiIHDQALCyAOQQFqIQ4gDyALaiEPIBBBAWoiECACRw0ADAILCyADQQFIDQAgA0EBdCEVIAVBBHQhDCAEIAdBAnRqIRZBACERQQAhCwNAIBYgDCALQQR2bCARQQ9xakECdGohBiAAIQEgAyEHA0AgAS4BACIEQf8HcSEPIARBgICAgHhxIRACQAJAAkAgBEH//wNxIg5BCnZBH3EiBEUNACAEQR9HDQEgECAOQQ10ckGAgID8B3IhBAwCCyAQIA+zQwAAgDOUvHIhBAwBCyAEQRd0QYCAgMADaiAQciAPQQ10ciEECyAGIAQ2AgAgAUECaiEBIAZBwABqIQYgB0F/aiIHDQALIAAgFWohACARQQFqIREgC0EBaiILIAJHDQALCws="; // built from kernel.c by Debian clang version 14.0.6

  // ---------------------------------------------------------------- bytes

  function fromBase64(s) {
    if (typeof Uint8Array.fromBase64 === "function") return Uint8Array.fromBase64(s);
    if (typeof Buffer === "function") {
      const b = Buffer.from(s, "base64");
      return new Uint8Array(b.buffer, b.byteOffset, b.length);
    }
    const bin = atob(s), out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  const half = (h) => { // an fp16 number (its 16 bits) as a number, exactly
    const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, m = h & 1023;
    return e === 0 ? s * m * 5.960464477539063e-8 : e === 31 ? (m ? NaN : s * Infinity) : s * (1024 + m) * 2 ** (e - 25);
  };

  /* A safetensors file: { tensors: {name: {shape, dtype, raw}}, metadata }; raw: the tensor's
   * bytes (a view, unconverted: the network widens them where it places them). */
  function readSafetensors(bytes) {
    const fail = (why) => { throw new Error(`not a charrnn model file: ${why}`); };
    if (bytes.length < 8) fail("too short");
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const n = dv.getUint32(0, true) + dv.getUint32(4, true) * 2 ** 32;
    if (8 + n > bytes.length) fail("its header runs past its end");
    let header;
    try {
      header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
    } catch (e) {
      fail("its header is not JSON");
    }
    const metadata = header.__metadata__ || {};
    const tensors = {}, size = { F32: 4, F16: 2, BF16: 2 };
    for (const [name, t] of Object.entries(header)) {
      if (name === "__metadata__") continue;
      const [a, b] = t.data_offsets, count = t.shape.reduce((x, y) => x * y, 1);
      if (!size[t.dtype]) fail(`tensor ${name} is ${t.dtype}`);
      if (b - a !== count * size[t.dtype] || 8 + n + b > bytes.length) fail(`tensor ${name} has the wrong size`);
      tensors[name] = { shape: t.shape, dtype: t.dtype, raw: bytes.subarray(8 + n + a, 8 + n + b), count };
    }
    if (metadata.format !== "charrnn") fail("its metadata does not say format charrnn (write it with charrnn export)");
    return { tensors, metadata };
  }

  /* A tensor's values as float32, in JavaScript. */
  function floats(t) {
    const raw = Uint8Array.prototype.slice.call(t.raw); // a copy, aligned
    if (t.dtype === "F32") return new Float32Array(raw.buffer);
    const bits = new Uint16Array(raw.buffer);
    if (t.dtype === "F16") {
      const out = new Float32Array(bits.length);
      for (let i = 0; i < bits.length; i++) out[i] = half(bits[i]);
      return out;
    }
    const wide = new Uint32Array(bits.length); // BF16
    for (let i = 0; i < bits.length; i++) wide[i] = bits[i] << 16;
    return new Float32Array(wide.buffer);
  }

  // ---------------------------------------------------------------- tokens

  const UNK = "<unk>", END = "<|end|>", LABEL = /^<\|label:([\s\S]*)\|>$/;
  // Python's \s: str.isspace() (JavaScript's \s differs: it has U+FEFF, lacks U+1C-U+1F and U+85).
  const SPACE = new Set([9, 10, 11, 12, 13, 28, 29, 30, 31, 32, 0x85, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003,
    0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000]);
  const JOINS_WORDS = new Set([0x27, 0x2019, 0x2d]), JOINS_DIGITS = new Set([0x2e, 0x2c]); // ' ’ -   . ,

  /* A set of code points from weights.py's ranges (hex gaps and lengths), or a regular
   * expression's class where the file has none: a lookup table for the first 64K, ranges beyond. */
  function charClass(ranges, fallback) {
    if (!ranges) return (c) => fallback.test(String.fromCodePoint(c));
    const bmp = new Uint8Array(65536), far = [];
    const nums = ranges.split(" ").map((h) => parseInt(h, 16));
    for (let i = 0, prev = 0; i + 1 < nums.length; i += 2) {
      const a = prev + nums[i], b = a + nums[i + 1];
      for (let c = a; c <= Math.min(b, 65535); c++) bmp[c] = 1;
      if (b > 65535) far.push(Math.max(a, 65536), b);
      prev = b;
    }
    return (c) => {
      if (c < 65536) return bmp[c] === 1;
      let lo = 0, hi = far.length / 2 - 1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        if (c < far[2 * mid]) hi = mid - 1;
        else if (c > far[2 * mid + 1]) lo = mid + 1;
        else return true;
      }
      return false;
    };
  }

  class Tokenizer {
    constructor(d, unicode) {
      this.level = d.level;
      this.vocab = d.vocab;
      this.rule = d.level === "word" ? d.rule || 1 : null;
      this.stoi = new Map(this.vocab.map((t, i) => [t, i]));
      this.unk = this.level === "word" && this.stoi.has(UNK) ? this.stoi.get(UNK) : null;
      this.end = this.stoi.has(END) ? this.stoi.get(END) : null;
      this.labels = {};
      this.vocab.forEach((t, i) => { const m = LABEL.exec(t); if (m) this.labels[m[1]] = i; });
      const labelIds = Object.values(this.labels).sort((a, b) => a - b);
      // As banned_tokens in data/tokenizer.py: <unk>, label tokens, and in a model of one record
      // per line every token holding a newline (no training record holds one).
      const newlines = d.records === "lines" ? this.vocab.flatMap((t, i) => (t.includes("\n") && i !== this.end ? [i] : [])) : [];
      this.banned = [...new Set((this.unk !== null ? [this.unk] : []).concat(labelIds, newlines))].sort((a, b) => a - b);
      this.start = this.stoi.has("\n") ? this.stoi.get("\n") : 0;
      if (this.level === "word") {
        this.isWord = charClass(unicode && unicode.word, /[\p{L}\p{N}_]/u);
        this.isDigit = charClass(unicode && unicode.digit, /\p{Nd}/u);
      }
    }

    /* The tokens of text: its code points, or words by the checkpoint's rule (tokenizer.py):
     * rule 2 is (?:\w|(?<=\w)['’-](?=\w)|(?<=\d)[.,](?=\d))+|[^\w\s]|\s+, rule 1 \w+|[^\w\s]|\s+. */
    split(text) {
      const chars = Array.from(text);
      if (this.level !== "word") return chars;
      const cp = chars.map((c) => c.codePointAt(0)), n = cp.length, out = [];
      const W = this.isWord, D = this.isDigit, two = this.rule === 2;
      const wordAt = (j) => W(cp[j]) || (two && j > 0 && j + 1 < n && (
        (JOINS_WORDS.has(cp[j]) && W(cp[j - 1]) && W(cp[j + 1])) || (JOINS_DIGITS.has(cp[j]) && D(cp[j - 1]) && D(cp[j + 1]))));
      for (let i = 0; i < n;) {
        let j = i + 1;
        if (wordAt(i)) while (j < n && wordAt(j)) j++;
        else if (SPACE.has(cp[i])) while (j < n && SPACE.has(cp[j])) j++;
        out.push(chars.slice(i, j).join(""));
        i = j;
      }
      return out;
    }

    encode(text, unknown = "error") {
      const pieces = this.split(text), ids = [], missing = [];
      for (const p of pieces) {
        const id = this.stoi.get(p);
        if (id !== undefined) ids.push(id);
        else if (unknown === "unk" && this.unk !== null) ids.push(this.unk);
        else if (unknown !== "skip") missing.push(p);
      }
      if (missing.length) {
        const shown = [...new Set(missing)].sort().slice(0, 8).map((t) => JSON.stringify(t)).join(", ");
        const more = new Set(missing).size > 8 ? ` and ${new Set(missing).size - 8} more` : "";
        const what = this.level === "word" ? "words" : "characters";
        throw usage("prompt", `the model never saw these ${what}: ${shown}${more}; use unknown: "skip" to drop them`);
      }
      return ids;
    }

    /* The prompt's ids as sampling starts from them (api.py's _prompt_ids): a records model starts
     * a record (of label), free text starts after a newline when the prompt is empty. */
    promptIds(prompt, unknown, label) {
      if (this.end !== null) {
        let start = this.end;
        if (label !== undefined && label !== null && label !== "") {
          if (!Object.keys(this.labels).length) throw usage("label", "this model was trained without labels; drop the label");
          if (!(label in this.labels)) throw usage("label", `unknown label ${JSON.stringify(label)}; the model knows: ${Object.keys(this.labels).sort().join(", ")}`);
          start = this.labels[label];
        }
        return [start].concat(this.encode(prompt, unknown));
      }
      if (label !== undefined && label !== null && label !== "") throw usage("label", "a label needs a records model trained with --label-field");
      const ids = this.encode(prompt, unknown);
      return ids.length ? ids : [this.start];
    }
  }

  function usage(field, message) {
    const e = new Error(message);
    e.field = field;
    return e;
  }

  // ---------------------------------------------------------------- the network

  let KERNEL; // the compiled WebAssembly module, or null where there is no WebAssembly SIMD
  function wasmModule() {
    if (KERNEL === undefined) {
      KERNEL = null;
      try {
        const bytes = fromBase64(WASM);
        if (typeof WebAssembly === "object" && WebAssembly.validate(bytes)) KERNEL = new WebAssembly.Module(bytes);
      } catch (e) { KERNEL = null; }
    }
    return KERNEL;
  }

  const round16 = (n) => Math.ceil(n / 16) * 16;

  /* The model's step: one token in, next-token logits out, in one Float32Array F (WebAssembly
   * memory or a plain buffer) laid out once, so a token allocates nothing. As torch_step.Stepper
   * and the native kernel: layer 0's input projection is a table (V, G*H) of emb @ W_ih^T plus
   * biases where that is cheaper than the product per token; deeper LSTM and RNN layers take
   * [x | h] against [W_ih | W_hh] in one product; GRU keeps its two products (the reset gate
   * acts on the hidden one). Gates in PyTorch's order: LSTM i f g o, GRU r z n. */
  class Net {
    constructor(tensors, shape, useWasm, useTable) {
      const cell = shape.cell, L = shape.layers, H = shape.hidden, E = shape.embed, V = shape.vocab_size;
      const G = { lstm: 4, gru: 3, rnn: 1 }[cell];
      if (!G) throw new Error(`unknown cell ${cell}`);
      Object.assign(this, { cell, L, H, E, V, G });
      const tensor = (name) => {
        if (!tensors[name]) throw new Error(`not a charrnn model file: it has no ${name}`);
        return tensors[name];
      };
      const GH = G * H, gru = cell === "gru";
      const module = useWasm === false ? null : wasmModule();
      this.kind = module ? "wasm-simd" : "js";
      // WebAssembly's product takes matrices packed in blocks of 16 rows (kernel.c), padded with
      // zero rows; JavaScript's takes them row-major, as PyTorch keeps them.
      const R = module ? round16(GH) : GH, Vp = module ? round16(V) : V;
      // Layer 0's input as a table (V, G*H) where it takes under 64M multiply-adds to build (a few
      // ms); a word model's large vocabulary keeps the product per token instead.
      const fold = useTable !== false && V * E * GH <= 64e6;
      const at = {};
      let size = 0;
      const take = (name, n) => { at[name] = size; size += round16(n); };
      take("emb", V * E);
      take("wih0", R * E);
      take("b0", R);
      if (fold) take("table", V * GH + R); // + R: the last row's product writes R values
      take("whh0", R * H);
      if (gru) take("bhh0", R);
      for (let l = 1; l < L; l++) {
        if (gru) { take(`wih${l}`, R * H); take(`whh${l}`, R * H); take(`bih${l}`, R); take(`bhh${l}`, R); }
        else { take(`w${l}`, R * 2 * H); take(`b${l}`, R); }
      }
      take("head", Vp * H);
      take("headb", Vp);
      take("gates", R);
      take("gh", R);
      this.stateAt = size; // what a session keeps: every layer's [x | h] and c, and the logits
      for (let l = 0; l < L; l++) take(`xh${l}`, l === 0 ? H : 2 * H);
      if (cell === "lstm") for (let l = 0; l < L; l++) take(`c${l}`, H);
      take("logits", Vp);
      this.stateEnd = size;
      const staging = size; // the raw bytes of one tensor while it is put in place
      size += Math.ceil(Math.max(...Object.values(tensors).map((t) => t.raw.length)) / 4) + 16;

      let base = 0, wasm = null;
      if (module) {
        const heap = 1 << 16, memory = new WebAssembly.Memory({ initial: Math.ceil((heap + 4 * size + 64) / 65536) });
        wasm = new WebAssembly.Instance(module, { env: { memory } }).exports;
        base = Math.ceil((wasm.__heap_base ? wasm.__heap_base.value : heap) / 64) * 16; // in floats
        if (4 * (base + size) > memory.buffer.byteLength) memory.grow(Math.ceil((4 * (base + size) - memory.buffer.byteLength) / 65536));
        this.F = new Float32Array(memory.buffer);
        const mv = wasm.matvec;
        this.mv = (w, rows, K, x, y) => mv(4 * w, rows, K, 4 * x, 4 * y);
      } else {
        this.F = new Float32Array(size);
        this.mv = (w, rows, K, x, y) => matvecJs(this.F, w, rows, K, x, y);
      }
      for (const name of Object.keys(at)) at[name] += base;
      this.at = at;
      this.stateAt += base;
      this.stateEnd += base;
      const F = this.F, stage = 4 * (base + staging);
      // A tensor (rows, cols) into place: as rows (a table), or into columns col0.. of a matrix
      // of K columns for the product. In WebAssembly where it can (no cold JavaScript loops).
      const put = (name, dst, K, col0 = 0, table = false) => {
        const t = tensor(name), cols = t.shape[t.shape.length - 1], rows = t.count / cols;
        if (wasm && t.dtype !== "BF16") {
          new Uint8Array(F.buffer).set(t.raw, stage);
          const f16 = t.dtype === "F16" ? 1 : 0;
          if (table) wasm.widen(stage, f16, t.count, 4 * dst);
          else wasm.pack(stage, f16, rows, cols, 4 * dst, K, col0);
          return;
        }
        const f = floats(t);
        for (let r = 0; r < rows; r++) F.set(f.subarray(r * cols, (r + 1) * cols), dst + r * (table ? cols : K) + col0);
      };
      const vec = (name) => floats(tensor(name));
      const addInto = (name, ...vs) => { const o = at[name]; for (const v of vs) for (let i = 0; i < v.length; i++) F[o + i] += v[i]; };
      const bih = (l) => vec(`rnn.bias_ih_l${l}`), bhh = (l) => vec(`rnn.bias_hh_l${l}`);
      put("emb.weight", at.emb, E, 0, true);
      put("rnn.weight_ih_l0", at.wih0, E);
      addInto("b0", ...(gru ? [bih(0)] : [bih(0), bhh(0)])); // GRU's hidden bias sits inside r * (...)
      put("rnn.weight_hh_l0", at.whh0, H);
      if (gru) addInto("bhh0", bhh(0));
      if (fold) { // table[v] = b0 + W_ih0 emb[v], by the step's own product, row after row
        for (let v = 0; v < V; v++) {
          const row = at.table + v * GH;
          F.copyWithin(row, at.b0, at.b0 + GH);
          this.mv(at.wih0, R, E, at.emb + v * E, row);
        }
        this.table = at.table;
      }
      for (let l = 1; l < L; l++) {
        if (gru) {
          put(`rnn.weight_ih_l${l}`, at[`wih${l}`], H);
          put(`rnn.weight_hh_l${l}`, at[`whh${l}`], H);
          addInto(`bih${l}`, bih(l));
          addInto(`bhh${l}`, bhh(l));
        } else { // [W_ih | W_hh], against [x | h]
          put(`rnn.weight_ih_l${l}`, at[`w${l}`], 2 * H, 0);
          put(`rnn.weight_hh_l${l}`, at[`w${l}`], 2 * H, H);
          addInto(`b${l}`, bih(l), bhh(l));
        }
      }
      put("head.weight", at.head, H);
      addInto("headb", vec("head.bias"));
      this.R = R;
      this.Vp = Vp;
      this.h = [];
      for (let l = 0; l < L; l++) this.h.push(at[`xh${l}`] + (l === 0 ? 0 : H));
      this.logits = F.subarray(at.logits, at.logits + V);
      this.active = null;
    }

    /* Sessions: each generation (or probe) has a state of its own; the one stepping is in F, the
     * others wait in copies, so a probe of the next token can run between two chunks of a sample. */
    session() { return { saved: null }; }

    use(session) {
      if (this.active === session) return;
      const F = this.F, a = this.stateAt, b = this.stateEnd;
      if (this.active) {
        if (!this.active.saved) this.active.saved = new Float32Array(b - a);
        this.active.saved.set(F.subarray(a, b));
      }
      if (session.saved) F.set(session.saved, a);
      else F.fill(0, a, b);
      this.active = session;
    }

    /* Feed one token (the active session's state moves on); the logits are then in this.logits. */
    step(tok) {
      const F = this.F, at = this.at, H = this.H, GH = this.G * this.H, R = this.R, cell = this.cell;
      const gates = at.gates, gh = at.gh;
      if (this.table !== undefined) F.copyWithin(gates, this.table + tok * GH, this.table + (tok + 1) * GH);
      else {
        F.copyWithin(gates, at.b0, at.b0 + GH);
        this.mv(at.wih0, R, this.E, at.emb + tok * this.E, gates);
      }
      for (let l = 0; l < this.L; l++) {
        const h = this.h[l];
        if (cell === "gru") {
          if (l > 0) {
            F.copyWithin(gates, at[`bih${l}`], at[`bih${l}`] + GH);
            this.mv(at[`wih${l}`], R, H, at[`xh${l}`], gates);
          }
          const bh = l === 0 ? at.bhh0 : at[`bhh${l}`];
          F.copyWithin(gh, bh, bh + GH);
          this.mv(l === 0 ? at.whh0 : at[`whh${l}`], R, H, h, gh);
          gruCell(F, H, gates, gh, h);
        } else {
          if (l === 0) this.mv(at.whh0, R, H, h, gates);
          else {
            F.copyWithin(gates, at[`b${l}`], at[`b${l}`] + GH);
            this.mv(at[`w${l}`], R, 2 * H, at[`xh${l}`], gates);
          }
          if (cell === "lstm") lstmCell(F, H, gates, at[`c${l}`], h);
          else for (let j = 0; j < H; j++) F[h + j] = Math.tanh(F[gates + j]);
        }
        if (l + 1 < this.L) F.copyWithin(at[`xh${l + 1}`], h, h + H);
      }
      F.copyWithin(at.logits, at.headb, at.headb + this.V);
      this.mv(at.head, this.Vp, H, this.h[this.L - 1], at.logits);
    }
  }

  /* y[0..rows) += W x, W as rows of K (the JavaScript product; sums in double, stored as float). */
  function matvecJs(F, w, rows, K, x, y) {
    for (let r = 0; r < rows; r++) {
      const o = w + r * K;
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0, k = 0;
      for (; k + 3 < K; k += 4) {
        a0 += F[o + k] * F[x + k];
        a1 += F[o + k + 1] * F[x + k + 1];
        a2 += F[o + k + 2] * F[x + k + 2];
        a3 += F[o + k + 3] * F[x + k + 3];
      }
      for (; k < K; k++) a0 += F[o + k] * F[x + k];
      F[y + r] += (a0 + a1) + (a2 + a3);
    }
  }

  const sigmoid = (x) => 1 / (1 + Math.exp(-x));

  function lstmCell(F, H, g, c, h) { // gates i f g o
    for (let j = 0; j < H; j++) {
      const i = sigmoid(F[g + j]), f = sigmoid(F[g + H + j]), gg = Math.tanh(F[g + 2 * H + j]), o = sigmoid(F[g + 3 * H + j]);
      F[c + j] = f * F[c + j] + i * gg;
      F[h + j] = o * Math.tanh(F[c + j]);
    }
  }

  function gruCell(F, H, gi, gh, h) { // gates r z n; h' = n + z (h - n)
    for (let j = 0; j < H; j++) {
      const r = sigmoid(Math.fround(F[gi + j] + F[gh + j])), z = sigmoid(Math.fround(F[gi + H + j] + F[gh + H + j]));
      const n = Math.fround(Math.tanh(F[gi + 2 * H + j] + r * F[gh + 2 * H + j]));
      F[h + j] = n + z * (F[h + j] - n);
    }
  }

  // ---------------------------------------------------------------- random numbers

  /* charrnn_uniform (kernels.c, decode.py): splitmix64-style mixing of (seed, stream, step) into a
   * number in [0, 1), in 32-bit halves (BigInt is slower; uniformBig below is the reference). */
  let HI = 0, LO = 0; // the result of the 64-bit operations below

  function mul64(ah, al, bh, bl) {
    const a0 = al & 0xffff, a1 = al >>> 16, b0 = bl & 0xffff, b1 = bl >>> 16;
    const p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0;
    const mid = (p00 >>> 16) + (p01 & 0xffff) + (p10 & 0xffff);
    LO = ((mid & 0xffff) * 65536 + (p00 & 0xffff)) >>> 0;
    const carry = Math.floor(mid / 65536) + Math.floor(p01 / 65536) + Math.floor(p10 / 65536) + a1 * b1;
    HI = (carry + Math.imul(ah, bl) + Math.imul(al, bh)) >>> 0;
  }

  function add64(ah, al, bh, bl) {
    const lo = al + bl;
    LO = lo >>> 0;
    HI = (ah + bh + (lo > 0xffffffff ? 1 : 0)) >>> 0;
  }

  function mix64(h, l) { // z ^= z >> 30; z *= C1; z ^= z >> 27; z *= C2; z ^= z >> 31
    l = (l ^ ((l >>> 30) | (h << 2))) >>> 0; h = (h ^ (h >>> 30)) >>> 0;
    mul64(h, l, 0xbf58476d, 0x1ce4e5b9); h = HI; l = LO;
    l = (l ^ ((l >>> 27) | (h << 5))) >>> 0; h = (h ^ (h >>> 27)) >>> 0;
    mul64(h, l, 0x94d049bb, 0x133111eb); h = HI; l = LO;
    LO = (l ^ ((l >>> 31) | (h << 1))) >>> 0; HI = (h ^ (h >>> 31)) >>> 0;
  }

  // The stream's part, mix(mix(seed + C) ^ index * C'), is the same at every step: kept.
  let keyHi = -1, keyLo = -1, keyIndex = -1, streamHi = 0, streamLo = 0;

  function uniform(seedHi, seedLo, index, step) {
    if (seedHi !== keyHi || seedLo !== keyLo || index !== keyIndex) {
      add64(seedHi, seedLo, 0x9e3779b9, 0x7f4a7c15); mix64(HI, LO);
      const h = HI, l = LO;
      mul64(Math.floor(index / 4294967296) >>> 0, index >>> 0, 0xd1b54a32, 0xd192ed03);
      mix64((h ^ HI) >>> 0, (l ^ LO) >>> 0);
      keyHi = seedHi; keyLo = seedLo; keyIndex = index; streamHi = HI; streamLo = LO;
    }
    mul64(Math.floor(step / 4294967296) >>> 0, step >>> 0, 0x9e3779b9, 0x7f4a7c15);
    add64(streamHi, streamLo, HI, LO); mix64(HI, LO);
    return (HI * 2097152 + (LO >>> 11)) * 2 ** -53; // (z >> 11) * 2^-53
  }

  const M64 = (1n << 64n) - 1n;
  function mixBig(z) {
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
    return z ^ (z >> 31n);
  }
  function uniformBig(seed, index, step) {
    let z = mixBig((BigInt(seed) + 0x9e3779b97f4a7c15n) & M64);
    z = mixBig(z ^ ((BigInt(index) * 0xd1b54a32d192ed03n) & M64));
    z = mixBig((z + BigInt(step) * 0x9e3779b97f4a7c15n) & M64);
    return Number(z >> 11n) * 2 ** -53;
  }

  // ---------------------------------------------------------------- the next-token rule

  /* kernels.c's kth_largest: the k-th largest of z[0..n) (k >= 1); reorders z. */
  function kthLargest(z, n, k) {
    let lo = 0, hi = n - 1;
    const want = k - 1;
    while (lo < hi) {
      const pivot = z[lo + ((hi - lo) >> 1)];
      let i = lo, j = hi;
      while (i <= j) {
        while (z[i] > pivot) i++;
        while (z[j] < pivot) j--;
        if (i <= j) { const t = z[i]; z[i] = z[j]; z[j] = t; i++; j--; }
      }
      if (want <= j) hi = j;
      else if (want >= i) lo = i;
      else return z[want];
    }
    return z[want];
  }

  /* kernels.c's sample_row, step for step: the logits shifted by their maximum in double and
   * divided by the temperature, rounded to float; top-k keeps what is at least the k-th largest;
   * weights expf'd in float, totalled in double; top-p keeps, most likely first (ties: lower id
   * first), the tokens whose preceding mass is below p; one uniform number inverts the cumulative
   * distribution. Greedy (temperature 0) is the argmax, the lower id on ties. */
  class Sampler {
    constructor(V, banned) {
      this.V = V;
      this.banned = banned;
      this.z = new Float32Array(V);
      this.w = new Float32Array(V);
      this.tmp = new Float32Array(V);
      this.order = new Int32Array(V);
    }

    draw(x, cfg, step) {
      const V = this.V, z = this.z, w = this.w;
      z.set(x);
      for (const b of this.banned) if (b >= 0 && b < V) z[b] = -Infinity;
      let best = 0;
      for (let i = 1; i < V; i++) if (z[i] > z[best]) best = i;
      const T = cfg.temperature;
      if (!(T > 0)) return best;
      const m = z[best];
      if (m === -Infinity || m !== m) return best;
      for (let i = 0; i < V; i++) z[i] = (z[i] - m) / T; // stored as float, as C's (float) cast
      if (cfg.top_k && cfg.top_k < V) {
        this.tmp.set(z);
        const kth = kthLargest(this.tmp, V, cfg.top_k);
        for (let i = 0; i < V; i++) if (z[i] < kth) z[i] = -Infinity;
      }
      let total = 0;
      for (let i = 0; i < V; i++) {
        w[i] = z[i] === -Infinity ? 0 : Math.exp(z[i]);
        total += w[i];
      }
      if (cfg.top_p < 1) {
        let n = 0;
        const order = this.order;
        for (let i = 0; i < V; i++) if (w[i] > 0) order[n++] = i;
        const kept = order.subarray(0, n).sort((a, b) => (w[b] - w[a]) || (a - b));
        let before = 0, sum = 0;
        const limit = cfg.top_p * total;
        for (let j = 0; j < n; j++) {
          const v = w[kept[j]];
          if (before >= limit) w[kept[j]] = 0;
          else sum += v;
          before += v;
        }
        total = sum;
      }
      const target = uniform(cfg.seedHi, cfg.seedLo, 0, step) * total;
      let acc = 0, last = best;
      for (let i = 0; i < V; i++) {
        if (w[i] <= 0) continue;
        acc += w[i];
        last = i;
        if (target < acc) return i;
      }
      return last;
    }
  }

  // ---------------------------------------------------------------- text

  /* text.py's StopCut: one sample's text, cut where stop first appears; what could still be the
   * start of the stop string is held back, so a stream never shows part of it. */
  class StopCut {
    constructor(stop) { this.stop = stop || ""; this.pending = ""; this.done = false; }

    add(piece) { // the text that became final
      if (!this.stop) return piece;
      this.pending += piece;
      const at = this.pending.indexOf(this.stop);
      if (at >= 0) {
        const out = this.pending.slice(0, at);
        this.pending = "";
        this.done = true;
        return out;
      }
      if (this.pending.length >= this.stop.length) {
        const cut = this.pending.length - this.stop.length + 1, out = this.pending.slice(0, cut);
        this.pending = this.pending.slice(cut);
        return out;
      }
      return "";
    }

    finish() { const out = this.pending; this.pending = ""; this.done = true; return out; }
  }

  const MAX_SEED = (1n << 63n) - 1n;

  /* Options as `charrnn sample` checks them (config.py's SampleConfig), with its defaults. */
  function options(o, tok) {
    o = o || {};
    const num = (name, v) => {
      if (typeof v === "string" && v.trim() !== "") v = Number(v);
      if (typeof v !== "number" || !Number.isFinite(v)) throw usage(name, `${name} must be a number, not ${JSON.stringify(v)}`);
      return v;
    };
    const given = (v) => v !== undefined && v !== null && v !== "";
    const length = given(o.length) ? num("length", o.length) : 500;
    if (!Number.isInteger(length) || length < 0) throw usage("length", `length must be an integer >= 0, not ${length}`);
    const temperature = given(o.temperature) ? num("temperature", o.temperature) : 0.8;
    if (!(temperature >= 0)) throw usage("temperature", `temperature must be a finite number >= 0, not ${temperature}`);
    const top_k = given(o.top_k) ? num("top_k", o.top_k) : 0;
    if (given(o.top_k) && (!Number.isInteger(top_k) || top_k < 1)) throw usage("top_k", `top_k must be an integer >= 1, not ${top_k}`);
    const top_p = given(o.top_p) ? num("top_p", o.top_p) : 1;
    if (!(top_p > 0 && top_p <= 1)) throw usage("top_p", `top_p must be in (0, 1], not ${top_p}`);
    let seed;
    try {
      seed = given(o.seed) ? BigInt(typeof o.seed === "string" ? o.seed.trim() : o.seed) : BigInt(Math.floor(Math.random() * 2 ** 31));
    } catch (e) {
      throw usage("seed", `seed must be an integer in [0, 2^63 - 1], not ${JSON.stringify(o.seed)}`);
    }
    if (seed < 0n || seed > MAX_SEED) throw usage("seed", `seed must be in [0, 2^63 - 1], not ${seed}`);
    const unknown = o.unknown || "error";
    if (!["error", "skip", "unk"].includes(unknown)) throw usage("unknown", `unknown must be error, skip or unk, not ${JSON.stringify(unknown)}`);
    const stop = given(o.stop) ? String(o.stop) : null;
    const ids = tok.promptIds(o.prompt === undefined || o.prompt === null ? "" : String(o.prompt), unknown, o.label);
    return {
      length, temperature, top_k, top_p, stop, ids, seed: seed.toString(),
      seedHi: Number(seed >> 32n), seedLo: Number(seed & 0xffffffffn),
    };
  }

  // ---------------------------------------------------------------- the model

  const now = () => (typeof performance === "object" ? performance.now() : Date.now());

  class Model {
    constructor(bytes, opts) {
      const { tensors, metadata } = readSafetensors(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
      const json = (key, fallback) => {
        if (metadata[key] === undefined) return fallback;
        try { return JSON.parse(metadata[key]); } catch (e) { throw new Error(`not a charrnn model file: its ${key} is not JSON`); }
      };
      const shape = json("shape"), tok = json("tokenizer");
      if (!shape || !tok) throw new Error("not a charrnn model file: it has no shape or tokenizer");
      this.tok = new Tokenizer(tok, json("unicode", null));
      this.net = new Net(tensors, shape, opts && opts.wasm, opts && opts.table);
      this.sampler = new Sampler(shape.vocab_size, this.tok.banned);
      const info = json("info", {});
      this.info = Object.assign({}, info, {
        level: tok.level, cell: shape.cell, layers: shape.layers, hidden: shape.hidden, embed: shape.embed,
        vocab_size: shape.vocab_size, records: metadata.records || null, label_field: metadata.label_field || null,
        labels: Object.keys(this.tok.labels).sort(), precision: metadata.precision || null,
        charrnn_version: metadata.charrnn_version || null, kernel: this.net.kind,
      });
    }

    /* A sample: { seed, next() } where next() runs the next chunk (about 20 ms of work) and
     * returns the text that became final, or null at the end. */
    generation(o) {
      const cfg = options(o, this.tok), net = this.net, session = net.session(), vocab = this.tok.vocab;
      const end = this.tok.end, cut = new StopCut(cfg.stop);
      let done = 0, n = 1, fed = false, last = -1, step = 0, over = false;
      const next = () => {
        if (over) return null;
        net.use(session);
        if (!fed) { for (const id of cfg.ids) net.step(id); fed = true; }
        if (done >= cfg.length || cut.done) { over = true; return cut.finish(); }
        n = Math.min(n, cfg.length - done);
        const t0 = now();
        let text = "", ended = false;
        for (let i = 0; i < n; i++) {
          if (last >= 0) net.step(last);
          last = this.sampler.draw(net.logits, cfg, step++);
          if (last === end) { ended = true; break; }
          text += vocab[last];
        }
        done += n;
        n = Math.max(1, Math.min(4 * n, 1024, Math.floor(0.02 * n / Math.max((now() - t0) / 1000, 1e-9))));
        let out = cut.add(text);
        if (ended && !cut.done) out += cut.finish();
        if (cut.done) over = true;
        if (!over && done >= cfg.length) { over = true; out += cut.finish(); }
        return out;
      };
      return { seed: cfg.seed, next };
    }

    /* api.py's next_token_probs: the k likeliest tokens after prompt, under softmax(logits / T). */
    nextTokenProbs(prompt, k, o) {
      o = o || {};
      k = k === undefined ? 5 : k;
      if (!Number.isInteger(k) || k < 1) throw usage("k", `k must be an integer >= 1, not ${k}`);
      const T = o.temperature === undefined || o.temperature === null ? 1 : Number(o.temperature);
      if (!(T >= 0 && T < Infinity)) throw usage("temperature", `temperature must be a number >= 0, not ${o.temperature}`);
      const ids = this.tok.promptIds(prompt || "", o.unknown || "error", o.label);
      const net = this.net, session = net.session();
      net.use(session);
      for (const id of ids) net.step(id);
      const V = this.net.V, z = Float64Array.from(net.logits);
      for (const b of this.tok.banned) z[b] = -Infinity;
      const p = new Float64Array(V);
      if (T < 1e-6) {
        let best = 0;
        for (let i = 1; i < V; i++) if (z[i] > z[best]) best = i;
        p[best] = 1;
      } else {
        let m = -Infinity, s = 0;
        for (let i = 0; i < V; i++) { z[i] /= T; if (z[i] > m) m = z[i]; }
        for (let i = 0; i < V; i++) { p[i] = Math.exp(z[i] - m); s += p[i]; }
        for (let i = 0; i < V; i++) p[i] /= s;
      }
      const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => (p[b] - p[a]) || (a - b));
      return order.slice(0, k).map((i) => ({ token: this.tok.vocab[i], p: p[i] }));
    }

    split(text) { return this.tok.split(text); }
    encode(text, unknown) { return this.tok.encode(text, unknown); }
  }

  const api = { Model, Tokenizer, fromBase64, uniform, uniformBig, readSafetensors, wasmModule };

  // ---------------------------------------------------------------- in a Web Worker

  if (scope) {
    let model = null;
    const cancelled = new Set();
    const post = (m) => scope.postMessage(m);
    const fault = (id, e) => post({ type: "error", id, message: e.message || String(e), field: e.field || null });
    const pause = () => new Promise((resolve) => { // a task, not a microtask: messages get in
      const ch = new MessageChannel();
      ch.port1.onmessage = () => resolve();
      ch.port2.postMessage(0);
    });
    scope.onmessage = async (event) => {
      const m = event.data;
      try {
        if (m.type === "open") {
          model = new Model(m.bytes, m.options);
          post({ type: "ready", id: m.id, info: model.info });
        } else if (m.type === "next") {
          post({ type: "result", id: m.id, value: model.nextTokenProbs(m.prompt, m.k, m.options) });
        } else if (m.type === "cancel") {
          cancelled.add(m.id);
        } else if (m.type === "stream") {
          const g = model.generation(m.options);
          for (;;) {
            if (cancelled.has(m.id)) break;
            const text = g.next();
            if (text === null) break;
            if (text) post({ type: "piece", id: m.id, text });
            await pause();
          }
          cancelled.delete(m.id);
          post({ type: "end", id: m.id });
        }
      } catch (e) {
        fault(m.id, e);
      }
    };
  }
  return api;
  }

  // ---------------------------------------------------------------- the public face

  const E = engine(null);
  const inNode = typeof process === "object" && process && process.versions && !!process.versions.node;
  const pause = () => new Promise((resolve) => (typeof setImmediate === "function" ? setImmediate(resolve) : setTimeout(resolve, 0)));

  async function bytesOf(source) {
    // Any view (a Node Buffer included, whose slice() does not copy) as a plain Uint8Array.
    if (source instanceof ArrayBuffer) return new Uint8Array(source);
    if (ArrayBuffer.isView(source)) return new Uint8Array(source.buffer, source.byteOffset, source.byteLength);
    if (source === undefined || source === null) {
      if (typeof root.CHARRNN_WEIGHTS === "string") return E.fromBase64(root.CHARRNN_WEIGHTS);
      if (inNode && typeof __dirname === "string") source = require("path").join(__dirname, "weights.js");
      else throw new Error("no model: load weights.js before charrnn.js, or give charrnn.load() a URL of a .safetensors file");
    }
    source = String(source);
    if (inNode && !/^https?:\/\//i.test(source)) {
      const path = require("path"), file = path.resolve(source);
      if (/\.js$/i.test(file)) {
        const b64 = require(file);
        if (typeof b64 !== "string") throw new Error(`not a charrnn model file: ${file} is no weights.js`);
        return E.fromBase64(b64);
      }
      return new Uint8Array(require("fs").readFileSync(file));
    }
    if (/\.js(\?.*)?$/i.test(source)) throw new Error("load a weights .js file with a <script> tag before charrnn.js; charrnn.load() takes the URL of a .safetensors file");
    const r = await fetch(source);
    if (!r.ok) throw new Error(`cannot fetch ${source}: HTTP ${r.status}`);
    return new Uint8Array(await r.arrayBuffer());
  }

  /* The model: { info, sample(o), stream(o), nextTokenProbs(prompt, k, o), close() }. */
  async function load(source, opts) {
    opts = opts || {};
    const worker = opts.worker !== undefined ? opts.worker : typeof Worker === "function" && typeof document === "object";
    const engineOptions = { wasm: opts.wasm, table: opts.table };
    if (!worker) return new LocalModel(new E.Model(await bytesOf(source), engineOptions));
    const model = WorkerModel.start(); // the worker starts up while the bytes are read
    let bytes;
    try {
      bytes = await bytesOf(source);
    } catch (e) {
      model.close();
      throw e;
    }
    return model.open(bytes, engineOptions);
  }

  function failure(m) {
    const e = new Error(m.message);
    e.field = m.field;
    return e;
  }

  /* A stream of pieces as an async iterator; .seed is the seed it uses; return() stops it. */
  class Pieces {
    constructor(seed, pull, stop) { this.seed = seed; this._pull = pull; this._stop = stop; }
    [Symbol.asyncIterator]() { return this; }
    next() { return this._pull(); }
    async return() { this._stop(); return { value: undefined, done: true }; }
  }

  class LocalModel {
    constructor(model) { this.model = model; this.info = model.info; }

    stream(o) {
      let g = null, failed = null, stopped = false, first = true;
      try {
        g = this.model.generation(o);
      } catch (e) {
        failed = e; // thrown by the first next(), as from a worker
      }
      return new Pieces(g && g.seed, async () => {
        if (failed) { const e = failed; failed = null; stopped = true; throw e; }
        for (;;) {
          if (!first) await pause();
          first = false;
          const text = stopped ? null : g.next();
          if (text === null) { stopped = true; return { value: undefined, done: true }; }
          if (text) return { value: text, done: false };
        }
      }, () => { stopped = true; });
    }

    async sample(o) {
      let text = "";
      for await (const piece of this.stream(o)) text += piece;
      return text;
    }

    async nextTokenProbs(prompt, k, o) { return this.model.nextTokenProbs(prompt, k, o); }
    close() {}
  }

  class WorkerModel {
    static start() {
      const url = URL.createObjectURL(new Blob([`(${engine.toString()})(self);`], { type: "text/javascript" }));
      const model = new WorkerModel(new Worker(url));
      model.url = url;
      return model;
    }

    open(bytes, engineOptions) {
      const owned = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : bytes.slice();
      return this._ask({ type: "open", bytes: owned, options: engineOptions }, [owned.buffer]).then((m) => {
        URL.revokeObjectURL(this.url);
        this.info = m.info;
        return this;
      }, (e) => { URL.revokeObjectURL(this.url); this.close(); throw e; });
    }

    constructor(worker) {
      this.worker = worker;
      this.waiting = new Map(); // id -> handler of that request's messages
      this.ids = 0;
      worker.onmessage = (event) => { const h = this.waiting.get(event.data.id); if (h) h(event.data); };
      worker.onerror = (event) => {
        const e = new Error(`the model's worker failed: ${event.message || "unknown error"}`);
        for (const h of this.waiting.values()) h({ type: "error", message: e.message });
      };
    }

    _ask(message, transfer) {
      const id = ++this.ids;
      return new Promise((resolve, reject) => {
        this.waiting.set(id, (m) => {
          this.waiting.delete(id);
          if (m.type === "error") reject(failure(m));
          else resolve(m);
        });
        this.worker.postMessage(Object.assign({ id }, message), transfer || []);
      });
    }

    stream(o) {
      const id = ++this.ids, queue = [], wake = [];
      let over = false, error = null;
      const settle = () => { while (wake.length) wake.shift()(); };
      this.waiting.set(id, (m) => {
        if (m.type === "piece") queue.push(m.text);
        else {
          if (m.type === "error") error = failure(m);
          over = true;
          this.waiting.delete(id);
        }
        settle();
      });
      // The seed is chosen here when none is given, so that it is known at once.
      const given = o && o.seed !== undefined && o.seed !== null && o.seed !== "";
      const options = Object.assign({}, o, { seed: given ? String(o.seed) : String(Math.floor(Math.random() * 2 ** 31)) });
      this.worker.postMessage({ type: "stream", id, options });
      const pieces = new Pieces(options.seed, async () => {
        for (;;) {
          if (queue.length) return { value: queue.shift(), done: false };
          if (error) { const e = error; error = null; throw e; }
          if (over) return { value: undefined, done: true };
          await new Promise((resolve) => wake.push(resolve));
        }
      }, () => {
        if (!over) this.worker.postMessage({ type: "cancel", id });
        over = true;
        queue.length = 0;
        settle();
      });
      return pieces;
    }

    async sample(o) {
      let text = "";
      for await (const piece of this.stream(o)) text += piece;
      return text;
    }

    async nextTokenProbs(prompt, k, o) {
      return (await this._ask({ type: "next", prompt, k, options: o || {} })).value;
    }

    close() { this.worker.terminate(); }
  }

  return { load, version: "1", _engine: E };
});
