'use strict'
// Preloaded (`node -r`) into each of node-postgres's integration test files by runner.js.
// The suite's own harness (packages/pg/test/suite.js) ends the whole file at the first failed
// or timed-out test, so one difference would hide every later test of that file. This hook
// replaces its `Suite.prototype.run`: the same output, but a failure or timeout is recorded and
// the file goes on with its next test. Many tests assert inside driver callbacks, where a
// failed assertion is an uncaught exception that the suite's test-helper.js turns into
// `process.exit(255)`; while a test runs, such an exception is recorded as that test's failure
// instead (the tests of a file run one at a time). Outside a test the helper's handler runs as
// before. Each result is appended as one JSON line to $COMPAT_RESULTS.
const fs = require('fs')
const path = require('path')

const out = process.env.COMPAT_RESULTS
const pgDir = process.env.COMPAT_PG_DIR
const file = process.env.COMPAT_FILE || path.basename(process.argv[1] || '?')

function record(test, status, err) {
  if (!out) return
  const line = { suite: 'pg', file, test, status }
  if (err) line.error = String((err && (err.code ? err.code + ' ' : '') + (err.message || err)) || err).slice(0, 400)
  fs.appendFileSync(out, JSON.stringify(line) + '\n')
}

const Suite = require(path.join(pgDir, 'test', 'suite.js'))

let current = null // finish() of the test running now
let failures = 0
let quiet = null
let handled = null // the exception just charged to it, for the helper's handler to skip
function mine(err) {
  if (current) {
    handled = err
    current('failed', err)
  } else if (process.listenerCount('uncaughtException') === 1) {
    console.log(err && err.stack ? err.stack : err)
    process.exit(255)
  }
}
process.on('uncaughtException', mine)
for (const method of ['on', 'addListener']) {
  const orig = process[method]
  process[method] = function (event, listener) {
    if (event === 'uncaughtException' && listener !== mine) {
      const inner = listener
      listener = function (err) {
        if (handled === err) {
          handled = null
          return
        }
        return inner.apply(this, arguments)
      }
    }
    return orig.call(this, event, listener)
  }
}

Suite.prototype.run = function (test, cb) {
  const suite = this
  process.stdout.write('  ' + test.name + ' ')
  if (!test.action) {
    process.stdout.write('? - SKIPPED\n')
    record(test.name, 'skipped')
    return cb()
  }
  let finished = false
  const finish = (status, err) => {
    if (finished) return
    finished = true
    current = null
    clearTimeout(timer)
    record(test.name, status, err)
    if (err) process.stdout.write(`FAILED!\n\n${(err && err.stack) || err}\n`)
    else process.stdout.write('✔\n')
    if (err) failures++
    cb()
    // A failed test may leave a client open that keeps node alive after the last test (the
    // suite itself would have exited at the failure): once no test is left, leave.
    if (failures) {
      const queue = suite._queue
      clearTimeout(quiet)
      quiet = setTimeout(() => queue.idle() && process.exit(0), 3000)
      quiet.unref()
    }
  }
  const timer = setTimeout(
    () => finish('failed', new Error(`test did not complete within ${test.timeout}ms`)),
    test.timeout
  )
  current = finish
  test.run((err) => finish(err ? 'failed' : 'passed', err))
}
