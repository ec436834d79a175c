//! The export index: a small open-addressing table from the names an image
//! exports to what a lookup of them answers. A repeated lookup then costs a
//! word-at-a-time hash of the name, a probe or two and one comparison,
//! instead of the file's hash function (a byte at a time), its bloom
//! filter, bucket and chain, and the version checks.
//!
//! The index decides nothing on its own: a name goes in only if the file's
//! hash table answers that name with that very symbol (the lookup is run
//! for every candidate), so a hit is what the hash table would have said.
//! When every such name went in ([`ExportIndex::is_complete`]), an absent
//! name is one the hash table does not have either.

use super::symbols::{Strings, Sym, SymbolTable};

/// Tag bit: the slot is taken.
const OCCUPIED: u16 = 1;
/// Tag bit: the slot's value is the symbol index, not an address: the
/// address is worked out at each lookup (thread-local and ifunc symbols, or
/// a symbol whose lookup is an error).
const DEFERRED: u16 = 2;

/// Longest name a slot records; longer ones stay with the hash table.
const MAX_NAME: usize = u16::MAX as usize;

/// Fewest slots a table has, so that a library without exports still
/// answers a miss from one probe.
const MIN_SLOTS: usize = 8;

/// One entry: 16 bytes, four to a cache line.
#[derive(Clone, Copy)]
struct Slot {
    /// The symbol's address, or its index when `DEFERRED`.
    value: u64,
    /// String-table offset of the name.
    name: u32,
    /// Length of the name in bytes.
    len: u16,
    /// `OCCUPIED`, `DEFERRED` and the top 14 bits of the name's hash
    /// (which a probe compares before the name); 0 in an empty slot.
    tag: u16,
}

impl Slot {
    const EMPTY: Slot = Slot {
        value: 0,
        name: 0,
        len: 0,
        tag: 0,
    };
}

/// What the index says about a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The symbol's final address.
    Address(usize),
    /// The symbol the hash table finds, whose address depends on the
    /// thread or the moment (or is an error): resolve it as a lookup would.
    Symbol(u32),
    /// Not in the index.
    Absent,
}

/// See the module documentation.
pub struct ExportIndex {
    /// A power of two of them, or none when building was given up.
    slots: Box<[Slot]>,
    /// The string table the names lie in.
    strings: Strings,
    /// Whether every name the hash table answers is here.
    complete: bool,
    /// Names in the table (read by the test hooks only).
    #[allow(dead_code)]
    names: usize,
}

impl ExportIndex {
    /// Indexes every name a plain lookup in `symbols` finds. `fixed` gives
    /// a found symbol's address when it is the same for every thread and
    /// every lookup, `None` otherwise (the entry then defers to the caller).
    ///
    /// An empty, incomplete index (which sends every lookup to the hash
    /// table) when the table would take too much work to build (chains so
    /// long, or names so shared, that each lookup walks much of the table:
    /// only a malformed file does that) or its memory cannot be had.
    pub fn build(symbols: &SymbolTable, fixed: impl Fn(&Sym) -> Option<usize>) -> Self {
        Self::try_build(symbols, fixed).unwrap_or(ExportIndex {
            slots: Box::new([]),
            strings: symbols.strings,
            complete: false,
            names: 0,
        })
    }

    fn try_build(symbols: &SymbolTable, fixed: impl Fn(&Sym) -> Option<usize>) -> Option<Self> {
        let strings = &symbols.strings;
        // A real library needs about 4 units per byte of name plus a few per
        // symbol (scan, two hashes, a comparison, chain steps): at most a
        // quarter of this budget for every library the tests load. The rest
        // is margin; the bound keeps the worst case linear in the tables.
        let budget = strings
            .size()
            .saturating_add(symbols.len().into())
            .saturating_mul(16)
            .saturating_add(4096);
        let visible = |index: u32| {
            symbols
                .get(index)
                .filter(|sym| symbols.visible(index, sym, None))
        };
        // Room for every candidate at most half full: probes stay short and
        // always meet an empty slot. Counting them first is cheap (no
        // strings) and spares imports and locals their slots.
        let candidates = (0..symbols.len()).filter(|&i| visible(i).is_some()).count();
        let size = candidates
            .checked_mul(2)?
            .max(MIN_SLOTS)
            .checked_next_power_of_two()?;
        let mut slots = Vec::new();
        slots.try_reserve_exact(size).ok()?;
        slots.resize(size, Slot::EMPTY);
        let mask = size - 1;
        let mut names = 0;
        let mut work = 0u64;
        let mut complete = true;
        for index in 0..symbols.len() {
            let Some(sym) = visible(index) else { continue };
            let Some(name) = strings.get_short(sym.name.into(), MAX_NAME) else {
                // Too long for a slot, or no string at all: the hash table
                // keeps answering for it, misses included.
                complete = false;
                work = work.saturating_add(MAX_NAME as u64);
                continue;
            };
            // The scan for its end, and the hash below.
            work = work.saturating_add(2 * name.len() as u64 + 1);
            let found = symbols.find(name, None, &mut work);
            if work > budget {
                return None;
            }
            // Another symbol of the same name wins (an earlier one in the
            // chain), or the hash table cannot find this one at all.
            if found.map(|(i, _)| i) != Some(index) {
                continue;
            }
            let (value, deferred) = match fixed(&sym) {
                Some(addr) => (addr as u64, 0),
                None => (u64::from(index), DEFERRED),
            };
            let h = hash(name);
            let mut at = h as usize & mask;
            while slots.get(at).is_some_and(|s| s.tag != 0) {
                at = (at + 1) & mask;
            }
            if let Some(s) = slots.get_mut(at) {
                *s = Slot {
                    value,
                    name: sym.name,
                    len: u16::try_from(name.len()).ok()?,
                    tag: tag_of(h) | deferred,
                };
                names += 1;
            }
        }
        Some(ExportIndex {
            slots: slots.into_boxed_slice(),
            strings: *strings,
            complete,
            names,
        })
    }

    /// Whether every name a plain lookup finds is in the index, so that
    /// [`Probe::Absent`] means the lookup would fail too (for names without
    /// a NUL byte: `"foo\0bar"` can match a `"foo"` followed by `"bar"` in
    /// the string table, which only the hash table knows).
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Number of names in the index (for the test hooks).
    #[allow(dead_code)]
    pub fn len(&self) -> usize {
        self.names
    }

    /// Whether building was given up (see [`ExportIndex::build`]; for the
    /// test hooks).
    #[allow(dead_code)]
    pub fn given_up(&self) -> bool {
        self.slots.is_empty()
    }

    /// What the index holds for `name`.
    #[inline(always)]
    pub fn probe(&self, name: &[u8]) -> Probe {
        // A short name is its two key words: they give the hash and, held
        // in registers, compare with the stored name's without a loop.
        let (h, short) = hash_and_words(name);
        let want = tag_of(h);
        let mask = self.slots.len().wrapping_sub(1);
        let mut at = h as usize;
        // The table is at most half full, so an empty slot ends the walk
        // well before this bound does.
        for _ in 0..self.slots.len() {
            at &= mask;
            let Some(slot) = self.slots.get(at) else {
                break;
            };
            if slot.tag == 0 {
                break;
            }
            if slot.tag & !DEFERRED == want && usize::from(slot.len) == name.len() {
                let equal = match (self.stored_name(slot), short) {
                    (Some(stored), Some(words)) => short_words(stored) == Some(words),
                    (Some(stored), None) => same_long(stored, name),
                    (None, _) => false,
                };
                if equal {
                    return if slot.tag & DEFERRED == 0 {
                        Probe::Address(slot.value as usize)
                    } else {
                        Probe::Symbol(slot.value as u32)
                    };
                }
            }
            at = at.wrapping_add(1);
        }
        Probe::Absent
    }

    /// The name a slot records: at build, the string at offset
    /// `slot.name` was found to be `slot.len` bytes and a NUL, inside the
    /// string table, so this is never `None`.
    #[inline(always)]
    fn stored_name(&self, slot: &Slot) -> Option<&[u8]> {
        self.strings
            .slice(slot.name as usize, usize::from(slot.len))
    }
}

/// The tag of a hash: its top bits, marked occupied, not deferred.
#[inline(always)]
fn tag_of(h: u64) -> u16 {
    ((h >> 48) as u16 | OCCUPIED) & !DEFERRED
}

/// Little-endian `u64` at `at`, or 0 past the end (callers stay inside).
#[inline(always)]
fn word8(s: &[u8], at: usize) -> u64 {
    s.get(at..)
        .and_then(<[u8]>::first_chunk::<8>)
        .map_or(0, |w| u64::from_le_bytes(*w))
}

/// Little-endian `u32` at `at`, or 0 past the end (callers stay inside).
#[inline(always)]
fn word4(s: &[u8], at: usize) -> u32 {
    s.get(at..)
        .and_then(<[u8]>::first_chunk::<4>)
        .map_or(0, |w| u32::from_le_bytes(*w))
}

/// Whether `name` holds a NUL byte, a word at a time (the test misses run).
pub fn has_nul(name: &[u8]) -> bool {
    // A byte of `w` is zero exactly when this sets its top bit.
    let zero_byte =
        |w: u64| w.wrapping_sub(0x0101_0101_0101_0101) & !w & 0x8080_8080_8080_8080 != 0;
    let n = name.len();
    if n < 8 {
        return name.contains(&0);
    }
    let mut at = 0;
    while at + 8 < n {
        if zero_byte(word8(name, at)) {
            return true;
        }
        at += 8;
    }
    zero_byte(word8(name, n - 8))
}

/// Equality of two names of the same length, longer than 16 bytes: 16
/// bytes at a time, the last 16 overlapping the previous chunk (as
/// [`hash_long`] reads them), without a call to `bcmp`.
#[inline(always)]
fn same_long(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() || n < 16 {
        return a == b;
    }
    let pair = |s: &[u8], at: usize| (word8(s, at), word8(s, at + 8));
    let mut at = 0;
    while at + 16 < n {
        if pair(a, at) != pair(b, at) {
            return false;
        }
        at += 16;
    }
    pair(a, n - 16) == pair(b, n - 16)
}

// Arbitrary odd constants whose every byte has its top bit set: an ASCII
// word can never equal one, so the multiplications below never see a zero
// factor from a symbol name made of ASCII (a zero would erase the rest).
const K0: u64 = 0xa0f1_c3d5_e7b9_8b9d;
const K1: u64 = 0xe3b5_97f9_dbcd_a1c7;
const K2: u64 = 0xc6a4_a793_8fd1_bbe5;
const K3: u64 = 0x9fb5_d1e3_87a9_c5f1;

/// 64 × 64 → 128-bit multiply, high and low halves folded together: every
/// input bit reaches many output bits in one instruction.
#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// The two key words of a name of at most 16 bytes, which with its
/// length determine it exactly: two little-endian words, overlapping when
/// the name is shorter than two words; `None` for a longer name.
#[inline(always)]
fn short_words(name: &[u8]) -> Option<(u64, u64)> {
    let n = name.len();
    Some(match n {
        17.. => return None,
        8..=16 => (word8(name, 0), word8(name, n - 8)),
        4..=7 => (u64::from(word4(name, 0)), u64::from(word4(name, n - 4))),
        _ => match *name {
            [x, y, z] => (u64::from(x) | u64::from(y) << 8 | u64::from(z) << 16, 0),
            [x, y] => (u64::from(x) | u64::from(y) << 8, 0),
            [x] => (u64::from(x), 0),
            _ => (0, 0),
        },
    })
}

/// The hash of a short name from its key words and length.
#[inline(always)]
fn mix(a: u64, b: u64, n: usize) -> u64 {
    fold(a ^ K0, b ^ K1 ^ n as u64)
}

/// The index's hash of a name: [`mix`] of its key words, or for a name
/// longer than 16 bytes [`hash_long`].
fn hash(name: &[u8]) -> u64 {
    hash_and_words(name).0
}

/// [`hash`] and the key words of a short name (what a probe compares).
#[inline(always)]
fn hash_and_words(name: &[u8]) -> (u64, Option<(u64, u64)>) {
    let short = short_words(name);
    let h = match short {
        Some((a, b)) => mix(a, b, name.len()),
        None => hash_long(name),
    };
    (h, short)
}

/// [`hash`] of a name longer than 16 bytes: its first and last 16 bytes
/// (which overlap below 32 bytes) in two independent folds, and the chunks
/// between them, if any, folded one after the other into the first.
#[inline(always)]
fn hash_long(name: &[u8]) -> u64 {
    let n = name.len();
    let mut middle = 0;
    let mut at = 16;
    while at + 16 < n {
        middle = fold(word8(name, at) ^ K0 ^ middle, word8(name, at + 8) ^ K1);
        at += 16;
    }
    let last = n.saturating_sub(16);
    fold(word8(name, 0) ^ K0, word8(name, 8) ^ K1 ^ middle)
        ^ fold(
            word8(name, last) ^ K2,
            word8(name, last + 8) ^ K3 ^ n as u64,
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Names of every length 0..=40, and for each every one-byte change.
    fn sample() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for len in 0..=40usize {
            let base: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            out.push(base.clone());
            for at in 0..len {
                for c in [b'_', b'0', b'Z', b'b', 0x80, 0] {
                    let mut v = base.clone();
                    v[at] = c;
                    if v != base {
                        out.push(v);
                    }
                }
            }
        }
        // Names that differ only in length or in a repeated pattern.
        for len in 0..=40usize {
            out.push(vec![b'x'; len]);
            out.push(vec![0; len]);
        }
        for i in 0..2000 {
            out.push(format!("sqlite3_fn_{i}").into_bytes());
            out.push(format!("_ZN4core3fmt5write17h{i:016x}E").into_bytes());
        }
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn distinct_names_hash_apart() {
        let mut seen: HashMap<u64, Vec<u8>> = HashMap::new();
        for name in sample() {
            let h = hash(&name);
            if let Some(other) = seen.insert(h, name.clone()) {
                panic!("{name:?} and {other:?} both hash to {h:#x}");
            }
        }
    }

    #[test]
    fn hash_reads_only_the_name() {
        // The same name inside buffers with different bytes around it and
        // at every alignment: only the name's own bytes may count.
        for name in sample() {
            let want = hash(&name);
            for pad in 0..8 {
                for fill in [0u8, 0xff] {
                    let mut buf = vec![fill; pad];
                    buf.extend_from_slice(&name);
                    buf.extend(std::iter::repeat_n(fill ^ 0x5a, 24));
                    assert_eq!(hash(&buf[pad..pad + name.len()]), want, "{name:?}");
                }
            }
        }
    }

    #[test]
    fn short_words_determine_the_name() {
        // Same length and same key words exactly when the same bytes.
        let names: Vec<Vec<u8>> = sample().into_iter().filter(|n| n.len() <= 16).collect();
        let mut seen: HashMap<(usize, (u64, u64)), Vec<u8>> = HashMap::new();
        for name in &names {
            let words = short_words(name).expect("short");
            if let Some(other) = seen.insert((name.len(), words), name.clone()) {
                panic!("{name:?} and {other:?} have the same key words");
            }
        }
        assert_eq!(short_words(&[b'a'; 17]), None);
    }

    #[test]
    fn has_nul_finds_every_nul() {
        for len in 0..=40usize {
            let name = vec![b'a'; len];
            assert!(!has_nul(&name));
            for at in 0..len {
                for c in [0u8, 1, 0x80, 0xff] {
                    let mut v = name.clone();
                    v[at] = c;
                    assert_eq!(has_nul(&v), c == 0, "{v:?}");
                }
            }
        }
        // Bytes that borrow in the subtraction must not look like a NUL.
        assert!(!has_nul(&[
            0x01, 0x80, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01
        ]));
        assert!(!has_nul(&[0x80; 9]));
    }

    #[test]
    fn tags_never_look_empty_or_deferred() {
        for h in [0, u64::MAX, 1 << 48, 2 << 48, 3 << 48] {
            let t = tag_of(h);
            assert_ne!(t, 0);
            assert_eq!(t & DEFERRED, 0);
            assert_eq!(t & OCCUPIED, OCCUPIED);
        }
        assert_eq!(std::mem::size_of::<Slot>(), 16);
    }
}
