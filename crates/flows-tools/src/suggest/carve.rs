//! Network ACL covers with deny rules: the fewest never-seen addresses admitted by at most K
//! ordered allow and deny rules that admit every observed address.
//!
//! A network ACL evaluates its rules in order and the first match decides; rules sorted from
//! the longest prefix to the shortest make an address's verdict that of the most specific rule
//! containing it, and the ACL's final `*` rule denies what no rule matches. So a rule set is a
//! labelling of blocks with allow or deny, an address is admitted when its closest labelled
//! block says allow, and a deny inside an allow carves a hole out of it: a /24 less one address
//! is an allow and a deny, where allow rules alone need eight (or admit the address).
//!
//! The optimum is a dynamic program over the compressed binary trie of the observed addresses,
//! per node v, state s (what v's block inherits: allowed or denied) and budget k:
//!
//! - `T(v, s, k) = min(G(v, s, k), G(v, !s, k - 1))` — v's block is labelled (one rule) or not;
//! - `G(v, s, k)` splits k between the edges to v's two children;
//! - an edge from v (prefix length p) to a child c (length q) passes q - p - 1 blocks with no
//!   observed address, of sizes 2^(w-p-2), ..., 2^(w-q). Entering allowed, it may deny the j
//!   largest of them (j rules), or deny the whole half of v that holds c (one rule, all of them
//!   at once, c then inherits denied); entering denied it admits nothing.
//!
//! Nothing else is worth a rule: a label that does not change the inherited verdict is wasted,
//! an allow between v and c admits more than allowing c's block, and a deny there removes less
//! than denying the half. Tables are cut at min(K, leaves below + 1) entries (enough rules to
//! admit exactly the observed addresses), which keeps the work O(n·K) per edge option.

use super::cover::{Family, Prefix};

const INF: u128 = u128::MAX;
const A: usize = 0; // allowed
const D: usize = 1; // denied
/// Edge option: deny the half holding the child (else: deny the j largest empty blocks).
const SWITCH: u8 = u8::MAX;
/// The largest budget solved for (decisions keep budgets in a byte).
pub const MAX_K: usize = 250;

#[derive(Debug, Clone, Copy)]
struct Node {
    lo: u32,
    plen: u8,
    left: u32,
    right: u32,
    /// Entries per state in the tables: budgets 0..cap.
    cap: u16,
    /// Where this node's decisions start: state A's `cap` entries, then state D's.
    dec_off: u32,
}

const LEAF: u32 = u32::MAX;

/// A decision for `T(v, s, k)`: whether v's block is labelled (then the rest is the decision of
/// `G(v, !s, k - 1)`, found at that entry), the left edge's budget, each edge's option.
#[derive(Debug, Clone, Copy, Default)]
struct Dec {
    label: bool,
    /// G's split and edge options for this (s, k).
    kl: u8,
    opt_l: u8,
    opt_r: u8,
}

/// The solved tables of one address set.
#[derive(Debug, Clone)]
pub struct Carve {
    width: u8,
    addrs: Vec<u128>,
    nodes: Vec<Node>,
    decs: Vec<Dec>,
    root: u32,
    /// `curve[k]`: least over-permission with at most k rules (INF: impossible).
    curve: Vec<u128>,
}

/// Sum of the sizes of the empty blocks an edge from length p to length q passes, after the j
/// largest: 2^(w-p-1-j) - 2^(w-q).
fn rest(width: u8, p: u8, q: u8, j: usize) -> u128 {
    let hi = u32::from(width - p) - 1 - j as u32;
    let lo = u32::from(width - q);
    pow2(hi).saturating_sub(pow2(lo))
}

fn pow2(bits: u32) -> u128 {
    if bits >= 128 {
        INF
    } else {
        1u128 << bits
    }
}

fn at(t: &[u128], k: usize) -> u128 {
    match t.get(k) {
        Some(&v) => v,
        None => t.last().copied().unwrap_or(INF),
    }
}

fn mask(addr: u128, width: u8, plen: u8) -> u128 {
    let host = u32::from(width - plen);
    if host >= 128 {
        0
    } else {
        addr & !((1u128 << host) - 1)
    }
}

impl Carve {
    /// Solves for every budget up to `kmax` (capped at [`MAX_K`]). `addrs` must be sorted,
    /// distinct and fit in `family`'s width.
    pub fn solve(addrs: Vec<u128>, family: Family, kmax: usize) -> Carve {
        let kmax = kmax.clamp(1, MAX_K);
        let mut c = Carve {
            width: family.width(),
            addrs,
            nodes: Vec::new(),
            decs: Vec::new(),
            root: 0,
            curve: Vec::new(),
        };
        if c.addrs.is_empty() {
            c.curve = vec![0];
            return c;
        }
        let n = c.addrs.len();
        let (root, t) = c.build(0, n, kmax);
        c.root = root;
        // The ACL's final rule denies: the root inherits denied.
        c.curve = (0..=kmax).map(|k| at(&t[D], k)).collect();
        c
    }

    /// Builds the node for `addrs[lo..hi]`; returns it and its tables `T(v, A, ·)`, `T(v, D, ·)`.
    fn build(&mut self, lo: usize, hi: usize, kmax: usize) -> (u32, [Vec<u128>; 2]) {
        let width = self.width;
        let id = self.nodes.len() as u32;
        let first = self.addrs[lo];
        if hi - lo == 1 {
            // One address: admitted if inherited allowed, else one allow rule.
            let cap = 2.min(kmax + 1);
            self.nodes.push(Node {
                lo: lo as u32,
                plen: width,
                left: LEAF,
                right: LEAF,
                cap: cap as u16,
                dec_off: self.decs.len() as u32,
            });
            let ta = vec![0; cap];
            let mut td = vec![INF; cap];
            let mut decs = vec![Dec::default(); 2 * cap];
            if cap > 1 {
                td[1] = 0;
                decs[cap + 1].label = true;
            }
            self.decs.extend_from_slice(&decs);
            return (id, [ta, td]);
        }
        let diff = first ^ self.addrs[hi - 1];
        let top = 127 - diff.leading_zeros() as u8;
        let plen = width - 1 - top;
        let split = lo + self.addrs[lo..hi].partition_point(|a| (a >> top) & 1 == 0);
        self.nodes.push(Node {
            lo: lo as u32,
            plen,
            left: LEAF,
            right: LEAF,
            cap: 0,
            dec_off: 0,
        });
        let (left, tl) = self.build(lo, split, kmax);
        let (right, tr) = self.build(split, hi, kmax);
        let ql = self.nodes[left as usize].plen;
        let qr = self.nodes[right as usize].plen;
        let cap = (hi - lo + 2).min(kmax + 1);

        // Edge tables E(s, k) and their options, for k < cap.
        let edge = |t: &[Vec<u128>; 2], q: u8| -> [(Vec<u128>, Vec<u8>); 2] {
            let m = usize::from(q - plen - 1);
            let mut ea = vec![INF; cap];
            let mut oa = vec![0u8; cap];
            for k in 0..cap {
                for j in 0..=m.min(k) {
                    let c = rest(width, plen, q, j).saturating_add(at(&t[A], k - j));
                    if c < ea[k] {
                        ea[k] = c;
                        oa[k] = j as u8;
                    }
                }
                if k >= 1 {
                    let c = at(&t[D], k - 1);
                    if c < ea[k] {
                        ea[k] = c;
                        oa[k] = SWITCH;
                    }
                }
            }
            let ed: Vec<u128> = (0..cap).map(|k| at(&t[D], k)).collect();
            [(ea, oa), (ed, vec![0; cap])]
        };
        let el = edge(&tl, ql);
        let er = edge(&tr, qr);
        // G(s, k): the best split of k between the edges.
        let mut g = [vec![INF; cap], vec![INF; cap]];
        let mut gd = [vec![Dec::default(); cap], vec![Dec::default(); cap]];
        for s in [A, D] {
            let (ref l, ref ol) = el[s];
            let (ref r, ref or) = er[s];
            for k in 0..cap {
                for a in 0..=k {
                    let c = l[a].saturating_add(r[k - a]);
                    if c < g[s][k] {
                        g[s][k] = c;
                        gd[s][k] = Dec {
                            label: false,
                            kl: a as u8,
                            opt_l: ol[a],
                            opt_r: or[k - a],
                        };
                    }
                }
            }
        }
        // T(s, k) = min(G(s, k), G(!s, k - 1)).
        let mut t = [g[A].clone(), g[D].clone()];
        let mut decs = Vec::with_capacity(2 * cap);
        for s in [A, D] {
            for k in 0..cap {
                let mut d = gd[s][k];
                if k >= 1 && g[1 - s][k - 1] < t[s][k] {
                    t[s][k] = g[1 - s][k - 1];
                    d.label = true;
                }
                decs.push(d);
            }
        }
        let node = &mut self.nodes[id as usize];
        node.left = left;
        node.right = right;
        node.cap = cap as u16;
        node.dec_off = self.decs.len() as u32;
        self.decs.extend_from_slice(&decs);
        (id, t)
    }

    /// The largest budget solved for.
    pub fn kmax(&self) -> usize {
        self.curve.len().saturating_sub(1)
    }

    pub fn observed(&self) -> usize {
        self.addrs.len()
    }

    /// Never-observed addresses admitted with at most `k` rules (`u128::MAX` when `k` rules
    /// cannot admit every observed address).
    pub fn over(&self, k: usize) -> u128 {
        at(&self.curve, k)
    }

    /// The fewest rules that admit exactly the observed addresses, if within the budgets
    /// solved for.
    pub fn exact(&self) -> Option<usize> {
        self.curve.iter().position(|&c| c == 0)
    }

    /// The rules of the best plan with at most `k` rules: (block, allow), most specific first
    /// (the order a network ACL must number them in).
    pub fn rules(&self, k: usize) -> Vec<(Prefix, bool)> {
        let mut out = Vec::new();
        if self.addrs.is_empty() || self.over(k) == INF {
            return out;
        }
        let w = self.width;
        let mut stack = vec![(self.root, D, k.min(self.kmax()))];
        while let Some((id, mut s, k)) = stack.pop() {
            let node = self.nodes[id as usize];
            let cap = usize::from(node.cap);
            let mut k = k.min(cap.saturating_sub(1));
            let addr = self.addrs[node.lo as usize];
            let mut d = self.decs[node.dec_off as usize + s * cap + k];
            if d.label {
                s = 1 - s;
                k -= 1;
                out.push(((mask(addr, w, node.plen), node.plen), s == A));
                d = self.decs[node.dec_off as usize + s * cap + k];
            }
            if node.left == LEAF {
                continue;
            }
            let kl = usize::from(d.kl);
            for (child, kc, opt) in [(node.left, kl, d.opt_l), (node.right, k - kl, d.opt_r)] {
                let cn = self.nodes[child as usize];
                let caddr = self.addrs[cn.lo as usize];
                if s == D {
                    stack.push((child, D, kc));
                } else if opt == SWITCH {
                    let half = node.plen + 1;
                    out.push(((mask(caddr, w, half), half), false));
                    stack.push((child, D, kc - 1));
                } else {
                    let j = usize::from(opt);
                    for l in node.plen + 2..node.plen + 2 + j as u8 {
                        // The block at length l beside the child's path.
                        let bit = pow2(u32::from(w - l));
                        out.push(((mask(caddr, w, l) ^ bit, l), false));
                    }
                    stack.push((child, A, kc - j));
                }
            }
        }
        out.sort_by(|a, b| b.0 .1.cmp(&a.0 .1).then(a.0 .0.cmp(&b.0 .0)));
        out
    }
}

/// Whether ordered `rules` (most specific first) admit `addr`: the first block holding it
/// decides; none denies.
pub fn admits(rules: &[(Prefix, bool)], width: u8, addr: u128) -> bool {
    rules
        .iter()
        .find(|((base, plen), _)| mask(addr, width, *plen) == *base)
        .is_some_and(|(_, allow)| *allow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suggest::cover::Cover;

    /// Every (allow/deny/none) labelling of the blocks of a 4-bit universe with at most 3
    /// labels: the least over-permission admitting all of `set`, per number of labels used.
    fn brute(set: &[u128]) -> [u128; 4] {
        let w = 4u8;
        let mut blocks = Vec::new();
        for plen in 0..=w {
            for i in 0..(1u128 << plen) {
                blocks.push((i << (w - plen), plen));
            }
        }
        let mut best = [INF; 4];
        fn go(
            i: usize,
            blocks: &[Prefix],
            chosen: &mut Vec<(Prefix, bool)>,
            set: &[u128],
            best: &mut [u128; 4],
        ) {
            if i == blocks.len() {
                let mut rules = chosen.clone();
                rules.sort_by_key(|r| std::cmp::Reverse(r.0 .1));
                if set.iter().all(|&a| admits(&rules, 4, a)) {
                    let over = (0..16u128)
                        .filter(|a| admits(&rules, 4, *a) && !set.contains(a))
                        .count() as u128;
                    for b in &mut best[rules.len()..] {
                        *b = (*b).min(over);
                    }
                }
                return;
            }
            go(i + 1, blocks, chosen, set, best);
            if chosen.len() < 3 {
                for allow in [true, false] {
                    chosen.push((blocks[i], allow));
                    go(i + 1, blocks, chosen, set, best);
                    chosen.pop();
                }
            }
        }
        go(0, &blocks, &mut Vec::new(), set, &mut best);
        best
    }

    fn check(rules: &[(Prefix, bool)], set: &[u128], w: u8) -> u128 {
        assert!(
            set.iter().all(|&a| admits(rules, w, a)),
            "{rules:?} {set:?}"
        );
        (0..(1u128 << w))
            .filter(|a| admits(rules, w, *a) && !set.contains(a))
            .count() as u128
    }

    #[test]
    fn a_block_less_a_hole_is_two_rules() {
        // 10.0.0.0/24 observed except 10.0.0.64/26: allow /24, deny the /26.
        let base = 0x0a00_0000u128;
        let addrs: Vec<u128> = (0..256)
            .filter(|i| !(64..128).contains(i))
            .map(|i| base + i)
            .collect();
        let c = Carve::solve(addrs.clone(), Family::V4, 20);
        assert_eq!(c.over(1), 64);
        assert_eq!(c.over(2), 0);
        assert_eq!(c.exact(), Some(2));
        // (allow .0/26 and .128/25 do as well here)
        assert_eq!(Cover::solve(addrs, Family::V4, 20).exact(), 2);
        // A hole that allow rules must work around: a /24 less one address is eight allow
        // rules, or an allow and a deny.
        let addrs: Vec<u128> = (0..256).filter(|&i| i != 77).map(|i| base + i).collect();
        let c = Carve::solve(addrs.clone(), Family::V4, 20);
        assert_eq!(c.exact(), Some(2));
        assert_eq!(
            c.rules(2),
            vec![((base + 77, 32), false), ((base, 24), true)]
        );
        assert_eq!(c.over(1), 1);
        assert_eq!(Cover::solve(addrs, Family::V4, 20).exact(), 8);
    }

    #[test]
    fn optimal_against_brute_force_on_a_4_bit_universe() {
        // Every subset of a 16-address universe with 1..=6 members drawn from a fixed seed,
        // and every budget 1..=3: the same optimum as exhaustive search, and the rules listed
        // achieve it within the budget.
        let mut rng = fastrand::Rng::with_seed(20);
        for _ in 0..60 {
            let n = rng.usize(1..=6);
            let mut set: Vec<u128> = (0..n).map(|_| rng.u128(0..16)).collect();
            set.sort_unstable();
            set.dedup();
            // A 4-bit universe, shifted into the IPv4 space's last bits.
            let c = Carve::solve(set.clone(), Family::V4, 3);
            let brute = brute(&set);
            for (k, &want) in brute.iter().enumerate().skip(1) {
                // Blocks above /28 only add never-seen addresses outside the 4-bit universe,
                // so the optimum within it is the optimum.
                assert_eq!(c.over(k), want, "{set:?} k={k}");
                let rules = c.rules(k);
                assert!(rules.len() <= k, "{rules:?}");
                let local: Vec<(Prefix, bool)> = rules
                    .iter()
                    .map(|&((b, p), a)| ((b, p.saturating_sub(28)), a))
                    .collect();
                assert!(rules.iter().all(|((_, p), _)| *p >= 28), "{rules:?}");
                assert_eq!(check(&local, &set, 4), want, "{set:?} k={k} {rules:?}");
                // Never worse than allow rules alone.
                let plain = Cover::solve(set.clone(), Family::V4, k);
                assert!(c.over(k) <= plain.over(k));
            }
        }
    }
}
