// ICU MessageFormat, the subset the catalogues use (lockerd/kiosk/messages.py checks them):
// text, {name}, and {name, plural, =N {…} one {…} other {…}} with # for the number.
// Plural categories come from the browser's own Intl.PluralRules (CLDR), so Russian
// "5 посылок" needs no library (docs/adr/0020-kiosk-messages-icu.md).
"use strict";
window.KioskMessages = (() => {
  const cache = new Map();

  function parse(text) {
    let at = 0;
    function nodes(inPlural) {
      const out = [];
      let plain = "";
      while (at < text.length && text[at] !== "}") {
        const ch = text[at];
        if (ch === "#" && inPlural) { if (plain) out.push(plain); plain = ""; out.push({ pound: true }); at++; }
        else if (ch === "{") { if (plain) out.push(plain); plain = ""; at++; out.push(placeholder()); }
        else { plain += ch; at++; }
      }
      if (plain) out.push(plain);
      return out;
    }
    function placeholder() {
      const close = text.indexOf("}", at);
      const comma = text.indexOf(",", at);
      if (close < 0) throw new Error("unclosed placeholder");
      if (comma < 0 || comma > close) { const name = text.slice(at, close).trim(); at = close + 1; return { arg: name }; }
      const name = text.slice(at, comma).trim();
      const kindEnd = text.indexOf(",", comma + 1);
      at = kindEnd + 1;
      const branches = {};
      for (;;) {
        while (at < text.length && /\s/.test(text[at])) at++;
        if (at >= text.length) throw new Error("unclosed plural");
        if (text[at] === "}") { at++; break; }
        const brace = text.indexOf("{", at);
        const selector = text.slice(at, brace).trim();
        at = brace + 1;
        branches[selector] = nodes(true);
        at++; // the branch's closing brace
      }
      return { plural: name, branches };
    }
    const result = nodes(false);
    if (at !== text.length) throw new Error("unexpected }");
    return result;
  }

  function render(parts, values, lang, count) {
    let out = "";
    for (const p of parts) {
      if (typeof p === "string") out += p;
      else if (p.pound) out += new Intl.NumberFormat(lang, { maximumFractionDigits: 0 }).format(count);
      else if (p.arg !== undefined) {
        const v = values[p.arg];
        // Numbers in the language's own digits (Persian ۱۲); ids and codes stay as they are.
        out += typeof v === "number" ? new Intl.NumberFormat(lang).format(v) : v === undefined ? "{" + p.arg + "}" : String(v);
      }
      else {
        const n = Number(values[p.plural]);
        const exact = p.branches["=" + n];
        const category = Number.isFinite(n) ? new Intl.PluralRules(lang).select(n) : "other";
        out += render(exact || p.branches[category] || p.branches.other || [], values, lang, n);
      }
    }
    return out;
  }

  // The message in the language, or the key itself when a catalogue lacks it (the
  // translation test catches that: a key is never a string of any catalogue).
  function format(catalogue, lang, key, values) {
    const text = catalogue[key];
    if (typeof text !== "string") return key;
    const id = lang + "\u0000" + text;
    let parts = cache.get(id);
    if (!parts) {
      try { parts = parse(text); } catch (e) { return key; }
      cache.set(id, parts);
    }
    return render(parts, values || {}, lang, 0);
  }

  return { parse, format };
})();
