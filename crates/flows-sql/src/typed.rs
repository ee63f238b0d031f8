//! Aggregation over fixed-width keys: GROUP BY addresses, integers, timestamps, dates, booleans
//! and doubles (not strings) runs here instead of on [`Value`] keys.
//!
//! A group is one slot of an open-addressing table of `u64` words: the hash, the key tags and
//! the group's number, two words per key, then the aggregates' states inline (counts, 128-bit
//! sums, integer min/max). Finding a group and updating it touch one region of memory, where the
//! [`Value`] path touches a hash table, a key array and a state array. Aggregates without an
//! inline state (avg, arbitrary, max_by...) keep an [`AggState`] per group beside the table;
//! `count(DISTINCT x)` keeps a set of (group, x) pairs per partition, counted at the end.
//!
//! Like the [`Value`] path, each thread's table is split into partitions by the top bits of the
//! hash, and the threads' tables are merged partition by partition in parallel.

use crate::agg::{AggFunc, AggSpec, AggState};
use crate::error::EvalError;
use crate::exec::Fx;
use crate::expr::BExpr;
use crate::value::{Type, Value};
use std::hash::Hasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Partitions per thread table (top bits of the hash).
pub const PARTS: usize = 16;
/// At most this many keys (their tags share half a word, four bits each).
const MAX_KEYS: usize = 8;
/// Rows looked up together: their slots are touched first, so that the cache misses of a batch
/// overlap instead of following one another.
const BATCH: usize = 16;

const T_NULL: u64 = 0;
const T_INT: u64 = 1;
const T_TS: u64 = 2;
const T_DATE: u64 = 3;
const T_V4: u64 = 4;
const T_V6: u64 = 5;
const T_BOOL: u64 = 6;
const T_INTERVAL: u64 = 7;
const T_FLOAT: u64 = 8;

/// A value as (tag, low word, high word); `None` for a string (no fixed width).
fn encode(v: &Value) -> Option<(u64, u64, u64)> {
    Some(match v {
        Value::Null => (T_NULL, 0, 0),
        Value::Int(n) => (T_INT, *n as u64, 0),
        Value::Timestamp(n) => (T_TS, *n as u64, 0),
        Value::Date(n) => (T_DATE, *n as u64, 0),
        Value::Interval(n) => (T_INTERVAL, *n as u64, 0),
        Value::Bool(b) => (T_BOOL, u64::from(*b), 0),
        Value::Float(f) => {
            // -0.0 groups with 0.0, and every NaN with every other.
            let bits = if *f == 0.0 {
                0
            } else if f.is_nan() {
                f64::NAN.to_bits()
            } else {
                f.to_bits()
            };
            (T_FLOAT, bits, 0)
        }
        Value::Ip(IpAddr::V4(a)) => (T_V4, u64::from(u32::from(*a)), 0),
        Value::Ip(IpAddr::V6(a)) => {
            let n = u128::from(*a);
            (T_V6, n as u64, (n >> 64) as u64)
        }
        Value::Str(_) => return None,
    })
}

fn decode(tag: u64, lo: u64, hi: u64) -> Value {
    match tag {
        T_INT => Value::Int(lo as i64),
        T_TS => Value::Timestamp(lo as i64),
        T_DATE => Value::Date(lo as i64),
        T_INTERVAL => Value::Interval(lo as i64),
        T_BOOL => Value::Bool(lo != 0),
        T_FLOAT => Value::Float(f64::from_bits(lo)),
        T_V4 => Value::Ip(IpAddr::V4(Ipv4Addr::from(lo as u32))),
        T_V6 => Value::Ip(IpAddr::V6(Ipv6Addr::from(
            (u128::from(hi) << 64) | u128::from(lo),
        ))),
        _ => Value::Null,
    }
}

fn fixed_width(t: Type) -> bool {
    !matches!(t, Type::Str | Type::Unknown)
}

/// How one aggregate keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// count(*), count(x), count_if(c): one word.
    Count,
    /// sum of bigints: a 128-bit sum in two words, the high one shifted left by one with
    /// "a value was seen" in its low bit (127 bits of sum: no sum of 2^63 bigints overflows).
    Sum,
    /// min or max of a bigint, timestamp, date or interval: the value, and whether one was seen.
    Min,
    Max,
    /// count(DISTINCT x), approx_distinct(x) with x of fixed width: pairs beside the table, no
    /// words.
    Distinct(usize),
    /// An [`AggState`] beside the table, no words.
    Other(usize),
}

impl Kind {
    /// Words of state in a slot.
    fn words(self) -> usize {
        match self {
            Kind::Count => 1,
            Kind::Sum | Kind::Min | Kind::Max => 2,
            Kind::Distinct(_) | Kind::Other(_) => 0,
        }
    }

    /// Words of a row's input in a batch.
    fn input_words(self) -> usize {
        match self {
            Kind::Count => 1,
            Kind::Sum | Kind::Min | Kind::Max => 2,
            Kind::Distinct(_) => 3,
            Kind::Other(_) => 0,
        }
    }
}

/// The typed layout of an aggregation, when it has one.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Per key: whether it takes two words (an address) or one.
    wide: Vec<bool>,
    /// Key words.
    kw: usize,
    /// Per aggregate: how, where in a slot, where in a batch entry.
    kinds: Vec<(Kind, usize, usize)>,
    /// Where the group's number is (when distinct or other aggregates need it).
    gid_at: Option<usize>,
    /// Words per slot, per batch entry.
    stride: usize,
    entry: usize,
    distinct: usize,
    other: usize,
}

impl Layout {
    /// The layout for `aggs` grouped by keys of `key_types`, or `None` when a key is a string
    /// (or there are no keys, or too many).
    pub fn new(key_types: &[Type], aggs: &[AggSpec]) -> Option<Layout> {
        if key_types.is_empty()
            || key_types.len() > MAX_KEYS
            || !key_types.iter().all(|&t| fixed_width(t))
        {
            return None;
        }
        let wide: Vec<bool> = key_types.iter().map(|&t| t == Type::Ip).collect();
        let kw = wide.iter().map(|&w| if w { 2 } else { 1 }).sum::<usize>();
        let (mut distinct, mut other) = (0, 0);
        let mut kinds = Vec::with_capacity(aggs.len());
        for a in aggs {
            let int_like = matches!(
                a.ty,
                Type::Int | Type::Timestamp | Type::Date | Type::Interval
            );
            let kind = if a.distinct || a.func == AggFunc::ApproxDistinct {
                if matches!(a.func, AggFunc::Count | AggFunc::ApproxDistinct)
                    && a.args.len() == 1
                    && fixed_width(a.arg_ty)
                {
                    distinct += 1;
                    Kind::Distinct(distinct - 1)
                } else {
                    other += 1;
                    Kind::Other(other - 1)
                }
            } else {
                match a.func {
                    AggFunc::CountStar | AggFunc::Count | AggFunc::CountIf => Kind::Count,
                    AggFunc::Sum if a.ty == Type::Int && a.arg_ty == Type::Int => Kind::Sum,
                    AggFunc::Min if int_like && a.arg_ty == a.ty => Kind::Min,
                    AggFunc::Max if int_like && a.arg_ty == a.ty => Kind::Max,
                    _ => {
                        other += 1;
                        Kind::Other(other - 1)
                    }
                }
            };
            kinds.push((kind, 0, 0));
        }
        // A slot: the hash's high half and the key tags, the key words, the group's number if
        // needed, the states. A batch entry: the hash, the slot's first 1 + kw words, inputs.
        let gid_at = (distinct + other > 0).then_some(1 + kw);
        let mut at = 1 + kw + usize::from(gid_at.is_some());
        let mut input = 2 + kw;
        for (kind, s, i) in &mut kinds {
            *s = at;
            *i = input;
            at += kind.words();
            input += kind.input_words();
        }
        Some(Layout {
            wide,
            kw,
            kinds,
            gid_at,
            stride: at,
            entry: input,
            distinct,
            other,
        })
    }
}

/// An open-addressing table of fixed-size slots of words (linear probing); word 0 of a slot is
/// never 0 in a used slot.
#[derive(Default)]
struct Slots {
    words: Vec<u64>,
    stride: usize,
    len: usize,
}

impl Slots {
    fn with(stride: usize, cap: usize) -> Slots {
        // Zeroes written, not `vec![0; n]`: calloc's pages start as the shared zero page, and
        // the first write after a probe has read one costs a copy-on-write fault and a TLB
        // flush on every core (most of the time of a million-group aggregation).
        #[allow(clippy::slow_vector_initialization)]
        let mut words = Vec::with_capacity(stride * cap);
        words.resize(stride * cap, 0u64);
        std::hint::black_box(&mut words);
        Slots {
            words,
            stride,
            len: 0,
        }
    }

    fn cap(&self) -> usize {
        self.words.len() / self.stride.max(1)
    }

    /// Reads the slot where a probe for `h` starts (so that it is in the cache when the probe
    /// comes).
    fn touch(&self, h: u64) -> u64 {
        let i = (h as usize) & (self.cap() - 1);
        self.words.get(i * self.stride).copied().unwrap_or(0)
    }

    /// The slot whose first words are `ident`, or the free slot where it goes; true when found.
    fn find(&self, h: u64, ident: &[u64]) -> (usize, bool) {
        let mask = self.cap() - 1;
        let mut i = (h as usize) & mask;
        loop {
            let at = i * self.stride;
            let Some(slot) = self.words.get(at..at + ident.len()) else {
                return (i, false);
            };
            if slot[0] == 0 {
                return (i, false);
            }
            if slot == ident {
                return (i, true);
            }
            i = (i + 1) & mask;
        }
    }

    /// Room for one more slot: doubles the table when it is 70% full. `hash` gives a used
    /// slot's hash back.
    fn reserve(&mut self, hash: &dyn Fn(&[u64]) -> u64) {
        let cap = self.cap();
        if (self.len + 1) * 10 <= cap * 7 {
            return;
        }
        let old = std::mem::replace(self, Slots::with(self.stride, (cap * 2).max(64)));
        self.len = old.len;
        let mask = self.cap() - 1;
        for slot in old.words.chunks_exact(old.stride) {
            if slot[0] == 0 {
                continue;
            }
            let mut i = (hash(slot) as usize) & mask;
            loop {
                let at = i * self.stride;
                if self.words[at] == 0 {
                    self.words[at..at + self.stride].copy_from_slice(slot);
                    break;
                }
                i = (i + 1) & mask;
            }
        }
    }

    fn slot_mut(&mut self, i: usize) -> &mut [u64] {
        let at = i * self.stride;
        &mut self.words[at..at + self.stride]
    }

    fn iter(&self) -> impl Iterator<Item = &[u64]> {
        self.words
            .chunks_exact(self.stride.max(1))
            .filter(|s| s[0] != 0)
    }
}

fn hash_words(words: &[u64]) -> u64 {
    let mut h = Fx::default();
    for &w in words {
        h.write_u64(w);
    }
    h.finish()
}

/// A slot's word 0: the hash's high half (never 0) and the key tags.
fn word0(h: u64, tags: u64) -> u64 {
    ((h >> 32) | 1) << 32 | tags
}

/// The hash of a group's slot (its tags and key words).
fn group_hash(kw: usize) -> impl Fn(&[u64]) -> u64 {
    move |slot: &[u64]| {
        let mut h = Fx::default();
        h.write_u64(slot[0] & 0xffff_ffff);
        for &w in &slot[1..=kw] {
            h.write_u64(w);
        }
        h.finish()
    }
}

/// One partition of a thread's groups.
struct Part {
    slots: Slots,
    groups: u32,
    /// Per distinct aggregate: the (group, value) pairs seen, as slots of three words
    /// (group << 8 | 0x80 | tag, low, high).
    pairs: Vec<Slots>,
    /// `other` states per group, group after group.
    other: Vec<AggState>,
}

impl Part {
    fn new(l: &Layout) -> Part {
        Part {
            slots: Slots::with(l.stride, 256),
            groups: 0,
            pairs: (0..l.distinct).map(|_| Slots::with(3, 64)).collect(),
            other: Vec::new(),
        }
    }

    /// The slot of the group `ident` (word 0, key words; hash `h`), made with fresh states if
    /// new; true if new.
    fn group(
        &mut self,
        l: &Layout,
        aggs: &[AggSpec],
        h: u64,
        ident: &[u64],
    ) -> Result<(usize, bool), EvalError> {
        let (i, found) = self.slots.find(h, ident);
        if found {
            return Ok((i, false));
        }
        let i = if (self.slots.len + 1) * 10 > self.slots.cap() * 7 {
            self.slots.reserve(&group_hash(l.kw));
            self.slots.find(h, ident).0
        } else {
            i
        };
        let gid = self.groups;
        self.groups = gid
            .checked_add(1)
            .ok_or_else(|| EvalError("too many groups".into()))?;
        self.slots.len += 1;
        let slot = self.slots.slot_mut(i);
        slot[..ident.len()].copy_from_slice(ident);
        for w in &mut slot[ident.len()..] {
            *w = 0;
        }
        if let Some(at) = l.gid_at {
            slot[at] = u64::from(gid);
        }
        for ((k, _, _), a) in l.kinds.iter().zip(aggs) {
            if let Kind::Other(_) = k {
                self.other.push(a.init());
            }
        }
        Ok((i, true))
    }

    /// Records value `(tag, low, high)` for distinct aggregate `d` of group `gid`.
    fn pair(&mut self, d: usize, gid: u64, tag: u64, lo: u64, hi: u64) {
        let Some(set) = self.pairs.get_mut(d) else {
            return;
        };
        let ident = [gid << 8 | 0x80 | tag, lo, hi];
        let h = hash_words(&ident);
        if set.find(h, &ident).1 {
            return;
        }
        set.reserve(&|s: &[u64]| hash_words(s));
        let (i, _) = set.find(h, &ident);
        set.len += 1;
        set.slot_mut(i).copy_from_slice(&ident);
    }
}

/// A thread's groups.
pub struct Table {
    layout: Layout,
    parts: Vec<Part>,
    /// Rows waiting to be looked up, `layout.entry` words each.
    batch: Vec<u64>,
}

impl Table {
    pub fn new(layout: Layout) -> Table {
        Table {
            parts: (0..PARTS).map(|_| Part::new(&layout)).collect(),
            batch: Vec::with_capacity(BATCH * layout.entry),
            layout,
        }
    }

    /// Adds one row; `Ok(false)` when a key turned out not to have the width its type promised
    /// (the query must then run on the [`Value`] path).
    pub fn update(
        &mut self,
        keys: &[BExpr],
        aggs: &[AggSpec],
        row: &[Value],
    ) -> Result<bool, EvalError> {
        let l = &self.layout;
        let b = &mut self.batch;
        let start = b.len();
        b.push(0);
        b.push(0);
        let mut tags = 0u64;
        for (n, (k, &wide)) in keys.iter().zip(&l.wide).enumerate() {
            let v = k.eval_ref(row)?;
            let Some((tag, lo, hi)) = encode(&v) else {
                return Ok(false);
            };
            if !wide && tag == T_V6 {
                return Ok(false);
            }
            tags |= tag << (4 * n);
            b.push(lo);
            if wide {
                b.push(hi);
            }
        }
        for ((kind, _, _), a) in l.kinds.iter().zip(aggs) {
            let arg = match a.args.first() {
                Some(e) if *kind != Kind::Count || a.func != AggFunc::CountStar => {
                    Some(e.eval_ref(row)?)
                }
                _ => None,
            };
            let arg = arg.as_deref();
            match kind {
                Kind::Count => b.push(u64::from(match a.func {
                    AggFunc::CountStar => true,
                    AggFunc::CountIf => matches!(arg, Some(Value::Bool(true))),
                    _ => arg.is_some_and(|v| !v.is_null()),
                })),
                Kind::Sum => match arg {
                    Some(Value::Int(x)) => b.extend([1, *x as u64]),
                    _ => b.extend([0, 0]),
                },
                Kind::Min | Kind::Max => match arg.and_then(int_of) {
                    Some(x) => b.extend([1, x as u64]),
                    None => b.extend([0, 0]),
                },
                Kind::Distinct(_) => match arg {
                    Some(v) if !v.is_null() => {
                        let Some((tag, lo, hi)) = encode(v) else {
                            return Ok(false);
                        };
                        b.extend([tag, lo, hi]);
                    }
                    _ => b.extend([u64::MAX, 0, 0]),
                },
                Kind::Other(_) => {}
            }
        }
        let h = {
            let mut h = Fx::default();
            h.write_u64(tags);
            for &w in &b[start + 2..start + 2 + l.kw] {
                h.write_u64(w);
            }
            h.finish()
        };
        b[start] = h;
        b[start + 1] = word0(h, tags);
        if l.other > 0 {
            // The other aggregates read the row: no batching.
            let Some((p, i)) = self.flush(aggs)? else {
                return Ok(true);
            };
            let (l, part) = (&self.layout, &mut self.parts[p]);
            let gid = l.gid_at.map_or(0, |at| part.slots.slot_mut(i)[at]) as usize;
            for ((kind, _, _), a) in l.kinds.iter().zip(aggs) {
                if let Kind::Other(o) = kind {
                    if let Some(s) = part.other.get_mut(gid * l.other + o) {
                        a.update(s, row)?;
                    }
                }
            }
        } else if self.batch.len() >= BATCH * self.layout.entry {
            self.flush(aggs)?;
        }
        Ok(true)
    }

    /// Looks up and updates the rows of the batch; returns the partition and slot of the last.
    pub fn flush(&mut self, aggs: &[AggSpec]) -> Result<Option<(usize, usize)>, EvalError> {
        let Table {
            layout: l,
            parts,
            batch,
        } = self;
        let part_of = |h: u64| (h >> 60) as usize % PARTS;
        let mut touched = 0u64;
        for e in batch.chunks_exact(l.entry) {
            touched ^= parts[part_of(e[0])].slots.touch(e[0]);
        }
        std::hint::black_box(touched);
        let mut last = None;
        for e in batch.chunks_exact(l.entry) {
            let h = e[0];
            let p = part_of(h);
            let part = &mut parts[p];
            let (i, _) = part.group(l, aggs, h, &e[1..2 + l.kw])?;
            last = Some((p, i));
            let slot = part.slots.slot_mut(i);
            let gid = l.gid_at.map_or(0, |at| slot[at]);
            for (kind, at, input) in &l.kinds {
                let (at, input) = (*at, *input);
                match *kind {
                    Kind::Count => slot[at] += e[input],
                    Kind::Sum => {
                        if e[input] != 0 {
                            add_sum(&mut slot[at..at + 2], i128::from(e[input + 1] as i64), true);
                        }
                    }
                    Kind::Min | Kind::Max => {
                        if e[input] != 0 {
                            fold_best(
                                &mut slot[at..at + 2],
                                e[input + 1] as i64,
                                *kind == Kind::Max,
                            );
                        }
                    }
                    Kind::Distinct(_) | Kind::Other(_) => {}
                }
            }
            for (kind, _, input) in &l.kinds {
                if let Kind::Distinct(d) = *kind {
                    if e[*input] != u64::MAX {
                        part.pair(d, gid, e[*input], e[input + 1], e[input + 2]);
                    }
                }
            }
        }
        batch.clear();
        Ok(last)
    }
}

fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) | Value::Timestamp(n) | Value::Date(n) | Value::Interval(n) => Some(*n),
        _ => None,
    }
}

fn sum_of(w: &[u64]) -> i128 {
    (i128::from(w[1] as i64 >> 1) << 64) | i128::from(w[0])
}

fn add_sum(w: &mut [u64], x: i128, seen: bool) {
    let s = sum_of(w).wrapping_add(x);
    w[0] = s as u64;
    w[1] = (((s >> 64) as i64) << 1) as u64 | (w[1] & 1) | u64::from(seen);
}

fn fold_best(w: &mut [u64], x: i64, max: bool) {
    let cur = w[0] as i64;
    if w[1] == 0 || (max && x > cur) || (!max && x < cur) {
        w[0] = x as u64;
        w[1] = 1;
    }
}

/// Merges the threads' tables partition by partition (in parallel, at most `threads` at a
/// time) and returns every group as a row: keys, then aggregates.
pub fn merge(
    mut tables: Vec<Table>,
    aggs: &[AggSpec],
    threads: usize,
) -> Result<Vec<Vec<Value>>, EvalError> {
    let Some(layout) = tables.first().map(|t| t.layout.clone()) else {
        return Ok(Vec::new());
    };
    for t in &mut tables {
        t.flush(aggs)?;
    }
    let mut by_part: Vec<Vec<Part>> = (0..PARTS).map(|_| Vec::new()).collect();
    for t in tables {
        for (i, p) in t.parts.into_iter().enumerate() {
            if let Some(v) = by_part.get_mut(i) {
                v.push(p);
            }
        }
    }
    let queue = std::sync::Mutex::new(by_part.into_iter().enumerate().collect::<Vec<_>>());
    type Done = Vec<(usize, Result<Vec<Vec<Value>>, EvalError>)>;
    let done: std::sync::Mutex<Done> = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, PARTS) {
            s.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let Some((i, parts)) = next else { break };
                let r = merge_part(&layout, aggs, parts);
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

fn merge_part(
    l: &Layout,
    aggs: &[AggSpec],
    parts: Vec<Part>,
) -> Result<Vec<Vec<Value>>, EvalError> {
    let mut parts = parts.into_iter();
    let Some(mut base) = parts.next() else {
        return Ok(Vec::new());
    };
    let ident_len = 1 + l.kw;
    let hash = group_hash(l.kw);
    for mut other in parts {
        // Their group numbers -> ours.
        let mut map = vec![0u32; other.groups as usize];
        for slot in other.slots.words.chunks_exact(l.stride) {
            if slot[0] == 0 {
                continue;
            }
            let (i, fresh) = base.group(l, aggs, hash(slot), &slot[..ident_len])?;
            let mine = base.slots.slot_mut(i);
            let (ogid, gid) = match l.gid_at {
                Some(at) => (slot[at] as usize, mine[at] as usize),
                None => (0, 0),
            };
            if let Some(m) = map.get_mut(ogid) {
                *m = gid as u32;
            }
            for ((kind, at, _), a) in l.kinds.iter().zip(aggs) {
                let at = *at;
                match *kind {
                    Kind::Count => mine[at] += slot[at],
                    Kind::Sum => add_sum(
                        &mut mine[at..at + 2],
                        sum_of(&slot[at..]),
                        slot[at + 1] & 1 != 0,
                    ),
                    Kind::Min | Kind::Max => {
                        if slot[at + 1] != 0 {
                            fold_best(&mut mine[at..at + 2], slot[at] as i64, *kind == Kind::Max);
                        }
                    }
                    Kind::Distinct(_) => {}
                    Kind::Other(o) => {
                        let theirs = other
                            .other
                            .get_mut(ogid * l.other + o)
                            .map(|s| std::mem::replace(s, AggState::Count(0)));
                        if let (Some(s), Some(t)) = (base.other.get_mut(gid * l.other + o), theirs)
                        {
                            if fresh {
                                *s = t;
                            } else {
                                a.merge(s, t);
                            }
                        }
                    }
                }
            }
        }
        for (d, set) in other.pairs.iter().enumerate() {
            for p in set.iter() {
                let gid = map.get((p[0] >> 8) as usize).copied().unwrap_or(0);
                base.pair(d, u64::from(gid), p[0] & 0x7f, p[1], p[2]);
            }
        }
    }

    // Distinct counts per group.
    let mut counts: Vec<Vec<i64>> = Vec::with_capacity(l.distinct);
    for set in &base.pairs {
        let mut c = vec![0i64; base.groups as usize];
        for p in set.iter() {
            if let Some(n) = c.get_mut((p[0] >> 8) as usize) {
                *n += 1;
            }
        }
        counts.push(c);
    }
    let mut rows = Vec::with_capacity(base.groups as usize);
    let mut other = std::mem::take(&mut base.other);
    for slot in base.slots.iter() {
        let gid = l.gid_at.map_or(0, |at| slot[at] as usize);
        let mut row = Vec::with_capacity(l.wide.len() + aggs.len());
        let mut w = 1;
        for (k, &wide) in l.wide.iter().enumerate() {
            let tag = (slot[0] >> (4 * k)) & 0xf;
            let hi = if wide { slot[w + 1] } else { 0 };
            row.push(decode(tag, slot[w], hi));
            w += if wide { 2 } else { 1 };
        }
        for ((kind, at, _), a) in l.kinds.iter().zip(aggs) {
            let at = *at;
            row.push(match *kind {
                Kind::Count => Value::Int(slot[at] as i64),
                Kind::Sum if slot[at + 1] & 1 == 0 => Value::Null,
                Kind::Sum => Value::Int(
                    i64::try_from(sum_of(&slot[at..]))
                        .map_err(|_| EvalError("sum: bigint overflow".into()))?,
                ),
                Kind::Min | Kind::Max if slot[at + 1] == 0 => Value::Null,
                Kind::Min | Kind::Max => {
                    let n = slot[at] as i64;
                    match a.ty {
                        Type::Timestamp => Value::Timestamp(n),
                        Type::Date => Value::Date(n),
                        Type::Interval => Value::Interval(n),
                        _ => Value::Int(n),
                    }
                }
                Kind::Distinct(d) => {
                    Value::Int(counts.get(d).and_then(|c| c.get(gid)).copied().unwrap_or(0))
                }
                Kind::Other(o) => {
                    let s = other
                        .get_mut(gid * l.other + o)
                        .map(|s| std::mem::replace(s, AggState::Count(0)))
                        .unwrap_or_else(|| a.init());
                    a.finish(s)?
                }
            });
        }
        rows.push(row);
    }
    Ok(rows)
}
