//! Running a [`Plan`]: one thread per core takes units of work ([`crate::scan::Work`]) in
//! order; each parses its lines with [`Reader::read_into`] (no allocation per line), builds
//! only the columns WHERE needs, filters, then builds the rest for the rows that pass and feeds
//! them to a hash aggregation (one table per thread, merged at the end) or to a row buffer
//! per unit (kept in input order; cut to the top rows when there is ORDER BY ... LIMIT).

use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use hashbrown::HashTable;
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use sumun_flows::{Flow, LogStatus, ReadError, Reader};
use sumun_flows_tools::input::{BadLine, ReadStats, KEEP_BAD};

use crate::agg::{AggSpec, AggState};
use crate::bind::{Plan, SortKey, Stage};
use crate::error::{EvalError, QueryError};
use crate::scan::{self, Inputs, Work};
use crate::schema::{Materializer, Source, COLUMNS};
use crate::value::{Type, Value};

/// How to run a query.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The first bad line ends the query.
    pub strict: bool,
    /// Worker threads (0: one per core).
    pub threads: usize,
    /// What `current_date` and `current_timestamp` are, in milliseconds since the epoch.
    pub now_ms: i64,
    /// Bytes read so far, for a progress bar.
    pub progress: Option<&'static AtomicU64>,
    /// Aggregate on [`Value`] keys even when every GROUP BY key has a fixed width (the typed
    /// tables of [`crate::typed`] are the default; tests compare the two).
    pub value_keys: bool,
}

impl Options {
    pub fn threads(&self) -> usize {
        if self.threads > 0 {
            return self.threads;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// A query's answer.
#[derive(Debug, Clone)]
pub struct Output {
    pub columns: Vec<(String, Type)>,
    pub rows: Vec<Vec<Value>>,
    pub stats: ReadStats,
}

/// A fast hasher for group keys (FxHash's multiply-rotate): keys are addresses and small
/// integers, hashed by the million, and the table is not exposed to adversarial keys in a way
/// that matters more than a slower query.
#[derive(Default, Clone, Copy)]
pub struct Fx(u64);

impl Hasher for Fx {
    /// A final mix (MurmurHash3's): the multiply-rotate alone leaves the low bits, which pick
    /// the bucket, depending only on the low bytes of the last word — for IPv4 addresses the
    /// first octet, so every address of a /8 would collide.
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(w));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
}

impl Fx {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type Rows = Vec<Vec<Value>>;

/// Partitions of an aggregation table, chosen by the top bits of a group's hash, so that the
/// tables of the threads can be merged partition by partition, in parallel.
const PARTS: usize = 16;

fn hash_key(key: &[&Value]) -> u64 {
    let mut h = Fx::default();
    key.hash(&mut h);
    h.finish()
}

/// A group's key value or one of its aggregate states: both live in one array, a group's
/// cells side by side, so finding a group and updating it touch the same cache lines.
enum Cell {
    Key(Value),
    State(AggState),
}

/// One partition: groups numbered in order of arrival; group `i` owns
/// `cells[i * w .. (i + 1) * w]` (`w` = keys + aggregates: key values first), so a group costs no
/// allocation of its own. The hash table holds only (hash, group) pairs.
#[derive(Default)]
struct Part {
    table: HashTable<(u64, usize)>,
    cells: Vec<Cell>,
    groups: usize,
}

fn key_eq(cells: &[Cell], key: &[&Value]) -> bool {
    cells.len() >= key.len()
        && key
            .iter()
            .zip(cells)
            .all(|(k, c)| matches!(c, Cell::Key(v) if v == *k))
}

impl Part {
    /// The group of `key` (with hash `h`), added with the states `init` pushes if new; `w` is
    /// the number of cells per group.
    fn group(
        &mut self,
        h: u64,
        key: &[&Value],
        w: usize,
        init: &mut dyn FnMut(&mut Vec<Cell>),
    ) -> usize {
        let Part {
            table,
            cells,
            groups,
        } = self;
        if let Some(&(_, id)) = table.find(h, |&(hh, id)| {
            hh == h && cells.get(id * w..).is_some_and(|c| key_eq(c, key))
        }) {
            return id;
        }
        let id = *groups;
        cells.extend(key.iter().map(|&v| Cell::Key(v.clone())));
        init(cells);
        table.insert_unique(h, (h, id), |&(hh, _)| hh);
        *groups += 1;
        id
    }

    /// Folds `other` (the same partition of another thread's table) into this one.
    fn merge(&mut self, mut other: Part, k: usize, aggs: &[AggSpec]) {
        let w = k + aggs.len();
        let entries: Vec<(u64, usize)> = other.table.iter().copied().collect();
        for (h, oid) in entries {
            let Some(group) = other.cells.get_mut(oid * w..(oid + 1) * w) else {
                continue;
            };
            let key: Vec<Value> = group[..k]
                .iter()
                .map(|c| match c {
                    Cell::Key(v) => v.clone(),
                    Cell::State(_) => Value::Null,
                })
                .collect();
            let mut theirs: Vec<Cell> = group[k..]
                .iter_mut()
                .map(|c| std::mem::replace(c, Cell::Key(Value::Null)))
                .collect();
            let mut fresh = false;
            let key: Vec<&Value> = key.iter().collect();
            let id = self.group(h, &key, w, &mut |cells| {
                fresh = true;
                cells.append(&mut theirs);
            });
            if !fresh {
                if let Some(mine) = self.cells.get_mut(id * w + k..(id + 1) * w) {
                    for ((a, s), o) in aggs.iter().zip(mine.iter_mut()).zip(theirs) {
                        if let (Cell::State(s), Cell::State(o)) = (s, o) {
                            a.merge(s, o);
                        }
                    }
                }
            }
        }
    }

    /// The groups as rows: key values, then the aggregates' final values.
    fn into_rows(
        self,
        k: usize,
        aggs: &[AggSpec],
        rows: &mut Vec<Vec<Value>>,
    ) -> Result<(), EvalError> {
        let w = k + aggs.len();
        let mut cells = self.cells.into_iter();
        for _ in 0..self.groups {
            let mut row = Vec::with_capacity(w);
            for _ in 0..k {
                row.push(match cells.next() {
                    Some(Cell::Key(v)) => v,
                    _ => Value::Null,
                });
            }
            for a in aggs {
                let s = match cells.next() {
                    Some(Cell::State(s)) => s,
                    _ => a.init(),
                };
                row.push(a.finish(s)?);
            }
            rows.push(row);
        }
        Ok(())
    }
}

/// A thread's groups and their aggregate states.
struct AggTable {
    parts: Vec<Part>,
    keybuf: Vec<Value>,
}

impl Default for AggTable {
    fn default() -> Self {
        AggTable {
            parts: (0..PARTS).map(|_| Part::default()).collect(),
            keybuf: Vec::new(),
        }
    }
}

impl AggTable {
    fn update(
        &mut self,
        keys: &[crate::expr::BExpr],
        aggs: &[AggSpec],
        row: &[Value],
    ) -> Result<(), EvalError> {
        // Column keys are lent, not cloned (a string shared by every row, such as `ACCEPT`,
        // would have its reference count bumped by every thread on every row); computed keys
        // are evaluated into `keybuf`.
        self.keybuf.clear();
        for k in keys {
            if !matches!(k, crate::expr::BExpr::Col(_)) {
                self.keybuf.push(k.eval(row)?);
            }
        }
        const NULL: Value = Value::Null;
        let mut computed = self.keybuf.iter();
        let mut lent = |k: &crate::expr::BExpr| match k {
            crate::expr::BExpr::Col(c) => row.get(*c).unwrap_or(&NULL),
            _ => computed.next().unwrap_or(&NULL),
        };
        // Up to eight keys on the stack (no allocation per row), more in a vector.
        let mut few: [&Value; 8] = [&NULL; 8];
        let many: Vec<&Value>;
        let key: &[&Value] = if keys.len() <= few.len() {
            for (slot, k) in few.iter_mut().zip(keys) {
                *slot = lent(k);
            }
            &few[..keys.len()]
        } else {
            many = keys.iter().map(lent).collect();
            &many
        };
        let h = hash_key(key);
        let Some(part) = self.parts.get_mut((h >> 60) as usize % PARTS) else {
            return Ok(());
        };
        let k = keys.len();
        let w = k + aggs.len();
        let id = part.group(h, key, w, &mut |cells| {
            cells.extend(aggs.iter().map(|a| Cell::State(a.init())))
        });
        if let Some(states) = part.cells.get_mut(id * w + k..(id + 1) * w) {
            for (a, s) in aggs.iter().zip(states.iter_mut()) {
                if let Cell::State(s) = s {
                    a.update(s, row)?;
                }
            }
        }
        Ok(())
    }
}

/// Merges the threads' tables, one partition per thread at a time, and returns every group as
/// a row.
fn merge_tables(
    tables: Vec<AggTable>,
    k: usize,
    aggs: &[AggSpec],
    threads: usize,
) -> Result<Vec<Vec<Value>>, EvalError> {
    let mut by_part: Vec<Vec<Part>> = (0..PARTS).map(|_| Vec::new()).collect();
    for t in tables {
        for (i, p) in t.parts.into_iter().enumerate() {
            if let Some(v) = by_part.get_mut(i) {
                v.push(p);
            }
        }
    }
    let queue = Mutex::new(by_part.into_iter().enumerate().collect::<Vec<_>>());
    let done: Mutex<Vec<(usize, Result<Rows, EvalError>)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, PARTS) {
            s.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let Some((i, parts)) = next else { break };
                let mut parts = parts.into_iter();
                let mut base = parts.next().unwrap_or_default();
                for p in parts {
                    base.merge(p, k, aggs);
                }
                let mut rows = Vec::with_capacity(base.groups);
                let r = base.into_rows(k, aggs, &mut rows).map(|()| rows);
                done.lock().unwrap_or_else(|p| p.into_inner()).push((i, r));
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(|p| p.into_inner());
    done.sort_by_key(|(i, _)| *i);
    let mut rows = Vec::new();
    for (_, r) in done {
        rows.extend(r?);
    }
    Ok(rows)
}

/// What one unit of work produced besides aggregated rows.
#[derive(Default)]
struct UnitOut {
    rows: Vec<Vec<Value>>,
    records: u64,
    no_data: u64,
    bad: u64,
    first_bad: Vec<(u64, String)>,
    /// Plain ranges: where the first line starts (for absolute line numbers), and whether
    /// the unit's last format differs from the one it assumed (a header in mid-file).
    first_line_at: u64,
    format_changed: bool,
}

struct Shared<'a> {
    plan: &'a Plan,
    inputs: &'a Inputs,
    work: &'a [Work],
    opts: &'a Options,
    next: AtomicUsize,
    stop: AtomicBool,
    /// Rows made per unit so far (for an early LIMIT), by unit.
    made: Mutex<Vec<Option<u64>>>,
    limit_reached: AtomicBool,
    /// Whether aggregations may use typed tables, and whether one found it could not.
    typed: bool,
    untyped: AtomicBool,
}

pub fn run(plan: &Plan, inputs: &Inputs, opts: &Options) -> Result<Output, QueryError> {
    let mut typed = !opts.value_keys;
    let mut split: HashSet<usize> = HashSet::new();
    // At most three passes: a key that should have had a fixed width held a string (the typed
    // tables cannot take it: run on `Value` keys), and a header in the middle of a plain file
    // changed the format for the ranges after it (read those files again, whole, in one piece
    // each: concatenated logs of two formats).
    for _ in 0..3 {
        let (out, again) = run_once(plan, inputs, opts, &|f| !split.contains(&f), typed)?;
        match again {
            Again::No => return Ok(out),
            Again::Untyped => typed = false,
            Again::Whole(files) => split.extend(files),
        }
    }
    let (out, _) = run_once(plan, inputs, opts, &|f| !split.contains(&f), false)?;
    Ok(out)
}

/// Whether a pass must be run again, and how.
enum Again {
    No,
    Untyped,
    Whole(HashSet<usize>),
}

fn run_once(
    plan: &Plan,
    inputs: &Inputs,
    opts: &Options,
    split: &dyn Fn(usize) -> bool,
    typed: bool,
) -> Result<(Output, Again), QueryError> {
    let threads = opts.threads();
    let mut work = inputs.work(threads * 4, split);
    let pruned = pruned_files(plan, inputs);
    if pruned.iter().any(|&p| p) {
        work.retain(|w| !pruned.get(w.file()).copied().unwrap_or(false));
        if let Some(p) = opts.progress {
            let skipped = inputs.files.iter().zip(&pruned).filter(|(_, &p)| p);
            p.fetch_add(skipped.map(|(f, _)| f.size).sum(), Ordering::Relaxed);
        }
    }
    let shared = Shared {
        plan,
        inputs,
        work: &work,
        opts,
        next: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        made: Mutex::new(vec![None; work.len()]),
        limit_reached: AtomicBool::new(false),
        typed,
        untyped: AtomicBool::new(false),
    };
    let results: Vec<Result<WorkerOut, QueryError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.min(work.len().max(1)))
            .map(|_| {
                std::thread::Builder::new()
                    .stack_size(16 << 20)
                    .spawn_scoped(s, || worker(&shared))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err(QueryError::Usage("a query thread failed".into()))),
                Err(e) => Err(QueryError::Io {
                    path: "thread".into(),
                    source: e,
                }),
            })
            .collect()
    });
    let mut tables = Vec::new();
    let mut units: Vec<(usize, UnitOut)> = Vec::new();
    let mut first_err = None;
    for r in results {
        match r {
            Ok((t, u)) => {
                tables.extend(t);
                units.extend(u);
            }
            Err(e) => {
                if first_err.is_none() {
                    first_err = Some(e);
                }
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    let empty = || Output {
        columns: Vec::new(),
        rows: Vec::new(),
        stats: ReadStats::default(),
    };
    if shared.untyped.load(Ordering::Relaxed) {
        return Ok((empty(), Again::Untyped));
    }
    units.sort_by_key(|(i, _)| *i);

    // Mid-file headers: a range whose format changed affects the ranges after it.
    let mut changed = HashSet::new();
    for (i, u) in &units {
        if u.format_changed {
            if let Some(Work::Range { file, end, .. }) = work.get(*i) {
                if *end != u64::MAX {
                    changed.insert(*file);
                }
            }
        }
    }
    if !changed.is_empty() {
        return Ok((empty(), Again::Whole(changed)));
    }

    // Statistics and bad lines, with absolute line numbers.
    let mut stats = ReadStats {
        files: inputs.files.len(),
        ..ReadStats::default()
    };
    let mut bad: Vec<BadLine> = Vec::new();
    for (i, u) in &units {
        stats.records += u.records;
        stats.no_data += u.no_data;
        stats.bad_lines += u.bad;
        if u.first_bad.is_empty() || bad.len() >= KEEP_BAD {
            continue;
        }
        let Some(w) = work.get(*i) else { continue };
        let file = &inputs.files[w.file()];
        let offset = match w {
            Work::Range { .. } if u.first_line_at > 0 => {
                scan::lines_before(&file.path, u.first_line_at).map_err(|source| {
                    QueryError::Io {
                        path: file.name(),
                        source,
                    }
                })?
            }
            _ => 0,
        };
        for (line, message) in &u.first_bad {
            if bad.len() < KEEP_BAD {
                bad.push(BadLine {
                    file: file.name(),
                    line: usize::try_from(offset + line).unwrap_or(usize::MAX),
                    message: message.clone(),
                });
            }
        }
    }
    if opts.strict {
        if let Some(first) = bad.into_iter().next() {
            return Err(QueryError::Bad(first));
        }
    } else {
        stats.first_bad = bad;
    }

    let rows = match &plan.stage {
        Stage::Aggregate { keys, aggs } => {
            let mut values = Vec::new();
            let mut typed = Vec::new();
            for t in tables {
                match t {
                    Groups::Values(t) => values.push(t),
                    Groups::Typed(t) => typed.push(t),
                }
            }
            let mut rows = if typed.is_empty() {
                merge_tables(values, keys.len(), aggs, opts.threads())?
            } else {
                crate::typed::merge(typed, aggs, opts.threads())?
            };
            if keys.is_empty() && rows.is_empty() {
                // An aggregate over no rows is one row (count 0, sum NULL).
                let mut row = Vec::new();
                for a in aggs {
                    row.push(a.finish(a.init())?);
                }
                rows.push(row);
            }
            rows
        }
        Stage::Project { .. } => units.into_iter().flat_map(|(_, u)| u.rows).collect(),
    };
    let rows = finish(plan, rows)?;
    Ok((
        Output {
            columns: plan.columns.clone(),
            rows,
            stats,
        },
        Again::No,
    ))
}

/// Per input file, whether it can be skipped: it has Hive partition values (`year=`, `month=`,
/// `day=` directories) and a condition of WHERE (one of its ANDed terms) that reads only
/// partition columns is not true of them — so it is not true of any row of the file.
fn pruned_files(plan: &Plan, inputs: &Inputs) -> Vec<bool> {
    let mut terms = Vec::new();
    fn split<'a>(e: &'a crate::expr::BExpr, out: &mut Vec<&'a crate::expr::BExpr>) {
        match e {
            crate::expr::BExpr::And(a, b) => {
                split(a, out);
                split(b, out);
            }
            e => out.push(e),
        }
    }
    if let Some(f) = &plan.filter {
        split(f, &mut terms);
    }
    let part_cols: Vec<usize> = ["year", "month", "day", "dt"]
        .iter()
        .filter_map(|n| crate::schema::lookup(n))
        .collect();
    terms.retain(|t| {
        let mut cols = Vec::new();
        t.columns(&mut cols);
        !cols.is_empty() && cols.iter().all(|c| part_cols.contains(c))
    });
    inputs
        .files
        .iter()
        .map(|f| {
            let Some(p) = &f.partition else {
                return false;
            };
            if terms.is_empty() {
                return false;
            }
            let mut row = vec![Value::Null; COLUMNS.len()];
            for (&c, v) in part_cols.iter().zip(p.iter()) {
                if let Some(slot) = row.get_mut(c) {
                    *slot = Value::Str(v.clone());
                }
            }
            terms.iter().any(|t| matches!(t.test(&row), Ok(false)))
        })
        .collect()
}

/// HAVING, projection, DISTINCT, ORDER BY, LIMIT over the stage's rows.
fn finish(plan: &Plan, rows: Vec<Vec<Value>>) -> Result<Vec<Vec<Value>>, QueryError> {
    let mut out: Vec<(Vec<Value>, Vec<Value>)> = Vec::with_capacity(rows.len());
    let mut seen: HashSet<Vec<Value>> = HashSet::new();
    for r in rows {
        if let Some(h) = &plan.having {
            if !h.test(&r)? {
                continue;
            }
        }
        let mut projected = Vec::with_capacity(plan.project.len());
        for p in &plan.project {
            projected.push(p.eval(&r)?);
        }
        if plan.distinct_output && !seen.insert(projected.clone()) {
            continue;
        }
        let mut keys = Vec::with_capacity(plan.order.len());
        for o in &plan.order {
            keys.push(o.expr.eval(&r)?);
        }
        out.push((projected, keys));
    }
    let limit = plan.limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
    if !plan.order.is_empty() {
        let cmp = |a: &(Vec<Value>, Vec<Value>), b: &(Vec<Value>, Vec<Value>)| {
            compare_keys(&plan.order, &a.1, &b.1)
        };
        match limit {
            // The top rows only: select them, then sort just those.
            Some(l) if l < out.len() / 2 => {
                out.select_nth_unstable_by(l, cmp);
                out.truncate(l);
                out.sort_by(cmp);
            }
            _ => out.sort_by(cmp),
        }
    }
    if let Some(l) = limit {
        out.truncate(l);
    }
    Ok(out.into_iter().map(|(p, _)| p).collect())
}

fn compare_keys(order: &[SortKey], a: &[Value], b: &[Value]) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    for (k, (x, y)) in order.iter().zip(a.iter().zip(b)) {
        let o = match (x.is_null(), y.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => {
                if k.nulls_first {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (false, true) => {
                if k.nulls_first {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (false, false) => {
                let o = x.cmp_sql(y);
                if k.desc {
                    o.reverse()
                } else {
                    o
                }
            }
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// A thread's aggregation table: on fixed-width keys when the keys have such types.
enum Groups {
    Values(AggTable),
    Typed(crate::typed::Table),
}

type WorkerOut = (Option<Groups>, Vec<(usize, UnitOut)>);

fn worker(sh: &Shared<'_>) -> Result<WorkerOut, QueryError> {
    let mut table = match &sh.plan.stage {
        Stage::Aggregate { aggs, .. } => Some(
            match crate::typed::Layout::new(&sh.plan.key_types, aggs).filter(|_| sh.typed) {
                Some(l) => Groups::Typed(crate::typed::Table::new(l)),
                None => Groups::Values(AggTable::default()),
            },
        ),
        Stage::Project { .. } => None,
    };
    let mut units = Vec::new();
    loop {
        if sh.stop.load(Ordering::Relaxed) || sh.limit_reached.load(Ordering::Relaxed) {
            break;
        }
        let i = sh.next.fetch_add(1, Ordering::Relaxed);
        let Some(w) = sh.work.get(i) else { break };
        let mut unit = UnitOut::default();
        let r = run_unit(sh, w, &mut table, &mut unit);
        if let Err(e) = r {
            sh.stop.store(true, Ordering::Relaxed);
            return Err(e);
        }
        if sh.untyped.load(Ordering::Relaxed) {
            sh.stop.store(true, Ordering::Relaxed);
            break;
        }
        if let Some(limit) = sh.plan.early_limit() {
            let mut made = sh.made.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(slot) = made.get_mut(i) {
                *slot = Some(unit.rows.len() as u64);
            }
            let mut total = 0;
            for m in made.iter() {
                match m {
                    Some(n) => total += n,
                    None => break,
                }
            }
            if total >= limit {
                sh.limit_reached.store(true, Ordering::Relaxed);
            }
        }
        units.push((i, unit));
    }
    Ok((table, units))
}

/// Where rows that passed WHERE go.
struct Sink<'a> {
    plan: &'a Plan,
    table: &'a mut Option<Groups>,
    rows: &'a mut Vec<Vec<Value>>,
    /// Set when a key of the typed table held a string.
    untyped: &'a AtomicBool,
    /// Keep at most this many rows (early LIMIT), or prune to the top `limit` by ORDER BY.
    cap: Option<usize>,
    top: Option<usize>,
}

impl Sink<'_> {
    /// Returns false when the unit may stop (it has all the rows LIMIT lets through).
    fn push(&mut self, vals: &[Value]) -> Result<bool, EvalError> {
        match &self.plan.stage {
            Stage::Aggregate { keys, aggs } => {
                match self.table.as_mut() {
                    Some(Groups::Values(t)) => t.update(keys, aggs, vals)?,
                    Some(Groups::Typed(t)) => {
                        let fits = t.update(keys, aggs, vals)?;
                        if !fits {
                            self.untyped.store(true, Ordering::Relaxed);
                            return Ok(false);
                        }
                    }
                    None => {}
                }
                Ok(true)
            }
            Stage::Project { exprs } => {
                let mut row = Vec::with_capacity(exprs.len());
                for e in exprs {
                    row.push(e.eval(vals)?);
                }
                self.rows.push(row);
                if let Some(top) = self.top {
                    if self.rows.len() >= (2 * top).max(4096) {
                        self.prune(top);
                    }
                }
                Ok(self.cap.is_none_or(|c| self.rows.len() < c))
            }
        }
    }

    fn prune(&mut self, top: usize) {
        let order = &self.plan.order;
        let mut keyed: Vec<(Vec<Value>, Vec<Value>)> = self
            .rows
            .drain(..)
            .map(|r| {
                let k = order
                    .iter()
                    .map(|o| o.expr.eval(&r).unwrap_or(Value::Null))
                    .collect();
                (k, r)
            })
            .collect();
        keyed.sort_by(|a, b| compare_keys(order, &a.0, &b.0));
        keyed.truncate(top);
        self.rows.extend(keyed.into_iter().map(|(_, r)| r));
    }
}

fn run_unit(
    sh: &Shared<'_>,
    w: &Work,
    table: &mut Option<Groups>,
    unit: &mut UnitOut,
) -> Result<(), QueryError> {
    let plan = sh.plan;
    let file = &sh.inputs.files[w.file()];
    let limit = plan.limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
    let mut rows = Vec::new();
    let mut sink = Sink {
        plan,
        table,
        rows: &mut rows,
        untyped: &sh.untyped,
        cap: plan
            .early_limit()
            .map(|l| usize::try_from(l).unwrap_or(usize::MAX)),
        top: if plan.order.is_empty() || !matches!(plan.stage, Stage::Project { .. }) {
            None
        } else {
            limit
        },
    };
    if sink.cap == Some(0) {
        return Ok(());
    }
    let progress = sh.opts.progress;
    match w {
        Work::Range { start, end, .. } => {
            let range =
                scan::Range::open(&file.path, *start, *end, progress).map_err(|source| {
                    QueryError::Io {
                        path: file.name(),
                        source,
                    }
                })?;
            unit.first_line_at = range.first_line_at;
            // Ranges after the first assume the format the file's header names.
            let reader = match (&file.header, *start > 0) {
                (Some(h), true) => Reader::with_format(range, h.clone()),
                _ => Reader::new(range),
            };
            let assumed = file.header.clone();
            let reader = read_lines(sh, reader, &mut sink, unit, &file.name())?;
            let end_format = reader.format();
            let expected = assumed.unwrap_or_default();
            unit.format_changed = *end_format != expected;
        }
        Work::Stream { .. } => {
            let input = scan::open_stream(file, progress)?;
            read_lines(sh, Reader::new(input), &mut sink, unit, &file.name())?;
        }
        Work::RowGroup { group, .. } => {
            crate::parquet_io::scan_row_group(file, *group, plan, &mut |vals| {
                unit.records += 1;
                if sh.stop.load(Ordering::Relaxed) {
                    return Ok(false);
                }
                if let Some(f) = &plan.filter {
                    if !f.test(vals)? {
                        return Ok(true);
                    }
                }
                sink.push(vals)
            })?;
            if let (Some(p), true) = (progress, file.row_groups > 0) {
                p.fetch_add(file.size / file.row_groups as u64, Ordering::Relaxed);
            }
        }
    }
    if let Some(top) = sink.top {
        sink.prune(top);
    }
    unit.rows = rows;
    Ok(())
}

fn read_lines<R: BufRead>(
    sh: &Shared<'_>,
    mut reader: Reader<R>,
    sink: &mut Sink<'_>,
    unit: &mut UnitOut,
    name: &str,
) -> Result<Reader<R>, QueryError> {
    let plan = sh.plan;
    // Fields outside the default format are kept only if the query reads one.
    let wants_extra = plan
        .scan_cols()
        .iter()
        .any(|&c| matches!(COLUMNS.get(c).map(|c| c.source), Some(Source::Extra(_))));
    if !wants_extra {
        reader = reader.ignore_extra_fields();
    }
    let mut flow = Flow::default();
    let mut mat = Materializer::default();
    let mut vals = vec![Value::Null; COLUMNS.len()];
    let mut n: u32 = 0;
    while let Some(item) = reader.read_into(&mut flow) {
        n = n.wrapping_add(1);
        if n.is_multiple_of(4096)
            && (sh.stop.load(Ordering::Relaxed) || sh.limit_reached.load(Ordering::Relaxed))
        {
            break;
        }
        match item {
            Ok(()) => {
                unit.records += 1;
                if flow.record.log_status != LogStatus::Ok {
                    unit.no_data += 1;
                }
                mat.set_format(reader.format());
                if let Some(f) = &plan.filter {
                    mat.fill(&flow, &plan.filter_cols, &mut vals);
                    if !f.test(&vals)? {
                        continue;
                    }
                }
                mat.fill(&flow, &plan.rest_cols, &mut vals);
                if !sink.push(&vals)? {
                    break;
                }
            }
            Err(ReadError::Io(source)) => {
                return Err(QueryError::Input(
                    sumun_flows_tools::input::InputError::Read {
                        path: name.to_string(),
                        source,
                    },
                ))
            }
            Err(e) => {
                unit.bad += 1;
                if unit.first_bad.len() < KEEP_BAD {
                    let (line, msg) = split_read_error(&e);
                    unit.first_bad.push((line, msg));
                }
                if sh.opts.strict {
                    sh.stop.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
    Ok(reader)
}

fn split_read_error(e: &ReadError) -> (u64, String) {
    match e {
        ReadError::Parse { line, source } => (*line as u64, source.to_string()),
        ReadError::Header { line, source } => (*line as u64, source.to_string()),
        ReadError::NotUtf8 { line } => (*line as u64, "not valid UTF-8".into()),
        ReadError::TooLong { line } => (
            *line as u64,
            format!("longer than {} bytes", sumun_flows::MAX_LINE),
        ),
        ReadError::Io(e) => (0, e.to_string()),
    }
}
