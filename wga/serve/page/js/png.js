/* Read the text chunks (tEXt, iTXt, zTXt) of a PNG: the recipe a render carries inside the file,
 * so the page shows what a downloaded image will say about itself. */
(function () {
  "use strict";
  const wga = (window.wga = window.wga || {});

  const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

  async function inflate(bytes) {
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  /* {keyword: text} for every text chunk of `buffer` (an ArrayBuffer of a PNG file). */
  async function textChunks(buffer) {
    const bytes = new Uint8Array(buffer);
    const view = new DataView(buffer);
    if (bytes.length < 8 || SIGNATURE.some((b, i) => bytes[i] !== b)) {
      throw new Error("not a PNG file");
    }
    const latin1 = new TextDecoder("latin1");
    const utf8 = new TextDecoder("utf-8");
    const out = {};
    let pos = 8;
    while (pos + 8 <= bytes.length) {
      const length = view.getUint32(pos);
      const type = latin1.decode(bytes.subarray(pos + 4, pos + 8));
      const data = bytes.subarray(pos + 8, pos + 8 + length);
      pos += 12 + length;
      if (type === "IEND") break;
      const nul = data.indexOf(0);
      if (nul < 0) continue;
      const keyword = latin1.decode(data.subarray(0, nul));
      if (type === "tEXt") {
        out[keyword] = latin1.decode(data.subarray(nul + 1));
      } else if (type === "zTXt") {
        out[keyword] = latin1.decode(await inflate(data.subarray(nul + 2)));
      } else if (type === "iTXt") {
        const compressed = data[nul + 1] === 1;
        let p = nul + 3;
        p = data.indexOf(0, p) + 1; // language tag
        p = data.indexOf(0, p) + 1; // translated keyword
        const body = data.subarray(p);
        out[keyword] = utf8.decode(compressed ? await inflate(body) : body);
      }
    }
    return out;
  }

  /* The recipe inside a PNG's text chunks, flattened to {key: value}: JSON values are expanded. */
  function recipeFromChunks(chunks) {
    const recipe = {};
    for (const [key, text] of Object.entries(chunks)) {
      let value = text;
      try {
        value = JSON.parse(text);
      } catch {
        /* plain text */
      }
      if (value && typeof value === "object" && !Array.isArray(value)) {
        for (const [k, v] of Object.entries(value)) recipe[k] = v;
      } else {
        recipe[key] = value;
      }
    }
    return recipe;
  }

  wga.png = { textChunks, recipeFromChunks };
})();
