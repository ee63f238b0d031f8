//! The optimal cover of a set of addresses by at most K CIDR blocks.
//!
//! Every block that covers an observed address and is worth choosing is the smallest block
//! around some subtree of the binary trie of the observed addresses: its longest common prefix.
//! So the choice is an antichain of nodes of the compressed trie that covers every leaf, and
//! the best one for each K follows from the children's: `cost(v, 1)` is the size of v's block,
//! `cost(v, k) = min(size(v), min over a + b = k of cost(left, a) + cost(right, b))`. Curves are
//! cut at min(leaves below, K), which makes the whole computation O(n·K) (the usual bound for
//! tree knapsacks whose tables are capped by subtree size).
//!
//! Costs are counted in addresses (a /24 costs 256) and saturate at `u128::MAX` (only an IPv6
//! /0 reaches it).

/// One address family: the width of its addresses in bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn width(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// A block: the address with its host bits cleared, and the prefix length.
pub type Prefix = (u128, u8);

fn block_size(width: u8, plen: u8) -> u128 {
    let host_bits = u32::from(width - plen);
    if host_bits >= 128 {
        u128::MAX
    } else {
        1u128 << host_bits
    }
}

fn mask(addr: u128, width: u8, plen: u8) -> u128 {
    let host_bits = u32::from(width - plen);
    if host_bits >= 128 {
        0
    } else {
        addr & !((1u128 << host_bits) - 1)
    }
}

#[derive(Debug, Clone, Copy)]
struct Node {
    lo: u32,
    plen: u8,
    /// Children; `u32::MAX` for a leaf.
    left: u32,
    right: u32,
    /// Where this node's choices start in `Cover::choices`: for k = 1..=len, 0 means "take
    /// this node's block", a > 0 means "a blocks on the left, k - a on the right".
    choice_off: u32,
}

const LEAF: u32 = u32::MAX;

/// The cost curve of one address set and what is needed to list the blocks for any K on it.
#[derive(Debug, Clone)]
pub struct Cover {
    width: u8,
    addrs: Vec<u128>,
    nodes: Vec<Node>,
    choices: Vec<u16>,
    root: u32,
    /// `curve[k - 1]`: the fewest addresses covered by at most k blocks covering every observed
    /// address.
    curve: Vec<u128>,
    exact: usize,
}

impl Cover {
    /// Solves for every K up to `kmax` (at least 1). `addrs` must be sorted, distinct, non-empty
    /// and fit in `family`'s width.
    pub fn solve(addrs: Vec<u128>, family: Family, kmax: usize) -> Cover {
        let kmax = kmax.clamp(1, usize::from(u16::MAX));
        let mut cover = Cover {
            width: family.width(),
            addrs,
            nodes: Vec::new(),
            choices: Vec::new(),
            root: 0,
            curve: Vec::new(),
            exact: 0,
        };
        if cover.addrs.is_empty() {
            return cover;
        }
        let n = cover.addrs.len();
        let (root, curve, exact, _) = cover.build(0, n, kmax);
        cover.root = root;
        cover.curve = curve;
        cover.exact = exact;
        cover
    }

    /// Returns (node, curve, blocks of the exact cover, whether the node's block is full).
    fn build(&mut self, lo: usize, hi: usize, kmax: usize) -> (u32, Vec<u128>, usize, bool) {
        let width = self.width;
        let id = u32::try_from(self.nodes.len()).unwrap_or(u32::MAX);
        let first = self.addrs[lo];
        if hi - lo == 1 {
            self.nodes.push(Node {
                lo: lo as u32,
                plen: width,
                left: LEAF,
                right: LEAF,
                choice_off: self.choices.len() as u32,
            });
            self.choices.push(0);
            return (id, vec![1], 1, true);
        }
        let diff = first ^ self.addrs[hi - 1];
        let top = 127 - diff.leading_zeros() as u8; // highest differing bit, from bit 0
        let plen = width - 1 - top;
        let split = lo + self.addrs[lo..hi].partition_point(|a| (a >> top) & 1 == 0);
        self.nodes.push(Node {
            lo: lo as u32,
            plen,
            left: LEAF,
            right: LEAF,
            choice_off: 0,
        });
        let (left, cl, el, fl) = self.build(lo, split, kmax);
        let (right, cr, er, fr) = self.build(split, hi, kmax);
        let whole = block_size(width, plen);
        let full = fl && fr && (hi - lo) as u128 == whole;
        let len = (hi - lo).min(kmax);
        let mut curve = vec![u128::MAX; len];
        let mut choice = vec![0u16; len];
        curve[0] = whole;
        for (a, &ca) in cl.iter().enumerate() {
            for (b, &cb) in cr.iter().enumerate() {
                let k = a + b + 1; // (a + 1) + (b + 1) blocks, index k
                if k >= len {
                    break;
                }
                let c = ca.saturating_add(cb);
                if c < curve[k] {
                    curve[k] = c;
                    choice[k] = (a + 1) as u16;
                }
            }
        }
        for k in 1..len {
            if whole <= curve[k] {
                curve[k] = whole;
                choice[k] = 0;
            }
        }
        let node = &mut self.nodes[id as usize];
        node.left = left;
        node.right = right;
        node.choice_off = self.choices.len() as u32;
        self.choices.extend_from_slice(&choice);
        let exact = if full { 1 } else { el + er };
        (id, curve, exact, full)
    }

    /// The observed addresses, sorted.
    pub fn addresses(&self) -> &[u128] {
        &self.addrs
    }

    pub fn observed(&self) -> usize {
        self.addrs.len()
    }

    /// The largest K solved for.
    pub fn kmax(&self) -> usize {
        self.curve.len()
    }

    /// Addresses covered by the best cover with at most `k` blocks (k >= 1).
    pub fn covered(&self, k: usize) -> u128 {
        match self.curve.get(k.clamp(1, self.curve.len().max(1)) - 1) {
            Some(&c) => c,
            None => 0,
        }
    }

    /// Covered addresses never observed, with at most `k` blocks.
    pub fn over(&self, k: usize) -> u128 {
        self.covered(k).saturating_sub(self.addrs.len() as u128)
    }

    /// The fewest blocks that cover exactly the observed addresses.
    pub fn exact(&self) -> usize {
        self.exact
    }

    /// The blocks of the best cover with at most `k` blocks, in address order.
    pub fn blocks(&self, k: usize) -> Vec<Prefix> {
        let mut out = Vec::new();
        if self.addrs.is_empty() {
            return out;
        }
        let k = k.clamp(1, self.curve.len());
        let mut stack = vec![(self.root, k)];
        while let Some((id, k)) = stack.pop() {
            let node = self.nodes[id as usize];
            let choice = self.choices[node.choice_off as usize + k - 1];
            if choice == 0 || node.left == LEAF {
                let addr = self.addrs[node.lo as usize];
                out.push((mask(addr, self.width, node.plen), node.plen));
            } else {
                let a = usize::from(choice);
                // Right first so the left pops first and blocks come out in order.
                stack.push((node.right, k - a));
                stack.push((node.left, a));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_examples() {
        // 10.0.0.1, .2, .3 and 10.0.0.9: two blocks give .0/30 (4) + .9/32 (1).
        let base = 0x0a00_0000u128;
        let addrs = vec![base + 1, base + 2, base + 3, base + 9];
        let c = Cover::solve(addrs, Family::V4, 10);
        assert_eq!(c.covered(1), 16);
        assert_eq!(c.covered(2), 5);
        assert_eq!(c.blocks(2), vec![(base, 30), (base + 9, 32)]);
        assert_eq!(c.exact(), 3); // .1/32, .2/31, .9/32
        assert_eq!(c.over(3), 0);
        assert_eq!(c.kmax(), 4);
    }

    #[test]
    fn one_address_and_a_full_block() {
        let c = Cover::solve(vec![7], Family::V4, 60);
        assert_eq!(c.blocks(60), vec![(7, 32)]);
        let c = Cover::solve((0..256).collect(), Family::V4, 60);
        assert_eq!(c.exact(), 1);
        assert_eq!(c.blocks(1), vec![(0, 24)]);
        assert_eq!(c.over(1), 0);
    }

    #[test]
    fn ipv6_whole_space_saturates() {
        let c = Cover::solve(vec![0, u128::MAX], Family::V6, 2);
        assert_eq!(c.covered(1), u128::MAX);
        assert_eq!(c.covered(2), 2);
    }
}
