'use strict'
// Writes bench/compat/RESULTS.md from the runs of runner.js:
//
//   node report.js REASONS.tsv OUT.md NAME=DIR...   (the first NAME is the baseline: direct)
//
// Each DIR holds results.json (runner.js) and audit.jsonl (Sumun's audit records of that run).
// Every test whose status differs from the baseline in any run is listed with its reason from
// REASONS.tsv (tab-separated: package/file, test name or *, category, reason); one without a
// reason is reported as not yet explained.
const fs = require('fs')

const [reasonsPath, outPath, ...runArgs] = process.argv.slice(2)
const runs = runArgs.map((a) => {
  const [name, dir] = a.split('=')
  const data = JSON.parse(fs.readFileSync(`${dir}/results.json`, 'utf8'))
  let audit = []
  try {
    audit = fs.readFileSync(`${dir}/audit.jsonl`, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l))
  } catch (e) {
    audit = []
  }
  const byKey = new Map()
  for (const r of data.results) {
    const key = `${r.suite}/${r.file}\t${r.test}`
    // a name used twice in one file keeps its worst result
    const prev = byKey.get(key)
    if (!prev || r.status === 'failed') byKey.set(key, r)
  }
  return { name, seconds: data.seconds, results: data.results, byKey, audit }
})

const reasons = []
for (const line of fs.readFileSync(reasonsPath, 'utf8').split('\n')) {
  if (!line.trim() || line.startsWith('#')) continue
  const [file, test, category, reason] = line.split('\t')
  reasons.push({ file, test, category, reason })
}
function reasonFor(key) {
  const [file, test] = key.split('\t')
  return (
    reasons.find((r) => r.file === file && r.test === test) ||
    reasons.find((r) => r.file === file && r.test === '*') || { category: '**not yet explained**', reason: '' }
  )
}

const count = (run, status) => [...run.byKey.values()].filter((r) => r.status === status).length
const files = (run) => new Set(run.results.map((r) => `${r.suite}/${r.file}`)).size
// a file with tests of its own gets a "(file)" result only when it fails: absent means passed
const statusOf = (run, key) => {
  const r = run.byKey.get(key)
  if (r) return r.status
  return key.endsWith('\t(file)') ? 'passed' : 'not run'
}

const base = runs[0]
const allKeys = new Set()
for (const run of runs) for (const k of run.byKey.keys()) allKeys.add(k)
const diffs = [...allKeys].sort().filter((k) => runs.slice(1).some((run) => statusOf(run, k) !== statusOf(base, k)))
const failingEverywhere = [...allKeys].sort().filter((k) => runs.every((run) => statusOf(run, k) === 'failed'))

const md = []
const esc = (s) => String(s).replace(/\|/g, '\\|').replace(/\n/g, ' ')
const mark = (s) => (s === 'passed' ? 'pass' : s === 'failed' ? '**FAIL**' : s)
md.push('# node-postgres\'s own test suites: direct vs through Sumun')
md.push('')
md.push(`Run: \`PG_SRC=... bench/compat/run.sh\` on ${process.env.COMPAT_WHEN || '?'}.`)
md.push(`${process.env.COMPAT_ENV || ''}.`)
md.push('')
md.push('Suites: every `packages/pg/test/integration/**/*-tests.js` file (the driver\'s integration tests, as')
md.push('`make test-integration` runs them), and the mocha suites of `pg-pool`, `pg-cursor` and')
md.push('`pg-query-stream`; one file at a time, 120 s at most each. Each run logs in as `postgres` with a')
md.push('password (SCRAM-SHA-256) and `sslmode` left to the suite (plain text; its TLS tests ask for TLS).')
md.push('A result named `(file)` is a file that crashed, hung or has no named tests of its own.')
md.push('')
md.push('## Counts')
md.push('')
md.push('| run | files | tests | passed | failed | skipped | differ from direct | time |')
md.push('|---|---|---|---|---|---|---|---|')
for (const run of runs) {
  const differ = run === base ? '' : diffs.filter((k) => statusOf(run, k) !== statusOf(base, k)).length
  md.push(`| ${run.name} | ${files(run)} | ${run.byKey.size} | ${count(run, 'passed')} | ${count(run, 'failed')} | ${count(run, 'skipped')} | ${differ} | ${run.seconds} s |`)
}
md.push('')
md.push('## Every difference from the direct run')
md.push('')
if (diffs.length === 0) {
  md.push('None.')
} else {
  md.push(`| test | ${runs.map((r) => r.name).join(' | ')} | kind | reason |`)
  md.push(`|---|${runs.map(() => '---').join('|')}|---|---|`)
  for (const k of diffs) {
    const [file, test] = k.split('\t')
    const why = reasonFor(k)
    const errs = runs
      .slice(1)
      .filter((run) => statusOf(run, k) === 'failed' && run.byKey.get(k) && run.byKey.get(k).error)
      .map((run) => `${run.name}: \`${esc(run.byKey.get(k).error).slice(0, 160)}\``)
    const reason = [why.reason, errs.length ? `(error ${errs.join('; ')})` : ''].filter(Boolean).join(' ')
    md.push(`| \`${esc(file)}\` › ${esc(test)} | ${runs.map((run) => mark(statusOf(run, k))).join(' | ')} | ${why.category} | ${esc(reason)} |`)
  }
}
md.push('')
if (failingEverywhere.length) {
  md.push('## Failing in every run, directly too')
  md.push('')
  md.push('Not a difference: these fail against PostgreSQL itself on this machine.')
  md.push('')
  md.push('| test | error (direct) | reason |')
  md.push('|---|---|---|')
  for (const k of failingEverywhere) {
    const [file, test] = k.split('\t')
    const r = base.byKey.get(k)
    md.push(`| \`${esc(file)}\` › ${esc(test)} | \`${esc((r && r.error) || '').slice(0, 160)}\` | ${esc(reasonFor(k).reason)} |`)
  }
  md.push('')
}
md.push('## Pinning and session ends seen by Sumun')
md.push('')
md.push('From the audit log\'s `session.end` records of each run through Sumun: client sessions, how many a')
md.push('transaction-mode session was pinned for (by reason), and how sessions ended.')
md.push('')
md.push('| run | sessions | pinned (by reason) | ends |')
md.push('|---|---|---|---|')
for (const run of runs.slice(1)) {
  const ends = run.audit.filter((e) => e.event === 'session.end')
  const tally = (f) => {
    const m = new Map()
    for (const e of ends) {
      const v = f(e)
      if (v) m.set(v, (m.get(v) || 0) + 1)
    }
    return [...m.entries()].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'
  }
  md.push(`| ${run.name} | ${ends.length} | ${tally((e) => e.pinned)} | ${tally((e) => e.end)} |`)
}
md.push('')
if (fs.existsSync(`${__dirname}/NOTES.md`)) md.push(fs.readFileSync(`${__dirname}/NOTES.md`, 'utf8'))
fs.writeFileSync(outPath, md.join('\n').replace(/\n+$/, '') + '\n')
const unexplained = diffs.filter((k) => reasonFor(k).category === '**not yet explained**').length
console.log(`${diffs.length} differences from ${base.name}, ${unexplained} not yet explained`)
