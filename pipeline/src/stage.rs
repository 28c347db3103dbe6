//! Staging: turns timestamped samples into the changes of "the value in force at T".
//!
//! Every input of the query has the same shape: for a key, the value at event time T is the
//! latest sample with time <= T. Process records (per upid) and name records (per address)
//! are exactly that. Connection samples are that plus a window: the latest sample of a
//! connection key is in force while `sample.time + window > T` (since counters are cumulative,
//! the max over a key's samples in the window is its latest sample in the window).
//!
//! A [`Stage`] keeps, per key, the latest settled sample and the samples ahead of the frontier,
//! and when the frontier advances it emits the updates of the interval: `+new` / `-old` at a
//! new sample's time, `-old` at `old.time + window` (the delayed retraction). Emitting lazily at
//! the frontier means the dataflow never holds far-future retractions in its batchers, and a
//! superseded sample costs two updates at the same time instead of four.
//!
//! A window change re-derives every key's state at the change time, so it needs the latest
//! sample of each key even after it left the window: those are kept for `max_window`.

use crate::graph::{Text, TextInterner};
use crate::state_alloc::StateAlloc;
use flowgraph_schema::{EventTime, Process};
use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash};

/// A vector of the stage's state, in the state tables' allocator (a large one is mapped on its
/// own, out of glibc's heap: state_alloc.rs).
type StateVec<T> = allocator_api2::vec::Vec<T, StateAlloc>;

/// A process description with its text interned. Fields are in `Process`'s order, so the
/// derived `Ord` breaks ties between records at one time exactly as `Process`'s does.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct ProcessInfo {
    pub(crate) cmdline: Text,
    pub(crate) comm: Text,
    pub(crate) container: Text,
    pub(crate) host: Text,
    pub(crate) pod: Text,
    pub(crate) service: Text,
    pub(crate) namespace: Text,
    pub(crate) node: Text,
}

/// What the Kubernetes API says about a container, text interned. An empty `pod` is a
/// withdrawal: the container's processes keep only their own fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct ContainerInfo {
    pub(crate) pod: Text,
    pub(crate) service: Text,
    pub(crate) namespace: Text,
    pub(crate) node: Text,
}

impl ProcessInfo {
    /// The process's own Kubernetes fields win; the empty ones are filled from its container.
    pub(crate) fn filled_from(&self, container: &ContainerInfo) -> ProcessInfo {
        let fill = |own: &Text, theirs: &Text| if own.is_empty() { theirs.clone() } else { own.clone() };
        ProcessInfo {
            pod: fill(&self.pod, &container.pod),
            service: fill(&self.service, &container.service),
            namespace: fill(&self.namespace, &container.namespace),
            node: fill(&self.node, &container.node),
            ..self.clone()
        }
    }
}

/// Deduplicates the input's text, so each distinct string is stored once however many records
/// carry it.
#[derive(Default)]
pub(crate) struct Interner {
    texts: TextInterner,
}

impl Interner {
    pub(crate) fn intern(&mut self, text: &str) -> Text {
        self.texts.intern(text)
    }

    pub(crate) fn process(&mut self, p: &Process) -> ProcessInfo {
        ProcessInfo {
            cmdline: self.intern(&p.cmdline),
            comm: self.intern(&p.comm),
            container: self.intern(&p.container),
            host: self.intern(&p.host),
            pod: self.intern(&p.pod),
            service: self.intern(&p.service),
            namespace: self.intern(&p.namespace),
            node: self.intern(&p.node),
        }
    }

    pub(crate) fn container(&mut self, c: &flowgraph_schema::Container) -> ContainerInfo {
        ContainerInfo {
            pod: self.intern(&c.pod),
            service: self.intern(&c.service),
            namespace: self.intern(&c.namespace),
            node: self.intern(&c.node),
        }
    }
}

/// A value a stage can hold: ordered (ties at equal time go to the greatest value) and able
/// to say whether a later sample may follow an earlier one. (`Default` fills the slot of a key
/// with no settled sample.)
pub(crate) trait StageValue: Clone + Ord + Default {
    /// `Err` explains why `later` cannot follow `earlier` (say, a counter went down).
    fn check_order(earlier: &Self, later: &Self) -> Result<(), String>;
}

/// An update for the dataflow: key, value, event time, +1 or -1.
pub(crate) type StageUpdate<K, V> = (K, V, EventTime, isize);

/// `KeySlot::expiry_wake` of a key with no entry in `Stage::expiries`.
const NO_WAKE: EventTime = EventTime::MAX;

/// `KeySlot::settled_time` of a key with no settled sample. No sample settles at it: a sample
/// settles once the frontier is past its time, and no frontier is past the largest time.
const NOT_SETTLED: EventTime = EventTime::MAX;

/// A tracked key and its state, in one struct (a slot of the connection stage is 88 bytes,
/// was 96; docs/BENCHMARKS.md, items 18 and 19).
struct KeySlot<K, V> {
    key: K,
    /// The latest sample with time before the frontier, kept after it expires (for a window
    /// change) until `max_window` has passed: its time, [`NOT_SETTLED`] if there is none (not
    /// an `Option`: 8 bytes a key less), and its value (`V::default()` if none).
    settled_time: EventTime,
    settled_value: V,
    /// Whether the settled sample is in the dataflow's collection now.
    present: bool,
    /// Samples at or after the frontier, sorted by (time, value): a list in `Stage::sample_arena`.
    pending: SampleList,
    /// The time of this key's earliest entry in `expiries`, if it has one.
    /// [`NO_WAKE`] if none. (Not an `Option`: 8 bytes a key less.)
    expiry_wake: EventTime,
}

impl<K, V> KeySlot<K, V> {
    fn settled(&self) -> Option<(EventTime, &V)> {
        (self.settled_time != NOT_SETTLED).then_some((self.settled_time, &self.settled_value))
    }

    /// Replaces the settled sample, returning the one it replaces.
    fn replace_settled(&mut self, time: EventTime, value: V) -> Option<(EventTime, V)> {
        let old_time = std::mem::replace(&mut self.settled_time, time);
        let old_value = std::mem::replace(&mut self.settled_value, value);
        (old_time != NOT_SETTLED).then_some((old_time, old_value))
    }
}

/// The staging state of one input.
pub(crate) struct Stage<K, V> {
    /// Window length; `None` for inputs whose latest value never expires.
    window: Option<EventTime>,
    /// How long an expired key is kept for a window change that widens the window.
    max_window: EventTime,
    /// Everything before this time has been emitted.
    frontier: EventTime,
    slots: StateVec<Option<KeySlot<K, V>>>,
    free: Vec<u32>,
    /// Every key's pending samples, in one arena: no heap allocation per key. They are the
    /// samples past the frontier: a lateness's worth while the frontier trails by lateness,
    /// fewer once it follows the agents' progress.
    sample_arena: SampleArena<V>,
    /// Slot ids by their key's hash: the key itself lives only in its slot (compared there),
    /// so a key is stored once, not twice.
    index: HashTable<u32, StateAlloc>,
    hasher: FxBuildHasher,
    /// (time, slot) of every pending sample: short-lived, a sample settles once the frontier
    /// passes it.
    samples: TimeQueue,
    /// (time, slot) of expiries and forgettings, about one per key: a key whose sample is
    /// superseded keeps its earlier entry, and is rescheduled when that entry comes due,
    /// instead of leaving one stale entry per sample for a whole window. Handling a slot is
    /// idempotent, so an entry that comes due early costs a look.
    expiries: TimeQueue,
}

/// Slots to look at, by time. Records of one export share one time, so there are a few
/// thousand distinct times at most: a sorted map of per-time buckets costs 4 bytes and an
/// append per entry, where a heap costs 16 bytes and a sift through a cache-cold array.
/// Within a time, slots come in the order they were pushed; handling a slot is idempotent
/// and everything downstream is order-insensitive within a time.
#[derive(Default)]
struct TimeQueue {
    buckets: BTreeMap<EventTime, Vec<u32>>,
}

impl TimeQueue {
    fn push(&mut self, time: EventTime, slot: u32) {
        self.buckets.entry(time).or_default().push(slot);
    }

    fn first_time(&self) -> Option<EventTime> {
        self.buckets.keys().next().copied()
    }

    /// Each time before `before` with entries, in order, and how many it has.
    fn counts_before(&self, before: EventTime) -> impl Iterator<Item = (EventTime, usize)> + '_ {
        self.buckets.range(..before).map(|(time, slots)| (*time, slots.len()))
    }

    /// Removes every bucket before `to` and returns them in time order.
    fn take_before(&mut self, to: EventTime) -> BTreeMap<EventTime, Vec<u32>> {
        let later = self.buckets.split_off(&to);
        std::mem::replace(&mut self.buckets, later)
    }
}

impl<K: Clone + Hash + Eq, V: StageValue> Stage<K, V> {
    pub(crate) fn new(window: Option<EventTime>, max_window: EventTime) -> Self {
        Stage {
            window,
            max_window,
            frontier: 0,
            slots: StateVec::new_in(StateAlloc),
            free: Vec::new(),
            sample_arena: SampleArena::default(),
            index: HashTable::new_in(StateAlloc),
            hasher: FxBuildHasher,
            samples: TimeQueue::default(),
            expiries: TimeQueue::default(),
        }
    }

    /// The value in force just before the frontier, with its time, if any.
    pub(crate) fn settled(&self, key: &K) -> Option<(EventTime, &V)> {
        let slot = self.find(key)?;
        let state = self.slots[slot as usize].as_ref()?;
        state.settled()
    }

    /// The earliest time something may happen to a key (a sample, an expiry), if any.
    pub(crate) fn next_event(&self) -> Option<EventTime> {
        self.samples.first_time().into_iter().chain(self.expiries.first_time()).min()
    }

    /// The end of the shortest stretch of time, from the first event on, that holds at least
    /// `events` events (samples and expiries, each a look at a key), or `None` if the events
    /// before `before` are fewer. The stretch ends just after a time, so it may hold more: a
    /// time's events go together.
    pub(crate) fn end_of_first(&self, events: usize, before: EventTime) -> Option<EventTime> {
        let mut samples = self.samples.counts_before(before).peekable();
        let mut expiries = self.expiries.counts_before(before).peekable();
        let mut seen = 0;
        loop {
            let next = match (samples.peek(), expiries.peek()) {
                (Some((sample_time, _)), Some((expiry_time, _))) if expiry_time < sample_time => expiries.next(),
                (Some(_), _) => samples.next(),
                (None, _) => expiries.next(),
            };
            let (time, count) = next?;
            seen += count;
            if seen >= events {
                return Some(time + 1);
            }
        }
    }

    /// Keys currently tracked (live or kept for a window change).
    pub(crate) fn keys(&self) -> usize {
        self.index.len()
    }

    /// The slot of `key`, if it is tracked.
    fn find(&self, key: &K) -> Option<u32> {
        self.find_hashed(self.hasher.hash_one(key), key)
    }

    /// The slot of `key`, whose hash is `hash`, if it is tracked.
    fn find_hashed(&self, hash: u64, key: &K) -> Option<u32> {
        let slots = &self.slots;
        self.index.find(hash, |&slot| key_of(slots, slot) == key).copied()
    }

    /// Adds a sample. `time` must be at or after the frontier (late records are re-timed by
    /// the caller). Rejects a sample that cannot follow its neighbours in time.
    pub(crate) fn insert(&mut self, key: K, time: EventTime, value: V) -> Result<(), String> {
        debug_assert!(time >= self.frontier, "sample before the frontier");
        // Hashed once: for the look-up and, for a new key, the index entry.
        let hash = self.hasher.hash_one(&key);
        let slot = match self.find_hashed(hash, &key) {
            Some(slot) => slot,
            None => {
                let state = KeySlot {
                    key,
                    settled_time: NOT_SETTLED,
                    settled_value: V::default(),
                    present: false,
                    pending: SampleList::EMPTY,
                    expiry_wake: NO_WAKE,
                };
                let slot = match self.free.pop() {
                    Some(slot) => {
                        self.slots[slot as usize] = Some(state);
                        slot
                    }
                    None => {
                        self.slots.push(Some(state));
                        (self.slots.len() - 1) as u32
                    }
                };
                let (slots, hasher) = (&self.slots, &self.hasher);
                self.index.insert_unique(hash, slot, |&slot| hasher.hash_one(key_of(slots, slot)));
                slot
            }
        };
        let state = self.slots[slot as usize].as_mut().expect("indexed slot");
        let (before, after) = self.sample_arena.neighbours(&state.pending, time, &value);
        let earlier = match before {
            Some(entry) => Some(&self.sample_arena.entries[entry as usize].value),
            None => state.settled().map(|(_, v)| v),
        };
        if let Some(earlier) = earlier {
            V::check_order(earlier, &value)?;
        }
        if let Some(entry) = after {
            V::check_order(&value, &self.sample_arena.entries[entry as usize].value)?;
        }
        self.sample_arena.insert_after(&mut state.pending, before, time, value);
        self.samples.push(time, slot);
        Ok(())
    }

    /// Emits every change with time in [frontier, to) and moves the frontier to `to`.
    pub(crate) fn advance(&mut self, to: EventTime, out: &mut Vec<StageUpdate<K, V>>) {
        // Settling a key handles all its events before `to` and schedules its next expiry at
        // or after `to`, so nothing new lands in the buckets taken here.
        for (_, slots) in self.samples.take_before(to) {
            for slot in slots {
                self.settle(slot, to, out);
            }
        }
        for (time, slots) in self.expiries.take_before(to) {
            for slot in slots {
                if let Some(state) = self.slots[slot as usize].as_mut() {
                    if state.expiry_wake == time {
                        state.expiry_wake = NO_WAKE;
                    }
                }
                self.settle(slot, to, out);
            }
        }
        self.frontier = self.frontier.max(to);
        if self.sample_arena.mostly_free() {
            let lists = self.slots.iter_mut().flatten().map(|state| &mut state.pending);
            self.sample_arena.compact(lists);
        }
    }

    /// Changes the window from the frontier on (call [`Stage::advance`] to the change time
    /// first). Re-derives every key's presence: O(keys).
    pub(crate) fn set_window(&mut self, window: EventTime, out: &mut Vec<StageUpdate<K, V>>) {
        let now = self.frontier;
        self.window = Some(window);
        for (slot, entry) in self.slots.iter_mut().enumerate() {
            let Some(state) = entry else { continue };
            let Some((time, value)) = state.settled() else { continue };
            let should_be_present = time + window > now;
            if state.present && !should_be_present {
                out.push((state.key.clone(), value.clone(), now, -1));
            } else if !state.present && should_be_present {
                out.push((state.key.clone(), value.clone(), now, 1));
            }
            state.present = should_be_present;
            schedule_expiry(&mut self.expiries, slot as u32, state, window, self.max_window);
        }
    }

    /// Applies a key's events before `to`, in time order.
    fn settle(&mut self, slot: u32, to: EventTime, out: &mut Vec<StageUpdate<K, V>>) {
        let Some(state) = self.slots[slot as usize].as_mut() else {
            return;
        };
        loop {
            let next_sample = self.sample_arena.first_time(&state.pending).filter(|t| *t < to);
            let expiry = match (state.settled(), self.window) {
                (Some((t, _)), Some(window)) if state.present => Some(t + window).filter(|e| *e < to),
                _ => None,
            };
            // At equal times the expiry goes first: -old, then +new.
            let take_sample = match (next_sample, expiry) {
                (None, None) => break,
                (Some(sample_time), Some(expiry)) => sample_time < expiry,
                (Some(_), None) => true,
                (None, Some(_)) => false,
            };
            if take_sample {
                let (time, value) = self.sample_arena.pop_first(&mut state.pending);
                let old = state.replace_settled(time, value.clone());
                if state.present {
                    let (_, old) = old.expect("present implies settled");
                    out.push((state.key.clone(), old, time, -1));
                }
                out.push((state.key.clone(), value, time, 1));
                state.present = true;
            } else {
                let expiry = expiry.expect("no sample taken means an expiry is due");
                let (_, old) = state.settled().expect("present implies settled");
                out.push((state.key.clone(), old.clone(), expiry, -1));
                state.present = false;
            }
        }
        let Some(window) = self.window else { return };
        let Some((time, _)) = state.settled() else { return };
        if !state.present && state.pending.is_empty() && time.saturating_add(self.max_window) < to {
            let hash = self.hasher.hash_one(&state.key);
            if let Ok(entry) = self.index.find_entry(hash, |&indexed| indexed == slot) {
                entry.remove();
            }
            self.slots[slot as usize] = None;
            self.free.push(slot);
        } else {
            schedule_expiry(&mut self.expiries, slot, state, window, self.max_window);
        }
    }
}

/// A key's pending samples: a singly linked list of entries in a [`SampleArena`], kept
/// sorted by (time, value), with its tail for the common case of a sample later than all.
#[derive(Clone, Copy)]
struct SampleList {
    head: u32,
    tail: u32,
}

impl SampleList {
    const NONE: u32 = u32::MAX;
    const EMPTY: SampleList = SampleList { head: Self::NONE, tail: Self::NONE };

    fn is_empty(&self) -> bool {
        self.head == Self::NONE
    }
}

struct SampleEntry<V> {
    time: EventTime,
    value: V,
    /// The next entry of the key's list, or of the free list.
    next: u32,
}

/// The pending samples of every key of a stage, in one vector: 32 bytes a connection sample
/// and no allocation of its own. A freed entry keeps its stale value until it is reused (a
/// clone went out: a copy for bytes, reference counts for a process's texts, which the
/// interner keeps anyway).
struct SampleArena<V> {
    entries: StateVec<SampleEntry<V>>,
    free: u32,
    /// Entries in some key's list (the rest are on the free list).
    live: usize,
}

impl<V> Default for SampleArena<V> {
    fn default() -> Self {
        SampleArena { entries: StateVec::new_in(StateAlloc), free: SampleList::NONE, live: 0 }
    }
}

/// An arena holding fewer live samples than a quarter of its entries, and at least this many
/// entries, is rebuilt at twice their number (see [`SampleArena::compact`]).
const COMPACT_ARENA_FROM: usize = 4096;

impl<V: StageValue> SampleArena<V> {
    fn first_time(&self, list: &SampleList) -> Option<EventTime> {
        (!list.is_empty()).then(|| self.entries[list.head as usize].time)
    }

    /// The last entry at or before (time, value) and the first after it, if any.
    fn neighbours(&self, list: &SampleList, time: EventTime, value: &V) -> (Option<u32>, Option<u32>) {
        if list.is_empty() {
            return (None, None);
        }
        let tail = &self.entries[list.tail as usize];
        if (tail.time, &tail.value) <= (time, value) {
            return (Some(list.tail), None);
        }
        let (mut before, mut at) = (None, list.head);
        while at != SampleList::NONE {
            let entry = &self.entries[at as usize];
            if (entry.time, &entry.value) > (time, value) {
                return (before, Some(at));
            }
            before = Some(at);
            at = entry.next;
        }
        unreachable!("the tail is after (time, value), so some entry is")
    }

    /// Links a new entry into `list` after `before` (at its head for `None`).
    fn insert_after(&mut self, list: &mut SampleList, before: Option<u32>, time: EventTime, value: V) {
        let next = match before {
            Some(before) => self.entries[before as usize].next,
            None => list.head,
        };
        let entry = SampleEntry { time, value, next };
        self.live += 1;
        let id = if self.free == SampleList::NONE {
            debug_assert!(self.entries.len() < SampleList::NONE as usize, "sample arena full");
            self.entries.push(entry);
            (self.entries.len() - 1) as u32
        } else {
            let id = self.free;
            self.free = self.entries[id as usize].next;
            self.entries[id as usize] = entry;
            id
        };
        match before {
            Some(before) => self.entries[before as usize].next = id,
            None => list.head = id,
        }
        if next == SampleList::NONE {
            list.tail = id;
        }
    }

    /// Unlinks the list's first entry and returns its sample. The list must not be empty.
    fn pop_first(&mut self, list: &mut SampleList) -> (EventTime, V) {
        let id = list.head;
        let entry = &mut self.entries[id as usize];
        let sample = (entry.time, entry.value.clone());
        list.head = entry.next;
        if list.head == SampleList::NONE {
            list.tail = SampleList::NONE;
        }
        entry.next = self.free;
        self.free = id;
        self.live -= 1;
        sample
    }

    /// Whether most of the arena is free: after a burst (at start-up a key holds a lateness's
    /// worth of samples, later, with the frontier following the agents, a fraction of one),
    /// the vector would otherwise keep the burst's capacity for good.
    fn mostly_free(&self) -> bool {
        self.entries.len() >= COMPACT_ARENA_FROM && self.live * 4 < self.entries.len()
    }

    /// Moves every list into a new vector with room for twice their entries, in list order,
    /// and frees the old one. `lists` must include every non-empty list of the arena (empty
    /// ones are skipped); O(lists + live samples).
    fn compact<'a>(&mut self, lists: impl Iterator<Item = &'a mut SampleList>) {
        let mut entries = StateVec::with_capacity_in(self.live * 2, StateAlloc);
        for list in lists.filter(|list| !list.is_empty()) {
            let mut at = list.head;
            list.head = entries.len() as u32;
            while at != SampleList::NONE {
                let entry = &self.entries[at as usize];
                at = entry.next;
                let next = if at == SampleList::NONE { SampleList::NONE } else { entries.len() as u32 + 1 };
                entries.push(SampleEntry { time: entry.time, value: entry.value.clone(), next });
            }
            list.tail = entries.len() as u32 - 1;
        }
        debug_assert_eq!(entries.len(), self.live, "lists missed by the compaction");
        self.entries = entries;
        self.free = SampleList::NONE;
    }
}

/// The bytes of one slot of a stage, for a layout test.
#[cfg(test)]
pub(crate) fn slot_bytes<K, V>() -> usize {
    std::mem::size_of::<Option<KeySlot<K, V>>>()
}

/// The key of an indexed slot (the index only ever holds slots in use).
fn key_of<K, V>(slots: &[Option<KeySlot<K, V>>], slot: u32) -> &K {
    &slots[slot as usize].as_ref().expect("indexed slot").key
}

/// Makes sure `expiries` holds an entry for the key's next expiry (or forgetting) no later
/// than it is due; an earlier entry already there will reschedule when it comes due.
fn schedule_expiry<K, V>(
    expiries: &mut TimeQueue,
    slot: u32,
    state: &mut KeySlot<K, V>,
    window: EventTime,
    max_window: EventTime,
) {
    let Some((time, _)) = state.settled() else { return };
    let due = if state.present {
        time + window
    } else if state.pending.is_empty() {
        time.saturating_add(max_window)
    } else {
        // A pending sample will settle (and schedule) first.
        return;
    };
    // Also false for a due time of NO_WAKE itself: no frontier ever reaches it.
    if due < state.expiry_wake {
        expiries.push(due, slot);
        state.expiry_wake = due;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
    struct Counter(u64);
    impl StageValue for Counter {
        fn check_order(earlier: &Self, later: &Self) -> Result<(), String> {
            if later.0 < earlier.0 {
                Err(format!("counter went down from {} to {}", earlier.0, later.0))
            } else {
                Ok(())
            }
        }
    }

    fn run(stage: &mut Stage<u8, Counter>, to: EventTime) -> Vec<(u8, u64, EventTime, isize)> {
        let mut out = Vec::new();
        stage.advance(to, &mut out);
        out.into_iter().map(|(k, v, t, d)| (k, v.0, t, d)).collect()
    }

    #[test]
    fn end_of_first_counts_samples_and_expiries_in_time_order() {
        let mut stage = Stage::new(Some(10), 100);
        assert_eq!(stage.end_of_first(1, 100), None);
        stage.insert(1, 5, Counter(1)).unwrap();
        stage.insert(2, 5, Counter(1)).unwrap();
        stage.insert(3, 7, Counter(1)).unwrap();
        // Pending: two samples at 5, one at 7. A time's events go together.
        assert_eq!(stage.end_of_first(1, 100), Some(6));
        assert_eq!(stage.end_of_first(2, 100), Some(6));
        assert_eq!(stage.end_of_first(3, 100), Some(8));
        assert_eq!(stage.end_of_first(4, 100), None);
        // Keys 1 and 2 settle and expire at 15; key 3's sample at 7 is still pending.
        run(&mut stage, 6);
        assert_eq!(stage.end_of_first(1, 100), Some(8));
        assert_eq!(stage.end_of_first(2, 100), Some(16));
        assert_eq!(stage.end_of_first(3, 100), Some(16));
        assert_eq!(stage.end_of_first(4, 100), None);
        // Only the events before `before` count.
        assert_eq!(stage.end_of_first(2, 15), None);
        assert_eq!(stage.end_of_first(2, 16), Some(16));
    }

    #[test]
    fn window_retracts_at_time_plus_window_and_supersedes() {
        let mut stage = Stage::new(Some(10), 100);
        stage.insert(1, 5, Counter(1)).unwrap();
        stage.insert(1, 8, Counter(3)).unwrap();
        assert_eq!(run(&mut stage, 30), vec![(1, 1, 5, 1), (1, 1, 8, -1), (1, 3, 8, 1), (1, 3, 18, -1)]);
        assert!(stage.insert(1, 40, Counter(2)).is_err(), "decrease accepted");
    }

    #[test]
    fn a_key_is_forgotten_max_window_after_it_expires_and_tracked_again_after() {
        let mut stage = Stage::new(Some(10), 100);
        stage.insert(1, 5, Counter(1)).unwrap();
        stage.insert(1, 8, Counter(3)).unwrap();
        stage.insert(2, 50, Counter(1)).unwrap();
        run(&mut stage, 100);
        assert_eq!(stage.keys(), 2, "1 expired at 18, kept for a window change");
        run(&mut stage, 120);
        assert_eq!(stage.keys(), 1, "8 + max_window has passed: 1 forgotten");
        stage.insert(1, 130, Counter(2)).unwrap();
        assert_eq!(run(&mut stage, 131), vec![(1, 2, 130, 1)], "tracked again, from nothing");
    }

    #[test]
    fn out_of_order_samples_are_applied_in_time_order() {
        let mut stage = Stage::new(Some(10), 100);
        stage.insert(1, 8, Counter(3)).unwrap();
        stage.insert(1, 5, Counter(1)).unwrap();
        assert!(stage.insert(1, 6, Counter(4)).is_err(), "4 before 3 accepted");
        assert_eq!(run(&mut stage, 9), vec![(1, 1, 5, 1), (1, 1, 8, -1), (1, 3, 8, 1)]);
    }

    #[test]
    fn widening_the_window_brings_back_an_expired_sample() {
        let mut stage = Stage::new(Some(10), 100);
        stage.insert(1, 5, Counter(1)).unwrap();
        assert_eq!(run(&mut stage, 20), vec![(1, 1, 5, 1), (1, 1, 15, -1)]);
        let mut out = Vec::new();
        stage.set_window(30, &mut out);
        assert_eq!(out, vec![(1, Counter(1), 20, 1)]);
        assert_eq!(run(&mut stage, 40), vec![(1, 1, 35, -1)]);
        // Forgotten after max_window: a widening then brings nothing back.
        run(&mut stage, 200);
        assert_eq!(stage.keys(), 0);
    }

    #[test]
    fn sample_lists_stay_sorted_and_reuse_freed_entries() {
        // Three keys' lists interleaved in one arena, against a sorted vector per key.
        let mut arena: SampleArena<Counter> = SampleArena::default();
        let mut lists = [SampleList::EMPTY; 3];
        let mut expected: [Vec<(EventTime, u64)>; 3] = Default::default();
        let mut state = 12345u64;
        for step in 0..3_000u64 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let key = (state >> 33) as usize % 3;
            if (state >> 40).is_multiple_of(3) && !lists[key].is_empty() {
                let (time, value) = arena.pop_first(&mut lists[key]);
                assert_eq!((time, value.0), expected[key].remove(0), "step {step}");
            } else {
                let (time, value) = ((state >> 20) % 50, (state >> 45) % 7);
                let (before, _) = arena.neighbours(&lists[key], time, &Counter(value));
                arena.insert_after(&mut lists[key], before, time, Counter(value));
                let at = expected[key].partition_point(|sample| *sample <= (time, value));
                expected[key].insert(at, (time, value));
            }
            assert_eq!(arena.first_time(&lists[key]), expected[key].first().map(|(t, _)| *t));
        }
        let live: usize = expected.iter().map(Vec::len).sum();
        assert!(arena.entries.len() < live + 100, "freed entries not reused: {} for {live}", arena.entries.len());
    }

    #[test]
    fn a_mostly_free_arena_is_rebuilt_with_its_lists_intact() {
        // A burst (a lateness's worth of samples per key, as at start-up), then most settled:
        // an eighth of the keys keep two samples, an eighth one, the rest none.
        let mut arena: SampleArena<Counter> = SampleArena::default();
        let mut lists = vec![SampleList::EMPTY; 2_000];
        let mut expected: Vec<Vec<(EventTime, u64)>> = vec![Vec::new(); lists.len()];
        for (key, list) in lists.iter_mut().enumerate() {
            for sample in 0..3u64 {
                let (time, value) = (sample * 10, key as u64 + sample);
                let (before, _) = arena.neighbours(list, time, &Counter(value));
                arena.insert_after(list, before, time, Counter(value));
                expected[key].push((time, value));
            }
        }
        assert!(!arena.mostly_free());
        for (key, list) in lists.iter_mut().enumerate() {
            let settled = [1, 2, 3, 3, 3, 3, 3, 3][key % 8];
            for _ in 0..settled {
                let (time, value) = arena.pop_first(list);
                assert_eq!((time, value.0), expected[key].remove(0));
            }
        }
        assert!(arena.mostly_free(), "{} live of {}", arena.live, arena.entries.len());
        arena.compact(lists.iter_mut());
        assert_eq!(arena.entries.len(), 750);
        assert!(arena.entries.capacity() <= 1_500);
        for (key, list) in lists.iter_mut().enumerate() {
            // The list still ends at its tail: a later sample appends there.
            if !list.is_empty() {
                let (before, after) = arena.neighbours(list, 30, &Counter(0));
                assert_eq!((before, after), (Some(list.tail), None));
                arena.insert_after(list, before, 30, Counter(0));
                expected[key].push((30, 0));
            }
            let mut held = Vec::new();
            while !list.is_empty() {
                let (time, value) = arena.pop_first(list);
                held.push((time, value.0));
            }
            assert_eq!(held, expected[key], "key {key}");
        }
        assert_eq!(arena.live, 0);
    }

    #[test]
    fn advancing_past_a_burst_compacts_the_arena_and_loses_no_sample() {
        let mut stage: Stage<u32, Counter> = Stage::new(Some(1_000), 10_000);
        for key in 0..2_000u32 {
            for sample in 0..5u64 {
                stage.insert(key, sample * 10, Counter(sample)).unwrap();
            }
        }
        assert_eq!(stage.sample_arena.entries.len(), 10_000);
        let mut out = Vec::new();
        stage.advance(35, &mut out);
        assert_eq!(stage.sample_arena.entries.len(), 2_000, "the arena was not rebuilt");
        out.clear();
        stage.advance(45, &mut out);
        out.sort();
        let mut expected: Vec<_> =
            (0..2_000u32).flat_map(|key| [(key, Counter(3), 40, -1), (key, Counter(4), 40, 1)]).collect();
        expected.sort();
        assert_eq!(out, expected, "each key: its last sample replaces the one before at 40");
    }

    #[test]
    fn without_a_window_the_latest_value_stays() {
        let mut stage: Stage<u8, Counter> = Stage::new(None, 100);
        stage.insert(1, 5, Counter(1)).unwrap();
        stage.insert(1, 500, Counter(2)).unwrap();
        assert_eq!(run(&mut stage, 10_000), vec![(1, 1, 5, 1), (1, 1, 500, -1), (1, 2, 500, 1)]);
        assert_eq!(stage.keys(), 1);
    }
}
