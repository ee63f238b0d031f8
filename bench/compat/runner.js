'use strict'
// Runs node-postgres's own test suites once against the server named by the PG* environment
// variables and writes every result to one JSON file:
//
//   node runner.js WORK_DIR OUT.json LOG_DIR
//
// WORK_DIR is the installed copy that run.sh made (packages/pg, pg-pool, pg-cursor,
// pg-query-stream with their node_modules). Suites, as upstream runs them:
//   - pg: each packages/pg/test/integration/**/*-tests.js with `node FILE` (the Makefile's
//     test-integration), with suite-hook.js preloaded so a failure does not end its file;
//   - pg-pool, pg-cursor: mocha on each file of test/ (pg-pool with its test/setup.js);
//   - pg-query-stream: mocha -r ts-node/register on each test/*.ts (transpile only).
// One file at a time, each with a time limit (COMPAT_FILE_TIMEOUT seconds, default 120), so a
// file that hangs or crashes costs only its own results. A file that exits non-zero, hangs or
// has no test of its own also gets a result named "(file)".
const fs = require('fs')
const path = require('path')
const { spawnSync } = require('child_process')

const [work, outPath, logDir] = process.argv.slice(2)
if (!work || !outPath || !logDir) {
  console.error('usage: node runner.js WORK_DIR OUT.json LOG_DIR')
  process.exit(2)
}
const fileTimeout = 1000 * Number(process.env.COMPAT_FILE_TIMEOUT || 120)
const only = process.env.COMPAT_ONLY ? new RegExp(process.env.COMPAT_ONLY) : null
fs.mkdirSync(logDir, { recursive: true })
const hook = path.join(__dirname, 'suite-hook.js')
const results = []
const started = Date.now()

function walk(dir, re) {
  const found = []
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name)
    if (e.isDirectory()) found.push(...walk(p, re))
    else if (re.test(e.name)) found.push(p)
  }
  return found.sort()
}

function tail(text, n) {
  return text.split('\n').filter((l) => l.trim()).slice(-n).join(' | ').slice(0, 400)
}

function run(cmd, args, cwd, env, logName) {
  const t0 = Date.now()
  const r = spawnSync(cmd, args, {
    cwd,
    env: { ...process.env, ...env },
    timeout: fileTimeout,
    killSignal: 'SIGKILL',
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  })
  const output = (r.stdout || '') + (r.stderr || '')
  fs.writeFileSync(path.join(logDir, logName.replace(/[/\\]/g, '__') + '.log'), output)
  const timedOut = r.error && r.error.code === 'ETIMEDOUT'
  return { code: r.status, signal: r.signal, timedOut, output, ms: Date.now() - t0 }
}

function fileResult(suite, file, r, hadTests) {
  if (r.timedOut) {
    results.push({ suite, file, test: '(file)', status: 'failed', error: `file did not finish within ${fileTimeout / 1000}s` })
  } else if (r.code !== 0) {
    const how = r.signal ? `killed by ${r.signal}` : `exit ${r.code}`
    results.push({ suite, file, test: '(file)', status: 'failed', error: `${how}: ${tail(r.output, 4)}` })
  } else if (!hadTests) {
    results.push({ suite, file, test: '(file)', status: 'passed' })
  }
}

// --- pg: the integration files, as `make test-integration` runs them ----------------------
const pgDir = path.join(work, 'packages', 'pg')
for (const abs of walk(path.join(pgDir, 'test', 'integration'), /-tests\.js$/)) {
  const file = path.relative(pgDir, abs)
  if (only && !only.test('pg/' + file)) continue
  const jsonl = path.join(logDir, 'pg-current.jsonl')
  fs.writeFileSync(jsonl, '')
  const r = run('node', ['-r', hook, abs], pgDir, { COMPAT_RESULTS: jsonl, COMPAT_PG_DIR: pgDir, COMPAT_FILE: file }, 'pg/' + file)
  const lines = fs.readFileSync(jsonl, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l))
  results.push(...lines)
  fileResult('pg', file, r, lines.length > 0)
  const failed = lines.filter((l) => l.status === 'failed').length
  console.log(`  pg/${file}: ${lines.length} tests, ${failed} failed${r.code !== 0 ? `, exit ${r.code ?? r.signal}` : ''} (${r.ms} ms)`)
}
fs.rmSync(path.join(logDir, 'pg-current.jsonl'), { force: true })

// --- mocha packages -------------------------------------------------------------------------
function mochaSuite(pkg, files, extraArgs, prefixFiles, env = {}) {
  const dir = path.join(work, 'packages', pkg)
  const mocha = path.join(work, 'node_modules', '.bin', 'mocha')
  for (const abs of files) {
    const file = path.relative(dir, abs)
    if (only && !only.test(pkg + '/' + file)) continue
    const json = path.join(logDir, `${pkg}-current.json`)
    fs.rmSync(json, { force: true })
    const args = [...extraArgs, '--reporter', 'json', '--reporter-option', `output=${json}`, ...prefixFiles, abs]
    const r = run(mocha, args, dir, env, `${pkg}/${file}`)
    let report = null
    try {
      report = JSON.parse(fs.readFileSync(json, 'utf8'))
    } catch (e) {
      report = null
    }
    const lines = []
    if (report) {
      const failedTitles = new Set()
      for (const t of report.failures || []) {
        failedTitles.add(t.fullTitle)
        lines.push({ suite: pkg, file, test: t.fullTitle, status: 'failed', error: String(t.err && (t.err.message || t.err.code) || '').slice(0, 400) })
      }
      for (const t of report.passes || []) lines.push({ suite: pkg, file, test: t.fullTitle, status: 'passed' })
      for (const t of report.pending || []) lines.push({ suite: pkg, file, test: t.fullTitle, status: 'skipped' })
    }
    results.push(...lines)
    // mocha exits with the number of failures: only a crash, a hang or no report is a file failure
    const crashed = r.timedOut || !report || r.signal
    fileResult(pkg, file, crashed ? r : { ...r, code: 0 }, lines.length > 0)
    const failed = lines.filter((l) => l.status === 'failed').length
    console.log(`  ${pkg}/${file}: ${lines.length} tests, ${failed} failed${crashed ? ', crashed or hung' : ''} (${r.ms} ms)`)
  }
  fs.rmSync(path.join(logDir, `${pkg}-current.json`), { force: true })
}

const testDir = (pkg) => path.join(work, 'packages', pkg, 'test')
mochaSuite('pg-pool', walk(testDir('pg-pool'), /\.js$/).filter((f) => !f.endsWith('setup.js') && path.dirname(f) === testDir('pg-pool')), [], [path.join(testDir('pg-pool'), 'setup.js')])
mochaSuite('pg-cursor', walk(testDir('pg-cursor'), /\.js$/).filter((f) => path.dirname(f) === testDir('pg-cursor')), [], [])
// ts-node only transpiles: the type check of test/client-options.ts fails with the TypeScript
// that npm installs today (an unused @ts-expect-error), which says nothing about the driver
mochaSuite('pg-query-stream', walk(testDir('pg-query-stream'), /\.ts$/).filter((f) => !f.endsWith('helper.ts')), ['-r', 'ts-node/register'], [], { TS_NODE_TRANSPILE_ONLY: 'true' })

fs.writeFileSync(outPath, JSON.stringify({ seconds: Math.round((Date.now() - started) / 1000), results }, null, 1))
const count = (s) => results.filter((r) => r.status === s).length
console.log(`${count('passed')} passed, ${count('failed')} failed, ${count('skipped')} skipped (${Math.round((Date.now() - started) / 1000)} s)`)
